//! HTTP: the axum router, handlers, admin authentication, the flood limit,
//! error responses and the TLS accept loop. No SQL and no PKCS#11 here:
//! handlers call the use cases in `issuance`.

mod audit;
mod auth;
mod body;
mod discovery;
pub mod error;
pub mod flood;
mod offers;
pub mod server;
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
use crate::issuance::Notary;
use crate::oid4vci::metadata::{self, MetadataInputs};
use flood::FloodGuard;

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The use cases.
    pub notary: Notary,
    /// Per-address limit on unknown codes.
    pub flood: Arc<FloodGuard>,
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
}

/// Configurable response behaviour.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// Whether the token endpoint is enabled.
    pub pre_authorized_enabled: bool,
    /// Error for a wrong PIN.
    pub wrong_pin_error: WrongPinError,
    /// Response for a locked offer.
    pub locked_response: LockedResponse,
    /// Time a client gets to send a request body.
    pub body_read_timeout: Duration,
}

impl AppState {
    /// Builds the state from the config and the wired use cases.
    pub fn new(config: &Config, notary: Notary) -> Self {
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
        };
        let documents = Documents {
            authorization_server: metadata::authorization_server(&inputs),
            credential_issuer: (config.credential_issuer() == config.server.public_url)
                .then(|| metadata::credential_issuer(&inputs)),
        };
        AppState {
            notary,
            flood: Arc::new(FloodGuard::new(
                config.flood.max_unknown_codes,
                Duration::from_secs(config.flood.window_secs),
            )),
            documents: Arc::new(documents),
            behaviour: Behaviour {
                pre_authorized_enabled: config.issuance.pre_authorized_code_enabled,
                wrong_pin_error: config.issuance.wrong_pin_error,
                locked_response: config.issuance.locked_response,
                body_read_timeout: Duration::from_secs(config.server.body_read_timeout_secs),
            },
        }
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
        .allow_headers([header::CONTENT_TYPE])
        .expose_headers([
            header::RETRY_AFTER,
            header::HeaderName::from_static("x-request-id"),
        ])
        .max_age(Duration::from_secs(600));
    // Each wallet route also answers OPTIONS, so that CORS preflights reach
    // the CORS layer instead of the 405 fallback.
    let preflight = || async { axum::http::StatusCode::NO_CONTENT };
    let wallet = Router::new()
        .route(
            "/oid4vci/token",
            post(token::token).layer(no_store()).options(preflight),
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
        .layer(cors);
    let admin = Router::new()
        .route("/v1/openid/offers/pre-authorized", post(offers::create))
        .route("/v1/openid/offers", get(offers::list))
        .route(
            "/v1/openid/offers/{id}",
            get(offers::get).delete(offers::revoke),
        )
        .route("/v1/audit", get(audit::entries))
        .route("/v1/custody", get(audit::custody))
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
