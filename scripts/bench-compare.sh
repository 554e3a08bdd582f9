#!/usr/bin/env bash
# Runs scripts/bench-server.sh on an earlier commit's tessera and on this tree's, one after the
# other in one invocation (the same machine state, the same load generator and scripts), and
# prints each row's requests/s before and after with the change.
#
#   scripts/bench-compare.sh REV            # e.g. scripts/bench-compare.sh dad69e7
#   ORDER=after-first scripts/bench-compare.sh REV
#
# REV is built in a worktree of its own (target/bench-compare, kept for the next comparison);
# the bench-server.sh knobs (DURATION, REPS, QUICK, ISOLATE, …) pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:?usage: scripts/bench-compare.sh REV}
ROOT=$PWD
TREE=$ROOT/target/bench-compare/tree
git worktree remove --force "$TREE" 2>/dev/null || true
git worktree prune
git worktree add -q --detach "$TREE" "$REV"
trap 'git -C "$ROOT" worktree remove --force "$TREE" 2>/dev/null || true' EXIT
echo "== building $REV"
(cd "$TREE" && CARGO_TARGET_DIR=$ROOT/target/bench-compare/target cargo build --release -q -p tessera --bin tessera)
BEFORE_BIN=$ROOT/target/bench-compare/target/release/tessera
OUT=$(mktemp -d)
before() { echo "== before ($REV)"; BENCH_BIN=$BEFORE_BIN RESULTS_TO=$OUT/before scripts/bench-server.sh; }
after() { echo "== after (this tree)"; RESULTS_TO=$OUT/after scripts/bench-server.sh; }
if [ "${ORDER:-}" = after-first ]; then after; before; else before; after; fi
python3 - "$OUT/before" "$OUT/after" "$REV" <<'PY'
import sys
rows = lambda p: [l.rstrip("\n").split("\t") for l in open(p) if l.strip()]
before = dict(rows(sys.argv[1]))
print(f"\n| row | before ({sys.argv[3]}) | after | change |\n|---|---|---|---|")
for label, rps in rows(sys.argv[2]):
    b = float(before.get(label, "nan"))
    print(f"| {label} | {b:.0f} | {float(rps):.0f} | {float(rps) / b - 1:+.1%} |")
PY
