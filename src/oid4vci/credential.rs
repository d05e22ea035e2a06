//! The credential request (OID4VCI 1.0 §8.2) and its key proofs (§8.2.1.1,
//! Appendix F.1): every check that needs no state. Nonce checks, which
//! need the HSM and the database, are in `issuance::c_nonce`.

use serde_json::{Map, Value};

use super::ErrorCode;
use super::jwt::{self, JwtError};

/// `typ` of a JWT key proof.
pub const PROOF_TYP: &str = "openid4vci-proof+jwt";

/// Largest credential request body accepted: a batch of proofs of a few
/// hundred bytes each fits many times over.
pub const MAX_BODY: usize = 64 * 1024;

/// How far in the future a proof's `iat` may be (clock skew), seconds.
pub const FUTURE_SKEW_SECS: i64 = 60;

/// What the wallet asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// `credential_configuration_id` (1.0, without authorization details).
    Configuration(String),
    /// `credential_identifier` (1.0, from the token's authorization details).
    Identifier(String),
    /// `format` with `vct` or `credential_definition.type` (earlier drafts).
    Format {
        /// The format identifier.
        format: String,
        /// `vct` of an SD-JWT VC request.
        vct: Option<String>,
        /// `credential_definition.type` of a W3C VC request.
        types: Option<Vec<String>>,
    },
}

/// A parsed credential request.
#[derive(Debug, Clone)]
pub struct CredentialRequest {
    /// The credential asked for.
    pub requested: Requested,
    /// The JWT key proofs, one credential each.
    pub proofs: Vec<String>,
    /// The request sent one `proof` (earlier drafts): the response then also
    /// carries the single `credential` those wallets read.
    pub single_proof: bool,
}

/// Why a request was refused: the §8.3.1.2 error code and a description
/// that never echoes a value from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// `invalid_credential_request` or `invalid_proof`.
    pub code: ErrorCode,
    /// Safe to return.
    pub message: String,
}

fn invalid(message: impl Into<String>) -> RequestError {
    RequestError {
        code: ErrorCode::InvalidCredentialRequest,
        message: message.into(),
    }
}

fn invalid_proof(message: impl Into<String>) -> RequestError {
    RequestError {
        code: ErrorCode::InvalidProof,
        message: message.into(),
    }
}

/// Longest identifier read from a request.
const MAX_ID: usize = 256;

fn short_string(body: &Map<String, Value>, name: &str) -> Result<Option<String>, RequestError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_ID => Ok(Some(s.clone())),
        Some(_) => Err(invalid(format!(
            "{name} must be a non-empty string of at most {MAX_ID} characters"
        ))),
    }
}

impl CredentialRequest {
    /// Parses a JSON body; `batch_size` bounds the number of proofs.
    pub fn parse(body: &[u8], batch_size: usize) -> Result<Self, RequestError> {
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
            return Err(invalid("the body must be a JSON object"));
        };
        if body.contains_key("credential_response_encryption") {
            return Err(RequestError {
                code: ErrorCode::InvalidEncryptionParameters,
                message: "credential response encryption is not supported by this issuer".into(),
            });
        }
        let requested = requested(&body)?;
        let (proofs, single_proof) = match (body.get("proofs"), body.get("proof")) {
            (Some(_), Some(_)) => return Err(invalid("send either proofs or proof, not both")),
            (Some(proofs), None) => (jwt_proofs(proofs, batch_size)?, false),
            (None, Some(proof)) => (vec![single_jwt_proof(proof)?], true),
            (None, None) => {
                return Err(invalid_proof(
                    "a key proof is required: proofs.jwt (or proof for earlier drafts)",
                ));
            }
        };
        Ok(CredentialRequest {
            requested,
            proofs,
            single_proof,
        })
    }
}

fn requested(body: &Map<String, Value>) -> Result<Requested, RequestError> {
    let configuration = short_string(body, "credential_configuration_id")?;
    let identifier = short_string(body, "credential_identifier")?;
    match (configuration, identifier) {
        (Some(_), Some(_)) => Err(invalid(
            "send either credential_configuration_id or credential_identifier, not both",
        )),
        (Some(id), None) => Ok(Requested::Configuration(id)),
        (None, Some(id)) => Ok(Requested::Identifier(id)),
        (None, None) => {
            let Some(format) = short_string(body, "format")? else {
                return Err(invalid(
                    "credential_configuration_id or credential_identifier is required",
                ));
            };
            let vct = short_string(body, "vct")?;
            let types = match body
                .get("credential_definition")
                .and_then(|d| d.get("type"))
            {
                None => None,
                Some(Value::Array(items)) if items.len() <= 16 => Some(
                    items
                        .iter()
                        .map(|t| t.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| invalid("credential_definition.type must be strings"))?,
                ),
                Some(_) => return Err(invalid("credential_definition.type must be an array")),
            };
            Ok(Requested::Format { format, vct, types })
        }
    }
}

