//! Credential status over HTTP: the signed status lists for relying parties
//! (`GET /status/{list}`), and the admin API that lists credentials and
//! changes their status (`/v1/credentials...`).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use crate::issuance::now;
use crate::oid4vci::ErrorCode;
use crate::store::{CredentialStatus, Role, StatusChange};

const WRITERS: &[Role] = &[Role::Admin, Role::Issuer];
const READERS: &[Role] = &[Role::Admin, Role::Issuer, Role::Auditor];

/// `GET /status/{list}`: the list as last signed. `max-age` never reaches
/// past the list's own expiry, nor past `status.ttl_secs`.
pub(super) async fn list(
    State(state): State<AppState>,
    Path(uri_id): Path<String>,
) -> Result<Response, ApiError> {
    let Some(signed) = state.notary.served_status_list(&uri_id).await? else {
        return Err(ApiError::not_found("no status list here"));
    };
    let ttl = i64::try_from(state.notary.policy().status.ttl_secs).unwrap_or(300);
    let max_age = (signed.expires_at - now()).clamp(0, ttl);
    let media = if signed.uri_id.starts_with('t') {
        "application/statuslist+jwt"
    } else {
        "application/vc+jwt"
    };
    let mut response = signed.token.clone().into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        h.insert(header::CACHE_CONTROL, value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    offer: Option<String>,
    #[serde(rename = "userId")]
    user_id: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/credentials?offer=ID&userId=X`: issued credentials, metadata only.
pub(super) async fn credentials(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(READERS)?;
    let Query(query) = query.map_err(|_| {
        ApiError::invalid_request("the query takes offer, userId and limit (1..=1000) only")
    })?;
    if query.offer.is_none() && query.user_id.is_none() {
        return Err(ApiError::invalid_request(
            "name an offer (offer=ID) or a subject (userId=...)",
        ));
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_request("limit must be 1..=1000"));
    }
    let credentials = state
        .notary
        .credentials(query.offer.as_deref(), query.user_id.as_deref(), limit)
        .await?;
    Ok(Json(serde_json::json!({ "credentials": credentials })).into_response())
}

/// `GET /v1/credentials/{id}`: one credential and its status history.
pub(super) async fn credential(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(READERS)?;
    let Some((record, history)) = state.notary.credential_history(&id).await? else {
        return Err(ApiError::not_found("no credential with this id"));
    };
    let history: Vec<serde_json::Value> = history
        .iter()
        .map(|entry| {
            let details: serde_json::Value =
                serde_json::from_str(&entry.details).unwrap_or_default();
            serde_json::json!({
                "at": crate::issuance::rfc3339(entry.at),
                "from": details["from"], "to": details["to"], "by": details["by"],
                "audit_seq": entry.seq,
            })
        })
        .collect();
    let mut body = serde_json::to_value(&record).unwrap_or_default();
    body["history"] = serde_json::json!(history);
    Ok(Json(body).into_response())
}

/// `POST /v1/credentials/{id}/{revoke|suspend|reinstate}`.
pub(super) async fn change(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require(WRITERS)?;
    let to = match action.as_str() {
        "revoke" => CredentialStatus::Revoked,
        "suspend" => CredentialStatus::Suspended,
        "reinstate" => CredentialStatus::Valid,
        _ => {
            return Err(ApiError::not_found(
                "no such action: revoke, suspend or reinstate",
            ));
        }
    };
    match state
        .notary
        .change_credential_status(&id, to, &caller.0.id)
        .await?
    {
        StatusChange::Changed(record) | StatusChange::Unchanged(record) => {
            Ok(Json(record).into_response())
        }
        StatusChange::Refused(current) => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::InvalidRequest,
            format!(
                "the credential is {}: {}",
                current.as_str(),
                if current == CredentialStatus::Revoked {
                    "revocation is final"
                } else {
                    "this change does not apply"
                }
            ),
        )),
        StatusChange::NotFound => Err(ApiError::not_found("no credential with this id")),
    }
}

/// `POST /v1/credentials/revoke` `{"offer": ID}` or `{"userId": X}`:
/// revokes every credential of an offer or of a subject.
pub(super) async fn revoke_all(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(WRITERS)?;
    let body = super::body::read(body, 4 * 1024, state.behaviour.body_read_timeout).await?;
    // Exactly one of the two members, a non-empty string: a null or an
    // empty name must never widen or silently empty the selection.
    let expected = || ApiError::invalid_request("expected {\"offer\": ID} or {\"userId\": X}");
    let Ok(serde_json::Value::Object(body)) = serde_json::from_slice(&body) else {
        return Err(expected());
    };
    let (name, value) = match (body.len(), body.iter().next()) {
        (1, Some((name, serde_json::Value::String(value)))) if !value.is_empty() => {
            (name.as_str(), value.as_str())
        }
        _ => return Err(expected()),
    };
    let (offer, subject) = match name {
        "offer" => (Some(value), None),
        "userId" => (None, Some(value)),
        _ => return Err(expected()),
    };
    let revoked = state
        .notary
        .revoke_credentials_of(offer, subject, &caller.0.id)
        .await?;
    Ok(Json(serde_json::json!({ "revoked": revoked })).into_response())
}
