#!/usr/bin/env bash
# Run libFuzzer targets, each for SECONDS (default 60):
#   bash scripts/fuzz.sh 20                    # what the test command runs
#   FUZZ_JOBS=2 bash scripts/fuzz.sh 3600      # an hour per target, two at a time
#   bash scripts/fuzz.sh 600 decode mountopts  # only these targets
# Targets: decode, dispatch, mapspec, mountopts. Seeds are in fuzz/seeds
# (requests captured from a real memfs mount by scripts/capture-seeds.sh,
# map specs, -o strings); new inputs go to target/fuzz-corpus, crashes to
# fuzz/artifacts, each run's full libFuzzer log to target/fuzz-logs.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(decode dispatch mapspec mountopts)
jobs=${FUZZ_JOBS:-1}
mkdir -p target/fuzz-logs
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: skipped: no nightly Rust toolchain here, and cargo fuzz needs one (rustup toolchain install nightly)"
  exit 0
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
# Build every target once, up front: runs that go in parallel then do not
# wait on each other's build lock.
if ! (cd fuzz && cargo +nightly fuzz build -O) >target/fuzz-build.log 2>&1; then
  cat target/fuzz-build.log >&2
  exit 1
fi

one() {
  local t=$1 corpus=target/fuzz-corpus/$1 log=target/fuzz-logs/$1.log
  local seeds=()
  mkdir -p "$corpus"
  [ -d "fuzz/seeds/$t" ] && seeds=("../fuzz/seeds/$t")
  (cd fuzz && cargo +nightly fuzz run -O "$t" "../$corpus" "${seeds[@]}" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1) >"$log" 2>&1 || true
  echo "== fuzz $t for ${secs}s: $(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') execs, peak RSS $(grep -E '^stat::peak_rss_mb' "$log" | awk '{print $2}') MB"
  grep -E "^(Done|==[0-9]+==|SUMMARY|panicked|thread)" "$log" || true
}

running=0
for t in "${targets[@]}"; do
  if ((running >= jobs)); then
    wait -n || true
    running=$((running - 1))
  fi
  one "$t" &
  running=$((running + 1))
done
wait

failed=0
for t in "${targets[@]}"; do
  if ls fuzz/artifacts/"$t"/crash-* >/dev/null 2>&1; then
    echo "fuzz: $t found a crash: $(ls fuzz/artifacts/"$t"/crash-* | head -1)" >&2
    failed=1
  fi
done
exit "$failed"
