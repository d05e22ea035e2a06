#!/usr/bin/env node
// Interop test of notary's credential issuance: two independent, published
// OpenID4VCI wallet libraries obtain credentials from notary, and independent,
// published libraries verify them.
//
//   wallets:   @sphereon/oid4vci-client, @openid4vc/openid4vci
//   verifiers: @sd-jwt/sd-jwt-vc (+ @sd-jwt/crypto-nodejs) for dc+sd-jwt,
//              jose + did-resolver/web-did-resolver for jwt_vc_json
//
//   NOTARY_URL=https://localhost:18443 NOTARY_ADMIN_KEY=notary_... \
//   NOTARY_CA=/path/to/tls/cert.pem node credentials.mjs
//
// Optional: INTEROP_SHOW=1 prints one decoded credential of each format;
// INTEROP_TRACE=1 prints every HTTP exchange of the wallet libraries (with
// codes and PINs: test servers only); INTEROP_WALLETS=sphereon,owf and
// INTEROP_FORMATS=dc+sd-jwt,jwt_vc_json narrow the matrix; INTEROP_CLAIMS='{"<config id>":{...}}'
// replaces the claims put in the offers. See README.md.

import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';

const env = process.env;
const SUMMARY = 'interop-credentials';

// Node reads NODE_EXTRA_CA_CERTS only at start-up: run again with it set.
// This comes before the imports of the libraries below, which are loaded
// dynamically so the first process does not load them for nothing.
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
  CaseFailure, check, createOffer, fetchNonce, jwkFromDidJwk, makeKey, makeProofJwt, resourcePost, sampleClaims, thumbprintOf,
} = await import('./lib/support.mjs');
const { decodeJwt } = await import('jose');
const { verifySdJwtVc, verifyJwtVcJson } = await import('./lib/verify.mjs');
const sphereon = await import('./lib/wallet-sphereon.mjs');
const owf = await import('./lib/wallet-owf.mjs');

const NOTARY_URL = env.NOTARY_URL.replace(/\/+$/, '');
const ADMIN_KEY = env.NOTARY_ADMIN_KEY.trim();
const CASE_TIMEOUT_MS = 30_000;
const SHOW = Boolean(env.INTEROP_SHOW);

function pkgVersion(name) {
  const p = new URL(`./node_modules/${name}/package.json`, import.meta.url);
  return JSON.parse(readFileSync(p, 'utf8')).version;
}
const VERIFIERS = {
  'dc+sd-jwt': `@sd-jwt/sd-jwt-vc@${pkgVersion('@sd-jwt/sd-jwt-vc')}`,
  jwt_vc_json: `jose@${pkgVersion('jose')} + web-did-resolver@${pkgVersion('web-did-resolver')}`,
};

const ALL_WALLETS = [sphereon, owf];
const wanted = (list, all) => (list ? list.split(',').map((s) => s.trim()).filter(Boolean) : all);
const WALLETS = ALL_WALLETS.filter((w) => wanted(env.INTEROP_WALLETS, ALL_WALLETS.map((x) => x.id)).includes(w.id));
const FORMATS = wanted(env.INTEROP_FORMATS, ['dc+sd-jwt', 'jwt_vc_json']);

// --- results ------------------------------------------------------------------------

let passed = 0;
let failed = 0;

function oneLine(e) {
  let m = e instanceof Error ? `${e instanceof CaseFailure ? '' : `${e.name}: `}${e.message}` : String(e);
  if (e?.errorResponse) m += ` ${JSON.stringify(e.errorResponse)}`;
  const cause = e?.cause ? ` (cause: ${e.cause.code ?? e.cause.message ?? e.cause})` : '';
  return (m + cause).replace(/\s+/g, ' ').slice(0, 500);
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
  } catch (e) {
    console.log(`FAIL ${name}: ${oneLine(e)}`);
    failed++;
  } finally {
    clearTimeout(timer);
  }
}

