//! Keyed hashes of codes, PINs and API keys, made with the HSM's hashing key.
//!
//! Each kind of secret gets its own domain prefix, so a hash of one kind can
//! never stand in for another. The PIN hash includes the offer id: a PIN is
//! only valid for its own offer, and equal PINs of different offers hash
//! differently.
//!
//! A code's keyed hash (HMAC-SHA256 in the HSM) is its [`CodeKey`]. Offers
//! created since 2026-12-05 store only the SHA-256 of that key, as the
//! lookup key, and a PIN verifier that is an HMAC of the PIN keyed by the
//! code key, computed here. The code key itself is never stored, so reading
//! the database gives neither the means to find an offer from a code nor to
//! test a PIN: both need the code and the HSM's key, as before, and a
//! redemption costs one HSM operation fewer (two, not three: the code's
//! hash and the token's signature). Offers stored earlier kept the code key
//! as their lookup key: the store converts it to the SHA-256 form
//! ([`lookup_of_code_key`]) when the schema is migrated and when a server
//! starts, so every offer is found by one lookup; their PIN hash stays the
//! HSM's (32 bytes, told apart from a verifier by its length) and is
//! compared in the HSM as before.

use aws_lc_rs::hmac;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::hsm::{Hsm, HsmError};
use crate::jose::b64url;
use crate::secret::{ApiKeySecret, OfferReference, PreAuthorizedCode, TxCode};
const CODE_DOMAIN: &[u8] = b"notary/code/v1\0";
const CODE_LOOKUP_DOMAIN: &[u8] = b"notary/code-lookup/v2\0";
const PIN_DOMAIN: &[u8] = b"notary/pin/v1\0";
const PIN_VERIFIER_DOMAIN: &[u8] = b"notary/pin-verifier/v2\0";
/// The first byte of a PIN verifier stored since 2026-12-05.
const PIN_VERIFIER_V2: u8 = 2;
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

/// A pre-authorized code's keyed hash, made in the HSM: secret, as the code
/// is, and wiped when dropped.
pub struct CodeKey(Zeroizing<[u8; 32]>);

/// The code's [`CodeKey`].
pub async fn code_key(hsm: &Hsm, code: &PreAuthorizedCode) -> Result<CodeKey, HsmError> {
    let mac = hsm
        .keyed_hash(message(&[CODE_DOMAIN, code.expose().as_bytes()]))
        .await?;
    Ok(CodeKey(Zeroizing::new(mac)))
}

impl CodeKey {
    /// What an offer stores to be found by its code: the SHA-256 of the
    /// code key (one-way, so the stored value does not key the verifier).
    pub fn lookup(&self) -> [u8; 32] {
        lookup_of_code_key(self.0.as_slice())
    }

    /// What an offer stored before 2026-12-05 kept as its lookup key: the
    /// code key itself. Only tests need it, to make such rows; stores
    /// convert them (`lookup_of_code_key`).
    pub fn stored_before_v2(&self) -> Zeroizing<[u8; 32]> {
        self.0.clone()
    }

    /// An offer's stored PIN verifier: a version byte, then HMAC-SHA256,
    /// keyed by the code key, of the offer id and the PIN.
    pub fn pin_verifier(&self, offer_id: &str, pin: &TxCode) -> Vec<u8> {
        let mut verifier = Vec::with_capacity(33);
        verifier.push(PIN_VERIFIER_V2);
        verifier.extend_from_slice(self.pin_mac(offer_id, pin).as_slice());
        verifier
    }

    /// Whether `pin` is the PIN whose verifier is `stored`, compared in
    /// constant time.
    pub fn pin_matches(&self, offer_id: &str, pin: &TxCode, stored: &[u8]) -> bool {
        let Some(expected) = stored.strip_prefix(&[PIN_VERIFIER_V2]) else {
            return false;
        };
        bool::from(self.pin_mac(offer_id, pin).as_slice().ct_eq(expected))
    }

    fn pin_mac(&self, offer_id: &str, pin: &TxCode) -> Zeroizing<[u8; 32]> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.0.as_slice());
        let mut context = hmac::Context::with_key(&key);
        context.update(PIN_VERIFIER_DOMAIN);
        context.update(offer_id.as_bytes());
        context.update(b"\0");
        context.update(pin.expose().as_bytes());
        let mut mac = Zeroizing::new([0u8; 32]);
        mac.copy_from_slice(context.sign().as_ref());
        mac
    }
}

/// The lookup key of the code whose code key is `code_key`. Also how a
/// store converts the lookup keys of offers stored before 2026-12-05.
pub fn lookup_of_code_key(code_key: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(CODE_LOOKUP_DOMAIN);
    hasher.update(code_key);
    hasher.finalize().into()
}

/// Whether a stored PIN hash is a verifier keyed by the code key (33 bytes,
/// a version byte first); otherwise it is an earlier offer's HSM-made hash
/// (32 bytes), compared in the HSM.
pub fn is_code_keyed_verifier(stored: &[u8]) -> bool {
    stored.len() == 33 && stored.first() == Some(&PIN_VERIFIER_V2)
}

/// What an offer stored before 2026-12-05 hashed for its PIN (for the HSM
/// to hash and compare itself, see `Hsm::sign_if_keyed_hash_matches`).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> CodeKey {
        CodeKey(Zeroizing::new([byte; 32]))
    }

    #[test]
    fn only_the_right_pin_of_the_right_offer_matches() {
        let k = key(7);
        let stored = k.pin_verifier("offer-a", &TxCode::new("123456".into()));
        assert!(k.pin_matches("offer-a", &TxCode::new("123456".into()), &stored));
        assert!(!k.pin_matches("offer-a", &TxCode::new("123457".into()), &stored));
        // The same PIN of another offer, or under another code's key.
        assert!(!k.pin_matches("offer-b", &TxCode::new("123456".into()), &stored));
        assert!(!key(8).pin_matches("offer-a", &TxCode::new("123456".into()), &stored));
        // The offer id and the PIN cannot trade bytes across the separator.
        let shifted = k.pin_verifier("offer-a1", &TxCode::new("23456".into()));
        assert_ne!(stored, shifted);
    }

    #[test]
    fn the_stored_lookup_key_is_not_the_code_key() {
        let k = key(7);
        assert_ne!(k.lookup(), *k.stored_before_v2());
        assert_eq!(k.lookup(), lookup_of_code_key(&[7u8; 32]));
        assert_ne!(k.lookup(), key(8).lookup());
        // SHA-256 of the domain and the key, as documented.
        let mut hasher = Sha256::new();
        hasher.update(b"notary/code-lookup/v2\0");
        hasher.update([7u8; 32]);
        assert_eq!(k.lookup(), <[u8; 32]>::from(hasher.finalize()));
    }

    #[test]
    fn the_verifier_is_hmac_sha256_keyed_by_the_code_key() {
        // The domain, the offer id, a NUL and the PIN, keyed by the code key.
        let k = key(1);
        let direct = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &[1u8; 32]),
            b"notary/pin-verifier/v2\0offer\x00000000",
        );
        let verifier = k.pin_verifier("offer", &TxCode::new("000000".into()));
        assert_eq!(verifier[0], 2);
        assert_eq!(&verifier[1..], direct.as_ref());
        assert!(is_code_keyed_verifier(&verifier));
        // An earlier offer's 32-byte HSM hash is not taken for a verifier.
        assert!(!is_code_keyed_verifier(&verifier[1..]));
        assert!(!k.pin_matches("offer", &TxCode::new("000000".into()), &verifier[1..]));
    }
}
