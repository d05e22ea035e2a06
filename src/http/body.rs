//! Reading request bodies with a size limit and a time limit, answering
//! with the OAuth envelope when either is exceeded.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;

use super::error::ApiError;
use crate::oid4vci::ErrorCode;

/// Reads all of `body`: at most `limit` bytes, within `timeout`.
pub(super) async fn read(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::InvalidRequest,
            format!("the request body is too large (at most {limit} bytes) or was cut off"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::InvalidRequest,
            format!(
                "the request body did not arrive within {} s",
                timeout.as_secs()
            ),
        )),
    }
}
