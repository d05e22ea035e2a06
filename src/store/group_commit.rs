//! Group commit for SQLite: the hot writes (offer created, PIN attempt
//! reserved, offer redeemed; at the credential endpoint a proof's jti, a
//! status-list place and the issuance record) of many requests share one
//! transaction and so one fsync. The credential endpoint's writes are each
//! applied under a savepoint of their own; the others in multi-row
//! statements, so one of them failing fails the batch, whose writes are
//! then retried one by one.
//!
//! With `synchronous = FULL` every commit waits for the disk, and SQLite has
//! one writer, so committing each redemption alone caps throughput at one
//! fsync per redemption. Here requests queue their write; one task takes
//! everything queued (up to [`MAX_BATCH`]), applies the writes, commits once,
//! and only then answers every request. A request is answered
//! only after its write is durable, exactly as before; what changes is that
//! writers arriving during a commit ride along on the next one instead of
//! waiting for a commit each.

use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::sqlite::{
    WriteTx, append_audit_entries, consume_offers, insert_offers, record_proof_jti_in,
    redemption_events, reserve_pin_attempt, reserve_pin_attempts,
};
use super::{
    IssueOutcome, IssuedToken, NewIssuance, NewOffer, PinAttempt, SqliteStore, StatusListKind,
    StatusSlot, StoreError, unix_now,
};
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
    /// Counting a PIN attempt before its PIN is compared.
    ReservePinAttempt {
        /// Offer id.
        id: String,
        /// Now, unix seconds.
        now: i64,
    },
    /// Redeeming a pending offer; answers whether it was still pending.
    ConsumeOffer {
        /// Offer id.
        id: String,
        /// The token issued for it.
        token: IssuedToken,
        /// Whether the redeeming request reserved a PIN attempt, which it
        /// now gives back (the PIN was right).
        release_attempt: bool,
        /// Now, unix seconds.
        now: i64,
    },
    /// A key proof's or DPoP proof's replay key, kept until `keep_until`.
    RecordProofJti {
        /// The replay key.
        key: [u8; 32],
        /// Unix seconds.
        keep_until: i64,
    },
    /// Places in a status list for credentials about to be signed.
    ReserveStatusSlots {
        /// Which kind of list.
        kind: StatusListKind,
        /// How many places.
        count: i64,
        /// Entries of a new list, should one be opened.
        size: i64,
        /// Now, unix seconds.
        now: i64,
    },
    /// An issuance, exactly once per offer and configuration.
    RecordIssuance {
        /// The issuance and its credentials (boxed: large).
        issuance: Box<NewIssuance>,
        /// Now, unix seconds.
        now: i64,
    },
}

/// What a batched write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The offer was inserted.
    Inserted,
    /// The attempt counted, or none: the offer is not pending, has expired
    /// or has used all its attempts.
    Reserved(Option<PinAttempt>),
    /// Whether the offer was still pending and is now redeemed.
    Consumed(bool),
    /// Whether the proof's jti was new.
    ProofJti(bool),
    /// The places reserved.
    StatusSlots(Vec<StatusSlot>),
    /// What became of the issuance.
    Issuance(IssueOutcome),
}

