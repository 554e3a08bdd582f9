#!/usr/bin/env bash
# OAuth rows beside node oidc-provider, in one run of the shared harness (../shared/bench-peers):
# client_credentials tokens issued per second (`token-cc`), introspections per second
# (`introspect`), JWKS documents per second (`jwks`) and tessera's own /healthz (`noop`), each
# server pinned to one core (SERVER_CPU, default 0), wrk on the other (LOAD_CPU, 1).
#
#   scripts/bench-oauth.sh              # 3 runs x 10 s per row, medians
#   QUICK=1 scripts/bench-oauth.sh      # 1 run x 2 s, a smoke test
#   PEERS_DIR=/path scripts/bench-oauth.sh   # an existing writable copy of the harness
#
# Like for like: both sides sign every client-credentials token with EdDSA (Ed25519) and keep
# clients in their store (tessera: SQLite, read on each request; oidc-provider: its in-memory
# adapter). The introspected token differs by design of each server: oidc-provider refuses to
# introspect its JWTs, so its row introspects an opaque token found in memory; tessera's
# introspects an EdDSA access JWT (signature from its verified-token cache, denylist, the
# token's client looked up in SQLite). Ratios against the peer and /healthz are printed last.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

for t in wrk node npm; do
  command -v "$t" >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; break; }
done
cargo build --release -q -p tessera
BIN=$ROOT/target/release/tessera

SHARED=$ROOT/../shared/bench-peers
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PEERS_DIR=${PEERS_DIR:-$WORK/peers}
if [ ! -d "$PEERS_DIR" ]; then
  cp -r "$SHARED" "$PEERS_DIR"
fi
(cd "$PEERS_DIR" && [ -d node_modules ] || npm ci --silent --no-audit --no-fund)

DATA=$WORK/tessera
PORT=${PORT:-8091}
export TESSERA_MASTER_KEY
TESSERA_MASTER_KEY=$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
# The benchmark client: every token names scope api:read, as the peer's does.
SECRET=$("$BIN" client add bench --grant client_credentials --scope "api:read" \
  --audience urn:bench:api --json --data-dir "$DATA" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')

cd "$PEERS_DIR"
OUT=$WORK/table.md
PEERS=oidc ONLY='^(token-cc|introspect|jwks|noop)$' \
TARGET_NAME=tessera TARGET_URL=http://127.0.0.1:$PORT \
TARGET_CMD="$BIN serve --listen 127.0.0.1:$PORT --data-dir $DATA" \
TARGET_READY_PATH=/healthz TARGET_NOOP_PATH=/healthz \
TARGET_CLIENT_ID=bench TARGET_CLIENT_SECRET=$SECRET \
TARGET_TOKEN_BODY='grant_type=client_credentials&scope=api:read' \
TARGET_JWKS_PATH=/.well-known/jwks.json TARGET_INTROSPECT_PATH=/oauth2/introspect \
TARGET_LOGIN_TOKEN_LABEL=none \
  ./bench.sh | tee "$OUT"

python3 - "$OUT" <<'PY'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) >= 3 and re.fullmatch(r"[\d.]+", cells[2].replace(",", "")):
        rows[(cells[0], cells[1])] = float(cells[2].replace(",", ""))
def get(s, p):
    return rows.get((s, p))
print()
for s in ["token-cc", "introspect"]:
    t, o = get(s, "tessera"), next((v for (sc, p), v in rows.items() if sc == s and p != "tessera"), None)
    if t and o:
        print(f"{s}: tessera {t:.0f}/s vs oidc-provider {o:.0f}/s = {t / o:.1f}x (target >= 8x)")
j, h = get("jwks", "tessera"), get("noop", "tessera")
if j and h:
    print(f"jwks: {j:.0f}/s vs tessera /healthz {h:.0f}/s = {j / h:.2f} (target >= 0.9)")
PY
