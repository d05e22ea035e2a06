//! The W3C Bitstring Status List v1.0: what `jwt_vc_json` credentials
//! reference in `credentialStatus`.
//!
//! One bit per credential and purpose (a revocation list and a suspension
//! list are separate lists), index 0 the left-most, most significant bit of
//! byte 0. `encodedList` is the multibase form (`u` prefix) of unpadded
//! base64url of the GZIP-compressed (RFC 1952) bitstring, which must hold at
//! least [`MIN_ENTRIES`] bits (16 KB) so that an index hides among many.
//!
//! The list is published as a status list credential (VCDM 2.0 terms, as
//! the Recommendation defines them) secured as a JWT: the credential sits in
//! the `vc` claim, as in the `jwt_vc_json` credentials that reference it,
//! and the registered claims repeat its issuer, subject, identifier and
//! dates.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::{StatusBits, gunzip, gzip};
use crate::formats::jwt_vc_json::rfc3339;
use crate::formats::{FormatError, IssuerKey, Unsigned, check_validity};
use crate::jose::b64url;

/// The smallest list the Recommendation allows: 131,072 entries (16 KB).
pub const MIN_ENTRIES: usize = 131_072;

/// The VCDM 2.0 base context, which defines the Bitstring Status List terms.
pub const CONTEXT: &str = "https://www.w3.org/ns/credentials/v2";

/// The status list credential's JWS `typ`.
pub const TYP: &str = "vc+jwt";

/// The `credentialStatus` entry type.
pub const ENTRY_TYPE: &str = "BitstringStatusListEntry";

/// The status list credential's type, after `VerifiableCredential`.
pub const CREDENTIAL_TYPE: &str = "BitstringStatusListCredential";

/// The multibase prefix of unpadded base64url.
const MULTIBASE_BASE64URL: char = 'u';

/// What a list's set bits mean (`statusPurpose`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `revocation`: a set bit cancels the credential; final.
    Revocation,
    /// `suspension`: a set bit suspends the credential; reversible.
    Suspension,
}

impl Purpose {
    /// The `statusPurpose` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Revocation => "revocation",
            Purpose::Suspension => "suspension",
        }
    }
}

/// `encodedList` for a 1-bit list of at least [`MIN_ENTRIES`] entries:
/// `"u"` + base64url-no-pad(GZIP(bitstring)), index 0 the most significant
/// bit of the first byte.
pub fn encoded_list(bits: &StatusBits) -> Result<String, FormatError> {
    if bits.bits() != 1 {
        return Err(FormatError::StatusList(
            "a bitstring list has 1-bit statuses",
        ));
    }
    if bits.len() < MIN_ENTRIES {
        return Err(FormatError::StatusList(
            "a bitstring list has at least 131,072 entries",
        ));
    }
    let bitstring: Vec<u8> = bits.as_bytes().iter().map(|b| b.reverse_bits()).collect();
    let mut encoded = String::from(MULTIBASE_BASE64URL);
    encoded.push_str(&b64url(&gzip(&bitstring)?));
    Ok(encoded)
}

/// Reads an `encodedList` back, as the Recommendation's validation does:
/// multibase `u`, unpadded base64url, one GZIP member with a valid CRC,
/// at most [`super::MAX_LIST_BYTES`] and at least [`MIN_ENTRIES`] bits
/// (its STATUS_LIST_LENGTH_ERROR).
pub fn decode(encoded: &str) -> Result<StatusBits, FormatError> {
    let base64 = encoded
        .strip_prefix(MULTIBASE_BASE64URL)
        .ok_or(FormatError::StatusList(
            "encodedList is not multibase base64url",
        ))?;
    let compressed = URL_SAFE_NO_PAD
        .decode(base64)
        .map_err(|_| FormatError::StatusList("encodedList is not unpadded base64url"))?;
    let bitstring = gunzip(&compressed)?;
    if bitstring.len() * 8 < MIN_ENTRIES {
        return Err(FormatError::StatusList(
            "a bitstring list has at least 131,072 entries",
        ));
    }
    StatusBits::from_bytes(1, bitstring.iter().map(|b| b.reverse_bits()).collect())
}

/// What a status list credential says.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The URL the list is served at: `vc.id`, `jti`, and what credentials
    /// name in `statusListCredential`.
    pub list_uri: &'a str,
    /// The issuer's DID: `iss`, `vc.issuer`, and the prefix of the `kid`.
    pub issuer_did: &'a str,
    /// What the list's bits mean.
    pub purpose: Purpose,
    /// Issued at (Unix seconds): `iat`, `nbf` and `validFrom`.
    pub iat: i64,
    /// Expires at (Unix seconds): `exp` and `validUntil`; after `iat`.
    pub exp: i64,
    /// How long relying parties may cache the list, in seconds; positive.
    /// Written as `credentialSubject.ttl` in milliseconds.
    pub ttl_secs: i64,
}

/// The status list credential as a JWT, unsigned: header `alg`, `typ`
/// [`TYP`], `kid` `<issuer_did>#<kid>` (and `x5c` when the key has a
/// chain); payload `iss`, `sub` (the subject, `<list_uri>#list`), `iat`,
/// `nbf`, `exp`, `jti` (the list's URI) and `vc`, a
/// `BitstringStatusListCredential` whose subject carries `statusPurpose`,
/// `encodedList` and `ttl`. Refuses `exp <= iat`, a `ttl_secs` that is not
/// positive, and lists [`encoded_list`] refuses.
pub fn prepare(input: &Input, bits: &StatusBits, key: &IssuerKey) -> Result<Unsigned, FormatError> {
    check_validity(input.iat, input.exp)?;
    let ttl_ms = Some(input.ttl_secs)
        .filter(|ttl| *ttl > 0)
        .and_then(|ttl| ttl.checked_mul(1000))
        .ok_or(FormatError::StatusList("ttl must be positive"))?;
    let subject_id = format!("{}#list", input.list_uri);
    let vc = json!({
        "@context": [CONTEXT],
        "id": input.list_uri,
        "type": ["VerifiableCredential", CREDENTIAL_TYPE],
        "issuer": input.issuer_did,
        "validFrom": rfc3339(input.iat)?,
        "validUntil": rfc3339(input.exp)?,
        "credentialSubject": {
            "id": subject_id,
            "type": "BitstringStatusList",
            "statusPurpose": input.purpose.as_str(),
            "encodedList": encoded_list(bits)?,
            "ttl": ttl_ms,
        },
    });
    let payload = json!({
        "iss": input.issuer_did,
        "sub": subject_id,
        "iat": input.iat,
        "nbf": input.iat,
        "exp": input.exp,
        "jti": input.list_uri,
        "vc": vc,
    });
    let kid = format!("{}#{}", input.issuer_did, key.kid);
    Ok(Unsigned {
        header: key.header(TYP, kid)?,
        payload,
    })
}

/// A credential's `credentialStatus` entry for one purpose:
/// `{"id": "<list_uri>#<idx>", "type": "BitstringStatusListEntry",
/// "statusPurpose": .., "statusListIndex": "<idx>", "statusListCredential":
/// list_uri}`; the index is a base-10 string, as the Recommendation says.
pub fn entry(list_uri: &str, purpose: Purpose, idx: usize) -> Value {
    json!({
        "id": format!("{list_uri}#{idx}"),
        "type": ENTRY_TYPE,
        "statusPurpose": purpose.as_str(),
        "statusListIndex": idx.to_string(),
        "statusListCredential": list_uri,
    })
}

#[cfg(test)]
mod tests;
