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
# A run killed while FUSE over io_uring was switched on for it left the
# switch on: put the machine's value back before anything else.
bash scripts/uring-knob.sh repair || true

leftovers() { awk '$3 ~ /^fuse/ && $3 != "fusectl" {print $2}' /proc/self/mounts; }
before=$(leftovers)

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --release --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --release --workspace --no-fail-fast 2>&1

echo "== fuzzing, briefly"
bash scripts/fuzz.sh 20

echo "== bench --quick"
"$bin" bench --quick --out "$scratch/bench"

echo "== conformance: a server that does not opt in (bindfs)"
mkdir -p "$scratch/bindfs-src"
"$bin" conformance --target "cmd:bindfs $scratch/bindfs-src {mnt}"
echo "== conformance: default targets, differential against tmpfs"
"$bin" conformance --json "$scratch/conformance.json"

# FUSE over io_uring: enable_uring is switched on for this part only (and
# put back, also by the next run if this one is killed); IDFUSE_IO_URING=on
# makes every session and daemon use the ring or fail.
echo "== io_uring: framework, filesystem and fault tests, the exerciser and the conformance suite over the ring"
set +e
bash scripts/uring-knob.sh on $$
knob=$?
set -e
if [ "$knob" = 3 ]; then
  echo "io_uring part skipped: this kernel has no FUSE over io_uring"
elif [ "$knob" != 0 ]; then
  echo "test: cannot switch FUSE over io_uring on" >&2
  exit 1
else
  trap 'bash scripts/uring-knob.sh off $$ || true; rm -rf "$scratch"' EXIT
  export IDFUSE_IO_URING=on
  cargo test --release --no-fail-fast -p idfuse --test lifecycle --test contract --test negotiation 2>&1
  cargo test --release --no-fail-fast -p idfuse-fs --test uring --test exerciser 2>&1
  cargo test --release --no-fail-fast -p idfuse-cli --test faults -- sigkill 2>&1
  "$bin" conformance --json "$scratch/conformance-uring.json"
  unset IDFUSE_IO_URING
  bash scripts/uring-knob.sh off $$
  trap 'rm -rf "$scratch"' EXIT
fi

# Only mounts that appeared during this run count: others on the machine
# may come and go while it runs.
new=$(comm -13 <(printf '%s\n' "$before" | sort) <(leftovers | sort) | sed '/^$/d')
if [ -n "$new" ]; then
  echo "test: FUSE mounts left behind: $new" >&2
  exit 1
fi
