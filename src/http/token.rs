//! `POST /oid4vci/token`: the wallet-facing token endpoint.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use axum::http::HeaderValue;
use tracing::Instrument as _;

use super::AppState;
use super::error::{ApiError, DPOP_NONCE};
use crate::config::{LockedResponse, WrongPinError};
use crate::issuance::proofs::{DpopRequest, ProofError};
use crate::issuance::{Binding, InternalError, RedeemError, check_shape, now};
use crate::oid4vci::ErrorCode;
use crate::oid4vci::attestation::{ATTESTATION_HEADER, POP_HEADER};
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
    let mut response = match handle(&state, peer, &uri, &headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    // With server nonces on, every answer carries the current nonce, so a
    // wallet can use it on its next proof (RFC 9449 §8.2).
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
    // The body (at most MAX_BODY bytes, within the read timeout) is read
    // before the flood refusal, even a flooding client's: over HTTP/2 an answer
    // sent before the body has arrived resets the stream, and the client's
    // late DATA frames count as protocol errors against the connection's
    // limit (H2_LOCAL_RESETS), which would close it for every request on it.
    let body = super::body::read_secret(body, MAX_BODY, state.behaviour.body_read_timeout).await;
    // One unit of the address's budget for failures, taken before any HSM
    // or database work and given back only if a token is issued.
    let admission = state
        .flood
        .admit_now(
            peer.ip(),
            "too many failed token requests from this address",
        )
        .inspect_err(|_| count("flood_limited"))?;
    let request = body_format(headers)
        .and_then(|format| {
            let body = body?;
            TokenRequest::parse(format, body.expose()).map_err(|e| ApiError::invalid_request(e.0))
        })
        .inspect_err(|_| count("invalid_request"))?;

    if let Err(e) = check_shape(&request) {
        count(match e {
            RedeemError::UnsupportedGrantType => "unsupported_grant_type",
            _ => "invalid_request",
        });
        return Err(redeem_error(state, e));
    }
    let binding = match proofs(state, headers, now()).await {
        Ok(binding) => binding,
        Err(ProofRefusal {
            error,
            first_contact,
        }) => {
            count(error.code().as_str());
            if first_contact {
                // A wallet that sent no nonce yet learns it this way (RFC
                // 9449 §8): part of the protocol, not a failure.
                admission.succeeded();
            }
            return Err(error);
        }
    };
    if let (Some(attested), Some(sent)) = (&binding.attested_client_id, &request.client_id) {
        if attested != sent {
            count("invalid_client");
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidClient,
                "client_id differs from the client attestation's subject",
            ));
        }
    }

    // The redemption runs to its end even if the client hangs up: an
    // attempt counted is then also judged and recorded, and a consumed
    // offer's audit entries are written.
    let notary = state.notary.clone();
    let redemption = tokio::spawn(
        async move { notary.redeem(request, binding).await }.instrument(tracing::Span::current()),
    );
    let outcome = redemption
        .await
        .unwrap_or_else(|e| Err(RedeemError::Internal(InternalError::Task(e.to_string()))));
    match outcome {
        Ok(response) => {
            admission.succeeded();
            count("issued");
            Ok(Json(response).into_response())
        }
        Err(e) => {
            count(match &e {
                RedeemError::InvalidRequest(_) => "invalid_request",
                RedeemError::UnsupportedGrantType => "unsupported_grant_type",
                RedeemError::InvalidGrant { .. } => "invalid_grant",
                RedeemError::InvalidAuthorizationDetails(_) => "invalid_authorization_details",
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

/// A refused proof, and whether it was only a wallet's first contact: a
/// well-formed DPoP proof without a nonce while nonces are required.
struct ProofRefusal {
    error: ApiError,
    first_contact: bool,
}

impl From<ApiError> for ProofRefusal {
    fn from(error: ApiError) -> Self {
        ProofRefusal {
            error,
            first_contact: false,
        }
    }
}

/// Checks the DPoP proof and the client attestation, when sent (or when
/// required), before the code is looked at: a bad proof consumes nothing.
async fn proofs(state: &AppState, headers: &HeaderMap, now: i64) -> Result<Binding, ProofRefusal> {
    let mut binding = Binding::default();
    let dpop = single_header(headers, "dpop")
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidDpopProof, m))?;
    match dpop {
        Some(proof) => {
            let proof = state
                .notary
                .check_dpop(DpopRequest {
                    proof,
                    htm: "POST",
                    htu: &state.behaviour.token_url,
                    now,
                    access_token: None,
                })
                .await
                .map_err(|e| ProofRefusal {
                    first_contact: matches!(e, ProofError::UseDpopNonce { presented: false }),
                    error: proof_error(e),
                })?;
            binding.dpop_jkt = Some(proof.jkt);
        }
        None if state.behaviour.require_dpop => {
            return Err(ProofRefusal::from(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidDpopProof,
                "this server requires a DPoP proof (RFC 9449) in the DPoP header",
            )));
        }
        None => {}
    }
    let attestation_error = |m: &'static str| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidClientAttestation,
            m,
        )
    };
    let attestation = single_header(headers, ATTESTATION_HEADER).map_err(attestation_error)?;
    let pop = single_header(headers, POP_HEADER).map_err(attestation_error)?;
    match (attestation, pop) {
        (Some(attestation), Some(pop)) => {
            let client = state
                .notary
                .check_attestation(attestation, pop, now)
                .await
                .map_err(proof_error)?;
            binding.attested_client_id = Some(client.client_id);
        }
        (None, None) if state.behaviour.require_client_attestation => {
            return Err(ProofRefusal::from(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidClient,
                "this server requires client attestation: send OAuth-Client-Attestation and OAuth-Client-Attestation-PoP",
            )));
        }
        (None, None) => {}
        _ => {
            return Err(ProofRefusal::from(attestation_error(
                "OAuth-Client-Attestation and OAuth-Client-Attestation-PoP must be sent together",
            )));
        }
    }
    Ok(binding)
}

/// The value of a header that may appear at most once.
fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, &'static str> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("the header may be sent only once");
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| "the header is not visible ASCII")
}

fn proof_error(e: ProofError) -> ApiError {
    match e {
        ProofError::InvalidDpopProof(m) => {
            ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidDpopProof, m)
        }
        ProofError::UseDpopNonce { .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::UseDpopNonce,
            "use the server nonce from the DPoP-Nonce header in the DPoP proof",
        ),
        ProofError::InvalidClientAttestation(m) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidClientAttestation,
            m,
        ),
        ProofError::Internal(inner) => ApiError::internal(&inner),
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
        RedeemError::InvalidAuthorizationDetails(m) => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidAuthorizationDetails,
            m,
        ),
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
