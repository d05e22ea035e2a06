// Checks of the harness itself, without notary: `node --test selftest.mjs`.
//
// 1. The pure pieces: did:web and did:jwk mapping, the jwt-vc-issuer URL,
//    claims from metadata, the script's own proofs and DPoP proofs, the
//    disclosure check.
// 2. What each wallet library puts in a key proof, made offline.
// 3. credentials.mjs against the stand-in server (mock/notary-mock.mjs):
//    clean it passes every case; with each MOCK_FAULT the cases that should
//    notice it fail, and say why.
// 4. The status list decoders (lib/status.mjs) on lists built here, and
//    status.mjs against the stand-in, clean and with each status fault.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { deflateSync, gzipSync } from 'node:zlib';

import * as jose from 'jose';
import { ProofOfPossessionBuilder } from '@sphereon/oid4vci-client';

import {
  b64u, claimPaths, didJwkFromJwk, didWebForOrigin, didWebToUrl, jwkFromDidJwk, jwtVcIssuerMetadataUrl,
  makeDPoPProof, makeKey, makeProofJwt, sampleClaims,
} from './lib/support.mjs';
import { checkDisclosures } from './lib/verify.mjs';
import { StatusList } from '@sd-jwt/jwt-status-list';
import {
  expandBitstring, readBits, readBitsLsbFirst, tokenStatusMsbFirst,
} from './lib/status.mjs';

describe('did:web', () => {
  it('maps a host with a port to /.well-known/did.json', () => {
    assert.equal(didWebToUrl('did:web:localhost%3A18543'), 'https://localhost:18543/.well-known/did.json');
    assert.equal(didWebToUrl('did:web:localhost%3A18543#abc'), 'https://localhost:18543/.well-known/did.json');
    assert.equal(didWebToUrl('did:web:w3c-ccg.github.io'), 'https://w3c-ccg.github.io/.well-known/did.json');
  });
  it('maps path segments to a path ending in did.json', () => {
    assert.equal(didWebToUrl('did:web:w3c-ccg.github.io:user:alice'), 'https://w3c-ccg.github.io/user/alice/did.json');
    assert.equal(didWebToUrl('did:web:example.com%3A3000:user:alice'), 'https://example.com:3000/user/alice/did.json');
  });
  it('refuses what is not a did:web', () => {
    assert.throws(() => didWebToUrl('did:jwk:abc'));
    assert.throws(() => didWebToUrl('did:web:'));
    assert.throws(() => didWebToUrl('did:web:a::b'));
  });
  it('is the inverse of the origin mapping', () => {
    assert.equal(didWebForOrigin('https://localhost:18543'), 'did:web:localhost%3A18543');
    assert.equal(didWebForOrigin('https://issuer.example/'), 'did:web:issuer.example');
    for (const u of ['https://localhost:18543', 'https://issuer.example']) {
      assert.equal(didWebToUrl(didWebForOrigin(u)), `${u}/.well-known/did.json`);
    }
  });
});

describe('did:jwk', () => {
  it('round-trips a public key and drops decorations', async () => {
    const k = await makeKey();
    const did = didJwkFromJwk({ ...k.publicJwk, kid: 'x', use: 'sig' });
    assert.equal(did, k.did);
    const back = jwkFromDidJwk(`${did}#0`);
    assert.deepEqual(back, { crv: 'P-256', kty: 'EC', x: k.publicJwk.x, y: k.publicJwk.y });
    assert.equal(await jose.calculateJwkThumbprint(back), k.thumbprint);
  });
  it('refuses a private key', async () => {
    const k = await makeKey();
    assert.throws(() => didJwkFromJwk(k.privateJwk));
  });
});

describe('SD-JWT VC issuer metadata URL', () => {
  it('puts /.well-known/jwt-vc-issuer between host and path', () => {
    assert.equal(jwtVcIssuerMetadataUrl('https://localhost:18543'), 'https://localhost:18543/.well-known/jwt-vc-issuer');
    assert.equal(jwtVcIssuerMetadataUrl('https://example.com/tenant/1'), 'https://example.com/.well-known/jwt-vc-issuer/tenant/1');
  });
});

