// tessera with Node.js clients nobody here wrote: openid-client (discovery, client credentials)
// and jose (createRemoteJWKSet + jwtVerify) verifying the tokens from the published JWKS.
//
// Usage: node check.mjs ISSUER SERVICE_ID SERVICE_SECRET
// Prints one line per check; exits non-zero at the first failure.

import * as oidc from 'openid-client';
import { createRemoteJWKSet, jwtVerify, errors } from 'jose';

const [issuer, clientId, clientSecret] = process.argv.slice(2);

function check(what, ok, detail = '') {
  if (!ok) {
    console.log(`FAIL ${what} ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`);
    process.exit(1);
  }
  console.log(`ok   ${what}`);
}

const config = await oidc.discovery(
  new URL(issuer),
  clientId,
  undefined,
  oidc.ClientSecretBasic(clientSecret),
  // Plain HTTP on loopback in the test; production issuers are https.
  { execute: [oidc.allowInsecureRequests] },
);
const meta = config.serverMetadata();
check('openid-client discovery', meta.issuer === issuer && !!meta.token_endpoint, meta);
check('discovery lists client_credentials', meta.grant_types_supported.includes('client_credentials'));

const tokens = await oidc.clientCredentialsGrant(config, { scope: 'api:read' });
check('openid-client client credentials', tokens.token_type.toLowerCase() === 'bearer' && !!tokens.access_token, tokens);

const jwks = createRemoteJWKSet(new URL(meta.jwks_uri));
const { payload, protectedHeader } = await jwtVerify(tokens.access_token, jwks, {
  issuer,
  audience: 'https://api.example',
  typ: 'at+jwt',
});
check('jose verifies it', payload.sub === clientId && payload.scope === 'api:read', payload);
check('the key is bound to its alg', ['EdDSA', 'ES256', 'RS256'].includes(protectedHeader.alg), protectedHeader);

// A tampered token is refused by jose.
const [h, p, s] = tokens.access_token.split('.');
const forged = Buffer.from(JSON.stringify({ ...payload, scope: 'admin' })).toString('base64url');
try {
  await jwtVerify(`${h}.${forged}.${s}`, jwks, { issuer, audience: 'https://api.example' });
  check('a tampered token is refused', false);
} catch (e) {
  check('a tampered token is refused', e instanceof errors.JWSSignatureVerificationFailed, String(e));
}

// Introspection through openid-client.
const intro = await oidc.tokenIntrospection(config, tokens.access_token);
check('openid-client introspection', intro.active === true && intro.client_id === clientId, intro);

// Revocation through openid-client, then introspection says inactive.
await oidc.tokenRevocation(config, tokens.access_token);
const after = await oidc.tokenIntrospection(config, tokens.access_token);
check('revoked token is inactive', after.active === false, after);
console.log('node interop: all checks passed');
