// Shared pieces of the credential interop harness: failures, encodings,
// holder keys, did:jwk / did:web, the script's own raw requests (made with
// jose and fetch, never with a wallet library), and the admin API.
//
// Nothing here knows which wallet library is under test.

import { createHash, randomBytes, randomUUID } from 'node:crypto';

import * as jose from 'jose';

export class CaseFailure extends Error {}

export function check(cond, msg) {
  if (!cond) throw new CaseFailure(msg);
}

export const PRE_AUTH_GRANT = 'urn:ietf:params:oauth:grant-type:pre-authorized_code';

// --- encodings ----------------------------------------------------------------

export const b64u = {
  encode: (bytes) => Buffer.from(bytes).toString('base64url'),
  decodeText: (s) => Buffer.from(s, 'base64url').toString('utf8'),
  decodeJson: (s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8')),
};

export function sha256(input) {
  return createHash('sha256').update(input).digest();
}

// Key order does not matter for equality of claims here; arrays keep order.
export function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export function sameJson(a, b) {
  return canonical(a) === canonical(b);
}

// JWK members that hold private or symmetric key material (RFC 7518 §6).
export const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'];

export function hasPrivateMembers(jwk) {
  return PRIVATE_JWK_MEMBERS.some((m) => jwk && Object.hasOwn(jwk, m));
}

// --- did:jwk (https://github.com/quartzjer/did-jwk/blob/main/spec.md) ----------

// did:jwk:<base64url(UTF-8 JSON of the public JWK)>. The key's own members
// only: no `d`, no `kid`, `alg` or `use` decorations.
export function didJwkFromJwk(publicJwk) {
  check(!hasPrivateMembers(publicJwk), 'did:jwk refused: the JWK has private members');
  const bare = {};
  for (const m of ['crv', 'e', 'kty', 'n', 'x', 'y']) if (publicJwk[m] !== undefined) bare[m] = publicJwk[m];
  return `did:jwk:${b64u.encode(Buffer.from(JSON.stringify(bare), 'utf8'))}`;
}

// Returns the JWK a did:jwk (or a did:jwk DID URL, `#0` and all) names.
export function jwkFromDidJwk(didOrUrl) {
  check(typeof didOrUrl === 'string' && didOrUrl.startsWith('did:jwk:'), `not a did:jwk: ${String(didOrUrl).slice(0, 60)}`);
  const id = didOrUrl.slice('did:jwk:'.length).split('#')[0];
  check(/^[A-Za-z0-9_-]+$/.test(id), 'did:jwk identifier is not base64url');
  let jwk;
  try {
    jwk = b64u.decodeJson(id);
  } catch {
    throw new CaseFailure('did:jwk identifier does not decode to JSON');
  }
  check(jwk && typeof jwk === 'object' && typeof jwk.kty === 'string', 'did:jwk does not hold a JWK');
  return jwk;
}

// --- did:web (https://w3c-ccg.github.io/did-method-web/#read-resolve) ----------

// did:web:<host>[%3A<port>][:<path>...] -> https://<host>[:<port>]/<path>/did.json,
// or /.well-known/did.json without a path. A DID URL's fragment or query is
// dropped first.
export function didWebToUrl(didOrUrl) {
  check(typeof didOrUrl === 'string' && didOrUrl.startsWith('did:web:'), `not a did:web: ${String(didOrUrl).slice(0, 60)}`);
  const did = didOrUrl.split('#')[0].split('?')[0];
  const parts = did.slice('did:web:'.length).split(':');
  check(parts.every((p) => p.length > 0), `did:web has an empty segment: ${did}`);
  const host = decodeURIComponent(parts[0]);
  check(!/[/?#@]/.test(host), `did:web host is not a host: ${host}`);
  const path = parts.slice(1).map((p) => decodeURIComponent(p));
  check(path.every((p) => !p.includes('/')), 'did:web path segment holds a slash');
  return path.length ? `https://${host}/${path.join('/')}/did.json` : `https://${host}/.well-known/did.json`;
}

// The did:web that a base URL (scheme https, host, optional port, no path)
// stands for: the port's colon is percent-encoded.
export function didWebForOrigin(baseUrl) {
  const u = new URL(baseUrl);
  check(u.protocol === 'https:', 'did:web needs https');
  const host = u.port ? `${u.hostname}%3A${u.port}` : u.hostname;
  const path = u.pathname.replace(/\/+$/, '');
  return `did:web:${host}${path ? path.split('/').filter(Boolean).map((p) => `:${encodeURIComponent(p)}`).join('') : ''}`;
}

// --- the SD-JWT VC issuer metadata URL (draft-ietf-oauth-sd-jwt-vc §5) ----------

// /.well-known/jwt-vc-issuer goes between the host and the path of `iss`.
export function jwtVcIssuerMetadataUrl(iss) {
  const u = new URL(iss);
  check(u.protocol === 'https:', `iss ${iss} is not an https URL`);
  const path = u.pathname === '/' ? '' : u.pathname.replace(/\/+$/, '');
  return `${u.origin}/.well-known/jwt-vc-issuer${path}`;
}

// --- holder and DPoP keys --------------------------------------------------------

// A holder key. `binding` is 'jwk' (header jwk) or 'did:jwk' (header kid).
export async function makeKey(alg = 'ES256') {
  const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true });
  const publicJwk = await jose.exportJWK(publicKey);
  const privateJwk = await jose.exportJWK(privateKey);
  const did = didJwkFromJwk(publicJwk);
  return {
    alg,
    publicJwk,
    privateJwk,
    privateKey,
    did,
    didUrl: `${did}#0`,
    thumbprint: await jose.calculateJwkThumbprint(publicJwk, 'sha256'),
  };
}

export async function thumbprintOf(jwk) {
  return jose.calculateJwkThumbprint(jwk, 'sha256');
}

// --- the script's own requests (for what a library cannot do) ----------------------

// OID4VCI 1.0 §8.2.1.1 key proof: typ openid4vci-proof+jwt, aud = credential
// issuer, iat, nonce; the key as header jwk, or as a did:jwk kid.
export async function makeProofJwt(key, { audience, nonce, binding, iat }) {
  const header = { typ: 'openid4vci-proof+jwt', alg: key.alg };
  if (binding === 'did:jwk') header.kid = key.didUrl;
  else header.jwk = key.publicJwk;
  const payload = { aud: audience, ...(nonce !== undefined && { nonce }) };
  const jwt = new jose.SignJWT(payload).setProtectedHeader(header);
  if (iat !== undefined) jwt.setIssuedAt(iat);
  else jwt.setIssuedAt();
  return jwt.sign(key.privateKey);
}

// RFC 9449 §4.2 proof; `accessToken` adds ath (§4.3) for resource requests.
export async function makeDPoPProof(key, { htm = 'POST', htu, nonce, accessToken }) {
  const payload = { htm, htu, jti: randomUUID() };
  if (nonce) payload.nonce = nonce;
  if (accessToken) payload.ath = b64u.encode(sha256(accessToken));
  return new jose.SignJWT(payload)
    .setProtectedHeader({ typ: 'dpop+jwt', alg: key.alg, jwk: key.publicJwk })
    .setIssuedAt()
    .sign(key.privateKey);
}

function parseJsonOrUndefined(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

// RFC 9449 §9: a resource server asks for a nonce with 401 and
// `WWW-Authenticate: DPoP error="use_dpop_nonce"` plus a `DPoP-Nonce` header.
function asksForDPoPNonce(res) {
  return res.status === 401 && /use_dpop_nonce/.test(res.headers.get('www-authenticate') ?? '') && res.headers.get('dpop-nonce');
}

// POST JSON to a protected resource as a wallet would, bearer or DPoP
// (retrying once with the server's nonce). Answers {status, headers, text, json}.
export async function resourcePost(url, body, { accessToken, dpopKey, dpopNonce }) {
  let nonce = dpopNonce;
  for (let attempt = 0; attempt < 2; attempt++) {
    const headers = { 'content-type': 'application/json', accept: 'application/json' };
    if (dpopKey) {
      headers.authorization = `DPoP ${accessToken}`;
      headers.dpop = await makeDPoPProof(dpopKey, { htu: url, nonce, accessToken });
    } else {
      headers.authorization = `Bearer ${accessToken}`;
    }
    const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body) });
    const text = await res.text();
    if (attempt === 0 && dpopKey && asksForDPoPNonce(res)) {
      nonce = res.headers.get('dpop-nonce');
      continue;
    }
    return { status: res.status, headers: res.headers, text, json: parseJsonOrUndefined(text), dpopNonce: res.headers.get('dpop-nonce') ?? nonce };
  }
  throw new Error('unreachable');
}