fn jwt_proofs(proofs: &Value, batch_size: usize) -> Result<Vec<String>, RequestError> {
    let Some(proofs) = proofs.as_object() else {
        return Err(invalid("proofs must be an object"));
    };
    if proofs.keys().any(|k| k != "jwt") {
        return Err(invalid_proof("only the jwt proof type is supported"));
    }
    let Some(Value::Array(jwts)) = proofs.get("jwt") else {
        return Err(invalid_proof("proofs.jwt must be an array of JWTs"));
    };
    if jwts.is_empty() {
        return Err(invalid_proof("proofs.jwt is empty"));
    }
    if jwts.len() > batch_size {
        return Err(invalid(format!(
            "at most {batch_size} proofs per request (batch_credential_issuance.batch_size)"
        )));
    }
    jwts.iter()
        .map(|j| {
            j.as_str()
                .map(str::to_owned)
                .ok_or_else(|| invalid_proof("proofs.jwt must hold strings"))
        })
        .collect()
}

fn single_jwt_proof(proof: &Value) -> Result<String, RequestError> {
    let Some(proof) = proof.as_object() else {
        return Err(invalid("proof must be an object"));
    };
    if proof.get("proof_type").and_then(Value::as_str) != Some("jwt") {
        return Err(invalid_proof("proof.proof_type must be jwt"));
    }
    proof
        .get("jwt")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| invalid_proof("proof.jwt must be a JWT"))
}

/// What a key proof must show.
#[derive(Debug, Clone, Copy)]
pub struct ProofExpectations<'a> {
    /// The credential issuer identifier: the `aud`.
    pub audience: &'a str,
    /// Now, unix seconds.
    pub now: i64,
    /// Oldest acceptable `iat`, as an age in seconds.
    pub max_age: i64,
}

/// A holder key whose proof verified.
#[derive(Debug, Clone, PartialEq)]
pub struct HolderKey {
    /// The public JWK, its key members only (what `cnf.jwk` carries).
    pub jwk: Value,
    /// RFC 7638 thumbprint.
    pub jkt: String,
    /// The proof's `nonce`.
    pub nonce: Option<String>,
    /// The `did:jwk` the proof named its key by, as the wallet spelled it
    /// (without the fragment): the holder's DID in a W3C credential.
    pub did: Option<String>,
}

/// Members of a public JWK kept in a credential; anything else a wallet
/// put in its header (`kid`, `use`, private extensions) is left out.
const PUBLIC_MEMBERS: [&str; 6] = ["kty", "crv", "x", "y", "n", "e"];

