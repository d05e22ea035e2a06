// The relying party's side: verify what notary issued with libraries that
// know nothing of notary or of the wallet libraries.
//
// - dc+sd-jwt: @sd-jwt/sd-jwt-vc (SDJwtVcInstance) with @sd-jwt/crypto-nodejs,
//   the issuer key taken from the SD-JWT VC issuer metadata
//   (/.well-known/jwt-vc-issuer, found from `iss`), plus a presentation with a
//   key-binding JWT made by the holder key and verified against `cnf.jwk`.
//   The disclosures are also checked against `_sd` here, by hand.
// - jwt_vc_json: jose, with the key from the issuer's did:web document,
//   resolved by did-resolver + web-did-resolver.

import { SDJwtVcInstance } from '@sd-jwt/sd-jwt-vc';
import { ES256, ES384, ES512, digest, generateSalt } from '@sd-jwt/crypto-nodejs';
import { Resolver } from 'did-resolver';
import { getResolver as webDidResolver } from 'web-did-resolver';
import * as jose from 'jose';

import {
  b64u, CaseFailure, check, didWebToUrl, hasPrivateMembers, jwkFromDidJwk, jwtVcIssuerMetadataUrl,
  randomNonce, sameJson, sha256, thumbprintOf,
} from './support.mjs';

const SD_JWT_ALGS = { ES256, ES384, ES512 };

function decodeCompactJws(jws, what) {
  const parts = jws.split('.');
  check(parts.length === 3 && parts.every((p) => /^[A-Za-z0-9_-]*$/.test(p)), `${what} is not a compact JWS`);
  let header;
  let payload;
  try {
    header = b64u.decodeJson(parts[0]);
    payload = b64u.decodeJson(parts[1]);
  } catch {
    throw new CaseFailure(`${what}: header or payload is not base64url JSON`);
  }
  return { header, payload, parts };
}

// A verifier callback in @sd-jwt's shape, (signingInput, signature) -> bool,
// that picks the key by the `kid` of the header inside the signing input.
// Used for the credential and for a status list token, if the credential
// names one.
function keySetVerifier(keys, allowedAlgs, seen) {
  return async (signingInput, signature) => {
    const header = b64u.decodeJson(signingInput.split('.')[0]);
    seen.push(header);
    if (!allowedAlgs.includes(header.alg)) throw new CaseFailure(`alg ${header.alg} not among ${allowedAlgs.join(', ')}`);
    const jwk = keys.find((k) => k.kid === header.kid);
    if (!jwk) throw new CaseFailure(`no key with kid ${header.kid} in the issuer's key set (kids: ${keys.map((k) => k.kid).join(', ')})`);
    const impl = SD_JWT_ALGS[header.alg];
    if (impl) return (await impl.getVerifier(jwk))(signingInput, signature);
    // EdDSA and others: @sd-jwt/crypto-nodejs has only ECDSA, jose does the rest.
    try {
      await jose.compactVerify(`${signingInput}.${signature}`, await jose.importJWK(jwk, header.alg), { algorithms: [header.alg] });
      return true;
    } catch {
      return false;
    }
  };
}

async function getJson(url, what) {
  const res = await fetch(url, { headers: { accept: 'application/json' } });
  const text = await res.text();
  check(res.status === 200, `${what}: GET ${url}: HTTP ${res.status} ${text.slice(0, 200)}`);
  try {
    return JSON.parse(text);
  } catch {
    throw new CaseFailure(`${what}: ${url} is not JSON`);
  }
}

// The SD-JWT VC issuer metadata, as a relying party finds it from `iss`.
export async function issuerKeysForSdJwtVc(iss) {
  const url = jwtVcIssuerMetadataUrl(iss);
  const meta = await getJson(url, 'SD-JWT VC issuer metadata');
  check(meta.issuer === iss, `jwt-vc-issuer metadata issuer ${JSON.stringify(meta.issuer)} != iss ${iss}`);
  check(!(meta.jwks && meta.jwks_uri), 'jwt-vc-issuer metadata has both jwks and jwks_uri');
  const jwks = meta.jwks ?? (meta.jwks_uri ? await getJson(meta.jwks_uri, 'jwt-vc-issuer jwks_uri') : undefined);
  check(Array.isArray(jwks?.keys) && jwks.keys.length > 0, 'jwt-vc-issuer metadata has no keys');
  for (const k of jwks.keys) check(!hasPrivateMembers(k), `jwt-vc-issuer key ${k.kid} has private members`);
  return { url, keys: jwks.keys };
}

