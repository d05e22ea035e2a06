//! The audit chain on PostgreSQL: entries are staged by the writers and
//! chained by one transaction at a time.
//!
//! A write transaction stages its audit entries in `audit_pending`, where
//! they commit or roll back with the state change they describe. Staging
//! reads nothing, so writers on several instances need no cluster-wide lock
//! to append. The chainer moves staged entries into `audit_log` in `id`
//! order under the writer lock: it reads the chain's head, hashes each
//! entry onto it, inserts them and deletes them from `audit_pending`, in one
//! transaction, so an entry is staged or chained, never both and never
//! lost. `id` is drawn from a sequence at insert, so an entry written
//! because of another, committed, entry has the larger id and is chained
//! after it.
//!
//! Every instance runs a chainer: woken when a batch with entries commits,
//! and once a second regardless. Anything that reads the chain (the audit
//! API, `audit verify`, checkpoints, the custody report's counts) chains
//! what is staged first, so readers see every committed entry.
//!
//! What staging changes for tamper evidence: an entry waits here for up to
//! a chainer's period before it is hashed. The chain itself is only as
//! strong as its last signed checkpoint (anyone who can write the table can
//! rehash a tail), and checkpoints sign the chained head, so the window adds
//! nothing an attacker with write access does not already have.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;

use super::StoreError;
use super::postgres::lock_writers;
use super::sqlite::next_seq;
use crate::audit::{self, AuditEvent};

/// Most entries chained by one transaction.
const CHAIN_BATCH: i64 = 5_000;
/// After a wake-up, how long the chainer lets entries gather, so that a
/// busy instance chains in a few large transactions, not many small ones.
const GATHER: Duration = Duration::from_millis(20);
/// How often the chainer looks without being woken (entries staged by
/// writes outside the group commit, and by other instances' CLIs).
const PERIOD: Duration = Duration::from_secs(1);

/// Stages entries (each with its time) in the caller's transaction, with one
/// multi-row statement.
pub(super) async fn stage(
    conn: &mut PgConnection,
    events: &[(i64, AuditEvent)],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    // One statement text whatever the count (arrays, not a VALUES row per
    // entry), so it stays prepared and is parsed once per connection.
    let mut columns = (
        Vec::with_capacity(events.len()),
        Vec::with_capacity(events.len()),
        Vec::with_capacity(events.len()),
        Vec::with_capacity(events.len()),
    );
    for (at, event) in events {
        columns.0.push(*at);
        columns.1.push(event.event);
        columns.2.push(event.subject.as_deref());
        columns.3.push(event.details.to_string());
    }
    sqlx::query(
        "INSERT INTO audit_pending (at, event, subject, details) \
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[])",
    )
    .bind(columns.0)
    .bind(columns.1)
    .bind(columns.2)
    .bind(columns.3)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Stages one entry in the caller's transaction.
pub(super) async fn stage_one(
    conn: &mut PgConnection,
    event: &AuditEvent,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO audit_pending (at, event, subject, details) VALUES ($1, $2, $3, $4)")
        .bind(now)
        .bind(event.event)
        .bind(event.subject.as_deref())
        .bind(event.details.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Chains every entry staged so far; how many it chained.
pub(super) async fn chain_staged(pool: &PgPool) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let chained = chain_some(pool).await?;
        total += chained;
        if chained < CHAIN_BATCH as u64 {
            return Ok(total);
        }
    }
}

/// A staged entry as read back: its fields exactly as they will be hashed.
#[derive(sqlx::FromRow)]
struct Staged {
    id: i64,
    at: i64,
    event: String,
    subject: Option<String>,
    details: String,
}

/// One transaction: up to [`CHAIN_BATCH`] of the oldest staged entries
/// moved onto the chain.
async fn chain_some(pool: &PgPool) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    lock_writers(&mut tx).await?;
    // Read after the lock is held: a chainer that held it before us has
    // committed, and this statement's snapshot no longer holds its entries.
    let mut staged: Vec<Staged> = sqlx::query_as(
        "DELETE FROM audit_pending WHERE id IN \
           (SELECT id FROM audit_pending ORDER BY id LIMIT $1) \
         RETURNING id, at, event, subject, details",
    )
    .bind(CHAIN_BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if staged.is_empty() {
        return Ok(0);
    }
    staged.sort_unstable_by_key(|entry| entry.id);
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
    let (mut seq, mut prev_hash) = head.unwrap_or((0, audit::GENESIS.to_vec()));
    let count = staged.len();
    let (mut seqs, mut prevs, mut hashes) = (
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
    );
    for entry in &staged {
        seq = next_seq(seq)?;
        let hash = audit::chain_hash(
            &prev_hash,
            seq,
            entry.at,
            &entry.event,
            entry.subject.as_deref(),
            &entry.details,
        )
        .to_vec();
        seqs.push(seq);
        prevs.push(std::mem::replace(&mut prev_hash, hash.clone()));
        hashes.push(hash);
    }
    let mut columns = (
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
    );
    for entry in staged {
        columns.0.push(entry.at);
        columns.1.push(entry.event);
        columns.2.push(entry.subject);
        columns.3.push(entry.details);
    }
    sqlx::query(
        "INSERT INTO audit_log (seq, at, event, subject, details, prev_hash, hash) \
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
                              $6::bytea[], $7::bytea[])",
    )
    .bind(seqs)
    .bind(columns.0)
    .bind(columns.1)
    .bind(columns.2)
    .bind(columns.3)
    .bind(prevs)
    .bind(hashes)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(count as u64)
}

/// Wakes this instance's chainer. Cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct Chainer {
    wake: Arc<Notify>,
}

impl Chainer {
    /// Starts the chaining task on `pool`. It ends when the pool is closed
    /// or every clone of the returned handle is dropped.
    pub(super) fn start(pool: PgPool) -> Self {
        let wake = Arc::new(Notify::new());
        tokio::spawn(chain_loop(pool, Arc::downgrade(&wake)));
        Chainer { wake }
    }

    /// Entries were staged and committed: chain them soon.
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }
}

async fn chain_loop(pool: PgPool, wake: Weak<Notify>) {
    loop {
        let Some(woken) = wake.upgrade() else { return };
        tokio::select! {
            () = woken.notified() => tokio::time::sleep(GATHER).await,
            () = tokio::time::sleep(PERIOD) => {}
        }
        drop(woken);
        if pool.is_closed() {
            return;
        }
        let start = std::time::Instant::now();
        match chain_staged(&pool).await {
            // Timed only when it chained something: how long the chainer
            // holds the cluster-wide lock, the figure that bounds it.
            Ok(0) => {}
            Ok(_) => crate::telemetry::observe(crate::telemetry::DB_SECONDS, "chain_audit", start),
            // The entries stay staged; the next look (or a reader) retries.
            Err(e) if !pool.is_closed() => {
                tracing::warn!(error = %e, "could not chain staged audit entries");
            }
            Err(_) => return,
        }
    }
}
