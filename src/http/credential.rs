//! The credential issuer's endpoints (OID4VCI 1.0 §7, §8, §11): nonce,
//! credential and notification. Served only when notary is the credential
//! issuer itself.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{ApiError, DPOP_NONCE};
use crate::issuance::access::{AccessError, AuthorizedToken, Presented, Scheme};
use crate::issuance::credential::CredentialError;
use crate::issuance::notification::NotificationError;
use crate::issuance::now;
use crate::issuance::proofs::ProofError;
use crate::oid4vci::ErrorCode;
use crate::oid4vci::credential::{CredentialRequest, MAX_BODY};
use crate::oid4vci::jwt::ACCEPTED_ALGS;
use crate::telemetry;

/// Largest notification body read.
const MAX_NOTIFICATION_BODY: usize = 4 * 1024;

/// `POST /oid4vci/nonce` (§7): a fresh `c_nonce` any instance can check.
pub(super) async fn nonce(State(state): State<AppState>) -> Result<Response, ApiError> {
    let fresh = state.notary.fresh_c_nonce().await?;
    Ok(Json(serde_json::json!({ "c_nonce": fresh.c_nonce })).into_response())
}

/// `POST /oid4vci/credential` (§8).
pub(super) async fn credential(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let outcome = async {
        // A stranger's failures count against its address until a token of
        // ours is accepted; from then on it has proven something.
        let admission = state.flood.admit_now(
            peer.ip(),
            "too many failed credential requests from this address",
        )?;
        let token = authorize(&state, &headers, &state.behaviour.credential_url).await?;
        admission.succeeded();
        let body = read_json(
            &state,
            &headers,
            body,
            MAX_BODY,
            ErrorCode::InvalidCredentialRequest,
        )
        .await?;
        let request = CredentialRequest::parse(&body, state.notary.policy().batch_size)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.code, e.message))?;
        let issued = match state.notary.issue_credentials(&token, &request).await {
            Ok(issued) => issued,
            Err(e) => return Err(credential_error(&state, &token, e).await),
        };
        let mut answer = serde_json::json!({
            "credentials": issued.credentials.iter()
                .map(|c| serde_json::json!({ "credential": c }))
                .collect::<Vec<_>>(),
            "notification_id": issued.notification_id,
        });
        if request.single_proof {
            // Wallets of earlier drafts read one `credential`.
            answer["credential"] = serde_json::json!(issued.credentials.first());
        }
        Ok::<_, ApiError>(Json(answer).into_response())
    }
    .await;
    let response = match outcome {
        Ok(response) => {
            count("issued");
            response
        }
        Err(e) => {
            count(match e.code() {
                // The only 429 here: the address's failure budget is spent.
                ErrorCode::SlowDown => "flood_limited",
                code => code.as_str(),
            });
            e.into_response()
        }
    };
    with_dpop_nonce(&state, response).await
}

/// `POST /oid4vci/notification` (§11): 204 once recorded.
pub(super) async fn notification(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let outcome = async {
        let admission = state
            .flood
            .admit_now(peer.ip(), "too many failed notifications from this address")?;
        let token = authorize(&state, &headers, &state.behaviour.notification_url).await?;
        admission.succeeded();
        let body = read_json(
            &state,
            &headers,
            body,
            MAX_NOTIFICATION_BODY,
            ErrorCode::InvalidNotificationRequest,
        )
        .await?;
        state
            .notary
            .notify(&token, &body)
            .await
            .map_err(|e| match e {
                NotificationError::Refused(code, m) => {
                    ApiError::new(StatusCode::BAD_REQUEST, code, m)
                }
                NotificationError::Internal(e) => ApiError::internal(&e),
            })?;
        Ok::<_, ApiError>(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    let response = outcome.unwrap_or_else(IntoResponse::into_response);
    with_dpop_nonce(&state, response).await
}

fn count(outcome: &'static str) {
    metrics::counter!(telemetry::CREDENTIAL_REQUESTS, "outcome" => outcome).increment(1);
}

/// With server nonces on, every answer carries the current DPoP nonce.
async fn with_dpop_nonce(state: &AppState, mut response: Response) -> Response {
    if state.behaviour.require_dpop_nonce {
        if let Some(nonce) = state
            .notary
            .dpop_nonce(now())
            .await
            .ok()
            .and_then(|n| HeaderValue::from_str(&n).ok())
        {
            response.headers_mut().insert(DPOP_NONCE, nonce);
        }
    }
    response
}

/// Reads a JSON body; every refusal carries the endpoint's own error code.
async fn read_json(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    code: ErrorCode,
) -> Result<axum::body::Bytes, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            code,
            "the body must be application/json",
        ));
    }
    super::body::read(body, limit, state.behaviour.body_read_timeout)
        .await
        .map_err(|e| e.with_code(code))
}

