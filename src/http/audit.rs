//! Read-only evidence for auditors: `GET /v1/audit` and `GET /v1/custody`.

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use crate::issuance::keys::KeyError;
use crate::store::{AuditFilter, Role};

const AUDITORS: &[Role] = &[Role::Admin, Role::Auditor];

#[derive(Debug, Deserialize)]
pub(super) struct AuditQuery {
    /// Entries after this sequence number (the previous page's `nextAfter`).
    after: Option<i64>,
    /// Entries at or after this unix time.
    since: Option<i64>,
    event: Option<String>,
    subject: Option<String>,
    limit: Option<i64>,
}

pub(super) async fn entries(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(AUDITORS)?;
    let Query(q) = query.map_err(|e| ApiError::invalid_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_request("limit must be 1..=1000"));
    }
    let filter = AuditFilter {
        after_seq: q.after.unwrap_or(0),
        since: q.since.unwrap_or(0),
        event: q.event,
        subject: q.subject,
        limit,
    };
    let entries = state
        .notary
        .store()
        .audit_entries(&filter)
        .await
        .map_err(|e| ApiError::internal(&e.into()))?;
    let next_after = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(Json(serde_json::json!({ "entries": entries, "nextAfter": next_after })).into_response())
}

pub(super) async fn custody(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(AUDITORS)?;
    match state.notary.custody_report().await {
        Ok(report) => Ok(Json(report).into_response()),
        Err(KeyError::Internal(e)) => Err(ApiError::internal(&e)),
        Err(KeyError::Refused(m)) => Err(ApiError::invalid_request(m)),
    }
}