struct Job {
    write: BatchedWrite,
    reply: oneshot::Sender<Result<Applied, StoreError>>,
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
    pub async fn submit(&self, write: BatchedWrite) -> Result<Applied, StoreError> {
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
        // A request that went away (its client hung up, its handler was
        // dropped) is not written for: nobody would hear that its offer was
        // redeemed or its credential recorded, so neither happens, and the
        // wallet can try again. A PIN attempt it reserved was never judged.
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
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

/// Commits `writes` in one transaction with a handful of statements: one
/// multi-row INSERT of the new offers, one UPDATE per PIN attempt reserved
/// (several may hit one offer, so each needs its own), one UPDATE of every
/// offer redeemed, one multi-row INSERT of all their audit entries (chained
/// here, from the head read once). If that fails (a duplicate id, say), nothing of it is
/// kept and each write is retried alone, so every writer gets its own
/// answer and one bad write cannot fail the others.
async fn commit(
    writer: &SqlitePool,
    writes: &[&BatchedWrite],
) -> Result<Vec<Result<Applied, StoreError>>, StoreError> {
    match commit_together(writer, writes).await {
        Ok(results) => Ok(results),
        Err(_) if writes.len() > 1 => {
            let mut results = Vec::with_capacity(writes.len());
            for write in writes {
                results.push(commit_together(writer, &[write]).await.and_then(|mut r| {
                    r.pop()
                        .unwrap_or_else(|| Err(StoreError::Internal("empty batch".into())))
                }));
            }
            Ok(results)
        }
        Err(e) => Err(e),
    }
}

async fn commit_together(
    writer: &SqlitePool,
    writes: &[&BatchedWrite],
) -> Result<Vec<Result<Applied, StoreError>>, StoreError> {
    let mut tx = WriteTx::begin(writer).await?;
    let mut results: Vec<Option<Result<Applied, StoreError>>> = vec![None; writes.len()];
    let mut events: Vec<(i64, AuditEvent)> = Vec::new();

    let inserts: Vec<(usize, &NewOffer, &AuditEvent)> = writes
        .iter()
        .enumerate()
        .filter_map(|(i, w)| match w {
            BatchedWrite::InsertOffer { offer, event } => Some((i, &**offer, event)),
            _ => None,
        })
        .collect();
    if !inserts.is_empty() {
        insert_offers(&mut tx, inserts.iter().map(|(_, o, _)| *o)).await?;
        for (i, offer, event) in &inserts {
            results[*i] = Some(Ok(Applied::Inserted));
            events.push((offer.created_at, (*event).clone()));
        }
    }

    // The first reservation of each offer goes into one statement; further
    // ones for the same offer (concurrent guesses) each need their own, as
    // one UPDATE changes a row once.
    let mut first_for_offer = std::collections::HashSet::new();
    let (firsts, repeats): (Vec<_>, Vec<_>) = writes
        .iter()
        .enumerate()
        .filter_map(|(i, w)| match w {
            BatchedWrite::ReservePinAttempt { id, now } => Some((i, id.as_str(), *now)),
            _ => None,
        })
        .partition(|(_, id, _)| first_for_offer.insert(*id));
    if !firsts.is_empty() {
        let reserved = reserve_pin_attempts(&mut tx, &firsts).await?;
        for (i, id, _) in &firsts {
            results[*i] = Some(Ok(Applied::Reserved(reserved.get(*id).copied())));
        }
    }
    for (i, id, now) in repeats {
        let attempt = reserve_pin_attempt(&mut tx, id, now).await?;
        results[i] = Some(Ok(Applied::Reserved(attempt)));
    }

    // One redemption per offer per batch: a second request for the same
    // offer in the same batch lost the race, as it would have alone.
    let mut seen = std::collections::HashSet::new();
    let consumes: Vec<Consume<'_>> = writes
        .iter()
        .enumerate()
        .filter_map(|(index, w)| match w {
            BatchedWrite::ConsumeOffer {
                id,
                token,
                release_attempt,
                now,
            } => Some(Consume {
                index,
                id,
                token,
                release_attempt: *release_attempt,
                now: *now,
            }),
            _ => None,
        })
        .filter(|c| {
            let first = seen.insert(c.id);
            if !first {
                results[c.index] = Some(Ok(Applied::Consumed(false)));
            }
            first
        })
        .collect();
    if !consumes.is_empty() {
        let consumed = consume_offers(&mut tx, &consumes, unix_now()).await?;
        for Consume {
            index: i,
            id,
            token,
            now,
            ..
        } in &consumes
        {
            let won = consumed.contains(*id);
            results[*i] = Some(Ok(Applied::Consumed(won)));
            if won {
                events.extend(redemption_events(id, token).map(|e| (*now, e)));
            }
        }
    }
    // The credential endpoint's writes, one by one, each under a savepoint:
    // an issuance refused half-way (a holder key already bound) or a write
    // that fails is undone alone, and answered alone.
    for (i, write) in writes.iter().enumerate() {
        if let Some(result) = apply_alone(&mut tx, write).await? {
            results[i] = Some(result);
        }
    }
    append_audit_entries(&mut tx, &events).await?;
    tx.commit().await?;
    Ok(results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| Err(StoreError::Internal("a batched write had no result".into())))
        })
        .collect())
}

