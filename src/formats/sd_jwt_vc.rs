//! SD-JWT VC (draft-ietf-oauth-sd-jwt-vc) on SD-JWT (RFC 9901): the
//! OID4VCI format `dc+sd-jwt`.
//!
//! Only top-level claims are selectively disclosable: each becomes one
//! disclosure `[salt, name, value]` whose digest is listed in the payload's
//! `_sd`. A nested object or an array is disclosed whole, together with its
//! top-level name; the holder cannot reveal part of it. That matches how
//! offers carry claims (one object per configuration, checked by top-level
//! name) and keeps the wallet's work simple. No decoy digests are added: the
//! number of `_sd` entries reveals how many claims are hidden, which a
//! credential configuration publishes anyway.
//!
//! The issuer sets `iss`, `iat`, `exp`, `vct`, `cnf`, `status` and the SD-JWT
//! members itself; claims with those names are refused (see
//! [`RESERVED_CLAIMS`]), never silently dropped, so a mistake in an offer
//! shows instead of yielding a credential without a claim.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use super::{FormatError, IssuerKey, Unsigned, check_validity, has_private_members};
use crate::jose::b64url;

/// The OID4VCI format identifier, also the JWS `typ`.
pub const FORMAT: &str = "dc+sd-jwt";

/// The digest algorithm named in `_sd_alg`; RFC 9901's default.
pub const SD_ALG: &str = "sha-256";

/// Claim names a caller cannot give: the issuer sets them (`iss`, `iat`,
/// `exp`, `vct`, `cnf`, `status`), SD-JWT VC forbids disclosing them (`nbf`,
/// `vct#integrity`), a credential must not be audience-bound (`aud`), or
/// SD-JWT gives them a meaning (`_sd`, `_sd_alg`, `...`). `sub` is allowed:
/// SD-JWT VC lets the subject identifier be an ordinary, disclosable claim.
pub const RESERVED_CLAIMS: [&str; 12] = [
    "iss",
    "iat",
    "nbf",
    "exp",
    "aud",
    "cnf",
    "vct",
    "vct#integrity",
    "status",
    "_sd",
    "_sd_alg",
    "...",
];

/// What a credential says, and about whose key.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The credential issuer URL; becomes `iss`, which verifiers use to find
    /// the issuer's keys (`/.well-known/jwt-vc-issuer`) or match the `x5c` leaf.
    pub issuer: &'a str,
    /// The credential type (`vct`) of the configuration.
    pub vct: &'a str,
    /// The claims of the offer for this configuration (top level).
    pub claims: &'a Map<String, Value>,
    /// Top-level claim names put in the clear instead of being made
    /// selectively disclosable. Names absent from `claims` are ignored.
    pub always_visible: &'a BTreeSet<String>,
    /// The holder's public JWK from the proof; becomes `cnf.jwk`, binding
    /// the credential to the wallet's key.
    pub holder_jwk: &'a Value,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds); must be after `iat`.
    pub exp: i64,
    /// The `status` claim (e.g. `{"status_list": {"idx": .., "uri": ..}}`),
    /// put in the payload as given when present.
    pub status: Option<&'a Value>,
}

/// An SD-JWT VC waiting for its signature.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The issuer-signed JWT, unsigned.
    pub unsigned: Unsigned,
    /// The disclosures, in claim order, to append after signing.
    pub disclosures: Vec<String>,
}

