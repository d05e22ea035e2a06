//! OID4VCI and OAuth protocol types: credential offers, token requests and
//! responses, error codes and metadata documents. No HTTP, no storage.

pub mod attestation;
pub mod claims;
pub mod credential;
pub mod dpop;
pub mod jwt;
pub mod metadata;
pub mod offer;
pub mod token;

/// The grant type of the Pre-Authorized Code flow.
pub const PRE_AUTHORIZED_GRANT: &str = "urn:ietf:params:oauth:grant-type:pre-authorized_code";

/// OAuth error codes notary returns (RFC 6749 §5.2, OID4VCI 1.0 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Malformed request.
    InvalidRequest,
    /// The code (or PIN) is invalid, expired, used or revoked.
    InvalidGrant,
    /// A wrong PIN, in the OID4VCI 1.1 dialect.
    InvalidTxCode,
    /// Not the pre-authorized code grant.
    UnsupportedGrantType,
    /// Locked offer or flood limit: back off.
    SlowDown,
    /// Missing or wrong admin credentials.
    InvalidToken,
    /// Right credentials, wrong role.
    InsufficientScope,
    /// The resource does not exist.
    NotFound,
    /// Something failed inside notary.
    ServerError,
    /// RFC 9449: the DPoP proof is missing, malformed or does not verify.
    InvalidDpopProof,
    /// RFC 9449: retry with the server nonce from `DPoP-Nonce`.
    UseDpopNonce,
    /// RFC 6749: client authentication failed.
    InvalidClient,
    /// Attestation-based client authentication: the attestation or its PoP
    /// does not verify.
    InvalidClientAttestation,
    /// RFC 9396: `authorization_details` asks for what the grant does not give.
    InvalidAuthorizationDetails,
    /// OID4VCI §8.3.1.2: the credential request is malformed.
    InvalidCredentialRequest,
    /// OID4VCI §8.3.1.2: no such credential configuration.
    UnknownCredentialConfiguration,
    /// OID4VCI §8.3.1.2: no such credential identifier.
    UnknownCredentialIdentifier,
    /// OID4VCI §8.3.1.2: a key proof is missing or does not verify.
    InvalidProof,
    /// OID4VCI §8.3.1.2: the proof's nonce is missing, unknown, used or
    /// expired; the wallet fetches a fresh one from the nonce endpoint.
    InvalidNonce,
    /// OID4VCI §8.3.1.2: the request is well formed but not granted.
    CredentialRequestDenied,
    /// OID4VCI §8.3.1.2: response encryption asked for, which notary does
    /// not offer.
    InvalidEncryptionParameters,
    /// OID4VCI §11.3: the notification names no credential of this token.
    InvalidNotificationId,
    /// OID4VCI §11.3: the notification request is malformed.
    InvalidNotificationRequest,
}

impl ErrorCode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::InvalidTxCode => "invalid_tx_code",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::SlowDown => "slow_down",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::NotFound => "not_found",
            ErrorCode::ServerError => "server_error",
            ErrorCode::InvalidDpopProof => "invalid_dpop_proof",
            ErrorCode::UseDpopNonce => "use_dpop_nonce",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidClientAttestation => "invalid_client_attestation",
            ErrorCode::InvalidAuthorizationDetails => "invalid_authorization_details",
            ErrorCode::InvalidCredentialRequest => "invalid_credential_request",
            ErrorCode::UnknownCredentialConfiguration => "unknown_credential_configuration",
            ErrorCode::UnknownCredentialIdentifier => "unknown_credential_identifier",
            ErrorCode::InvalidProof => "invalid_proof",
            ErrorCode::InvalidNonce => "invalid_nonce",
            ErrorCode::CredentialRequestDenied => "credential_request_denied",
            ErrorCode::InvalidEncryptionParameters => "invalid_encryption_parameters",
            ErrorCode::InvalidNotificationId => "invalid_notification_id",
            ErrorCode::InvalidNotificationRequest => "invalid_notification_request",
        }
    }
}
