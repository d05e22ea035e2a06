// Wallet 1: @sphereon/oid4vci-client (OpenID4VCIClient).
//
// The library does: parse the offer (fetching it by reference), discover the
// issuer and authorization server metadata, redeem the code with the PIN,
// make the DPoP proofs (ath included), read the c_nonce, build the key proof
// header and claims, send the credential request, and send the notification.
// The script only signs what the library builds, with the holder key.
//
// What it cannot do, and the script then does with jose + fetch (see README):
// - a batch: it sends one `proof` (draft form), never `proofs`;
// - a notification with a DPoP-bound token: sendNotification sends only
//   `Authorization: Bearer` and takes no DPoP options.

import { OpenID4VCIClient } from '@sphereon/oid4vci-client';
import * as jose from 'jose';

import { check, fetchNonce, makeProofJwt, resourcePost } from './support.mjs';
import { exchanges, hookHttpsRequest, lastExchange } from './wire.mjs';

export const id = 'sphereon';
export const pkg = '@sphereon/oid4vci-client';
export const capabilities = { dpop: true, batch: false };

hookHttpsRequest();

// DPoP options in the library's shape: it builds header and claims (typ,
// alg, jwk, htm, htu, iat, jti, ath for resource requests, nonce on a retry)
// and hands them to createJwtCallback to sign.
function dpopOpts(key, algsSupported) {
  return {
    jwtIssuer: { alg: key.alg, jwk: key.publicJwk },
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

export async function obtain(ctx) {
  const { offer, configId, config, binding, keys, dpopKey, issuerMeta, asMeta, publicUrl } = ctx;
  const notes = [];

  const client = await OpenID4VCIClient.fromURI({ uri: offer.uri, retrieveServerMetadata: true });
  check(client.getIssuer() === publicUrl, `wallet sees credential_issuer ${client.getIssuer()}, expected ${publicUrl}`);
  check(client.getCredentialEndpoint() === issuerMeta.credential_endpoint,
    `wallet chose credential endpoint ${client.getCredentialEndpoint()}, metadata says ${issuerMeta.credential_endpoint}`);
  const offered = client.credentialOffer?.credential_offer?.credential_configuration_ids;
  check(Array.isArray(offered) && offered.length === 1 && offered[0] === configId,
    `offer's credential_configuration_ids ${JSON.stringify(offered)}, expected [${configId}]`);

  const tokenOpts = {};
  if (offer.transactionCode) tokenOpts.pin = offer.transactionCode;
  if (dpopKey) tokenOpts.createDPoPOpts = dpopOpts(dpopKey, asMeta.dpop_signing_alg_values_supported);
  const tr = await client.acquireAccessToken(tokenOpts);
  check(typeof tr.access_token === 'string', 'no access_token in the token response');
  check(tr.token_type === (dpopKey ? 'DPoP' : 'Bearer'), `token_type ${JSON.stringify(tr.token_type)}`);
  const accessToken = tr.access_token;

  let credentials;
  let notificationId;
  if (keys.length === 1) {
    // The library's own credential request: one proof, made from the token
    // response's c_nonce (it asks the nonce endpoint only when the token
    // response has none).
    const key = keys[0];
    const res = await client.acquireCredentials({
      credentialTypes: configId,
      format: config.format,
      alg: key.alg,
      ...(binding === 'did:jwk' ? { kid: key.didUrl } : { jwk: key.publicJwk }),
      proofCallbacks: {
        signCallback: async ({ header, payload }) => new jose.SignJWT(payload).setProtectedHeader(header).sign(key.privateKey),
      },
      ...(dpopKey && { createDPoPOpts: dpopOpts(dpopKey, asMeta.dpop_signing_alg_values_supported) }),
    });
    check(Array.isArray(res.credentials), `credential response has no credentials array: ${JSON.stringify(res).slice(0, 200)}`);
    credentials = res.credentials.map((c) => c?.credential);
    notificationId = res.notification_id;
  } else {
    // No batch in this library: the script sends the 1.0 request itself,
    // with the token the library obtained.
    notes.push('batch sent by the script (jose + fetch): the library sends a single proof only');
    const nonce = await fetchNonce(issuerMeta.nonce_endpoint);
    const jwts = await Promise.all(keys.map((k) => makeProofJwt(k, { audience: publicUrl, nonce, binding })));
    const r = await resourcePost(issuerMeta.credential_endpoint,
      { credential_configuration_id: configId, proofs: { jwt: jwts } }, { accessToken, dpopKey });
    check(r.status === 200, `batch credential request: HTTP ${r.status} ${r.text.slice(0, 300)}`);
    credentials = (r.json?.credentials ?? []).map((c) => c?.credential);
    notificationId = r.json?.notification_id;
  }

  async function notify(event) {
    if (dpopKey) {
      // sendNotification cannot present a DPoP-bound token.
      const r = await resourcePost(issuerMeta.notification_endpoint, { notification_id: notificationId, event }, { accessToken, dpopKey });
      return { status: r.status, by: 'script (DPoP)', body: r.text };
    }
    const mark = exchanges.length;
    const result = await client.sendNotification(
      { notificationEndpoint: issuerMeta.notification_endpoint },
      { notification_id: notificationId, event },
      accessToken,
    );
    // The library reports an error only when the body is a JSON error; the
    // status is read off the wire.
    const seen = lastExchange('POST', issuerMeta.notification_endpoint, mark);
    return { status: seen?.status, by: 'library', body: result.error ? JSON.stringify(result.response) : '' };
  }

  return { credentials, notificationId, accessToken, tokenType: tr.token_type, notify, notes };
}
