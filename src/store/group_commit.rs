//! Group commit for SQLite: the hot writes (offer created, PIN attempt
//! reserved, offer redeemed; at the credential endpoint a proof's jti, a
//! status-list place and the issuance record) of many requests share one
//! transaction and so one fsync.
//!
//! With `synchronous = FULL` every commit waits for the disk, and SQLite has
//! one writer, so committing each redemption alone caps throughput at one
//! fsync per redemption. Here requests queue their write; one thread takes
//! everything queued (up to [`MAX_BATCH`]), applies the writes on a
//! synchronous connection of its own ([`direct`]), commits once, and only
//! then answers every request. A request is answered only after its write
//! is durable, exactly as before; what changes is that writers arriving
//! during a commit ride along on the next one instead of waiting for a
//! commit each.
//!
//! The redemption writes are sorted into statements by kind (a [`Plan`]),
//! all in the batch's one transaction, so one of them failing fails the
//! batch, whose writes are then retried one by one. The credential endpoint's writes are each applied under a
//! savepoint of their own. The thread takes turns with every other writer
//! of the process (the driver's write connection) through the store's
//! write lock.

use std::path::Path;

use tokio::sync::{mpsc, oneshot};

use super::direct;
use super::sqlite::{locked_event, redemption_events, wrong_pin_event};
use super::{
    IssueOutcome, IssuedToken, NewIssuance, NewOffer, PinAttempt, RedemptionAttempt,
    StatusListKind, StatusSlot, StoreError, unix_now,
};
use crate::audit::AuditEvent;

/// Most writes in one transaction; bounds how long one commit holds others.
pub const MAX_BATCH: usize = 256;

/// How long the direct writer lets writes gather before a batch while it
/// is busy (its last batch carried more than one write). A commit writes
/// every page its batch changed and waits for the disk; under load, a
/// batch of 15 instead of 5 writes shares those pages and that wait, which
/// measured 4,000 → 4,300 redemptions/s at 64 connections and 20 µs less
/// CPU per redemption. A write that arrives alone is committed at once.
const GATHER: std::time::Duration = std::time::Duration::from_micros(400);

/// Requests waiting for the writer, beyond which senders wait their turn.
pub(super) const QUEUE: usize = 4096;

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
    /// Counting a PIN attempt before the HSM compares its PIN (offers
    /// with an HSM-made PIN hash).
    ReservePinAttempt {
        /// Offer id.
        id: String,
        /// Now, unix seconds.
        now: i64,
    },
    /// Counting a wrong PIN's attempt, with its audit entry, and locking
    /// the offer if it was the last: one write, like a right PIN's
    /// [`BatchedWrite::ConsumeOffer`].
    CountWrongPin {
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
        /// How the offer's PIN attempt is accounted for.
        attempt: RedemptionAttempt,
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
    /// A wrong PIN's attempt counted (the offer locked if it was the
    /// last), or none, as for `Reserved`.
    WrongPinCounted(Option<PinAttempt>),
    /// Whether the offer was still pending and is now redeemed.
    Consumed(bool),
    /// Whether the proof's jti was new.
    ProofJti(bool),
    /// The places reserved.
    StatusSlots(Vec<StatusSlot>),
    /// What became of the issuance.
    Issuance(IssueOutcome),
}

impl BatchedWrite {
    /// A new offer and its `offer.created` entry.
    pub fn insert_offer(offer: &NewOffer, event: AuditEvent) -> Self {
        BatchedWrite::InsertOffer {
            offer: Box::new(offer.clone()),
            event,
        }
    }

    /// Counting a PIN attempt on offer `id`.
    pub fn reserve_pin_attempt(id: &str, now: i64) -> Self {
        BatchedWrite::ReservePinAttempt {
            id: id.to_owned(),
            now,
        }
    }

    /// Counting a wrong PIN on offer `id`.
    pub fn count_wrong_pin(id: &str, now: i64) -> Self {
        BatchedWrite::CountWrongPin {
            id: id.to_owned(),
            now,
        }
    }

    /// Redeeming offer `id` for `token`.
    pub fn consume_offer(
        id: &str,
        token: &IssuedToken,
        attempt: RedemptionAttempt,
        now: i64,
    ) -> Self {
        BatchedWrite::ConsumeOffer {
            id: id.to_owned(),
            token: token.clone(),
            attempt,
            now,
        }
    }
}

