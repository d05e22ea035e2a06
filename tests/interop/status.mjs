#!/usr/bin/env node
// Interop test of notary's credential status (revocation and suspension):
// issue a credential of each format, change its status through the admin
// API, and check what relying parties see with libraries that know nothing
// of notary.
//
//   dc+sd-jwt:   IETF Token Status List, decided by @sd-jwt/sd-jwt-vc (which
//                fetches and checks the list itself) and by
//                @sd-jwt/jwt-status-list on a list jose has verified
//   jwt_vc_json: W3C Bitstring Status List, the §3.2 Validate Algorithm in
//                lib/status.mjs, the list credential verified by jose with
//                the key from notary's did:web (did-resolver + web-did-resolver)
//
//   NOTARY_URL=https://localhost:18443 NOTARY_ADMIN_KEY=notary_... \
//   NOTARY_CA=/path/to/tls/cert.pem node status.mjs
//
// Start notary with a short re-sign interval ([status] sign_interval_secs = 1):
// each change is polled for until the served list shows it, for
// INTEROP_STATUS_TIMEOUT_MS (default 10000). Optional: INTEROP_SHOW=1 prints
// the decoded status of one credential of each format before and after its
// revocation; INTEROP_FORMATS=dc+sd-jwt,jwt_vc_json narrows the formats;
// INTEROP_CLAIMS='{"<config id>":{...}}' replaces the claims put in the
// offers. See README.md.

import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';

const env = process.env;
const SUMMARY = 'interop-status';

