#!/usr/bin/env node
// Interop test: redeem notary credential offers with an independent, published
// OpenID4VCI wallet library (@sphereon/oid4vci-client) and verify the access
// tokens with an independent JOSE library (jose, by panva).
//
//   NOTARY_URL=https://localhost:18443 NOTARY_ADMIN_KEY=notary_... \
//   NOTARY_CA=/path/to/tls/cert.pem node interop.mjs
//
// Optional: INTEROP_TRACE=1 prints every HTTP request the wallet library makes.
// See README.md for the wallet quirks this script accommodates.

import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import https from 'node:https';

import { OpenID4VCIClient } from '@sphereon/oid4vci-client';
import * as jose from 'jose';

// --- environment -----------------------------------------------------------

const env = process.env;

// Node reads NODE_EXTRA_CA_CERTS only at start-up, so when NOTARY_CA is given
// and not already in force, run this script again with it set.
if (env.NOTARY_CA && env.NODE_EXTRA_CA_CERTS !== env.NOTARY_CA) {
  if (!existsSync(env.NOTARY_CA)) {
    console.log(`FAIL setup: NOTARY_CA ${env.NOTARY_CA} does not exist`);
    console.log('interop: 0 passed, 1 failed');
    process.exit(1);
  }
  const r = spawnSync(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    env: { ...env, NODE_EXTRA_CA_CERTS: env.NOTARY_CA },
    stdio: 'inherit',
  });
  process.exit(r.status ?? 1);
}

if (!env.NOTARY_URL || !env.NOTARY_ADMIN_KEY) {
  console.log('FAIL setup: NOTARY_URL and NOTARY_ADMIN_KEY must be set (and NOTARY_CA for a self-signed certificate)');
  console.log('interop: 0 passed, 1 failed');
  process.exit(1);
}

const NOTARY_URL = env.NOTARY_URL.replace(/\/+$/, '');
const ADMIN_KEY = env.NOTARY_ADMIN_KEY.trim();
const PRE_AUTH_GRANT = 'urn:ietf:params:oauth:grant-type:pre-authorized_code';
const CASE_TIMEOUT_MS = 30_000;

function pkgVersion(name) {
  const p = new URL(`./node_modules/${name}/package.json`, import.meta.url);
  return JSON.parse(readFileSync(p, 'utf8')).version;
}
const WALLET = `@sphereon/oid4vci-client@${pkgVersion('@sphereon/oid4vci-client')}`;
const JOSE = `jose@${pkgVersion('jose')}`;
const LIBS = `${WALLET}, ${JOSE}`;

// --- optional wire trace of the wallet library's requests ------------------
// The Sphereon library uses cross-fetch -> node-fetch@2 -> https.request, which
// reads https.request at call time, so wrapping it here sees every request.

if (env.INTEROP_TRACE) {
  const orig = https.request;
  https.request = function tracedRequest(...args) {
    const req = orig.apply(this, args);
    const chunks = [];
    const write = req.write.bind(req);
    const end = req.end.bind(req);
    req.write = (c, ...rest) => {
      if (c && typeof c !== 'function') chunks.push(Buffer.from(c));
      return write(c, ...rest);
    };
    req.end = (c, ...rest) => {
      if (c && typeof c !== 'function') chunks.push(Buffer.from(c));
      const h = req.getHeaders();
      const shown = { ...(h.dpop && { dpop: `${String(h.dpop).slice(0, 24)}...` }), 'content-type': h['content-type'], accept: h.accept };
      console.error(`  [wallet] ${req.method} https://${h.host}${req.path} ${JSON.stringify(shown)} ${Buffer.concat(chunks).toString()}`);
      req.once('response', (res) => console.error(`  [wallet]   <- ${res.statusCode} ${res.headers['content-type'] ?? ''}`));
      return end(c, ...rest);
    };
    return req;
  };
}

// --- helpers -----------------------------------------------------------------

class CaseFailure extends Error {}
function check(cond, msg) {
  if (!cond) throw new CaseFailure(msg);
}

let asMetadataPromise;
function asMetadata() {
  asMetadataPromise ??= (async () => {
    const r = await fetch(`${NOTARY_URL}/.well-known/oauth-authorization-server`);
    if (r.status !== 200) throw new CaseFailure(`authorization server metadata: HTTP ${r.status}`);
    return r.json();
  })();
  return asMetadataPromise;
}

// jose caches the key set across cases, as a resource server would.
const JWKS = jose.createRemoteJWKSet(new URL(`${NOTARY_URL}/.well-known/jwks.json`));

