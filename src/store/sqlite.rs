//! SQLite backend: one file, WAL mode, writers serialised by `BEGIN IMMEDIATE`.
//!
//! Reads use a pool of connections; writes go through a pool of exactly one.
//! SQLite allows one writer at a time anyway, and its busy handler waits by
//! sleeping in growing steps (up to 100 ms), which under load gives long
//! latency tails. Queueing writers in this process instead (a fair FIFO on
//! the one write connection) removes those sleeps. `BEGIN IMMEDIATE` and the
//! busy timeout still guard against other processes (the CLI) writing.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::direct;
use super::group_commit::{Applied, BatchedWrite, GroupCommit, WriteLock};
use super::{
    ApiKeyRecord, AuditFilter, AuditRecord, CheckpointRecord, IssueOutcome, IssuedToken,
    KeyPurpose, KeyState, NewIssuance, NewOffer, OfferFilter, OfferPage, OfferRecord, OfferState,
    PinAttempt, RedemptionAttempt, RevokeOutcome, Role, SigningKeyRecord, StatusListKind,
    StatusSlot, StoreError, TokenStatus, WrongPinOutcome,
};
use crate::audit::{self, AuditEvent};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
    pub(super) writer: SqlitePool,
    /// Taken by every write transaction of this process, the group
    /// commit's included.
    write_lock: WriteLock,
    batch: GroupCommit,
    /// The database file, for the readers each worker thread opens.
    pub(super) file: std::sync::Arc<std::path::Path>,
}

pub(super) const OFFER_COLUMNS: &str = "id, pin_hash, tx_code, subject, credential_ids, claims_sealed, state, \
     attempts, max_attempts, created_at, expires_at, redeemed_at, locked_at, revoked_at, \
     token_revoked_at";

/// Appends one audit entry inside the caller's transaction. The caller holds
/// the write lock (`BEGIN IMMEDIATE`), so reading the head and appending
/// cannot interleave with another writer.
pub(super) async fn append_audit(
    conn: &mut SqliteConnection,
    event: &AuditEvent,
    now: i64,
) -> Result<(), StoreError> {
    append_audit_entries(conn, &[(now, event.clone())]).await
}

/// A write transaction on the write connection, begun with `BEGIN
/// IMMEDIATE` and ended by [`WriteTx::commit`]. If it ends any other way (an
/// error on the way, a failed commit, the disk full), the connection is
/// closed instead of returned to the pool: closing rolls back whatever was
/// open, and the pool opens a fresh connection for the next writer. (sqlx's
/// own transaction could leave the connection believing it was still inside
/// a transaction after a failed commit, refusing every later write.)
pub(super) struct WriteTx {
    conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
    committed: bool,
    /// The process's turn to write (see [`WriteLock`]). A transaction
    /// dropped uncommitted gives it up while its connection is still being
    /// closed in the background; the direct writer's busy handler waits
    /// those microseconds out (`direct::open`).
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

/// Longest wait for the process's turn to write before the write fails
/// (`Unavailable`), as long as the pool's wait for its connection.
const TURN_TIMEOUT: Duration = Duration::from_secs(5);

impl WriteTx {
    pub(super) async fn begin(writer: &SqlitePool, lock: &WriteLock) -> Result<Self, StoreError> {
        let turn = tokio::time::timeout(TURN_TIMEOUT, lock.clone().lock_owned())
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer is busy".to_owned()))?;
        let mut tx = WriteTx {
            conn: writer.acquire().await?,
            committed: false,
            _turn: turn,
        };
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *tx.conn)
            .await?;
        Ok(tx)
    }

    pub(super) async fn commit(mut self) -> Result<(), StoreError> {
        sqlx::query("COMMIT").execute(&mut *self.conn).await?;
        self.committed = true;
        Ok(())
    }
}

impl std::ops::Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if !self.committed {
            self.conn.close_on_drop();
        }
    }
}

/// A reserved attempt from its stored counters.
pub(super) fn pin_attempt(number: i64, max: i64) -> Result<PinAttempt, StoreError> {
    let number = u32::try_from(number)
        .map_err(|_| StoreError::Internal(format!("attempt number {number} out of range")))?;
    let max = u32::try_from(max)
        .map_err(|_| StoreError::Internal(format!("attempt limit {max} out of range")))?;
    Ok(PinAttempt { number, max })
}