// Node reads NODE_EXTRA_CA_CERTS only at start-up: run again with it set
// (web-did-resolver uses node-fetch, which sees no other CA setting).
if (env.NOTARY_CA && env.NODE_EXTRA_CA_CERTS !== env.NOTARY_CA) {
  if (!existsSync(env.NOTARY_CA)) {
    console.log(`FAIL setup: NOTARY_CA ${env.NOTARY_CA} does not exist`);
    console.log(`${SUMMARY}: 0 passed, 1 failed`);
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
  console.log(`${SUMMARY}: 0 passed, 1 failed`);
  process.exit(1);
}

const {
  CaseFailure, check, createOffer, fetchNonce, makeKey, makeProofJwt, PRE_AUTH_GRANT, resourcePost, sampleClaims,
} = await import('./lib/support.mjs');
const { decodeJwt } = await import('jose');
const { verifySdJwtVc, verifyJwtVcJson } = await import('./lib/verify.mjs');
const {
  bitstringEntries, MIN_ENTRIES, TSL_NAMES, tokenStatusByLibrary, tokenStatusDirect, tokenStatusReference, validateBitstringEntry,
} = await import('./lib/status.mjs');

const NOTARY_URL = env.NOTARY_URL.replace(/\/+$/, '');
const ADMIN_KEY = env.NOTARY_ADMIN_KEY.trim();
const POLL_TIMEOUT_MS = Number(env.INTEROP_STATUS_TIMEOUT_MS ?? 10_000);
const POLL_EVERY_MS = 200;
// After a refused change, how long to wait before checking that the served
// list still says revoked: longer than the re-sign interval.
const SETTLE_MS = Number(env.INTEROP_STATUS_SETTLE_MS ?? 2_500);
const CASE_TIMEOUT_MS = Math.max(45_000, POLL_TIMEOUT_MS + SETTLE_MS + 20_000);
const SHOW = Boolean(env.INTEROP_SHOW);

function pkgVersion(name) {
  const p = new URL(`./node_modules/${name}/package.json`, import.meta.url);
  return JSON.parse(readFileSync(p, 'utf8')).version;
}
const LIB = {
  sdJwtVc: `@sd-jwt/sd-jwt-vc@${pkgVersion('@sd-jwt/sd-jwt-vc')}`,
  statusList: `@sd-jwt/jwt-status-list@${pkgVersion('@sd-jwt/jwt-status-list')}`,
  jose: `jose@${pkgVersion('jose')}`,
  webDid: `web-did-resolver@${pkgVersion('web-did-resolver')}`,
};
const CHECKERS = {
  'dc+sd-jwt': `${LIB.sdJwtVc} + ${LIB.statusList}, ${LIB.jose}`,
  jwt_vc_json: `W3C Bitstring Status List §3.2 in lib/status.mjs, ${LIB.jose} + ${LIB.webDid}`,
};

const wanted = (list, all) => (list ? list.split(',').map((s) => s.trim()).filter(Boolean) : all);
const FORMATS = wanted(env.INTEROP_FORMATS, ['dc+sd-jwt', 'jwt_vc_json']);

// --- results ------------------------------------------------------------------------

let passed = 0;
let failed = 0;

function oneLine(e) {
  const m = e instanceof Error ? `${e instanceof CaseFailure ? '' : `${e.name}: `}${e.message}` : String(e);
  const cause = e?.cause ? ` (cause: ${e.cause.code ?? e.cause.message ?? e.cause})` : '';
  return (m + cause).replace(/\s+/g, ' ').slice(0, 600);
}

async function runCase(name, libs, fn) {
  let timer;
  try {
    const detail = await Promise.race([
      fn(),
      new Promise((_, reject) => { timer = setTimeout(() => reject(new CaseFailure(`timed out after ${CASE_TIMEOUT_MS} ms`)), CASE_TIMEOUT_MS); }),
    ]);
    console.log(`ok ${name} (${libs})${detail ? ` ${detail}` : ''}`);
    passed++;
    return true;
  } catch (e) {
    console.log(`FAIL ${name}: ${oneLine(e)}`);
    failed++;
    return false;
  } finally {
    clearTimeout(timer);
  }
}

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

// --- discovery ------------------------------------------------------------------------

async function getJson(path) {
  const r = await fetch(`${NOTARY_URL}${path}`, { headers: { accept: 'application/json' } });
  const text = await r.text();
  check(r.status === 200, `GET ${path}: HTTP ${r.status} ${text.slice(0, 200)}`);
  return JSON.parse(text);
}

let issuerMeta;
let asMeta;
const configs = {}; // format -> { id, config }

await runCase('metadata', 'fetch', async () => {
  issuerMeta = await getJson('/.well-known/openid-credential-issuer');
  asMeta = await getJson('/.well-known/oauth-authorization-server');
  check(issuerMeta.credential_issuer === NOTARY_URL, `credential_issuer ${issuerMeta.credential_issuer}, expected ${NOTARY_URL}`);
  check(typeof asMeta.token_endpoint === 'string', 'the AS metadata has no token_endpoint');
  const all = Object.entries(issuerMeta.credential_configurations_supported ?? {});
  for (const format of FORMATS) {
    const found = all.find(([, c]) => c.format === format);
    check(found, `no credential configuration of format ${format} (ids: ${all.map(([id]) => id).join(', ')})`);
    configs[format] = { id: found[0], config: found[1] };
  }
  return `[${Object.entries(configs).map(([f, { id }]) => `${f}=${id}`).join(', ')}]`;
});

// --- the wallet: plain fetch and jose (support.mjs), no wallet library ---------------------

function claimsFor(configId, config) {
  if (env.INTEROP_CLAIMS) {
    const all = JSON.parse(env.INTEROP_CLAIMS);
    if (all[configId]) return all[configId];
  }
  return sampleClaims(config);
}

function bindingFor(format, config) {
  const methods = config.cryptographic_binding_methods_supported ?? [];
  const preferred = format === 'jwt_vc_json' ? ['did:jwk', 'jwk'] : ['jwk', 'did:jwk'];
  const b = preferred.find((m) => methods.includes(m));
  check(b, `${format}: cryptographic_binding_methods_supported ${JSON.stringify(methods)} has neither jwk nor did:jwk`);
  return b;
}

// An offer by value without a PIN, redeemed at the token endpoint, one key
// proof, one credential, verified as credentials.mjs verifies it.
async function issueCredential(format) {
  const { id: configId, config } = configs[format];
  const claims = claimsFor(configId, config);
  const offer = await createOffer(NOTARY_URL, ADMIN_KEY, { configId, claims, transactionCode: false, byReference: false });
  check(typeof offer.id === 'string' && offer.id.length > 0, `the offer's 201 body has no id (${JSON.stringify(Object.keys(offer))})`);
  const offerJson = JSON.parse(new URLSearchParams(offer.uri.slice(offer.uri.indexOf('?') + 1)).get('credential_offer'));
  const code = offerJson?.grants?.[PRE_AUTH_GRANT]?.['pre-authorized_code'];
  check(typeof code === 'string', 'the offer has no pre-authorized_code');

  const tr = await fetch(asMeta.token_endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
    body: new URLSearchParams({ grant_type: PRE_AUTH_GRANT, 'pre-authorized_code': code }).toString(),
  });
  const token = await tr.json().catch(() => undefined);
  check(tr.status === 200 && typeof token?.access_token === 'string', `token endpoint: HTTP ${tr.status} ${JSON.stringify(token)?.slice(0, 200)}`);

  const key = await makeKey('ES256');
  const binding = bindingFor(format, config);
  const nonce = await fetchNonce(issuerMeta.nonce_endpoint);
  const proof = await makeProofJwt(key, { audience: issuerMeta.credential_issuer, nonce, binding });
  const r = await resourcePost(issuerMeta.credential_endpoint,
    { credential_configuration_id: configId, proofs: { jwt: [proof] } }, { accessToken: token.access_token });
  check(r.status === 200, `credential endpoint: HTTP ${r.status} ${r.text.slice(0, 300)}`);
  const credential = r.json?.credentials?.[0]?.credential;
  check(typeof credential === 'string', `credential endpoint: no credential in ${r.text.slice(0, 200)}`);

  // A relying party may check the status as soon as the holder has the
  // credential: every list it names should be served by then. What is not
  // is recorded (the served-at-issuance case reports it) and waited for, so
  // that the other cases still run.
  const payload = decodeJwt(credential.split('~')[0]);
  const received = Date.now();
  const uris = format === 'dc+sd-jwt'
    ? [payload.status?.status_list?.uri]
    : [...new Set((Array.isArray(payload.vc?.credentialStatus) ? payload.vc.credentialStatus : [payload.vc?.credentialStatus]).map((e) => e?.statusListCredential))];
  const late = [];
  for (const uri of uris.filter((u) => typeof u === 'string')) {
    const get = async () => {
      const g = await fetch(uri, { headers: { accept: format === 'dc+sd-jwt' ? 'application/statuslist+jwt' : 'application/vc+jwt' } });
      await g.arrayBuffer();
      return g.status;
    };
    const first = await get();
    if (first === 200) continue;
    for (let status = first; status !== 200; status = await get()) {
      check(Date.now() - received < POLL_TIMEOUT_MS, `GET ${uri}: HTTP ${status} ${POLL_TIMEOUT_MS} ms after issuance: the new credential names a status list that is not served`);
      await sleep(50);
    }
    late.push({ uri, first, servedAfterMs: Date.now() - received });
  }

  const algs = config.credential_signing_alg_values_supported ?? ['ES256'];
  const expect = {
    iss: NOTARY_URL, publicUrl: NOTARY_URL, vct: config.vct, types: config.credential_definition?.type ?? [], claims, algs,
  };
  try {
    // For dc+sd-jwt this already runs @sd-jwt/sd-jwt-vc's own status check
    // (with its default validator: a new credential must be VALID).
    if (format === 'dc+sd-jwt') await verifySdJwtVc(credential, key, expect);
    else await verifyJwtVcJson(credential, key, expect);
  } catch (e) {
    throw new CaseFailure(`the issued credential does not verify: ${e.message}`);
  }
  return { format, configId, offerId: offer.id, credential, algs, payload, late };
}

