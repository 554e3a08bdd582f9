#!/usr/bin/env bash
# Sessions in Redis beside express-session + connect-redis, in the shared harness
# (../shared/bench-peers): its `me-cookie` row (GET /me with a session cookie), the peer and
# tessera measured in the same invocation, each server pinned to one core (SERVER_CPU, default 0)
# with the harness's Redis, wrk on the other (LOAD_CPU, 1).
#
#   scripts/bench-session.sh              # 3 runs x 10 s per row, medians
#   QUICK=1 scripts/bench-session.sh      # 1 run x 2 s, a smoke test
#   PEERS_DIR=/path scripts/bench-session.sh   # an existing writable copy of the harness
#
# tessera runs as the issue deploys it: sessions in Redis (the harness's), users in PostgreSQL
# (TEST_POSTGRES_URL, a schema of its own, dropped at the end). Two invocations, each with its
# own peer row: tessera as configured by default (hot sessions cached in process, invalidated
# through Redis pub/sub), then with `session.cache_ttl = 0s`, one Redis read (HMGET) per request.
# The peer does one Redis GET and one EXPIRE per request (express-session's rolling `touch`);
# tessera slides a session's idle timeout without a write per request. Ratios are printed last.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

for t in wrk node npm redis-server psql; do
  command -v "$t" >/dev/null || {
    apt-get update -qq && apt-get install -y -qq wrk redis-server postgresql-client
    break
  }
done
cargo build --release -q -p tessera
BIN=$ROOT/target/release/tessera

SHARED=$ROOT/../shared/bench-peers
WORK=$(mktemp -d)
PG_URL=${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
SCHEMA=tessera_session_bench_$$
trap 'psql -q "$PG_URL" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
PEERS_DIR=${PEERS_DIR:-$WORK/peers}
if [ ! -d "$PEERS_DIR" ]; then
  cp -r "$SHARED" "$PEERS_DIR"
fi
(cd "$PEERS_DIR" && [ -d node_modules ] || npm ci --silent --no-audit --no-fund)

psql -q "$PG_URL" -c "CREATE SCHEMA $SCHEMA"
SEP='?'; case $PG_URL in *\?*) SEP='&';; esac
DB_URL="$PG_URL${SEP}options[search_path]=$SCHEMA"
REDIS_PORT=${REDIS_PORT:-6390}
MASTER_KEY=$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
PW=$(head -c 18 /dev/urandom | base64)
echo "$PW" | TESSERA_DATABASE_URL=$DB_URL TESSERA_MASTER_KEY=$MASTER_KEY \
  "$BIN" user add bench --password-stdin --data-dir "$WORK/cli" >/dev/null

PORT=${PORT:-8092}
# invocation LABEL [ENV...]: one run of the harness, the peer and tessera (with ENV).
invocation() {
  local label=$1; shift
  (cd "$PEERS_DIR" &&
    PEERS=session ONLY='^me-cookie$' REDIS_PORT=$REDIS_PORT \
    TARGET_NAME="tessera ($label)" TARGET_URL=http://127.0.0.1:$PORT TARGET_REDIS=1 \
    TARGET_CMD="env TESSERA_DATABASE_URL='$DB_URL' TESSERA_REDIS_URL=redis://127.0.0.1:$REDIS_PORT \
TESSERA_REDIS_PREFIX=$SCHEMA TESSERA_MASTER_KEY=$MASTER_KEY $* \
$BIN serve --listen 127.0.0.1:$PORT --data-dir $WORK/serve" \
    TARGET_READY_PATH=/healthz TARGET_LOGIN_USER=bench TARGET_LOGIN_PASSWORD="$PW" \
    TARGET_LOGIN_TOKEN_LABEL=none \
      ./bench.sh) | tee -a "$WORK/table.md"
}
invocation "cached"
invocation "cache off" TESSERA_SESSION_CACHE_TTL=0s

python3 - "$WORK/table.md" <<'PY'
import re, sys
peer, rows = None, []
for line in open(sys.argv[1]):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) < 3 or cells[0] != "me-cookie" or not re.fullmatch(r"[\d.,]+", cells[2]):
        continue
    v = float(cells[2].replace(",", ""))
    if cells[1].startswith("tessera"):
        rows.append((cells[1], v, peer))
    else:
        peer = v
print()
for name, v, p in rows:
    print(f"me-cookie: {name} {v:.0f}/s vs express-session+connect-redis {p:.0f}/s = {v / p:.1f}x (target >= 8x)")
PY