describe('claims from metadata', () => {
  it('reads OID4VCI 1.0 credential_metadata.claims', () => {
    const c = { format: 'dc+sd-jwt', credential_metadata: { claims: [{ path: ['given_name'] }, { path: ['address', 'locality'] }, { path: ['nationalities', null] }] } };
    assert.deepEqual(claimPaths(c), [['given_name'], ['address', 'locality']]);
    assert.deepEqual(sampleClaims(c), { given_name: 'Erika', address: { locality: 'interop address.locality' } });
  });
  it('reads draft 13 shapes and drops credentialSubject for jwt_vc_json', () => {
    assert.deepEqual(claimPaths({ format: 'dc+sd-jwt', claims: { degree: {} } }), [['degree']]);
    assert.deepEqual(claimPaths({ format: 'jwt_vc_json', credential_definition: { credentialSubject: { degree: {} } } }), [['degree']]);
    assert.deepEqual(claimPaths({ format: 'jwt_vc_json', credential_metadata: { claims: [{ path: ['credentialSubject', 'given_name'] }] } }), [['given_name']]);
  });
});

describe("the script's own proofs", () => {
  it('key proof with a header jwk', async () => {
    const k = await makeKey();
    const jwt = await makeProofJwt(k, { audience: 'https://iss.example', nonce: 'n1', binding: 'jwk' });
    const { protectedHeader, payload } = await jose.jwtVerify(jwt, await jose.importJWK(k.publicJwk, 'ES256'), { audience: 'https://iss.example' });
    assert.equal(protectedHeader.typ, 'openid4vci-proof+jwt');
    assert.deepEqual(protectedHeader.jwk, k.publicJwk);
    assert.equal(protectedHeader.kid, undefined);
    assert.equal(payload.nonce, 'n1');
    assert.equal(payload.iss, undefined, 'no iss in an anonymous pre-authorized flow');
    assert.ok(Math.abs(payload.iat - Date.now() / 1000) < 5);
  });
  it('key proof with a did:jwk kid', async () => {
    const k = await makeKey();
    const jwt = await makeProofJwt(k, { audience: 'https://iss.example', nonce: 'n1', binding: 'did:jwk' });
    const h = jose.decodeProtectedHeader(jwt);
    assert.equal(h.kid, `${k.did}#0`);
    assert.equal(h.jwk, undefined);
    await jose.jwtVerify(jwt, await jose.importJWK(jwkFromDidJwk(h.kid), 'ES256'));
  });
  it('DPoP proof with ath', async () => {
    const k = await makeKey();
    const jwt = await makeDPoPProof(k, { htu: 'https://iss.example/oid4vci/credential', accessToken: 'abc', nonce: 'dn' });
    const { protectedHeader, payload } = await jose.jwtVerify(jwt, await jose.importJWK(k.publicJwk, 'ES256'), { typ: 'dpop+jwt' });
    assert.deepEqual(protectedHeader.jwk, k.publicJwk);
    assert.equal(payload.htm, 'POST');
    assert.equal(payload.ath, createHash('sha256').update('abc').digest('base64url'));
    assert.equal(payload.nonce, 'dn');
    assert.ok(payload.jti);
  });
});

describe('disclosure check', () => {
  const d = (arr) => b64u.encode(Buffer.from(JSON.stringify(arr)));
  const h = (s) => createHash('sha256').update(s).digest('base64url');
  it('accepts signed disclosures, object and array', () => {
    const a = d(['0123456789abcdef0123', 'given_name', 'Erika']);
    const b = d(['0123456789abcdef0124', 'FR']);
    const decoded = checkDisclosures({ _sd: [h(a)], _sd_alg: 'sha-256', nationalities: [{ '...': h(b) }] }, [a, b]);
    assert.deepEqual(decoded.map((x) => x.length), [3, 2]);
  });
  it('refuses an unsigned or repeated disclosure', () => {
    const a = d(['0123456789abcdef0123', 'given_name', 'Erika']);
    const b = d(['0123456789abcdef0125', 'family_name', 'X']);
    assert.throws(() => checkDisclosures({ _sd: [h(a)] }, [a, b]), /did not sign/);
    assert.throws(() => checkDisclosures({ _sd: [h(a)] }, [a, a]), /twice/);
  });
});