// --- the admin API ----------------------------------------------------------------------

// `key: null` sends no Authorization header.
async function admin(method, path, { key = ADMIN_KEY } = {}) {
  const headers = { accept: 'application/json' };
  if (key !== null) headers.authorization = `Bearer ${key}`;
  const res = await fetch(`${NOTARY_URL}${path}`, { method, headers });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, text, json };
}

// The status name in an admin answer: {"status": "revoked"} or
// {"status": {"status": "revoked", ...}}.
function statusName(body) {
  if (typeof body?.status === 'string') return body.status;
  if (typeof body?.status?.status === 'string') return body.status.status;
  return undefined;
}
const NAME_MATCHES = {
  valid: (n) => /^(valid|active|issued)$/i.test(n),
  suspended: (n) => /^suspended$/i.test(n),
  revoked: (n) => /^revoked$/i.test(n),
};

async function listedCredential(offerId, credentialId) {
  const r = await admin('GET', `/v1/credentials?offer=${encodeURIComponent(offerId)}`);
  check(r.status === 200, `GET /v1/credentials?offer=…: HTTP ${r.status} ${r.text.slice(0, 200)}`);
  const list = r.json?.credentials;
  check(Array.isArray(list), `GET /v1/credentials?offer=…: no credentials array in ${r.text.slice(0, 200)}`);
  if (credentialId === undefined) return list;
  const found = list.find((c) => c.id === credentialId);
  check(found, `GET /v1/credentials?offer=…: credential ${credentialId} is not listed`);
  return found;
}

