//! The notification endpoint's use case (OID4VCI 1.0 §11): a wallet says
//! what became of the credentials it received; notary records it in the
//! audit log.

use serde_json::Value;

use super::access::AuthorizedToken;
use super::{InternalError, Notary};
use crate::oid4vci::ErrorCode;
use crate::store::NotificationOutcome;

/// The events §11.1 defines.
const EVENTS: [&str; 3] = [
    "credential_accepted",
    "credential_failure",
    "credential_deleted",
];

/// Longest `notification_id` or `event_description` read.
const MAX_FIELD: usize = 1024;

/// Why a notification was refused.
#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    /// `invalid_notification_id` or `invalid_notification_request`.
    #[error("{1}")]
    Refused(ErrorCode, &'static str),
    /// Internal failure.
    #[error(transparent)]
    Internal(#[from] InternalError),
}

fn refused(code: ErrorCode, message: &'static str) -> NotificationError {
    NotificationError::Refused(code, message)
}

impl Notary {
    /// Records a wallet's notification about an issuance of `token`.
    /// The wallet's free-text `event_description` is checked but not kept:
    /// it may say anything, personal data included, and the audit log
    /// must never hold that.
    pub async fn notify(
        &self,
        token: &AuthorizedToken,
        body: &[u8],
    ) -> Result<(), NotificationError> {
        let bad = |m| refused(ErrorCode::InvalidNotificationRequest, m);
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
            return Err(bad("the body must be a JSON object"));
        };
        let Some(notification_id) = body
            .get("notification_id")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty() && n.len() <= MAX_FIELD)
        else {
            return Err(bad("notification_id is required"));
        };
        let Some(event) = body
            .get("event")
            .and_then(Value::as_str)
            .and_then(|e| EVENTS.iter().copied().find(|known| *known == e))
        else {
            return Err(bad(
                "event must be credential_accepted, credential_failure or credential_deleted",
            ));
        };
        match body.get("event_description") {
            None => {}
            Some(Value::String(d)) if d.len() <= MAX_FIELD && d.is_ascii() => {}
            Some(_) => return Err(bad("event_description must be a short ASCII string")),
        }
        match self
            .store
            .record_notification(notification_id, &token.jti, event, super::now())
            .await
            .map_err(InternalError::from)?
        {
            NotificationOutcome::Recorded(_) => Ok(()),
            NotificationOutcome::Unknown => Err(refused(
                ErrorCode::InvalidNotificationId,
                "no credential issued to this access token has this notification_id",
            )),
            NotificationOutcome::TooMany => Err(bad(
                "this credential has had as many notifications as notary records",
            )),
        }
    }
}
