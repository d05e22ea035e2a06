//! HTTP: the axum router, handlers, admin authentication, the flood limit,
//! error responses and the TLS accept loop. No SQL and no PKCS#11 here:
//! handlers call the use cases in `issuance`.

mod audit;
mod auth;
mod body;
mod credential;
mod discovery;
pub mod error;
pub mod flood;
mod introspect;
mod offer_page;
mod offers;
pub mod server;
mod status;
pub mod tls;
mod token;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Method, header};
use axum::routing::{get, post};
use tower_http::cors::{Any, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::config::{Config, LockedResponse, WrongPinError};
use crate::issuance::{Notary, OFFER_REFERENCE_PATH};
use crate::oid4vci::attestation::{ATTESTATION_HEADER, POP_HEADER};
use crate::oid4vci::metadata::{self, MetadataInputs};
use flood::FloodGuard;

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The use cases.
    pub notary: Notary,
    /// Per-address budget for failing wallet-facing requests that cost HSM
    /// or database work (token requests, offer references).
    pub flood: Arc<FloodGuard>,
    /// The same for admin API keys, kept apart so that strangers failing at
    /// the wallet endpoints cannot lock out a back office on their address.
    pub admin_flood: Arc<FloodGuard>,
    /// The last readiness verdict, reused briefly.
    pub readiness: Arc<discovery::ReadinessCache>,
    /// Documents computed once at start.
    pub documents: Arc<Documents>,
    /// Error dialects and switches.
    pub behaviour: Behaviour,
}

/// Discovery documents, computed at start.
#[derive(Debug)]
pub struct Documents {
    /// RFC 8414 metadata.
    pub authorization_server: serde_json::Value,
    /// OID4VCI issuer metadata, when notary is its own credential issuer.
    pub credential_issuer: Option<serde_json::Value>,
    /// The OpenAPI document as JSON, with this server's URL in `servers`.
    pub openapi: String,
    /// Names the offer page shows, from the metadata's `display`.
    pub names: offer_page::DisplayNames,
}

/// The OpenAPI 3.1 description of the HTTP API, as reviewed in `docs/`.
pub const OPENAPI_YAML: &str = include_str!("../../docs/openapi.yaml");

/// The OpenAPI document as JSON, naming `public_url` as its server.
pub fn openapi_json(public_url: &str) -> Result<String, String> {
    let mut doc: serde_json::Value = serde_norway::from_str(OPENAPI_YAML)
        .map_err(|e| format!("docs/openapi.yaml is not valid YAML: {e}"))?;
    doc["servers"] = serde_json::json!([{ "url": public_url }]);
    Ok(doc.to_string())
}

/// Configurable response behaviour.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// The token endpoint's public URL: the `htu` DPoP proofs must name.
    pub token_url: url::Url,
    /// The credential endpoint's public URL (DPoP `htu`).
    pub credential_url: url::Url,
    /// The notification endpoint's public URL (DPoP `htu`).
    pub notification_url: url::Url,
    /// Whether notary serves the credential issuer's endpoints.
    pub serves_credentials: bool,
    /// Whether the token endpoint is enabled.
    pub pre_authorized_enabled: bool,
    /// Error for a wrong PIN.
    pub wrong_pin_error: WrongPinError,
    /// Response for a locked offer.
    pub locked_response: LockedResponse,
    /// Time a client gets to send a request body.
    pub body_read_timeout: Duration,
    /// Token requests without a DPoP proof are refused.
    pub require_dpop: bool,
    /// DPoP proofs must carry a server nonce.
    pub require_dpop_nonce: bool,
    /// Token requests without a client attestation are refused.
    pub require_client_attestation: bool,
}

impl AppState {
    /// Builds the state from the config and the wired use cases.
    pub fn new(config: &Config, notary: Notary) -> Result<Self, crate::config::ConfigError> {
        let inputs = MetadataInputs {
            public_url: &config.server.public_url,
            credential_issuer: config.credential_issuer(),
            credential_endpoint: config.credential_issuer.credential_endpoint.as_deref(),
            credential_configurations: &config
                .credential_issuer
                .credential_configurations_supported,
            pre_authorized_enabled: config.issuance.pre_authorized_code_enabled,
            // Filled in per request from the key ring (rotation may change it).
            signing_alg: "EdDSA",
            attestation_enabled: !notary.policy().trusted_wallet_providers.is_empty(),
            attestation_required: config.issuance.require_client_attestation,
            serves_credentials: config.serves_credentials(),
            batch_size: config.issuance.batch_size,
            display: config.credential_issuer.display.as_ref(),
        };
        let endpoint = |path: &str| {
            url::Url::parse(&format!("{}{path}", config.server.public_url)).map_err(|e| {
                crate::config::ConfigError::Invalid(format!("server.public_url is not a URL: {e}"))
            })
        };
        let token_url = endpoint("/oid4vci/token")?;
        let documents = Documents {
            authorization_server: metadata::authorization_server(&inputs),
            credential_issuer: (config.credential_issuer() == config.server.public_url)
                .then(|| metadata::credential_issuer(&inputs)),
            openapi: openapi_json(&config.server.public_url)
                .map_err(crate::config::ConfigError::Invalid)?,
            names: offer_page::DisplayNames::from_config(&config.credential_issuer),
        };
        Ok(AppState {
            notary,
            flood: Arc::new(FloodGuard::from_config(&config.flood)),
            admin_flood: Arc::new(FloodGuard::from_config(&config.flood)),
            documents: Arc::new(documents),
            readiness: Arc::default(),
            behaviour: Behaviour {
                pre_authorized_enabled: config.issuance.pre_authorized_code_enabled,
                wrong_pin_error: config.issuance.wrong_pin_error,
                locked_response: config.issuance.locked_response,
                body_read_timeout: Duration::from_secs(config.server.body_read_timeout_secs),
                token_url,
                credential_url: endpoint("/oid4vci/credential")?,
                notification_url: endpoint("/oid4vci/notification")?,
                serves_credentials: config.serves_credentials(),
                require_dpop: config.issuance.require_dpop,
                require_dpop_nonce: config.issuance.require_dpop_nonce,
                require_client_attestation: config.issuance.require_client_attestation,
            },
        })
    }
}