async function changeStatus(subject, action, expected) {
  const r = await admin('POST', `/v1/credentials/${encodeURIComponent(subject.id)}/${action}`);
  check(r.status === 200, `POST /v1/credentials/{id}/${action}: HTTP ${r.status} ${r.text.slice(0, 200)}`);
  const name = statusName(r.json);
  check(name !== undefined && NAME_MATCHES[expected](name), `POST /v1/credentials/{id}/${action}: status ${JSON.stringify(name)} in ${r.text.slice(0, 200)}, expected ${expected}`);
  const listed = statusName(await listedCredential(subject.offerId, subject.id));
  check(listed !== undefined && NAME_MATCHES[expected](listed), `after ${action}, the admin listing says ${JSON.stringify(listed)}, expected ${expected}`);
  return name;
}

// --- what relying parties see -------------------------------------------------------------

// The decoded status of one credential, by every checker of its format.
async function observe(subject) {
  if (subject.format === 'dc+sd-jwt') {
    // The two checks fetch the list one after the other, so a list re-signed
    // in between can make them differ once; they must agree within a few tries.
    let library;
    let direct;
    for (let attempt = 1; ; attempt++) {
      library = await tokenStatusByLibrary(subject.credential, subject.payload.iss, subject.algs);
      direct = await tokenStatusDirect(subject.ref, subject.payload.iss, subject.algs);
      if (library === direct.value) break;
      check(attempt < 4,
        `the two Token Status List checks disagree, ${attempt} times running: ${LIB.sdJwtVc} got ${library}, ${LIB.statusList} after jose got ${direct.value}`);
      await sleep(POLL_EVERY_MS);
    }
    return { format: subject.format, value: direct.value, direct, library };
  }
  const lists = new Map();
  const byPurpose = {};
  for (const entry of subject.entries) {
    byPurpose[entry.statusPurpose] = await validateBitstringEntry(entry, subject.payload.iss, lists);
  }
  return { format: subject.format, byPurpose };
}

