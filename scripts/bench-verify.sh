#!/usr/bin/env bash
# Resource servers: requests per second through examples/resource-server (tessera-verify), with
# and without the revocation feed, hot and cold tokens, beside express + jose from the shared
# harness (../shared/bench-peers), and how long a revocation takes to reach a verifier.
#
#   scripts/bench-verify.sh             # 5 runs x 10 s per row, medians; 1000 revocations
#   QUICK=1 scripts/bench-verify.sh     # 1 run x 2 s, 100 revocations: a smoke test
#
# Pinning: every resource server (and express) on SERVER_CPU (0), wrk on LOAD_CPU (1), tessera
# itself on LOAD_CPU too (it is idle while the resource server is measured: a verifier asks it
# nothing per request).
#
# Rows:
#   hot   one token sent again and again (`me-bearer-eddsa` of the harness: express verifies it
#         with jose on every request; tessera-verify remembers it and checks times and
#         revocations only)
#   cold  a different token on every request (20,000 tokens in turn, twice tessera-verify's
#         cache: every request checks a signature); express gets 20,000 of its own tokens
#   feed  the resource server follows the revocation feed, holding REVOKED (1000) revocations
#         of other tokens, so every check looks them up
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release -q -p tessera -p resource-server
cargo build --release -q -p tessera-verify --example reach
BIN=$ROOT/target/release/tessera
RS=$ROOT/target/release/resource-server
REACH=$ROOT/target/release/examples/reach

QUICK=${QUICK:-}
DURATION=${DURATION:-$([ -n "$QUICK" ] && echo 2 || echo 10)}
REPS=${REPS:-$([ -n "$QUICK" ] && echo 1 || echo 5)}
REVOKED=${REVOKED:-$([ -n "$QUICK" ] && echo 100 || echo 1000)}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

SHARED=$ROOT/../shared/bench-peers
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
PEERS_DIR=${PEERS_DIR:-$WORK/peers}
[ -d "$PEERS_DIR" ] || cp -r "$SHARED" "$PEERS_DIR"
(cd "$PEERS_DIR" && [ -d node_modules ] || npm ci --silent --no-audit --no-fund)

wait_http() { # url
  for _ in $(seq 1 200); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  exit 1
}

