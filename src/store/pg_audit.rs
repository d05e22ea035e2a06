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

/// Most entries chained by one transaction (7 parameters each, well inside
/// PostgreSQL's 65,535).
const CHAIN_BATCH: i64 = 1_000;
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
    let mut insert = sqlx::QueryBuilder::<sqlx::Postgres>::new(
        "INSERT INTO audit_pending (at, event, subject, details) ",
    );
    insert.push_values(events, |mut row, (at, event)| {
        row.push_bind(*at)
            .push_bind(event.event)
            .push_bind(event.subject.clone())
            .push_bind(event.details.to_string());
    });
    // Not kept prepared: the text differs with every batch size.
    insert.build().persistent(false).execute(&mut *conn).await?;
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
    let mut insert = sqlx::QueryBuilder::<sqlx::Postgres>::new(
        "INSERT INTO audit_log (seq, at, event, subject, details, prev_hash, hash) ",
    );
    let mut rows = Vec::with_capacity(staged.len());
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
        rows.push((seq, std::mem::replace(&mut prev_hash, hash.clone()), hash));
    }
    insert.push_values(
        staged.iter().zip(rows),
        |mut row, (entry, (seq, prev, hash))| {
            row.push_bind(seq)
                .push_bind(entry.at)
                .push_bind(&entry.event)
                .push_bind(&entry.subject)
                .push_bind(&entry.details)
                .push_bind(prev)
                .push_bind(hash);
        },
    );
    insert.build().persistent(false).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(staged.len() as u64)
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
        if let Err(e) = chain_staged(&pool).await {
            // The entries stay staged; the next look (or a reader) retries.
            tracing::warn!(error = %e, "could not chain staged audit entries");
        }
    }
}