/// The audit entries of one redemption.
pub(super) fn redemption_events(id: &str, token: &IssuedToken) -> impl Iterator<Item = AuditEvent> {
    [
        AuditEvent::new("offer.redeemed", id, serde_json::json!({})),
        AuditEvent::new(
            "token.issued",
            id,
            serde_json::json!({ "jti": token.jti, "kid": token.kid, "exp": token.expires_at }),
        ),
    ]
    .into_iter()
}

/// An audit entry chained to the one before it, ready to insert.
pub(super) struct ChainedEntry<'a> {
    pub seq: i64,
    pub at: i64,
    pub event: &'a AuditEvent,
    /// The event's details as stored (JSON text).
    pub details: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// Chains `events` (each with its time) onto the log whose head is `head`
/// (its sequence number and hash; `None` for an empty log). Both SQLite
/// paths (the driver's and the group commit's direct one) append with it.
pub(super) fn chain_entries(
    head: Option<(i64, Vec<u8>)>,
    events: &[(i64, AuditEvent)],
) -> Result<Vec<ChainedEntry<'_>>, StoreError> {
    let (mut seq, mut prev_hash) = head.unwrap_or((0, audit::GENESIS.to_vec()));
    let mut entries = Vec::with_capacity(events.len());
    for (at, event) in events {
        seq = next_seq(seq)?;
        let details = event.details.to_string();
        let hash = audit::chain_hash(
            &prev_hash,
            seq,
            *at,
            event.event,
            event.subject.as_deref(),
            &details,
        )
        .to_vec();
        entries.push(ChainedEntry {
            seq,
            at: *at,
            event,
            details,
            prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
            hash,
        });
    }
    Ok(entries)
}

/// Appends entries (each with its time) to the chain with one multi-row
/// statement, hashing them here from the head read once. The caller holds
/// the write lock.
pub(super) async fn append_audit_entries(
    conn: &mut SqliteConnection,
    events: &[(i64, AuditEvent)],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
    let entries = chain_entries(head, events)?;
    // Not kept prepared (`persistent(false)`): the text differs with every
    // count, and sqlx's per-connection cache would fill with them.
    let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "INSERT INTO audit_log (seq, at, event, subject, details, prev_hash, hash) ",
    );
    insert.push_values(entries, |mut row, entry| {
        row.push_bind(entry.seq)
            .push_bind(entry.at)
            .push_bind(entry.event.event)
            .push_bind(entry.event.subject.clone())
            .push_bind(entry.details)
            .push_bind(entry.prev_hash)
            .push_bind(entry.hash);
    });
    insert.build().persistent(false).execute(&mut *conn).await?;
    Ok(())
}

/// The sequence number after `seq`; a chain at `i64::MAX` takes no more
/// entries (an error, not an overflow).
pub(super) fn next_seq(seq: i64) -> Result<i64, StoreError> {
    seq.checked_add(1).ok_or_else(|| {
        StoreError::Internal("the audit log's sequence numbers are exhausted".into())
    })
}

/// The audit entry of a wrong PIN (its count, never the PIN).
pub(super) fn wrong_pin_event(id: &str, attempt: PinAttempt) -> AuditEvent {
    AuditEvent::new(
        "offer.tx_code_failed",
        id,
        serde_json::json!({ "attempts": attempt.number, "max_attempts": attempt.max }),
    )
}

/// The audit entry of the wrong PIN that locked the offer.
pub(super) fn locked_event(id: &str, attempt: PinAttempt) -> AuditEvent {
    AuditEvent::new(
        "offer.locked",
        id,
        serde_json::json!({ "attempts": attempt.number }),
    )
}

/// What a recorded wrong PIN means for the offer.
pub(super) fn wrong_pin_outcome(attempt: PinAttempt) -> WrongPinOutcome {
    if attempt.number >= attempt.max {
        WrongPinOutcome::LockedNow
    } else {
        WrongPinOutcome::Counted {
            remaining: attempt.remaining_if_wrong(),
        }
    }
}

/// Page cache of each reader connection: `cache_size` in KiB (negative).
const READER_CACHE_KIB: &str = "-512";

use super::rows::x5c_json;
super::rows::row_mappers!(SqliteRow);
use super::rows::parse_cursor;

