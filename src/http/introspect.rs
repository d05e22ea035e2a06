//! `POST /introspect` (RFC 7662): credential issuers ask whether an access
//! token is live. Callers authenticate with an API key of role `introspect`
//! (or `admin`); the answer never says why a token is inactive.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use crate::store::Role;

const INTROSPECTORS: &[Role] = &[Role::Admin, Role::Introspect];

/// Largest request body accepted: one token and a hint.
const MAX_BODY: usize = 16 * 1024;

pub(super) async fn introspect(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(INTROSPECTORS)?;
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(ApiError::invalid_request(
            "Content-Type must be application/x-www-form-urlencoded (RFC 7662 §2.1)",
        ));
    }
    let body = super::body::read_secret(body, MAX_BODY, state.behaviour.body_read_timeout).await?;
    let mut token = None;
    for (name, value) in form_urlencoded::parse(body.expose()) {
        if name == "token" {
            if token.is_some() {
                return Err(ApiError::invalid_request("parameter \"token\" is repeated"));
            }
            token = Some(zeroize::Zeroizing::new(value.into_owned()));
        }
    }
    let token = token.ok_or_else(|| ApiError::invalid_request("the token parameter is missing"))?;
    let answer = state.notary.introspect(&token).await?;
    Ok(Json(answer).into_response())
}
