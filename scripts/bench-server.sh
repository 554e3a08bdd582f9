#!/usr/bin/env bash
# Loads the real tessera server over loopback and prints requests/s and latency per scenario.
# The server is pinned to one core (SERVER_CPU, default 0), wrk to the other (LOAD_CPU, 1).
#
#   scripts/bench-server.sh               # 3 runs x 10 s per scenario, medians
#   QUICK=1 scripts/bench-server.sh       # 1 run x 3 s, a smoke test
#
# Scenarios: /healthz (the floor); the JWKS, and its 304 to If-None-Match; /auth/me with a session
# cookie on SQLite and on the memory store; /auth/me with a Bearer EdDSA JWT, hot; introspection
# of that token; per algorithm (EdDSA, ES256), /auth/me with cold Bearer JWTs (10,000 of them, the
# verified-token cache off) and client credentials (a token signed per request); logins through
# /auth/login (Argon2id); /auth/me with the session in Redis (with users in PostgreSQL) and in
# PostgreSQL alone, each cached and with the cache off; /healthz and the Redis rows again at a
# fixed 80 % of their maximum, and lower (examples/paced.rs, p99); three instances behind
# HAProxy; /auth/me on SQLite while logins run at full speed beside it. PostgreSQL is the
# machine's (TEST_POSTGRES_URL, a schema of its own, dropped at the end); Redis is started here,
# pinned to the server core. Each server runs alone (the others stopped), so that no idle
# instance's timers land in another's measurement. The rows held against a floor are printed
# last against it, each ratio beside its target (issue 21), and each ratio is the median of
# rounds that measure the floor's parts beside the row, so that the drift of a VM's speed over
# minutes does not land between a row and its floor. For a row against /healthz, a round is one
# run of /healthz on the row's own server then one of the row; per algorithm, the raw verify and
# sign (timed by criterion on the server core, the server idle), /healthz, the cold row, then
# client credentials (both rows held against that round's parts); for the logins, an Argon2id
# verification then the logins. The JWKS, whose target is the nearest to 1, has PAIR_REPS (5)
# rounds, the other rows REPS (3). Each row's rps and floor columns are the medians of its
# rounds', its ratio the median of the rounds' ratios (not the one column over the other).
# Every loop is bounded and only 127.0.0.1 is ever contacted.
#
#   POLL_IDLE=1 scripts/bench-server.sh   # idle vCPUs poll 200 us before halting (see below)
#   BENCH_BIN=path RESULTS_TO=file scripts/bench-server.sh
#                                         # load another build; keep the rows (label, rps)
#   ISOLATE=1 scripts/bench-server.sh     # the machine's other processes kept off the server core
#
# Over loopback the sender's CPU runs the receiver's TCP input and wakes it; on a VM whose idle
# vCPU halts, that wake-up is an inter-processor interrupt, a VM exit charged to the server core
# for every response sent to an idle load generator (perf: ~11 % of the server core on the cold
# JWT row). A real NIC does not charge the server for waking its clients; POLL_IDLE=1 removes the
# artefact by setting the guest halt-polling window (needs root and the haltpoll cpuidle driver)
# for the duration of the run, and restores it on exit.
#
# Latency percentiles at a fixed rate are bounded by how often the server core is taken away
# (examples/stalls.rs measures it first: a loop reading the clock on the server core). This
# machine kind runs PostgreSQL, MariaDB, RabbitMQ, NATS and Mosquitto, none of them pinned;
# ISOLATE=1 moves every process allowed on all cores (and not the kernel's per-core threads) to
# the load core for the duration of the run, as a host dedicated to tessera would be, and restores
# their affinity on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
DURATION=${DURATION:-10}
REPS=${REPS:-3}
PAIR_REPS=${PAIR_REPS:-5}
CONNS=${CONNS:-32}
if [ -n "${QUICK:-}" ]; then DURATION=3; REPS=1; PAIR_REPS=1; fi

