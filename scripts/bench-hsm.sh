#!/usr/bin/env bash
# Issuance with signing keys in an HSM (SoftHSM2 through PKCS#11) beside keys in the store, per
# algorithm, in one invocation: client-credentials tokens per second (`cc`) and token-mode
# logins per second (`login`, an Argon2id hash each: the hash, not the signature, sets that
# rate). The server is pinned to one core (SERVER_CPU, default 0), wrk to the other (LOAD_CPU, 1),
# 32 connections; each row is the median of RUNS runs of DURATION. Only 2xx answers count.
#
#   scripts/bench-hsm.sh                    # EdDSA ES256 RS256 PS256, 3 x 10 s per row
#   RUNS=1 DURATION=3s ALGS=EdDSA scripts/bench-hsm.sh     # a smoke test
#
# Target (issue: keys in an HSM): EdDSA client credentials with the key in SoftHSM2 at least
# 0.5 x the rate with the key in the store. Last, the floor: the token's own signature rate on
# the server's core, one thread, no HTTP (crates/tessera-pkcs11/benches/sign_rate.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
ALGS=${ALGS:-EdDSA ES256 RS256 PS256}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
MODULE=${MODULE:-/usr/lib/softhsm/libsofthsm2.so}
PORT=${PORT:-8095}
PW="correct horse battery"

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v softhsm2-util >/dev/null || need+=(softhsm2)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
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

# Successful requests per second, from wrk's summary.
cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = os.getenv("BODY")
wrk.headers["Content-Type"] = os.getenv("CTYPE")
local auth = os.getenv("AUTH")
if auth ~= nil and auth ~= "" then wrk.headers["Authorization"] = auth end
function done(summary, latency, requests)
  local ok = summary.requests - summary.errors.status
  io.write(string.format("RATE %.1f\n", ok / (summary.duration / 1e6)))
end
LUA

# Median of RUNS runs of wrk against PATH.
measure() {
  local path=$1 rates=()
  for _ in $(seq "$RUNS"); do
    rates+=("$(taskset -c "$LOAD_CPU" wrk -t1 -c32 -d"$DURATION" -s "$WORK/post.lua" \
      "http://127.0.0.1:$PORT$path" | awk '/^RATE/ {print $2}')")
  done
  printf '%s\n' "${rates[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

# One server: ALG with keys in BACKEND (store or pkcs11); prints "cc login".
row() {
  local alg=$1 backend=$2 dir=$WORK/$1-$2
  mkdir -p "$dir"
  local env=(TESSERA_TOKENS_ALGORITHM="$alg" TESSERA_THROTTLE_ACCOUNT_FREE_ATTEMPTS=1000000
    TESSERA_THROTTLE_IP_FREE_ATTEMPTS=1000000 RUST_LOG=warn)
  if [ "$backend" = pkcs11 ]; then
    mkdir -p "$dir/tokens"
    printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
      "$dir/tokens" >"$dir/softhsm2.conf"
    SOFTHSM2_CONF=$dir/softhsm2.conf softhsm2-util --init-token --free --label bench \
      --so-pin 0000 --pin 1234 >/dev/null
    env+=(SOFTHSM2_CONF="$dir/softhsm2.conf" TESSERA_KEYS_BACKEND=pkcs11
      TESSERA_KEYS_PKCS11_MODULE="$MODULE" TESSERA_KEYS_PKCS11_TOKEN_LABEL=bench
      TESSERA_KEYS_PKCS11_PIN=1234)
  fi
  env "${env[@]}" "$BIN" user add alice --password-stdin --data-dir "$dir/data" \
    <<<"$PW" >/dev/null
  local secret
  secret=$(env "${env[@]}" "$BIN" client add bench --grant client_credentials \
    --scope api:read --json --data-dir "$dir/data" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')
  env "${env[@]}" taskset -c "$SERVER_CPU" "$BIN" serve --listen "127.0.0.1:$PORT" \
    --data-dir "$dir/data" 2>"$dir/serve.log" &
  SERVER_PID=$!
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break
    sleep 0.1
  done
  local cc login
  cc=$(AUTH="Basic $(printf 'bench:%s' "$secret" | base64 -w0)" \
    CTYPE=application/x-www-form-urlencoded BODY='grant_type=client_credentials' \
    measure /oauth2/token)
  login=$(AUTH='' CTYPE=application/json \
    BODY="{\"username\":\"alice\",\"password\":\"$PW\",\"mode\":\"token\"}" measure /auth/login)
  kill "$SERVER_PID" && wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
  echo "$cc $login"
}

echo "| alg | row | keys in the store (/s) | keys in SoftHSM2 (/s) | HSM / store |"
echo "|---|---|---:|---:|---:|"
for alg in $ALGS; do
  read -r s_cc s_login <<<"$(row "$alg" store)"
  read -r h_cc h_login <<<"$(row "$alg" pkcs11)"
  for r in "cc $s_cc $h_cc" "login $s_login $h_login"; do
    set -- $r
    python3 -c "import sys; n, s, h = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]); \
print(f'| $alg | {n} | {s:,.0f} | {h:,.0f} | {h / s:.2f} |')" "$1" "$2" "$3"
  done
done
echo
echo "The floor: signatures per second on CPU $SERVER_CPU, one thread, no HTTP:"
mkdir -p "$WORK/floor/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
  "$WORK/floor/tokens" >"$WORK/floor/softhsm2.conf"
SOFTHSM2_CONF=$WORK/floor/softhsm2.conf softhsm2-util --init-token --free --label floor \
  --so-pin 0000 --pin 1234 >/dev/null
cargo bench -q -p tessera-pkcs11 --bench sign_rate --no-run 2>/dev/null
SOFTHSM2_CONF=$WORK/floor/softhsm2.conf TESSERA_BENCH_PKCS11_MODULE=$MODULE \
  TESSERA_BENCH_PKCS11_LABEL=floor TESSERA_BENCH_PKCS11_PIN=1234 ALGS="$ALGS" \
  taskset -c "$SERVER_CPU" cargo bench -q -p tessera-pkcs11 --bench sign_rate 2>/dev/null | grep '^|'
echo
echo "target: EdDSA cc with keys in SoftHSM2 >= 0.5 x in the store ($RUNS x $DURATION per row, server on CPU $SERVER_CPU, wrk -t1 -c32 on CPU $LOAD_CPU)"
