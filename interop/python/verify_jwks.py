"""Tokens tessera signed, verified by two Python libraries nobody here wrote, from its JWKS alone:
PyJWT (PyJWKClient) and jwcrypto (JWKSet, JWT).

Usage: verify_jwks.py JWKS_URL ALG TOKEN...
Prints one line per check; exits non-zero at the first failure.
"""

import json
import sys
import urllib.request

import jwt
from jwcrypto import jwk as jwc_jwk
from jwcrypto import jwt as jwc_jwt


def check(what, ok, detail=""):
    if not ok:
        print(f"FAIL {what} {detail}", flush=True)
        sys.exit(1)
    print(f"ok   {what}", flush=True)


def main():
    jwks_url, alg, tokens = sys.argv[1], sys.argv[2], sys.argv[3:]
    with urllib.request.urlopen(jwks_url, timeout=10) as r:
        jwks_text = r.read().decode()
    keyset = jwc_jwk.JWKSet.from_json(jwks_text)
    client = jwt.PyJWKClient(jwks_url)
    for token in tokens:
        header = jwt.get_unverified_header(token)
        check(f"{alg}: the header names {alg}", header.get("alg") == alg, header)
        key = client.get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key.key, algorithms=[alg], options={"verify_aud": False})
        check(f"{alg}: PyJWT verifies it from the JWKS", "sub" in claims, claims)
        t = jwc_jwt.JWT(jwt=token, key=keyset, algs=[alg], check_claims=False)
        claims = json.loads(t.claims)
        check(f"{alg}: jwcrypto verifies it from the JWKS", "sub" in claims, claims)
        # A signature that is not the key's is refused (the check above is not vacuous).
        head, payload, sig = token.split(".")
        forged = f"{head}.{payload}.{'A' if sig[0] != 'A' else 'B'}{sig[1:]}"
        try:
            jwt.decode(forged, key.key, algorithms=[alg], options={"verify_aud": False})
            check(f"{alg}: PyJWT refuses a changed signature", False)
        except jwt.InvalidSignatureError:
            check(f"{alg}: PyJWT refuses a changed signature", True)
    print("all checks passed", flush=True)


if __name__ == "__main__":
    main()