/// A PIN attempt to count on one offer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reservation<'a> {
    /// Its place in the batch.
    pub index: usize,
    pub id: &'a str,
    /// When the request asked.
    pub now: i64,
    /// A wrong PIN's attempt, which locks the offer if it is the last;
    /// else an attempt counted before the HSM compares its PIN.
    pub wrong: bool,
}

/// What counting an attempt sets, shared by both backends' statements
/// (over `v(id, now, wrong)`): one attempt more, and for a wrong PIN that
/// was the offer's last, the lock, whose sealed claims go with it. (`SET`
/// expressions read the row as it was.)
pub(super) const COUNT_ATTEMPT_SET: &str = "attempts = offers.attempts + 1, \
     state = CASE WHEN v.wrong = 1 AND offers.attempts + 1 >= offers.max_attempts \
       THEN 'locked' ELSE offers.state END, \
     locked_at = CASE WHEN v.wrong = 1 AND offers.attempts + 1 >= offers.max_attempts \
       THEN v.now ELSE offers.locked_at END, \
     claims_sealed = CASE WHEN v.wrong = 1 AND offers.attempts + 1 >= offers.max_attempts \
       THEN NULL ELSE offers.claims_sealed END";

impl Reservation<'_> {
    /// 1 for a wrong PIN's attempt, else 0.
    pub fn wrong(&self) -> i64 {
        i64::from(self.wrong)
    }
}

impl Consume<'_> {
    /// 1 if the write gives back an attempt reserved earlier, else 0.
    pub fn released(&self) -> i64 {
        i64::from(self.attempt == RedemptionAttempt::Reserved)
    }

    /// 1 if the write needs an attempt left (it counts its own), else 0.
    pub fn needs_attempt(&self) -> i64 {
        i64::from(self.attempt == RedemptionAttempt::CountedHere)
    }
}

impl Applied {
    /// The answer to an `InsertOffer`.
    pub fn inserted(self) -> Result<(), StoreError> {
        match self {
            Applied::Inserted => Ok(()),
            other => Err(other.unexpected()),
        }
    }

    /// The answer to a `ReservePinAttempt`.
    pub fn reserved(self) -> Result<Option<PinAttempt>, StoreError> {
        match self {
            Applied::Reserved(attempt) => Ok(attempt),
            other => Err(other.unexpected()),
        }
    }

    /// The answer to a `CountWrongPin`.
    pub fn wrong_pin_counted(self) -> Result<Option<PinAttempt>, StoreError> {
        match self {
            Applied::WrongPinCounted(attempt) => Ok(attempt),
            other => Err(other.unexpected()),
        }
    }

    /// The answer to a `ConsumeOffer`.
    pub fn consumed(self) -> Result<bool, StoreError> {
        match self {
            Applied::Consumed(won) => Ok(won),
            other => Err(other.unexpected()),
        }
    }

    /// A write answered with another write's kind of result.
    pub fn unexpected(self) -> StoreError {
        StoreError::Internal(format!("unexpected batched write result {self:?}"))
    }
}

/// A write and where its result goes.
pub(super) struct Job {
    pub write: BatchedWrite,
    pub reply: oneshot::Sender<Result<Applied, StoreError>>,
}

/// What the direct writer's queue carries.
enum Request {
    Write(Job),
    /// Commit what is queued, close the connection, answer, and stop.
    Close(oneshot::Sender<()>),
}

/// The queues in front of the writers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    /// Every batched write: the direct writer.
    writes: mpsc::Sender<Request>,
}

/// Taken by every writer of the process around its transaction, so the
/// direct writer and the driver's write connection never meet SQLite's
/// busy handler (which waits by sleeping for milliseconds) in each other.
pub type WriteLock = std::sync::Arc<tokio::sync::Mutex<()>>;

impl GroupCommit {
    /// Starts the direct writer's thread on `file`, whose write
    /// transactions take turns with the driver's through `lock`. It ends
    /// when every `GroupCommit` clone is dropped, or at [`GroupCommit::close`].
    ///
    /// A thread, not a tokio task: its statements and its commit's fsync
    /// block, which must not stall a request worker. It wakes once per
    /// batch.
    pub fn start(file: &Path, lock: WriteLock) -> Result<Self, StoreError> {
        let db = direct::open(file)?;
        let (writes, queue) = mpsc::channel(QUEUE);
        let file = file.to_owned();
        std::thread::Builder::new()
            .name("notary-sqlite-writer".to_owned())
            .spawn(move || direct_loop(db, &file, queue, &lock))
            .map_err(|e| StoreError::Internal(format!("the SQLite writer's thread: {e}")))?;
        Ok(GroupCommit { writes })
    }

