//! Hash-chained audit entries: what happened, never a secret.
//!
//! Each entry commits to the one before it:
//! `hash = SHA-256(prev_hash || canonical entry)`, where the canonical entry is
//! the JSON array `[seq, at, event, subject, details]` exactly as stored.
//! Changing, removing or reordering an entry breaks every hash after it.
//! The store appends entries in the same transaction as the state change
//! they describe.

use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// An event to record. `details` must never hold a code, PIN, token or key.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Dotted event name, e.g. `offer.created`.
    pub event: &'static str,
    /// What the event is about: an offer id, an API key id, a key id.
    pub subject: Option<String>,
    /// Further facts as a JSON object.
    pub details: serde_json::Value,
}

impl AuditEvent {
    /// An event about `subject` with `details`.
    pub fn new(
        event: &'static str,
        subject: impl Into<String>,
        details: serde_json::Value,
    ) -> Self {
        Self {
            event,
            subject: Some(subject.into()),
            details,
        }
    }

    /// An event about the server as a whole.
    pub fn global(event: &'static str, details: serde_json::Value) -> Self {
        Self {
            event,
            subject: None,
            details,
        }
    }
}

/// The hash of an entry given its predecessor's hash and its stored fields.
pub fn chain_hash(
    prev_hash: &[u8],
    seq: i64,
    at: i64,
    event: &str,
    subject: Option<&str>,
    details: &str,
) -> [u8; 32] {
    let canonical = serde_json::json!([seq, at, event, subject, details]).to_string();
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    hasher.update(canonical.as_bytes());
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_changes_the_hash() {
        let base = chain_hash(&GENESIS, 1, 100, "offer.created", Some("o1"), "{}");
        assert_ne!(
            base,
            chain_hash(&[1; 32], 1, 100, "offer.created", Some("o1"), "{}")
        );
        assert_ne!(
            base,
            chain_hash(&GENESIS, 2, 100, "offer.created", Some("o1"), "{}")
        );
        assert_ne!(
            base,
            chain_hash(&GENESIS, 1, 101, "offer.created", Some("o1"), "{}")
        );
        assert_ne!(
            base,
            chain_hash(&GENESIS, 1, 100, "offer.revoked", Some("o1"), "{}")
        );
        assert_ne!(
            base,
            chain_hash(&GENESIS, 1, 100, "offer.created", None, "{}")
        );
        assert_ne!(
            base,
            chain_hash(&GENESIS, 1, 100, "offer.created", Some("o1"), "{\"a\":1}")
        );
    }
}
