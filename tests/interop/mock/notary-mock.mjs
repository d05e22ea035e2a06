#!/usr/bin/env node
// A stand-in for notary's public and admin HTTP surface, written from
// shared/SPEC.md §3.3–3.5 and §4, so the interop harness (credentials.mjs,
// status.mjs) can be exercised without building notary.
//
// It is NOT a reference: it checks the harness and the libraries' API use,
// not notary. Keys live in memory, nothing is stored, errors are terse.
//
//   node mock/notary-mock.mjs --port 18600 --cert cert.pem --key key.pem
//   -> prints "ready <public url>" on stdout; admin key: mock-admin-key
//
// Options (env): MOCK_BATCH_SIZE (default 4); MOCK_DPOP_NONCE=1 requires
// DPoP server nonces (RFC 9449 §8, §9), a different one at the token endpoint
// and at the resources, so that each is asked for; MOCK_FAULT=<name> makes the
// stand-in break the contract in one way (see FAULTS), so that selftest.mjs
// can check that the harness notices.
//
// Credential status (§3.5): every credential carries a status reference
// (MOCK_STATUS=off: none). Changes through POST /v1/credentials/{id}/...
// reach the served lists MOCK_STATUS_DELAY_MS (default 1000) later, as a
// re-signing interval would.

import { createHash, randomBytes, randomInt, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import { parseArgs } from 'node:util';
import { deflateSync, gzipSync } from 'node:zlib';

import * as jose from 'jose';

const { values: args } = parseArgs({
  options: { port: { type: 'string' }, cert: { type: 'string' }, key: { type: 'string' }, host: { type: 'string', default: 'localhost' } },
});
const PORT = Number(args.port);
const BASE = `https://${args.host}:${PORT}`;
const DID = `did:web:${args.host}%3A${PORT}`;
const ADMIN_KEY = 'mock-admin-key';
const PRE_AUTH = 'urn:ietf:params:oauth:grant-type:pre-authorized_code';
const BATCH_SIZE = Number(process.env.MOCK_BATCH_SIZE ?? 4);
const FAULTS = [
  'sd-cnf', 'sd-extra-disclosure', 'sd-bad-sig', 'sd-typ', 'sd-claim', 'sd-issuer-meta',
  'vc-did-id', 'vc-not-assertion', 'vc-sub', 'vc-claim',
  'notify-200', 'reissue', 'dpop-as-bearer', 'batch-one', 'no-notification-id', 'nonce-cache',
  // status lists (status.mjs)
  'status-tsl-bad-sig', 'status-tsl-sub', 'status-tsl-lsb', 'status-bsl-lsb', 'status-bsl-short', 'status-bsl-zlib',
  'status-bsl-purpose', 'status-no-cors', 'status-never', 'status-reinstate-revoked', 'status-all-bits', 'status-list-late',
];
const FAULT = process.env.MOCK_FAULT ?? '';
const DPOP_NONCES = process.env.MOCK_DPOP_NONCE ? { as: `as-${randomBytes(12).toString("hex")}`, rs: `rs-${randomBytes(12).toString("hex")}` } : undefined;
class NeedNonce extends Error {}
if (FAULT && !FAULTS.includes(FAULT)) throw new Error(`unknown MOCK_FAULT ${FAULT}`);

const b64u = (buf) => Buffer.from(buf).toString('base64url');
const sha256 = (s) => createHash('sha256').update(s).digest();
const now = () => Math.floor(Date.now() / 1000);
const rand = () => b64u(randomBytes(24));

async function newKey() {
  const { publicKey, privateKey } = await jose.generateKeyPair('ES256', { extractable: true });
  const jwk = await jose.exportJWK(publicKey);
  const kid = await jose.calculateJwkThumbprint(jwk);
  return { privateKey, jwk: { ...jwk, kid, alg: 'ES256', use: 'sig' }, kid };
}
const tokenKey = await newKey();
const credKey = await newKey();
const strayKey = await newKey();

const SD_ID = 'UniversityDegree_sd_jwt';
const JWT_ID = 'UniversityDegree_jwt';
// graduation_year is a plain (never disclosable) claim of the SD-JWT VC, as
// in notary init's example; the W3C credential does not declare it.
const SD_CLAIMS = ['given_name', 'family_name', 'degree', 'graduation_year'];
const PLAIN_SD_CLAIMS = ['graduation_year'];
const VC_CLAIMS = ['given_name', 'family_name', 'degree'];
const claimMeta = (names, prefix) => names.map((c) => ({ path: [...prefix, c], display: [{ name: c.replace('_', ' '), locale: 'en' }] }));
// MOCK_METADATA=v1 puts display and claims under credential_metadata
// (OID4VCI 1.0 final); the default puts them beside format (draft 15), as
// notary's metadata does.
const described = (display, claims) => (process.env.MOCK_METADATA === 'v1'
  ? { credential_metadata: { display: [display], claims } }
  : { display: [display], claims });
const proofTypes = { jwt: { proof_signing_alg_values_supported: ['ES256', 'EdDSA'] } };

const issuerMetadata = {
  credential_issuer: BASE,
  authorization_servers: [BASE],
  credential_endpoint: `${BASE}/oid4vci/credential`,
  nonce_endpoint: `${BASE}/oid4vci/nonce`,
  notification_endpoint: `${BASE}/oid4vci/notification`,
  batch_credential_issuance: { batch_size: BATCH_SIZE },
  display: [{ name: 'Mock University', locale: 'en' }],
  credential_configurations_supported: {
    [SD_ID]: {
      format: 'dc+sd-jwt',
      vct: `${BASE}/vct/UniversityDegree`,
      cryptographic_binding_methods_supported: ['jwk'],
      credential_signing_alg_values_supported: ['ES256'],
      proof_types_supported: proofTypes,
      ...described({ name: 'University degree', locale: 'en' }, claimMeta(SD_CLAIMS, [])),
    },
    [JWT_ID]: {
      format: 'jwt_vc_json',
      credential_definition: { type: ['VerifiableCredential', 'UniversityDegreeCredential'] },
      cryptographic_binding_methods_supported: ['did:jwk'],
      credential_signing_alg_values_supported: ['ES256'],
      proof_types_supported: proofTypes,
      ...described({ name: 'University degree (W3C)', locale: 'en' }, claimMeta(VC_CLAIMS, ['credentialSubject'])),
    },
  },
};
const asMetadata = {
  issuer: BASE,
  token_endpoint: `${BASE}/oid4vci/token`,
  jwks_uri: `${BASE}/.well-known/jwks.json`,
  grant_types_supported: [PRE_AUTH],
  'pre-authorized_grant_anonymous_access_supported': true,
  dpop_signing_alg_values_supported: ['ES256', 'EdDSA'],
};
const didDocument = {
  '@context': ['https://www.w3.org/ns/did/v1', 'https://w3id.org/security/suites/jws-2020/v1'],
  id: FAULT === 'vc-did-id' ? `${DID}x` : DID,
  verificationMethod: [{ id: `${DID}#${credKey.kid}`, type: 'JsonWebKey2020', controller: DID, publicKeyJwk: credKey.jwk }],
  assertionMethod: FAULT === 'vc-not-assertion' ? [] : [`${DID}#${credKey.kid}`],
};

const offers = new Map(); // id -> offer state
const codes = new Map(); // pre-authorized code -> offer id
const tokens = new Map(); // access token -> { offerId, jkt }
const nonces = new Map(); // c_nonce -> expiry
const notifications = new Map(); // notification_id -> token

// --- credential status (§3.5) ---------------------------------------------------------------

const STATUS_ON = process.env.MOCK_STATUS !== 'off';
const STATUS_DELAY_MS = Number(process.env.MOCK_STATUS_DELAY_MS ?? 1000);
const LIST_ENTRIES = 131_072;
const TSL_URI = `${BASE}/status/tsl-1`;
const BSL_URI = { revocation: `${BASE}/status/bsl-revocation-1`, suspension: `${BASE}/status/bsl-suspension-1` };
const issued = new Map(); // credential id -> { id, format, configuration, offerId, idx, history: [{ at, status }] }
// When each list kind got its first credential; with MOCK_FAULT=status-list-late
// a list is served only 500 ms after that.
const listOpened = {};
const usedIdx = new Set();

function newIndex() {
  for (;;) {
    const i = randomInt(LIST_ENTRIES);
    if (!usedIdx.has(i)) {
      usedIdx.add(i);
      return i;
    }
  }
}

function recordCredential(offerId, configuration, format) {
  const c = { id: randomUUID(), format, configuration, offerId, idx: newIndex(), history: [{ at: 0, status: 'valid' }] };
  listOpened[format] ??= Date.now();
  issued.set(c.id, c);
  return c;
}

const current = (c) => c.history[c.history.length - 1].status;
// What the served lists say: the status as of MOCK_STATUS_DELAY_MS ago.
function served(c) {
  if (FAULT === 'status-never') return c.history[0].status;
  const cutoff = Date.now() - STATUS_DELAY_MS;
  return c.history.filter((h) => h.at <= cutoff).pop().status;
}

const listHeaders = (type, maxAge) => ({
  'content-type': type,
  'cache-control': `public, max-age=${maxAge}`,
  ...(FAULT !== 'status-no-cors' && { 'access-control-allow-origin': '*' }),
});

async function tokenStatusList() {
  const bytes = new Uint8Array(LIST_ENTRIES / 4); // 2 bits per entry
  for (const c of issued.values()) {
    if (c.format !== 'dc+sd-jwt') continue;
    const v = { valid: 0, revoked: 1, suspended: 2 }[served(c)];
    const shift = FAULT === 'status-tsl-lsb' ? 6 - (c.idx % 4) * 2 : (c.idx % 4) * 2;
    bytes[c.idx >> 2] |= v << shift;
  }
  const iat = now();
  return new jose.SignJWT({
    sub: FAULT === 'status-tsl-sub' ? `${TSL_URI}x` : TSL_URI,
    iat,
    exp: iat + 60,
    ttl: 1,
    status_list: { bits: 2, lst: b64u(deflateSync(bytes, { level: 9 })) },
  }).setProtectedHeader({ alg: 'ES256', typ: 'statuslist+jwt', kid: credKey.kid })
    .sign(FAULT === 'status-tsl-bad-sig' ? strayKey.privateKey : credKey.privateKey);
}

async function bitstringStatusList(purpose) {
  const bytes = new Uint8Array(FAULT === 'status-bsl-short' ? LIST_ENTRIES / 8 - 1 : LIST_ENTRIES / 8);
  for (const c of issued.values()) {
    if (c.format !== 'jwt_vc_json') continue;
    const s = served(c);
    if (s !== (purpose === 'revocation' ? 'revoked' : 'suspended') && FAULT !== 'status-all-bits') continue;
    if (FAULT === 'status-all-bits' && s === 'valid') continue;
    bytes[c.idx >> 3] |= FAULT === 'status-bsl-lsb' ? 1 << (c.idx & 7) : 0x80 >> (c.idx & 7);
  }
  const packed = FAULT === 'status-bsl-zlib' ? deflateSync(bytes) : gzipSync(bytes);
  const iat = now();
  const listPurpose = FAULT === 'status-bsl-purpose' && purpose === 'revocation' ? 'suspension' : purpose;
  const vc = {
    '@context': ['https://www.w3.org/ns/credentials/v2'],
    id: BSL_URI[purpose],
    type: ['VerifiableCredential', 'BitstringStatusListCredential'],
    issuer: DID,
    validFrom: new Date(iat * 1000).toISOString(),
    validUntil: new Date((iat + 60) * 1000).toISOString(),
    credentialSubject: { id: `${BSL_URI[purpose]}#list`, type: 'BitstringStatusList', statusPurpose: listPurpose, encodedList: `u${b64u(packed)}` },
  };
  return new jose.SignJWT({ vc }).setProtectedHeader({ alg: 'ES256', typ: 'vc+jwt', kid: `${DID}#${credKey.kid}` })
    .setIssuer(DID).setIssuedAt(iat).setNotBefore(iat).setExpirationTime(iat + 60)
    .sign(credKey.privateKey);
}

function newNonce() {
  const n = rand();
  nonces.set(n, now() + 300);
  return n;
}

// --- HTTP plumbing ------------------------------------------------------------------

function send(res, status, body, headers = {}) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { ...(body !== undefined && { 'content-type': 'application/json' }), 'cache-control': 'no-store', ...headers });
  res.end(text);
}
function sendList(res, type, body) {
  const format = type === 'application/statuslist+jwt' ? 'dc+sd-jwt' : 'jwt_vc_json';
  if (FAULT === 'status-list-late' && !(Date.now() - (listOpened[format] ?? Infinity) >= 500)) return send(res, 404, { error: 'not_found' });
  res.writeHead(200, listHeaders(type, 1));
  res.end(body);
}
const oauthError = (res, status, error, description, headers) => send(res, status, { error, error_description: description }, headers);

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

