#!/usr/bin/env bash
# Run each libFuzzer target for SECONDS (default 60):
#   bash scripts/fuzz.sh 60          # what CI runs, briefly
#   bash scripts/fuzz.sh 14400       # four hours per target
# Seeds (requests captured from a real memfs mount by
# scripts/capture-seeds.sh, and map specs) are in fuzz/seeds; new
# inputs go to target/fuzz-corpus, crashes to fuzz/artifacts.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: skipped: no nightly Rust toolchain here, and cargo fuzz needs one (rustup toolchain install nightly)"
  exit 0
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
for t in decode dispatch mapspec; do
  corpus=target/fuzz-corpus/$t
  mkdir -p "$corpus"
  seeds=()
  [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
  echo "== fuzz $t for ${secs}s"
  (cd fuzz && cargo +nightly fuzz run -O "$t" "../$corpus" "${seeds[@]/#/../}" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 2>&1) \
    | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|Done|==[0-9]+==|SUMMARY|panicked|thread)" || true
  if ls fuzz/artifacts/"$t"/crash-* >/dev/null 2>&1; then
    echo "fuzz: $t found a crash: $(ls fuzz/artifacts/$t/crash-* | head -1)" >&2
    exit 1
  fi
done