// --- discovery (the script's own view, to know what to expect) ---------------------------

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
  check(Array.isArray(issuerMeta.authorization_servers) && issuerMeta.authorization_servers.includes(asMeta.issuer),
    `authorization_servers ${JSON.stringify(issuerMeta.authorization_servers)} lacks the AS issuer ${asMeta.issuer}`);
  for (const [field, path] of [['credential_endpoint', '/oid4vci/credential'], ['nonce_endpoint', '/oid4vci/nonce'], ['notification_endpoint', '/oid4vci/notification']]) {
    check(issuerMeta[field] === `${NOTARY_URL}${path}`, `${field} ${JSON.stringify(issuerMeta[field])}, expected ${NOTARY_URL}${path}`);
  }
  const all = Object.entries(issuerMeta.credential_configurations_supported ?? {});
  for (const format of ['dc+sd-jwt', 'jwt_vc_json']) {
    const found = all.find(([, c]) => c.format === format);
    if (found) configs[format] = { id: found[0], config: found[1] };
  }
  const missing = ['dc+sd-jwt', 'jwt_vc_json'].filter((f) => !configs[f]);
  check(missing.length === 0, `no credential configuration of format ${missing.join(', ')} (ids: ${all.map(([id]) => id).join(', ')})`);
  for (const { id, config } of Object.values(configs)) {
    check(config.proof_types_supported?.jwt?.proof_signing_alg_values_supported?.includes('ES256'),
      `${id}: proof_types_supported.jwt.proof_signing_alg_values_supported lacks ES256`);
    check(Array.isArray(config.cryptographic_binding_methods_supported) && config.cryptographic_binding_methods_supported.length > 0,
      `${id}: no cryptographic_binding_methods_supported`);
  }
  check(typeof configs['dc+sd-jwt'].config.vct === 'string', `${configs['dc+sd-jwt'].id}: no vct`);
  check(Array.isArray(configs.jwt_vc_json.config.credential_definition?.type), `${configs.jwt_vc_json.id}: no credential_definition.type`);
  // The nonce endpoint, as a 1.0 wallet uses it.
  await fetchNonce(issuerMeta.nonce_endpoint);
  return `[${Object.entries(configs).map(([f, { id }]) => `${f}=${id}`).join(', ')}; batch_size=${issuerMeta.batch_credential_issuance?.batch_size}]`;
});

// --- one case -------------------------------------------------------------------------

const shown = new Set();

function claimsFor(configId, config) {
  if (env.INTEROP_CLAIMS) {
    const all = JSON.parse(env.INTEROP_CLAIMS);
    if (all[configId]) return all[configId];
  }
  return sampleClaims(config);
}

// jwt_vc_json binds a DID (did:jwk as the proof's kid); dc+sd-jwt a JWK
// (header jwk). Each only when the configuration lists it.
function bindingFor(format, config) {
  const methods = config.cryptographic_binding_methods_supported ?? [];
  const preferred = format === 'jwt_vc_json' ? ['did:jwk', 'jwk'] : ['jwk', 'did:jwk'];
  const b = preferred.find((m) => methods.includes(m));
  check(b, `${format}: cryptographic_binding_methods_supported ${JSON.stringify(methods)} has neither jwk nor did:jwk`);
  return b;
}

function showCredential(format, credential, result) {
  if (!SHOW || shown.has(format)) return;
  shown.add(format);
  const out = [`--- ${format} credential (${credential.length} characters)`];
  if (format === 'dc+sd-jwt') {
    out.push(`header: ${JSON.stringify(result.header, null, 2)}`);
    out.push(`issuer-signed payload: ${JSON.stringify(result.issuerPayload, null, 2)}`);
    out.push(`disclosures (${result.disclosures.length}): ${result.disclosures.map((d) => JSON.stringify(d)).join('\n  ')}`);
    out.push(`claims after disclosure: ${JSON.stringify(result.claims, null, 2)}`);
    out.push(`issuer key from: ${result.issuerMetadataUrl}; status list checked: ${result.statusChecked}`);
  } else {
    out.push(`header: ${JSON.stringify(result.header, null, 2)}`);
    out.push(`payload: ${JSON.stringify(result.payload, null, 2)}`);
    out.push(`issuer key from: ${result.didDocumentUrl}`);
  }
  console.log(out.join('\n').replace(/^/gm, '  '));
}

// The thumbprint of the holder key a credential names (not yet verified:
// only to pair it with the key that should verify it).
async function boundThumbprint(format, credential) {
  try {
    const payload = decodeJwt(credential.split('~')[0]);
    const jwk = format === 'dc+sd-jwt' ? payload.cnf?.jwk : jwkFromDidJwk(payload.sub);
    return await thumbprintOf(jwk);
  } catch (e) {
    throw new CaseFailure(`cannot read the holder key from the credential: ${e.message}`);
  }
}

