//! PostgreSQL backend, for several notary instances sharing one database.
//!
//! Writes record their audit entries by staging them (`pg_audit.rs`), which
//! reads nothing, so the hot writes (offers created, PIN attempts,
//! redemptions, credentials issued) run on every instance at once without a
//! cluster-wide lock: their rules rest on conditional `UPDATE`s and unique
//! keys, which PostgreSQL re-checks against the committed row. The rarer
//! writes whose rules span rows (keys, API keys, status changes, the
//! sweeper, checkpoints) and the audit chainer still take one
//! transaction-scoped advisory lock (`pg_advisory_xact_lock`) and so are
//! serialised across instances.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgConnection, PgPool, Row};

use super::group_commit::BatchedWrite;
use super::pg_audit::{self, Chainer};
use super::pg_batch::PgGroupCommit;
use super::pg_reads::CodeLookups;
use super::sqlite::{locked_event, wrong_pin_event, wrong_pin_outcome};
use super::{
    ApiKeyRecord, AuditFilter, AuditRecord, CheckpointRecord, IssueOutcome, IssuedToken,
    KeyPurpose, KeyState, NewIssuance, NewOffer, OfferFilter, OfferPage, OfferRecord, OfferState,
    PinAttempt, RedemptionAttempt, RevokeOutcome, Role, SigningKeyRecord, StatusListKind,
    StatusSlot, StoreError, TokenStatus, WrongPinOutcome, unix_now,
};
use crate::audit::AuditEvent;

/// Advisory lock id that serialises the audit chainer and the rare writers
/// across instances ("notary").
const WRITER_LOCK: i64 = 0x6e6f_7461_7279;

/// Reader connections opened at start-up, before the server says it is ready:
/// start-up reads come in quick succession, and sqlx returns a released
/// connection to its pool asynchronously, so with one the next read would
/// often open another.
const WARM_READERS: u32 = 2;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pub(super) pool: PgPool,
    pub(super) writer: PgPool,
    /// Offers created, PIN attempts and redemptions, committed together.
    batch: PgGroupCommit,
    /// The redemptions' offer lookups, sent together (`pg_reads.rs`).
    code_lookups: CodeLookups,
    /// The one connection that chains staged audit entries (the chainer
    /// task and readers of the chain take turns on it), so readers waiting
    /// for the chain's lock never hold the read pool's connections.
    chain: PgPool,
}

