//! Credential Offers (OID4VCI 1.0 §4.1) and the `tx_code` object.

use serde::{Deserialize, Serialize};

use super::PRE_AUTHORIZED_GRANT;

/// How the PIN is typed on the wallet's keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputMode {
    /// Digits only.
    Numeric,
    /// Any characters (notary generates upper-case letters and digits).
    Text,
}

/// The `tx_code` object of a credential offer: what the wallet shows the
/// holder before asking for the PIN. Never contains the PIN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxCodeSpec {
    /// Number of characters.
    pub length: u32,
    /// Keyboard hint.
    pub input_mode: InputMode,
    /// Where the holder finds the PIN (at most 300 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The pre-authorized code grant inside an offer.
#[derive(Debug, Clone, Serialize)]
pub struct PreAuthorizedGrant<'a> {
    /// The one-time code.
    #[serde(rename = "pre-authorized_code")]
    pub code: &'a str,
    /// Present when a PIN is required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_code: Option<&'a TxCodeSpec>,
    /// Set when the credential issuer lists several authorization servers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_server: Option<&'a str>,
}

/// A Credential Offer, ready to serialise.
#[derive(Debug, Clone, Serialize)]
pub struct CredentialOffer<'a> {
    /// The credential issuer identifier.
    pub credential_issuer: &'a str,
    /// Credential configuration ids from the issuer's metadata.
    pub credential_configuration_ids: &'a [String],
    /// The grants; notary issues only the pre-authorized code grant.
    pub grants: Grants<'a>,
}

/// `grants` of an offer.
#[derive(Debug, Clone, Serialize)]
pub struct Grants<'a> {
    /// The pre-authorized code grant.
    #[serde(rename = "urn:ietf:params:oauth:grant-type:pre-authorized_code")]
    pub pre_authorized_code: PreAuthorizedGrant<'a>,
}

impl CredentialOffer<'_> {
    /// The offer as a by-value deep link:
    /// `openid-credential-offer://?credential_offer=<percent-encoded JSON>`.
    pub fn to_uri(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        let encoded: String = form_urlencoded::byte_serialize(json.as_bytes()).collect();
        // byte_serialize writes spaces as '+'; a URI query wants %20.
        format!(
            "openid-credential-offer://?credential_offer={}",
            encoded.replace('+', "%20")
        )
    }
}

// The grant key is spelled out in the serde attribute above; keep it in sync.
const _: () = assert!(PRE_AUTHORIZED_GRANT.len() == 52);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_uri_round_trips_to_oid4vci_json() {
        let ids = vec!["UniversityDegree_jwt".to_owned()];
        let tx = TxCodeSpec {
            length: 6,
            input_mode: InputMode::Numeric,
            description: Some("PIN sent by e-mail".to_owned()),
        };
        let offer = CredentialOffer {
            credential_issuer: "https://issuer.example",
            credential_configuration_ids: &ids,
            grants: Grants {
                pre_authorized_code: PreAuthorizedGrant {
                    code: "abc-_123",
                    tx_code: Some(&tx),
                    authorization_server: None,
                },
            },
        };
        let uri = offer.to_uri();
        let query = uri.strip_prefix("openid-credential-offer://?").unwrap();
        let (_, json) = form_urlencoded::parse(query.as_bytes()).next().unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["credential_issuer"], "https://issuer.example");
        let grant = &value["grants"][PRE_AUTHORIZED_GRANT];
        assert_eq!(grant["pre-authorized_code"], "abc-_123");
        assert_eq!(grant["tx_code"]["length"], 6);
        assert_eq!(grant["tx_code"]["input_mode"], "numeric");
        assert!(grant.get("authorization_server").is_none());
        assert!(!uri.contains('+') && !uri.contains(' '));
    }
}
