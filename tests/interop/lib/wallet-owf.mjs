// Wallet 2: @openid4vc/openid4vci (Openid4vciClient, the OpenWallet
// Foundation's oid4vc-ts, also the engine of Credo).
//
// The library does: resolve the offer (fetching it by reference), fetch and
// validate (zod) the issuer and authorization server metadata, redeem the
// code with the PIN, make DPoP proofs (ath included, nonce retries), ask the
// nonce endpoint, build the key proofs (one per key, `proofs` of OID4VCI 1.0
// when asked, batch size checked against the metadata), send the credential
// request and the notification. The script provides the callbacks: hashing,
// random bytes, and signing with the holder / DPoP keys.

import { createHash, randomBytes } from 'node:crypto';

import { Openid4vciClient } from '@openid4vc/openid4vci';
import { clientAuthenticationNone } from '@openid4vc/oauth2';
import * as jose from 'jose';

import { check, thumbprintOf } from './support.mjs';
import { tracingFetch } from './wire.mjs';

export const id = 'owf';
export const pkg = '@openid4vc/openid4vci';
export const capabilities = { dpop: true, batch: true };

export const CLIENT_ID = 'notary-interop-owf';

function makeClient(keyring) {
  return new Openid4vciClient({
    callbacks: {
      fetch: tracingFetch(id),
      hash: (data, alg) => {
        const algs = { 'sha-256': 'sha256', 'sha-384': 'sha384', 'sha-512': 'sha512' };
        if (!algs[alg]) throw new Error(`hash ${alg} not supported here`);
        return new Uint8Array(createHash(algs[alg]).update(data).digest());
      },
      generateRandom: (n) => new Uint8Array(randomBytes(n)),
      // The pre-authorized flow needs no client authentication; the library
      // then sends client_id as a plain parameter.
      clientAuthentication: clientAuthenticationNone({ clientId: CLIENT_ID }),
      signJwt: async (signer, { header, payload }) => {
        let key;
        if (signer.method === 'jwk') {
          const t = await thumbprintOf(signer.publicJwk);
          key = keyring.find((k) => k.thumbprint === t);
        } else if (signer.method === 'did') {
          key = keyring.find((k) => k.didUrl === signer.didUrl);
        }
        if (!key) throw new Error(`signJwt: no key for signer ${signer.method}`);
        const jwt = await new jose.SignJWT(payload).setProtectedHeader(header).sign(key.privateKey);
        return { jwt, signerJwk: key.publicJwk };
      },
    },
  });
}

function signerFor(key, binding) {
  return binding === 'did:jwk'
    ? { method: 'did', didUrl: key.didUrl, alg: key.alg }
    : { method: 'jwk', publicJwk: key.publicJwk, alg: key.alg };
}

// The library's errors carry the server's answer in their message (the
// parsed error response, or the body); add the HTTP status.
function explain(e) {
  const status = e?.response?.response?.status;
  if (status !== undefined) e.message = `HTTP ${status}: ${e.message}`;
  return e;
}

export let metadataVersionSeen;

export async function obtain(ctx) {
  const { offer, configId, binding, keys, dpopKey, publicUrl, asMeta } = ctx;
  const notes = [];
  const client = makeClient([...keys, ...(dpopKey ? [dpopKey] : [])]);

  try {
    const credentialOffer = await client.resolveCredentialOffer(offer.uri);
    check(credentialOffer.credential_issuer === publicUrl, `offer names credential_issuer ${credentialOffer.credential_issuer}`);
    check(Array.isArray(credentialOffer.credential_configuration_ids) && credentialOffer.credential_configuration_ids.length === 1
      && credentialOffer.credential_configuration_ids[0] === configId,
    `offer's credential_configuration_ids ${JSON.stringify(credentialOffer.credential_configuration_ids)}, expected [${configId}]`);
    const issuerMetadata = await client.resolveIssuerMetadata(credentialOffer.credential_issuer);
    metadataVersionSeen = issuerMetadata.originalDraftVersion;

    const token = await client.retrievePreAuthorizedCodeAccessTokenFromOffer({
      credentialOffer,
      issuerMetadata,
      ...(offer.transactionCode && { txCode: offer.transactionCode }),
      ...(dpopKey && { dpop: { signer: signerFor(dpopKey, 'jwk') } }),
    });
    check(token.authorizationServer === asMeta.issuer, `library used authorization server ${token.authorizationServer}`);
    const tr = token.accessTokenResponse;
    check(tr.token_type === (dpopKey ? 'DPoP' : 'Bearer'), `token_type ${JSON.stringify(tr.token_type)}`);
    const accessToken = tr.access_token;
    let dpop = token.dpop;

    // OID4VCI 1.0: the nonce comes from the nonce endpoint, and every key
    // gets a proof over it; all of them go in `proofs.jwt`.
    const { c_nonce: nonce } = await client.requestNonce({ issuerMetadata });
    const jwts = [];
    for (const key of keys) {
      const { jwt } = await client.createCredentialRequestJwtProof({
        issuerMetadata,
        credentialConfigurationId: configId,
        signer: signerFor(key, binding),
        nonce,
      });
      jwts.push(jwt);
    }
    const res = await client.retrieveCredentials({
      issuerMetadata,
      credentialConfigurationId: configId,
      accessToken,
      proofs: { jwt: jwts },
      ...(dpop && { dpop }),
    });
    if (dpop && res.dpop?.nonce) dpop = { ...dpop, nonce: res.dpop.nonce };
    const cr = res.credentialResponse;
    check(Array.isArray(cr.credentials), `credential response has no credentials array: ${JSON.stringify(cr).slice(0, 200)}`);
    const credentials = cr.credentials.map((c) => c?.credential);

    async function notify(event) {
      try {
        const r = await client.sendNotification({
          issuerMetadata,
          accessToken,
          notification: { notificationId: cr.notification_id, event },
          ...(dpop && { dpop }),
        });
        return { status: r.response.status, by: 'library', body: '' };
      } catch (e) {
        const status = e.response?.response?.status;
        return { status, by: 'library', body: `${e.message} ${e.response?.response ? await e.response.response.clone().text().catch(() => '') : ''}` };
      }
    }

    return { credentials, notificationId: cr.notification_id, accessToken, tokenType: tr.token_type, notify, notes, nonceUsed: nonce };
  } catch (e) {
    throw explain(e);
  }
}
