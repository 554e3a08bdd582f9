#!/usr/bin/env bash
# tessera as its data grows (issue 21), on the embedded default (SQLite): the same rows at a small
# and a large data set, loaded in bulk, so that each large figure reads beside its small one.
#
#   scripts/bench-scale.sh                 # 10^3 and 10^6 sessions and users, 10^5 denylisted jtis
#   SMALL=1000 LARGE=100000 DENIED=10000 DURATION=3 scripts/bench-scale.sh    # a quicker pass
#
# Rows, per data set (the server pinned to SERVER_CPU (0), wrk -t1 -c32 for DURATION s on LOAD_CPU
# (1), REPS (3) rounds taking the small and the large set in turn, medians; the large rate within
# 10 % of the small one is the target of every rate row):
# - start-up: `tessera serve` on the existing data directory, from exec to the first /healthz
#   answer (median of 5 starts; target < 100 ms; each start printed too, with the CPU it
#   used and the time it waited for the core), and its RSS once idle (target < 30 MB), with
#   the anonymous part of it (the rest is the binary's own pages, shared and reclaimable): the
#   time with the binary in the page cache, as a restart finds it; the RSS after a start with
#   the page cache dropped (DROP_CACHES=1), since with all of the binary cached each fault maps
#   its neighbours too (fault-around: about 5 MB more of the same code; printed too), then again
#   after IDLE (190) s idle (three full catch-ups with the store);
# - `/auth/me` with a real session cookie among all the others, session cache off
#   (session.cache_ttl = 0s: every request reads SQLite);
# - `/auth/me` with a Bearer access JWT: the denylist check against every revocation in force;
# - introspection (RFC 7662) of that access JWT by a confidential client;
# - refresh: the refresh_token grant, each connection presenting the token its last answer gave
#   (one rotation per request, among all the other families);
# - `/healthz` in the same run, the framework's floor;
# - the revocation feed: a new tessera-verify follower (crates/tessera-verify/examples/reach.rs)
#   catches up with every revocation in force (time, count, its memory growth; targets < 2 s and
#   < 20 MB at 10^5), then REVOKED (200) revocations are timed from the RFC 7009 request to the
#   follower's refusal (target p99 < 1 s).
# The data: users, live sessions, refresh-token families (each with its live token and the record
# of its last access token) and denylisted jtis inserted in bulk
# (python's sqlite3, one transaction) beside the `bench` user and the `rs` client, made by the
# CLI. RSS(large) − RSS(small) over the denylist entries added is printed as the memory per entry
# (an upper bound: SQLite's page cache grows with the data too).
#
# The caches' memory: on the large set, with the session cache on, CACHED (99,000) sessions each
# ask /auth/me, first all of one user, then (a new server) each of its own user: the RSS growth
# with the caches full (each holds at most 100,000: the bound on what they can take), and from it
# the memory per cached session and per cached user.
#
# Then sessions elsewhere: `/auth/me` by cookie with the session cache off, sessions in
# PostgreSQL (one of its own on PORT+2, pinned to the server core, its buffer pool sized for the
# data; PG_OWN=0: the machine's, TEST_POSTGRES_URL; a schema of its own either way; users there
# too), and sessions in Redis (a redis-server of its own on PORT+1, pinned to the server
# core, no persistence; users in PostgreSQL), each at SMALL and then at LARGE sessions and users
# (inserted by generate_series and by a Lua loop copying a real session), REPS rounds each with
# /healthz beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SMALL=${SMALL:-1000}
LARGE=${LARGE:-1000000}
DENIED=${DENIED:-100000}
DURATION=${DURATION:-10}
REPS=${REPS:-3}
REVOKED=${REVOKED:-200}
CACHED=${CACHED:-99000}
IDLE=${IDLE:-190}
DROP_CACHES=${DROP_CACHES:-1}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT=${PORT:-18192}
PW="correct horse battery"

for t in wrk redis-server psql; do
  command -v "$t" >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq wrk redis-server postgresql-client >/dev/null; break; }
