//! The admin offer API (`/v1/openid/offers...`), for admin and issuer keys;
//! auditors may read.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use crate::issuance::{CreateOffer, OfferError, parse_filter};
use crate::store::Role;

const WRITERS: &[Role] = &[Role::Admin, Role::Issuer];
const READERS: &[Role] = &[Role::Admin, Role::Issuer, Role::Auditor];

/// Largest offer creation body accepted.
pub(super) const MAX_BODY: usize = 16 * 1024;

fn offer_error(e: OfferError) -> ApiError {
    match e {
        OfferError::Invalid(m) => ApiError::invalid_request(m),
        OfferError::NotFound => ApiError::not_found("no offer with this id"),
        OfferError::NotPending(state) => ApiError::new(
            StatusCode::CONFLICT,
            crate::oid4vci::ErrorCode::InvalidRequest,
            format!("the offer is already {state}"),
        ),
        OfferError::Internal(inner) => ApiError::internal(&inner),
    }
}

pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(WRITERS)?;
    let body = super::body::read(body, MAX_BODY, state.behaviour.body_read_timeout).await?;
    let request: CreateOffer = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid_request(format!("invalid offer request: {}", unquoted(&e)))
    })?;
    let created = state
        .notary
        .create_offer(request, &caller.0.id)
        .await
        .map_err(offer_error)?;
    metrics::counter!(crate::telemetry::OFFERS_CREATED).increment(1);
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// A JSON error without the value it complains about: serde quotes a
/// member of the wrong type (`invalid type: string "Alice"`), and a claim
/// value must never come back in an error. The expected type and position
/// are kept.
fn unquoted(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if !(text.starts_with("invalid type") || text.starts_with("invalid value")) {
        return text;
    }
    match text.split_once(", expected ") {
        Some((_, expected)) => format!("a member has the wrong type or value: expected {expected}"),
        None => format!(
            "a member has the wrong type or value at line {} column {}",
            e.line(),
            e.column()
        ),
    }
}

pub(super) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(READERS)?;
    let view = state.notary.get_offer(&id).await.map_err(offer_error)?;
    Ok(Json(view).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    state: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(READERS)?;
    let Query(query) = query.map_err(|e| ApiError::invalid_request(e.body_text()))?;
    let filter = match query.state.as_deref() {
        None => None,
        Some(s) => Some(parse_filter(s).ok_or_else(|| {
            ApiError::invalid_request(
                "state must be one of pending, redeemed, expired, locked, revoked",
            )
        })?),
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid_request("limit must be 1..=500"));
    }
    let (offers, next_cursor) = state
        .notary
        .list_offers(filter, limit, query.cursor.as_deref())
        .await
        .map_err(offer_error)?;
    Ok(Json(serde_json::json!({ "offers": offers, "nextCursor": next_cursor })).into_response())
}

pub(super) async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(WRITERS)?;
    let view = state
        .notary
        .revoke_offer(&id, &caller.0.id)
        .await
        .map_err(offer_error)?;
    Ok(Json(view).into_response())
}