async function createOffer({ transactionCode, byReference }) {
  const r = await fetch(`${NOTARY_URL}/v1/openid/offers/pre-authorized`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ credentials: ['UniversityDegree_jwt'], transactionCode, byReference }),
  });
  const text = await r.text();
  check(r.status === 201, `create offer: HTTP ${r.status} ${text.slice(0, 200)}`);
  const offer = JSON.parse(text);
  check(typeof offer.id === 'string' && typeof offer.uri === 'string' && typeof offer.expiresAt === 'string',
    `create offer: response lacks id/uri/expiresAt: ${text.slice(0, 200)}`);
  const param = byReference ? 'credential_offer_uri=' : 'credential_offer=';
  check(offer.uri.startsWith(`openid-credential-offer://?${param}`), `create offer: unexpected uri ${offer.uri.slice(0, 80)}`);
  if (transactionCode !== false) {
    check(typeof offer.transactionCode === 'string' && offer.transactionCode.length > 0, 'create offer: no transactionCode (PIN) returned');
  } else {
    check(offer.transactionCode === undefined, 'create offer: a PIN was returned for an offer without one');
  }
  return offer;
}

async function makeDPoPKey() {
  const { publicKey, privateKey } = await jose.generateKeyPair('ES256', { extractable: true });
  const publicJwk = await jose.exportJWK(publicKey);
  return { publicJwk, privateKey, jkt: await jose.calculateJwkThumbprint(publicJwk, 'sha256') };
}

// The Sphereon library builds the DPoP header and claims (typ, alg, jwk, htm,
// htu, iat, jti, nonce on retry) and hands them to this callback to sign.
function sphereonDPoPOpts(key, algsSupported) {
  return {
    jwtIssuer: { alg: 'ES256', jwk: key.publicJwk },
    // Quirk: the library sends a DPoP proof only when this list is non-empty;
    // it does not read dpop_signing_alg_values_supported itself.
    dPoPSigningAlgValuesSupported: algsSupported,
    jwtPayloadProps: {},
    createJwtCallback: async (issuer, { header, payload }) => {
      if (issuer.dPoPSigningAlgValuesSupported && !issuer.dPoPSigningAlgValuesSupported.includes(header.alg)) {
        throw new Error(`server does not accept DPoP alg ${header.alg}`);
      }
      return new jose.SignJWT(payload).setProtectedHeader(header).sign(key.privateKey);
    },
  };
}

async function plainDPoPProof(key, htu, nonce) {
  return new jose.SignJWT({ htm: 'POST', htu, jti: crypto.randomUUID(), ...(nonce && { nonce }) })
    .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: key.publicJwk })
    .setIssuedAt()
    .sign(key.privateKey);
}

// --- one case --------------------------------------------------------------