/// The whole public router.
///
/// Wallet-facing endpoints (token, discovery, JWKS) answer cross-origin
/// requests, so browser wallets can use them; the admin API sends no CORS
/// headers, so a browser will not let another site's script call it.
pub fn router(state: AppState) -> Router {
    let no_store = || {
        SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        )
    };
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::HeaderName::from_static("dpop"),
            header::HeaderName::from_static(ATTESTATION_HEADER),
            header::HeaderName::from_static(POP_HEADER),
        ])
        .expose_headers([
            header::RETRY_AFTER,
            header::WWW_AUTHENTICATE,
            header::HeaderName::from_static("x-request-id"),
            error::DPOP_NONCE,
        ])
        .max_age(Duration::from_secs(600));
    // Each wallet route also answers OPTIONS, so that CORS preflights reach
    // the CORS layer instead of the 405 fallback.
    let preflight = || async { axum::http::StatusCode::NO_CONTENT };
    let mut wallet = Router::new().route(
        "/oid4vci/token",
        post(token::token).layer(no_store()).options(preflight),
    );
    if state.behaviour.serves_credentials {
        wallet = wallet
            .route(
                "/oid4vci/nonce",
                post(credential::nonce).layer(no_store()).options(preflight),
            )
            .route(
                "/oid4vci/credential",
                post(credential::credential)
                    .layer(no_store())
                    .options(preflight),
            )
            .route(
                "/oid4vci/notification",
                post(credential::notification)
                    .layer(no_store())
                    .options(preflight),
            )
            .route(
                "/.well-known/jwt-vc-issuer",
                get(discovery::jwt_vc_issuer).options(preflight),
            )
            .route(
                "/.well-known/did.json",
                get(discovery::did_document).options(preflight),
            )
            .route("/status/{list}", get(status::list).options(preflight));
    }
    let wallet = wallet
        .route(
            &format!("{OFFER_REFERENCE_PATH}{{reference}}"),
            get(offer_page::credential_offer).options(preflight),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(discovery::authorization_server).options(preflight),
        )
        .route(
            "/.well-known/openid-credential-issuer",
            get(discovery::credential_issuer).options(preflight),
        )
        .route(
            "/.well-known/jwks.json",
            get(discovery::jwks).options(preflight),
        )
        .route("/openapi.json", get(discovery::openapi).options(preflight))
        .layer(cors);
    let admin = Router::new()
        .route("/v1/openid/offers/pre-authorized", post(offers::create))
        .route("/v1/openid/offers", get(offers::list))
        .route(
            "/v1/openid/offers/{id}",
            get(offers::get).delete(offers::revoke),
        )
        .route("/v1/credentials", get(status::credentials))
        .route("/v1/credentials/revoke", post(status::revoke_all))
        .route("/v1/credentials/{id}", get(status::credential))
        .route("/v1/credentials/{id}/{action}", post(status::change))
        .route("/v1/audit", get(audit::entries))
        .route("/v1/custody", get(audit::custody))
        .route("/introspect", post(introspect::introspect))
        .layer(no_store());
    Router::new()
        .route("/healthz", get(discovery::healthz))
        .route("/readyz", get(discovery::readyz))
        .merge(wallet)
        .merge(admin)
        .fallback(discovery::not_found)
        .method_not_allowed_fallback(discovery::method_not_allowed)
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_parses_and_names_every_route() {
        let doc: serde_json::Value =
            serde_json::from_str(&openapi_json("https://notary.example").unwrap()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["servers"][0]["url"], "https://notary.example");
        let by_reference = format!("{OFFER_REFERENCE_PATH}{{reference}}");
        for (path, method) in [
            ("/oid4vci/token", "post"),
            ("/oid4vci/nonce", "post"),
            ("/oid4vci/credential", "post"),
            ("/oid4vci/notification", "post"),
            ("/.well-known/jwt-vc-issuer", "get"),
            ("/.well-known/did.json", "get"),
            (by_reference.as_str(), "get"),
            ("/introspect", "post"),
            ("/.well-known/oauth-authorization-server", "get"),
            ("/.well-known/openid-credential-issuer", "get"),
            ("/.well-known/jwks.json", "get"),
            ("/openapi.json", "get"),
            ("/healthz", "get"),
            ("/readyz", "get"),
            ("/v1/openid/offers/pre-authorized", "post"),
            ("/v1/openid/offers", "get"),
            ("/v1/openid/offers/{id}", "get"),
            ("/v1/openid/offers/{id}", "delete"),
            ("/v1/audit", "get"),
            ("/v1/custody", "get"),
            ("/status/{list}", "get"),
            ("/v1/credentials", "get"),
            ("/v1/credentials/revoke", "post"),
            ("/v1/credentials/{id}", "get"),
            ("/v1/credentials/{id}/{action}", "post"),
        ] {
            assert!(doc["paths"][path][method].is_object(), "{method} {path}");
        }
    }
}