// --- DPoP (RFC 9449) ----------------------------------------------------------------------

async function checkDPoP(req, htu, accessToken, expectedNonce) {
  const proof = req.headers.dpop;
  if (!proof) return undefined;
  const header = jose.decodeProtectedHeader(proof);
  if (header.typ !== 'dpop+jwt' || !header.jwk) throw new Error('bad DPoP header');
  const { payload } = await jose.jwtVerify(proof, await jose.importJWK(header.jwk, header.alg), { typ: 'dpop+jwt', maxTokenAge: 120 });
  if (payload.htm !== req.method || payload.htu !== htu) throw new Error('DPoP htm/htu mismatch');
  if (accessToken !== undefined && payload.ath !== b64u(sha256(accessToken))) throw new Error('DPoP ath mismatch');
  if (expectedNonce && payload.nonce !== expectedNonce) throw new NeedNonce('DPoP nonce required');
  return jose.calculateJwkThumbprint(header.jwk);
}

// --- key proofs (OID4VCI 1.0 §8.2.1.1) ------------------------------------------------------

async function holderKeyOfProof(jwt) {
  const header = jose.decodeProtectedHeader(jwt);
  if (header.typ !== 'openid4vci-proof+jwt') throw new Error(`proof typ ${header.typ}`);
  let jwk;
  let did;
  if (header.jwk && !header.kid) jwk = header.jwk;
  else if (typeof header.kid === 'string' && header.kid.startsWith('did:jwk:') && !header.jwk) {
    did = header.kid.split('#')[0];
    jwk = JSON.parse(Buffer.from(did.slice(8), 'base64url').toString('utf8'));
  } else throw new Error('proof names no key (jwk or did:jwk kid)');
  const { payload } = await jose.jwtVerify(jwt, await jose.importJWK(jwk, header.alg), { audience: BASE, typ: 'openid4vci-proof+jwt' });
  if (typeof payload.iat !== 'number' || Math.abs(payload.iat - now()) > 300) throw new Error('proof iat not fresh');
  return { jwk, did: did ?? `did:jwk:${b64u(JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }))}`, nonce: payload.nonce };
}