for t in wrk haproxy redis-server psql; do
  command -v "$t" >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk haproxy redis-server postgresql-client; break; }
done
cargo build --release -q -p tessera --bin tessera --example paced --example stalls
PACED=$PWD/target/release/examples/paced
STALLS=$PWD/target/release/examples/stalls
# BENCH_BIN: another build of tessera to load (scripts/bench-compare.sh: an earlier commit's).
BIN=${BENCH_BIN:-$PWD/target/release/tessera}
WORK=$(mktemp -d)
PIDS=()
declare -A PID_OF
MOVED=()
CLEAN_PG=
ALL_CPUS=$(taskset -p -c $$ | sed 's/.*: //')
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for p in "${MOVED[@]}"; do taskset -a -p -c "$ALL_CPUS" "$p" >/dev/null 2>&1 || true; done
  if [ -n "$CLEAN_PG" ]; then psql -q "${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}" -c "$CLEAN_PG" || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

HALTPOLL=/sys/module/haltpoll/parameters/guest_halt_poll_ns
if [ -n "${POLL_IDLE:-}" ]; then
  if [ -w "$HALTPOLL" ]; then
    OLD_POLL=$(cat "$HALTPOLL")
    echo 200000 > "$HALTPOLL"
    trap 'echo "$OLD_POLL" > "$HALTPOLL"; cleanup' EXIT
    echo "idle vCPUs poll 200 us before halting (was $OLD_POLL ns)"
  else
    echo "POLL_IDLE=1 ignored: $HALTPOLL is not writable here" >&2
  fi
fi
RESULTS=$WORK/results.txt

if [ -n "${ISOLATE:-}" ]; then
  for p in $(ps -e -o pid=); do
    [ "$(taskset -p -c "$p" 2>/dev/null | sed 's/.*: //')" = "$ALL_CPUS" ] || continue
    taskset -a -p -c "$LOAD_CPU" "$p" >/dev/null 2>&1 && MOVED+=("$p")
  done
  echo "${#MOVED[@]} processes moved off the server core for the run (restored on exit)"
fi

# raw_us CRATE BENCH ID: criterion's median time of one call of the benchmark ID (a whole name),
# in microseconds, on the server core: the floors the rows are held against.
raw_us() {
  taskset -c "$SERVER_CPU" cargo bench -q -p "$1" --bench "$2" -- "^$3\$" --warm-up-time 1 \
    --measurement-time 3 2>/dev/null | python3 -c '
import re, sys
m = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+)", sys.stdin.read())
v, unit = float(m.group(1)), m.group(2)
print(v * {"ns": 1e-3, "µs": 1, "us": 1, "ms": 1e3}[unit])
'
}
# One verify and one sign per algorithm (aws-lc-rs, the raw call) and one Argon2id verification
# with the default parameters (the argon2 crate, as a login runs it) are timed in each round of
# the rows held against them: this VM's speed drifts over minutes, and a floor is fairest taken
# beside the row held against it. Built first, so that no round waits for a build.
cargo bench -q -p tessera-jose --bench jose --no-run 2>/dev/null
cargo bench -q -p tessera-core --bench password --no-run 2>/dev/null

LUA=$WORK/req.lua
cat > "$LUA" <<'LUA'
wrk.method = os.getenv("B_METHOD") or "GET"
local body = os.getenv("B_BODY")
if body and body ~= "" then wrk.body = body end
for _, name in ipairs({ "B_H1", "B_H2" }) do
  local h = os.getenv(name)
  if h and h ~= "" then
    local k, v = h:match("^([^:]+):%s*(.*)$")
    wrk.headers[k] = v
  end
