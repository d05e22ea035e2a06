//! Discovery documents: RFC 8414 authorization server metadata and the
//! OID4VCI Credential Issuer metadata.

use serde_json::{Value, json};

use super::PRE_AUTHORIZED_GRANT;
use super::jwt;
use super::token::OPENID_CREDENTIAL;

/// `token_endpoint_auth_methods_supported` value of attestation-based client
/// authentication.
pub const ATTESTATION_AUTH_METHOD: &str = "attest_jwt_client_auth";

/// What the metadata documents are built from.
#[derive(Debug, Clone)]
pub struct MetadataInputs<'a> {
    /// notary's public URL: the OAuth `issuer`.
    pub public_url: &'a str,
    /// The credential issuer identifier.
    pub credential_issuer: &'a str,
    /// The credential issuer's credential endpoint, if configured.
    pub credential_endpoint: Option<&'a str>,
    /// `credential_configurations_supported`.
    pub credential_configurations: &'a serde_json::Map<String, Value>,
    /// Whether the pre-authorized code grant is enabled.
    pub pre_authorized_enabled: bool,
    /// `alg` of the active signing key.
    pub signing_alg: &'a str,
    /// Whether client attestations can be verified (trusted keys configured).
    pub attestation_enabled: bool,
    /// Whether the token endpoint refuses requests without one.
    pub attestation_required: bool,
}

/// `/.well-known/oauth-authorization-server` (RFC 8414).
pub fn authorization_server(m: &MetadataInputs<'_>) -> Value {
    let grants: Vec<&str> = if m.pre_authorized_enabled {
        vec![PRE_AUTHORIZED_GRANT]
    } else {
        vec![]
    };
    let mut auth_methods = Vec::new();
    if !m.attestation_required {
        auth_methods.push("none");
    }
    if m.attestation_enabled {
        auth_methods.push(ATTESTATION_AUTH_METHOD);
    }
    let mut doc = json!({
        "issuer": m.public_url,
        "token_endpoint": format!("{}/oid4vci/token", m.public_url),
        "jwks_uri": format!("{}/.well-known/jwks.json", m.public_url),
        "introspection_endpoint": format!("{}/introspect", m.public_url),
        "introspection_endpoint_auth_methods_supported": ["bearer"],
        "grant_types_supported": grants,
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": auth_methods,
        // OID4VCI §12.3: false when the token endpoint needs client
        // authentication, as a required attestation is.
        "pre-authorized_grant_anonymous_access_supported": !m.attestation_required,
        "access_token_signing_alg_values_supported": [m.signing_alg],
        "dpop_signing_alg_values_supported": jwt::ACCEPTED_ALGS,
        "authorization_details_types_supported": [OPENID_CREDENTIAL],
    });
    if m.attestation_enabled {
        doc["client_attestation_signing_alg_values_supported"] = json!(jwt::ACCEPTED_ALGS);
        doc["client_attestation_pop_signing_alg_values_supported"] = json!(jwt::ACCEPTED_ALGS);
    }
    doc
}

/// `/.well-known/openid-credential-issuer` (OID4VCI 1.0 §12.2), served when
/// notary's public URL is the credential issuer identifier.
pub fn credential_issuer(m: &MetadataInputs<'_>) -> Value {
    let credential_endpoint = m
        .credential_endpoint
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{}/credential", m.credential_issuer));
    json!({
        "credential_issuer": m.credential_issuer,
        "authorization_servers": [m.public_url],
        "credential_endpoint": credential_endpoint,
        "nonce_endpoint": format!("{}/oid4vci/nonce", m.public_url),
        "credential_configurations_supported": m.credential_configurations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(configs: &serde_json::Map<String, Value>, enabled: bool) -> MetadataInputs<'_> {
        MetadataInputs {
            public_url: "https://notary.example",
            credential_issuer: "https://notary.example",
            credential_endpoint: None,
            credential_configurations: configs,
            pre_authorized_enabled: enabled,
            signing_alg: "EdDSA",
            attestation_enabled: false,
            attestation_required: false,
        }
    }

    #[test]
    fn issuer_and_authorization_servers_agree() {
        let configs = serde_json::Map::new();
        let m = inputs(&configs, true);
        let as_meta = authorization_server(&m);
        let ci_meta = credential_issuer(&m);
        assert_eq!(ci_meta["authorization_servers"][0], as_meta["issuer"]);
        assert_eq!(as_meta["grant_types_supported"][0], PRE_AUTHORIZED_GRANT);
        assert_eq!(
            as_meta["token_endpoint"],
            "https://notary.example/oid4vci/token"
        );
    }

    #[test]
    fn anonymous_access_is_advertised_only_when_attestation_is_optional() {
        let configs = serde_json::Map::new();
        let mut m = inputs(&configs, true);
        m.attestation_enabled = true;
        let key = "pre-authorized_grant_anonymous_access_supported";
        assert_eq!(authorization_server(&m)[key], json!(true));
        m.attestation_required = true;
        let as_meta = authorization_server(&m);
        assert_eq!(as_meta[key], json!(false));
        assert_eq!(
            as_meta["token_endpoint_auth_methods_supported"],
            json!([ATTESTATION_AUTH_METHOD])
        );
        assert!(credential_issuer(&m).get(key).is_none());
    }

    #[test]
    fn disabled_grant_is_not_advertised() {
        let configs = serde_json::Map::new();
        let as_meta = authorization_server(&inputs(&configs, false));
        assert_eq!(as_meta["grant_types_supported"], json!([]));
    }
}
