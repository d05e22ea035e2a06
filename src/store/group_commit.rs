//! Group commit for SQLite: the hot writes (offer created, offer redeemed)
//! of many requests share one transaction and so one fsync.
//!
//! With `synchronous = FULL` every commit waits for the disk, and SQLite has
//! one writer, so committing each redemption alone caps throughput at one
//! fsync per redemption. Here requests queue their write; one task takes
//! everything queued (up to [`MAX_BATCH`]), applies each write under its own
//! savepoint (a failing write is rolled back alone and reports its error),
//! commits once, and only then answers every request. A request is answered
//! only after its write is durable, exactly as before; what changes is that
//! writers arriving during a commit ride along on the next one instead of
//! waiting for a commit each.

use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::sqlite::{consume_offer_in, insert_offer_in};
use super::{IssuedToken, NewOffer, StoreError};
use crate::audit::AuditEvent;

/// Most writes in one transaction; bounds how long one commit holds others.
pub const MAX_BATCH: usize = 256;

/// Requests waiting for the writer, beyond which senders wait their turn.
const QUEUE: usize = 4096;

/// A write that may share its transaction.
#[derive(Debug)]
pub enum BatchedWrite {
    /// A new offer and its audit entry.
    InsertOffer {
        /// The offer (boxed: it is much larger than a redemption).
        offer: Box<NewOffer>,
        /// Its `offer.created` entry.
        event: AuditEvent,
    },
    /// Redeeming a pending offer; answers whether it was still pending.
    ConsumeOffer {
        /// Offer id.
        id: String,
        /// The token issued for it.
        token: IssuedToken,
        /// Now, unix seconds.
        now: i64,
    },
}

struct Job {
    write: BatchedWrite,
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// The queue in front of the write connection. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    jobs: mpsc::Sender<Job>,
}

impl GroupCommit {
    /// Starts the committing task on the write pool (one connection). It
    /// ends when every `GroupCommit` clone is dropped.
    pub fn start(writer: SqlitePool) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(commit_loop(writer, queue));
        GroupCommit { jobs }
    }

    /// Queues a write and waits until the transaction holding it committed.
    pub async fn submit(&self, write: BatchedWrite) -> Result<bool, StoreError> {
        let stopped = || StoreError::Unavailable("the SQLite writer has stopped".to_owned());
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { write, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn commit_loop(writer: SqlitePool, mut queue: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let writes: Vec<&BatchedWrite> = batch.iter().map(|j| &j.write).collect();
        let outcome = commit(&writer, &writes).await;
        crate::telemetry::observe_batch(batch.len());
        match outcome {
            Ok(results) => {
                for (job, result) in batch.drain(..).zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                // Nothing of the batch was committed: every writer hears so.
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// One transaction for `writes`; each under its own savepoint.
async fn commit(
    writer: &SqlitePool,
    writes: &[&BatchedWrite],
) -> Result<Vec<Result<bool, StoreError>>, StoreError> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    let mut results = Vec::with_capacity(writes.len());
    for write in writes {
        sqlx::query("SAVEPOINT job").execute(&mut *tx).await?;
        let result = match write {
            BatchedWrite::InsertOffer { offer, event } => {
                insert_offer_in(&mut tx, offer, event).await.map(|()| true)
            }
            BatchedWrite::ConsumeOffer { id, token, now } => {
                consume_offer_in(&mut tx, id, token, *now).await
            }
        };
        if result.is_err() {
            sqlx::query("ROLLBACK TO job").execute(&mut *tx).await?;
        }
        sqlx::query("RELEASE job").execute(&mut *tx).await?;
        results.push(result);
    }
    tx.commit().await?;
    Ok(results)
}