// Expected decoded states. W3C: a suspended credential has its suspension
// bit set and its revocation bit clear; a revoked one its revocation bit set.
const EXPECT = {
  valid: { 'dc+sd-jwt': 0, jwt_vc_json: { revocation: 0, suspension: 0 } },
  suspended: { 'dc+sd-jwt': 2, jwt_vc_json: { revocation: 0, suspension: 1 } },
  revoked: { 'dc+sd-jwt': 1, jwt_vc_json: { revocation: 1 } },
};

function describe(obs) {
  if (obs.format === 'dc+sd-jwt') return `status ${obs.value} (${TSL_NAMES[obs.value] ?? 'unregistered'})`;
  return Object.entries(obs.byPurpose).map(([p, r]) => `${p} bit ${r.status}`).join(', ');
}

function matches(obs, state) {
  const want = EXPECT[state][obs.format];
  if (obs.format === 'dc+sd-jwt') return obs.value === want;
  return Object.entries(want).every(([purpose, bit]) => obs.byPurpose[purpose]?.status === bit);
}

// When a list shows the expected value at the mirrored position within its
// byte, the list is written in the other bit order.
function bitOrderHint(obs, state) {
  if (obs.format === 'dc+sd-jwt') {
    return obs.direct.msbFirst === EXPECT[state]['dc+sd-jwt']
      ? '; packed from the most significant bit down the list would match: its bit order is reversed (Token Status List §4.1: index 0 is in the least significant bits of byte 0)'
      : '';
  }
  const want = EXPECT[state].jwt_vc_json;
  const mirrored = Object.entries(want).every(([p, bit]) => obs.byPurpose[p]?.lsbFirst === bit);
  return mirrored ? '; read least-significant bit first the list would match: its bit order is reversed (W3C §2.2: index 0 is the left-most bit)' : '';
}

// Polls until every checker sees `state`, or fails after POLL_TIMEOUT_MS.
async function until(subject, state, since = Date.now()) {
  let obs;
  for (;;) {
    obs = await observe(subject);
    if (matches(obs, state)) return { obs, afterMs: Date.now() - since };
    if (Date.now() - since > POLL_TIMEOUT_MS) {
      throw new CaseFailure(`after ${((Date.now() - since) / 1000).toFixed(1)} s the served list still shows ${describe(obs)}, expected ${state}${bitOrderHint(obs, state)}`);
    }
    await sleep(POLL_EVERY_MS);
  }
}

function show(subject, obs, when) {
  if (!SHOW || !subject.show) return;
  const out = [`--- ${subject.format} credential ${subject.id}: status ${when}`];
  if (obs.format === 'dc+sd-jwt') {
    const d = obs.direct;
    out.push(`status reference: status.status_list = ${JSON.stringify(subject.ref)}`);
    out.push(`list: ${d.uri} (application/statuslist+jwt, ${d.bytes} bytes; Cache-Control: ${d.cacheControl})`);
    out.push(`list token: kid ${d.kid} (key from ${d.keysUrl}), iat ${new Date(d.iat * 1000).toISOString()}, exp ${new Date(d.exp * 1000).toISOString()}, ttl ${d.ttl} s; bits ${d.bits}, ${d.entries} entries`);
    out.push(`index: ${d.idx}`);
    out.push(`decoded value: ${d.value} (${TSL_NAMES[d.value] ?? 'unregistered'})`);
    out.push(`decided by: ${LIB.sdJwtVc} SDJwtVcInstance.verify (its own fetch, the list's signature checked through jose, statusValidator received ${obs.library}); `
      + `and ${LIB.statusList} getListFromStatusListJWT(...).getStatus(${d.idx}) = ${d.value} on the list ${LIB.jose} jwtVerify accepted (typ, sub, iat, exp, kid)`);
  } else {
    for (const [purpose, r] of Object.entries(obs.byPurpose)) {
      const l = r.list;
      out.push(`${purpose}: list ${r.uri} (application/vc+jwt; Cache-Control: ${l.cacheControl}; validFrom ${l.validFrom}, validUntil ${l.validUntil})`);
      out.push(`  signed by ${l.header.kid} (key from ${l.documentUrl}); list purpose ${JSON.stringify(l.subject.statusPurpose)}, ${r.bits} bits`);
      out.push(`  index: ${r.index}; decoded bit: ${r.status} (${r.valid ? 'not set' : `${purpose} set`})`);
    }
    out.push(`decided by: the W3C §3.2 Validate Algorithm in lib/status.mjs (multibase 'u' + base64url, node:zlib gunzip, bit 0 = most significant bit of byte 0), `
      + `on list credentials ${LIB.jose} jwtVerify accepted with keys resolved by ${LIB.webDid}`);
  }
  console.log(out.join('\n').replace(/^/gm, '  '));
}