impl SqliteStore {
    pub(super) async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid SQLite URL {url:?}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            // Sealed claims deleted at issuance, expiry or revocation are
            // overwritten in the file, not left in free pages. (With WAL,
            // the old page may stay in the -wal file until the next
            // checkpoint copies over it.)
            .pragma("secure_delete", "ON")
            // Statement journals and sorts stay in memory: SQLite's
            // default puts them in files under /var/tmp, one created and
            // unlinked per multi-row write, holding copies of pages (sealed
            // claims, code hashes) that no secure_delete ever overwrites.
            .pragma("temp_store", "MEMORY");
        let open = |connections: u32, options: SqliteConnectOptions| {
            SqlitePoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(Duration::from_secs(5))
                // A connection to a file in this process cannot break
                // unseen; sqlx's ping before each checkout is a round trip
                // to the connection's thread for nothing.
                .test_before_acquire(false)
                .connect_with(options)
        };
        let opening = |e| StoreError::Unavailable(format!("opening {url}: {e}"));
        let writer = open(1, options.clone()).await.map_err(opening)?;
        // Every reader keeps a page cache of its own (SQLite's default is
        // 2 MiB), all copies of the same pages; a read that misses it is a
        // pread served from the kernel's page cache, which they share.
        let file = options.get_filename().to_owned();
        let readers = options.pragma("cache_size", READER_CACHE_KIB);
        let pool = open(max_connections.max(1), readers)
            .await
            .map_err(opening)?;
        let write_lock = WriteLock::default();
        let batch = GroupCommit::start(&file, write_lock.clone())?;
        Ok(SqliteStore {
            pool,
            writer,
            write_lock,
            batch,
            file: file.into(),
        })
    }

    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.writer)
            .await
            .map_err(|e| StoreError::Internal(format!("migration failed: {e}")))
    }

    pub(super) async fn check_schema(&self) -> Result<(), StoreError> {
        let expected = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = 1")
                .fetch_one(&self.pool)
                .await
                .map_err(|_| {
                    StoreError::Config(
                        "the database has no schema: run `notary migrate`".to_owned(),
                    )
                })?;
        match applied {
            Some(v) if v == expected => Ok(()),
            Some(v) if v > expected => Err(StoreError::Config(format!(
                "the database schema (version {v}) is newer than this notary (version {expected})"
            ))),
            _ => Err(StoreError::Config(format!(
                "the database schema is behind (want version {expected}): run `notary migrate`"
            ))),
        }
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        WriteTx::begin(&self.writer, &self.write_lock).await
    }

    pub(super) async fn audit(&self, event: AuditEvent, now: i64) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        append_audit(&mut tx, &event, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn insert_offer(
        &self,
        offer: &NewOffer,
        event: AuditEvent,
    ) -> Result<(), StoreError> {
        self.batch
            .submit(BatchedWrite::insert_offer(offer, event))
            .await?
            .inserted()
    }

    pub(super) async fn find_offer_by_code_hash(
        &self,
        code_hash: &[u8; 32],
    ) -> Result<Option<OfferRecord>, StoreError> {
        direct::find_offer_by_code_hash(&self.file, code_hash)
    }

    pub(super) async fn find_offer_by_ref_hash(
        &self,
        ref_hash: &[u8; 32],
    ) -> Result<Option<OfferRecord>, StoreError> {
        let sql = offer_select("WHERE ref_hash = ?");
        let row = sqlx::query(sql)
            .bind(ref_hash.to_vec())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(offer_from_row).transpose()
    }

    pub(super) async fn token_status(&self, jti: &str) -> Result<Option<TokenStatus>, StoreError> {
        direct::token_status(&self.file, jti)
    }

    pub(super) async fn record_proof_jti(
        &self,
        key: &[u8; 32],
        keep_until: i64,
    ) -> Result<bool, StoreError> {
        match self
            .batch
            .submit(BatchedWrite::RecordProofJti {
                key: *key,
                keep_until,
            })
            .await?
        {
            Applied::ProofJti(new) => Ok(new),
            other => Err(other.unexpected()),
        }
    }

    pub(super) async fn record_issuance(
        &self,
        issuance: &NewIssuance,
        now: i64,
    ) -> Result<IssueOutcome, StoreError> {
        let write = BatchedWrite::RecordIssuance {
            issuance: Box::new(issuance.clone()),
            now,
        };
        match self.batch.submit(write).await? {
            Applied::Issuance(outcome) => Ok(outcome),
            other => Err(other.unexpected()),
        }
    }

    pub(super) async fn reserve_status_slots(
        &self,
        kind: StatusListKind,
        count: i64,
        size: i64,
        now: i64,
    ) -> Result<Vec<StatusSlot>, StoreError> {
        let write = BatchedWrite::ReserveStatusSlots {
            kind,
            count,
            size,
            now,
        };
        match self.batch.submit(write).await? {
            Applied::StatusSlots(slots) => Ok(slots),
            other => Err(other.unexpected()),
        }
    }

    pub(super) async fn get_offer(&self, id: &str) -> Result<Option<OfferRecord>, StoreError> {
        direct::get_offer(&self.file, id)
    }

    pub(super) async fn list_offers(
        &self,
        filter: Option<OfferFilter>,
        now: i64,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<OfferPage, StoreError> {
        let (state, unexpired): (Option<&str>, Option<bool>) = match filter {
            None => (None, None),
            Some(OfferFilter::Pending) => (Some("pending"), Some(true)),
            Some(OfferFilter::Expired) => (Some("pending"), Some(false)),
            Some(OfferFilter::Stored(s)) => (Some(s.as_str()), None),
        };
        let (cursor_at, cursor_id) = match cursor {
            Some(c) => {
                let (at, id) = parse_cursor(c).ok_or(StoreError::BadCursor)?;
                (Some(at), Some(id))
            }
            None => (None, None),
        };
        let sql = offer_select(
            "WHERE (?1 IS NULL OR state = ?1) \
               AND (?2 IS NULL OR (expires_at > ?3) = ?2) \
               AND (?4 IS NULL OR created_at < ?4 OR (created_at = ?4 AND id < ?5)) \
             ORDER BY created_at DESC, id DESC LIMIT ?6",
        );
        let rows = sqlx::query(sql)
            .bind(state)
            .bind(unexpired)
            .bind(now)
            .bind(cursor_at)
            .bind(cursor_id)
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        let mut offers = rows
            .iter()
            .map(offer_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if offers.len() > limit as usize {
            offers.truncate(limit as usize);
            offers.last().map(|o| format!("{}.{}", o.created_at, o.id))
        } else {
            None
        };
        Ok(OfferPage {
            offers,
            next_cursor,
        })
    }

    pub(super) async fn revoke_offer(
        &self,
        id: &str,
        now: i64,
        by: &str,
    ) -> Result<RevokeOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE offers SET state = 'revoked', revoked_at = ?, claims_sealed = NULL WHERE id = ? AND state = 'pending'",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            let state: Option<String> = sqlx::query_scalar("SELECT state FROM offers WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            return Ok(match state.as_deref().and_then(OfferState::parse) {
                Some(s) => RevokeOutcome::NotPending(s),
                None => RevokeOutcome::NotFound,
            });
        }
        let event = AuditEvent::new("offer.revoked", id, serde_json::json!({ "by": by }));
        append_audit(&mut tx, &event, now).await?;
        tx.commit().await?;
        Ok(RevokeOutcome::Revoked)
    }

    pub(super) async fn reserve_pin_attempt(
        &self,
        id: &str,
        now: i64,
    ) -> Result<Option<PinAttempt>, StoreError> {
        self.batch
            .submit(BatchedWrite::reserve_pin_attempt(id, now))
            .await?
            .reserved()
    }

    pub(super) async fn count_wrong_pin(
        &self,
        id: &str,
        now: i64,
    ) -> Result<Option<WrongPinOutcome>, StoreError> {
        let counted = self
            .batch
            .submit(BatchedWrite::count_wrong_pin(id, now))
            .await?
            .wrong_pin_counted()?;
        Ok(counted.map(wrong_pin_outcome))
    }

    pub(super) async fn record_wrong_pin(
        &self,
        id: &str,
        attempt: PinAttempt,
        now: i64,
    ) -> Result<WrongPinOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut events = vec![(now, wrong_pin_event(id, attempt))];
        if attempt.number >= attempt.max {
            // The last attempt was wrong. The offer already refuses further
            // reservations (its attempts are used up); this makes it say so.
            sqlx::query(
                "UPDATE offers SET state = 'locked', locked_at = ?, claims_sealed = NULL WHERE id = ? AND state = 'pending'",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            events.push((now, locked_event(id, attempt)));
        }
        append_audit_entries(&mut tx, &events).await?;
        tx.commit().await?;
        Ok(wrong_pin_outcome(attempt))
    }

    pub(super) async fn consume_offer(
        &self,
        id: &str,
        token: &IssuedToken,
        attempt: RedemptionAttempt,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.batch
            .submit(BatchedWrite::consume_offer(id, token, attempt, now))
            .await?
            .consumed()
    }

    pub(super) async fn revoke_token_of_replayed_offer(
        &self,
        id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let jti: Option<Option<String>> = sqlx::query_scalar(
            "UPDATE offers SET token_revoked_at = ?, claims_sealed = NULL \
             WHERE id = ? AND state = 'redeemed' AND token_revoked_at IS NULL RETURNING token_jti",
        )
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(jti) = jti {
            let event = AuditEvent::new(
                "token.revoked",
                id,
                serde_json::json!({ "jti": jti, "reason": "pre-authorized code replayed" }),
            );
            append_audit(&mut tx, &event, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn insert_api_key(
        &self,
        key: &ApiKeyRecord,
        secret_hash: &[u8; 32],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, name, role, secret_hash, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(key.role.as_str())
        .bind(secret_hash.to_vec())
        .bind(key.created_at)
        .execute(&mut *tx)
        .await?;
        let event = AuditEvent::new(
            "api_key.created",
            &key.id,
            serde_json::json!({ "name": key.name, "role": key.role.as_str() }),
        );
        append_audit(&mut tx, &event, key.created_at).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn find_api_key(
        &self,
        secret_hash: &[u8; 32],
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, role, created_at, revoked_at FROM api_keys \
             WHERE secret_hash = ? AND revoked_at IS NULL",
        )
        .bind(secret_hash.to_vec())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    pub(super) async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, role, created_at, revoked_at FROM api_keys ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(api_key_from_row).collect()
    }

    pub(super) async fn revoke_api_key(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let changed =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if changed == 1 {
            let event = AuditEvent::new("api_key.revoked", id, serde_json::json!({}));
            append_audit(&mut tx, &event, now).await?;
        }
        tx.commit().await?;
        Ok(changed == 1)
    }

    pub(super) async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, label, purpose, alg, public_jwk, state, created_at, activated_at, verify_until, \
             retired_at, x5c FROM signing_keys ORDER BY created_at, kid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(signing_key_from_row).collect()
    }

    pub(super) async fn insert_signing_key(
        &self,
        key: &SigningKeyRecord,
        event: AuditEvent,
    ) -> Result<(), StoreError> {
        let x5c = key.x5c.as_deref().map(x5c_json).transpose()?;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO signing_keys \
             (kid, label, purpose, alg, public_jwk, state, created_at, activated_at, x5c) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.kid)
        .bind(&key.label)
        .bind(key.purpose.as_str())
        .bind(&key.alg)
        .bind(&key.public_jwk)
        .bind(key.state.as_str())
        .bind(key.created_at)
        .bind(key.activated_at)
        .bind(x5c)
        .execute(&mut *tx)
        .await?;
        append_audit(&mut tx, &event, key.created_at).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn activate_signing_key(
        &self,
        kid: &str,
        now: i64,
        verify_until: Option<i64>,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.begin_write().await?;
        let purpose: Option<String> = sqlx::query_scalar(
            "SELECT purpose FROM signing_keys WHERE kid = ? AND state = 'pending'",
        )
        .bind(kid)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(purpose) = purpose else {
            return Err(StoreError::Conflict(format!("key {kid} is not pending")));
        };
        // Only the active key of the same purpose steps down.
        let previous: Option<String> = sqlx::query_scalar(
            "SELECT kid FROM signing_keys WHERE state = 'active' AND purpose = ?",
        )
        .bind(&purpose)
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE signing_keys SET state = 'retiring', verify_until = ? \
             WHERE state = 'active' AND purpose = ?",
        )
        .bind(verify_until)
        .bind(&purpose)
        .execute(&mut *tx)
        .await?;
        let changed = sqlx::query(
            "UPDATE signing_keys SET state = 'active', activated_at = ? WHERE kid = ? AND state = 'pending'",
        )
        .bind(now)
        .bind(kid)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed != 1 {
            return Err(StoreError::Conflict(format!("key {kid} is not pending")));
        }
        let event = AuditEvent::new(
            "key.rotated",
            kid,
            serde_json::json!({ "purpose": purpose, "previous": previous,
                                "previous_verifies_until": verify_until }),
        );
        append_audit(&mut tx, &event, now).await?;
        tx.commit().await?;
        Ok(previous)
    }

    pub(super) async fn set_certificate_chain(
        &self,
        kid: &str,
        x5c: &[String],
        event: AuditEvent,
    ) -> Result<bool, StoreError> {
        let chain = x5c_json(x5c)?;
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE signing_keys SET x5c = ? \
             WHERE kid = ? AND purpose = 'credential' AND state <> 'retired'",
        )
        .bind(chain)
        .bind(kid)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 1 {
            append_audit(&mut tx, &event, super::unix_now()).await?;
        }
        tx.commit().await?;
        Ok(changed == 1)
    }

    pub(super) async fn retire_signing_key(
        &self,
        kid: &str,
        now: i64,
        forced: bool,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE signing_keys SET state = 'retired', retired_at = ? \
             WHERE kid = ? AND state IN ('retiring', 'pending')",
        )
        .bind(now)
        .bind(kid)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 1 {
            let event =
                AuditEvent::new("key.retired", kid, serde_json::json!({ "forced": forced }));
            append_audit(&mut tx, &event, now).await?;
        }
        tx.commit().await?;
        Ok(changed == 1)
    }

    pub(super) async fn audit_entries(
        &self,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, event, subject, details, prev_hash, hash FROM audit_log \
             WHERE seq > ?1 AND at >= ?2 AND (?3 IS NULL OR event = ?3) AND (?4 IS NULL OR subject = ?4) \
             ORDER BY seq LIMIT ?5",
        )
        .bind(filter.after_seq)
        .bind(filter.since)
        .bind(filter.event.as_deref())
        .bind(filter.subject.as_deref())
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_from_row).collect()
    }

    pub(super) async fn audit_head(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("seq")?, r.try_get("hash")?)))
            .transpose()
    }

    pub(super) async fn insert_checkpoint(&self, c: &CheckpointRecord) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "INSERT INTO audit_checkpoints (size, head_hash, note, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (size) DO NOTHING",
        )
        .bind(c.size)
        .bind(&c.head_hash)
        .bind(&c.note)
        .bind(c.created_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(changed == 1)
    }

    pub(super) async fn list_checkpoints(&self) -> Result<Vec<CheckpointRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT size, head_hash, note, created_at FROM audit_checkpoints ORDER BY size",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CheckpointRecord {
                    size: r.try_get("size")?,
                    head_hash: r.try_get("head_hash")?,
                    note: r.try_get("note")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    pub(super) async fn signature_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT json_extract(details, '$.kid') AS kid, COUNT(*) AS n FROM audit_log \
             WHERE event IN ('token.issued', 'credential.issued') GROUP BY 1",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let kid: Option<String> = r.try_get("kid")?;
                Ok((kid.unwrap_or_default(), r.try_get("n")?))
            })
            .collect()
    }

    pub(super) async fn sweep(&self, now: i64, retention: i64) -> Result<(u64, u64), StoreError> {
        let mut tx = self.begin_write().await?;
        // Conditional on expiry_recorded_at: whichever instance gets here
        // first records each expiry; the others find nothing to do.
        let expired: Vec<String> = sqlx::query_scalar(
            "UPDATE offers SET expiry_recorded_at = ?, claims_sealed = NULL \
             WHERE state = 'pending' AND expires_at <= ? AND expiry_recorded_at IS NULL RETURNING id",
        )
        .bind(now)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for id in &expired {
            let event = AuditEvent::new("offer.expired", id, serde_json::json!({}));
            append_audit(&mut tx, &event, now).await?;
        }
        // A redeemed offer's claims wait for the credential request only
        // while its token lives; after that nobody can ask for them.
        sqlx::query(
            "UPDATE offers SET claims_sealed = NULL \
             WHERE state = 'redeemed' AND claims_sealed IS NOT NULL AND token_expires_at <= ?",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let purged = sqlx::query(
            "DELETE FROM offers WHERE (state <> 'pending' OR expires_at <= ?) \
             AND COALESCE(redeemed_at, locked_at, revoked_at, expires_at) < ?",
        )
        .bind(now)
        .bind(now - retention)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM proof_jtis WHERE keep_until < ?")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if purged > 0 {
            let event = AuditEvent::global(
                "offers.purged",
                serde_json::json!({ "count": purged, "older_than": now - retention }),
            );
            append_audit(&mut tx, &event, now).await?;
        }
        tx.commit().await?;
        Ok((expired.len() as u64, purged))
    }

    pub(super) async fn close(&self) {
        self.batch.close().await;
        // Worker threads' readers may still be open, so the last close
        // would not fold the WAL in: fold it in and empty it now, so the
        // database file alone holds every commit once notary has stopped.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.writer)
            .await
        {
            tracing::warn!(error = %e, "folding the WAL into the database file at close failed");
        }
        self.pool.close().await;
        self.writer.close().await;
    }
}

/// `SELECT <offer columns> FROM offers <rest>`, built once per call site.
fn offer_select(rest: &'static str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("SELECT {OFFER_COLUMNS} FROM offers {rest}"))
}
