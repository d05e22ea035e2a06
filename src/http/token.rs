//! `POST /oid4vci/token`: the wallet-facing token endpoint.

use std::net::SocketAddr;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::config::{LockedResponse, WrongPinError};
use crate::issuance::RedeemError;
use crate::oid4vci::ErrorCode;
use crate::oid4vci::token::{BodyFormat, SECRET_PARAMETERS, TokenRequest};
use crate::telemetry;

/// Largest token request body accepted; real ones are a few hundred bytes.
pub(super) const MAX_BODY: usize = 4 * 1024;

pub(super) async fn token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(&state, peer, &uri, &headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// Counts a token request by outcome (a fixed set of label values).
fn count(outcome: &'static str) {
    tracing::debug!(outcome, "token request");
    metrics::counter!(telemetry::TOKEN_REQUESTS, "outcome" => outcome).increment(1);
}

async fn handle(
    state: &AppState,
    peer: SocketAddr,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !state.behaviour.pre_authorized_enabled {
        count("disabled");
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnsupportedGrantType,
            "the pre-authorized code flow is disabled on this server",
        ));
    }
    if let Some(query) = uri.query() {
        if form_urlencoded::parse(query.as_bytes())
            .any(|(k, _)| SECRET_PARAMETERS.contains(&k.as_ref()))
        {
            count("invalid_request");
            return Err(ApiError::invalid_request(
                "codes and PINs must be sent in the request body, never in the URL",
            ));
        }
    }
    let ip = peer.ip();
    if let Some(retry_after) = state.flood.blocked_for(ip, Instant::now()) {
        count("flood_limited");
        return Err(ApiError::slow_down(
            "too many unknown pre-authorized codes from this address",
            Some(retry_after),
        ));
    }
    let request = async {
        let format = body_format(headers)?;
        let body =
            super::body::read_secret(body, MAX_BODY, state.behaviour.body_read_timeout).await?;
        TokenRequest::parse(format, body.expose()).map_err(|e| ApiError::invalid_request(e.0))
    }
    .await
    .inspect_err(|_| count("invalid_request"))?;

    match state.notary.redeem(request).await {
        Ok(response) => {
            count("issued");
            Ok(Json(response).into_response())
        }
        Err(e) => {
            if matches!(e, RedeemError::InvalidGrant { unknown_code: true }) {
                state.flood.record_unknown(ip, Instant::now());
            }
            count(match &e {
                RedeemError::InvalidRequest(_) => "invalid_request",
                RedeemError::UnsupportedGrantType => "unsupported_grant_type",
                RedeemError::InvalidGrant { .. } => "invalid_grant",
                RedeemError::WrongTxCode { remaining: 0 } => {
                    metrics::counter!(telemetry::LOCKOUTS).increment(1);
                    "wrong_tx_code"
                }
                RedeemError::WrongTxCode { .. } => "wrong_tx_code",
                RedeemError::Locked => "locked",
                RedeemError::Internal(_) => "server_error",
            });
            Err(redeem_error(state, e))
        }
    }
}

fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/x-www-form-urlencoded" => Ok(BodyFormat::Form),
        "application/json" => Ok(BodyFormat::Json),
        _ => Err(ApiError::invalid_request(
            "Content-Type must be application/x-www-form-urlencoded or application/json",
        )),
    }
}

fn redeem_error(state: &AppState, e: RedeemError) -> ApiError {
    let description = e.to_string();
    match e {
        RedeemError::InvalidRequest(m) => ApiError::invalid_request(m),
        RedeemError::UnsupportedGrantType => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnsupportedGrantType,
            description,
        ),
        RedeemError::InvalidGrant { .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidGrant,
            description,
        ),
        RedeemError::WrongTxCode { .. } => {
            let code = match state.behaviour.wrong_pin_error {
                WrongPinError::InvalidGrant => ErrorCode::InvalidGrant,
                WrongPinError::InvalidTxCode => ErrorCode::InvalidTxCode,
            };
            ApiError::new(StatusCode::BAD_REQUEST, code, description)
        }
        RedeemError::Locked => match state.behaviour.locked_response {
            LockedResponse::SlowDown => ApiError::slow_down(description, None),
            LockedResponse::InvalidGrant => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidGrant,
                description,
            ),
        },
        RedeemError::Internal(inner) => ApiError::internal(&inner),
    }
}
