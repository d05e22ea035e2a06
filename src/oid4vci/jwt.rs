//! Verifying JWTs that others signed: DPoP proofs and client attestations.
//!
//! Signature checks are done by `jsonwebtoken`, a library we did not write;
//! this module only decides which keys and algorithms are acceptable and
//! reads the header and claims as plain JSON, so each caller checks the
//! claims its own specification defines.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// Asymmetric algorithms accepted from wallets (RFC 9449 §4.2 forbids
/// symmetric ones and `none`). Advertised as `dpop_signing_alg_values_supported`.
pub const ACCEPTED_ALGS: [&str; 5] = ["ES256", "ES384", "EdDSA", "PS256", "RS256"];

/// Largest JWT accepted in a header; real proofs are well under 2 KiB.
pub const MAX_JWT_LEN: usize = 8 * 1024;

/// A JWT whose signature verified.
#[derive(Debug)]
pub struct VerifiedJwt {
    /// The protected header.
    pub header: serde_json::Map<String, Value>,
    /// The claims.
    pub claims: serde_json::Map<String, Value>,
}

/// Why a JWT was refused; the message is safe to return to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JwtError(pub String);

fn fail<T>(message: impl Into<String>) -> Result<T, JwtError> {
    Err(JwtError(message.into()))
}

/// Decodes the protected header of a compact JWS without checking anything else.
pub fn header(token: &str) -> Result<serde_json::Map<String, Value>, JwtError> {
    if token.len() > MAX_JWT_LEN {
        return fail(format!("the JWT is longer than {MAX_JWT_LEN} bytes"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return fail("not a compact JWS (three base64url parts)");
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| JwtError("the JWS header is not base64url".into()))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => fail("the JWS header is not a JSON object"),
    }
}

/// A public JWK from a header or a trust list: it must be asymmetric and
/// must not carry private key material.
pub fn public_jwk(value: &Value) -> Result<Jwk, JwtError> {
    let Some(object) = value.as_object() else {
        return fail("jwk must be a JSON object");
    };
    if ["d", "p", "q", "dp", "dq", "qi", "k"]
        .iter()
        .any(|member| object.contains_key(*member))
    {
        return fail("jwk must be a public key; it contains private or symmetric key material");
    }
    serde_json::from_value(value.clone())
        .map_err(|_| JwtError("jwk is not a supported public key (EC, OKP or RSA)".into()))
}

/// RFC 7638 SHA-256 thumbprint of a public JWK, base64url.
pub fn thumbprint(jwk: &Jwk) -> Result<String, JwtError> {
    jwk.thumbprint(ThumbprintHash::SHA256)
        .map_err(|_| JwtError("cannot compute the JWK thumbprint".into()))
}

/// Verifies `token` with `jwk`, requiring `typ` to equal `expected_typ` and
/// the algorithm to be one of [`ACCEPTED_ALGS`]. Time claims are left to
/// the caller: each specification words them differently.
pub fn verify(token: &str, jwk: &Jwk, expected_typ: &str) -> Result<VerifiedJwt, JwtError> {
    let header = header(token)?;
    let alg = check_form(&header, expected_typ)?;
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|_| JwtError("the key cannot verify this algorithm".into()))?;
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &validation)
        .map_err(|e| JwtError(format!("the JWT does not verify: {}", describe(&e))))?;
    Ok(VerifiedJwt {
        header,
        claims: data.claims,
    })
}

/// Checks `typ` and `alg` of a header; returns the algorithm.
pub fn check_form(
    header: &serde_json::Map<String, Value>,
    expected_typ: &str,
) -> Result<Algorithm, JwtError> {
    let typ = header.get("typ").and_then(Value::as_str).unwrap_or("");
    if !typ.eq_ignore_ascii_case(expected_typ) {
        return fail(format!("typ must be {expected_typ}"));
    }
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if !ACCEPTED_ALGS.contains(&alg) {
        return fail(format!("alg must be one of {}", ACCEPTED_ALGS.join(", ")));
    }
    alg.parse().map_err(|_| JwtError("unknown alg".into()))
}

/// A short reason without echoing input.
fn describe(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm => "the key does not match alg",
        ErrorKind::InvalidToken | ErrorKind::Base64(_) => "malformed JWS",
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => "the claims are not a JSON object",
        _ => "invalid key or signature",
    }
}

/// A string claim, or an error naming it.
pub fn str_claim<'a>(
    claims: &'a serde_json::Map<String, Value>,
    name: &str,
) -> Result<&'a str, JwtError> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| JwtError(format!("the {name} claim is missing or not a string")))
}

/// An integer time claim (NumericDate), or an error naming it.
pub fn time_claim(claims: &serde_json::Map<String, Value>, name: &str) -> Result<i64, JwtError> {
    claims
        .get(name)
        .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
        .ok_or_else(|| JwtError(format!("the {name} claim is missing or not a number")))
}
