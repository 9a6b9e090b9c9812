#!/usr/bin/env bash
# Every test: style gates, unit and real-mount integration tests, the
# conformance suite (tmpfs vs memfs vs passthrough, and a server that does
# not opt in), a short fuzzing run and a quick benchmark. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "test: run as root (the tests mount filesystems and switch credentials)" >&2
  exit 1
fi
bin=target/release/idfuse
scratch=$(mktemp -d /tmp/idfuse-test.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

leftovers() { awk '$3 ~ /^fuse/ && $3 != "fusectl" {print $2}' /proc/self/mounts; }
before=$(leftovers)

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --release --workspace --all-targets --quiet -- -D warnings
cargo clippy --release -p idfuse-fs --features cephfs-tests --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --release --workspace --no-fail-fast 2>&1
echo "== the exerciser on CephFS (a single-node test cluster)"
# stress_metadata_cephfs is left out: it hung in four runs of nine
# (RELIABILITY.md, open problems).
cargo test --release -p idfuse-fs --features cephfs-tests --test exerciser fsx_cephfs 2>&1

echo "== fuzzing, briefly"
bash scripts/fuzz.sh 20

echo "== bench --quick"
"$bin" bench --quick --out "$scratch/bench"

echo "== conformance: a server that does not opt in (bindfs)"
mkdir -p "$scratch/bindfs-src"
"$bin" conformance --target "cmd:bindfs $scratch/bindfs-src {mnt}"
echo "== conformance: default targets, differential against tmpfs"
"$bin" conformance --json "$scratch/conformance.json"


# Only mounts that appeared during this run count: others on the machine
# may come and go while it runs.
new=$(comm -13 <(printf '%s\n' "$before" | sort) <(leftovers | sort) | sed '/^$/d')
if [ -n "$new" ]; then
  echo "test: FUSE mounts left behind: $new" >&2
  exit 1
fi
