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
    /// Whether notary issues the credentials itself (credential, nonce and
    /// notification endpoints), rather than being the authorization server
    /// alone.
    pub serves_credentials: bool,
    /// Most proofs per credential request.
    pub batch_size: u32,
    /// The issuer's `display` entries.
    pub display: Option<&'a Value>,
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
/// notary's public URL is the credential issuer identifier. When notary
/// issues the credentials itself, each configuration gets the binding,
/// signing and proof members a wallet needs, unless the config sets them;
/// `credential_signing_alg_values_supported` is filled in per request from
/// the credential key (see [`with_credential_alg`]).
pub fn credential_issuer(m: &MetadataInputs<'_>) -> Value {
    if !m.serves_credentials {
        let credential_endpoint = m
            .credential_endpoint
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{}/credential", m.credential_issuer));
        let configurations: serde_json::Map<String, Value> = m
            .credential_configurations
            .iter()
            .map(|(id, configuration)| (id.clone(), with_metadata(configuration)))
            .collect();
        let mut doc = json!({
            "credential_issuer": m.credential_issuer,
            "authorization_servers": [m.public_url],
            "credential_endpoint": credential_endpoint,
            "credential_configurations_supported": configurations,
        });
        if let Some(display) = m.display {
            doc["display"] = display.clone();
        }
        return doc;
    }
    let configurations: serde_json::Map<String, Value> = m
        .credential_configurations
        .iter()
        .map(|(id, configuration)| (id.clone(), completed(configuration)))
        .collect();
    let mut doc = json!({
        "credential_issuer": m.credential_issuer,
        "authorization_servers": [m.public_url],
        "credential_endpoint": format!("{}/oid4vci/credential", m.public_url),
        "nonce_endpoint": format!("{}/oid4vci/nonce", m.public_url),
        "notification_endpoint": format!("{}/oid4vci/notification", m.public_url),
        "credential_configurations_supported": configurations,
    });
    // OID4VCI 1.0 §12.2.4: a batch size is at least 2; one proof per
    // request is said by leaving the member out.
    if m.batch_size >= 2 {
        doc["batch_credential_issuance"] = json!({ "batch_size": m.batch_size });
    }
    if let Some(display) = m.display {
        doc["display"] = display.clone();
    }
    doc
}

/// A configuration as served in either mode: notary's `sd` markers
/// removed, and `display` and `claims` also under `credential_metadata`.
/// OID4VCI 1.0 final moved them there; drafts read them beside `format`.
/// Both are served, so wallets of either find them.
fn with_metadata(configuration: &Value) -> Value {
    let mut served = crate::issuance::profiles::served(configuration);
    if let Some(object) = served.as_object_mut() {
        if !object.contains_key("credential_metadata") {
            let metadata: serde_json::Map<String, Value> = ["display", "claims"]
                .into_iter()
                .filter_map(|k| Some((k.to_owned(), object.get(k)?.clone())))
                .collect();
            if !metadata.is_empty() {
                object.insert("credential_metadata".to_owned(), Value::Object(metadata));
            }
        }
    }
    served
}

/// A configuration as notary serves it when it issues: [`with_metadata`],
/// and the members wallets need filled in where the config leaves them out.
fn completed(configuration: &Value) -> Value {
    let mut served = with_metadata(configuration);
    let binding = match configuration["format"].as_str() {
        Some("jwt_vc_json") => json!(["did:jwk"]),
        _ => json!(["jwk"]),
    };
    if let Some(object) = served.as_object_mut() {
        object
            .entry("cryptographic_binding_methods_supported")
            .or_insert(binding);
        object.entry("proof_types_supported").or_insert(json!({
            "jwt": { "proof_signing_alg_values_supported": jwt::ACCEPTED_ALGS }
        }));
    }
    served
}

/// Sets `credential_signing_alg_values_supported` of every configuration
/// that does not set it to the credential key's algorithm.
pub fn with_credential_alg(doc: &mut Value, alg: &str) {
    if let Some(configurations) = doc
        .get_mut("credential_configurations_supported")
        .and_then(Value::as_object_mut)
    {
        for configuration in configurations.values_mut() {
            if let Some(object) = configuration.as_object_mut() {
                object
                    .entry("credential_signing_alg_values_supported")
                    .or_insert(json!([alg]));
            }
        }
    }
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
            serves_credentials: true,
            batch_size: 10,
            display: None,
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
    fn an_issuing_notary_advertises_its_endpoints_and_an_authorization_server_alone_does_not() {
        let configs = json!({
            "D": {"format": "dc+sd-jwt", "vct": "v", "claims": [{"path": ["a"], "sd": "never"}]},
            "W": {"format": "jwt_vc_json", "credential_definition": {"type": ["VerifiableCredential"]}},
        });
        let configs = configs.as_object().unwrap();
        let mut m = inputs(configs, true);
        let mut doc = credential_issuer(&m);
        with_credential_alg(&mut doc, "ES256");
        assert_eq!(
            doc["credential_endpoint"],
            "https://notary.example/oid4vci/credential"
        );
        assert_eq!(
            doc["nonce_endpoint"],
            "https://notary.example/oid4vci/nonce"
        );
        assert_eq!(doc["batch_credential_issuance"]["batch_size"], 10);
        m.batch_size = 1;
        assert!(
            credential_issuer(&m)
                .get("batch_credential_issuance")
                .is_none()
        );
        m.batch_size = 10;
        let d = &doc["credential_configurations_supported"]["D"];
        assert_eq!(d["cryptographic_binding_methods_supported"], json!(["jwk"]));
        assert_eq!(
            d["credential_signing_alg_values_supported"],
            json!(["ES256"])
        );
        assert!(d["claims"][0].get("sd").is_none());
        assert_eq!(d["credential_metadata"]["claims"], d["claims"]);
        let w = &doc["credential_configurations_supported"]["W"];
        assert_eq!(
            w["cryptographic_binding_methods_supported"],
            json!(["did:jwk"])
        );
        m.serves_credentials = false;
        m.credential_endpoint = Some("https://ci.example/credential");
        let doc = credential_issuer(&m);
        assert_eq!(doc["credential_endpoint"], "https://ci.example/credential");
        for absent in [
            "nonce_endpoint",
            "notification_endpoint",
            "batch_credential_issuance",
        ] {
            assert!(doc.get(absent).is_none(), "{absent}");
        }
    }

    #[test]
    fn disabled_grant_is_not_advertised() {
        let configs = serde_json::Map::new();
        let as_meta = authorization_server(&inputs(&configs, false));
        assert_eq!(as_meta["grant_types_supported"], json!([]));
    }
}