// --- the cases ---------------------------------------------------------------------------

// Reads the status reference from an issued credential, and finds it in the
// admin API by its offer.
async function prepare(issued) {
  const subject = { ...issued };
  if (issued.format === 'dc+sd-jwt') {
    subject.ref = tokenStatusReference(issued.payload, NOTARY_URL);
  } else {
    const entries = bitstringEntries(issued.payload.vc);
    const purposes = entries.map((e) => e.statusPurpose).sort();
    check(purposes.join(',') === 'revocation,suspension', `credentialStatus purposes ${JSON.stringify(purposes)}, expected one revocation and one suspension entry`);
    for (const e of entries) {
      check(e.statusListCredential.startsWith(`${NOTARY_URL}/status/`), `statusListCredential ${e.statusListCredential} is not under ${NOTARY_URL}/status/`);
      check(e.id === undefined || e.id === `${e.statusListCredential}#${e.statusListIndex}`,
        `credentialStatus id ${e.id}, expected ${e.statusListCredential}#${e.statusListIndex}`);
    }
    subject.entries = entries;
  }
  const list = await listedCredential(issued.offerId);
  check(list.length === 1, `GET /v1/credentials?offer=…: ${list.length} credentials for an offer of one`);
  const [c] = list;
  check(typeof c.id === 'string' && c.id.length > 0, `the listed credential has no id: ${JSON.stringify(c).slice(0, 200)}`);
  check(c.format === issued.format, `the listed credential's format ${JSON.stringify(c.format)}, expected ${issued.format}`);
  check(c.configuration === issued.configId, `the listed credential's configuration ${JSON.stringify(c.configuration)}, expected ${issued.configId}`);
  const name = statusName(c);
  check(name !== undefined && NAME_MATCHES.valid(name), `the listed credential's status ${JSON.stringify(c.status)}, expected valid`);
  subject.id = c.id;
  return subject;
}

function where(subject) {
  if (subject.format === 'dc+sd-jwt') return `idx ${subject.ref.idx} of ${subject.ref.uri}`;
  return subject.entries.map((e) => `${e.statusPurpose} ${e.statusListIndex} of ${e.statusListCredential}`).join(', ');
}