// --- credentials ---------------------------------------------------------------------------

async function issueSdJwt(claims, holderJwk, record) {
  const shown = FAULT === 'sd-claim' ? { ...claims, given_name: 'Mallory' } : claims;
  const disclosures = Object.entries(shown).filter(([k]) => !PLAIN_SD_CLAIMS.includes(k))
    .map(([k, v]) => b64u(JSON.stringify([rand(), k, v])));
  const plain = Object.fromEntries(Object.entries(shown).filter(([k]) => PLAIN_SD_CLAIMS.includes(k)));
  if (FAULT === 'sd-cnf') holderJwk = strayKey.jwk;
  const payload = {
    iss: BASE,
    iat: now(),
    exp: now() + 365 * 86400,
    vct: issuerMetadata.credential_configurations_supported[SD_ID].vct,
    cnf: { jwk: { kty: holderJwk.kty, crv: holderJwk.crv, x: holderJwk.x, y: holderJwk.y } },
    ...(record && { status: { status_list: { idx: record.idx, uri: TSL_URI } } }),
    ...plain,
    _sd: disclosures.map((d) => b64u(sha256(d))).sort(),
    _sd_alg: 'sha-256',
  };
  const jwt = await new jose.SignJWT(payload)
    .setProtectedHeader({ typ: FAULT === 'sd-typ' ? 'vc+sd-jwt' : 'dc+sd-jwt', alg: 'ES256', kid: credKey.kid })
    .sign(FAULT === 'sd-bad-sig' ? strayKey.privateKey : credKey.privateKey);
  if (FAULT === 'sd-extra-disclosure') disclosures.push(b64u(JSON.stringify([rand(), 'extra', 'unsigned'])));
  return `${jwt}~${disclosures.join('~')}~`;
}

