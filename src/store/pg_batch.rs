//! Group commit for PostgreSQL: the redemption writes (offers created, PIN
//! attempts reserved, offers redeemed) of many requests in one transaction.
//!
//! Written one by one, a redemption was two transactions, each a few round
//! trips and a commit's fsync. Here a batch (the same [`Plan`] as SQLite's)
//! is one: its offers in one multi-row INSERT, its reservations and
//! redemptions in one conditional UPDATE each, its audit entries staged in
//! one multi-row INSERT, one commit. It takes no cluster-wide lock: the
//! conditional UPDATEs hold exactly-once and the PIN limit against other
//! instances' batches, and staging reads no chain head (`pg_audit.rs`). A
//! batch that fails is retried write by write, so one bad write (a
//! duplicate id) fails alone.
//!
//! Each instance commits one batch at a time, and the rows a batch
//! updates are locked in id order first, as the sweeper locks its rows, so
//! two instances' batches (or a batch and a sweep) that touch the same
//! offers wait for each other rather than deadlock.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::group_commit::{
    Applied, BatchError, BatchedWrite, COUNT_ATTEMPT_SET, Consume, Done, Job, MAX_BATCH, Plan,
    QUEUE, Reservation,
};
use super::group_commit::{answer, drop_abandoned, finished};
use super::pg_audit::{self, Chainer};
use super::sqlite::pin_attempt;
use super::{NewOffer, PinAttempt, StoreError, unix_now};

/// The queue in front of the PostgreSQL committer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgGroupCommit {
    jobs: mpsc::Sender<Job>,
}

impl PgGroupCommit {
    /// Starts the committing task on `writer`; it ends when every clone is
    /// dropped.
    pub(super) fn start(writer: PgPool, chainer: Chainer) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(commit_loop(writer, chainer, queue));
        PgGroupCommit { jobs }
    }

    /// Queues a write and waits until the transaction holding it committed.
    pub async fn submit(&self, write: BatchedWrite) -> Result<Applied, StoreError> {
        let stopped = || StoreError::Unavailable("the PostgreSQL writer has stopped".to_owned());
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { write, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn commit_loop(writer: PgPool, chainer: Chainer, mut queue: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        drop_abandoned(&mut batch);
        if batch.is_empty() {
            continue;
        }
        let writes: Vec<&BatchedWrite> = batch.iter().map(|j| &j.write).collect();
        let outcome = match commit(&writer, &writes).await {
            Ok(results) => Ok(results),
            // As SQLite's: tried one by one only when one write may be to
            // blame, never after a commit whose outcome is unknown.
            Err(e) if writes.len() > 1 && e.may_be_one_writes() => {
                let mut results = Vec::with_capacity(writes.len());
                for write in &writes {
                    results.push(match commit(&writer, &[write]).await {
                        Ok(mut r) => r
                            .pop()
                            .unwrap_or_else(|| Err(StoreError::Internal("empty batch".into()))),
                        Err(e) => Err(e.into_store_error()),
                    });
                }
                Ok(results)
            }
            Err(e) => Err(e.into_store_error()),
        };
        // Every batch stages audit entries, unless all its writes failed.
        chainer.wake();
        answer(&mut batch, outcome);
    }
}

/// One transaction for a batch.
async fn commit(
    writer: &PgPool,
    writes: &[&BatchedWrite],
) -> Result<Vec<Result<Applied, StoreError>>, BatchError> {
    let plan = Plan::new(writes);
    let mut tx = writer.begin().await.map_err(StoreError::from)?;
    lock_offers(&mut tx, &plan).await?;
    let mut done = Done::default();
    if !plan.inserts.is_empty() {
        insert_offers(&mut tx, &plan.offers()).await?;
    }
    if !plan.reservations.is_empty() {
        done.reserved = count_pin_attempts(&mut tx, &plan.reservations).await?;
    }
    for repeated in &plan.repeated_reservations {
        let mut counted = count_pin_attempts(&mut tx, std::slice::from_ref(repeated)).await?;
        done.repeated.push(counted.remove(repeated.id));
    }
    if !plan.consumes.is_empty() {
        done.consumed = consume_offers(&mut tx, &plan.consumes).await?;
    }
    let (results, events) = plan.outcome(done);
    pg_audit::stage(&mut tx, &events).await?;
    tx.commit()
        .await
        .map_err(|e| BatchError::Commit(e.into()))?;
    Ok(finished(results))
}

/// Locks, in id order, every offer the batch will update. Without the
/// writer lock two instances' batches run at once; PostgreSQL would lock
/// their rows in whatever order each UPDATE met them, and two batches
/// meeting the same two offers in opposite orders would deadlock (each
/// then waits a second and one is aborted).
async fn lock_offers(conn: &mut PgConnection, plan: &Plan<'_>) -> Result<(), StoreError> {
    let mut ids: Vec<String> = plan
        .reservations
        .iter()
        .chain(&plan.repeated_reservations)
        .map(|r| r.id.to_owned())
        .chain(plan.consumes.iter().map(|c| c.id.to_owned()))
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    ids.sort_unstable();
    ids.dedup();
    sqlx::query("SELECT 1 FROM offers WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(ids)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn insert_offers(conn: &mut PgConnection, offers: &[&NewOffer]) -> Result<(), StoreError> {
    let mut insert = sqlx::QueryBuilder::<sqlx::Postgres>::new(
        "INSERT INTO offers (id, code_hash, pin_hash, tx_code, subject, credential_ids, \
         claims_sealed, state, attempts, max_attempts, created_at, expires_at, created_by, \
         ref_hash, stored_form) ",
    );
    insert.push_values(offers, |mut row, offer| {
        row.push_bind(offer.id.clone())
            .push_bind(offer.code_hash.to_vec())
            .push_bind(offer.pin_hash.clone())
            .push_bind(offer.tx_code.clone())
            .push_bind(offer.subject.clone())
            .push_bind(offer.credential_ids.clone())
            .push_bind(offer.claims_sealed.clone())
            .push("'pending'")
            .push("0")
            .push_bind(i64::from(offer.max_attempts))
            .push_bind(offer.created_at)
            .push_bind(offer.expires_at)
            .push_bind(offer.created_by.clone())
            .push_bind(offer.ref_hash.map(|h| h.to_vec()))
            .push("3");
    });
    // Not kept prepared: the text differs with every batch size.
    insert.build().persistent(false).execute(&mut *conn).await?;
    Ok(())
}

/// One attempt on each of several distinct offers, in one conditional
/// statement that never passes an offer's limit (a wrong PIN's locks its
/// offer if it was the last; expiry judged as the row is written, like a
/// redemption); the attempts counted, by offer id.
async fn count_pin_attempts(
    conn: &mut PgConnection,
    reservations: &[Reservation<'_>],
) -> Result<HashMap<String, PinAttempt>, StoreError> {
    // Arrays, not a VALUES row per attempt: one statement text whatever
    // the count, so it stays prepared (parsed and planned once).
    let ids: Vec<&str> = reservations.iter().map(|r| r.id).collect();
    let nows: Vec<i64> = reservations.iter().map(|r| r.now).collect();
    let wrongs: Vec<i64> = reservations.iter().map(Reservation::wrong).collect();
    let rows = sqlx::query(sqlx::AssertSqlSafe(COUNT_ATTEMPTS.as_str()))
        .bind(ids)
        .bind(nows)
        .bind(wrongs)
        .bind(unix_now())
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("id")?,
                pin_attempt(row.try_get("attempts")?, row.try_get("max_attempts")?)?,
            ))
        })
        .collect()
}