/// Builds the JWT and its disclosures. `salts` must return fresh random
/// bytes on every call (128 bits, as RFC 9901 §9.3 recommends), one call
/// per disclosable claim; if the random source can fail, draw the salts
/// before calling, so a failure is not hidden inside the closure.
/// Refuses a claim in [`RESERVED_CLAIMS`] and a claim whose value holds a
/// member named `_sd` or `...` at any depth; the error names the claim.
pub fn prepare(
    input: &Input,
    key: &IssuerKey,
    salts: &mut dyn FnMut() -> [u8; 16],
) -> Result<Prepared, FormatError> {
    check_validity(input.iat, input.exp)?;
    if let Some(name) = input
        .claims
        .keys()
        .find(|name| RESERVED_CLAIMS.contains(&name.as_str()))
    {
        return Err(FormatError::ReservedClaim(name.clone()));
    }
    if let Some(name) = input
        .claims
        .iter()
        .find(|(_, value)| holds_sd_member(value))
        .map(|(name, _)| name)
    {
        return Err(FormatError::NestedSdMember(name.clone()));
    }
    let holder_jwk = match input.holder_jwk {
        Value::Object(jwk) if has_private_members(jwk) => {
            return Err(FormatError::HolderKey("contains private key material"));
        }
        Value::Object(_) => input.holder_jwk.clone(),
        _ => return Err(FormatError::HolderKey("is not a JSON object")),
    };

    let mut payload = Map::new();
    payload.insert("iss".into(), input.issuer.into());
    payload.insert("iat".into(), input.iat.into());
    payload.insert("exp".into(), input.exp.into());
    payload.insert("vct".into(), input.vct.into());
    payload.insert("cnf".into(), json!({ "jwk": holder_jwk }));
    payload.insert("_sd_alg".into(), SD_ALG.into());

    let mut disclosures = Vec::new();
    let mut digests = Vec::new();
    for (name, value) in input.claims {
        if input.always_visible.contains(name) {
            payload.insert(name.clone(), value.clone());
        } else {
            let disclosure = disclose(&salts(), name, value);
            digests.push(digest(&disclosure));
            disclosures.push(disclosure);
        }
    }
    if !digests.is_empty() {
        // Sorted, so the order of `_sd` tells nothing about the claims.
        digests.sort_unstable();
        payload.insert("_sd".into(), digests.into());
    }
    if let Some(status) = input.status {
        payload.insert("status".into(), status.clone());
    }

    let header = key.header(FORMAT, key.kid.to_owned())?;
    Ok(Prepared {
        unsigned: Unsigned {
            header,
            payload: Value::Object(payload),
        },
        disclosures,
    })
}

/// The issued SD-JWT: `<jws>~<d1>~...~<dn>~` (RFC 9901 §4, no key binding).
/// `signing_input` must be the string the HSM signed.
pub fn assemble(signing_input: String, signature: &[u8], disclosures: &[String]) -> String {
    let mut sd_jwt = crate::jose::compact(signing_input, signature);
    sd_jwt.push('~');
    for disclosure in disclosures {
        sd_jwt.push_str(disclosure);
        sd_jwt.push('~');
    }
    sd_jwt
}

/// The `_sd` digest of a disclosure: base64url(SHA-256) of the disclosure's
/// base64url text as sent, not of the JSON it decodes to (RFC 9901 §4.2.3).
pub fn digest(disclosure: &str) -> String {
    b64url(&Sha256::digest(disclosure.as_bytes()))
}

/// Whether a member named `_sd` or `...` occurs anywhere inside `value`. A
/// verifier treats such members as digests wherever they are (RFC 9901
/// §7.1) and drops what it cannot match, so they would change a claim
/// rather than be part of it. Walked with a stack, not recursion, so a
/// deeply nested value cannot exhaust the thread's stack.
fn holds_sd_member(value: &Value) -> bool {
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        match value {
            Value::Object(members) => {
                if members.contains_key("_sd") || members.contains_key("...") {
                    return true;
                }
                pending.extend(members.values());
            }
            Value::Array(items) => pending.extend(items),
            _ => {}
        }
    }
    false
}

/// One object-property disclosure: base64url of the UTF-8 JSON array
/// `[salt, name, value]` (RFC 9901 §4.2.1).
fn disclose(salt: &[u8; 16], name: &str, value: &Value) -> String {
    let array = json!([b64url(salt), name, value]);
    b64url(array.to_string().as_bytes())
}

#[cfg(test)]
mod tests;