end
function done(summary, latency, requests)
  io.write(string.format("BENCH rps=%.0f p50_ms=%.3f p99_ms=%.3f errors=%d non2xx=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
LUA

PW='correct horse battery staple'

# start NAME PORT [ENV...]: a server pinned to SERVER_CPU, waited for (at most 30 s).
start() {
  local name=$1 port=$2; shift 2
  env "$@" taskset -c "$SERVER_CPU" "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$WORK/$name" \
    >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  PID_OF[$name]=$!
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return 0
    sleep 0.1
  done
  echo "server $name did not start" >&2; cat "$WORK/$name.log" >&2; exit 1
}

# stop NAME...: ends those servers (each measured alone).
stop() {
  for n in "$@"; do
    kill "${PID_OF[$n]}" 2>/dev/null || true
    wait "${PID_OF[$n]}" 2>/dev/null || true
  done
}

login_cookie() {
  curl -sf -c - -X POST "http://127.0.0.1:$1/auth/login" -H 'content-type: application/json' \
    -d "{\"username\":\"bench\",\"password\":\"$PW\"}" | awk '$6 == "tessera_session" {print $6 "=" $7}'
}

# wrk1 URL [HEADER]: one run of wrk (with the Lua script SCRIPT, default the one-request script
# above); its BENCH line.
wrk1() {
  B_H1="${2:-}" timeout $((DURATION + 30)) taskset -c "$LOAD_CPU" \
    wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "${SCRIPT:-$LUA}" "$1" | grep '^BENCH'
}

# summarize LABEL BENCH_LINE...: prints the median of each column of those runs, and keeps the
# row's rate in $RESULTS.
summarize() {
  local label=$1; shift
  printf '%s\n' "$@" | python3 -c '
import sys, statistics
rows = [dict(kv.split("=") for kv in l.split()[1:]) for l in sys.stdin if l.strip()]
med = lambda k: statistics.median(float(r[k]) for r in rows)
bad = sum(int(r["errors"]) + int(r["non2xx"]) for r in rows)
rps, p50, p99 = med("rps"), med("p50_ms"), med("p99_ms")
print(f"| {sys.argv[1]} | {rps:.0f} | {p50:.3f} | {p99:.3f} | {bad} |")
with open(sys.argv[2], "a") as f:
    f.write(f"{sys.argv[1]}\t{rps:.0f}\n")
' "$label" "$RESULTS"
}

# run LABEL URL [HEADER]: REPS runs of wrk; prints the median of each column.
run() {
  local label=$1 url=$2 header=${3:-}
  local out=()
  for _ in $(seq "$REPS"); do
    out+=("$(wrk1 "$url" "$header")")
  done
  summarize "$label" "${out[@]}"
}

# rps_of BENCH_LINE: its rate.
rps_of() { sed 's/.*rps=\([0-9.]*\).*/\1/' <<<"$1"; }

# plain1 URL: one run of a GET with none of a row's request options (B_METHOD, B_BODY, headers,
# a Lua script); its BENCH line.
plain1() { (unset B_METHOD B_BODY B_H1 B_H2 SCRIPT B_TOKENS; wrk1 "$1"); }

# round KEY PART=VALUE...: one round of the row KEY, in $ROUNDS: its rate (row=) and its floor's
# parts as measured beside it (healthz=, sign=, verify=); the table at the end makes each round's
# floor and ratio of them.
ROUNDS=$WORK/rounds.txt
: >"$ROUNDS"
round() { local key=$1; shift; printf '%s\t%s\n' "$key" "$*" >>"$ROUNDS"; }

# beside KEY N FLOOR_LABEL LABEL URL [HEADER]: N rounds of one run of /healthz on the row's
# server (URL's origin) then one of the row; the row printed as `run` prints it (the medians of
# its runs), and the /healthz runs too under FLOOR_LABEL when it is not empty; each round kept
# under KEY.
beside() {
  local key=$1 n=$2 floor_label=$3 label=$4 url=$5 header=${6:-}
  local healthz=${url%"${url#http://*/}"}healthz a=() b=()
  for _ in $(seq "$n"); do
    a+=("$(plain1 "$healthz")")
    b+=("$(wrk1 "$url" "$header")")
    round "$key" "healthz=$(rps_of "${a[-1]}") row=$(rps_of "${b[-1]}")"
  done
  [ -n "$floor_label" ] && summarize "$floor_label" "${a[@]}"
  summarize "$label" "${b[@]}"
}

# paced LABEL URL HEADER MAX [FRACTION]: p99 at FRACTION (default 0.8) of MAX (measured just
# before, alone like now): an open-loop load at a fixed rate from examples/paced.rs (request i due
# at i/rate, pipelined on its connection, latency counted from when it was due, so a stall is not
# hidden by the generator waiting for it). It includes the generator's own lateness in sending and
# reading: an upper bound. REPS runs: the median p50 and p99, and the worst p99.
paced() {
  local label=$1 url=$2 header=$3 max=$4 fraction=${5:-0.8}
  local rate
  rate=$(python3 -c "print(int($fraction * $max))")
  local args=("$url" "$rate" "$DURATION" "$CONNS")
  [ -n "$header" ] && args+=("$header")
  : >"$WORK/paced.txt"
  for _ in $(seq "$REPS"); do
    timeout $((DURATION + 30)) taskset -c "$LOAD_CPU" "$PACED" "${args[@]}" >>"$WORK/paced.txt"
  done
  python3 - "$label" "$max" "$WORK/paced.txt" <<'PY'
import sys, statistics
runs = [dict(kv.split("=") for kv in l.split()) for l in open(sys.argv[3]) if l.strip()]
med = lambda k: statistics.median(float(r[k]) for r in runs)
bad = sum(int(r["non2xx"]) + int(r["sent"]) - int(r["answered"]) for r in runs)
worst = max(float(r["p99_ms"]) for r in runs)
rps = med("rate")
print(f"| {sys.argv[1]}, fixed rate {rps / float(sys.argv[2]):.2f} x its max | {rps:.0f} | {med('p50_ms'):.3f} | {med('p99_ms'):.3f} (worst {worst:.3f}) | {bad} |")
PY
}
# The rate of the row `run` printed last.
last_rate() { tail -n 1 "$RESULTS" | cut -f 2; }

# The server core left alone: how often it is taken away (see the header).
echo "server core idle, stalls over $((DURATION * REPS)) s: $(taskset -c "$SERVER_CPU" "$STALLS" $((DURATION * REPS)))"
echo

# SQLite (the embedded default), the user made by the CLI.
echo "$PW" | "$BIN" user add bench --password-stdin --data-dir "$WORK/sqlite" >/dev/null 2>&1
# basic_auth DIR: a confidential client `rs` (client credentials, scope api:read) made by the CLI
# in DIR, as the value of an HTTP Basic Authorization header.
basic_auth() {
  local secret
  secret=$("$BIN" client add rs --grant client_credentials --scope api:read --audience urn:bench:api \
    --json --data-dir "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')
  printf 'Basic %s' "$(printf 'rs:%s' "$secret" | base64 -w0)"
}
SQLITE_BASIC=$(basic_auth "$WORK/sqlite")
start sqlite 18181
SQLITE_COOKIE="Cookie: $(login_cookie 18181)"

echo "| scenario | rps (median of $REPS) | p50 ms | p99 ms | errors+non-2xx |"
echo "|---|---|---|---|---|"
# The JWKS against /healthz round by round (its target is the nearest to 1).
beside jwks "$PAIR_REPS" "healthz (floor; $PAIR_REPS runs, in turn with the JWKS)" \
  "jwks ($PAIR_REPS runs, in turn with /healthz)" http://127.0.0.1:18181/.well-known/jwks.json
paced "healthz" http://127.0.0.1:18181/healthz "" "$(grep -m1 '^healthz' "$RESULTS" | cut -f 2)"
JWKS_ETAG=$(curl -sfI http://127.0.0.1:18181/.well-known/jwks.json |
  awk 'tolower($1) == "etag:" {print $2}' | tr -d '\r')
run "jwks, If-None-Match: its ETag (304; counted as non-2xx)" \
  http://127.0.0.1:18181/.well-known/jwks.json "If-None-Match: $JWKS_ETAG"
run "me, session cookie, SQLite" http://127.0.0.1:18181/auth/me "$SQLITE_COOKIE"

# Bearer access JWTs (EdDSA). Hot: one token re-sent, as a client does for its 15 minutes.
ACCESS=$(curl -sf -X POST http://127.0.0.1:18181/auth/login -H 'content-type: application/json' \
  -d "{\"username\":\"bench\",\"password\":\"$PW\",\"mode\":\"token\"}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
beside hot "$REPS" "" "me, Bearer EdDSA JWT, hot (in turn with /healthz)" \
  http://127.0.0.1:18181/auth/me "Authorization: Bearer $ACCESS"
# Introspection (RFC 7662) of that token by the confidential client.
B_METHOD=POST B_BODY="token=$ACCESS" B_H2="Authorization: $SQLITE_BASIC" \
  beside introspection "$REPS" "" "introspection of an access JWT (in turn with /healthz)" \
  http://127.0.0.1:18181/oauth2/introspect "Content-Type: application/x-www-form-urlencoded"

# Logins at full speed beside /auth/me: a second wrk, on the load core too, as another user (the
# logins of `bench` would end its session past session.max_per_user).
echo "$PW" | "$BIN" user add flood --password-stdin --data-dir "$WORK/sqlite" >/dev/null 2>&1
B_METHOD=POST B_BODY="{\"username\":\"flood\",\"password\":\"$PW\"}" B_H1="Content-Type: application/json" \
  timeout $((DURATION * REPS + 60)) taskset -c "$LOAD_CPU" \
  wrk -t1 -c8 -d"$((DURATION * REPS + 5))s" --timeout 10s -s "$LUA" http://127.0.0.1:18181/auth/login \
  >"$WORK/flood.txt" 2>&1 &
FLOOD=$!
PIDS+=($FLOOD)
sleep 2
run "me, SQLite, during a login flood" http://127.0.0.1:18181/auth/me "$SQLITE_COOKIE"
wait "$FLOOD" || true
stop sqlite

# The memory store, the user registered over HTTP.
start memory 18182 TESSERA_DATABASE_URL=memory: TESSERA_ALLOW_REGISTRATION=true
curl -sf -X POST http://127.0.0.1:18182/auth/register -H 'content-type: application/json' \
  -d "{\"username\":\"bench\",\"password\":\"$PW\"}" >/dev/null
run "me, session cookie, memory" http://127.0.0.1:18182/auth/me "Cookie: $(login_cookie 18182)"
stop memory

# Per algorithm (EdDSA, ES256), a server whose verified-token cache is off: cold, 10,000 distinct
# access tokens (from refresh rotations), so that every request checks a signature; then client
# credentials, each answer a newly signed token. On the EdDSA one, logins (each an Argon2id
# verification and a new session), 8 at once for one account from one address, the throttle's
# free attempts raised so that it does not refuse them.
COLD_LUA=$WORK/cold.lua
cat > "$COLD_LUA" <<'LUA'
local tokens = {}
for line in io.lines(os.getenv("B_TOKENS")) do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", nil, { Authorization = "Bearer " .. tokens[(i % #tokens) + 1] })
end
LUA
sed -n '/^function done/,$p' "$LUA" >> "$COLD_LUA"
port=18188
for alg in EdDSA ES256; do
  name=cold-$alg
  ALG_ENV=(TESSERA_TOKENS_ALGORITHM=$alg)
  echo "$PW" | env "${ALG_ENV[@]}" "$BIN" user add bench --password-stdin --data-dir "$WORK/$name" >/dev/null 2>&1
  BASIC=$(export "${ALG_ENV[@]}"; basic_auth "$WORK/$name")
  start "$name" $port "${ALG_ENV[@]}" TESSERA_TOKENS_VERIFIED_CACHE_SIZE=0 \
    TESSERA_THROTTLE_ACCOUNT_FREE_ATTEMPTS=1000000 TESSERA_THROTTLE_IP_FREE_ATTEMPTS=1000000
  python3 - "$PW" $port "$alg" > "$WORK/tokens.txt" <<'PY'
import base64, json, sys, urllib.request
pw, port, alg = sys.argv[1:]
def post(path, data, ctype):
    req = urllib.request.Request(f"http://127.0.0.1:{port}" + path, data=data.encode(), headers={"content-type": ctype})
    return json.load(urllib.request.urlopen(req, timeout=10))
t = post("/auth/login", json.dumps({"username": "bench", "password": pw, "mode": "token"}), "application/json")
header = json.loads(base64.urlsafe_b64decode(t["access_token"].split(".")[0] + "=="))
if header["alg"] != alg:
    sys.exit(f"the server signs with {header['alg']}, not {alg}")
refresh = t["refresh_token"]
print(t["access_token"])
for _ in range(9999):
    t = post("/oauth2/token", "grant_type=refresh_token&client_id=tessera&refresh_token=" + refresh, "application/x-www-form-urlencoded")
    refresh = t["refresh_token"]
    print(t["access_token"])
PY
  # REPS rounds: the raw verify and sign (the server idle), /healthz, the cold row, client
  # credentials.
  h=() cold=() cc=() calls=()
  for _ in $(seq "$REPS"); do
    verify=$(raw_us tessera-jose jose "verify/$alg/raw")
    sign=$(raw_us tessera-jose jose "sign/$alg/raw")
    calls+=("verify=$verify sign=$sign")
    h+=("$(plain1 "http://127.0.0.1:$port/healthz")")
    cold+=("$(B_TOKENS="$WORK/tokens.txt" SCRIPT="$COLD_LUA" wrk1 "http://127.0.0.1:$port/auth/me")")
    cc+=("$(B_METHOD=POST B_BODY="grant_type=client_credentials&scope=api:read" B_H2="Authorization: $BASIC" \
      wrk1 "http://127.0.0.1:$port/oauth2/token" "Content-Type: application/x-www-form-urlencoded")")
    round "cold/$alg" "verify=$verify healthz=$(rps_of "${h[-1]}") row=$(rps_of "${cold[-1]}")"
    round "cc/$alg" "sign=$sign healthz=$(rps_of "${h[-1]}") row=$(rps_of "${cc[-1]}")"
  done
  echo "raw $alg calls on the server core, in its rounds (us): ${calls[*]}"
  summarize "healthz, the $alg server (in its rounds)" "${h[@]}"
  summarize "me, Bearer $alg JWT, cold (10,000 tokens, no cache)" "${cold[@]}"
  summarize "client credentials, $alg" "${cc[@]}"
  if [ "$alg" = EdDSA ]; then
    # REPS rounds: the raw Argon2id verification (the server idle), then the logins.
    logins=()
    for _ in $(seq "$REPS"); do
      argon2=$(raw_us tessera-core password password/verify/raw)
      logins+=("$(B_METHOD=POST B_BODY="{\"username\":\"bench\",\"password\":\"$PW\"}" CONNS=8 \
        wrk1 "http://127.0.0.1:$port/auth/login" "Content-Type: application/json")")
      round logins "argon2=$argon2 row=$(rps_of "${logins[-1]}")"
    done
    echo "raw Argon2id verifications on the server core, in the logins' rounds (us): $(grep '^logins' "$ROUNDS" | sed 's/.*argon2=\([0-9.]*\).*/\1/' | tr '\n' ' ')"
    summarize "logins (Argon2id, 8 at once)" "${logins[@]}"
  fi
  stop "$name"
  port=$((port + 1))
done

# Many servers: PostgreSQL (the machine's, a schema of our own) and a Redis of our own pinned to
# the server core like the server (as ../shared/bench-peers pins its Redis).
PG_URL=${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
SCHEMA=tessera_bench_$$
psql -q "$PG_URL" -c "CREATE SCHEMA $SCHEMA"
CLEAN_PG="DROP SCHEMA IF EXISTS $SCHEMA CASCADE"
REDIS_PORT=${REDIS_PORT:-16391}
taskset -c "$SERVER_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
  --appendonly no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
SEP='?'; case $PG_URL in *\?*) SEP='&';; esac
SHARED_ENV=(TESSERA_DATABASE_URL="$PG_URL${SEP}options[search_path]=$SCHEMA"
  TESSERA_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" TESSERA_REDIS_PREFIX=bench
  TESSERA_MASTER_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8)
PG_ENV=(TESSERA_DATABASE_URL="$PG_URL${SEP}options[search_path]=$SCHEMA"
  TESSERA_MASTER_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8)
echo "$PW" | env "${SHARED_ENV[@]}" "$BIN" user add bench --password-stdin --data-dir "$WORK/cli" >/dev/null 2>&1
start redis 18184 "${SHARED_ENV[@]}"
REDIS_COOKIE="Cookie: $(login_cookie 18184)"
run "me, session cookie, Redis (+PostgreSQL), cached" http://127.0.0.1:18184/auth/me "$REDIS_COOKIE"
REDIS_MAX=$(last_rate)
paced "me, Redis, cached" http://127.0.0.1:18184/auth/me "$REDIS_COOKIE" "$REDIS_MAX" 0.7
paced "me, Redis, cached" http://127.0.0.1:18184/auth/me "$REDIS_COOKIE" "$REDIS_MAX"
stop redis
start redis-nocache 18185 "${SHARED_ENV[@]}" TESSERA_SESSION_CACHE_TTL=0s
REDIS_COOKIE="Cookie: $(login_cookie 18185)"
beside redis "$REPS" "" "me, session cookie, Redis, cache off (a Redis read per request; in turn with /healthz)" \
  http://127.0.0.1:18185/auth/me "$REDIS_COOKIE"
REDIS_MAX=$(last_rate)
paced "me, Redis, cache off" http://127.0.0.1:18185/auth/me "$REDIS_COOKIE" "$REDIS_MAX" 0.6
paced "me, Redis, cache off" http://127.0.0.1:18185/auth/me "$REDIS_COOKIE" "$REDIS_MAX"
stop redis-nocache
start pg 18186 "${PG_ENV[@]}"
run "me, session cookie, PostgreSQL alone, cached" http://127.0.0.1:18186/auth/me "Cookie: $(login_cookie 18186)"
stop pg
start pg-nocache 18187 "${PG_ENV[@]}" TESSERA_SESSION_CACHE_TTL=0s
run "me, session cookie, PostgreSQL alone, cache off" http://127.0.0.1:18187/auth/me "Cookie: $(login_cookie 18187)"
stop pg-nocache

# Three instances behind HAProxy (round robin), all on the server core with HAProxy.
HAPORT=18190
start lb-a 18191 "${SHARED_ENV[@]}" TESSERA_INSTANCE_NAME=a
start lb-b 18192 "${SHARED_ENV[@]}" TESSERA_INSTANCE_NAME=b
start lb-c 18193 "${SHARED_ENV[@]}" TESSERA_INSTANCE_NAME=c
cat > "$WORK/haproxy.cfg" <<CFG
global
  maxconn 4000
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  option redispatch
  retries 2
frontend tessera
  bind 127.0.0.1:$HAPORT
  default_backend instances
backend instances
  balance roundrobin
  option httpchk GET /healthz
  default-server inter 1s fall 2 rise 2
  server a 127.0.0.1:18191 check
  server b 127.0.0.1:18192 check
  server c 127.0.0.1:18193 check
CFG
taskset -c "$SERVER_CPU" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HAPORT/healthz" >/dev/null && break; sleep 0.1; done
run "healthz through HAProxy, 3 instances" "http://127.0.0.1:$HAPORT/healthz"
run "me, session cookie, Redis, through HAProxy, 3 instances" "http://127.0.0.1:$HAPORT/auth/me" \
  "Cookie: $(login_cookie $HAPORT)"

echo
echo "login flood beside the SQLite row: $(grep '^BENCH' "$WORK/flood.txt" || echo 'no result')"

[ -n "${RESULTS_TO:-}" ] && cp "$RESULTS" "$RESULTS_TO"

python3 - "$RESULTS" "$ROUNDS" <<'PY'
import statistics, sys
rows = dict(l.rstrip("\n").split("\t") for l in open(sys.argv[1]))
rounds = {}
for l in open(sys.argv[2]):
    key, parts = l.rstrip("\n").split("\t")
    rounds.setdefault(key, []).append({k: float(v) for k, v in (p.split("=") for p in parts.split())})
rate = lambda prefix: next(float(v) for k, v in rows.items() if k.startswith(prefix))
med = statistics.median
# The median of one part (sign, verify, argon2) over a row's rounds, for the floor's description.
part = lambda key, name: med(r[name] for r in rounds[key])

# Each round's floor (/s), from the parts measured in that round.
def of_healthz(r): return r["healthz"]
def of_sign(r): return 1 / (1 / r["healthz"] + r["sign"] / 1e6)
def of_verify(r): return min(r["healthz"], 1e6 / r["verify"])
def of_argon2(r): return 1e6 / r["argon2"]

table = [  # (row, its rounds' key, how its floor is made, the floor's formula, target)
    ("JWKS", "jwks", "/healthz", of_healthz, 0.95),
    ("introspection of an access JWT", "introspection", "/healthz", of_healthz, 0.6),
    ("/auth/me, Bearer EdDSA JWT, hot", "hot", "/healthz", of_healthz, 0.6),
]
for alg in ["EdDSA", "ES256"]:
    table.append((f"client credentials, {alg}", f"cc/{alg}",
                  f"1/(/healthz's cost + sign {part(f'cc/{alg}', 'sign'):.1f} us)", of_sign, 0.7))
    table.append((f"/auth/me, Bearer {alg} JWT, cold", f"cold/{alg}",
                  f"min(/healthz, 1/verify {part(f'cold/{alg}', 'verify'):.1f} us)", of_verify, 0.7))
table.append(("/auth/me, session in Redis, cache off", "redis", "/healthz", of_healthz, 0.5))
table.append(("logins through /auth/login (Argon2id, 8 at once)", "logins",
              f"1/Argon2id verification {part('logins', 'argon2') / 1000:.1f} ms", of_argon2, 0.9))
print()
print("| row | rps | floor (/s) | the floor | ratio | target |")
print("|---|---:|---:|---|---:|---:|")
spreads = []
for name, key, how, floor, target in table:
    rs = rounds[key]
    ratios = [r["row"] / floor(r) for r in rs]
    ratio = med(ratios)
    mark = "" if ratio >= target else " (missed)"
    print(f"| {name} | {med(r['row'] for r in rs):,.0f} | {med(floor(r) for r in rs):,.0f} | {how} "
          f"| {ratio:.2f}{mark} | >= {target} |")
    spreads.append(f"{name}: " + ", ".join(f"{x:.3f}" for x in ratios))
print("\nEach ratio is the median of its rounds' ratios (a round: the floor's parts, then the row;"
      " the rps and floor columns are the medians of the rounds' own):")
for line in spreads:
    print(f"- {line}")
healthz = rate("healthz")
redis = rate("me, session cookie, Redis (+PostgreSQL), cached")
print(f"\n(session in Redis, cached: {redis / healthz:.2f} x /healthz; JWKS 304: "
      f"{rate('jwks, If-None-Match') / healthz:.2f}; both against the first /healthz row)")
PY