/// [`count_pin_attempts`]'s statement, made of constants only.
static COUNT_ATTEMPTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE offers SET {COUNT_ATTEMPT_SET} \
         FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS v(id, now, wrong) \
         WHERE offers.id = v.id AND offers.state = 'pending' \
           AND offers.attempts < offers.max_attempts \
           AND offers.expires_at > GREATEST(v.now, {DATABASE_NOW}, $4) \
         RETURNING offers.id, offers.attempts, offers.max_attempts"
    )
});

/// [`consume_offers`]'s statement, made of constants only.
static CONSUME: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE offers SET state = 'redeemed', redeemed_at = v.now, token_jti = v.jti, \
         token_expires_at = v.exp, attempts = GREATEST(offers.attempts - v.released, 0) \
         FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], \
                     $6::bigint[]) AS v(id, jti, exp, now, released, needs_attempt) \
         WHERE offers.id = v.id AND offers.state = 'pending' \
           AND (v.needs_attempt = 0 OR offers.attempts < offers.max_attempts) \
           AND offers.expires_at > GREATEST($7, {DATABASE_NOW}) \
         RETURNING offers.id"
    )
});

/// The database's clock as the row is written, in unix seconds.
const DATABASE_NOW: &str = "CAST(floor(EXTRACT(EPOCH FROM clock_timestamp())) AS BIGINT)";

/// Redeems the pending offers unexpired now (judged as the rows are
/// written, not when the request began) in one statement; the ids changed.
async fn consume_offers(
    conn: &mut PgConnection,
    consumes: &[Consume<'_>],
) -> Result<HashSet<String>, StoreError> {
    let commit_now = consumes
        .iter()
        .map(|c| c.now)
        .max()
        .unwrap_or(0)
        .max(unix_now());
    // Arrays, as in `count_pin_attempts`: one prepared statement.
    let ids: Vec<&str> = consumes.iter().map(|c| c.id).collect();
    let jtis: Vec<&str> = consumes.iter().map(|c| c.token.jti.as_str()).collect();
    let exps: Vec<i64> = consumes.iter().map(|c| c.token.expires_at).collect();
    let nows: Vec<i64> = consumes.iter().map(|c| c.now).collect();
    let released: Vec<i64> = consumes.iter().map(Consume::released).collect();
    let needs_attempt: Vec<i64> = consumes.iter().map(Consume::needs_attempt).collect();
    // The later of this host's clock now and the database's clock as the
    // row is written: the statement may wait for a lock on the table (a
    // schema change, an operator's LOCK), and an offer that expired
    // meanwhile must not be redeemed. (Row locks were taken by
    // `lock_offers`, before `commit_now` was read.)
    let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(CONSUME.as_str()))
        .bind(ids)
        .bind(jtis)
        .bind(exps)
        .bind(nows)
        .bind(released)
        .bind(needs_attempt)
        .bind(commit_now)
        .fetch_all(&mut *conn)
        .await?;
    Ok(ids.into_iter().collect())
}
