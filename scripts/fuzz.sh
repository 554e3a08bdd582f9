#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/, cargo-fuzz on the nightly toolchain) and runs each for a
# bounded time, then prints a table: executions per second, coverage and features at the end,
# crashes. CI runs it briefly; run it as long as you like:
#
#   scripts/fuzz.sh                  # every target, 60 s each
#   scripts/fuzz.sh 3600 jws_verify  # one target, an hour
#
# Each target starts from its committed seeds (fuzz/seeds/TARGET, made by fuzz/seeds/make.py
# from the RFC vectors) and the corpus earlier runs grew (fuzz/corpus/TARGET, not committed),
# with the JSON/JOSE dictionary fuzz/dict/jose.dict. A crash stops its target, leaves the input
# in fuzz/artifacts/TARGET/ and fails the script: it becomes an ordinary regression test before it
# is fixed. Installs cargo-fuzz (from crates.io, pinned) if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-60}
shift || true
CARGO_FUZZ_VERSION=0.13.2

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi

# With CARGO_TARGET_DIR set (CI), the fuzz build lives beside the main one, so that it persists.
TARGET_DIR=${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}
TARGET_DIR=${TARGET_DIR:-$PWD/fuzz/target}
echo "== building ${#targets[@]} fuzz targets"
(cd fuzz && cargo +nightly fuzz build -O --debug-assertions --target-dir "$TARGET_DIR")

REPORT=$(mktemp)
failed=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
  log=fuzz/artifacts/$t.log
  mkdir -p fuzz/artifacts
  echo "== $t, ${SECONDS_EACH} s"
  if (cd fuzz && cargo +nightly fuzz run -O --debug-assertions --target-dir "$TARGET_DIR" \
      "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$SECONDS_EACH" -dict=dict/jose.dict -print_final_stats=1 \
      -close_fd_mask=3 -rss_limit_mb=4096) >"$log" 2>&1; then
    crash=0
  else
    crash=1
    failed+=("$t")
    tail -n 40 "$log"
  fi
  python3 - "$t" "$log" "$crash" >>"$REPORT" <<'PY'
import re, sys
t, log, crash = sys.argv[1], open(sys.argv[2], errors="replace").read(), sys.argv[3]
stat = lambda k: (re.findall(rf"stat::{k}:\s+(\d+)", log) or ["?"])[-1]
cov = (re.findall(r"cov: (\d+) ft: (\d+)", log) or [("?", "?")])[-1]
print(f"| {t} | {stat('number_of_executed_units')} | {stat('average_exec_per_sec')} | {cov[0]} | {cov[1]} | {stat('new_units_added')} | {'yes' if crash == '1' else 'none'} |")
PY
done
echo
echo "| target | executions | exec/s | coverage (edges) | features | new inputs | crash |"
echo "|---|---|---|---|---|---|---|"
cat "$REPORT"
if [ ${#failed[@]} -gt 0 ]; then
  echo "crashed: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
