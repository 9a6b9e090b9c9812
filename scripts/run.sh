#!/usr/bin/env bash
# The two entry points of the README:
#   scripts/run.sh demo   set up, mount a plain mirror and an idmapped view of
#                         one directory, and show owners side by side
#   scripts/run.sh test   set up and run every test
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  demo) bash scripts/setup.sh && exec bash scripts/demo.sh ;;
  test) bash scripts/setup.sh && exec bash scripts/test.sh ;;
  *) echo "usage: scripts/run.sh demo|test" >&2; exit 2 ;;
esac
