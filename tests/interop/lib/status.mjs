// A relying party checking the status of what notary issued, with libraries
// that know nothing of notary.
//
// dc+sd-jwt: the IETF Token Status List (draft-ietf-oauth-status-list), two ways:
//   - by the library: @sd-jwt/sd-jwt-vc's SDJwtVcInstance.verify fetches the
//     list named by status.status_list.uri itself, has its signature checked
//     (statusVerifier: jose, with the key from /.well-known/jwt-vc-issuer),
//     decodes it with @sd-jwt/jwt-status-list and hands the value at idx to
//     our statusValidator, which records it;
//   - directly: the script fetches the list, jose verifies it (typ, sub = uri,
//     iat, exp, signature by the jwt-vc-issuer key), checks the HTTP headers,
//     and @sd-jwt/jwt-status-list (getListFromStatusListJWT, getStatus)
//     decodes it.
// jwt_vc_json: the W3C Bitstring Status List v1.0 (Recommendation, 2025-05-15),
//   §3.2 Validate Algorithm written out here: the list credential is verified
//   by jose with the key from the issuer's did:web document (did-resolver +
//   web-did-resolver), the bitstring expanded with node:zlib (§3.4), and the
//   bit read with index 0 as the most significant bit of byte 0 (§2.2).

import { gunzipSync, inflateSync } from 'node:zlib';

import { getListFromStatusListJWT } from '@sd-jwt/jwt-status-list';
import { SDJwtVcInstance } from '@sd-jwt/sd-jwt-vc';
import { digest } from '@sd-jwt/crypto-nodejs';
import * as jose from 'jose';

import { CaseFailure, check } from './support.mjs';
import { issuerKeysForSdJwtVc, keyFromDidWeb } from './verify.mjs';

// Both specifications: at least 131,072 entries (herd privacy).
export const MIN_ENTRIES = 131_072;
// Token Status List status types (draft §7.1).
export const TSL_NAMES = { 0: 'VALID', 1: 'INVALID', 2: 'SUSPENDED' };
// The Origin a browser verifier would send; the answer must allow it (CORS).
export const VERIFIER_ORIGIN = 'https://verifier.interop.example';
// Clock skew tolerated between the script and the server, in seconds.
const SKEW = 5;

const nowS = () => Math.floor(Date.now() / 1000);

function causeOf(e) {
  return e?.cause ? ` (cause: ${e.cause.code ?? e.cause.message ?? e.cause})` : '';
}

// --- HTTP --------------------------------------------------------------------------------

// GET a status list as a browser verifier would (with an Origin), and check
// the answer: 200, the media type, a max-age, and CORS. Returns the body and
// the headers that matter.
export async function fetchStatusList(uri, mediaType) {
  let res;
  try {
    res = await fetch(uri, { headers: { accept: mediaType, origin: VERIFIER_ORIGIN } });
  } catch (e) {
    throw new CaseFailure(`GET ${uri}: ${e.message}${causeOf(e)}`);
  }
  const body = (await res.text()).trim();
  check(res.status === 200, `GET ${uri}: HTTP ${res.status} ${body.slice(0, 200)}`);
  const contentType = res.headers.get('content-type') ?? '';
  check(contentType.split(';')[0].trim().toLowerCase() === mediaType,
    `GET ${uri}: Content-Type ${JSON.stringify(contentType)}, expected ${mediaType}`);
  const cacheControl = res.headers.get('cache-control') ?? '';
  const maxAge = /(?:^|[,\s])max-age=(\d+)/i.exec(cacheControl);
  check(maxAge && !/no-store/i.test(cacheControl),
    `GET ${uri}: Cache-Control ${JSON.stringify(cacheControl)}, expected a max-age a cache can honour`);
  const allowOrigin = res.headers.get('access-control-allow-origin');
  check(allowOrigin === '*' || allowOrigin === VERIFIER_ORIGIN,
    `GET ${uri}: Access-Control-Allow-Origin ${JSON.stringify(allowOrigin)}: a browser verifier at ${VERIFIER_ORIGIN} cannot read the list`);
  return { body, contentType, cacheControl, maxAge: Number(maxAge[1]) };
}