async function formatCases(format) {
  const libs = CHECKERS[format];
  let subject;
  let bystander;

  // Two credentials: the subject, whose status changes, and a bystander,
  // which must stay valid throughout (the change hits one index only).
  const issued = await runCase(`${format} issue`, `fetch + ${LIB.jose}; ${libs}`, async () => {
    subject = await prepare(await issueCredential(format));
    subject.show = true;
    bystander = await prepare(await issueCredential(format));
    return `[credential ${subject.id}: ${where(subject)}; bystander ${bystander.id}]`;
  });
  const steps = ['served-at-issuance', 'valid', 'admin-auth', 'suspend', 'reinstate', 'revoke', 'revoked-is-final'];
  if (!issued) {
    for (const s of steps) {
      console.log(`FAIL ${format} ${s}: not run, no credential was issued`);
      failed++;
    }
    return;
  }
  const bystanderValid = async () => {
    const obs = await observe(bystander);
    check(matches(obs, 'valid'), `the bystander credential (${where(bystander)}) shows ${describe(obs)}, expected valid`);
  };

  await runCase(`${format} served-at-issuance`, 'fetch', async () => {
    const late = [...subject.late, ...bystander.late];
    check(late.length === 0, late.map((l) => `GET ${l.uri} right after issuance: HTTP ${l.first}, served ${(l.servedAfterMs / 1000).toFixed(2)} s later`).join('; ')
      + ': the new credential named a status list that was not served yet');
    return '[every list a new credential names answered 200 at once]';
  });

  await runCase(`${format} valid`, libs, async () => {
    const obs = await observe(subject);
    check(matches(obs, 'valid'), `a new credential shows ${describe(obs)}, expected valid`);
    show(subject, obs, 'before revocation (as issued)');
    await bystanderValid();
    return `[${describe(obs)}]`;
  });

  await runCase(`${format} admin-auth`, 'fetch', async () => {
    for (const [what, key] of [['no Authorization', null], ['a wrong key', `${ADMIN_KEY}x`]]) {
      const r = await admin('POST', `/v1/credentials/${encodeURIComponent(subject.id)}/revoke`, { key });
      check(r.status === 401, `revoke with ${what}: HTTP ${r.status}, expected 401`);
    }
    const listed = statusName(await listedCredential(subject.offerId, subject.id));
    check(NAME_MATCHES.valid(listed), `after refused revocations the admin listing says ${JSON.stringify(listed)}`);
    return '[revoke without a key, and with a wrong key: 401; still valid]';
  });

  const transition = async (action, state) => {
    const t0 = Date.now();
    const name = await changeStatus(subject, action, state);
    const { obs, afterMs } = await until(subject, state, t0);
    await bystanderValid();
    return { obs, note: `[admin: ${name}; served list: ${describe(obs)}, ${(afterMs / 1000).toFixed(1)} s after the request; bystander valid]` };
  };

  await runCase(`${format} suspend`, libs, async () => (await transition('suspend', 'suspended')).note);
  await runCase(`${format} reinstate`, libs, async () => (await transition('reinstate', 'valid')).note);
  await runCase(`${format} revoke`, libs, async () => {
    const { obs, note } = await transition('revoke', 'revoked');
    show(subject, obs, 'after revocation');
    return note;
  });

  await runCase(`${format} revoked-is-final`, libs, async () => {
    const refusals = [];
    for (const action of ['reinstate', 'suspend']) {
      const r = await admin('POST', `/v1/credentials/${encodeURIComponent(subject.id)}/${action}`);
      check(r.status >= 400 && r.status < 500, `${action} of a revoked credential: HTTP ${r.status} ${r.text.slice(0, 200)}, expected a refusal (4xx)`);
      refusals.push(`${action} ${r.status}`);
    }
    const listed = statusName(await listedCredential(subject.offerId, subject.id));
    check(NAME_MATCHES.revoked(listed), `after the refused changes the admin listing says ${JSON.stringify(listed)}, expected revoked`);
    await sleep(SETTLE_MS);
    const obs = await observe(subject);
    check(matches(obs, 'revoked'), `${SETTLE_MS} ms after the refused changes the list shows ${describe(obs)}, expected revoked`);
    await bystanderValid();
    return `[refused: ${refusals.join(', ')}; still ${describe(obs)} after ${(SETTLE_MS / 1000).toFixed(1)} s]`;
  });
}

if (Object.keys(configs).length === FORMATS.length) {
  for (const format of FORMATS) await formatCases(format);
} else {
  console.log('FAIL formats: not run, the metadata case failed');
  failed++;
}

console.log(`# lists of at least ${MIN_ENTRIES} entries required; changes polled every ${POLL_EVERY_MS} ms for up to ${POLL_TIMEOUT_MS} ms`);
console.log(`${SUMMARY}: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
