#!/usr/bin/env bash
# tessera's one test command: provisions what the tests need, then runs them all.
#
#   scripts/test.sh [cargo test arguments…]     e.g. scripts/test.sh -p tessera-jose
#
# What it provisions (each step is skipped when already done):
# - the interop clients at their pinned versions: interop/.venv (Python: authlib, PyJWT, schemathesis, …,
#   interop/python/requirements.txt) and interop/node/node_modules (Node.js: jose,
#   openid-client, axe-core, interop/node/package-lock.json);
# - as root on Debian, the programs the cluster, fault, browser and HSM suites run: haproxy,
#   redis-server, chromium and chromium-driver, softhsm2 (SoftHSM2's PKCS#11 module) and opensc
#   (pkcs11-tool). Not root: one line says what is missing and how
#   to get it, and the suites that need it fail (nothing is skipped).
# PostgreSQL and Redis are the machine's: TEST_POSTGRES_URL and TEST_REDIS_URL, defaults below.
set -euo pipefail
cd "$(dirname "$0")/.."

export TEST_POSTGRES_URL=${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
export TEST_REDIS_URL=${TEST_REDIS_URL:-redis://127.0.0.1:6379}

missing=()
for program in haproxy:haproxy redis-server:redis-server chromium:chromium chromedriver:chromium-driver \
  softhsm2-util:softhsm2 pkcs11-tool:opensc; do
  command -v "${program%%:*}" >/dev/null || missing+=("${program##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "== missing: ${missing[*]} (sudo apt-get install -y ${missing[*]}); the suites that run them will fail"
  fi
fi

echo "== interop clients (pinned)"
if [ ! -x interop/.venv/bin/python ]; then
  python3 -m venv interop/.venv
fi
stamp=interop/.venv/.requirements
if ! cmp -s interop/python/requirements.txt "$stamp"; then
  interop/.venv/bin/pip install -q --disable-pip-version-check -r interop/python/requirements.txt
  cp interop/python/requirements.txt "$stamp"
fi
# npm writes node_modules/.package-lock.json on every install: newer than the lock, it is current.
if ! [ interop/node/node_modules/.package-lock.json -nt interop/node/package-lock.json ]; then
  (cd interop/node && npm ci --silent --no-audit --no-fund)
fi

# Every crate, unless the arguments name packages.
scope=--workspace
for arg in "$@"; do
  case "$arg" in -p|--package|-p*|--package=*) scope= ;; esac
done
echo "== cargo test $scope --locked $*"
exec cargo test $scope --locked "$@"
