//! Persistence: offers, API keys and the audit log, behind one interface.
//!
//! `Store` is an enum over backends, chosen once from the database URL's
//! scheme: SQLite for one host, PostgreSQL for several instances. Both have
//! the same methods, and the same integration tests run on both. Every state change is written in one
//! transaction together with its audit entry.

mod direct;
mod group_commit;
mod issuance;
pub mod model;
mod pg_audit;
mod pg_batch;
mod pg_reads;
mod postgres;
mod rows;
mod sqlite;
mod status;

pub use model::*;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::audit::AuditEvent;

/// `convert_stored_lookups` of a backend, its SQL written once with `?`
/// and passed through `$sql` (`status::same` or `status::numbered`).
macro_rules! convert_stored_lookups_method {
    ($store:ty, $sql:path) => {
        impl $store {
            /// Converts the lookup keys of offers stored before 2026-12-05
            /// (see `Store::convert_stored_lookups`).
            pub(super) async fn convert_stored_lookups(
                &self,
                convert: fn(&[u8]) -> [u8; 32],
            ) -> Result<u64, StoreError> {
                // Read first, outside a write: a database without such
                // offers (the usual case) takes no write, so read-only
                // commands still work.
                let rows: Vec<(String, Vec<u8>)> =
                    sqlx::query_as("SELECT id, code_hash FROM offers WHERE stored_form = 1")
                        .fetch_all(&self.pool)
                        .await?;
                if rows.is_empty() {
                    return Ok(0);
                }
                // Each update is conditional, so two processes converting
                // at once convert each row once.
                let mut tx = self.begin_write().await?;
                for (id, code_key) in &rows {
                    sqlx::query(sqlx::AssertSqlSafe($sql(
                        "UPDATE offers SET code_hash = ?, stored_form = 2 WHERE id = ? AND stored_form = 1",
                    )))
                    .bind(convert(code_key).to_vec())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(rows.len() as u64)
            }
        }
    };
}
convert_stored_lookups_method!(SqliteStore, status::same);
convert_stored_lookups_method!(PgStore, status::numbered);

/// Storage failures, in the terms callers act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is busy beyond the timeout.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule was violated (e.g. a duplicate id).
    #[error("database conflict: {0}")]
    Conflict(String),
    /// A paging cursor that this store did not issue.
    #[error("invalid paging cursor")]
    BadCursor,
    /// A URL or setting the store cannot use.
    #[error("{0}")]
    Config(String),
    /// Anything else, including a failed migration.
    #[error("database error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.message().to_owned())
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(err.to_string())
            }
            _ => StoreError::Internal(err.to_string()),
        }
    }
}

/// Outcome of revoking an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// Revoked now.
    Revoked,
    /// No such offer.
    NotFound,
    /// The offer had already left `pending`.
    NotPending(OfferState),
}

/// A page of offers.
#[derive(Debug, Clone)]
pub struct OfferPage {
    /// Offers, newest first.
    pub offers: Vec<OfferRecord>,
    /// Cursor for the next page, if there is one.
    pub next_cursor: Option<String>,
}

/// The database, whichever backend it is.
#[derive(Debug, Clone)]
pub enum Store {
    /// Embedded SQLite (default, single host).
    Sqlite(SqliteStore),
    /// PostgreSQL, shared by several instances.
    Postgres(PgStore),
}

/// Calls the backend's method of the same name and records its latency.
macro_rules! dispatch {
    ($self:ident, $op:literal, $store:ident => $call:expr) => {{
        let start = std::time::Instant::now();
        let result = match $self {
            Store::Sqlite($store) => $call,
            Store::Postgres($store) => $call,
        };
        crate::telemetry::observe(crate::telemetry::DB_SECONDS, $op, start);
        result
    }};
}