// Every disclosure must hash (with _sd_alg) to a digest that the issuer
// signed, in some `_sd` array or array element `{"...": digest}`, and no
// digest may be used twice. Returns the decoded disclosures.
export function checkDisclosures(issuerPayload, disclosureStrings) {
  check(issuerPayload._sd_alg === undefined || issuerPayload._sd_alg === 'sha-256',
    `_sd_alg ${JSON.stringify(issuerPayload._sd_alg)}: only sha-256 is checked here`);
  const digests = new Set();
  const walk = (node) => {
    if (Array.isArray(node)) {
      for (const el of node) {
        if (el && typeof el === 'object' && !Array.isArray(el) && Object.keys(el).length === 1 && typeof el['...'] === 'string') digests.add(el['...']);
        else walk(el);
      }
    } else if (node && typeof node === 'object') {
      for (const [k, v] of Object.entries(node)) {
        if (k === '_sd') {
          check(Array.isArray(v) && v.every((d) => typeof d === 'string'), '_sd is not an array of strings');
          v.forEach((d) => digests.add(d));
        } else {
          walk(v);
        }
      }
    }
  };
  walk(issuerPayload);
  const used = new Set();
  const decoded = [];
  for (const d of disclosureStrings) {
    const hash = b64u.encode(sha256(Buffer.from(d, 'ascii')));
    check(digests.has(hash), `disclosure ${d.slice(0, 16)}... hashes to ${hash}, which the issuer did not sign`);
    check(!used.has(hash), 'a disclosure appears twice');
    used.add(hash);
    let arr;
    try {
      arr = b64u.decodeJson(d);
    } catch {
      throw new CaseFailure('a disclosure is not base64url JSON');
    }
    check(Array.isArray(arr) && (arr.length === 3 || arr.length === 2) && typeof arr[0] === 'string',
      'a disclosure is not [salt, name, value] or [salt, value]');
    if (arr.length === 3) {
      check(typeof arr[1] === 'string' && !['_sd', '...', '_sd_alg'].includes(arr[1]), `disclosure names a reserved claim ${arr[1]}`);
    }
    check(arr[0].length >= 16, 'a disclosure salt is shorter than 16 characters (128 bits recommended)');
    decoded.push(arr);
  }
  return decoded;
}