    /// Queues a write and waits until the transaction holding it committed.
    pub async fn submit(&self, write: BatchedWrite) -> Result<Applied, StoreError> {
        let stopped = || StoreError::Unavailable("the SQLite writer has stopped".to_owned());
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(Request::Write(Job { write, reply }))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Stops the direct writer once what is queued is committed, and
    /// closes its connection, so that the driver's connections, closed
    /// after it, are the database's last: the last one to close folds the
    /// WAL into the database file and removes it. Writes submitted later
    /// fail.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.writes.send(Request::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

/// A request that went away (its client hung up, its handler was dropped)
/// is not written for: nobody would hear that its offer was redeemed or its
/// credential recorded, so neither happens, and the wallet can try again. A
/// PIN attempt it reserved was never judged.
pub(super) fn drop_abandoned(batch: &mut Vec<Job>) {
    batch.retain(|job| !job.reply.is_closed());
}

/// Sends each job its result, or the batch's error to all of them
/// (nothing of the batch was committed).
pub(super) fn answer(
    batch: &mut Vec<Job>,
    outcome: Result<Vec<Result<Applied, StoreError>>, StoreError>,
) {
    crate::telemetry::observe_batch(batch.len());
    match outcome {
        Ok(results) => {
            for (job, result) in batch.drain(..).zip(results) {
                let _ = job.reply.send(result);
            }
        }
        Err(e) => {
            for job in batch.drain(..) {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

/// The direct writer: takes everything queued (up to [`MAX_BATCH`]),
/// commits it, answers, and sleeps until the next write arrives.
fn direct_loop(
    mut db: rusqlite::Connection,
    file: &Path,
    mut queue: mpsc::Receiver<Request>,
    lock: &WriteLock,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut busy = false;
    let mut closing = None;
    while let Some(request) = queue.blocking_recv() {
        match request {
            Request::Write(job) => batch.push(job),
            Request::Close(done) => closing = Some(done),
        }
        if busy && closing.is_none() {
            std::thread::sleep(GATHER);
        }
        while batch.len() < MAX_BATCH && closing.is_none() {
            match queue.try_recv() {
                Ok(Request::Write(job)) => batch.push(job),
                Ok(Request::Close(done)) => closing = Some(done),
                Err(_) => break,
            }
        }
        drop_abandoned(&mut batch);
        busy = batch.len() > 1;
        if !batch.is_empty() {
            let writes: Vec<&BatchedWrite> = batch.iter().map(|j| &j.write).collect();
            let outcome = {
                let _turn = lock.blocking_lock();
                one_by_one_on_failure(&writes, |writes| commit_direct(&mut db, writes))
            };
            answer(&mut batch, outcome);
            if !db.is_autocommit() {
                // A failed commit whose rollback failed too: the connection
                // still holds its transaction. A fresh one does not.
                tracing::error!("the SQLite writer's transaction outlived a failure; reopening");
                match direct::open(file) {
                    Ok(fresh) => db = fresh,
                    Err(e) => tracing::error!(error = %e, "reopening the SQLite writer failed"),
                }
            }
        }
        if let Some(done) = closing {
            drop(db);
            let _ = done.send(());
            return;
        }
    }
}

/// Why a batch's transaction failed.
#[derive(Debug)]
pub(super) enum BatchError {
    /// A statement failed before the commit: nothing of the batch was kept.
    Statement(StoreError),
    /// The commit itself failed. On PostgreSQL a lost connection leaves its
    /// outcome unknown (the server may have committed), so the writes are
    /// not tried again: each would get a misleading answer (a redemption
    /// that won, told it lost).
    Commit(StoreError),
}

impl From<StoreError> for BatchError {
    fn from(e: StoreError) -> Self {
        BatchError::Statement(e)
    }
}

impl From<rusqlite::Error> for BatchError {
    fn from(e: rusqlite::Error) -> Self {
        BatchError::Statement(e.into())
    }
}

impl BatchError {
    /// Whether one write may be to blame (a duplicate id, a value a
    /// constraint refuses), so that the writes are worth trying one by one.
    /// A database that is away or busy fails them all anyway, only slower.
    pub(super) fn may_be_one_writes(&self) -> bool {
        matches!(
            self,
            BatchError::Statement(StoreError::Conflict(_) | StoreError::Internal(_))
        )
    }

    pub(super) fn into_store_error(self) -> StoreError {
        match self {
            BatchError::Statement(e) => e,
            BatchError::Commit(e) => StoreError::Unavailable(format!(
                "committing a batch of writes failed, and whether it took effect is not known: {e}"
            )),
        }
    }
}

/// Commits `writes` together; if a statement fails in a way one write may
/// be to blame for, nothing of it is kept and each write is tried alone, so
/// every writer gets its own answer and one bad write cannot fail the
/// others.
fn one_by_one_on_failure(
    writes: &[&BatchedWrite],
    mut commit: impl FnMut(&[&BatchedWrite]) -> Result<Vec<Result<Applied, StoreError>>, BatchError>,
) -> Result<Vec<Result<Applied, StoreError>>, StoreError> {
    match commit(writes) {
        Ok(results) => Ok(results),
        Err(e) if writes.len() > 1 && e.may_be_one_writes() => Ok(writes
            .iter()
            .map(|write| {
                commit(&[write])
                    .map_err(BatchError::into_store_error)
                    .and_then(only_result)
            })
            .collect()),
        Err(e) => Err(e.into_store_error()),
    }
}

fn only_result(mut results: Vec<Result<Applied, StoreError>>) -> Result<Applied, StoreError> {
    results
        .pop()
        .unwrap_or_else(|| Err(StoreError::Internal("empty batch".into())))
}

/// One transaction on the direct writer: the new offers, the PIN attempts
/// counted, the offers redeemed and all their audit entries (chained here,
/// from the head read once), each kind with one prepared statement stepped
/// per row (`direct.rs`), then one commit.
fn commit_direct(
    db: &mut rusqlite::Connection,
    writes: &[&BatchedWrite],
) -> Result<Vec<Result<Applied, StoreError>>, BatchError> {
    let mut tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let (mut results, mut events) = redemption_writes(&tx, writes)?;
    // The credential endpoint's writes, one by one, each under a
    // savepoint: an issuance refused half-way (a holder key already bound)
    // or a write that fails is undone alone, and answered alone.
    for (i, write) in writes.iter().enumerate() {
        if !runs_alone(write) {
            continue;
        }
        let mut savepoint = tx.savepoint()?;
        match apply_alone(&savepoint, write) {
            Ok((true, applied, entries)) => {
                savepoint.commit()?;
                events.extend(entries.into_iter().map(|e| (write_time(write), e)));
                results[i] = Some(Ok(applied));
            }
            outcome => {
                // Undone explicitly: dropping would swallow a failure.
                savepoint.rollback()?;
                savepoint.commit()?;
                results[i] = Some(outcome.map(|(_, applied, _)| applied));
            }
        }
        // Some failures (a full disk, an I/O error) make SQLite roll the
        // whole transaction back on its own: then nothing of the batch
        // stands, and nothing more may be written outside it.
        if tx.is_autocommit() {
            return Err(BatchError::Statement(StoreError::Unavailable(
                "the batch's transaction was rolled back by SQLite".into(),
            )));
        }
    }
    direct::append_audit_entries(&tx, &events)?;
    tx.commit()
        .map_err(|e| BatchError::Commit(StoreError::from(e)))?;
    Ok(finished(results))
}

/// Each write's result, by its place in the batch, as they become known.
type Results = Vec<Option<Result<Applied, StoreError>>>;

/// A batch of redemption writes (offers created, PIN attempts counted,
/// offers redeemed) sorted into the statements that apply them, in this
/// order: the offers inserted, the first counted attempt of each offer
/// (conditional), each further attempt on the same offer on its own
/// (concurrent guesses: PostgreSQL's one UPDATE changes a row once), the
/// offers redeemed. So an attempt counted in a batch is
/// counted before a redemption in the same batch, which then needs an
/// attempt left after it. Both backends apply a plan with their
/// own statements and turn what those returned into results with
/// [`Plan::outcome`].
pub(super) struct Plan<'a> {
    len: usize,
    pub inserts: Vec<(usize, &'a NewOffer, &'a AuditEvent)>,
    pub reservations: Vec<Reservation<'a>>,
    pub repeated_reservations: Vec<Reservation<'a>>,
    pub consumes: Vec<Consume<'a>>,
    /// Second redemptions of one offer in one batch: they lost the race,
    /// as they would have alone.
    lost: Vec<usize>,
}

/// What a plan's statements returned.
#[derive(Default)]
pub(super) struct Done {
    /// Attempts counted by the reservations statement, by offer id.
    pub reserved: std::collections::HashMap<String, PinAttempt>,
    /// Each repeated reservation's attempt, in the plan's order.
    pub repeated: Vec<Option<PinAttempt>>,
    /// Offers the redemption statement changed.
    pub consumed: std::collections::HashSet<String>,
}

impl<'a> Plan<'a> {
    pub(super) fn new(writes: &[&'a BatchedWrite]) -> Self {
        let mut plan = Plan {
            len: writes.len(),
            inserts: Vec::new(),
            reservations: Vec::new(),
            repeated_reservations: Vec::new(),
            consumes: Vec::new(),
            lost: Vec::new(),
        };
        let mut reserving = std::collections::HashSet::new();
        let mut consuming = std::collections::HashSet::new();
        for (index, write) in writes.iter().enumerate() {
            match write {
                BatchedWrite::InsertOffer { offer, event } => {
                    plan.inserts.push((index, &**offer, event));
                }
                BatchedWrite::ReservePinAttempt { id, now }
                | BatchedWrite::CountWrongPin { id, now } => {
                    let reservation = Reservation {
                        index,
                        id,
                        now: *now,
                        wrong: matches!(write, BatchedWrite::CountWrongPin { .. }),
                    };
                    if reserving.insert(id.as_str()) {
                        plan.reservations.push(reservation);
                    } else {
                        plan.repeated_reservations.push(reservation);
                    }
                }
                BatchedWrite::ConsumeOffer {
                    id,
                    token,
                    attempt,
                    now,
                } => {
                    if consuming.insert(id.as_str()) {
                        plan.consumes.push(Consume {
                            index,
                            id,
                            token,
                            attempt: *attempt,
                            now: *now,
                        });
                    } else {
                        plan.lost.push(index);
                    }
                }
                _ => {}
            }
        }
        plan
    }

    /// The offers to insert.
    pub(super) fn offers(&self) -> Vec<&'a NewOffer> {
        self.inserts.iter().map(|(_, offer, _)| *offer).collect()
    }

    /// Every write's result, and the audit entries to append in the same
    /// transaction (offers created, offers redeemed and their tokens).
    pub(super) fn outcome(self, done: Done) -> (Results, Vec<(i64, AuditEvent)>) {
        let mut results: Results = vec![None; self.len];
        let mut events = Vec::new();
        for (i, offer, event) in self.inserts {
            results[i] = Some(Ok(Applied::Inserted));
            events.push((offer.created_at, event.clone()));
        }
        let first = self.reservations.into_iter().map(|r| {
            let attempt = done.reserved.get(r.id).copied();
            (r, attempt)
        });
        for (r, attempt) in first.chain(self.repeated_reservations.into_iter().zip(done.repeated)) {
            if !r.wrong {
                results[r.index] = Some(Ok(Applied::Reserved(attempt)));
                continue;
            }
            results[r.index] = Some(Ok(Applied::WrongPinCounted(attempt)));
            if let Some(attempt) = attempt {
                events.push((r.now, wrong_pin_event(r.id, attempt)));
                if attempt.number >= attempt.max {
                    events.push((r.now, locked_event(r.id, attempt)));
                }
            }
        }
        for c in self.consumes {
            let won = done.consumed.contains(c.id);
            results[c.index] = Some(Ok(Applied::Consumed(won)));
            if won {
                events.extend(redemption_events(c.id, c.token).map(|e| (c.now, e)));
            }
        }
        for i in self.lost {
            results[i] = Some(Ok(Applied::Consumed(false)));
        }
        (results, events)
    }
}

/// Every write's result once its batch committed; a write the plan left
/// without one is an internal error, not a panic.
pub(super) fn finished(results: Results) -> Vec<Result<Applied, StoreError>> {
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| Err(StoreError::Internal("a batched write had no result".into())))
        })
        .collect()
}

/// A plan applied on the direct writer, inside its transaction.
fn redemption_writes(
    db: &rusqlite::Connection,
    writes: &[&BatchedWrite],
) -> Result<(Results, Vec<(i64, AuditEvent)>), StoreError> {
    let plan = Plan::new(writes);
    let mut done = Done::default();
    if !plan.inserts.is_empty() {
        direct::insert_offers(db, &plan.offers())?;
    }
    if !plan.reservations.is_empty() {
        done.reserved = direct::count_pin_attempts(db, &plan.reservations)?;
    }
    for repeated in &plan.repeated_reservations {
        let mut counted = direct::count_pin_attempts(db, std::slice::from_ref(repeated))?;
        done.repeated.push(counted.remove(repeated.id));
    }
    if !plan.consumes.is_empty() {
        done.consumed = direct::consume_offers(db, &plan.consumes, unix_now())?;
    }
    Ok(plan.outcome(done))
}

/// Whether `write` is one of the credential endpoint's, which run under a
/// savepoint of their own.
fn runs_alone(write: &BatchedWrite) -> bool {
    matches!(
        write,
        BatchedWrite::RecordProofJti { .. }
            | BatchedWrite::ReserveStatusSlots { .. }
            | BatchedWrite::RecordIssuance { .. }
    )
}

/// Applies one of the credential endpoint's writes: whether to keep its
/// changes, what it did, and its audit entries.
fn apply_alone(
    db: &rusqlite::Connection,
    write: &BatchedWrite,
) -> Result<(bool, Applied, Vec<AuditEvent>), StoreError> {
    match write {
        BatchedWrite::RecordProofJti { key, keep_until } => {
            let new = direct::record_proof_jti(db, key, *keep_until)?;
            Ok((true, Applied::ProofJti(new), Vec::new()))
        }
        BatchedWrite::ReserveStatusSlots {
            kind,
            count,
            size,
            now,
        } => {
            let slots = direct::reserve_status_slots(db, *kind, *count, *size, *now)?;
            Ok((true, Applied::StatusSlots(slots), Vec::new()))
        }
        BatchedWrite::RecordIssuance { issuance, now } => {
            let (outcome, entries) = direct::record_issuance(db, issuance, *now)?;
            let keep = !outcome.undoes_its_writes();
            Ok((keep, Applied::Issuance(outcome), entries))
        }
        _ => Err(StoreError::Internal(
            "a redemption write reached the credential writes".into(),
        )),
    }
}

/// When a credential write happened, for its audit entries.
fn write_time(write: &BatchedWrite) -> i64 {
    match write {
        BatchedWrite::RecordIssuance { now, .. } | BatchedWrite::ReserveStatusSlots { now, .. } => {
            *now
        }
        _ => unix_now(),
    }
}

/// One redemption in a batch.
pub(super) struct Consume<'a> {
    /// Its place in the batch.
    pub index: usize,
    pub id: &'a str,
    pub token: &'a IssuedToken,
    pub attempt: RedemptionAttempt,
    /// When the request asked (the redemption's recorded time).
    pub now: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OfferState, SqliteStore, Store};

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
                        .consume_offer(
                            "b",
                            &token(&format!("t{i}")),
                            RedemptionAttempt::NoPin,
                            1_500,
                        )
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
            spent_nonces: Vec::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_issuance_whose_nonce_was_spent_is_refused_and_spends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("t.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        store.migrate().await.unwrap();
        let event = AuditEvent::new("offer.created", "d", serde_json::json!({}));
        store.insert_offer(&offer("d", 4), event).await.unwrap();
        let won = store
            .consume_offer("d", &token("t-d"), RedemptionAttempt::NoPin, 1_500)
            .await
            .unwrap();
        assert!(won);
        let nonce = |byte| crate::store::ReplayKey {
            key: [byte; 32],
            keep_until: 9_000,
        };
        assert!(store.record_proof_jti(&[9; 32], 9_000).await.unwrap());
        // A fresh nonce and a spent one: refused, and the fresh one is
        // not spent by the refusal.
        let mut refused = issuance("d", "t-d", "h");
        refused.spent_nonces = vec![nonce(10), nonce(9)];
        assert_eq!(
            store.record_issuance(&refused, 1_500).await.unwrap(),
            IssueOutcome::NonceUsed
        );
        assert!(!store.is_issued("d", "c").await.unwrap());
        let mut fresh = issuance("d", "t-d", "h");
        fresh.spent_nonces = vec![nonce(10)];
        assert_eq!(
            store.record_issuance(&fresh, 1_500).await.unwrap(),
            IssueOutcome::Issued
        );
        assert!(!store.record_proof_jti(&[10; 32], 9_000).await.unwrap());
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
                    .consume_offer(
                        id,
                        &token(&format!("t-{id}")),
                        RedemptionAttempt::NoPin,
                        1_500
                    )
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
        jobs.send(Request::Write(Job {
            write: insert("gone", 1),
            reply: gone,
        }))
        .await
        .unwrap();
        let (reply, answer) = oneshot::channel();
        jobs.send(Request::Write(Job {
            write: insert("kept", 2),
            reply,
        }))
        .await
        .unwrap();
        drop(jobs);
        let file = dir.path().join("t.db");
        let db = direct::open(&file).unwrap();
        let lock = WriteLock::default();
        tokio::task::spawn_blocking(move || direct_loop(db, &file, queue, &lock))
            .await
            .unwrap();

        let answered = answer.await.unwrap();
        assert!(matches!(answered, Ok(Applied::Inserted)), "{answered:?}");
        assert!(sqlite.get_offer("kept").await.unwrap().is_some());
        assert!(sqlite.get_offer("gone").await.unwrap().is_none());
    }

