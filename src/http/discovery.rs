//! Discovery documents, the JWKS and health probes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;

pub(super) async fn authorization_server(State(state): State<AppState>) -> Response {
    let mut doc = state.documents.authorization_server.clone();
    doc["access_token_signing_alg_values_supported"] =
        serde_json::json!(state.notary.key_ring().algorithms(crate::issuance::now()));
    Json(doc).into_response()
}

pub(super) async fn credential_issuer(State(state): State<AppState>) -> Response {
    match &state.documents.credential_issuer {
        Some(doc) => {
            let mut doc = doc.clone();
            if let Some(key) = state.notary.active_credential_key() {
                crate::oid4vci::metadata::with_credential_alg(
                    &mut doc,
                    key.info.algorithm().as_str(),
                );
            }
            Json(doc).into_response()
        }
        None => ApiError::not_found(
            "the credential issuer is another host; its metadata is served there",
        )
        .into_response(),
    }
}

/// Active and retiring keys, as the key ring has them now (a rotation done
/// elsewhere is picked up by the refresh task).
pub(super) async fn jwks(State(state): State<AppState>) -> Response {
    Json(state.notary.key_ring().jwks(crate::issuance::now())).into_response()
}

/// The public JWKs of the credential keys whose credentials may still be
/// verified (active and retiring).
fn credential_jwks(state: &AppState) -> Vec<serde_json::Value> {
    state
        .notary
        .published_credential_keys()
        .iter()
        .map(|k| {
            let mut jwk = k.info.public_key.to_jwk();
            if let Some(chain) = &k.x5c {
                jwk["x5c"] = serde_json::json!(chain);
            }
            jwk
        })
        .collect()
}

/// `GET /.well-known/jwt-vc-issuer`: SD-JWT VC issuer metadata, the keys
/// verifiers check SD-JWT VCs with.
pub(super) async fn jwt_vc_issuer(State(state): State<AppState>) -> Response {
    let doc = crate::formats::issuer_metadata::jwt_vc_issuer(
        &state.notary.policy().credential_issuer,
        &credential_jwks(&state),
    );
    Json(doc).into_response()
}

/// `GET /.well-known/did.json`: notary's `did:web` document, the keys
/// `jwt_vc_json` credentials are verified with.
pub(super) async fn did_document(State(state): State<AppState>) -> Result<Response, ApiError> {
    let did = crate::formats::did::did_web(&state.notary.policy().public_url)
        .map_err(|e| ApiError::internal(&crate::issuance::InternalError::Task(e.to_string())))?;
    let doc = crate::formats::did::did_web_document(&did, &credential_jwks(&state))
        .map_err(|e| ApiError::internal(&crate::issuance::InternalError::Task(e.to_string())))?;
    let mut response = Json(doc).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/did+json"),
    );
    Ok(response)
}

/// The OpenAPI 3.1 description of every endpoint (`docs/openapi.yaml`).
pub(super) async fn openapi(State(state): State<AppState>) -> Response {
    let mut r = state.documents.openapi.clone().into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    r
}

pub(super) async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Longest a readiness probe waits for the HSM or the database.
const READINESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits at most [`READINESS_TIMEOUT`] for a probe.
async fn bounded(
    probe: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    tokio::time::timeout(READINESS_TIMEOUT, probe)
        .await
        .unwrap_or_else(|_| Err("no answer within the readiness timeout".to_owned()))
}

/// How long one readiness verdict is reused. A probe costs an HSM call and
/// a database round trip; reusing the verdict bounds that to one of each
/// per second, however many probes (or strangers) ask.
const READINESS_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// The last readiness verdict: (when, HSM usable, database usable). The
/// lock is held while probing, so concurrent probes share one.
#[derive(Debug, Default)]
pub struct ReadinessCache(tokio::sync::Mutex<Option<(std::time::Instant, bool, bool)>>);

/// Ready when the HSM and the database both answer.
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    let mut last = state.readiness.0.lock().await;
    let (hsm_ok, db_ok) = match *last {
        Some((at, hsm, db)) if at.elapsed() < READINESS_REUSE => (hsm, db),
        _ => {
            let (hsm, db) = probe(&state).await;
            *last = Some((std::time::Instant::now(), hsm, db));
            (hsm, db)
        }
    };
    drop(last);
    let status = if hsm_ok && db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    (
        status,
        Json(serde_json::json!({ "hsm": word(hsm_ok), "database": word(db_ok) })),
    )
        .into_response()
}

/// Probes the HSM and the database at once, each bounded: a load balancer's
/// health check must get an answer even while either hangs.
async fn probe(state: &AppState) -> (bool, bool) {
    let (hsm, db) = tokio::join!(
        bounded(async { state.notary.hsm().ping().await.map_err(|e| e.to_string()) }),
        bounded(async { state.notary.store().ping().await.map_err(|e| e.to_string()) }),
    );
    if let Err(e) = &hsm {
        tracing::warn!(error = %e, "readiness: HSM not usable");
    }
    if let Err(e) = &db {
        tracing::warn!(error = %e, "readiness: database not usable");
    }
    (hsm.is_ok(), db.is_ok())
}

pub(super) async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        crate::oid4vci::ErrorCode::InvalidRequest,
        "this endpoint does not accept this HTTP method",
    )
}