async function issueJwtVc(claims, holderDid, record) {
  const iat = now();
  if (FAULT === 'vc-sub') holderDid = `did:jwk:${b64u(JSON.stringify({ crv: 'P-256', kty: 'EC', x: strayKey.jwk.x, y: strayKey.jwk.y }))}`;
  if (FAULT === 'vc-claim') claims = { ...claims, degree: 'PhD' };
  const vc = {
    '@context': ['https://www.w3.org/2018/credentials/v1'],
    type: issuerMetadata.credential_configurations_supported[JWT_ID].credential_definition.type,
    issuer: DID,
    issuanceDate: new Date(iat * 1000).toISOString(),
    credentialSubject: { id: holderDid, ...claims },
    ...(record && {
      credentialStatus: ['revocation', 'suspension'].map((purpose) => ({
        id: `${BSL_URI[purpose]}#${record.idx}`,
        type: 'BitstringStatusListEntry',
        statusPurpose: purpose,
        statusListIndex: String(record.idx),
        statusListCredential: BSL_URI[purpose],
      })),
    }),
  };
  return new jose.SignJWT({ vc, jti: `urn:uuid:${randomUUID()}` })
    .setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: `${DID}#${credKey.kid}` })
    .setIssuer(DID).setSubject(holderDid).setIssuedAt(iat).setNotBefore(iat).setExpirationTime(iat + 365 * 86400)
    .sign(credKey.privateKey);
}