/// Applies one of the writes that run under a savepoint of their own;
/// `None` for the other kinds. The outer error is the transaction's (a
/// savepoint that cannot be set or ended); the inner one the write's.
async fn apply_alone(
    tx: &mut WriteTx,
    write: &BatchedWrite,
) -> Result<Option<Result<Applied, StoreError>>, StoreError> {
    let name = match write {
        BatchedWrite::RecordProofJti { .. } => "proof_jti",
        BatchedWrite::ReserveStatusSlots { .. } => "status_slots",
        BatchedWrite::RecordIssuance { .. } => "issuance",
        _ => return Ok(None),
    };
    execute(tx, &format!("SAVEPOINT {name}")).await?;
    // (keep its changes, what it did)
    let applied = match write {
        BatchedWrite::RecordProofJti { key, keep_until } => {
            record_proof_jti_in(tx, key, *keep_until)
                .await
                .map(|new| (true, Applied::ProofJti(new)))
        }
        BatchedWrite::ReserveStatusSlots {
            kind,
            count,
            size,
            now,
        } => SqliteStore::reserve_status_slots_in(tx, *kind, *count, *size, *now)
            .await
            .map(|slots| (true, Applied::StatusSlots(slots))),
        BatchedWrite::RecordIssuance { issuance, now } => {
            SqliteStore::record_issuance_in(tx, issuance, *now)
                .await
                .map(|outcome| {
                    let keep = outcome != IssueOutcome::HolderKeyUsed;
                    (keep, Applied::Issuance(outcome))
                })
        }
        _ => Err(StoreError::Internal("not a write of its own".into())),
    };
    let kept = matches!(applied, Ok((true, _)));
    if !kept {
        execute(tx, &format!("ROLLBACK TO {name}")).await?;
    }
    execute(tx, &format!("RELEASE {name}")).await?;
    Ok(Some(applied.map(|(_, applied)| applied)))
}

