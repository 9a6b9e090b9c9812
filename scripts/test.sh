#!/usr/bin/env bash
# Every test: style gates, unit and real-mount integration tests, and the
# conformance suite against tmpfs, memfs and passthrough. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "test: run as root (the tests mount filesystems and switch credentials)" >&2
  exit 1
fi

leftovers() { awk '$3 ~ /^fuse\./ && $2 ~ /idfuse|\/tmp\// {print $2}' /proc/self/mounts; }

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --release --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --release --workspace --no-fail-fast 2>&1
left=$(leftovers)
if [ -n "$left" ]; then
  echo "test: mounts left behind: $left" >&2
  exit 1
fi