/// The `Authorization` header's scheme and token.
fn presented(headers: &HeaderMap) -> Result<(Scheme, &str), ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        // RFC 6750 §3.1: a request without credentials gets a challenge
        // without an error code.
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidToken,
            "an access token is required (Authorization: Bearer or DPoP)",
        )
        .with_challenge(HeaderValue::from_static("Bearer realm=\"notary\"")));
    };
    let value = value.to_str().unwrap_or_default();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return Err(invalid_token(
            Scheme::Bearer,
            "the Authorization scheme must be Bearer or DPoP",
        ));
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(invalid_token(scheme, "the access token is missing"));
    }
    Ok((scheme, token))
}

async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    htu: &url::Url,
) -> Result<AuthorizedToken, ApiError> {
    let (scheme, token) = presented(headers)?;
    let mut dpop = headers.get_all("dpop").iter();
    let proof = match (dpop.next(), dpop.next()) {
        (None, _) => None,
        (Some(v), None) => Some(v.to_str().map_err(|_| {
            dpop_error(
                ErrorCode::InvalidDpopProof,
                "the DPoP header is not visible ASCII",
            )
        })?),
        (Some(_), Some(_)) => {
            return Err(dpop_error(
                ErrorCode::InvalidDpopProof,
                "the DPoP header may be sent only once",
            ));
        }
    };
    state
        .notary
        .authorize_access(Presented {
            scheme,
            token,
            dpop: proof,
            htu,
            now: now(),
        })
        .await
        .map_err(|e| match e {
            AccessError::InvalidToken(m) => invalid_token(scheme, m),
            AccessError::Proof(ProofError::InvalidDpopProof(m)) => {
                dpop_error(ErrorCode::InvalidDpopProof, m)
            }
            AccessError::Proof(ProofError::UseDpopNonce { .. }) => dpop_error(
                ErrorCode::UseDpopNonce,
                "a DPoP proof with the server's nonce is required",
            ),
            AccessError::Proof(ProofError::InvalidClientAttestation(_)) => {
                invalid_token(scheme, "the access token was refused")
            }
            AccessError::Proof(ProofError::Internal(e)) | AccessError::Internal(e) => {
                ApiError::internal(&e)
            }
        })
}

/// 401 `invalid_token` with the challenge of the scheme used (RFC 6750
/// §3, RFC 9449 §7.1).
fn invalid_token(scheme: Scheme, description: &'static str) -> ApiError {
    let challenge = match scheme {
        Scheme::Bearer => format!(
            "Bearer realm=\"notary\", error=\"invalid_token\", error_description=\"{description}\""
        ),
        Scheme::Dpop => format!(
            "DPoP realm=\"notary\", algs=\"{}\", error=\"invalid_token\", error_description=\"{description}\"",
            ACCEPTED_ALGS.join(" ")
        ),
    };
    let e = ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::InvalidToken,
        description,
    );
    match HeaderValue::from_str(&challenge) {
        Ok(value) => e.with_challenge(value),
        Err(_) => e,
    }
}

/// 401 with a DPoP challenge naming the error (RFC 9449 §7.1, §9).
fn dpop_error(code: ErrorCode, description: impl Into<String>) -> ApiError {
    let challenge = format!(
        "DPoP realm=\"notary\", algs=\"{}\", error=\"{}\"",
        ACCEPTED_ALGS.join(" "),
        code.as_str()
    );
    let e = ApiError::new(StatusCode::UNAUTHORIZED, code, description.into());
    match HeaderValue::from_str(&challenge) {
        Ok(value) => e.with_challenge(value),
        Err(_) => e,
    }
}

/// The §8.3.1.2 answer. A proof or nonce error also carries a fresh
/// `c_nonce`, where wallets of earlier drafts look for it.
async fn credential_error(
    state: &AppState,
    token: &AuthorizedToken,
    e: CredentialError,
) -> ApiError {
    match e {
        CredentialError::Refused(code, message) => {
            let error = ApiError::new(StatusCode::BAD_REQUEST, code, message);
            if !matches!(code, ErrorCode::InvalidProof | ErrorCode::InvalidNonce) {
                return error;
            }
            match state.notary.fresh_c_nonce().await {
                Ok(fresh) => error.with_members(
                    [
                        ("c_nonce".to_owned(), fresh.c_nonce.into()),
                        ("c_nonce_expires_in".to_owned(), fresh.expires_in.into()),
                    ]
                    .into_iter()
                    .collect(),
                ),
                Err(e) => ApiError::internal(&e),
            }
        }
        CredentialError::TokenRevoked => {
            // Challenge in the scheme the token is used with.
            let scheme = if token.jkt.is_some() {
                Scheme::Dpop
            } else {
                Scheme::Bearer
            };
            invalid_token(scheme, "the access token has been revoked")
        }
        CredentialError::Internal(e) => ApiError::internal(&e),
    }
}