export async function fetchNonce(nonceEndpoint) {
  const res = await fetch(nonceEndpoint, { method: 'POST' });
  const text = await res.text();
  check(res.status === 200, `nonce endpoint: HTTP ${res.status} ${text.slice(0, 200)}`);
  const cc = res.headers.get('cache-control') ?? '';
  check(/no-store/i.test(cc), `nonce endpoint: Cache-Control ${JSON.stringify(cc)}, expected no-store`);
  const body = parseJsonOrUndefined(text);
  check(typeof body?.c_nonce === 'string' && body.c_nonce.length > 0, `nonce endpoint: no c_nonce in ${text.slice(0, 200)}`);
  return body.c_nonce;
}

// --- the admin API ----------------------------------------------------------------

export async function createOffer(notaryUrl, adminKey, { configId, claims, transactionCode, byReference }) {
  const res = await fetch(`${notaryUrl}/v1/openid/offers/pre-authorized`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ credentials: [configId], transactionCode, byReference, claims: { [configId]: claims } }),
  });
  const text = await res.text();
  check(res.status === 201, `create offer: HTTP ${res.status} ${text.slice(0, 300)}`);
  const offer = JSON.parse(text);
  const param = byReference ? 'credential_offer_uri=' : 'credential_offer=';
  check(typeof offer.uri === 'string' && offer.uri.startsWith(`openid-credential-offer://?${param}`),
    `create offer: unexpected uri ${String(offer.uri).slice(0, 80)}`);
  if (transactionCode) {
    check(typeof offer.transactionCode === 'string' && offer.transactionCode.length > 0, 'create offer: no transactionCode (PIN) returned');
  } else {
    check(offer.transactionCode === undefined, 'create offer: a PIN was returned for an offer without one');
  }
  return offer;
}

