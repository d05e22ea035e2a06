//! Reading request bodies with a size limit and a time limit, answering
//! with the OAuth envelope when either is exceeded. Token requests are read
//! into a [`RequestBody`], which is wiped when dropped.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use http_body_util::BodyExt as _;

use super::error::ApiError;
use crate::oid4vci::ErrorCode;
use crate::secret::RequestBody;

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::InvalidRequest,
        format!("the request body is too large (at most {limit} bytes) or was cut off"),
    )
}

fn too_slow(timeout: Duration) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        ErrorCode::InvalidRequest,
        format!(
            "the request body did not arrive within {} s",
            timeout.as_secs()
        ),
    )
}

/// 413 at once when the declared length (`Content-Length`) is over the
/// limit, instead of waiting for a body that will be refused anyway.
fn check_declared_length(body: &Body, limit: usize) -> Result<(), ApiError> {
    let declared = axum::body::HttpBody::size_hint(body).lower();
    if declared > limit as u64 {
        return Err(too_large(limit));
    }
    Ok(())
}

/// Reads all of `body`: at most `limit` bytes, within `timeout`.
pub(super) async fn read(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, ApiError> {
    check_declared_length(&body, limit)?;
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(too_large(limit)),
        Err(_) => Err(too_slow(timeout)),
    }
}

/// Reads a body that carries secrets into one buffer of `limit` bytes,
/// allocated up front so it never moves, and wiped when dropped.
pub(super) async fn read_secret(
    mut body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<RequestBody, ApiError> {
    check_declared_length(&body, limit)?;
    let collect = async {
        let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(limit));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| too_large(limit))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(too_large(limit));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(RequestBody::new(std::mem::take(&mut *buf)))
    };
    tokio::time::timeout(timeout, collect)
        .await
        .unwrap_or_else(|_| Err(too_slow(timeout)))
}