    /// A store with one offer `p` of `max_attempts` attempts, and the
    /// direct writer's connection to it.
    async fn one_offer(max_attempts: u32) -> (tempfile::TempDir, Store, rusqlite::Connection) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.db");
        let store = Store::connect(&format!("sqlite:{}", file.display()), 2)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let event = AuditEvent::new("offer.created", "p", serde_json::json!({}));
        let mut new = offer("p", 7);
        new.max_attempts = max_attempts;
        store.insert_offer(&new, event).await.unwrap();
        let db = direct::open(&file).unwrap();
        (dir, store, db)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_pin_in_the_same_batch_takes_the_last_attempt_before_a_right_one() {
        let (_dir, store, db) = one_offer(2).await;
        assert_eq!(
            store.count_wrong_pin("p", 1_500).await.unwrap(),
            Some(crate::store::WrongPinOutcome::Counted { remaining: 1 })
        );
        // The right PIN is first in the batch; the wrong one's attempt is
        // counted first all the same, and it was the last.
        let right =
            BatchedWrite::consume_offer("p", &token("t"), RedemptionAttempt::CountedHere, 1_500);
        let wrong = BatchedWrite::count_wrong_pin("p", 1_500);
        let (results, events) = redemption_writes(&db, &[&right, &wrong]).unwrap();
        assert!(
            matches!(results[0], Some(Ok(Applied::Consumed(false)))),
            "{results:?}"
        );
        assert!(
            matches!(
                results[1],
                Some(Ok(Applied::WrongPinCounted(Some(PinAttempt {
                    number: 2,
                    max: 2
                }))))
            ),
            "{results:?}"
        );
        let names: Vec<_> = events.iter().map(|(_, e)| e.event).collect();
        assert_eq!(names, ["offer.tx_code_failed", "offer.locked"]);
        let p = store.get_offer("p").await.unwrap().unwrap();
        assert_eq!((p.state, p.attempts), (OfferState::Locked, 2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_right_pin_redeems_only_while_an_attempt_is_left_and_keeps_the_count() {
        let (_dir, store, db) = one_offer(2).await;
        // One attempt taken by a wrong PIN, one held by a request the HSM
        // is judging (an offer with an HSM-made PIN hash): none left.
        store.count_wrong_pin("p", 1_500).await.unwrap().unwrap();
        store
            .reserve_pin_attempt("p", 1_500)
            .await
            .unwrap()
            .unwrap();
        let right =
            BatchedWrite::consume_offer("p", &token("t"), RedemptionAttempt::CountedHere, 1_500);
        let (results, _) = redemption_writes(&db, &[&right]).unwrap();
        assert!(
            matches!(results[0], Some(Ok(Applied::Consumed(false)))),
            "{results:?}"
        );
        // With the held attempt given back by hand, one is left, and the
        // right PIN redeems without spending it.
        db.execute("UPDATE offers SET attempts = 1 WHERE id = 'p'", [])
            .unwrap();
        let (results, events) = redemption_writes(&db, &[&right]).unwrap();
        assert!(
            matches!(results[0], Some(Ok(Applied::Consumed(true)))),
            "{results:?}"
        );
        assert_eq!(events.len(), 2);
        let p = store.get_offer("p").await.unwrap().unwrap();
        assert_eq!((p.state, p.attempts), (OfferState::Redeemed, 1));
    }
}