done
cargo build --release -q -p tessera
cargo build --release -q -p tessera-verify --example reach
BIN=$ROOT/target/release/tessera
REACH=$ROOT/target/release/examples/reach
WORK=$(mktemp -d)
SERVER_PID=
REDIS_PID=
PG_URL=${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
SCHEMA=tessera_scale_$$
PG_DIR=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
  psql -q "$PG_URL" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" 2>/dev/null || true
  [ -n "$PG_DIR" ] && as_postgres "$PG_BIN/pg_ctl" stop -D "$PG_DIR/data" -m immediate >/dev/null 2>&1
  [ -n "$PG_DIR" ] && rm -rf "$PG_DIR"
  rm -rf "$WORK"
}
trap cleanup EXIT
export TESSERA_MASTER_KEY
TESSERA_MASTER_KEY=$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
export RUST_LOG=warn TESSERA_SESSION_CACHE_TTL=0s

# load DIR USERS SESSIONS DENIED [CACHED]: a data directory with that many users, live sessions,
# refresh families (one live token and one recorded access token each) and denylisted access-token ids (in force for the next
# hour), besides `bench` and the confidential client `rs` (its secret in DIR/secret), made by the
# CLI. With CACHED, sessions 0..CACHED (each of its own user) and CACHED..2 CACHED (all of user 0)
# get real tokens, their cookies in DIR/distinct and DIR/one.
load() {
  local dir=$1
  "$BIN" migrate --data-dir "$dir" >/dev/null
  "$BIN" user add bench --password-stdin --data-dir "$dir" <<<"$PW" >/dev/null
  "$BIN" client add rs --grant client_credentials --scope api:read --audience urn:bench:api \
    --json --data-dir "$dir" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])' >"$dir/secret"
  python3 - "$dir/tessera.db" "$2" "$3" "$4" "${5:-0}" <<'PY'
import base64, hashlib, os, sqlite3, sys, time
db, users, sessions, denied, cached = sys.argv[1], *map(int, sys.argv[2:])
now = int(time.time())
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
cookies = {"distinct": open(os.path.join(os.path.dirname(db), "distinct"), "w"),
           "one": open(os.path.join(os.path.dirname(db), "one"), "w")}
def session_hash(i):
    # A real session token (tessera's form: prefix, 32 random bytes, a checksum) for the cache
    # rows, its cookie kept; any hash for the others.
    if i >= 2 * cached:
        return os.urandom(32).hex()
    body = b64(os.urandom(32))
    value = "tss_" + body + b64(hashlib.sha256(("tss_" + body).encode()).digest()[:4])
    cookies["distinct" if i < cached else "one"].write(value + "\n")
    return hashlib.sha256(value.encode()).hexdigest()
c = sqlite3.connect(db)
c.execute("PRAGMA journal_mode=WAL")
c.execute("PRAGMA synchronous=OFF")
pw = c.execute("SELECT password_hash FROM users WHERE username='bench'").fetchone()[0]
user = lambda i: "usr_load0" if cached <= i < 2 * cached else f"usr_load{i % max(users, 1)}"
c.executemany("INSERT INTO users (id, username, password_hash, disabled, created_at) VALUES (?,?,?,0,?)",
              ((f"usr_load{i}", f"load{i}", pw, now) for i in range(users)))
c.executemany("INSERT INTO sessions (token_hash, handle, user_id, created_at, last_seen_at, expires_at,"
              " idle_timeout, user_agent, ip, data) VALUES (?,?,?,?,?,?,1800,NULL,NULL,'{}')",
              ((session_hash(i), f"ses_load{i}", user(i), now, now, now + 43200)
               for i in range(sessions)))
c.executemany("INSERT INTO refresh_families (family, user_id, revoked, expires_at) VALUES (?,?,0,?)",
              ((f"fam_load{i}", user(i), now + 30 * 86400) for i in range(sessions)))
c.executemany("INSERT INTO refresh_tokens (token_hash, family, user_id, client_id, scope, created_at,"
              " expires_at, family_expires_at, used_at, access_jti)"
              " VALUES (?,?,?,'tessera','',?,?,?,NULL,NULL)",
              ((os.urandom(32).hex(), f"fam_load{i}", user(i), now, now + 86400, now + 30 * 86400)
               for i in range(sessions)))
# Each family's last access token, recorded as tessera records it (so that revoking the family
# refuses it): its id in tessera's form, the issue second in an ASCII-ordered base64url then 96
# random bits, issued at the load (kept for the access tokens' 15 minutes, which the rate rows
# run within; the purge forgets them after).
SORTED = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
second = "".join(SORTED[(now >> (6 * k)) & 63] for k in range(5, -1, -1))
c.executemany("INSERT INTO refresh_access (jti, family, issued_at) VALUES (?,?,?)",
              ((second + b64(os.urandom(12)), f"fam_load{i}", now) for i in range(sessions)))