describe('what the wallet libraries put in a key proof', () => {
  it('@sphereon/oid4vci-client: typ, jwk or kid, aud, nonce; iat 60 s in the past, exp 10 min ahead', async () => {
    const k = await makeKey();
    let signed;
    const proof = await ProofOfPossessionBuilder.fromAccessTokenResponse({
      accessTokenResponse: { c_nonce: 'n1' },
      callbacks: { signCallback: async ({ header, payload }) => { signed = { header, payload }; return new jose.SignJWT(payload).setProtectedHeader(header).sign(k.privateKey); } },
    }).withIssuer('https://iss.example').withAlg('ES256').withJWK(k.publicJwk).build();
    assert.equal(proof.proof_type, 'jwt');
    assert.equal(signed.header.typ, 'openid4vci-proof+jwt');
    assert.deepEqual(signed.header.jwk, k.publicJwk);
    assert.equal(signed.payload.aud, 'https://iss.example');
    assert.equal(signed.payload.nonce, 'n1');
    const nowS = Math.floor(Date.now() / 1000);
    assert.ok(Math.abs(signed.payload.iat - (nowS - 60)) <= 2, `iat ${signed.payload.iat} vs now ${nowS}`);
    assert.ok(Math.abs(signed.payload.exp - (nowS + 600)) <= 2);
  });
  it('@openid4vc/openid4vci: typ, jwk or kid, aud, nonce, iat now', async () => {
    const { Openid4vciClient } = await import('@openid4vc/openid4vci');
    const k = await makeKey();
    let signed;
    const client = new Openid4vciClient({
      callbacks: {
        hash: (data) => new Uint8Array(createHash('sha256').update(data).digest()),
        generateRandom: () => new Uint8Array(32),
        clientAuthentication: () => {},
        signJwt: async (_s, { header, payload }) => {
          signed = { header, payload };
          return { jwt: await new jose.SignJWT(payload).setProtectedHeader(header).sign(k.privateKey), signerJwk: k.publicJwk };
        },
      },
    });
    const issuerMetadata = {
      credentialIssuer: {
        credential_issuer: 'https://iss.example',
        credential_configurations_supported: { X: { format: 'jwt_vc_json', proof_types_supported: { jwt: { proof_signing_alg_values_supported: ['ES256'] } } } },
      },
    };
    await client.createCredentialRequestJwtProof({ issuerMetadata, credentialConfigurationId: 'X', nonce: 'n1', signer: { method: 'did', didUrl: k.didUrl, alg: 'ES256' } });
    assert.equal(signed.header.typ, 'openid4vci-proof+jwt');
    assert.equal(signed.header.kid, k.didUrl);
    assert.equal(signed.payload.aud, 'https://iss.example');
    assert.equal(signed.payload.nonce, 'n1');
    assert.ok(Math.abs(signed.payload.iat - Date.now() / 1000) < 5);
    // It refuses an alg the configuration does not list.
    await assert.rejects(client.createCredentialRequestJwtProof({ issuerMetadata, credentialConfigurationId: 'X', nonce: 'n1', signer: { method: 'jwk', publicJwk: k.publicJwk, alg: 'EdDSA' } }));
  });
});

// --- against the stand-in server --------------------------------------------------------

function runAgainstMock(fault, { script = 'credentials.mjs', env = {} } = {}) {
  const r = spawnSync('bash', ['mock/run.sh', script], {
    cwd: new URL('.', import.meta.url),
    env: {
      ...process.env,
      MOCK_FAULT: fault ?? '',
      MOCK_DPOP_NONCE: '',
      MOCK_METADATA: '',
      INTEROP_SHOW: '',
      INTEROP_TRACE: '',
      INTEROP_WALLETS: '',
      INTEROP_FORMATS: '',
      INTEROP_CLAIMS: '',
      ...env,
    },
    encoding: 'utf8',
    timeout: 180_000,
  });
  const lines = r.stdout.split('\n');
  return {
    status: r.status,
    lines,
    fails: lines.filter((l) => l.startsWith('FAIL ')),
    summary: lines.find((l) => /^interop(-credentials|-status)?: /.test(l)),
    stderr: r.stderr,
  };
}