// A cache must not keep a list past the time the list itself stops being valid.
function checkMaxAge(what, maxAge, validUntilS) {
  if (validUntilS === undefined) return;
  check(maxAge <= validUntilS - nowS() + SKEW,
    `${what}: Cache-Control max-age=${maxAge} outlives the list, which is valid for ${validUntilS - nowS()} s more`);
}

function decodeHeader(jwt, what) {
  try {
    return jose.decodeProtectedHeader(jwt);
  } catch (e) {
    throw new CaseFailure(`${what} is not a JWS: ${e.message}`);
  }
}

// --- dc+sd-jwt: Token Status List ------------------------------------------------------------

// The status reference of an SD-JWT VC's issuer-signed payload (draft §6.2).
export function tokenStatusReference(payload, publicUrl) {
  const ref = payload?.status?.status_list;
  check(ref && typeof ref === 'object', `no status.status_list in the credential (status: ${JSON.stringify(payload?.status)})`);
  check(Number.isSafeInteger(ref.idx) && ref.idx >= 0, `status.status_list.idx ${JSON.stringify(ref.idx)} is not a non-negative integer`);
  check(typeof ref.uri === 'string' && ref.uri.startsWith(`${publicUrl}/status/`),
    `status.status_list.uri ${JSON.stringify(ref.uri)} is not under ${publicUrl}/status/`);
  return { idx: ref.idx, uri: ref.uri };
}

// (signingInput, signature) -> bool, in @sd-jwt's shape, by jose, with the
// key of the header's kid from the issuer's key set.
function joseVerifier(keys, algs) {
  return async (signingInput, signature) => {
    const [h] = signingInput.split('.');
    const header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'));
    if (!algs.includes(header.alg)) throw new CaseFailure(`alg ${header.alg} not among ${algs.join(', ')}`);
    const jwk = keys.find((k) => k.kid === header.kid);
    if (!jwk) throw new CaseFailure(`no key with kid ${header.kid} at jwt-vc-issuer (kids: ${keys.map((k) => k.kid).join(', ')})`);
    try {
      await jose.compactVerify(`${signingInput}.${signature}`, await jose.importJWK(jwk, header.alg), { algorithms: [header.alg] });
      return true;
    } catch {
      return false;
    }
  };
}

// The library decides: @sd-jwt/sd-jwt-vc verifies the credential, fetches
// the list (its own fetcher: Accept and Content-Type application/statuslist+jwt),
// has the list's signature checked, decodes it (@sd-jwt/jwt-status-list) and
// passes the status at idx to statusValidator.
export async function tokenStatusByLibrary(credential, iss, algs) {
  const { keys } = await issuerKeysForSdJwtVc(iss);
  const verifier = joseVerifier(keys, algs);
  let decided;
  const sdjwt = new SDJwtVcInstance({
    hasher: digest,
    hashAlg: 'sha-256',
    verifier,
    statusVerifier: verifier,
    statusValidator: async (status) => {
      decided = status;
    },
  });
  try {
    await sdjwt.verify(credential);
  } catch (e) {
    throw new CaseFailure(`@sd-jwt/sd-jwt-vc verify: ${e.message}`);
  }
  check(decided !== undefined, '@sd-jwt/sd-jwt-vc checked no status (the credential has no status.status_list)');
  return decided;
}

// The value at idx read with the entries packed from the most significant
// bit down, the opposite of the draft (§4.1: index 0 in the least significant
// bits of byte 0; the W3C list is the other way round). Only to say so when
// a list is written that way.
export function tokenStatusMsbFirst(lst, bits, idx) {
  try {
    const bytes = inflateSync(Buffer.from(lst, 'base64url'));
    const perByte = 8 / bits;
    const pos = idx % perByte;
    return (bytes[Math.floor(idx / perByte)] >> (8 - bits - pos * bits)) & ((1 << bits) - 1);
  } catch {
    return undefined;
  }
}

