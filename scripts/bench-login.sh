#!/usr/bin/env bash
# Logins beside a saturated /auth/me: does hashing keep a floor, and does /auth/me keep its rate?
# The release server (SQLite, defaults) is pinned to one core (SERVER_CPU, default 0), both load
# generators to the other (LOAD_CPU, 1). Three phases of DURATION seconds (default 10), REPS
# times (default 3), medians:
#   1. logins alone (wrk, 8 connections, the right password: each a hash and a new session);
#   2. /auth/me alone (wrk, 32 connections, a session cookie);
#   3. both at once.
# Prints the two ratios of issue 15: logins during the saturation / alone (target >= 0.25) and
# /auth/me during the logins / alone (target >= 0.85). Extra environment for the server goes
# through SERVER_ENV ("TESSERA_PASSWORD_HASH_NICE=19" to compare). Only 127.0.0.1 is contacted;
# every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
DURATION=${DURATION:-10}
REPS=${REPS:-3}
PORT=${PORT:-18281}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
if [ -z "${BIN:-}" ]; then   # BIN=path: a binary already built
  cargo build --release -q -p tessera --bin tessera
  BIN=$PWD/target/release/tessera
fi
WORK=$(mktemp -d)
SERVER=
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

PW='correct horse battery staple'
cat > "$WORK/req.lua" <<'LUA'
wrk.method = os.getenv("B_METHOD") or "GET"
local body = os.getenv("B_BODY")
if body and body ~= "" then wrk.body = body end
local h = os.getenv("B_H1")
if h and h ~= "" then
  local k, v = h:match("^([^:]+):%s*(.*)$")
  wrk.headers[k] = v
end
function done(summary, latency, requests)
  io.write(string.format("BENCH rps=%.2f p99_ms=%.1f bad=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
      + summary.errors.status))
end
LUA

# "bench" logs in again and again; "reader" holds the session /auth/me is asked with (the
# logins would end it past session.max_per_user).
echo "$PW" | "$BIN" user add bench --password-stdin --data-dir "$WORK/data" >/dev/null 2>&1
echo "$PW" | "$BIN" user add reader --password-stdin --data-dir "$WORK/data" >/dev/null 2>&1
# The logins run 8 at once for one account from one address: with the default free attempts,
# the throttle (which counts an attempt before its hash) would refuse most of them.
# shellcheck disable=SC2086
env TESSERA_THROTTLE_ACCOUNT_FREE_ATTEMPTS=1000000 TESSERA_THROTTLE_IP_FREE_ATTEMPTS=1000000 \
  ${SERVER_ENV:-} taskset -c "$SERVER_CPU" "$BIN" serve --listen "127.0.0.1:$PORT" \
  --data-dir "$WORK/data" >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
COOKIE="Cookie: $(curl -sf -c - -X POST "http://127.0.0.1:$PORT/auth/login" \
  -H 'content-type: application/json' -d "{\"username\":\"reader\",\"password\":\"$PW\"}" |
  awk '$6 == "tessera_session" {print $6 "=" $7}')"

logins() {
  B_METHOD=POST B_BODY="{\"username\":\"bench\",\"password\":\"$PW\"}" \
    B_H1="Content-Type: application/json" timeout $((DURATION + 30)) taskset -c "$LOAD_CPU" \
    wrk -t1 -c8 -d"${DURATION}s" --timeout 10s -s "$WORK/req.lua" "http://127.0.0.1:$PORT/auth/login" |
    grep '^BENCH'
}
me() {
  B_H1="$COOKIE" timeout $((DURATION + 30)) taskset -c "$LOAD_CPU" \
    wrk -t1 -c32 -d"${DURATION}s" -s "$WORK/req.lua" "http://127.0.0.1:$PORT/auth/me" | grep '^BENCH'
}

: > "$WORK/rows"
for rep in $(seq "$REPS"); do
  echo "logins_alone $(logins)" >> "$WORK/rows"
  echo "me_alone $(me)" >> "$WORK/rows"
  logins > "$WORK/both_logins" &
  L=$!
  echo "me_beside $(me)" >> "$WORK/rows"
  wait "$L"
  echo "logins_beside $(cat "$WORK/both_logins")" >> "$WORK/rows"
  echo "rep $rep done" >&2
done

python3 - "$WORK/rows" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    name, _, *kv = line.split()
    rows.setdefault(name, []).append(dict(x.split("=") for x in kv))
med = lambda n, k: statistics.median(float(r[k]) for r in rows[n])
print("| phase | rps (median) | p99 ms | errors+non-2xx |")
print("|---|---:|---:|---:|")
for n in ["logins_alone", "logins_beside", "me_alone", "me_beside"]:
    bad = sum(int(r["bad"]) for r in rows[n])
    print(f"| {n.replace('_', ' ')} | {med(n, 'rps'):.1f} | {med(n, 'p99_ms'):.1f} | {bad} |")
print()
l = med("logins_beside", "rps") / med("logins_alone", "rps")
m = med("me_beside", "rps") / med("me_alone", "rps")
print(f"logins while /auth/me saturates / logins alone = {l:.2f} (target >= 0.25)")
print(f"/auth/me beside the logins / /auth/me alone = {m:.2f} (target >= 0.85)")
PY
