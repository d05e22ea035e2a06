//! Errors as HTTP responses: the OAuth envelope `{"error", "error_description"}`
//! everywhere, `Cache-Control: no-store`, and no internal detail.
//!
//! Policy: a client error says what was wrong with the request, never echoing
//! a secret value. An internal error becomes a bare `server_error`; its
//! detail goes to the log, tagged so operators can find it.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::issuance::InternalError;
use crate::oid4vci::ErrorCode;

/// RFC 9449 §8: the header carrying a server nonce.
pub const DPOP_NONCE: header::HeaderName = header::HeaderName::from_static("dpop-nonce");

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    description: Cow<'static, str>,
    retry_after: Option<u64>,
    challenge: Option<HeaderValue>,
    extra: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    /// An error with status, code and description.
    pub fn new(
        status: StatusCode,
        code: ErrorCode,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        ApiError {
            status,
            code,
            description: description.into(),
            retry_after: None,
            challenge: None,
            extra: None,
        }
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            description,
        )
    }

    /// 401 with a `WWW-Authenticate: Bearer` challenge.
    pub fn unauthorized() -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidToken,
            "a valid API key is required (Authorization: Bearer ...)",
        );
        e.challenge = Some(HeaderValue::from_static("Bearer realm=\"notary\""));
        e
    }

    /// 403: the key's role may not do this.
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::InsufficientScope,
            "this API key's role may not do this",
        )
    }

    /// 404.
    pub fn not_found(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, description)
    }

    /// 429 `slow_down` with `Retry-After`.
    pub fn slow_down(description: impl Into<Cow<'static, str>>, retry_after: Option<u64>) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::SlowDown,
            description,
        );
        e.retry_after = retry_after;
        e
    }

    /// 500 `server_error`; logs `detail`, returns nothing of it.
    pub fn internal(detail: &InternalError) -> Self {
        tracing::error!(error = %detail, "request failed inside notary");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ServerError,
            "the request could not be completed",
        )
    }

    /// The same error under another code (e.g. a body limit at the
    /// credential endpoint is an `invalid_credential_request` there).
    pub fn with_code(mut self, code: ErrorCode) -> Self {
        self.code = code;
        self
    }

    /// Adds a `WWW-Authenticate` challenge.
    pub fn with_challenge(mut self, challenge: HeaderValue) -> Self {
        self.challenge = Some(challenge);
        self
    }

    /// Adds members to the error body (e.g. a fresh `c_nonce` for wallets
    /// of earlier drafts, which read it from an `invalid_proof` error).
    pub fn with_members(mut self, members: serde_json::Map<String, serde_json::Value>) -> Self {
        self.extra = Some(members);
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The OAuth error code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl From<InternalError> for ApiError {
    fn from(e: InternalError) -> Self {
        ApiError::internal(&e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "error": self.code.as_str(),
            "error_description": self.description,
        });
        if let (Some(extra), Some(object)) = (self.extra, body.as_object_mut()) {
            for (name, value) in extra {
                object.entry(name).or_insert(value);
            }
        }
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(challenge) = self.challenge {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}
