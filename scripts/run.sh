#!/usr/bin/env bash
# The two entry points of the README:
#   scripts/run.sh demo   set up, mount a passthrough mirror with an idmapped
#                         view, and show `ls -ln` through both
#   scripts/run.sh test   set up and run every test
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  demo) bash scripts/setup.sh && exec bash scripts/demo.sh ;;
  test) bash scripts/setup.sh && exec bash scripts/test.sh ;;
  *) echo "usage: scripts/run.sh demo|test" >&2; exit 2 ;;
esac
