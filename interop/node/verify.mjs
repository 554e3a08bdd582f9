// Tokens tessera signed, verified by jose (createRemoteJWKSet + jwtVerify) from its JWKS alone.
//
// Usage: node verify.mjs JWKS_URL ALG TOKEN...
// Prints one line per check; exits non-zero at the first failure.

import { createRemoteJWKSet, jwtVerify, decodeProtectedHeader } from 'jose';

const [jwksUrl, alg, ...tokens] = process.argv.slice(2);

function check(what, ok, detail = '') {
  if (!ok) {
    console.log(`FAIL ${what} ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`);
    process.exit(1);
  }
  console.log(`ok   ${what}`);
}

const jwks = createRemoteJWKSet(new URL(jwksUrl));
for (const token of tokens) {
  check(`${alg}: the header names ${alg}`, decodeProtectedHeader(token).alg === alg);
  const { payload } = await jwtVerify(token, jwks, { algorithms: [alg], typ: 'at+jwt' });
  check(`${alg}: jose verifies it from the JWKS`, typeof payload.sub === 'string', payload);
}
console.log('all checks passed');
