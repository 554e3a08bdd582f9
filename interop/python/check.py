"""tessera with Python clients nobody here wrote: authlib (client credentials; authorization code
with PKCE, the login and consent pages driven by plain HTTP requests; refresh, introspection and
revocation) and PyJWT's PyJWKClient verifying the access tokens from the published JWKS.

Usage: check.py ISSUER SERVICE_ID SERVICE_SECRET WEB_ID WEB_SECRET REDIRECT_URI USERNAME PASSWORD
Prints one line per check; exits non-zero at the first failure.
"""

import html
import re
import sys
from urllib.parse import parse_qs, urlparse

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session


def check(what, ok, detail=""):
    if not ok:
        print(f"FAIL {what} {detail}", flush=True)
        sys.exit(1)
    print(f"ok   {what}", flush=True)


def hidden(page, name):
    m = re.search(rf'name="{name}" value="([^"]*)"', page)
    check(f"page has hidden field {name}", m is not None, page[:500])
    return html.unescape(m.group(1))


def main():
    issuer, svc_id, svc_secret, web_id, web_secret, redirect_uri, username, password = sys.argv[1:9]
    meta = requests.get(f"{issuer}/.well-known/oauth-authorization-server", timeout=10).json()
    check("discovery names the issuer", meta["issuer"] == issuer, meta)
    jwks = jwt.PyJWKClient(meta["jwks_uri"])

    def verify(token, audience):
        key = jwks.get_signing_key_from_jwt(token)
        header = jwt.get_unverified_header(token)
        check("access token typ is at+jwt", header.get("typ") == "at+jwt", header)
        return jwt.decode(
            token,
            key.key,
            algorithms=[header["alg"]],
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "iat", "sub", "jti"]},
        )

    # Client credentials, client_secret_basic.
    svc = OAuth2Session(svc_id, svc_secret, scope="api:read", token_endpoint_auth_method="client_secret_basic")
    token = svc.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
    check("client credentials token", token["token_type"].lower() == "bearer" and "access_token" in token, token)
    claims = verify(token["access_token"], "https://api.example")
    check("PyJWKClient verifies it", claims["sub"] == svc_id and claims["scope"] == "api:read", claims)

    # client_secret_post too.
    post = OAuth2Session(svc_id, svc_secret, token_endpoint_auth_method="client_secret_post")
    token2 = post.fetch_token(meta["token_endpoint"], grant_type="client_credentials", scope="api:read api:write")
    check("client_secret_post", verify(token2["access_token"], "https://api.example")["scope"] == "api:read api:write")

    # A wrong secret is refused as RFC 6749 says.
    bad = requests.post(
        meta["token_endpoint"], data={"grant_type": "client_credentials"}, auth=(svc_id, "tsc_wrong"), timeout=10
    )
    check("wrong secret: 401 invalid_client", bad.status_code == 401 and bad.json()["error"] == "invalid_client")

    # Authorization code with PKCE (S256), through the pages with plain HTTP.
    web = OAuth2Session(
        web_id, web_secret, scope="profile", redirect_uri=redirect_uri, code_challenge_method="S256"
    )
    verifier = "v" * 20 + "-._~" + "0123456789abcdefghijklmnop"
    url, state = web.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier)
    browser = requests.Session()
    page = browser.get(url, timeout=10)
    check("login page", page.status_code == 200 and "text/html" in page.headers["content-type"])
    check("login page forbids framing", "frame-ancestors 'none'" in page.headers["content-security-policy"])
    login = browser.post(
        f"{issuer}/oauth2/login",
        data={
            "csrf": hidden(page.text, "csrf"),
            "continue": hidden(page.text, "continue"),
            "username": username,
            "password": password,
        },
        allow_redirects=False,
        timeout=10,
    )
    check("login redirects back", login.status_code == 303, login.status_code)
    consent = browser.get(f"{issuer}{login.headers['location']}", timeout=10)
    check("consent page names the client", consent.status_code == 200 and web_id in consent.text)
    form = {
        n: hidden(consent.text, n)
        for n in ["csrf", "response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge",
                  "code_challenge_method"]
    }
    form["decision"] = "allow"
    back = browser.post(f"{issuer}/oauth2/authorize", data=form, allow_redirects=False, timeout=10)
    location = back.headers.get("location", "")
    check("consent redirects to the client", back.status_code == 303 and location.startswith(redirect_uri), location)
    query = parse_qs(urlparse(location).query)
    check("state and iss come back", query["state"] == [state] and query["iss"] == [issuer], query)
    token = web.fetch_token(meta["token_endpoint"], authorization_response=location, code_verifier=verifier)
    check("code exchanged with the verifier", "refresh_token" in token and token["scope"] == "profile", token)
    claims = verify(token["access_token"], "https://app.example")
    check("delegated token is the person's", claims["sub"].startswith("usr_") and claims["client_id"] == web_id)

    # Refresh (rotation), introspection, revocation — all through authlib.
    refreshed = web.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])
    check("refresh rotates", refreshed["refresh_token"] != token["refresh_token"])
    intro = svc.introspect_token(meta["introspection_endpoint"], token=refreshed["access_token"]).json()
    check("introspection: active", intro["active"] is True and intro["client_id"] == web_id, intro)
    old = svc.introspect_token(meta["introspection_endpoint"], token=token["refresh_token"]).json()
    check("introspection: a used refresh token is inactive", old == {"active": False}, old)
    rev = web.revoke_token(meta["revocation_endpoint"], token=refreshed["access_token"], token_type_hint="access_token")
    check("revocation: 200", rev.status_code == 200, rev.status_code)
    intro = svc.introspect_token(meta["introspection_endpoint"], token=refreshed["access_token"]).json()
    check("introspection after revocation: inactive", intro == {"active": False}, intro)

    # A replayed code is refused.
    again = requests.post(
        meta["token_endpoint"],
        data={"grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": redirect_uri,
              "code_verifier": verifier},
        auth=(web_id, web_secret),
        timeout=10,
    )
    check("a reused code: invalid_grant", again.status_code == 400 and again.json()["error"] == "invalid_grant")
    print("python interop: all checks passed", flush=True)


if __name__ == "__main__":
    main()