describe('credentials.mjs against the stand-in server', () => {
  it('passes every case when the server keeps the contract', () => {
    const r = runAgainstMock();
    assert.deepEqual(r.fails, [], r.stderr);
    assert.equal(r.summary, 'interop-credentials: 17 passed, 0 failed');
    assert.equal(r.status, 0);
  });

  it('passes every case when the server requires DPoP nonces (token and resources)', () => {
    const r = runAgainstMock(undefined, { env: { MOCK_DPOP_NONCE: '1' } });
    assert.deepEqual(r.fails, [], r.stderr);
    assert.equal(r.summary, 'interop-credentials: 17 passed, 0 failed');
  });

  it('passes every case with OID4VCI 1.0 final metadata (credential_metadata)', () => {
    const r = runAgainstMock(undefined, { env: { MOCK_METADATA: 'v1' } });
    assert.deepEqual(r.fails, [], r.stderr);
    assert.equal(r.summary, 'interop-credentials: 17 passed, 0 failed');
    assert.ok(r.lines.includes('# @openid4vc/openid4vci read the issuer metadata as OID4VCI V1'), r.lines.join('\n'));
  });

  it('leaves interop.mjs (the token cases) passing', () => {
    const r = runAgainstMock(undefined, { script: 'interop.mjs' });
    assert.deepEqual(r.fails, [], r.stderr);
    assert.equal(r.summary, 'interop: 7 passed, 0 failed');
  });

  // fault -> [which cases must fail (regexp over the FAIL line), why (regexp), how many]
  const expected = {
    'sd-cnf': [/dc\+sd-jwt/, /binds a key the wallet did not prove/, 8],
    'sd-extra-disclosure': [/dc\+sd-jwt/, /did not sign/, 8],
    'sd-bad-sig': [/dc\+sd-jwt/, /Invalid JWT Signature/, 8],
    'sd-typ': [/dc\+sd-jwt/, /typ "vc\+sd-jwt"/, 8],
    'sd-claim': [/dc\+sd-jwt/, /claim given_name/, 8],
    'sd-issuer-meta': [/dc\+sd-jwt/, /jwt-vc-issuer metadata issuer/, 8],
    'vc-did-id': [/jwt_vc_json/, /DID document id does not match/, 8],
    'vc-not-assertion': [/jwt_vc_json/, /not in assertionMethod/, 8],
    'vc-sub': [/jwt_vc_json/, /binds a key the wallet did not prove/, 8],
    'vc-claim': [/jwt_vc_json/, /credentialSubject\.degree/, 8],
    'notify-200': [/ /, /HTTP 200 .*expected 204/, 16],
    reissue: [/a-by-value-pin/, /second credential request .* HTTP 200/, 4],
    'dpop-as-bearer': [/c-dpop/, /sent as Bearer .* HTTP 204, expected 401/, 4],
    'batch-one': [/d-batch/, /1 credentials for 2 proven keys/, 4],
    'no-notification-id': [/ /, /no notification_id/, 16],
    'nonce-cache': [/metadata|a-by-value-pin|d-batch/, /Cache-Control/, 7],
  };
  for (const [fault, [which, why, count]] of Object.entries(expected)) {
    it(`notices MOCK_FAULT=${fault}`, () => {
      const r = runAgainstMock(fault);
      assert.equal(r.status, 1, `${fault}: exit ${r.status}\n${r.lines.join('\n')}\n${r.stderr}`);
      assert.equal(r.fails.length, count, `${fault}:\n${r.fails.join('\n')}`);
      for (const f of r.fails) {
        assert.match(f, which);
        assert.match(f, why);
      }
    });
  }
});

describe('status list decoding', () => {
  it('@sd-jwt/jwt-status-list reads the draft\'s 2-bit example (index 0 in the least significant bits)', () => {
    // draft-ietf-oauth-status-list §4.1, bits 2: statuses 1,2,0,3 | 0,1,0,1 | 1,2,3,3 -> bytes c9 44 f9
    const lst = Buffer.from(deflateSync(Buffer.from([0xc9, 0x44, 0xf9]))).toString('base64url');
    const list = StatusList.decompressStatusList(lst, 2);
    assert.deepEqual(list.statusList, [1, 2, 0, 3, 0, 1, 0, 1, 1, 2, 3, 3]);
    // Read the other way round, index 0 would be 3 (0xc9 >> 6).
    assert.equal(tokenStatusMsbFirst(lst, 2, 0), 3);
    assert.equal(tokenStatusMsbFirst(lst, 2, 3), 1);
  });
  it('reads W3C bitstrings with index 0 as the most significant bit of byte 0', () => {
    const bytes = Buffer.from([0b1000_0001, 0b0100_0000]);
    assert.deepEqual([0, 1, 6, 7, 8, 9].map((i) => readBits(bytes, i)), [1, 0, 0, 1, 0, 1]);
    assert.deepEqual([0, 7, 9].map((i) => readBitsLsbFirst(bytes, i)), [1, 1, 0]);
    // statusSize 2: entry 0 is bits 0-1, entry 4 bits 8-9.
    assert.equal(readBits(bytes, 0, 2), 0b10);
    assert.equal(readBits(bytes, 4, 2), 0b01);
  });
  it('expands a multibase base64url gzip bitstring, and refuses what is not one', () => {
    const raw = Buffer.alloc(16384);
    raw[2] = 0x20;
    const encoded = `u${gzipSync(raw).toString('base64url')}`;
    const out = expandBitstring(encoded);
    assert.equal(out.length * 8, 131072);
    assert.equal(readBits(out, 18), 1);
    assert.throws(() => expandBitstring(encoded.slice(1)), /multibase prefix/);
    assert.throws(() => expandBitstring(`u${deflateSync(raw).toString('base64url')}`), /does not gunzip/);
    assert.throws(() => expandBitstring(`u${gzipSync(raw).toString('base64')}=`), /base64url without padding/);
  });
});