// The script fetches and verifies the Status List Token with jose (draft
// §5.1, §8.3), then @sd-jwt/jwt-status-list decodes it.
export async function tokenStatusDirect(ref, iss, algs) {
  const got = await fetchStatusList(ref.uri, 'application/statuslist+jwt');
  const jwt = got.body;
  const header = decodeHeader(jwt, `the Status List Token at ${ref.uri}`);
  check(header.typ === 'statuslist+jwt', `Status List Token header typ ${JSON.stringify(header.typ)}, expected statuslist+jwt`);
  check(algs.includes(header.alg), `Status List Token alg ${header.alg} not among ${algs.join(', ')}`);
  const { keys, url: keysUrl } = await issuerKeysForSdJwtVc(iss);
  const jwk = keys.find((k) => k.kid === header.kid);
  check(jwk, `Status List Token kid ${JSON.stringify(header.kid)} is not a key at ${keysUrl} (kids: ${keys.map((k) => k.kid).join(', ')})`);
  let payload;
  try {
    ({ payload } = await jose.jwtVerify(jwt, await jose.importJWK(jwk, header.alg), {
      algorithms: [header.alg],
      typ: 'statuslist+jwt',
      subject: ref.uri,
      requiredClaims: ['sub', 'iat', 'exp'],
      clockTolerance: SKEW,
    }));
  } catch (e) {
    throw new CaseFailure(`jose jwtVerify of the Status List Token at ${ref.uri}: ${e.code ?? ''} ${e.message}`);
  }
  check(Number.isInteger(payload.iat) && payload.iat <= nowS() + SKEW, `Status List Token iat ${payload.iat} is not a past time`);
  check(typeof payload.ttl === 'number' && payload.ttl > 0, `Status List Token ttl ${JSON.stringify(payload.ttl)} is not a positive number`);
  const sl = payload.status_list;
  check(sl && typeof sl === 'object' && typeof sl.lst === 'string', 'Status List Token has no status_list.lst');
  check(sl.bits === 2, `status_list.bits ${JSON.stringify(sl.bits)}, expected 2 (valid, invalid, suspended)`);
  let list;
  try {
    list = getListFromStatusListJWT(jwt);
  } catch (e) {
    throw new CaseFailure(`@sd-jwt/jwt-status-list getListFromStatusListJWT: ${e.message}`);
  }
  const size = list.statusList.length;
  check(size >= MIN_ENTRIES, `the Status List holds ${size} entries, fewer than ${MIN_ENTRIES}`);
  check(ref.idx < size, `idx ${ref.idx} is out of the list's ${size} entries`);
  checkMaxAge(`GET ${ref.uri}`, got.maxAge, payload.exp);
  return {
    value: list.getStatus(ref.idx),
    msbFirst: tokenStatusMsbFirst(sl.lst, sl.bits, ref.idx),
    uri: ref.uri,
    idx: ref.idx,
    entries: size,
    bits: sl.bits,
    kid: header.kid,
    keysUrl,
    iat: payload.iat,
    exp: payload.exp,
    ttl: payload.ttl,
    cacheControl: got.cacheControl,
    bytes: jwt.length,
  };
}

// --- jwt_vc_json: W3C Bitstring Status List ----------------------------------------------------

export const VCDM2_CONTEXT = 'https://www.w3.org/ns/credentials/v2';

// The BitstringStatusListEntry objects of a credential's vc.credentialStatus
// (§2.1): one object or an array of them.
export function bitstringEntries(vc) {
  const cs = vc?.credentialStatus;
  check(cs !== undefined, 'the credential has no vc.credentialStatus');
  const entries = Array.isArray(cs) ? cs : [cs];
  for (const e of entries) {
    check(e && typeof e === 'object', 'a credentialStatus entry is not an object');
    check(e.type === 'BitstringStatusListEntry', `credentialStatus type ${JSON.stringify(e.type)}, expected BitstringStatusListEntry`);
    check(typeof e.statusPurpose === 'string' && e.statusPurpose.length > 0, `credentialStatus statusPurpose ${JSON.stringify(e.statusPurpose)} is not a string`);
    check(typeof e.statusListIndex === 'string' && /^(0|[1-9][0-9]*)$/.test(e.statusListIndex),
      `statusListIndex ${JSON.stringify(e.statusListIndex)} is not a non-negative integer written as a base-10 string`);
    check(typeof e.statusListCredential === 'string' && URL.canParse(e.statusListCredential),
      `statusListCredential ${JSON.stringify(e.statusListCredential)} is not a URL`);
    if (e.id !== undefined) {
      check(typeof e.id === 'string' && URL.canParse(e.id), `credentialStatus id ${JSON.stringify(e.id)} is not a URL`);
      check(e.id !== e.statusListCredential, 'credentialStatus id is the URL of the status list itself (§2.1: MUST NOT)');
    }
    if (e.statusSize !== undefined) check(Number.isInteger(e.statusSize) && e.statusSize > 0, `statusSize ${JSON.stringify(e.statusSize)} is not a positive integer`);
  }
  return entries;
}