impl Store {
    /// Connects to the database named by `url` (`sqlite:PATH`).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(
                SqliteStore::connect(url, max_connections).await?,
            ))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(
                PgStore::connect(url, max_connections).await?,
            ))
        } else {
            Err(StoreError::Config(
                "unsupported database URL: use sqlite:PATH or postgres://...".to_owned(),
            ))
        }
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        dispatch!(self, "migrate", s => s.migrate().await)
    }

    /// Converts the lookup key of every offer stored before 2026-12-05 (the
    /// code's keyed hash itself) with `convert` (its SHA-256 form), so that
    /// every offer is found by one lookup that never sends a code key to
    /// the database. Their PIN hashes stay as they were. Returns how many.
    pub async fn convert_stored_lookups(
        &self,
        convert: fn(&[u8]) -> [u8; 32],
    ) -> Result<u64, StoreError> {
        dispatch!(self, "convert_stored_lookups", s => s.convert_stored_lookups(convert).await)
    }

    /// Whether the schema is at the version this build expects.
    pub async fn check_schema(&self) -> Result<(), StoreError> {
        dispatch!(self, "check_schema", s => s.check_schema().await)
    }

    /// A cheap round trip, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, "ping", s => s.ping().await)
    }

    /// Appends an audit entry that has no state change of its own.
    pub async fn audit(&self, event: AuditEvent, now: i64) -> Result<(), StoreError> {
        dispatch!(self, "audit", s => s.audit(event, now).await)
    }

    /// Inserts a new offer and its audit entry.
    pub async fn insert_offer(
        &self,
        offer: &NewOffer,
        event: AuditEvent,
    ) -> Result<(), StoreError> {
        dispatch!(self, "insert_offer", s => s.insert_offer(offer, event).await)
    }

    /// Finds the offer whose code has this keyed hash.
    pub async fn find_offer_by_code_hash(
        &self,
        code_hash: &[u8; 32],
    ) -> Result<Option<OfferRecord>, StoreError> {
        dispatch!(self, "find_offer_by_code_hash", s => s.find_offer_by_code_hash(code_hash).await)
    }

    /// Finds the by-reference offer whose reference has this keyed hash.
    pub async fn find_offer_by_ref_hash(
        &self,
        ref_hash: &[u8; 32],
    ) -> Result<Option<OfferRecord>, StoreError> {
        dispatch!(self, "find_offer_by_ref_hash", s => s.find_offer_by_ref_hash(ref_hash).await)
    }

    /// The offer and revocation of the token with this `jti`, if notary issued it.
    pub async fn token_status(&self, jti: &str) -> Result<Option<TokenStatus>, StoreError> {
        dispatch!(self, "token_status", s => s.token_status(jti).await)
    }

    /// Records a proof `jti` (by its replay key) until `keep_until`; false
    /// if any instance recorded it before.
    pub async fn record_proof_jti(
        &self,
        key: &[u8; 32],
        keep_until: i64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, "record_proof_jti", s => s.record_proof_jti(key, keep_until).await)
    }

    /// Gets an offer by id.
    pub async fn get_offer(&self, id: &str) -> Result<Option<OfferRecord>, StoreError> {
        dispatch!(self, "get_offer", s => s.get_offer(id).await)
    }

    /// Lists offers, newest first, `limit` at a time.
    pub async fn list_offers(
        &self,
        filter: Option<OfferFilter>,
        now: i64,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<OfferPage, StoreError> {
        dispatch!(self, "list_offers", s => s.list_offers(filter, now, limit, cursor).await)
    }

    /// Revokes a pending offer.
    pub async fn revoke_offer(
        &self,
        id: &str,
        now: i64,
        by: &str,
    ) -> Result<RevokeOutcome, StoreError> {
        dispatch!(self, "revoke_offer", s => s.revoke_offer(id, now, by).await)
    }

    /// Counts one PIN attempt, durably, before the HSM compares its PIN
    /// (offers with an HSM-made PIN hash). `None` when the offer is not pending, has expired or has
    /// no attempts left.
    pub async fn reserve_pin_attempt(
        &self,
        id: &str,
        now: i64,
    ) -> Result<Option<PinAttempt>, StoreError> {
        dispatch!(self, "reserve_pin_attempt", s => s.reserve_pin_attempt(id, now).await)
    }

    /// Counts a wrong PIN's attempt with its audit entry, and locks the
    /// offer when it was the last, in one write. `None` when the offer is
    /// not pending, has expired or has no attempts left.
    pub async fn count_wrong_pin(
        &self,
        id: &str,
        now: i64,
    ) -> Result<Option<WrongPinOutcome>, StoreError> {
        dispatch!(self, "count_wrong_pin", s => s.count_wrong_pin(id, now).await)
    }

    /// Records that a reserved attempt's PIN was wrong (its audit entry),
    /// and locks the offer when it was the last.
    pub async fn record_wrong_pin(
        &self,
        id: &str,
        attempt: PinAttempt,
        now: i64,
    ) -> Result<WrongPinOutcome, StoreError> {
        dispatch!(self, "record_wrong_pin", s => s.record_wrong_pin(id, attempt, now).await)
    }

    /// Marks a pending offer redeemed with the token issued for it, if it is
    /// unexpired at the moment of this write, accounting for its PIN
    /// attempt as `attempt` says (with [`RedemptionAttempt::CountedHere`],
    /// only while the offer has an attempt left). Returns false when
    /// another request got there first (or it expired, locked, ran out of
    /// attempts or was revoked meanwhile): the caller must then not hand
    /// out the token.
    pub async fn consume_offer(
        &self,
        id: &str,
        token: &IssuedToken,
        attempt: RedemptionAttempt,
        now: i64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, "consume_offer", s => s.consume_offer(id, token, attempt, now).await)
    }

    /// A redeemed offer's code came back: revoke the token issued from it.
    pub async fn revoke_token_of_replayed_offer(
        &self,
        id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self, "revoke_token_of_replayed_offer", s => s.revoke_token_of_replayed_offer(id, now).await)
    }

    /// Whether this credential configuration of the offer was issued.
    pub async fn is_issued(
        &self,
        offer_id: &str,
        configuration_id: &str,
    ) -> Result<bool, StoreError> {
        dispatch!(self, "is_issued", s => s.is_issued(offer_id, configuration_id).await)
    }

    /// Records an issuance exactly once: the issuance row, the credentials,
    /// the deletion of that configuration's sealed claims and the audit
    /// entries, in one transaction, and only while the token is the offer's
    /// live token.
    pub async fn record_issuance(
        &self,
        issuance: &NewIssuance,
        now: i64,
    ) -> Result<IssueOutcome, StoreError> {
        dispatch!(self, "record_issuance", s => s.record_issuance(issuance, now).await)
    }

    /// Whether a proof's or nonce's replay key was recorded (a read: the
    /// write that records one is what settles a race).
    pub async fn replay_key_seen(&self, key: &[u8; 32]) -> Result<bool, StoreError> {
        dispatch!(self, "replay_key_seen", s => s.replay_key_seen(key).await)
    }

    /// Whether an SD-JWT VC was issued bound to this holder key.
    pub async fn holder_key_bound(&self, holder_jkt: &str) -> Result<bool, StoreError> {
        dispatch!(self, "holder_key_bound", s => s.holder_key_bound(holder_jkt).await)
    }

    /// Records a wallet's notification `event` about the issuance to the
    /// token `token_jti` that `notification_id` names, with its audit entry,
    /// at most [`MAX_NOTIFICATIONS`] times per issuance.
    pub async fn record_notification(
        &self,
        notification_id: &str,
        token_jti: &str,
        event: &'static str,
        now: i64,
    ) -> Result<NotificationOutcome, StoreError> {
        dispatch!(self, "record_notification", s => s.record_notification(notification_id, token_jti, event, now).await)
    }

    /// Reserves `count` places in the open status list of `kind` (opening
    /// a new list of `size` entries when it has too few left).
    pub async fn reserve_status_slots(
        &self,
        kind: StatusListKind,
        count: i64,
        size: i64,
        now: i64,
    ) -> Result<Vec<StatusSlot>, StoreError> {
        dispatch!(self, "reserve_status_slots", s => s.reserve_status_slots(kind, count, size, now).await)
    }

    /// One issued credential's metadata and status.
    pub async fn credential(&self, id: &str) -> Result<Option<CredentialRecord>, StoreError> {
        dispatch!(self, "credential", s => s.credential(id).await)
    }

    /// Issued credentials, newest first, of an offer and/or a subject.
    pub async fn list_credentials(
        &self,
        offer_id: Option<&str>,
        subject: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CredentialRecord>, StoreError> {
        dispatch!(self, "list_credentials", s => s.list_credentials(offer_id, subject, limit).await)
    }

    /// Changes a credential's status, with its audit entry and its list's
    /// version bump, in one transaction.
    pub async fn change_status(
        &self,
        id: &str,
        to: CredentialStatus,
        by: &str,
        now: i64,
    ) -> Result<StatusChange, StoreError> {
        dispatch!(self, "change_status", s => s.change_status(id, to, by, now).await)
    }

    /// Lists whose signed form is missing, older than their version, or
    /// expires before `renew_before`, with their statuses.
    pub async fn status_lists_to_sign(
        &self,
        renew_before: i64,
    ) -> Result<Vec<StatusListContent>, StoreError> {
        dispatch!(self, "status_lists_to_sign", s => s.status_lists_to_sign(renew_before).await)
    }

    /// Stores a signed list unless a newer version is stored already.
    pub async fn save_signed_status_list(
        &self,
        list: &SignedStatusList,
    ) -> Result<bool, StoreError> {
        dispatch!(self, "save_signed_status_list", s => s.save_signed_status_list(list).await)
    }

    /// A signed list as served, by its URI id.
    pub async fn signed_status_list(
        &self,
        uri_id: &str,
    ) -> Result<Option<SignedStatusList>, StoreError> {
        dispatch!(self, "signed_status_list", s => s.signed_status_list(uri_id).await)
    }

    /// Stores a new API key (its secret only as a keyed hash).
    pub async fn insert_api_key(
        &self,
        key: &ApiKeyRecord,
        secret_hash: &[u8; 32],
    ) -> Result<(), StoreError> {
        dispatch!(self, "insert_api_key", s => s.insert_api_key(key, secret_hash).await)
    }

    /// Finds the active API key whose secret has this keyed hash.
    pub async fn find_api_key(
        &self,
        secret_hash: &[u8; 32],
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        dispatch!(self, "find_api_key", s => s.find_api_key(secret_hash).await)
    }

    /// Lists all API keys, revoked ones included.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        dispatch!(self, "list_api_keys", s => s.list_api_keys().await)
    }

    /// Revokes an API key; false if there is no active key with this id.
    pub async fn revoke_api_key(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        dispatch!(self, "revoke_api_key", s => s.revoke_api_key(id, now).await)
    }

    /// All signing keys, oldest first.
    pub async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        dispatch!(self, "list_signing_keys", s => s.list_signing_keys().await)
    }

    /// Records a key generated in the HSM, with its audit entry.
    pub async fn insert_signing_key(
        &self,
        key: &SigningKeyRecord,
        event: AuditEvent,
    ) -> Result<(), StoreError> {
        dispatch!(self, "insert_signing_key", s => s.insert_signing_key(key, event).await)
    }

    /// Makes a pending key active; the active key of the same purpose
    /// becomes retiring until `verify_until` (`None`: until it is retired).
    /// Returns the previous active kid of that purpose.
    pub async fn activate_signing_key(
        &self,
        kid: &str,
        now: i64,
        verify_until: Option<i64>,
    ) -> Result<Option<String>, StoreError> {
        dispatch!(self, "activate_signing_key", s => s.activate_signing_key(kid, now, verify_until).await)
    }

    /// Attaches a certificate chain (`x5c`: base64 DER, leaf first) to a
    /// credential key that is not retired, with its audit entry (e.g.
    /// `key.certificate_attached`) in the same transaction. False when no
    /// such key exists (none with this kid, a token key, or retired).
    pub async fn set_certificate_chain(
        &self,
        kid: &str,
        x5c: &[String],
        event: AuditEvent,
    ) -> Result<bool, StoreError> {
        dispatch!(self, "set_certificate_chain", s => s.set_certificate_chain(kid, x5c, event).await)
    }

    /// Retires a retiring or pending key; false if it is neither.
    pub async fn retire_signing_key(
        &self,
        kid: &str,
        now: i64,
        forced: bool,
    ) -> Result<bool, StoreError> {
        dispatch!(self, "retire_signing_key", s => s.retire_signing_key(kid, now, forced).await)
    }

    /// Audit entries matching `filter`, in chain order.
    pub async fn audit_entries(
        &self,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        dispatch!(self, "audit_entries", s => s.audit_entries(filter).await)
    }

    /// The chain head: (seq, hash).
    pub async fn audit_head(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        dispatch!(self, "audit_head", s => s.audit_head().await)
    }

    /// Stores a checkpoint; false if one of that size exists.
    pub async fn insert_checkpoint(
        &self,
        checkpoint: &CheckpointRecord,
    ) -> Result<bool, StoreError> {
        dispatch!(self, "insert_checkpoint", s => s.insert_checkpoint(checkpoint).await)
    }

    /// All checkpoints, smallest first.
    pub async fn list_checkpoints(&self) -> Result<Vec<CheckpointRecord>, StoreError> {
        dispatch!(self, "list_checkpoints", s => s.list_checkpoints().await)
    }

    /// Signatures per kid according to the audit log: access tokens
    /// (`token.issued`) and credentials (`credential.issued`), each by its
    /// details' `kid`.
    pub async fn signature_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        dispatch!(self, "signature_counts", s => s.signature_counts().await)
    }

    /// Records the expiry of pending offers past `expires_at` (once each,
    /// in the audit log) and deletes finished offers older than
    /// `retention` seconds, and forgets proof `jti`s that can no longer
    /// pass the age check. Safe to run from every instance at once.
    /// Returns (expiries recorded, offers deleted).
    pub async fn sweep(&self, now: i64, retention: i64) -> Result<(u64, u64), StoreError> {
        dispatch!(self, "sweep", s => s.sweep(now, retention).await)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        dispatch!(self, "close", s => s.close().await)
    }
}

/// The clock when a write is applied. Consuming an offer checks its expiry
/// against this, not against the time its request began.
pub(super) fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Facts about a token recorded at redemption (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// `jti` claim.
    pub jti: String,
    /// `kid` of the signing key.
    pub kid: String,
    /// `exp` claim, unix seconds.
    pub expires_at: i64,
}

/// Which audit entries to read.
#[derive(Debug, Clone)]
pub struct AuditFilter {
    /// Entries after this sequence number.
    pub after_seq: i64,
    /// Entries at or after this time (unix seconds).
    pub since: i64,
    /// Only this event.
    pub event: Option<String>,
    /// Only this subject.
    pub subject: Option<String>,
    /// At most this many.
    pub limit: i64,
}

impl AuditFilter {
    /// Everything, in pages of `limit`.
    pub fn all(after_seq: i64, limit: i64) -> Self {
        AuditFilter {
            after_seq,
            since: 0,
            event: None,
            subject: None,
            limit,
        }
    }
}