/// Takes the cluster-wide writer lock for the rest of `tx`'s transaction.
pub(super) async fn lock_writers(tx: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(WRITER_LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

pub(super) const OFFER_COLUMNS: &str = "id, pin_hash, tx_code, subject, credential_ids, claims_sealed, state, \
     attempts, max_attempts, created_at, expires_at, redeemed_at, locked_at, revoked_at, \
     token_revoked_at";

/// Records one audit entry inside the caller's transaction: staged, and
/// chained once it has committed (`pg_audit.rs`).
pub(super) async fn append_audit(
    conn: &mut PgConnection,
    event: &AuditEvent,
    now: i64,
) -> Result<(), StoreError> {
    pg_audit::stage_one(conn, event, now).await
}

/// Opens `count` connections of `pool` concurrently and returns them to it;
/// fails if the database cannot be reached.
///
/// A new connection costs a server process and, over TLS, a handshake in
/// which sqlx's small writes wait for delayed ACKs (sqlx does not set
/// `TCP_NODELAY`): about 90 ms here. Opened one by one as start-up queries
/// happen to need them, they would add up before the server is ready.
async fn open_at_once(pool: &PgPool, count: u32) -> Result<(), sqlx::Error> {
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..count {
        let pool = pool.clone();
        opening.spawn(async move { pool.acquire().await });
    }
    // Held until all are open, so each task needs a connection of its own.
    let mut held = Vec::new();
    while let Some(joined) = opening.join_next().await {
        held.push(joined.map_err(|e| sqlx::Error::Protocol(format!("connecting: {e}")))??);
    }
    let opened = held.len();
    drop(held);
    // Dropped connections go back to the pool from tasks of their own; a
    // read before they are back would open yet another connection.
    let back = std::time::Instant::now();
    while pool.num_idle() < opened && back.elapsed() < Duration::from_millis(100) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

use super::rows::x5c_json;
super::rows::row_mappers!(PgRow);
use super::rows::parse_cursor;

impl PgStore {
    pub(super) async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?;
        let pool_of = |connections: u32| {
            PgPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy_with(options.clone())
        };
        let (writer, chain, pool) = (pool_of(1), pool_of(1), pool_of(max_connections.max(1)));
        // The URL may carry a password: say which host, never the URL.
        let host = options.get_host().to_owned();
        tokio::try_join!(
            open_at_once(&writer, 1),
            open_at_once(&pool, max_connections.clamp(1, WARM_READERS)),
        )
        .map_err(|e| StoreError::Unavailable(format!("connecting to PostgreSQL at {host}: {e}")))?;
        let chainer = Chainer::start(chain.clone());
        let batch = PgGroupCommit::start(writer.clone(), chainer);
        let code_lookups = CodeLookups::start(pool.clone());
        Ok(PgStore {
            pool,
            writer,
            batch,
            code_lookups,
            chain,
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
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
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

    /// Reachable, and writable: an instance pointed at a replica after a
    /// failover, or at a database made read-only, is not ready: every write
    /// would fail.
    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        let (replica, read_only): (bool, bool) = sqlx::query_as(
            "SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on'",
        )
        .fetch_one(&self.pool)
        .await?;
        if replica {
            return Err(StoreError::Unavailable(
                "the database is a read-only replica (in recovery)".to_owned(),
            ));
        }
        if read_only {
            return Err(StoreError::Unavailable(
                "the database accepts only read-only transactions".to_owned(),
            ));
        }
        Ok(())
    }

    /// A write transaction holding the cluster-wide writer lock, for the
    /// writes whose rules span rows. On a connection of the read pool, not
    /// the write connection: while it waits for the lock (another
    /// instance's sweep, a chainer), the group commit goes on.
    pub(super) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_writers(&mut tx).await?;
        Ok(tx)
    }

    /// A write transaction without the writer lock, for writes whose rules
    /// rest on conditional updates, row locks and unique keys alone.
    pub(super) async fn begin_unserialised(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        Ok(self.writer.begin().await?)
    }

    /// Chains the staged audit entries, so that a read of the chain sees
    /// every committed entry.
    async fn chain_staged(&self) -> Result<(), StoreError> {
        pg_audit::chain_staged(&self.chain).await.map(drop)
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
        self.code_lookups.find(code_hash).await
    }

    pub(super) async fn find_offer_by_ref_hash(
        &self,
        ref_hash: &[u8; 32],
    ) -> Result<Option<OfferRecord>, StoreError> {
        let sql = offer_select("WHERE ref_hash = $1");
        let row = sqlx::query(sql)
            .bind(ref_hash.to_vec())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(offer_from_row).transpose()
    }

    pub(super) async fn token_status(&self, jti: &str) -> Result<Option<TokenStatus>, StoreError> {
        let row = sqlx::query("SELECT id, token_revoked_at FROM offers WHERE token_jti = $1")
            .bind(jti)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(TokenStatus {
                offer_id: r.try_get("id")?,
                revoked_at: r.try_get("token_revoked_at")?,
            })
        })
        .transpose()
    }

    pub(super) async fn record_proof_jti(
        &self,
        key: &[u8; 32],
        keep_until: i64,
    ) -> Result<bool, StoreError> {
        // One statement, no audit entry: no writer lock needed; the primary key decides.
        let inserted = sqlx::query(
            "INSERT INTO proof_jtis (key, keep_until) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key.to_vec())
        .bind(keep_until)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    pub(super) async fn record_issuance(
        &self,
        issuance: &NewIssuance,
        now: i64,
    ) -> Result<IssueOutcome, StoreError> {
        let mut tx = self.begin_unserialised().await?;
        let outcome = Self::record_issuance_in(&mut tx, issuance, now).await?;
        // Dropping the transaction undoes a refused issuance's writes.
        if !outcome.undoes_its_writes() {
            tx.commit().await?;
        }
        Ok(outcome)
    }

    pub(super) async fn reserve_status_slots(
        &self,
        kind: StatusListKind,
        count: i64,
        size: i64,
        now: i64,
    ) -> Result<Vec<StatusSlot>, StoreError> {
        let mut tx = self.begin_unserialised().await?;
        let slots = Self::reserve_status_slots_in(&mut tx, kind, count, size, now).await?;
        tx.commit().await?;
        Ok(slots)
    }

    pub(super) async fn get_offer(&self, id: &str) -> Result<Option<OfferRecord>, StoreError> {
        let sql = offer_select("WHERE id = $1");
        let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(offer_from_row).transpose()
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
            "WHERE ($1::text IS NULL OR state = $1) \
               AND ($2::boolean IS NULL OR (expires_at > $3) = $2) \
               AND ($4::bigint IS NULL OR created_at < $4 OR (created_at = $4 AND id < $5)) \
             ORDER BY created_at DESC, id DESC LIMIT $6",
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
            "UPDATE offers SET state = 'revoked', revoked_at = $1, claims_sealed = NULL WHERE id = $2 AND state = 'pending'",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            let state: Option<String> =
                sqlx::query_scalar("SELECT state FROM offers WHERE id = $1")
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

    /// One conditional statement (in a batch): concurrent attempts can
    /// never pass `max_attempts`.
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
        let mut tx = self.begin_unserialised().await?;
        append_audit(&mut tx, &wrong_pin_event(id, attempt), now).await?;
        if attempt.number >= attempt.max {
            let locked = sqlx::query(
                "UPDATE offers SET state = 'locked', locked_at = $1, claims_sealed = NULL WHERE id = $2 AND state = 'pending'",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // An offer redeemed (by a right PIN judged before this one was
            // counted), revoked or expired since is not recorded as locked.
            if locked == 1 {
                append_audit(&mut tx, &locked_event(id, attempt), now).await?;
            }
        }
        tx.commit().await?;
        Ok(wrong_pin_outcome(attempt))
    }

    /// Expiry is judged as the batch writes the row, not when the request
    /// began: the batch may have queued, or waited for the row's lock.
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
        let mut tx = self.begin_unserialised().await?;
        let jti: Option<Option<String>> = sqlx::query_scalar(
            "UPDATE offers SET token_revoked_at = $1, claims_sealed = NULL \
             WHERE id = $2 AND state = 'redeemed' AND token_revoked_at IS NULL RETURNING token_jti",
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
            "INSERT INTO api_keys (id, name, role, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
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
             WHERE secret_hash = $1 AND revoked_at IS NULL",
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
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
            "SELECT purpose FROM signing_keys WHERE kid = $1 AND state = 'pending'",
        )
        .bind(kid)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(purpose) = purpose else {
            return Err(StoreError::Conflict(format!("key {kid} is not pending")));
        };
        // Only the active key of the same purpose steps down.
        let previous: Option<String> = sqlx::query_scalar(
            "SELECT kid FROM signing_keys WHERE state = 'active' AND purpose = $1",
        )
        .bind(&purpose)
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE signing_keys SET state = 'retiring', verify_until = $1 \
             WHERE state = 'active' AND purpose = $2",
        )
        .bind(verify_until)
        .bind(&purpose)
        .execute(&mut *tx)
        .await?;
        let changed = sqlx::query(
            "UPDATE signing_keys SET state = 'active', activated_at = $1 WHERE kid = $2 AND state = 'pending'",
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
            "UPDATE signing_keys SET x5c = $1 \
             WHERE kid = $2 AND purpose = 'credential' AND state <> 'retired'",
        )
        .bind(chain)
        .bind(kid)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 1 {
            append_audit(&mut tx, &event, unix_now()).await?;
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
            "UPDATE signing_keys SET state = 'retired', retired_at = $1 \
             WHERE kid = $2 AND state IN ('retiring', 'pending')",
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
        self.chain_staged().await?;
        let rows = sqlx::query(
            "SELECT seq, at, event, subject, details, prev_hash, hash FROM audit_log \
             WHERE seq > $1 AND at >= $2 AND ($3::text IS NULL OR event = $3) AND ($4::text IS NULL OR subject = $4) \
             ORDER BY seq LIMIT $5",
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
        self.chain_staged().await?;
        let row = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("seq")?, r.try_get("hash")?)))
            .transpose()
    }

    pub(super) async fn insert_checkpoint(&self, c: &CheckpointRecord) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "INSERT INTO audit_checkpoints (size, head_hash, note, created_at) VALUES ($1, $2, $3, $4) \
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
        self.chain_staged().await?;
        let rows = sqlx::query(
            "SELECT (details::jsonb ->> 'kid') AS kid, COUNT(*) AS n FROM audit_log \
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

    /// Three transactions, each locking the offers it changes in id order,
    /// as the redemption batches lock theirs, so neither can wait for the
    /// other in a cycle. Each is conditional, so instances sweeping at once
    /// do each piece of work once.
    pub(super) async fn sweep(&self, now: i64, retention: i64) -> Result<(u64, u64), StoreError> {
        let mut tx = self.begin_write().await?;
        let expired: Vec<String> = sqlx::query_scalar(
            "UPDATE offers SET expiry_recorded_at = $1, claims_sealed = NULL \
             WHERE id IN (SELECT id FROM offers WHERE state = 'pending' AND expires_at <= $2 \
                            AND expiry_recorded_at IS NULL ORDER BY id FOR UPDATE) \
             RETURNING id",
        )
        .bind(now)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for id in &expired {
            let event = AuditEvent::new("offer.expired", id, serde_json::json!({}));
            append_audit(&mut tx, &event, now).await?;
        }
        tx.commit().await?;

        // A redeemed offer's claims wait for the credential request only
        // while its token lives; after that nobody can ask for them.
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE offers SET claims_sealed = NULL \
             WHERE id IN (SELECT id FROM offers WHERE state = 'redeemed' AND claims_sealed IS NOT NULL \
                            AND token_expires_at <= $1 ORDER BY id FOR UPDATE)",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;

        let mut tx = self.begin_write().await?;
        let purged = sqlx::query(
            "DELETE FROM offers WHERE id IN (SELECT id FROM offers \
               WHERE (state <> 'pending' OR expires_at <= $1) \
                 AND COALESCE(redeemed_at, locked_at, revoked_at, expires_at) < $2 \
               ORDER BY id FOR UPDATE)",
        )
        .bind(now)
        .bind(now - retention)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM proof_jtis WHERE keep_until < $1")
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
        // Entries left staged would be chained by the next instance or
        // reader; chaining them now keeps the chain current at shutdown.
        if let Err(e) = self.chain_staged().await {
            tracing::warn!(error = %e, "could not chain staged audit entries at close");
        }
        self.pool.close().await;
        self.writer.close().await;
        self.chain.close().await;
    }
}

/// `SELECT <offer columns> FROM offers <rest>`, built once per call site.
fn offer_select(rest: &'static str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("SELECT {OFFER_COLUMNS} FROM offers {rest}"))
}
