#!/usr/bin/env bash
# The README's test command on a busy machine: a CPU hog on every core,
# half of the memory taken and touched, and the kernel's caches dropped
# every few seconds, all for as long as the tests run. A test that fails
# here and passes on a quiet machine measures the machine, not idfuse.
#
#   bash scripts/test-under-load.sh [LOGDIR]     # default target/under-load
#
# Opt-in: it takes longer than the test command alone. Needs stress-ng
# (Debian package; scripts/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "test-under-load: run as root (the tests need it, and so does drop_caches)" >&2
  exit 1
fi
bash scripts/setup.sh
command -v stress-ng >/dev/null || { echo "test-under-load: stress-ng is missing (apt-get install stress-ng)" >&2; exit 1; }
logs=${1:-target/under-load}
mkdir -p "$logs"
stamp=$(date +%Y%m%d-%H%M%S)

load=()
stop_load() {
  for p in "${load[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${load[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap stop_load EXIT
stress-ng --cpu 0 --quiet >/dev/null 2>&1 &
load+=("$!")
stress-ng --vm 1 --vm-bytes 50% --quiet >/dev/null 2>&1 &
load+=("$!")
(while sleep 3; do echo 3 >/proc/sys/vm/drop_caches; done) &
load+=("$!")

start=$SECONDS
rc=0
bash scripts/test.sh >"$logs/test-$stamp.log" 2>&1 || rc=$?
secs=$((SECONDS - start))
echo "test-under-load: exit $rc after ${secs} s; log $logs/test-$stamp.log"
grep -E "^test result:|passed, .* failed" "$logs/test-$stamp.log" | awk '
  /^test result/ { p += $4; f += $6 } /passed, .* failed/ { print "conformance: " $0 }
  END { print "cargo test: " p " passed, " f " failed" }'
exit "$rc"
