//! Persistence: offers, API keys and the audit log, behind one interface.
//!
//! `Store` is an enum over backends, chosen once from the database URL's
//! scheme. Today that is SQLite; PostgreSQL joins as a second variant with
//! the same methods and the same tests. Every state change is written in one
//! transaction together with its audit entry.

pub mod model;
mod sqlite;

pub use model::*;
pub use sqlite::SqliteStore;

use crate::audit::AuditEvent;

/// Storage failures, in the terms callers act on.
#[derive(Debug, thiserror::Error)]
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
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Sqlite($store) => $call,
        }
    };
}

impl Store {
    /// Connects to the database named by `url` (`sqlite:PATH`).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(
                SqliteStore::connect(url, max_connections).await?,
            ))
        } else {
            Err(StoreError::Config(format!(
                "unsupported database URL {url:?}: use sqlite:PATH"
            )))
        }
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.migrate().await)
    }

    /// Whether the schema is at the version this build expects.
    pub async fn check_schema(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.check_schema().await)
    }

    /// A cheap round trip, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }

    /// Appends an audit entry that has no state change of its own.
    pub async fn audit(&self, event: AuditEvent, now: i64) -> Result<(), StoreError> {
        dispatch!(self, s => s.audit(event, now).await)
    }

    /// Inserts a new offer and its audit entry.
    pub async fn insert_offer(
        &self,
        offer: &NewOffer,
        event: AuditEvent,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.insert_offer(offer, event).await)
    }

    /// Finds the offer whose code has this keyed hash.
    pub async fn find_offer_by_code_hash(
        &self,
        code_hash: &[u8; 32],
    ) -> Result<Option<OfferRecord>, StoreError> {
        dispatch!(self, s => s.find_offer_by_code_hash(code_hash).await)
    }

    /// Gets an offer by id.
    pub async fn get_offer(&self, id: &str) -> Result<Option<OfferRecord>, StoreError> {
        dispatch!(self, s => s.get_offer(id).await)
    }

    /// Lists offers, newest first, `limit` at a time.
    pub async fn list_offers(
        &self,
        filter: Option<OfferFilter>,
        now: i64,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<OfferPage, StoreError> {
        dispatch!(self, s => s.list_offers(filter, now, limit, cursor).await)
    }

    /// Revokes a pending offer.
    pub async fn revoke_offer(
        &self,
        id: &str,
        now: i64,
        by: &str,
    ) -> Result<RevokeOutcome, StoreError> {
        dispatch!(self, s => s.revoke_offer(id, now, by).await)
    }

    /// Counts one wrong PIN atomically; locks the offer at its limit.
    pub async fn record_wrong_pin(
        &self,
        id: &str,
        now: i64,
    ) -> Result<WrongPinOutcome, StoreError> {
        dispatch!(self, s => s.record_wrong_pin(id, now).await)
    }

    /// Marks a pending, unexpired offer redeemed with the token issued for it.
    /// Returns false when another request got there first (or it expired,
    /// locked or was revoked meanwhile): the caller must then not hand out
    /// the token.
    pub async fn consume_offer(
        &self,
        id: &str,
        token: &IssuedToken,
        now: i64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.consume_offer(id, token, now).await)
    }

    /// A redeemed offer's code came back: revoke the token issued from it.
    pub async fn revoke_token_of_replayed_offer(
        &self,
        id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.revoke_token_of_replayed_offer(id, now).await)
    }

    /// Stores a new API key (its secret only as a keyed hash).
    pub async fn insert_api_key(
        &self,
        key: &ApiKeyRecord,
        secret_hash: &[u8; 32],
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.insert_api_key(key, secret_hash).await)
    }

    /// Finds the active API key whose secret has this keyed hash.
    pub async fn find_api_key(
        &self,
        secret_hash: &[u8; 32],
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        dispatch!(self, s => s.find_api_key(secret_hash).await)
    }

    /// Lists all API keys, revoked ones included.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        dispatch!(self, s => s.list_api_keys().await)
    }

    /// Revokes an API key; false if there is no active key with this id.
    pub async fn revoke_api_key(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        dispatch!(self, s => s.revoke_api_key(id, now).await)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        dispatch!(self, s => s.close().await)
    }
}

/// Facts about a token recorded at redemption (never the token itself).
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// `jti` claim.
    pub jti: String,
    /// `kid` of the signing key.
    pub kid: String,
    /// `exp` claim, unix seconds.
    pub expires_at: i64,
}