// Verifies one dc+sd-jwt credential. `holderKey` is the key the wallet
// proved; `expect` = {iss, vct, claims, algs}.
export async function verifySdJwtVc(credential, holderKey, expect) {
  check(typeof credential === 'string', `dc+sd-jwt credential is ${typeof credential}, not a string`);
  check(credential.endsWith('~'), 'dc+sd-jwt credential does not end with ~ (it must carry no key-binding JWT when issued)');
  const segments = credential.split('~');
  const issuerJwt = segments[0];
  const disclosures = segments.slice(1, -1);
  const { header, payload } = decodeCompactJws(issuerJwt, 'issuer-signed JWT');

  check(header.typ === 'dc+sd-jwt', `header typ ${JSON.stringify(header.typ)}, expected dc+sd-jwt`);
  check(expect.algs.includes(header.alg), `header alg ${header.alg} not in credential_signing_alg_values_supported ${JSON.stringify(expect.algs)}`);
  check(typeof header.kid === 'string' && header.kid.length > 0, 'header has no kid');
  check(payload.iss === expect.iss, `iss ${JSON.stringify(payload.iss)}, expected ${expect.iss}`);
  check(payload.vct === expect.vct, `vct ${JSON.stringify(payload.vct)}, expected ${JSON.stringify(expect.vct)}`);
  check(Number.isInteger(payload.iat), 'iat is not an integer');
  if (payload.exp !== undefined) check(Number.isInteger(payload.exp) && payload.exp > payload.iat, 'exp is not an integer after iat');
  // iss, vct, cnf and iat are plain claims of the issuer-signed JWT (checked
  // above on the raw payload, before any disclosure is applied).
  check(Array.isArray(payload._sd) && payload._sd.length > 0, 'no _sd digests: nothing is selectively disclosable');
  check(payload._sd_alg === 'sha-256', `_sd_alg ${JSON.stringify(payload._sd_alg)}, expected sha-256`);
  check(disclosures.length > 0, 'the credential carries no disclosures');
  const cnfJwk = payload.cnf?.jwk;
  check(cnfJwk && typeof cnfJwk === 'object', 'no cnf.jwk');
  check(!hasPrivateMembers(cnfJwk), 'cnf.jwk holds private key members');
  check(await thumbprintOf(cnfJwk) === holderKey.thumbprint, 'cnf.jwk is not the key the wallet proved');

  const decodedDisclosures = checkDisclosures(payload, disclosures);

  // The library: signature by the key from jwt-vc-issuer, disclosures
  // resolved, status (when the credential has one) fetched and checked.
  const issuerKeys = await issuerKeysForSdJwtVc(payload.iss);
  const seenHeaders = [];
  const verifier = keySetVerifier(issuerKeys.keys, expect.algs, seenHeaders);
  const holderAlg = holderKey.alg;
  const sdjwt = new SDJwtVcInstance({
    hasher: digest,
    hashAlg: 'sha-256',
    saltGenerator: generateSalt,
    verifier,
    statusVerifier: verifier,
    kbSigner: await SD_JWT_ALGS[holderAlg].getSigner(holderKey.privateJwk),
    kbSignAlg: holderAlg,
    // The key-binding JWT must verify with the key the credential binds.
    kbVerifier: async (signingInput, signature, issuerPayload) => {
      const jwk = issuerPayload?.cnf?.jwk;
      if (!jwk) throw new CaseFailure('key binding: credential has no cnf.jwk');
      return (await SD_JWT_ALGS[holderAlg].getVerifier(jwk))(signingInput, signature);
    },
  });
  let verified;
  try {
    verified = await sdjwt.verify(credential);
  } catch (e) {
    throw new CaseFailure(`@sd-jwt/sd-jwt-vc verify: ${e.message}`);
  }
  const claims = verified.payload;
  for (const [name, value] of Object.entries(expect.claims)) {
    check(sameJson(claims[name], value), `claim ${name}: credential has ${JSON.stringify(claims[name])}, offer had ${JSON.stringify(value)}`);
  }
  const disclosedNames = decodedDisclosures.filter((d) => d.length === 3).map((d) => d[1]);

  // The holder presents it: every disclosure, plus a KB-JWT signed by the
  // holder key; the verifier checks the KB-JWT against cnf.jwk.
  const kbNonce = randomNonce();
  const aud = 'https://verifier.interop.example';
  let presentation;
  try {
    const frame = Object.fromEntries(disclosedNames.map((n) => [n, true]));
    presentation = await sdjwt.present(credential, frame, { kb: { payload: { iat: Math.floor(Date.now() / 1000), aud, nonce: kbNonce } } });
    const kbResult = await sdjwt.verify(presentation, { keyBindingNonce: kbNonce });
    check(kbResult.kb?.payload?.aud === aud, 'key-binding JWT aud did not survive');
  } catch (e) {
    if (e instanceof CaseFailure) throw e;
    throw new CaseFailure(`presentation with key binding: ${e.message}`);
  }

  return {
    header,
    issuerPayload: payload,
    claims,
    disclosures: decodedDisclosures,
    issuerMetadataUrl: issuerKeys.url,
    statusChecked: Boolean(payload.status?.status_list),
    verifiedHeaders: seenHeaders,
  };
}

// --- jwt_vc_json -------------------------------------------------------------------

const didResolver = new Resolver(webDidResolver());

function resolveRelative(ref, did) {
  return typeof ref === 'string' && ref.startsWith('#') ? `${did}${ref}` : ref;
}

