//! Keyed hashes of codes, PINs and API keys, computed inside the HSM.
//!
//! Each kind of secret gets its own domain prefix, so a hash of one kind can
//! never stand in for another. The PIN hash includes the offer id: a PIN is
//! only valid for its own offer, and equal PINs of different offers hash
//! differently.

use zeroize::Zeroizing;

use crate::hsm::{Hsm, HsmError};
use crate::jose::b64url;
use crate::secret::{ApiKeySecret, OfferReference, PreAuthorizedCode, TxCode};

const CODE_DOMAIN: &[u8] = b"notary/code/v1\0";
const PIN_DOMAIN: &[u8] = b"notary/pin/v1\0";
const API_KEY_DOMAIN: &[u8] = b"notary/api-key/v1\0";
const OFFER_REF_DOMAIN: &[u8] = b"notary/offer-ref/v1\0";
const REF_CODE_DOMAIN: &[u8] = b"notary/offer-ref-code/v1\0";

fn message(parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(parts.iter().map(|p| p.len()).sum()));
    for part in parts {
        buf.extend_from_slice(part);
    }
    buf
}

/// The lookup key of a pre-authorized code.
pub async fn code_hash(hsm: &Hsm, code: &PreAuthorizedCode) -> Result<[u8; 32], HsmError> {
    hsm.keyed_hash(message(&[CODE_DOMAIN, code.expose().as_bytes()]))
        .await
}

/// The stored form of a PIN, bound to its offer.
pub async fn pin_hash(hsm: &Hsm, offer_id: &str, pin: &TxCode) -> Result<[u8; 32], HsmError> {
    hsm.keyed_hash(pin_message(offer_id, pin)).await
}

/// What is hashed for a PIN's stored form (for the HSM to hash and
/// compare itself, see `Hsm::sign_if_keyed_hash_matches`).
pub fn pin_message(offer_id: &str, pin: &TxCode) -> Zeroizing<Vec<u8>> {
    message(&[
        PIN_DOMAIN,
        offer_id.as_bytes(),
        b"\0",
        pin.expose().as_bytes(),
    ])
}

/// The stored form of an API key.
pub async fn api_key_hash(hsm: &Hsm, key: &ApiKeySecret) -> Result<[u8; 32], HsmError> {
    hsm.keyed_hash(message(&[API_KEY_DOMAIN, key.expose().as_bytes()]))
        .await
}

/// The lookup key of a by-reference offer's URL reference.
pub async fn offer_ref_hash(hsm: &Hsm, reference: &OfferReference) -> Result<[u8; 32], HsmError> {
    hsm.keyed_hash(message(&[OFFER_REF_DOMAIN, reference.expose().as_bytes()]))
        .await
}

/// The pre-authorized code of a by-reference offer: an HMAC of its
/// reference made in the HSM. It is never stored; the reference is needed
/// to make it again, and only the reference's keyed hash is stored.
pub async fn code_from_reference(
    hsm: &Hsm,
    reference: &OfferReference,
) -> Result<PreAuthorizedCode, HsmError> {
    let mac = Zeroizing::new(
        hsm.keyed_hash(message(&[REF_CODE_DOMAIN, reference.expose().as_bytes()]))
            .await?,
    );
    Ok(PreAuthorizedCode::new(b64url(mac.as_slice())))
}