// --- what the metadata says about a credential configuration ---------------------------

// Claim paths of a configuration, from whichever shape the metadata uses:
// OID4VCI 1.0 `credential_metadata.claims` (paths), draft 15 `claims` (paths),
// draft 13 `claims` (object, SD-JWT VC) or `credential_definition.credentialSubject`.
// For jwt_vc_json a leading "credentialSubject" is dropped: the admin API
// takes the subject's claims flat.
export function claimPaths(config) {
  let paths = [];
  const list = config?.credential_metadata?.claims ?? (Array.isArray(config?.claims) ? config.claims : undefined);
  if (Array.isArray(list)) {
    paths = list.map((c) => c?.path).filter((p) => Array.isArray(p) && p.length > 0);
  } else {
    const obj = (config?.claims && typeof config.claims === 'object' ? config.claims : undefined)
      ?? config?.credential_definition?.credentialSubject;
    if (obj && typeof obj === 'object') paths = Object.keys(obj).map((k) => [k]);
  }
  if (config?.format === 'jwt_vc_json') {
    paths = paths.map((p) => (p[0] === 'credentialSubject' ? p.slice(1) : p)).filter((p) => p.length > 0);
  }
  // Only object member paths: array indices and wildcards (null) are not
  // something the offer's claims object can be built from.
  return paths.filter((p) => p.every((s) => typeof s === 'string'));
}

const SAMPLE_VALUES = {
  given_name: 'Erika',
  family_name: 'Mustermann',
  name: 'Erika Mustermann',
  degree: 'BSc Computer Science',
  graduation_year: 2024,
  birthdate: '1990-01-01',
  email: 'erika@example.org',
};

// Claims for an offer: one value per declared path (nested objects for
// longer paths). Parents of longer paths become objects.
export function sampleClaims(config) {
  const out = {};
  const paths = claimPaths(config);
  const parents = new Set(paths.filter((p) => p.length > 1).map((p) => p.slice(0, -1).join('\u0000')));
  for (const path of paths) {
    if (parents.has(path.join('\u0000'))) continue;
    let node = out;
    for (const seg of path.slice(0, -1)) {
      if (!node[seg] || typeof node[seg] !== 'object') node[seg] = {};
      node = node[seg];
    }
    const last = path[path.length - 1];
    node[last] = SAMPLE_VALUES[last] ?? `interop ${path.join('.')}`;
  }
  return out;
}

export function randomNonce() {
  return b64u.encode(randomBytes(16));
}
