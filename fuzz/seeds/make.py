#!/usr/bin/env python3
"""Writes the seed corpora (fuzz/seeds/<target>/) from the RFC vectors in ../shared/vectors and a
few hand-written inputs. Run from the repository root: python3 fuzz/seeds/make.py. The seeds are
committed; the corpora the runs grow (fuzz/corpus/) are not."""
import glob, hashlib, json, os, sys

ROOT = os.path.dirname(os.path.abspath(__file__))
VECTORS = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "..", "..", "shared", "vectors")

def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
        f.write(data)

def walk(v, found):
    if isinstance(v, dict):
        if "kty" in v:
            found.append(v)
        for x in v.values():
            walk(x, found)
    elif isinstance(v, list):
        for x in v:
            walk(x, found)

for path in sorted(glob.glob(os.path.join(VECTORS, "*", "*.json"))):
    doc = json.load(open(path))
    for key in ("jws_compact", "compact", "jws"):
        if isinstance(doc.get(key), str):
            put("jws_verify", b"\x00" + doc[key].encode())
    for key in ("payload_utf8", "payload"):
        if isinstance(doc.get(key), str) and doc[key].lstrip().startswith("{"):
            put("claims_paths", doc[key])
            put("jwt_vs_jsonwebtoken", b"\x00\xff" + doc[key].encode())
    keys = []
    walk(doc, keys)
    for k in keys:
        put("jwk", json.dumps(k))
    if keys:
        put("jwk", json.dumps({"keys": keys}))

put("jws_verify", b"\x80\x00\x00\x10\x01alice")
put("claims_paths", '{"iss":"https://auth.example","sub":"usr_a","aud":["api"],"exp":1800000000,"iat":1799999100,"jti":"j1","scope":"a b","client_id":"c","sid":"s"}')
put("jwt_vs_jsonwebtoken", b'\x01,"typ":"at+jwt"\xff{"sub":"usr_a","exp":9999999999,"nbf":1}')
# Crashes the runs found, kept so that every run replays them.
put("jwt_vs_jsonwebtoken", b'\x01,"jwk":"atnull+jwt"\xff{"sub":"usr_a","exp":2000000000,"nbf":0}')
put("opaque_token", "tss_" + "A" * 43 + "0000")
put("http_input", "Basic c3ZjOnRzY19zZWNyZXQ=")
put("http_input", "grant_type=client_credentials&scope=api%3Aread+api%3Awrite")
put("http_input", "tessera_session=tss_x; theme=dark")
put("sse_feed", b'\x10id: 1\nevent: revoked\ndata: {"jti":"j1","exp":1800000000}\n\nevent: ping\ndata: fresh\n\n')
put("sse_feed", b"\x03: keep-alive\n\nevent: ping\ndata: stale\n\n")
put("config", 'LISTEN=127.0.0.1:9000\nallow_registration = true\n[session]\nidle_timeout = "90s"\n[tokens]\nalgorithm = "ES256"\n')
put("pem_der", b"\x03-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n")
