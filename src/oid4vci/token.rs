//! Token requests (form or JSON bodies) and token responses.
//!
//! Parsing moves the code and PIN straight into their secret types; no other
//! copy of them is kept. Unknown parameters are ignored (RFC 6749 §3.2);
//! a repeated parameter is an error.

use std::borrow::Cow;

use serde::Serialize;

use crate::secret::{PreAuthorizedCode, TxCode};

mod json;

/// Body encodings the token endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/x-www-form-urlencoded` (RFC 6749; what most wallets send).
    Form,
    /// `application/json` (as in the seed API).
    Json,
}

/// A parsed token request.
#[derive(Debug, Default)]
pub struct TokenRequest {
    /// `grant_type`.
    pub grant_type: Option<String>,
    /// `pre-authorized_code`.
    pub code: Option<PreAuthorizedCode>,
    /// `tx_code`, or its older alias `user_pin`.
    pub tx_code: Option<TxCode>,
    /// `client_id`, if the wallet sent one.
    pub client_id: Option<String>,
    /// `authorization_details` (RFC 9396), parsed.
    pub authorization_details: Option<Vec<CredentialAuthorization>>,
}

/// One `openid_credential` entry of `authorization_details` (OID4VCI 1.0 §5.1.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialAuthorization {
    /// Always `openid_credential`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The credential configuration asked for.
    pub credential_configuration_id: String,
    /// Set in responses: the credentials this token may obtain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_identifiers: Option<Vec<String>>,
}

/// The `type` of OID4VCI authorization details.
pub const OPENID_CREDENTIAL: &str = "openid_credential";

/// Most entries accepted in one `authorization_details`.
const MAX_AUTHORIZATION_DETAILS: usize = 16;

/// Parses `authorization_details`: a JSON array of `openid_credential`
/// objects, each naming a `credential_configuration_id`.
fn parse_authorization_details(
    value: &serde_json::Value,
) -> Result<Vec<CredentialAuthorization>, ParseError> {
    let entries = value
        .as_array()
        .filter(|a| !a.is_empty() && a.len() <= MAX_AUTHORIZATION_DETAILS)
        .ok_or_else(|| {
            err(format!(
                "authorization_details must be a JSON array of 1..={MAX_AUTHORIZATION_DETAILS} objects"
            ))
        })?;
    entries
        .iter()
        .map(|entry| {
            if entry.get("type").and_then(|t| t.as_str()) != Some(OPENID_CREDENTIAL) {
                return Err(err("authorization_details entries must have type openid_credential"));
            }
            let id = entry
                .get("credential_configuration_id")
                .and_then(|c| c.as_str())
                .filter(|c| !c.is_empty() && c.len() <= 256)
                .ok_or_else(|| {
                    err("each authorization_details entry needs a credential_configuration_id string")
                })?;
            Ok(CredentialAuthorization {
                kind: OPENID_CREDENTIAL,
                credential_configuration_id: id.to_owned(),
                credential_identifiers: None,
            })
        })
        .collect()
}

/// Why a body could not be parsed; the message is safe to return (it never
/// quotes a value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub Cow<'static, str>);

fn err(message: impl Into<Cow<'static, str>>) -> ParseError {
    ParseError(message.into())
}

/// The parameters notary reads; any other is ignored.
const PARAMETERS: [&str; 6] = [
    "grant_type",
    "pre-authorized_code",
    "tx_code",
    "user_pin",
    "client_id",
    "authorization_details",
];

/// Parameter names whose values are secrets and must never travel in a URL.
pub const SECRET_PARAMETERS: [&str; 3] = ["pre-authorized_code", "tx_code", "user_pin"];

impl TokenRequest {
    /// Parses a body in `format`.
    pub fn parse(format: BodyFormat, body: &[u8]) -> Result<Self, ParseError> {
        let raw = match format {
            BodyFormat::Form => RawRequest::from_form(body)?,
            BodyFormat::Json => RawRequest::from_json(body)?,
        };
        raw.finish()
    }
}