# tessera, with a client the resource servers authenticate as (and that mints test tokens).
DATA=$WORK/tessera
TPORT=8094
ISSUER=http://127.0.0.1:$TPORT
export TESSERA_MASTER_KEY
TESSERA_MASTER_KEY=$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
SECRET=$("$BIN" client add rs --grant client_credentials --scope "api:read" \
  --audience urn:bench:api --json --data-dir "$DATA" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')
taskset -c "$LOAD_CPU" "$BIN" serve --listen 127.0.0.1:$TPORT --data-dir "$DATA" \
  >"$WORK/tessera.log" 2>&1 &
PIDS+=($!)
wait_http "$ISSUER/healthz"
export ISSUER CLIENT_ID=rs CLIENT_SECRET=$SECRET AUDIENCE=urn:bench:api
HOT=$("$REACH" mint 1)
"$REACH" mint 20000 >"$WORK/cold.txt"

# Express + jose, and 20,000 of its tokens.
EPORT=4003
(cd "$PEERS_DIR" && exec taskset -c "$SERVER_CPU" node servers/jwt-jose.mjs) >"$WORK/express.log" 2>&1 &
PIDS+=($!)
EXPRESS_PID=$!
wait_http "http://127.0.0.1:$EPORT/ping"
python3 - "$EPORT" >"$WORK/express-cold.txt" <<'PY'
import http.client, json, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for _ in range(20000):
    c.request("POST", "/login", body=b"", headers={"content-length": "0"})
    print(json.loads(c.getresponse().read())["eddsa"])
PY
EXPRESS_HOT=$(head -1 "$WORK/express-cold.txt")

# One wrk row: name, url, token file (one token per line, taken in turn by each connection).
cat >"$WORK/tokens.lua" <<'LUA'
local tokens, i = {}, 0
function init(args)
  for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
  i = math.random(#tokens)
end
function request()
  i = i % #tokens + 1
  return wrk.format("GET", nil, { Authorization = "Bearer " .. tokens[i] })
end
function done(summary, latency, requests)
  io.write(string.format("BENCH_RESULT rps=%.2f p50_ms=%.3f p99_ms=%.3f non2xx=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA
ROWS=$WORK/rows.tsv
: >"$ROWS"
warm() { # url tokens-file
  TOKENS=$2 taskset -c "$LOAD_CPU" wrk -t1 -c32 -d1s -s "$WORK/tokens.lua" "$1" >/dev/null
}
run() { # label url tokens-file: one measured run
  local out
  out=$(TOKENS=$3 taskset -c "$LOAD_CPU" wrk -t1 -c32 -d"${DURATION}s" --latency --timeout 5s \
    -s "$WORK/tokens.lua" "$2" | grep BENCH_RESULT)
  echo "$out" | grep -q 'non2xx=0 errors=0' || echo "warning: $1: $out" >&2
  echo -e "$1\t$out" >>"$ROWS"
}

echo "$EXPRESS_HOT" >"$WORK/express-hot.txt"
for kind in hot cold; do
  warm "http://127.0.0.1:$EPORT/me" "$WORK/express-$kind.txt"
  for _ in $(seq 1 "$REPS"); do
    run "express+jose $kind" "http://127.0.0.1:$EPORT/me" "$WORK/express-$kind.txt"
  done
done
kill "$EXPRESS_PID"

echo "$HOT" >"$WORK/hot.txt"
start_rs() { # port [feed]
  local env=(TESSERA_ISSUER="$ISSUER" AUDIENCE=urn:bench:api LISTEN=127.0.0.1:$1)
  [ "${2:-}" = feed ] && env+=(TESSERA_CLIENT_ID=rs TESSERA_CLIENT_SECRET="$SECRET")
  env "${env[@]}" taskset -c "$SERVER_CPU" "$RS" >"$WORK/rs-$1.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$1/healthz"
}
# Both resource servers at once (only one is loaded at a time), measured in turn, so that the
# machine's drift from run to run falls on both alike.
start_rs 9101
start_rs 9102 feed
# The feed holds REVOKED revocations of other tokens (made before the measurement).
"$REACH" mint "$REVOKED" | while read -r t; do
  curl -fsS -o /dev/null -u "rs:$SECRET" -d "token=$t" "$ISSUER/oauth2/revoke"
done
sleep 1
for kind in hot cold; do
  warm "http://127.0.0.1:9101/whoami" "$WORK/$kind.txt"
  warm "http://127.0.0.1:9102/whoami" "$WORK/$kind.txt"
  for _ in $(seq 1 "$REPS"); do
    run "tessera-verify $kind" "http://127.0.0.1:9101/whoami" "$WORK/$kind.txt"
    run "tessera-verify $kind, feed" "http://127.0.0.1:9102/whoami" "$WORK/$kind.txt"
  done
done

# Reach: the verifier in the reach tool, on the load core beside tessera.
REACH_LINE=$(taskset -c "$LOAD_CPU" "$REACH" reach "$REVOKED")

python3 - "$ROWS" "$REACH_LINE" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, rest = line.rstrip("\n").split("\t")
    m = dict(re.findall(r"(\w+)=([\d.]+)", rest))
    rows.setdefault(label, []).append(m)
print("| row | rps (median) | p50 ms | p99 ms |")
print("|---|---:|---:|---:|")
med = {}
for label, runs in rows.items():
    r = statistics.median(float(x["rps"]) for x in runs)
    p50 = statistics.median(float(x["p50_ms"]) for x in runs)
    p99 = statistics.median(float(x["p99_ms"]) for x in runs)
    med[label] = r
    print(f"| {label} | {r:,.0f} | {p50:.3f} | {p99:.3f} |")
print()
def ratio(a, b):
    return med[a] / med[b] if a in med and b in med else float("nan")
print(f"hot: tessera-verify {ratio('tessera-verify hot', 'express+jose hot'):.1f}x express+jose (target >= 8x)")
print(f"cold: tessera-verify {ratio('tessera-verify cold', 'express+jose cold'):.1f}x express+jose")
for kind in ["hot", "cold"]:
    cost = 1 - ratio(f"tessera-verify {kind}, feed", f"tessera-verify {kind}")
    print(f"feed cost, {kind}: {cost * 100:.1f}% of throughput (target <= 5%)")
print(sys.argv[2] + " (target p99 <= 1000 ms)")
PY