async function runCase({ transactionCode, txCodeSpec, byReference, dpop, wrongPinFirst }) {
  const offer = await createOffer({ transactionCode: txCodeSpec ?? transactionCode, byReference });

  // The wallet: parse the offer URI (resolving credential_offer_uri), discover
  // the issuer and authorization server metadata.
  const client = await OpenID4VCIClient.fromURI({ uri: offer.uri, retrieveServerMetadata: true });
  const as = await asMetadata();
  check(client.getIssuer() === NOTARY_URL, `wallet sees credential_issuer ${client.getIssuer()}, expected ${NOTARY_URL}`);
  check(client.getAccessTokenEndpoint() === as.token_endpoint,
    `wallet chose token endpoint ${client.getAccessTokenEndpoint()}, metadata says ${as.token_endpoint}`);
  const code = client.credentialOffer?.preAuthorizedCode
    ?? client.credentialOffer?.credential_offer?.grants?.[PRE_AUTH_GRANT]?.['pre-authorized_code'];
  check(typeof code === 'string' && code.length > 0, 'wallet found no pre-authorized_code in the offer');
  const txCodeMeta = client.credentialOffer?.credential_offer?.grants?.[PRE_AUTH_GRANT]?.tx_code;
  check(Boolean(txCodeMeta) === transactionCode, `offer tx_code object ${JSON.stringify(txCodeMeta)} does not match transactionCode=${transactionCode}`);
  if (txCodeSpec) {
    for (const [k, v] of Object.entries(txCodeSpec)) {
      check(txCodeMeta[k] === v, `offer tx_code.${k} is ${JSON.stringify(txCodeMeta[k])}, asked for ${JSON.stringify(v)}`);
    }
    check(offer.transactionCode.length === txCodeSpec.length, `PIN has ${offer.transactionCode.length} characters, asked for ${txCodeSpec.length}`);
  }

  // The token request, made by the library.
  const key = dpop ? await makeDPoPKey() : undefined;
  const tokenOpts = {};
  if (wrongPinFirst) {
    // A wrong PIN is refused, and does not burn the code: the user retypes it.
    const wrong = offer.transactionCode.replace(/\d$/, (d) => String((Number(d) + 1) % 10));
    let refused;
    try {
      await client.acquireAccessToken({ pin: wrong });
    } catch (e) {
      refused = e;
    }
    check(refused, 'a wrong PIN was accepted');
    // The library hides the error body; its message carries only the status.
    check(/status: 400\b/.test(refused.message), `wrong PIN: expected HTTP 400, library said: ${refused.message}`);
  }
  if (transactionCode) tokenOpts.pin = offer.transactionCode;
  if (dpop) {
    check(Array.isArray(as.dpop_signing_alg_values_supported) && as.dpop_signing_alg_values_supported.includes('ES256'),
      `server does not advertise ES256 in dpop_signing_alg_values_supported: ${JSON.stringify(as.dpop_signing_alg_values_supported)}`);
    tokenOpts.createDPoPOpts = sphereonDPoPOpts(key, as.dpop_signing_alg_values_supported);
  }
  const tr = await client.acquireAccessToken(tokenOpts);
  check(typeof tr.access_token === 'string', 'no access_token in token response');
  const expectedType = dpop ? 'DPoP' : 'Bearer';
  check(tr.token_type === expectedType, `token_type ${JSON.stringify(tr.token_type)}, expected ${expectedType}`);
  check(Number.isInteger(tr.expires_in) && tr.expires_in > 0, `expires_in ${JSON.stringify(tr.expires_in)}`);

  // The resource server's view: verify with jose against the published JWKS.
  const { payload, protectedHeader } = await jose.jwtVerify(tr.access_token, JWKS, {
    issuer: NOTARY_URL,
    audience: NOTARY_URL,
    typ: 'at+jwt',
  });
  check(protectedHeader.typ === 'at+jwt', `access token typ ${JSON.stringify(protectedHeader.typ)}, expected at+jwt`);
  check(typeof payload.exp === 'number' && typeof payload.iat === 'number', 'access token lacks exp/iat');
  if (dpop) {
    check(payload.cnf?.jkt === key.jkt, `cnf.jkt ${JSON.stringify(payload.cnf?.jkt)} != RFC 7638 thumbprint ${key.jkt}`);
  } else {
    check(payload.cnf === undefined, `bearer token carries cnf ${JSON.stringify(payload.cnf)}`);
  }

  // The code is single-use: a second redemption must fail with invalid_grant.
  const body = new URLSearchParams({ grant_type: PRE_AUTH_GRANT, 'pre-authorized_code': code });
  if (transactionCode) body.set('tx_code', offer.transactionCode);
  const headers = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
  // With a DPoP key, replay with a valid proof (and the server's nonce, when it
  // asks for one) so that the only thing wrong with the request is the used code.
  let nonce = tr.params?.dpop?.dpopNonce;
  if (dpop) headers.dpop = await plainDPoPProof(key, as.token_endpoint, nonce);
  let replay = await fetch(as.token_endpoint, { method: 'POST', headers, body });
  let replayText = await replay.text();
  if (dpop && replay.status === 400 && replay.headers.get('dpop-nonce') && replayText.includes('use_dpop_nonce')) {
    nonce = replay.headers.get('dpop-nonce');
    headers.dpop = await plainDPoPProof(key, as.token_endpoint, nonce);
    replay = await fetch(as.token_endpoint, { method: 'POST', headers, body });
    replayText = await replay.text();
  }
  check(replay.status === 400, `second redemption: HTTP ${replay.status} ${replayText.slice(0, 200)}, expected 400`);
  let replayErr;
  try { replayErr = JSON.parse(replayText).error; } catch { /* reported below */ }
  check(replayErr === 'invalid_grant', `second redemption: error ${JSON.stringify(replayErr ?? replayText.slice(0, 100))}, expected invalid_grant`);
}

// --- main --------------------------------------------------------------------

const CASES = [
  ['a-by-value-pin', { transactionCode: true, byReference: false }],
  ['b-by-value-no-pin', { transactionCode: false, byReference: false }],
  ['c-by-reference-pin', { transactionCode: true, byReference: true }],
  ['d-by-reference-no-pin', { transactionCode: false, byReference: true }],
  ['e-dpop-by-value-pin', { transactionCode: true, byReference: false, dpop: true }],
  // Two more: a text PIN with a description, and a wrong PIN
  // followed by the right one.
  ['f-by-value-text-pin', {
    transactionCode: true,
    txCodeSpec: { length: 8, input_mode: 'text', description: 'Code from the letter' },
    byReference: false,
  }],
  ['g-wrong-pin-then-right-pin', { transactionCode: true, byReference: false, wrongPinFirst: true }],
];

function oneLine(e) {
  const m = e instanceof Error ? `${e instanceof CaseFailure ? '' : `${e.name}: `}${e.message}` : String(e);
  const cause = e?.cause ? ` (cause: ${e.cause.code ?? e.cause.message ?? e.cause})` : '';
  return (m + cause).replace(/\s+/g, ' ').slice(0, 400);
}

let passed = 0;
let failed = 0;
for (const [name, opts] of CASES) {
  let timer;
  try {
    await Promise.race([
      runCase(opts),
      new Promise((_, reject) => { timer = setTimeout(() => reject(new CaseFailure(`timed out after ${CASE_TIMEOUT_MS} ms`)), CASE_TIMEOUT_MS); }),
    ]);
    console.log(`ok ${name} (${LIBS})`);
    passed++;
  } catch (e) {
    console.log(`FAIL ${name}: ${oneLine(e)}`);
    failed++;
  } finally {
    clearTimeout(timer);
  }
}
console.log(`interop: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