/// The fields before the `tx_code`/`user_pin` alias is resolved. Read from
/// JSON by `json.rs`, whose errors never quote a value.
#[derive(Default)]
struct RawRequest {
    grant_type: Option<String>,
    code: Option<SecretField>,
    tx_code: Option<SecretField>,
    user_pin: Option<SecretField>,
    client_id: Option<String>,
    authorization_details: Option<serde_json::Value>,
}

impl RawRequest {
    fn from_form(body: &[u8]) -> Result<Self, ParseError> {
        let mut raw = RawRequest::default();
        let mut seen: Vec<Cow<'_, str>> = Vec::new();
        for (name, value) in form_urlencoded::parse(body) {
            if seen.contains(&name) {
                // Only a name notary reads is quoted: any other could be a
                // PIN sent without its `tx_code=`.
                return Err(if PARAMETERS.contains(&name.as_ref()) {
                    err(format!("parameter {name:?} is repeated"))
                } else {
                    err("a parameter is repeated")
                });
            }
            let value = value.into_owned();
            match name.as_ref() {
                "grant_type" => raw.grant_type = Some(value),
                "pre-authorized_code" => raw.code = Some(SecretField(value)),
                "tx_code" => raw.tx_code = Some(SecretField(value)),
                "user_pin" => raw.user_pin = Some(SecretField(value)),
                "client_id" => raw.client_id = Some(value),
                "authorization_details" => {
                    raw.authorization_details = Some(
                        serde_json::from_str(&value)
                            .map_err(|_| err("authorization_details must be a JSON array"))?,
                    )
                }
                _ => {
                    // Unknown parameters are ignored; wipe the value anyway,
                    // a confused wallet may put a secret under any name.
                    let mut value = value;
                    zeroize::Zeroize::zeroize(&mut value);
                }
            }
            seen.push(name);
        }
        Ok(raw)
    }

    fn from_json(body: &[u8]) -> Result<Self, ParseError> {
        serde_json::from_slice(body).map_err(|e| {
            // Syntax errors name a position; type errors are json.rs's own
            // and name the field and the type. Neither quotes a value.
            err(format!("the JSON body is not a valid token request: {e}"))
        })
    }

    fn finish(self) -> Result<TokenRequest, ParseError> {
        let tx_code = match (self.tx_code, self.user_pin) {
            (Some(a), Some(b)) if a.0 != b.0 => {
                return Err(err("tx_code and user_pin are both present and differ"));
            }
            (Some(a), _) => Some(a),
            (None, b) => b,
        };
        // A JSON body may carry the array itself or, like a form, a string of it.
        let authorization_details = match self.authorization_details {
            None => None,
            Some(serde_json::Value::String(text)) => Some(
                serde_json::from_str(&text)
                    .map_err(|_| err("authorization_details must be a JSON array"))?,
            ),
            Some(value) => Some(value),
        };
        let authorization_details = authorization_details
            .as_ref()
            .map(parse_authorization_details)
            .transpose()?;
        Ok(TokenRequest {
            authorization_details,
            grant_type: self.grant_type,
            code: self.code.map(|c| PreAuthorizedCode::new(c.take())),
            tx_code: tx_code.map(|c| TxCode::new(c.take())),
            client_id: self.client_id,
        })
    }
}

/// A secret string field (`pre-authorized_code`, `tx_code`, `user_pin`),
/// wiped when dropped.
#[derive(zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
struct SecretField(String);

impl SecretField {
    fn take(mut self) -> String {
        std::mem::take(&mut self.0)
    }
}