/// Runs one statement of the transaction's own (savepoints).
async fn execute(tx: &mut WriteTx, statement: &str) -> Result<(), StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// One redemption in a batch.
pub(super) struct Consume<'a> {
    /// Its place in the batch.
    pub index: usize,
    pub id: &'a str,
    pub token: &'a IssuedToken,
    pub release_attempt: bool,
    /// When the request asked (the redemption's recorded time).
    pub now: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OfferState, Store};

    fn offer(id: &str, hash: u8) -> NewOffer {
        NewOffer {
            id: id.to_owned(),
            code_hash: [hash; 32],
            pin_hash: None,
            tx_code: None,
            subject: None,
            credential_ids: "[]".to_owned(),
            claims_sealed: None,
            max_attempts: 5,
            created_at: 1_000,
            // Consumption checks expiry against the clock at commit.
            expires_at: i64::MAX / 2,
            created_by: None,
            ref_hash: None,
        }
    }

    fn token(jti: &str) -> IssuedToken {
        IssuedToken {
            jti: jti.to_owned(),
            kid: "k".to_owned(),
            expires_at: 2_000,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_bad_write_fails_alone_and_an_offer_redeems_once_per_batch() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("t.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        store.migrate().await.unwrap();
        let event = || AuditEvent::new("offer.created", "x", serde_json::json!({}));
        // Submitted together, so they share batches: a duplicate id fails
        // on its own and the other inserts land.
        let inserts = ["a", "b", "a", "c"].map(|id| {
            let store = store.clone();
            let hash = id.as_bytes()[0];
            tokio::spawn(async move { store.insert_offer(&offer(id, hash), event()).await })
        });
        let mut outcomes = Vec::new();
        for t in inserts {
            outcomes.push(t.await.unwrap().is_ok());
        }
        assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 3, "{outcomes:?}");
        // Eight redemptions of one offer at once: exactly one wins.
        let consumes: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .consume_offer("b", &token(&format!("t{i}")), false, 1_500)
                        .await
                })
            })
            .collect();
        let mut wins = 0;
        for t in consumes {
            wins += usize::from(t.await.unwrap().unwrap());
        }
        assert_eq!(wins, 1);
        let b = store.get_offer("b").await.unwrap().unwrap();
        assert_eq!(b.state, OfferState::Redeemed);
        // Three offer.created entries and one redemption's two: one chain.
        let entries = store
            .audit_entries(&crate::store::AuditFilter::all(0, 100))
            .await
            .unwrap();
        assert_eq!(entries.len(), 5);
        for pair in entries.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
            assert_eq!(pair[1].seq, pair[0].seq + 1);
        }
    }

    fn issuance(offer: &str, jti: &str, holder: &str) -> NewIssuance {
        NewIssuance {
            offer_id: offer.to_owned(),
            configuration_id: "c".to_owned(),
            token_jti: jti.to_owned(),
            notification_id: format!("n-{offer}"),
            credentials: vec![crate::store::IssuedCredential {
                id: format!("cred-{offer}"),
                format: "dc+sd-jwt".to_owned(),
                kid: "k".to_owned(),
                holder_jkt: holder.to_owned(),
                sha256: "00".to_owned(),
                issued_at: 1_500,
                expires_at: 9_000,
                status: None,
            }],
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_issuance_in_a_shared_batch_is_undone_alone() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("t.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        store.migrate().await.unwrap();
        let event = || AuditEvent::new("offer.created", "x", serde_json::json!({}));
        for (id, hash) in [("a", 1), ("b", 2), ("c", 3)] {
            store.insert_offer(&offer(id, hash), event()).await.unwrap();
            assert!(
                store
                    .consume_offer(id, &token(&format!("t-{id}")), false, 1_500)
                    .await
                    .unwrap()
            );
        }
        // Submitted together, so they share batches: two issuances bind the
        // same SD-JWT holder key, and a proof's jti arrives twice.
        let first = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .record_issuance(&issuance("a", "t-a", "h"), 1_500)
                    .await
            })
        };
        let second = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .record_issuance(&issuance("b", "t-b", "h"), 1_500)
                    .await
            })
        };
        let other = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .record_issuance(&issuance("c", "t-c", "h2"), 1_500)
                    .await
            })
        };
        let jtis = [[7u8; 32], [7u8; 32], [8u8; 32]].map(|key| {
            let store = store.clone();
            tokio::spawn(async move { store.record_proof_jti(&key, 9_000).await })
        });
        let mut outcomes = vec![
            first.await.unwrap().unwrap(),
            second.await.unwrap().unwrap(),
        ];
        outcomes.sort_by_key(|o| format!("{o:?}"));
        assert_eq!(
            outcomes,
            [IssueOutcome::HolderKeyUsed, IssueOutcome::Issued]
        );
        assert_eq!(other.await.unwrap().unwrap(), IssueOutcome::Issued);
        let mut new = Vec::new();
        for t in jtis {
            new.push(t.await.unwrap().unwrap());
        }
        assert_eq!(new.iter().filter(|n| **n).count(), 2, "{new:?}");

        // The refused one left no issuance row behind; the others did.
        let issued = [
            store.is_issued("a", "c").await.unwrap(),
            store.is_issued("b", "c").await.unwrap(),
        ];
        assert_eq!(issued.iter().filter(|i| **i).count(), 1, "{issued:?}");
        assert!(store.is_issued("c", "c").await.unwrap());
        // And a second issuance of the same configuration is refused.
        assert_eq!(
            store
                .record_issuance(&issuance("c", "t-c", "h3"), 1_600)
                .await
                .unwrap(),
            IssueOutcome::AlreadyIssued
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_whose_request_went_away_is_not_made() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("t.db").display());
        let sqlite = SqliteStore::connect(&url, 2).await.unwrap();
        sqlite.migrate().await.unwrap();
        let event = || AuditEvent::new("offer.created", "x", serde_json::json!({}));
        let insert = |id: &str, hash| BatchedWrite::InsertOffer {
            offer: Box::new(offer(id, hash)),
            event: event(),
        };
        // A queue of our own in front of the same writer: the first
        // request hung up before its batch began, the second waits.
        let (jobs, queue) = mpsc::channel(4);
        let (gone, hung_up) = oneshot::channel();
        drop(hung_up);
        jobs.send(Job {
            write: insert("gone", 1),
            reply: gone,
        })
        .await
        .unwrap();
        let (reply, answer) = oneshot::channel();
        jobs.send(Job {
            write: insert("kept", 2),
            reply,
        })
        .await
        .unwrap();
        drop(jobs);
        commit_loop(sqlite.writer.clone(), queue).await;

        let answered = answer.await.unwrap();
        assert!(matches!(answered, Ok(Applied::Inserted)), "{answered:?}");
        assert!(sqlite.get_offer("kept").await.unwrap().is_some());
        assert!(sqlite.get_offer("gone").await.unwrap().is_none());
    }
}