async function credentialCase(wallet, format, { transactionCode, byReference, dpop, batch, rerequest }) {
  const { id: configId, config } = configs[format];
  const binding = bindingFor(format, config);
  const claims = claimsFor(configId, config);
  const nKeys = batch ? 2 : 1;
  if (batch) {
    const size = issuerMeta.batch_credential_issuance?.batch_size;
    check(Number.isInteger(size) && size >= 2, `batch_credential_issuance.batch_size ${JSON.stringify(size)}: a batch of 2 is not offered`);
  }
  if (dpop) {
    check(asMeta.dpop_signing_alg_values_supported?.includes('ES256'),
      `dpop_signing_alg_values_supported ${JSON.stringify(asMeta.dpop_signing_alg_values_supported)} lacks ES256`);
  }
  const offer = await createOffer(NOTARY_URL, ADMIN_KEY, { configId, claims, transactionCode, byReference });
  const keys = await Promise.all(Array.from({ length: nKeys }, () => makeKey('ES256')));
  const dpopKey = dpop ? await makeKey('ES256') : undefined;

  const got = await wallet.obtain({
    offer, configId, config, format, binding, keys, dpopKey, issuerMeta, asMeta, publicUrl: NOTARY_URL,
  });
  check(got.credentials.length === nKeys, `${got.credentials.length} credentials for ${nKeys} proven keys`);
  check(typeof got.notificationId === 'string' && got.notificationId.length > 0, `no notification_id (${JSON.stringify(got.notificationId)})`);

  // Every credential verifies, and each proven key is bound by exactly one.
  const expect = {
    iss: NOTARY_URL,
    publicUrl: NOTARY_URL,
    vct: config.vct,
    types: config.credential_definition?.type ?? [],
    claims,
    algs: config.credential_signing_alg_values_supported ?? ['ES256'],
  };
  const unbound = [...keys];
  for (const [i, credential] of got.credentials.entries()) {
    const what = `credential ${i + 1} of ${got.credentials.length}`;
    check(typeof credential === 'string', `${what} is ${typeof credential}, not a string`);
    const t = await boundThumbprint(format, credential);
    const key = unbound.find((k) => k.thumbprint === t);
    check(key, `${what} binds a key the wallet did not prove, or one already bound by another credential`);
    unbound.splice(unbound.indexOf(key), 1);
    let result;
    try {
      result = format === 'dc+sd-jwt'
        ? await verifySdJwtVc(credential, key, expect)
        : await verifyJwtVcJson(credential, key, expect);
    } catch (e) {
      throw new CaseFailure(`${what}: ${e.message}`);
    }
    showCredential(format, credential, result);
  }

  // Each configuration of an offer is issued once: the same token cannot get more.
  let rerequestNote = '';
  if (rerequest) {
    const nonce = await fetchNonce(issuerMeta.nonce_endpoint);
    const again = await makeKey('ES256');
    const proof = await makeProofJwt(again, { audience: NOTARY_URL, nonce, binding });
    const r = await resourcePost(issuerMeta.credential_endpoint,
      { credential_configuration_id: configId, proofs: { jwt: [proof] } }, { accessToken: got.accessToken, dpopKey });
    check(r.status >= 400 && r.status < 500, `a second credential request with the same token: HTTP ${r.status}, expected a refusal`);
    rerequestNote = `; second request refused ${r.status} ${r.json?.error ?? ''}`.trimEnd();
  }

  // RFC 9449 §7.1: a DPoP-bound token presented as a bearer token is refused.
  if (dpop) {
    const r = await resourcePost(issuerMeta.notification_endpoint,
      { notification_id: got.notificationId, event: 'credential_accepted' }, { accessToken: got.accessToken });
    check(r.status === 401, `the DPoP-bound token sent as Bearer (no proof) to the notification endpoint: HTTP ${r.status}, expected 401`);
  }

  const n = await got.notify('credential_accepted');
  check(n.status === 204, `notification (${n.by}): HTTP ${n.status} ${String(n.body ?? '').slice(0, 200)}, expected 204`);

  const notes = [...got.notes, `notification 204 by ${n.by}`].join('; ');
  return `[${binding} binding; ${notes}${rerequestNote}]`;
}

const CASES = [
  ['a-by-value-pin', { transactionCode: true, byReference: false, rerequest: true }],
  ['b-by-reference-no-pin', { transactionCode: false, byReference: true }],
  ['c-dpop-by-value-pin', { transactionCode: true, byReference: false, dpop: true }],
  ['d-batch-two-keys-by-reference-pin', { transactionCode: true, byReference: true, batch: true }],
];

for (const wallet of WALLETS) {
  const walletLib = `${wallet.pkg}@${pkgVersion(wallet.pkg)}`;
  for (const format of FORMATS) {
    for (const [caseName, opts] of CASES) {
      const name = `${wallet.id} ${format} ${caseName}`;
      if (opts.dpop && !wallet.capabilities.dpop) continue;
      const libs = `${walletLib}; ${VERIFIERS[format]}`;
      if (!configs[format]) {
        console.log(`FAIL ${name}: no ${format} configuration in the metadata (see the metadata case)`);
        failed++;
        continue;
      }
      await runCase(name, libs, () => credentialCase(wallet, format, opts));
    }
  }
}
if (WALLETS.includes(owf) && owf.metadataVersionSeen) {
  console.log(`# @openid4vc/openid4vci read the issuer metadata as OID4VCI ${owf.metadataVersionSeen}`);
}

console.log(`${SUMMARY}: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
