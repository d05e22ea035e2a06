//! Admin API authentication: `Authorization: Bearer <API key>` and roles.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::secret::ApiKeySecret;
use crate::store::{ApiKeyRecord, Role};

/// The authenticated API key of a request.
#[derive(Debug)]
pub(super) struct Caller(pub ApiKeyRecord);

impl Caller {
    /// 403 unless the key has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.0.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ApiError::unauthorized)?;
        let (scheme, key) = value.split_once(' ').ok_or_else(ApiError::unauthorized)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::unauthorized());
        }
        // Checking a key costs an HSM operation: wrong keys spend the
        // address's failure budget, and a spent budget is refused first.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip())
            .ok_or_else(ApiError::unauthorized)?;
        let admission = state
            .admin_flood
            .admit_now(peer, "too many failed requests from this address")?;
        let secret = ApiKeySecret::new(key.trim().to_owned());
        match state.notary.authenticate(&secret).await? {
            Some(record) => {
                admission.succeeded();
                Ok(Caller(record))
            }
            None => Err(ApiError::unauthorized()),
        }
    }
}