describe('status.mjs against the stand-in server', () => {
  const quick = { MOCK_STATUS_DELAY_MS: '300', INTEROP_STATUS_TIMEOUT_MS: '3000', INTEROP_STATUS_SETTLE_MS: '600' };

  it('passes every case, and shows the decoded status before and after revocation', () => {
    const r = runAgainstMock(undefined, { script: 'status.mjs', env: { ...quick, INTEROP_SHOW: '1' } });
    assert.deepEqual(r.fails, [], r.stderr);
    assert.equal(r.summary, 'interop-status: 17 passed, 0 failed');
    const out = r.lines.join('\n');
    assert.match(out, /decoded value: 0 \(VALID\)/);
    assert.match(out, /decoded value: 1 \(INVALID\)/);
    assert.match(out, /revocation: list .*\n.*\n {4}index: \d+; decoded bit: 1 \(revocation set\)/);
    assert.equal(r.lines.filter((l) => /^ {2}decided by: /.test(l)).length, 4);
  });

  // fault -> [formats to run, which FAIL lines (regexp), why (regexp), how many]
  const expected = {
    'status-tsl-bad-sig': ['dc+sd-jwt', /dc\+sd-jwt/, /Invalid JWT Signature|no credential was issued/, 8],
    'status-tsl-sub': ['dc+sd-jwt', /dc\+sd-jwt/, /unexpected "sub" claim value/, 5],
    'status-tsl-lsb': ['dc+sd-jwt', /suspend|revoke/, /bit order is reversed|shows status 0 \(VALID\), expected revoked/, 3],
    'status-bsl-lsb': ['jwt_vc_json', /suspend|revoke/, /bit order is reversed|expected revoked/, 3],
    'status-bsl-short': ['jwt_vc_json', /jwt_vc_json/, /STATUS_LIST_LENGTH_ERROR/, 5],
    'status-bsl-zlib': ['jwt_vc_json', /jwt_vc_json/, /does not gunzip/, 5],
    'status-bsl-purpose': ['jwt_vc_json', /jwt_vc_json/, /STATUS_VERIFICATION_ERROR/, 5],
    'status-no-cors': ['', / (valid|suspend|reinstate|revoke|revoked-is-final):/, /Access-Control-Allow-Origin/, 10],
    'status-never': ['', /suspend|revoke/, /still shows|expected revoked/, 6],
    'status-reinstate-revoked': ['', /revoked-is-final/, /reinstate of a revoked credential: HTTP 200/, 2],
    'status-all-bits': ['jwt_vc_json', /jwt_vc_json suspend/, /suspension bit 1, expected suspended/, 1],
    'status-list-late': ['', /served-at-issuance/, /right after issuance: HTTP 404, served 0\.\d+ s later/, 2],
  };
  for (const [fault, [formats, which, why, count]] of Object.entries(expected)) {
    it(`notices MOCK_FAULT=${fault}`, () => {
      const r = runAgainstMock(fault, { script: 'status.mjs', env: { ...quick, INTEROP_FORMATS: formats } });
      assert.equal(r.status, 1, `${fault}: exit ${r.status}\n${r.lines.join('\n')}\n${r.stderr}`);
      assert.equal(r.fails.length, count, `${fault}:\n${r.fails.join('\n')}`);
      for (const f of r.fails) {
        assert.match(f, which);
        assert.match(f, why);
      }
    });
  }
});