// §3.4 Bitstring Expansion: multibase-decode (the 'u' prefix: base64url, no
// padding), then GZIP-decompress (RFC 1952: a gzip member, not a bare zlib stream).
export function expandBitstring(encodedList) {
  check(typeof encodedList === 'string' && encodedList.startsWith('u'),
    `encodedList does not start with the multibase prefix 'u' (base64url): ${JSON.stringify(String(encodedList).slice(0, 12))}`);
  const b64 = encodedList.slice(1);
  check(/^[A-Za-z0-9_-]*$/.test(b64), 'encodedList is not base64url without padding after its multibase prefix');
  try {
    return gunzipSync(Buffer.from(b64, 'base64url'));
  } catch (e) {
    throw new CaseFailure(`encodedList does not gunzip (RFC 1952): ${e.message}`);
  }
}

// The status of `size` bits at entry `index`, the bitstring's first bit being
// the most significant bit of byte 0 (§2.2, §7.1).
export function readBits(bytes, index, size = 1) {
  let value = 0;
  for (let i = 0; i < size; i++) {
    const p = index * size + i;
    value = (value << 1) | ((bytes[p >> 3] >> (7 - (p & 7))) & 1);
  }
  return value;
}

// The same entry read least-significant bit first: only to say so when a
// list is written the other way round.
export function readBitsLsbFirst(bytes, index, size = 1) {
  let value = 0;
  for (let i = 0; i < size; i++) {
    const p = index * size + i;
    value = (value << 1) | ((bytes[p >> 3] >> (p & 7)) & 1);
  }
  return value;
}

function dateSeconds(value, what) {
  check(typeof value === 'string' && !Number.isNaN(Date.parse(value)), `${what} ${JSON.stringify(value)} is not a date-time`);
  return Math.floor(Date.parse(value) / 1000);
}