c.executemany("INSERT INTO access_denylist (jti, expires_at, added_at) VALUES (?,?,?)",
              ((f"jti_load{i}", now + 3600, now) for i in range(denied)))
c.commit()
c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
c.close()
for f in cookies.values():
    f.close()
PY
}

# drop_caches: the kernel's page cache emptied (DROP_CACHES=1, as root), so that the binary's
# resident code pages do not depend on what ran before: with all of the binary in the page
# cache, each fault maps its neighbours too (fault-around), 5 MB more of the same code.
drop_caches() {
  [ "$DROP_CACHES" = 1 ] && sync && { echo 1 >/proc/sys/vm/drop_caches; } 2>/dev/null || true
}

# starts DIR N [KIND]: "ms rss_kib anon_kib", medians of N starts (labelled KIND, default warm):
# the time from exec to the first /healthz answer, then RSS and its anonymous part 3 s after.
# Each start is also written to $WORK/starts: its time; the CPU the process had used by then
# (/proc/PID/stat, every thread's, the reload's exited one too, in 10 ms ticks); how long the
# threads still alive then had waited for the core, runnable (/proc/PID/task/*/schedstat); and
# the time the hypervisor took from the server core meanwhile (steal, /proc/stat, 10 ms ticks):
# so that a slow start shows whether it worked more or waited more.
starts() {
  python3 - "$BIN" "$1" "$PORT" "$SERVER_CPU" "$2" "$WORK/starts" "${3:-warm}" <<'PY'
import os, statistics, subprocess, sys, time, urllib.request
bin_, data, port, cpu, n, log, kind = sys.argv[1:]
def sched(pid):
    wait = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                wait += int(f.read().split()[1])
        except OSError:
            continue
    with open(f"/proc/{pid}/stat") as f:
        ticks = f.read().rsplit(")", 1)[1].split()
    return (int(ticks[11]) + int(ticks[12])) * TICK_MS, wait / 1e6
def steal():
    with open("/proc/stat") as f:
        return next(int(l.split()[8]) for l in f if l.startswith(f"cpu{cpu} ")) * TICK_MS
TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")
ms, rss, anon = [], [], []
for _ in range(int(n)):
    s0 = steal()
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
    run, wait = sched(p.pid)
    with open(log, "a") as f:
        f.write(f"{data.rsplit('/', 1)[-1]},{kind} {ms[-1]:.1f} {run:.1f} {wait:.1f} {steal() - s0:.0f}\n")
    time.sleep(3)
    with open(f"/proc/{p.pid}/status") as f:
        st = {l.split(":")[0]: int(l.split()[1]) for l in f if l.startswith(("VmRSS", "RssAnon"))}
    rss.append(st["VmRSS"])
    anon.append(st["RssAnon"])
    p.terminate()
    p.wait()
print(f"{statistics.median(ms):.0f} {statistics.median(rss)} {statistics.median(anon)}")
PY
}

# startup DIR: "ms rss_kib anon_kib": the time to the first /healthz, median of 5 starts with
# the binary in the page cache (a restart); then RSS and its anonymous part after one more
# start with the page cache dropped (DROP_CACHES=1; without it, the 5 starts' medians), the warm
# starts' median RSS in $WORK/warm_rss.
startup() {
  local ms rss anon
  read -r ms rss anon <<<"$(starts "$1" 5)"
  echo "$1 $rss $anon" >>"$WORK/warm_rss"
  if [ "$DROP_CACHES" = 1 ]; then
    drop_caches
    read -r _ rss anon <<<"$(starts "$1" 1 page-cache-dropped)"
  fi
  echo "$ms $rss $anon"
}

