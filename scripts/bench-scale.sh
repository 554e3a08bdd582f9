#!/usr/bin/env bash
# tessera as its data grows (issue 21), on the embedded default (SQLite): the same rows at a small
# and a large data set, loaded in bulk, so that each large figure reads beside its small one.
#
#   scripts/bench-scale.sh                 # 10^3 and 10^6 sessions and users, 10^5 denylisted jtis
#   SMALL=1000 LARGE=100000 DENIED=10000 DURATION=3 scripts/bench-scale.sh    # a quicker pass
#
# Rows, per data set:
# - start-up: `tessera serve` on the existing data directory, from exec to the first /healthz
#   answer (median of 5 starts; target < 100 ms), and its RSS once idle (target < 30 MB);
# - `/auth/me` with a real session cookie among all the others, session cache off
#   (session.cache_ttl = 0s: every request reads SQLite), wrk -t1 -c32 for DURATION s, the
#   server pinned to SERVER_CPU (0) and wrk to LOAD_CPU (1): the large rate within 10 % of the
#   small one is the target;
# - `/healthz` in the same run, the framework's floor.
# The denylist is held in memory (reloaded at start): RSS(large) − RSS(small) over the entries
# added is the memory per entry, printed at the end. Still to come in this script (issue 21): the
# PostgreSQL and Redis session rows, refresh, introspection and the denylist check at scale, the
# revocation feed's catch-up.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SMALL=${SMALL:-1000}
LARGE=${LARGE:-1000000}
DENIED=${DENIED:-100000}
DURATION=${DURATION:-10}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT=${PORT:-18192}
PW="correct horse battery"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q -p tessera
BIN=$ROOT/target/release/tessera
WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
export TESSERA_MASTER_KEY
TESSERA_MASTER_KEY=$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
export RUST_LOG=warn TESSERA_SESSION_CACHE_TTL=0s

# load DIR USERS SESSIONS DENIED: a data directory with that many users, live sessions and
# denylisted access-token ids (in force for the next hour), besides `bench`, made by the CLI.
load() {
  local dir=$1
  "$BIN" migrate --data-dir "$dir" >/dev/null
  "$BIN" user add bench --password-stdin --data-dir "$dir" <<<"$PW" >/dev/null
  python3 - "$dir/tessera.db" "$2" "$3" "$4" <<'PY'
import os, sqlite3, sys, time
db, users, sessions, denied = sys.argv[1], *map(int, sys.argv[2:])
now = int(time.time())
c = sqlite3.connect(db)
c.execute("PRAGMA journal_mode=WAL")
c.execute("PRAGMA synchronous=OFF")
pw = c.execute("SELECT password_hash FROM users WHERE username='bench'").fetchone()[0]
c.executemany("INSERT INTO users (id, username, password_hash, disabled, created_at) VALUES (?,?,?,0,?)",
              ((f"usr_load{i}", f"load{i}", pw, now) for i in range(users)))
c.executemany("INSERT INTO sessions (token_hash, handle, user_id, created_at, last_seen_at, expires_at,"
              " idle_timeout, user_agent, ip, data) VALUES (?,?,?,?,?,?,1800,NULL,NULL,'{}')",
              ((os.urandom(32).hex(), f"ses_load{i}", f"usr_load{i % max(users, 1)}", now, now,
                now + 43200) for i in range(sessions)))
c.executemany("INSERT INTO access_denylist (jti, expires_at, added_at) VALUES (?,?,?)",
              ((f"jti_load{i}", now + 3600, now) for i in range(denied)))
c.commit()
c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
c.close()
PY
}