/// Checks a JWT key proof's form, key, signature, `aud` and `iat`.
pub fn check_proof(proof: &str, expected: ProofExpectations<'_>) -> Result<HolderKey, JwtError> {
    let header = jwt::header(proof)?;
    let did = header
        .get("kid")
        .and_then(Value::as_str)
        .filter(|kid| kid.starts_with("did:jwk:"))
        .map(|kid| kid.split('#').next().unwrap_or(kid).to_owned());
    let jwk_value = match (header.get("jwk"), header.get("kid"), header.get("x5c")) {
        (Some(jwk), None, None) => jwk.clone(),
        (None, Some(Value::String(kid)), None) if kid.starts_with("did:jwk:") => {
            crate::formats::did::parse_did_jwk(kid).map_err(|e| JwtError(e.to_string()))?
        }
        (None, Some(_), None) => {
            return Err(JwtError(
                "the proof's kid must be a did:jwk (or send the key as jwk)".into(),
            ));
        }
        (None, None, Some(_)) => {
            return Err(JwtError("x5c key proofs are not supported".into()));
        }
        (None, None, None) => return Err(JwtError("the proof names no key (jwk or kid)".into())),
        _ => {
            return Err(JwtError(
                "the proof must name its key once: jwk or kid".into(),
            ));
        }
    };
    let jwk = jwt::public_jwk(&jwk_value)?;
    let verified = jwt::verify(proof, &jwk, PROOF_TYP)?;
    let claims = &verified.claims;
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == expected.audience,
        Some(Value::Array(auds)) => auds.iter().any(|a| a == expected.audience),
        _ => false,
    };
    if !audience_ok {
        return Err(JwtError(format!("aud must be {}", expected.audience)));
    }
    let iat = jwt::time_claim(claims, "iat")?;
    if iat > expected.now + FUTURE_SKEW_SECS || iat < expected.now - expected.max_age {
        return Err(JwtError(format!(
            "iat is outside the accepted window ({} s old at most)",
            expected.max_age
        )));
    }
    if claims.get("iss").is_some_and(|iss| !iss.is_string()) {
        return Err(JwtError("iss must be a string".into()));
    }
    let nonce = match claims.get("nonce") {
        None => None,
        Some(Value::String(n)) => Some(n.clone()),
        Some(_) => return Err(JwtError("nonce must be a string".into())),
    };
    let public: Map<String, Value> = jwk_value
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| PUBLIC_MEMBERS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    Ok(HolderKey {
        jkt: jwt::thumbprint(&jwk)?,
        jwk: Value::Object(public),
        nonce,
        did,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<CredentialRequest, RequestError> {
        CredentialRequest::parse(body.as_bytes(), 2)
    }

    #[test]
    fn one_point_zero_and_draft_requests_parse() {
        let r = parse(r#"{"credential_configuration_id":"A","proofs":{"jwt":["x","y"]}}"#).unwrap();
        assert_eq!(r.requested, Requested::Configuration("A".into()));
        assert_eq!(r.proofs.len(), 2);
        assert!(!r.single_proof);
        let r = parse(r#"{"credential_identifier":"A","proof":{"proof_type":"jwt","jwt":"x"}}"#)
            .unwrap();
        assert_eq!(r.requested, Requested::Identifier("A".into()));
        assert!(r.single_proof);
        let r = parse(
            r#"{"format":"jwt_vc_json","credential_definition":{"type":["VerifiableCredential","X"]},"proof":{"proof_type":"jwt","jwt":"x"}}"#,
        )
        .unwrap();
        assert!(matches!(r.requested, Requested::Format { types: Some(t), .. } if t.len() == 2));
    }

    #[test]
    fn malformed_requests_get_the_right_code() {
        for (body, code) in [
            ("[]", ErrorCode::InvalidCredentialRequest),
            (
                r#"{"proofs":{"jwt":["x"]}}"#,
                ErrorCode::InvalidCredentialRequest,
            ),
            (
                r#"{"credential_configuration_id":"A","credential_identifier":"A","proofs":{"jwt":["x"]}}"#,
                ErrorCode::InvalidCredentialRequest,
            ),
            (
                r#"{"credential_configuration_id":"A"}"#,
                ErrorCode::InvalidProof,
            ),
            (
                r#"{"credential_configuration_id":"A","proofs":{"jwt":["x","y","z"]}}"#,
                ErrorCode::InvalidCredentialRequest,
            ),
            (
                r#"{"credential_configuration_id":"A","proofs":{"ldp_vp":["x"]}}"#,
                ErrorCode::InvalidProof,
            ),
            (
                r#"{"credential_configuration_id":"A","proof":{"proof_type":"cwt","cwt":"x"}}"#,
                ErrorCode::InvalidProof,
            ),
            (
                r#"{"credential_configuration_id":"A","proofs":{"jwt":["x"]},"proof":{"proof_type":"jwt","jwt":"x"}}"#,
                ErrorCode::InvalidCredentialRequest,
            ),
            (
                r#"{"credential_configuration_id":"A","proofs":{"jwt":["x"]},"credential_response_encryption":{}}"#,
                ErrorCode::InvalidEncryptionParameters,
            ),
        ] {
            assert_eq!(parse(body).unwrap_err().code, code, "{body}");
        }
    }

    #[test]
    fn proofs_without_a_usable_key_are_refused_before_any_signature_check() {
        let expected = ProofExpectations {
            audience: "https://n.example",
            now: 1_000,
            max_age: 300,
        };
        let b64 = |s: &str| crate::jose::b64url(s.as_bytes());
        for header in [
            r#"{"typ":"openid4vci-proof+jwt","alg":"ES256"}"#,
            r#"{"typ":"openid4vci-proof+jwt","alg":"ES256","kid":"https://k.example/1"}"#,
            r#"{"typ":"openid4vci-proof+jwt","alg":"HS256","jwk":{"kty":"oct","k":"AAAA"}}"#,
            r#"{"typ":"openid4vci-proof+jwt","alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"AA","y":"AA","d":"AA"}}"#,
        ] {
            let proof = format!("{}.{}.AAAA", b64(header), b64("{}"));
            assert!(check_proof(&proof, expected).is_err(), "{header}");
        }
    }
}