// Resolves the did:web of a DID URL (the credential's kid) and returns the
// verification method's public JWK, checking it may assert credentials.
export async function keyFromDidWeb(didUrl) {
  const did = didUrl.split('#')[0];
  const result = await didResolver.resolve(did);
  check(!result.didResolutionMetadata?.error,
    `did-resolver: ${did}: ${result.didResolutionMetadata?.error} ${result.didResolutionMetadata?.message ?? ''}`);
  const doc = result.didDocument;
  check(doc?.id === did, `DID document id ${JSON.stringify(doc?.id)} != ${did}`);
  const methods = (doc.verificationMethod ?? []).map((m) => ({ ...m, id: resolveRelative(m.id, did) }));
  const method = methods.find((m) => m.id === didUrl);
  check(method, `no verificationMethod ${didUrl} in the DID document (has ${methods.map((m) => m.id).join(', ')})`);
  check(resolveRelative(method.controller, did) === did, `verificationMethod controller ${method.controller} != ${did}`);
  check(method.publicKeyJwk && typeof method.publicKeyJwk === 'object', `verificationMethod ${didUrl} has no publicKeyJwk`);
  check(!hasPrivateMembers(method.publicKeyJwk), 'the DID document publishes private key members');
  const assertion = (doc.assertionMethod ?? []).map((a) => (typeof a === 'string' ? resolveRelative(a, did) : resolveRelative(a.id, did)));
  check(assertion.includes(didUrl), `${didUrl} is not in assertionMethod`);
  return { jwk: method.publicKeyJwk, document: doc, documentUrl: didWebToUrl(did) };
}

export async function verifyJwtVcJson(credential, holderKey, expect) {
  check(typeof credential === 'string', `jwt_vc_json credential is ${typeof credential}, not a string`);
  const { header, payload } = decodeCompactJws(credential, 'jwt_vc_json credential');
  check(expect.algs.includes(header.alg), `header alg ${header.alg} not in credential_signing_alg_values_supported ${JSON.stringify(expect.algs)}`);
  check(typeof header.kid === 'string' && header.kid.startsWith('did:web:') && header.kid.includes('#'),
    `header kid ${JSON.stringify(header.kid)} is not a did:web DID URL`);
  const did = header.kid.split('#')[0];
  check(payload.iss === did, `iss ${JSON.stringify(payload.iss)} != the kid's DID ${did}`);
  check(didWebToUrl(did) === `${new URL(expect.publicUrl).origin}/.well-known/did.json`,
    `${did} resolves to ${didWebToUrl(did)}, not to notary's ${new URL(expect.publicUrl).origin}/.well-known/did.json`);

  const { jwk, documentUrl } = await keyFromDidWeb(header.kid);
  let verified;
  try {
    verified = await jose.jwtVerify(credential, await jose.importJWK(jwk, header.alg), {
      algorithms: [header.alg],
      issuer: did,
      subject: holderKey.did,
    });
  } catch (e) {
    throw new CaseFailure(`jose jwtVerify: ${e.code ?? ''} ${e.message}`);
  }
  const p = verified.payload;
  check(jwkFromDidJwk(p.sub) && await thumbprintOf(jwkFromDidJwk(p.sub)) === holderKey.thumbprint, 'sub is not the did:jwk of the key the wallet proved');
  const vc = p.vc;
  check(vc && typeof vc === 'object', 'no vc claim');
  const ctx = Array.isArray(vc['@context']) ? vc['@context'] : [vc['@context']];
  check(ctx[0] === 'https://www.w3.org/2018/credentials/v1', `vc @context[0] ${JSON.stringify(ctx[0])}, expected the VCDM 1.1 context`);
  const types = Array.isArray(vc.type) ? vc.type : [vc.type];
  for (const t of expect.types) check(types.includes(t), `vc.type ${JSON.stringify(types)} lacks ${t}`);
  const issuerId = typeof vc.issuer === 'string' ? vc.issuer : vc.issuer?.id;
  check(issuerId === did, `vc.issuer ${JSON.stringify(vc.issuer)} != ${did}`);
  check(vc.credentialSubject && typeof vc.credentialSubject === 'object', 'no vc.credentialSubject');
  check(vc.credentialSubject.id === p.sub, `credentialSubject.id ${JSON.stringify(vc.credentialSubject.id)} != sub`);
  check(typeof vc.issuanceDate === 'string' || Number.isInteger(p.nbf), 'neither vc.issuanceDate nor nbf');
  if (typeof vc.issuanceDate === 'string') check(!Number.isNaN(Date.parse(vc.issuanceDate)), 'vc.issuanceDate is not a date');
  for (const [name, value] of Object.entries(expect.claims)) {
    check(sameJson(vc.credentialSubject[name], value),
      `credentialSubject.${name}: credential has ${JSON.stringify(vc.credentialSubject[name])}, offer had ${JSON.stringify(value)}`);
  }
  return { header, payload: p, didDocumentUrl: documentUrl };
}
