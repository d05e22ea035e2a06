//! Offer claims at rest: each credential configuration's claims sealed on
//! their own with the claims key (AES-256-GCM in the HSM), bound to the
//! offer and the configuration.
//!
//! The stored form is a JSON object from configuration id to
//! base64url(`iv ‖ ciphertext ‖ tag`). Configuration ids are not secret
//! (the offer lists them anyway); keeping one sealed value per configuration
//! lets the credential endpoint delete one configuration's claims when it
//! issues that credential without decrypting or re-encrypting the others.
//! The associated data names the offer and the configuration, so a sealed
//! value copied to another offer's row, or to another configuration, does
//! not decrypt.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::hsm::{Hsm, HsmError};
use crate::jose::b64url;

/// Domain of the associated data, versioned with the stored form.
const AAD_DOMAIN: &[u8] = b"notary/offer-claims/v1";

/// The associated data of one configuration's claims of one offer: the
/// domain, then the offer id with its length (ids are fixed-length today,
/// but the length keeps the encoding unambiguous whatever they become),
/// then the configuration id.
fn associated_data(offer_id: &str, configuration: &str) -> Vec<u8> {
    let id_len = u32::try_from(offer_id.len()).unwrap_or(u32::MAX);
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + 4 + offer_id.len() + configuration.len());
    aad.extend_from_slice(AAD_DOMAIN);
    aad.extend_from_slice(&id_len.to_be_bytes());
    aad.extend_from_slice(offer_id.as_bytes());
    aad.extend_from_slice(configuration.as_bytes());
    aad
}

/// Seals each configuration's claims of `claims` for offer `offer_id`;
/// returns the stored form, or `None` when there are no claims.
pub async fn seal(
    hsm: &Hsm,
    offer_id: &str,
    claims: &Map<String, Value>,
) -> Result<Option<String>, HsmError> {
    if claims.is_empty() {
        return Ok(None);
    }
    let mut sealed = BTreeMap::new();
    for (configuration, value) in claims {
        // Serialising a `Value` cannot fail; an empty plaintext would be
        // refused by `check` long before (claims are objects).
        let plaintext = Zeroizing::new(serde_json::to_vec(value).unwrap_or_default());
        let blob = hsm
            .encrypt_claims(associated_data(offer_id, configuration), plaintext)
            .await?;
        sealed.insert(configuration.as_str(), b64url(&blob));
    }
    Ok(Some(serde_json::to_string(&sealed).unwrap_or_default()))
}

/// The configuration ids a stored form holds claims for (nothing is
/// decrypted: the ids are stored in the clear).
pub fn configurations(stored: &str) -> Vec<String> {
    serde_json::from_str::<BTreeMap<String, Value>>(stored)
        .map(|m| m.into_keys().collect())
        .unwrap_or_default()
}

/// Why sealed claims could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No claims are stored for this configuration (none were given, or
    /// they were deleted).
    #[error("no claims are stored for this credential configuration")]
    Absent,
    /// The stored value does not open for this offer and configuration:
    /// altered, or moved from another offer. Never retried.
    #[error("the stored claims do not open for this offer")]
    Unreadable,
    /// The HSM is unavailable; retrying later may work.
    #[error(transparent)]
    Hsm(HsmError),
}

/// Opens the claims of `configuration` of offer `offer_id` from the stored
/// form: the claims object as JSON, wiped on drop. For the credential
/// endpoint, which deletes them in the transaction that issues.
pub async fn open(
    hsm: &Hsm,
    offer_id: &str,
    stored: &str,
    configuration: &str,
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let sealed: BTreeMap<String, String> =
        serde_json::from_str(stored).map_err(|_| OpenError::Unreadable)?;
    let blob = sealed.get(configuration).ok_or(OpenError::Absent)?;
    let blob = URL_SAFE_NO_PAD
        .decode(blob)
        .map_err(|_| OpenError::Unreadable)?;
    match hsm
        .decrypt_claims(associated_data(offer_id, configuration), blob)
        .await
    {
        Ok(plaintext) => Ok(plaintext),
        Err(e @ HsmError::Unavailable { .. }) => Err(OpenError::Hsm(e)),
        // A tag that does not verify comes back as CKR_ENCRYPTED_DATA_INVALID
        // or (SoftHSM) CKR_GENERAL_ERROR; both mean "not for this offer".
        Err(HsmError::Internal { .. }) => Err(OpenError::Unreadable),
        Err(e) => Err(OpenError::Hsm(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn associated_data_differs_by_offer_and_configuration() {
        let a = associated_data("offer-a", "Degree");
        assert_ne!(a, associated_data("offer-b", "Degree"));
        assert_ne!(a, associated_data("offer-a", "Other"));
        // The length prefix keeps (id, configuration) pairs apart.
        assert_ne!(associated_data("ab", "c"), associated_data("a", "bc"));
        assert!(a.starts_with(AAD_DOMAIN));
    }

    #[test]
    fn configurations_are_read_without_decrypting() {
        assert_eq!(
            configurations(r#"{"A":"x","B":"y"}"#),
            vec!["A".to_owned(), "B".to_owned()]
        );
        assert!(configurations("not json").is_empty());
    }
}
