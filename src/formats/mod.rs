//! Credential formats as pure functions: claims and a holder key in, the
//! bytes to sign and then the finished credential out.
//!
//! Nothing here does I/O, holds a key or awaits. The caller asks a format
//! to `prepare` an [`Unsigned`] JWS, has the HSM sign
//! [`Unsigned::signing_input`], and hands the signature back to the format
//! to assemble the credential. Keeping the formats pure lets them be tested
//! byte for byte with a software key and fuzzed without a token.
//!
//! - [`sd_jwt_vc`]: SD-JWT VC (`dc+sd-jwt`), top-level claims selectively
//!   disclosable;
//! - [`jwt_vc_json`]: a W3C VC Data Model 1.1 credential as a JWT
//!   (OID4VCI `jwt_vc_json`), as dataspace wallets take it;
//! - [`did`]: `did:web` and `did:jwk` identifiers and the `did:web` document;
//! - [`issuer_metadata`]: the SD-JWT VC issuer metadata document;
//! - [`status_list`]: credential status (revocation, suspension) as IETF
//!   Token Status Lists and W3C Bitstring Status Lists, and the keyed
//!   permutation that hands out list indexes.
//!
//! Errors name claims, never their values: values are personal data and
//! must not reach a response, a log or the audit log.

pub mod did;
pub mod issuer_metadata;
pub mod jwt_vc_json;
pub mod sd_jwt_vc;
pub mod status_list;

use serde_json::{Map, Value};

use crate::jose::Algorithm;

/// JWK members that carry private or symmetric key material (RFC 7518 §6).
/// A credential or a DID must never contain them: a holder key with `d`
/// would publish the wallet's private key inside the credential.
pub const PRIVATE_JWK_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

/// The issuer's signing key as a credential names it in its JWS header.
#[derive(Debug, Clone, Copy)]
pub struct IssuerKey<'a> {
    /// The algorithm the HSM key signs with; becomes the header's `alg`.
    pub alg: Algorithm,
    /// The key's identifier (notary uses the RFC 7638 thumbprint); becomes
    /// `kid`, or the fragment of the DID URL in `jwt_vc_json`.
    pub kid: &'a str,
    /// Base64 (standard, padded) DER certificates, leaf first, for `x5c`.
    /// `None` leaves `x5c` out; an empty chain is refused.
    pub x5c: Option<&'a [String]>,
}

impl IssuerKey<'_> {
    /// The protected header shared by the formats: `alg`, `typ`, `kid` and,
    /// when a chain is given, `x5c`.
    fn header(&self, typ: &str, kid: String) -> Result<Value, FormatError> {
        let mut header = Map::new();
        header.insert("alg".into(), self.alg.as_str().into());
        header.insert("typ".into(), typ.into());
        header.insert("kid".into(), kid.into());
        if let Some(chain) = self.x5c {
            if chain.is_empty() {
                return Err(FormatError::EmptyCertificateChain);
            }
            header.insert("x5c".into(), chain.to_vec().into());
        }
        Ok(Value::Object(header))
    }
}

/// A JWS not yet signed: what a format produced, before the HSM signs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsigned {
    /// The protected header.
    pub header: Value,
    /// The claims.
    pub payload: Value,
}

impl Unsigned {
    /// The bytes the HSM signs: `b64url(header) "." b64url(payload)`.
    /// Compute it once and pass that same string to the format's assembly,
    /// so the bytes signed and the bytes sent cannot differ.
    pub fn signing_input(&self) -> String {
        crate::jose::signing_input(&self.header, &self.payload)
    }
}

/// Why a credential could not be built. Messages name claims, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The claims contain a name the issuer sets itself, or one the format
    /// gives a meaning of its own (`_sd`, `id`, a JSON-LD keyword).
    #[error("the claim {0:?} is set by the issuer and cannot be given in the claims")]
    ReservedClaim(String),
    /// A claim's value holds a member named `_sd` or `...`, which SD-JWT
    /// verifiers would read as digests.
    #[error("the claim {0:?} contains a member named _sd or ..., which SD-JWT reserves")]
    NestedSdMember(String),
    /// `exp` is not after `iat`.
    #[error("the credential would expire before it is issued")]
    Validity,
    /// A time cannot be written as an RFC 3339 date (year outside 0..=9999).
    #[error("a credential time is outside the range of RFC 3339 dates")]
    Time,
    /// `x5c` was given as an empty chain; RFC 7515 requires at least the leaf.
    #[error("the issuer certificate chain (x5c) is empty")]
    EmptyCertificateChain,
    /// The holder key is not a public JWK.
    #[error("the holder key {0}")]
    HolderKey(&'static str),
    /// A URL cannot become a `did:web`.
    #[error("the URL cannot be a did:web: {0}")]
    DidWeb(&'static str),
    /// A `did:jwk` cannot be read.
    #[error("not a usable did:jwk: {0}")]
    DidJwk(&'static str),
    /// A key for a DID document has no `kid` to name its verification method.
    #[error("a key for the DID document has no kid")]
    KeyWithoutKid,
    /// A status list, a status or a list index is unusable; the message
    /// says what is wrong, never which status a credential has.
    #[error("status list: {0}")]
    StatusList(&'static str),
}

/// Whether a JWK object carries private or symmetric key material.
fn has_private_members(jwk: &Map<String, Value>) -> bool {
    PRIVATE_JWK_MEMBERS
        .iter()
        .any(|member| jwk.contains_key(*member))
}

/// Refuses `exp <= iat`: such a credential is useless to the holder and
/// means the caller computed a lifetime wrongly.
fn check_validity(iat: i64, exp: i64) -> Result<(), FormatError> {
    if exp > iat {
        Ok(())
    } else {
        Err(FormatError::Validity)
    }
}

#[cfg(test)]
pub(crate) mod test_support;
