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
# Everything the tests create goes under one scratch directory: their temp
# files (TMPDIR), their mountpoints, their daemons' arguments. What is left
# there at the end, and only that, is this run's leftover; mounts and
# processes of other programs on the machine do not count.
scratch=$(mktemp -d /tmp/idfuse-test.XXXXXX)
chmod 0755 "$scratch"
mkdir -m 1777 "$scratch/tmp"
echo $$ >"$scratch/pid"
mounts_under() { awk -v p="$1/" '$3 != "fusectl" && index($2 "/", p) == 1 {print $2}' /proc/self/mounts; }
# Abort the FUSE connections of the mounts under $1: a daemon that lived
# inside a killed test process can never answer the requests that process's
# other threads made, and they would wait for ever.
abort_fuse_under() {
  awk -v p="$1/" '{ for (i = 7; i < NF && $i != "-"; i++) {}
                    if ($(i + 1) ~ /^fuse/ && index($5 "/", p) == 1) print $3 }' /proc/self/mountinfo |
    while IFS=: read -r _ minor; do
      echo 1 >"/sys/fs/fuse/connections/$minor/abort" 2>/dev/null || true
    done
}
# A failed run must not break the next one: end the connections of what it
# left mounted, detach the mounts innermost first, and stop the daemons it
# started (their command lines name the scratch directory).
clean_scratch() {
  abort_fuse_under "$1"
  mounts_under "$1" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  pkill -KILL -f -- "$1/" 2>/dev/null || true
  rm -rf --one-file-system "$1"
}
cleanup() { clean_scratch "$scratch"; }
trap cleanup EXIT
# A run killed outright (SIGKILL, a CI timeout) could not clean up after
# itself: clean the scratch directories whose run is gone. Runs still alive
# (their pid file names a live process) are left alone.
for old in /tmp/idfuse-test.*; do
  [ -d "$old" ] && [ "$old" != "$scratch" ] && [ -f "$old/pid" ] || continue
  pid=$(cat "$old/pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then continue; fi
  echo "test: cleaning up after a killed run in $old"
  clean_scratch "$old"
done
# A run killed while FUSE over io_uring was switched on for it left the
# switch on: put the machine's value back before anything else.
bash scripts/uring-knob.sh repair || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --release --workspace --all-targets --quiet -- -D warnings
cargo clippy --release -p idfuse-fs --features cephfs-tests --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --release --workspace --no-run --quiet
TMPDIR=$scratch/tmp cargo test --release --workspace --no-fail-fast 2>&1
# `cargo test` above also ran every crate's doctests and built the examples,
# which crates/idfuse/tests/examples.rs mounted.
echo "== cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --quiet
echo "== cargo package, every crate"
cargo package --workspace --no-verify --allow-dirty --quiet
echo "== the exerciser and the metadata stressor on CephFS (a single-node test cluster each)"
cargo test --release -p idfuse-fs --features cephfs-tests --test exerciser cephfs -- --test-threads=1 2>&1

echo "== fuzzing, briefly"
FUZZ_JOBS=2 bash scripts/fuzz.sh 20

export TMPDIR=$scratch/tmp
echo "== bench --quick"
"$bin" bench --quick --out target/bench-quick   # kept: results.md, results.json, results.png

echo "== conformance: a server that does not opt in (bindfs)"
mkdir -p "$scratch/bindfs-src"
"$bin" conformance --target "cmd:bindfs $scratch/bindfs-src {mnt}"
echo "== conformance: default targets, differential against tmpfs"
"$bin" conformance --json "$scratch/conformance.json"
echo "== conformance: the mirror with cache=never and cache=always, differential against tmpfs"
"$bin" conformance --differential --target tmpfs --target passthrough:cache=never --target passthrough:cache=always

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
  trap 'bash scripts/uring-knob.sh off $$ || true; cleanup' EXIT
  export IDFUSE_IO_URING=on
  cargo test --release --no-fail-fast -p idfuse --test lifecycle --test contract --test negotiation 2>&1
  cargo test --release --no-fail-fast -p idfuse-fs --test uring --test exerciser 2>&1
  cargo test --release --no-fail-fast -p idfuse-cli --test faults -- sigkill 2>&1
  "$bin" conformance --json "$scratch/conformance-uring.json"
  unset IDFUSE_IO_URING
  bash scripts/uring-knob.sh off $$
  trap cleanup EXIT
fi

# This run's own leftovers: mounts under its scratch directory, daemons
# whose command line names it, files in its temp directory.
left=$(mounts_under "$scratch")
procs=$(pgrep -a -f -- "$scratch/" | grep -v "^$$ " || true)
files=$(find "$scratch/tmp" -mindepth 1 -maxdepth 2 2>/dev/null | head -20)
if [ -n "$left$procs$files" ]; then
  [ -z "$left" ] || echo "test: mounts left behind: $left" >&2
  [ -z "$procs" ] || echo "test: processes left behind: $procs" >&2
  [ -z "$files" ] || echo "test: files left in the temp directory: $files" >&2
  exit 1
fi