// Dereferences and verifies one status list credential (§3.2 step 4): the
// JWT's kid names a did:web verification method, jose verifies with its key.
export async function fetchBitstringListCredential(uri, issuerDid) {
  const got = await fetchStatusList(uri, 'application/vc+jwt');
  const jwt = got.body;
  const header = decodeHeader(jwt, `the status list credential at ${uri}`);
  check(typeof header.kid === 'string' && header.kid.startsWith('did:web:') && header.kid.includes('#'),
    `status list credential kid ${JSON.stringify(header.kid)} is not a did:web DID URL`);
  const did = header.kid.split('#')[0];
  // Who may sign a credential's status is the verifier's policy (§3.2 note);
  // here it is the credential's own issuer.
  check(did === issuerDid, `the status list credential is signed by ${did}, not by the credential's issuer ${issuerDid}`);
  const { jwk, documentUrl } = await keyFromDidWeb(header.kid);
  let payload;
  try {
    ({ payload } = await jose.jwtVerify(jwt, await jose.importJWK(jwk, header.alg), {
      algorithms: [header.alg],
      issuer: did,
      clockTolerance: SKEW,
    }));
  } catch (e) {
    throw new CaseFailure(`jose jwtVerify of the status list credential at ${uri} (STATUS_VERIFICATION_ERROR): ${e.code ?? ''} ${e.message}`);
  }
  // The credential: in a `vc` claim (as in VC-JWT), or the payload itself (VC-JOSE-COSE).
  const vc = payload.vc ?? (payload['@context'] ? payload : undefined);
  check(vc && typeof vc === 'object', 'the status list credential JWT carries no credential (no vc claim)');
  const ctx = Array.isArray(vc['@context']) ? vc['@context'] : [vc['@context']];
  check(ctx[0] === VCDM2_CONTEXT, `status list credential @context[0] ${JSON.stringify(ctx[0])}, expected ${VCDM2_CONTEXT}`);
  const types = Array.isArray(vc.type) ? vc.type : [vc.type];
  check(types.includes('VerifiableCredential') && types.includes('BitstringStatusListCredential'),
    `status list credential type ${JSON.stringify(vc.type)} lacks VerifiableCredential or BitstringStatusListCredential`);
  if (vc.issuer !== undefined) {
    const issuerId = typeof vc.issuer === 'string' ? vc.issuer : vc.issuer?.id;
    check(issuerId === did, `status list credential issuer ${JSON.stringify(vc.issuer)} != ${did}`);
  }
  if (vc.id !== undefined) check(vc.id === uri, `status list credential id ${JSON.stringify(vc.id)} != statusListCredential ${uri}`);
  // VCDM 2.0 §4.9 validity period.
  const validFrom = vc.validFrom === undefined ? undefined : dateSeconds(vc.validFrom, 'validFrom');
  const validUntil = vc.validUntil === undefined ? undefined : dateSeconds(vc.validUntil, 'validUntil');
  if (validFrom !== undefined) check(validFrom <= nowS() + SKEW, `the status list credential is valid only from ${vc.validFrom}`);
  if (validUntil !== undefined) check(validUntil >= nowS() - SKEW, `the status list credential expired at ${vc.validUntil}`);
  const subject = vc.credentialSubject;
  check(subject && typeof subject === 'object' && !Array.isArray(subject), 'status list credential has no credentialSubject object');
  check(subject.type === 'BitstringStatusList', `credentialSubject.type ${JSON.stringify(subject.type)}, expected BitstringStatusList`);
  const purposes = Array.isArray(subject.statusPurpose) ? subject.statusPurpose : [subject.statusPurpose];
  check(purposes.length > 0 && purposes.every((p) => typeof p === 'string'), `credentialSubject.statusPurpose ${JSON.stringify(subject.statusPurpose)} is not one or more strings`);
  checkMaxAge(`GET ${uri}`, got.maxAge, validUntil ?? (Number.isInteger(payload.exp) ? payload.exp : undefined));
  return {
    uri, jwt, header, payload, vc, subject, purposes, did, documentUrl,
    cacheControl: got.cacheControl, validFrom: vc.validFrom, validUntil: vc.validUntil,
  };
}

// §3.2 Validate Algorithm for one BitstringStatusListEntry. `lists` caches the
// list credentials of one check (two entries can name one list).
export async function validateBitstringEntry(entry, issuerDid, lists = new Map()) {
  const minimumNumberOfEntries = MIN_ENTRIES; // step 2
  const statusPurpose = entry.statusPurpose; // step 3
  const statusSize = entry.statusSize ?? 1;
  // Step 4: dereference, verify every proof (here: the JWS).
  if (!lists.has(entry.statusListCredential)) {
    lists.set(entry.statusListCredential, await fetchBitstringListCredential(entry.statusListCredential, issuerDid));
  }
  const list = lists.get(entry.statusListCredential);
  // Step 5: the purpose must be one the list has.
  check(list.purposes.includes(statusPurpose),
    `STATUS_VERIFICATION_ERROR: the entry's statusPurpose ${statusPurpose} is not among the list's ${JSON.stringify(list.subject.statusPurpose)}`);
  // Steps 6–8.
  const credentialIndex = Number(entry.statusListIndex);
  check(Number.isSafeInteger(credentialIndex), `statusListIndex ${entry.statusListIndex} is too large for this check`);
  const bitstring = expandBitstring(list.subject.encodedList);
  const bits = bitstring.length * 8;
  // Step 9.
  check(bits / statusSize >= minimumNumberOfEntries,
    `STATUS_LIST_LENGTH_ERROR: the bitstring holds ${bits / statusSize} entries, fewer than ${minimumNumberOfEntries}`);
  // Step 10.
  check((credentialIndex + 1) * statusSize <= bits, `RANGE_ERROR: index ${credentialIndex} is outside the ${bits}-bit list`);
  const status = readBits(bitstring, credentialIndex, statusSize);
  // Steps 11–13.
  return {
    status,
    purpose: statusPurpose,
    valid: status === 0,
    index: credentialIndex,
    uri: entry.statusListCredential,
    bits,
    lsbFirst: readBitsLsbFirst(bitstring, credentialIndex, statusSize),
    list,
  };
}