# rate URL [HEADER [SCRIPT]]: requests per second (wrk; non-2xx answers are reported on stderr).
rate() {
  HDR="${2:-}" taskset -c "$LOAD_CPU" wrk -t1 -c32 -d"${DURATION}s" -s "${3:-$WORK/h.lua}" "$1" |
    awk '/Requests\/sec/ {print $2}'
}
DONE='function done(summary) if summary.errors.status > 0 then io.stderr:write("non-2xx: " .. summary.errors.status .. "\n") end end'
cat >"$WORK/h.lua" <<LUA
local h = os.getenv("HDR")
if h and h ~= "" then local k, v = h:match("([^:]+):%s*(.*)"); wrk.headers[k] = v end
$DONE
LUA
# A form POST of BODY with the header HDR (introspection: HTTP Basic).
cat >"$WORK/post.lua" <<LUA
local k, v = os.getenv("HDR"):match("([^:]+):%s*(.*)")
wrk.method = "POST"
wrk.headers[k] = v
wrk.headers["content-type"] = "application/x-www-form-urlencoded"
wrk.body = os.getenv("BODY")
$DONE
LUA
# Refresh: each request presents a refresh token an earlier answer gave (the first from
# REFRESH_FILE, one per line).
cat >"$WORK/refresh.lua" <<LUA
local tokens = {}
for line in io.lines(os.getenv("REFRESH_FILE")) do tokens[#tokens + 1] = line end
function request()
  local t = table.remove(tokens) or "none"
  return wrk.format("POST", "/oauth2/token", {["content-type"] = "application/x-www-form-urlencoded"},
    "grant_type=refresh_token&client_id=tessera&refresh_token=" .. t)
end
function response(status, headers, body)
  local t = body:match('"refresh_token":"([^"]+)"')
  if t then tokens[#tokens + 1] = t end
end
$DONE
LUA

login() { # PORT MODE [CURL ARG...]: one login's answer
  local port=$1 mode=$2
  shift 2
  curl -sf "$@" -X POST "http://127.0.0.1:$port/auth/login" -H 'content-type: application/json' \
    -d "{\"username\":\"bench\",\"password\":\"$PW\",\"mode\":\"$mode\"}"
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
session_cookie() { login "$PORT" session -o /dev/null -c - | awk '$6 == "tessera_session" {print $6 "=" $7}'; }

# serve DIR [VAR=VALUE...]: tessera on PORT over DIR, pinned to the server core, once it answers.
serve() {
  local dir=$1
  shift
  env "$@" taskset -c "$SERVER_CPU" "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$dir" 2>/dev/null &
  SERVER_PID=$!
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
}
stop() {
  kill "$SERVER_PID" && wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

# measure NAME DIR FIRST: one round of the rate rows on DIR; the first round (FIRST=1) also times
# the start-up and follows the feed.
measure() {
  local name=$1 dir=$2 first=$3 ms=- rss=- anon=- feed=-
  [ "$first" = 1 ] && read -r ms rss anon <<<"$(startup "$dir")"
  serve "$dir"
  local base=http://127.0.0.1:$PORT cookie access secret
  cookie=$(session_cookie)
  access=$(login "$PORT" token | field access_token)
  : >"$WORK/refresh"
  for _ in $(seq 40); do login "$PORT" token | field refresh_token >>"$WORK/refresh"; done
  secret=$(cat "$dir/secret")
  local me bearer introspect refresh health
  me=$(rate "$base/auth/me" "Cookie: $cookie")
  bearer=$(rate "$base/auth/me" "Authorization: Bearer $access")
  introspect=$(BODY="token=$access" rate "$base/oauth2/introspect" \
    "Authorization: Basic $(printf 'rs:%s' "$secret" | base64 -w0)" "$WORK/post.lua")
  refresh=$(REFRESH_FILE=$WORK/refresh rate "$base/oauth2/token" "" "$WORK/refresh.lua")
  health=$(rate "$base/healthz")
  # The feed: a new follower on the load core, then REVOKED revocations timed to it.
  [ "$first" = 1 ] && feed=$(ISSUER=$base CLIENT_ID=rs CLIENT_SECRET=$secret \
    AUDIENCE=urn:bench:api taskset -c "$LOAD_CPU" "$REACH" reach "$REVOKED" | tr '\n' ' ')
  stop
  echo "$name $ms $rss $anon $me $bearer $introspect $refresh $health $feed" >>"$WORK/rows"
}

t0=$(date +%s)
load "$WORK/small" "$SMALL" "$SMALL" "$SMALL"
t1=$(date +%s)
load "$WORK/large" "$LARGE" "$LARGE" "$DENIED" "$CACHED"
t2=$(date +%s)
echo "loaded: small in $((t1 - t0)) s, large ($LARGE users, sessions and refresh families, $DENIED denylisted) in $((t2 - t1)) s"
for i in $(seq "$REPS"); do
  first=$([ "$i" = 1 ] && echo 1 || echo 0)
  measure small "$WORK/small" "$first"
  measure large "$WORK/large" "$first"
done

# Idle for IDLE s (the full catch-up with the store runs every minute): RSS and its anonymous
# part, to see whether an idle server stays where it started.
for set in small large; do
  drop_caches
  serve "$WORK/$set"
  sleep "$IDLE"
  echo "$set $(awk '/^(VmRSS|RssAnon)/ {printf "%s ", $2}' "/proc/$SERVER_PID/status")" >>"$WORK/idle"
  stop
done

# The caches' memory: a server on the large set with its session cache on (as by default) is
# asked /auth/me by CACHED sessions (just below the caches' bound, 100,000 each, where a cache
# starts over), all of one user, then (a new server) each of its own user; RSS idle before and
# after. The growth over CACHED is the memory per entry with the caches full (their tables grow
# by doubling, so a slope between two smaller fills says little), SQLite's page caches included
# (at most 2 MB for each of 8 connections).
cat >"$WORK/cookies.lua" <<LUA
local cookies = {}
for line in io.lines(os.getenv("COOKIES")) do cookies[#cookies + 1] = line end
local n, i = tonumber(os.getenv("ASK")), 0
function request()
  i = i % n + 1
  return wrk.format("GET", "/auth/me", {["Cookie"] = "tessera_session=" .. cookies[i]})
end
$DONE
LUA
rss_kib() { sleep 2; awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status"; }
# ask SET N: /auth/me by the first N cookies of SET, each at least once at the slowest rate seen
# (cache misses read SQLite); how many requests were made.
ask() {
  COOKIES=$WORK/large/$1 ASK=$2 taskset -c "$LOAD_CPU" wrk -t1 -c32 -d"$(($2 / 4000 + 3))s" \
    -s "$WORK/cookies.lua" "http://127.0.0.1:$PORT/auth/me" | awk '/requests in/ {print $1}'
}
for set in one distinct; do
  serve "$WORK/large" TESSERA_SESSION_CACHE_TTL=600s
  before=$(rss_kib)
  asked=$(ask "$set" "$CACHED")
  echo "$set $before $(rss_kib) $asked" >>"$WORK/caches"
  stop
done

# Sessions in PostgreSQL, and in Redis (users in PostgreSQL): SMALL, then LARGE.
# PG_OWN=1 (the default): a PostgreSQL of its own (the newest installed), pinned to the server
# core like the Redis below, with its buffer pool sized for the data (PG_BUFFERS, 1GB: 10^6
# sessions and users are ~650 MB with their indexes; the machine's 128 MB default reads most
# lookups at 10^6 from the kernel, one buffer of each B-tree level, which is PostgreSQL's
# sizing, not tessera's); PG_OWN=0 uses TEST_POSTGRES_URL as it is.
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "${PG_OWN:-1}" = 1 ]; then
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  PG_DIR=$(mktemp -d)
  [ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
  as_postgres "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres >/dev/null
  as_postgres taskset -c "$SERVER_CPU" "$PG_BIN/pg_ctl" start -D "$PG_DIR/data" -w -l "$PG_DIR/log" \
    -o "-p $((PORT + 2)) -k $PG_DIR -c listen_addresses=127.0.0.1 -c shared_buffers=${PG_BUFFERS:-1GB}" >/dev/null
  PG_URL=postgres://postgres@127.0.0.1:$((PORT + 2))/postgres
fi
psql -q "$PG_URL" -c "CREATE SCHEMA $SCHEMA"
SEP='?'; case $PG_URL in *\?*) SEP='&';; esac
export TESSERA_DATABASE_URL="$PG_URL${SEP}options[search_path]=$SCHEMA"
RPORT=$((PORT + 1))
taskset -c "$SERVER_CPU" redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no \
  >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
REDIS_ENV=(TESSERA_REDIS_URL="redis://127.0.0.1:$RPORT" TESSERA_REDIS_PREFIX=scale)
for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
"$BIN" user add bench --password-stdin --data-dir "$WORK/pg" <<<"$PW" >/dev/null

# grow N: PostgreSQL holds N loaded users and sessions (besides bench's), and Redis N sessions.
grow() {
  psql -q "$PG_URL" -v ON_ERROR_STOP=1 <<SQL
SET search_path = $SCHEMA;
INSERT INTO users (id, username, password_hash, disabled, created_at)
  SELECT 'usr_load' || i, 'load' || i, (SELECT password_hash FROM users WHERE username = 'bench'),
         FALSE, extract(epoch FROM now())::bigint
  FROM generate_series((SELECT count(*) FROM users WHERE id LIKE 'usr_load%'), $1 - 1) i;
INSERT INTO sessions (token_hash, handle, user_id, created_at, last_seen_at, expires_at, idle_timeout,
                      user_agent, ip, data)
  SELECT md5('a' || i) || md5('b' || i), 'ses_load' || i, 'usr_load' || i,
         extract(epoch FROM now())::bigint, extract(epoch FROM now())::bigint,
         extract(epoch FROM now())::bigint + 43200, 1800, NULL, NULL, '{}'
  FROM generate_series((SELECT count(*) FROM sessions WHERE handle LIKE 'ses_load%'), $1 - 1) i;
ANALYZE;
SQL
  # Redis: copies of a real session (bench's, made by a login) under made-up hashes.
  serve "$WORK/pg" "${REDIS_ENV[@]}"
  login "$PORT" session -o /dev/null
  stop
  local real from
  real=$(redis-cli -p "$RPORT" --scan --pattern 'scale:s:*' | awk 'NR == 1')
  from=$(redis-cli -p "$RPORT" get scale:loaded)
  for ((i = ${from:-0}; i < $1; i += 100000)); do
    redis-cli -p "$RPORT" eval "
      local fields = redis.call('HGETALL', KEYS[1])
      local fixed = redis.call('HGET', KEYS[1], 'fixed')
      if fixed then fixed = cjson.decode(fixed) end
      local ttl = redis.call('TTL', KEYS[1])
      local ends = redis.call('TIME')[1] + ttl
      for i = tonumber(ARGV[1]), tonumber(ARGV[2]) - 1 do
        local h = string.format('%064x', i)
        local k = 'scale:s:' .. h
        redis.call('HSET', k, unpack(fields))
        if fixed then
          fixed[1], fixed[2] = 'ses_load' .. i, 'usr_load' .. i
          redis.call('HSET', k, 'fixed', cjson.encode(fixed))
        else
          redis.call('HSET', k, 'handle', 'ses_load' .. i, 'user_id', 'usr_load' .. i)
        end
        redis.call('EXPIRE', k, ttl)
        redis.call('ZADD', 'scale:sx', ends, h)
      end
      return redis.call('SET', 'scale:loaded', ARGV[2])" 1 "$real" "$i" "$((i + 100000 < $1 ? i + 100000 : $1))" >/dev/null
  done
}

# shared_round SET: one round of /auth/me by cookie on PostgreSQL alone and on Redis, and /healthz.
shared_round() {
  local set=$1 kind me health
  for kind in pg redis; do
    if [ "$kind" = redis ]; then serve "$WORK/pg" "${REDIS_ENV[@]}"; else serve "$WORK/pg"; fi
    me=$(rate "http://127.0.0.1:$PORT/auth/me" "Cookie: $(session_cookie)")
    health=$(rate "http://127.0.0.1:$PORT/healthz")
    stop
    echo "$set $kind $me $health" >>"$WORK/shared"
  done
}

grow "$SMALL"
for _ in $(seq "$REPS"); do shared_round small; done
t3=$(date +%s)
grow "$LARGE"
echo "loaded $LARGE sessions and users into PostgreSQL and Redis in $(($(date +%s) - t3)) s"
for _ in $(seq "$REPS"); do shared_round large; done

python3 - "$WORK/rows" "$SMALL" "$LARGE" "$DENIED" "$WORK/shared" "$WORK/caches" "$CACHED" "$WORK/idle" "$IDLE" "$WORK/warm_rss" "$WORK/starts" <<'PY'
import re, statistics, sys
rows, rates = {}, {}
for l in open(sys.argv[1]):
    f = l.split()
    rates.setdefault(f[0], []).append([float(x) for x in f[4:9]])
    feed = " ".join(f[9:])
    m = re.search(r"caught up with (\d+) revocations in (\d+) ms, resident memory \+([\d.]+) MB", feed)
    if m:
        p99 = re.search(r"p99 ([\d.]+) ms", feed)
        rows[f[0]] = [float(x) for x in f[1:4]] + [None] * 5 + [
            int(m.group(1)), float(m.group(2)), float(m.group(3)), float(p99.group(1))]
for name, runs in rates.items():
    rows[name][3:8] = [statistics.median(col) for col in zip(*runs)]
small_n, large_n, denied = map(int, sys.argv[2:5])
names = ["/auth/me, session in SQLite, cache off", "/auth/me, Bearer JWT (the denylist check)",
         "introspection of an access JWT", "refresh (one rotation per request)", "/healthz"]
S, L = rows["small"], rows["large"]
print(f"| row (medians of {len(rates['small'])}) | {small_n:,} (/s) | {large_n:,} (/s) "
      "| large / small (target >= 0.90) | the same, each against its round's /healthz |")
print("|---|---:|---:|---:|---:|")
for i, name in enumerate(names):
    print(f"| {name} | {S[3 + i]:,.0f} | {L[3 + i]:,.0f} | {L[3 + i] / S[3 + i]:.2f} "
          f"| {(L[3 + i] / L[7]) / (S[3 + i] / S[7]):.2f} |")
print()
idle = {l.split()[0]: [int(x) / 1024 for x in l.split()[1:3]] for l in open(sys.argv[8])}
print("| data set | start to /healthz (ms; < 100) | idle RSS (MB; < 30) | of it anonymous (MB) "
      f"| after {sys.argv[9]} s idle: RSS, anonymous (MB) "
      "| feed catch-up (revocations, time, memory; < 2 s, < 20 MB) | reach p99 (ms; < 1000) |")
print("|---|---:|---:|---:|---:|---:|---:|")
for name, n, d in [("small", small_n, small_n), ("large", large_n, denied)]:
    r = rows[name]
    print(f"| {n:,} users, sessions, refresh families; {d:,} denylisted | {r[0]:.0f} | {r[1] / 1024:.1f} "
          f"| {r[2] / 1024:.1f} | {idle[name][0]:.1f}, {idle[name][1]:.1f} "
          f"| {r[8]:,}, {r[9]:.0f} ms, +{r[10]:.1f} MB | {r[11]:.1f} |")
print()
shared = {}
for l in open(sys.argv[5]):
    st, kind, me, health = l.split()
    shared.setdefault((st, kind), []).append((float(me), float(health)))
print()
print(f"| /auth/me by cookie, session cache off (medians of {len(shared[('small', 'pg')])}) | {small_n:,} (/s) "
      f"| {large_n:,} (/s) | large / small (target >= 0.90) | the same, each against its /healthz |")
print("|---|---:|---:|---:|---:|")
for kind, label in [("pg", "sessions and users in PostgreSQL"), ("redis", "sessions in Redis, users in PostgreSQL")]:
    sm = [statistics.median(c) for c in zip(*shared[("small", kind)])]
    lg = [statistics.median(c) for c in zip(*shared[("large", kind)])]
    print(f"| {label} | {sm[0]:,.0f} | {lg[0]:,.0f} | {lg[0] / sm[0]:.2f} | {(lg[0] / lg[1]) / (sm[0] / sm[1]):.2f} |")
print()
for l in open(sys.argv[10]):
    d, r, a = l.split()
    print(f"RSS with the binary in the page cache ({d.rsplit('/', 1)[-1]} set, median of 5 starts): "
          f"{int(float(r)) / 1024:.1f} MB, {int(float(a)) / 1024:.1f} anonymous")
starts = {}
for l in open(sys.argv[11]):
    d, *v = l.split()
    starts.setdefault(d, []).append([float(x) for x in v])
for d, v in starts.items():
    print(f"starts ({d}) to /healthz (ms: time / CPU used (10 ms ticks) / waited runnable / stolen by the host): "
          + ", ".join(f"{t:.0f}/{c:.0f}/{w:.0f}/{st:.0f}" for t, c, w, st in v))
added = max(denied - small_n, 1)
print(f"memory per denylist entry (RSS slope, an upper bound): {(L[1] - S[1]) * 1024 / added:.0f} bytes"
      f" ({(L[2] - S[2]) * 1024 / added:.0f} anonymous)")
cached = int(sys.argv[7])
grown = {}
for l in open(sys.argv[6]):
    st, before, full, asked = l.split()
    grown[st] = (int(full) - int(before)) * 1024
    if int(asked) < cached:
        print(f"(the {st} pass asked only {asked} of {cached} sessions: the caches were not full)")
per_session, per_user = grown["one"] / cached, (grown["distinct"] - grown["one"]) / cached
print(f"the caches full ({cached:,} sessions and as many users): +{grown['distinct'] / 2**20:.0f} MB of RSS;"
      f" per cached session {per_session:.0f} bytes (sessions of one user: +{grown['one'] / 2**20:.0f} MB),"
      f" per cached user {per_user:.0f} bytes")
PY