/// A successful token response (OID4VCI 1.0 §6.2).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    /// The signed access token.
    pub access_token: String,
    /// `Bearer` (or `DPoP` when bound).
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: u64,
    /// Nonce for wallets of earlier drafts (1.0 wallets use the nonce
    /// endpoint); absent when notary is the authorization server alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub c_nonce: Option<String>,
    /// Seconds the nonce is valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub c_nonce_expires_in: Option<u64>,
    /// The authorization details granted, when the request sent some.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<Vec<CredentialAuthorization>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_body_with_user_pin_alias() {
        let body = b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Apre-authorized_code\
                     &pre-authorized_code=abc%2Bdef&user_pin=0042&other=x";
        let req = TokenRequest::parse(BodyFormat::Form, body).unwrap();
        assert_eq!(
            req.grant_type.as_deref(),
            Some(crate::oid4vci::PRE_AUTHORIZED_GRANT)
        );
        assert_eq!(req.code.unwrap().expose(), "abc+def");
        assert_eq!(req.tx_code.unwrap().expose(), "0042");
    }

    #[test]
    fn authorization_details_from_a_form_string_or_a_json_array() {
        let details = r#"[{"type":"openid_credential","credential_configuration_id":"Degree"}]"#;
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("authorization_details", details)
            .finish();
        let req = TokenRequest::parse(BodyFormat::Form, form.as_bytes()).unwrap();
        let parsed = req.authorization_details.unwrap();
        assert_eq!(parsed[0].credential_configuration_id, "Degree");
        let json = format!(r#"{{"authorization_details":{details}}}"#);
        let req = TokenRequest::parse(BodyFormat::Json, json.as_bytes()).unwrap();
        assert_eq!(req.authorization_details.unwrap(), parsed);
        for bad in [
            r#"[]"#,
            r#"{"type":"openid_credential"}"#,
            r#"[{"type":"other","credential_configuration_id":"Degree"}]"#,
            r#"[{"type":"openid_credential"}]"#,
        ] {
            let json = format!(r#"{{"authorization_details":{bad}}}"#);
            assert!(
                TokenRequest::parse(BodyFormat::Json, json.as_bytes()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn repeated_form_parameter_is_rejected() {
        let e = TokenRequest::parse(BodyFormat::Form, b"tx_code=1&tx_code=1").unwrap_err();
        assert!(e.0.contains("\"tx_code\" is repeated"), "{}", e.0);
        // A bare PIN (`&493517&493517`, its `tx_code=` lost) is not quoted.
        let e = TokenRequest::parse(BodyFormat::Form, b"tx_code=1&493517&493517").unwrap_err();
        assert!(
            e.0.contains("repeated") && !e.0.contains("493517"),
            "{}",
            e.0
        );
    }

    #[test]
    fn json_numeric_tx_code_is_taken_as_digits() {
        let req = TokenRequest::parse(
            BodyFormat::Json,
            br#"{"grant_type":"g","pre-authorized_code":"c","tx_code":493536}"#,
        )
        .unwrap();
        assert_eq!(req.tx_code.unwrap().expose(), "493536");
    }

    #[test]
    fn differing_alias_values_are_rejected_and_equal_ones_accepted() {
        assert!(
            TokenRequest::parse(BodyFormat::Json, br#"{"tx_code":"1","user_pin":"2"}"#).is_err()
        );
        let req =
            TokenRequest::parse(BodyFormat::Json, br#"{"tx_code":"12","user_pin":"12"}"#).unwrap();
        assert_eq!(req.tx_code.unwrap().expose(), "12");
    }

    #[test]
    fn duplicate_json_key_and_wrong_types_are_rejected() {
        assert!(
            TokenRequest::parse(BodyFormat::Json, br#"{"tx_code":"1","tx_code":"1"}"#).is_err()
        );
        assert!(TokenRequest::parse(BodyFormat::Json, br#"{"tx_code":-5}"#).is_err());
        assert!(TokenRequest::parse(BodyFormat::Json, br#"[1,2]"#).is_err());
        let e = TokenRequest::parse(
            BodyFormat::Json,
            br#"{"pre-authorized_code":"s3cr3t","tx_code":{}}"#,
        )
        .unwrap_err();
        assert!(!e.0.contains("s3cr3t"));
    }
}