# startup DIR: "ms rss_kib", medians of 5 starts.
startup() {
  python3 - "$BIN" "$1" "$PORT" "$SERVER_CPU" <<'PY'
import os, statistics, subprocess, sys, time, urllib.request
bin_, data, port, cpu = sys.argv[1:]
ms, rss = [], []
for _ in range(5):
    t = time.monotonic()
    p = subprocess.Popen(["taskset", "-c", cpu, bin_, "serve", "--listen", f"127.0.0.1:{port}",
                          "--data-dir", data], stderr=subprocess.DEVNULL)
    deadline = t + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            break
        except Exception:
            if time.monotonic() > deadline:
                sys.exit("the server did not answer within 30 s")
            time.sleep(0.002)
    ms.append((time.monotonic() - t) * 1000)
    time.sleep(3)
    with open(f"/proc/{p.pid}/status") as f:
        rss.append(int(next(l for l in f if l.startswith("VmRSS")).split()[1]))
    p.terminate()
    p.wait()
print(f"{statistics.median(ms):.0f} {statistics.median(rss)}")
PY
}

# rate URL [HEADER]: requests per second (wrk, 2xx only counted by wrk's own total minus errors).
rate() {
  HDR="${2:-}" taskset -c "$LOAD_CPU" wrk -t1 -c32 -d"${DURATION}s" -s "$WORK/h.lua" "$1" |
    awk '/Requests\/sec/ {print $2}'
}
cat >"$WORK/h.lua" <<'LUA'
local h = os.getenv("HDR")
if h and h ~= "" then local k, v = h:match("([^:]+):%s*(.*)"); wrk.headers[k] = v end
function done(summary) if summary.errors.status > 0 then io.stderr:write("non-2xx: " .. summary.errors.status .. "\n") end end
LUA

measure() {
  local name=$1 dir=$2
  read -r ms rss <<<"$(startup "$dir")"
  taskset -c "$SERVER_CPU" "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$dir" 2>/dev/null &
  SERVER_PID=$!
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  local cookie
  cookie=$(curl -sf -c - -X POST "http://127.0.0.1:$PORT/auth/login" -H 'content-type: application/json' \
    -d "{\"username\":\"bench\",\"password\":\"$PW\"}" | awk '$6 == "tessera_session" {print $6 "=" $7}')
  local me health
  me=$(rate "http://127.0.0.1:$PORT/auth/me" "Cookie: $cookie")
  health=$(rate "http://127.0.0.1:$PORT/healthz")
  kill "$SERVER_PID" && wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
  echo "$name $ms $rss $me $health" >>"$WORK/rows"
}

t0=$(date +%s)
load "$WORK/small" "$SMALL" "$SMALL" "$SMALL"
t1=$(date +%s)
load "$WORK/large" "$LARGE" "$LARGE" "$DENIED"
t2=$(date +%s)
echo "loaded: small in $((t1 - t0)) s, large ($LARGE users, $LARGE sessions, $DENIED denylisted) in $((t2 - t1)) s"
measure small "$WORK/small"
measure large "$WORK/large"

python3 - "$WORK/rows" "$SMALL" "$LARGE" "$DENIED" <<'PY'
import sys
rows = {l.split()[0]: [float(x) for x in l.split()[1:]] for l in open(sys.argv[1])}
small_n, large_n, denied = map(int, sys.argv[2:])
print("| data | start to /healthz (ms) | idle RSS (MB) | /auth/me, SQLite, cache off (/s) | /healthz (/s) |")
print("|---|---:|---:|---:|---:|")
for name, n, d in [("small", small_n, small_n), ("large", large_n, denied)]:
    ms, rss, me, health = rows[name]
    print(f"| {n:,} users and sessions, {d:,} denylisted | {ms:.0f} | {rss / 1024:.1f} | {me:,.0f} | {health:,.0f} |")
(s_ms, s_rss, s_me, _), (l_ms, l_rss, l_me, _) = rows["small"], rows["large"]
print()
print(f"start-up: {l_ms:.0f} ms at the large set (target < 100 ms); idle RSS {l_rss / 1024:.1f} MB (target < 30 MB)")
print(f"/auth/me large / small = {l_me / s_me:.2f} (target >= 0.90)")
per = (l_rss - s_rss) * 1024 / max(denied - small_n, 1)
print(f"memory per denylist entry held (RSS slope): {per:.0f} bytes")
PY