// --- routes -------------------------------------------------------------------------------

async function route(req, res) {
  const url = new URL(req.url, BASE);
  const p = url.pathname;
  if (req.method === 'GET') {
    if (p === '/.well-known/openid-credential-issuer') return send(res, 200, issuerMetadata);
    if (p === '/.well-known/oauth-authorization-server') return send(res, 200, asMetadata);
    if (p === '/.well-known/jwks.json') return send(res, 200, { keys: [tokenKey.jwk] });
    if (p === '/.well-known/jwt-vc-issuer') {
      return send(res, 200, { issuer: FAULT === 'sd-issuer-meta' ? `${BASE}/other` : BASE, jwks: { keys: [credKey.jwk] } });
    }
    if (p === '/.well-known/did.json') return send(res, 200, didDocument);
    if (p === new URL(TSL_URI).pathname) return sendList(res, 'application/statuslist+jwt', await tokenStatusList());
    for (const purpose of Object.keys(BSL_URI)) {
      if (p === new URL(BSL_URI[purpose]).pathname) return sendList(res, 'application/vc+jwt', await bitstringStatusList(purpose));
    }
    if (p === '/v1/credentials') {
      if (req.headers.authorization !== `Bearer ${ADMIN_KEY}`) return send(res, 401, { error: 'unauthorized' });
      const offerId = url.searchParams.get('offer');
      const credentials = [...issued.values()].filter((c) => c.offerId === offerId)
        .map((c) => ({ id: c.id, format: c.format, configuration: c.configuration, status: current(c) }));
      return send(res, 200, { credentials });
    }
    if (p.startsWith('/offers/')) {
      const offer = offers.get(p.slice('/offers/'.length));
      return offer ? send(res, 200, offer.json) : send(res, 404, { error: 'not_found' });
    }
    return send(res, 404, { error: 'not_found' });
  }
  if (req.method !== 'POST') return send(res, 405, { error: 'method_not_allowed' });
  const text = await readBody(req);

  if (p === '/v1/openid/offers/pre-authorized') {
    if (req.headers.authorization !== `Bearer ${ADMIN_KEY}`) return send(res, 401, { error: 'unauthorized' });
    const body = JSON.parse(text);
    const [configId] = body.credentials;
    if (!issuerMetadata.credential_configurations_supported[configId]) return send(res, 400, { error: `unknown configuration ${configId}` });
    const claims = body.claims?.[configId] ?? {};
    const declared = configId === SD_ID ? SD_CLAIMS : VC_CLAIMS;
    for (const k of Object.keys(claims)) if (!declared.includes(k)) return send(res, 400, { error: `unknown claim ${k}` });
    const id = randomUUID();
    const code = rand();
    const spec = body.transactionCode === true ? { length: 6, input_mode: 'numeric' } : body.transactionCode || undefined;
    const alphabet = spec?.input_mode === 'text' ? '23456789ABCDEFGHJKLMNPQRSTUVWXYZ' : '0123456789';
    const pin = spec ? Array.from(randomBytes(spec.length), (b) => alphabet[b % alphabet.length]).join('') : undefined;
    const grant = { 'pre-authorized_code': code, ...(spec && { tx_code: spec }) };
    const json = { credential_issuer: BASE, credential_configuration_ids: [configId], grants: { [PRE_AUTH]: grant } };
    offers.set(id, { json, pin, configId, claims, redeemed: false, issued: false });
    codes.set(code, id);
    const uri = body.byReference
      ? `openid-credential-offer://?credential_offer_uri=${encodeURIComponent(`${BASE}/offers/${id}`)}`
      : `openid-credential-offer://?credential_offer=${encodeURIComponent(JSON.stringify(json))}`;
    return send(res, 201, { id, uri, expiresAt: new Date(Date.now() + 600_000).toISOString(), ...(pin && { transactionCode: pin }) });
  }

  const change = /^\/v1\/credentials\/([^/]+)\/(revoke|suspend|reinstate)$/.exec(p);
  if (change) {
    if (req.headers.authorization !== `Bearer ${ADMIN_KEY}`) return send(res, 401, { error: 'unauthorized' });
    const c = issued.get(decodeURIComponent(change[1]));
    if (!c) return send(res, 404, { error: 'not_found' });
    if (current(c) === 'revoked' && FAULT !== 'status-reinstate-revoked') return send(res, 409, { error: 'revoked credentials cannot change' });
    const status = { revoke: 'revoked', suspend: 'suspended', reinstate: 'valid' }[change[2]];
    c.history.push({ at: Date.now(), status });
    return send(res, 200, { id: c.id, status });
  }

  if (p === '/oid4vci/token') {
    const form = new URLSearchParams(text);
    if (form.get('grant_type') !== PRE_AUTH) return oauthError(res, 400, 'unsupported_grant_type', 'grant');
    const offerId = codes.get(form.get('pre-authorized_code'));
    const offer = offers.get(offerId);
    if (!offer || offer.redeemed) return oauthError(res, 400, 'invalid_grant', 'code');
    const pin = form.get('tx_code') ?? form.get('user_pin');
    if (offer.pin && pin !== offer.pin) return oauthError(res, 400, 'invalid_grant', 'PIN');
    if (!offer.pin && pin) return oauthError(res, 400, 'invalid_request', 'no PIN expected');
    let jkt;
    try {
      jkt = await checkDPoP(req, asMetadata.token_endpoint, undefined, DPOP_NONCES?.as);
    } catch (e) {
      if (e instanceof NeedNonce) return oauthError(res, 400, 'use_dpop_nonce', e.message, { 'dpop-nonce': DPOP_NONCES.as });
      return oauthError(res, 400, 'invalid_dpop_proof', e.message);
    }
    offer.redeemed = true;
    // An RFC 9068 access token, so interop.mjs (the token cases) runs here too.
    const at = await new jose.SignJWT({ client_id: form.get('client_id') ?? 'anonymous', ...(jkt && { cnf: { jkt } }) })
      .setProtectedHeader({ typ: 'at+jwt', alg: 'ES256', kid: tokenKey.kid })
      .setIssuer(BASE).setAudience(BASE).setSubject(offerId).setIssuedAt().setExpirationTime('300s').setJti(randomUUID())
      .sign(tokenKey.privateKey);
    tokens.set(at, { offerId, jkt });
    return send(res, 200, { access_token: at, token_type: jkt ? 'DPoP' : 'Bearer', expires_in: 300, c_nonce: newNonce(), c_nonce_expires_in: 300 });
  }

  if (p === '/oid4vci/nonce') {
    return send(res, 200, { c_nonce: newNonce() }, FAULT === 'nonce-cache' ? { 'cache-control': 'max-age=60' } : {});
  }

  // Protected resources: the credential and notification endpoints.
  const [scheme, at] = (req.headers.authorization ?? '').split(' ');
  const token = tokens.get(at);
  const challenge = (err) => ({ 'www-authenticate': `${token?.jkt ? 'DPoP' : 'Bearer'} error="${err}"` });
  if (!token) return oauthError(res, 401, 'invalid_token', 'unknown token', challenge('invalid_token'));
  if (token.jkt) {
    if (scheme !== 'DPoP' && FAULT !== 'dpop-as-bearer') return oauthError(res, 401, 'invalid_token', 'DPoP-bound token sent as Bearer', challenge('invalid_token'));
    let jkt;
    try {
      jkt = scheme === 'DPoP' ? await checkDPoP(req, `${BASE}${p}`, at, DPOP_NONCES?.rs) : token.jkt;
    } catch (e) {
      if (e instanceof NeedNonce) {
        return oauthError(res, 401, 'use_dpop_nonce', e.message, { 'www-authenticate': 'DPoP error="use_dpop_nonce"', 'dpop-nonce': DPOP_NONCES.rs });
      }
      return oauthError(res, 401, 'invalid_dpop_proof', e.message, challenge('invalid_dpop_proof'));
    }
    if (jkt !== token.jkt) return oauthError(res, 401, 'invalid_token', 'DPoP key is not the bound key', challenge('invalid_token'));
  } else if (scheme !== 'Bearer') {
    return oauthError(res, 401, 'invalid_token', 'scheme', challenge('invalid_token'));
  }
  const offer = offers.get(token.offerId);
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    return oauthError(res, 400, 'invalid_credential_request', 'body is not JSON');
  }

  if (p === '/oid4vci/notification') {
    if (notifications.get(body.notification_id) !== at) return oauthError(res, 400, 'invalid_notification_id', 'id');
    if (FAULT === 'notify-200') return send(res, 200, {});
    res.writeHead(204);
    return res.end();
  }

  if (p === '/oid4vci/credential') {
    const configId = body.credential_configuration_id;
    if (configId !== offer.configId) return oauthError(res, 400, 'unknown_credential_configuration', 'configuration');
    if (offer.issued) return oauthError(res, 400, 'credential_request_denied', 'already issued');
    let jwts;
    if (body.proofs && body.proof) return oauthError(res, 400, 'invalid_credential_request', 'proof and proofs');
    if (body.proofs) jwts = body.proofs.jwt;
    else if (body.proof?.proof_type === 'jwt') jwts = [body.proof.jwt];
    if (!Array.isArray(jwts) || jwts.length === 0) return oauthError(res, 400, 'invalid_proof', 'no proof');
    if (jwts.length > BATCH_SIZE) return oauthError(res, 400, 'invalid_credential_request', 'batch too large');
    const holders = [];
    const seenNonces = new Set();
    for (const jwt of jwts) {
      try {
        const h = await holderKeyOfProof(jwt);
        holders.push(h);
        seenNonces.add(h.nonce);
      } catch (e) {
        return oauthError(res, 400, 'invalid_proof', e.message);
      }
    }
    for (const n of seenNonces) {
      if (!nonces.has(n) || nonces.get(n) < now()) return oauthError(res, 400, 'invalid_nonce', 'nonce');
    }
    for (const n of seenNonces) nonces.delete(n);
    const format = issuerMetadata.credential_configurations_supported[configId].format;
    const credentials = [];
    for (const h of FAULT === 'batch-one' ? holders.slice(0, 1) : holders) {
      const record = STATUS_ON ? recordCredential(token.offerId, configId, format) : undefined;
      credentials.push({ credential: format === 'dc+sd-jwt' ? await issueSdJwt(offer.claims, h.jwk, record) : await issueJwtVc(offer.claims, h.did, record) });
    }
    offer.issued = FAULT !== 'reissue';
    const notificationId = rand();
    notifications.set(notificationId, at);
    return send(res, 200, { credentials, ...(FAULT !== 'no-notification-id' && { notification_id: notificationId }) });
  }
  return send(res, 404, { error: 'not_found' });
}

const server = https.createServer({ cert: readFileSync(args.cert), key: readFileSync(args.key) }, (req, res) => {
  route(req, res).catch((e) => {
    console.error(`mock: ${req.method} ${req.url}: ${e.stack}`);
    if (!res.headersSent) send(res, 500, { error: 'server_error' });
  });
});
server.listen(PORT, '127.0.0.1', () => console.log(`ready ${BASE}`));
