//! The SQLite writer of the hot writes (offers created, PIN attempts
//! reserved, offers redeemed; at the credential endpoint a proof's replay
//! key, status-list places, the issuance record): a synchronous connection
//! owned by the group commit's thread, and the statements it makes.
//!
//! sqlx runs every SQLite statement on a thread of the connection's own and
//! hands the answer back to a tokio task: two thread hand-offs per
//! statement, and each answer waits for a worker busy with requests. A
//! batch was half a dozen statements, and batches, one after the other,
//! were what bounded redemptions per second. A connection of its own on
//! the committing thread makes a batch one wake-up and straight-line work.
//!
//! The driver's write connection stays for every other write; the two take
//! turns through the store's in-process write lock, and `BEGIN IMMEDIATE`
//! with the busy timeout still guards against other processes (the CLI).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params_from_iter};

use super::group_commit::{COUNT_ATTEMPT_SET, Consume, Reservation};
use super::issuance::{issued_events, token_is_live, without_configuration};
use super::sqlite::{ChainedEntry, OFFER_COLUMNS, chain_entries, pin_attempt};
use super::{
    IssueOutcome, NewIssuance, NewOffer, OfferRecord, OfferState, PinAttempt, StatusListKind,
    StatusSlot, StoreError, TokenStatus,
};
use crate::audit::AuditEvent;

/// Opens the writer's connection to the database file that the driver's
/// pools use (already created and in WAL mode), with the same settings:
/// durable commits, foreign keys, deleted claims overwritten.
pub(super) fn open(file: &Path) -> Result<Connection, StoreError> {
    let db = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Unavailable(format!("opening {}: {e}", file.display())))?;
    db.busy_handler(Some(wait_briefly))?;
    // Every statement of a batch and of an issuance is prepared once and
    // kept (rusqlite keeps 16 by default; the writer uses about 15).
    db.set_prepared_statement_cache_capacity(WRITER_STATEMENTS);
    db.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON; \
         PRAGMA temp_store = MEMORY;",
    )?;
    // A build of SQLite that keeps temporary files on disk whatever the
    // pragma says would write page copies outside the database file.
    let temp_store: i64 = db.query_row("PRAGMA temp_store", [], |row| row.get(0))?;
    if temp_store != 2 {
        return Err(StoreError::Config(format!(
            "this SQLite keeps temporary files on disk (temp_store {temp_store}); notary needs them in memory"
        )));
    }
    let journal: String = db.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
    if !journal.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Config(format!(
            "{} is not in WAL mode (journal_mode {journal})",
            file.display()
        )));
    }
    Ok(db)
}

/// SQLite's busy handler for the writer: another connection holds the
/// write lock (a write transaction of the driver's being closed after a
/// failure, or another process, the CLI). Polls every 100 µs, up to 5 s in
/// all, instead of SQLite's default sleeps of up to 100 ms, which would
/// stall every batch behind a lock released microseconds later.
fn wait_briefly(attempts: i32) -> bool {
    std::thread::sleep(BUSY_POLL);
    attempts < BUSY_ATTEMPTS
}

/// Prepared statements the writer keeps.
const WRITER_STATEMENTS: usize = 32;

const BUSY_POLL: Duration = Duration::from_micros(100);

/// A reader's busy handler. A WAL reader is refused only while another
/// connection recovers the WAL or holds the file exclusively (an operator's
/// shell): it runs on a request's worker thread, so it gives up after
/// about 5 ms (`Unavailable`) instead of stalling the worker.
fn wait_a_moment(attempts: i32) -> bool {
    std::thread::sleep(BUSY_POLL);
    attempts < 50
}
/// 5 s of [`BUSY_POLL`]s (sleeps overshoot, so in practice a little more).
const BUSY_ATTEMPTS: i32 = 50_000;

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        let unique = matches!(
            &err,
            rusqlite::Error::SqliteFailure(e, _)
                if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        );
        if unique {
            return StoreError::Conflict(err.to_string());
        }
        match err.sqlite_error_code() {
            Some(
                rusqlite::ErrorCode::DatabaseBusy
                | rusqlite::ErrorCode::DatabaseLocked
                | rusqlite::ErrorCode::SystemIoFailure
                | rusqlite::ErrorCode::DiskFull,
            ) => StoreError::Unavailable(err.to_string()),
            _ => StoreError::Internal(err.to_string()),
        }
    }
}

/// The columns of a new offer, in the order of [`insert_offers`].
fn offer_values(offer: &NewOffer) -> [Value; 12] {
    let text = |s: &Option<String>| s.clone().map_or(Value::Null, Value::Text);
    let blob = |b: Option<[u8; 32]>| b.map_or(Value::Null, |b| Value::Blob(b.to_vec()));
    [
        Value::Text(offer.id.clone()),
        Value::Blob(offer.code_hash.to_vec()),
        offer.pin_hash.clone().map_or(Value::Null, Value::Blob),
        text(&offer.tx_code),
        text(&offer.subject),
        Value::Text(offer.credential_ids.clone()),
        text(&offer.claims_sealed),
        Value::Integer(i64::from(offer.max_attempts)),
        Value::Integer(offer.created_at),
        Value::Integer(offer.expires_at),
        text(&offer.created_by),
        blob(offer.ref_hash),
    ]
}

/// Inserts offers, a row at a time with one prepared statement (their
/// audit entries are appended by the caller).
///
/// The batch's statements are all of this kind: one statement text,
/// prepared once per connection and stepped once per row. A multi-row
/// statement saves nothing in-process (there is no round trip to save), and
/// its text changes with every batch size, so it was parsed and planned
/// anew at every commit: the parser's allocations were a third of the
/// writer's CPU (docs/performance.md, fifth pass).
pub(super) fn insert_offers(db: &Connection, offers: &[&NewOffer]) -> Result<(), StoreError> {
    let mut insert = db.prepare_cached(
        "INSERT INTO offers (id, code_hash, pin_hash, tx_code, subject, credential_ids, \
         claims_sealed, state, attempts, max_attempts, created_at, expires_at, created_by, \
         ref_hash, stored_form) \
         VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?, ?, 3)",
    )?;
    for offer in offers {
        insert.execute(params_from_iter(offer_values(offer)))?;
    }
    Ok(())
}

/// Counts one PIN attempt on each of several distinct offers (a wrong
/// PIN's locks its offer if it was the last); returns the attempts
/// counted, by offer id. An offer left out was refused: not pending,
/// expired (judged as the row is written, like a redemption), or out of
/// attempts. Each count is one conditional statement, so concurrent
/// attempts never pass the limit.
pub(super) fn count_pin_attempts(
    db: &Connection,
    reservations: &[Reservation<'_>],
) -> Result<HashMap<String, PinAttempt>, StoreError> {
    let mut count = db.prepare_cached(&COUNT_ATTEMPT)?;
    let now = super::unix_now();
    let mut reserved = HashMap::with_capacity(reservations.len());
    for r in reservations {
        let counted = count
            .query_row((r.id, r.now, r.wrong(), now), |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        if let Some((number, max)) = counted {
            reserved.insert(r.id.to_owned(), pin_attempt(number, max)?);
        }
    }
    Ok(reserved)
}

/// [`count_pin_attempts`]'s statement, made once (the cache is keyed by
/// its text).
static COUNT_ATTEMPT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH v(id, now, wrong) AS (VALUES (?, ?, ?)) \
         UPDATE offers SET {COUNT_ATTEMPT_SET} FROM v \
         WHERE offers.id = v.id AND offers.state = 'pending' \
           AND offers.expires_at > MAX(v.now, ?) AND offers.attempts < offers.max_attempts \
         RETURNING offers.attempts, offers.max_attempts"
    )
});

/// Redeems the given pending offers that are unexpired at `commit_now`
/// (each id at most once); returns the ids it changed. A redemption that
/// reserved a PIN attempt gives it back. Offers no longer pending or
/// already expired are left alone: their requests lost.
pub(super) fn consume_offers(
    db: &Connection,
    consumes: &[Consume<'_>],
    commit_now: i64,
) -> Result<HashSet<String>, StoreError> {
    let mut consume = db.prepare_cached(
        "UPDATE offers SET state = 'redeemed', redeemed_at = ?2, token_jti = ?3, \
         token_expires_at = ?4, attempts = MAX(attempts - ?5, 0) \
         WHERE id = ?1 AND state = 'pending' AND expires_at > ?7 \
           AND (?6 = 0 OR attempts < max_attempts)",
    )?;
    let mut consumed = HashSet::with_capacity(consumes.len());
    for c in consumes {
        let changed = consume.execute((
            c.id,
            c.now,
            &c.token.jti,
            c.token.expires_at,
            c.released(),
            c.needs_attempt(),
            commit_now,
        ))?;
        if changed == 1 {
            consumed.insert(c.id.to_owned());
        }
    }
    Ok(consumed)
}

/// Appends entries (each with its time) to the audit chain, a prepared
/// INSERT per entry, chained from the head read once. The caller holds
/// the write lock.
pub(super) fn append_audit_entries(
    db: &Connection,
    events: &[(i64, AuditEvent)],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut head =
        db.prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")?;
    let mut found = head.query(())?;
    let head = match found.next()? {
        Some(row) => Some((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?)),
        None => None,
    };
    let entries = chain_entries(head, events)?;
    let mut insert = db.prepare_cached(
        "INSERT INTO audit_log (seq, at, event, subject, details, prev_hash, hash) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?;
    for ChainedEntry {
        seq,
        at,
        event,
        details,
        prev_hash,
        hash,
    } in entries
    {
        insert.execute((
            seq,
            at,
            event.event,
            &event.subject,
            details,
            prev_hash,
            hash,
        ))?;
    }
    Ok(())
}

/// Records a proof's replay key; false if it was recorded before.
pub(super) fn record_proof_jti(
    db: &Connection,
    key: &[u8; 32],
    keep_until: i64,
) -> Result<bool, StoreError> {
    let inserted = db
        .prepare_cached(
            "INSERT INTO proof_jtis (key, keep_until) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
        )?
        .execute((key.as_slice(), keep_until))?;
    Ok(inserted == 1)
}

/// Takes `count` consecutive places in the newest list of `kind` that has
/// room, opening the next list (of `size` entries) when none has.
pub(super) fn reserve_status_slots(
    db: &Connection,
    kind: StatusListKind,
    count: i64,
    size: i64,
    now: i64,
) -> Result<Vec<StatusSlot>, StoreError> {
    let open = db
        .prepare_cached(
            "SELECT id, allocated FROM status_lists WHERE kind = ? AND allocated + ? <= size \
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )?
        .query_row((kind.as_str(), count), |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })
        .optional()?;
    let (list_id, first) = match open {
        Some(open) => open,
        None => {
            let lists: i64 = db.query_row(
                "SELECT COUNT(*) FROM status_lists WHERE kind = ?",
                [kind.as_str()],
                |row| row.get(0),
            )?;
            let id = format!("{}{}", kind.prefix(), lists + 1);
            db.execute(
                "INSERT INTO status_lists (id, kind, size, created_at) VALUES (?, ?, ?, ?)",
                (&id, kind.as_str(), size, now),
            )?;
            (id, 0)
        }
    };
    db.prepare_cached("UPDATE status_lists SET allocated = allocated + ? WHERE id = ?")?
        .execute((count, &list_id))?;
    Ok((first..first + count)
        .map(|n| StatusSlot {
            list_id: list_id.clone(),
            n,
        })
        .collect())
}

/// Records an issuance exactly once per offer and configuration (see
/// `issuance.rs`): the token must still be the offer's live one; the
/// issuance row's primary key refuses a second; the proofs' nonces are
/// spent; the configuration's sealed claims are deleted; each credential is
/// recorded. Writes nothing unless the outcome is `Issued`, except on the
/// outcomes that [`IssueOutcome::undoes_its_writes`], after which the
/// caller rolls back what it wrote. The audit entries to append come back
/// with an issuance.
pub(super) fn record_issuance(
    db: &Connection,
    issuance: &NewIssuance,
    now: i64,
) -> Result<(IssueOutcome, Vec<AuditEvent>), StoreError> {
    let offer = db
        .prepare_cached(
            "SELECT token_jti, token_revoked_at, claims_sealed, subject FROM offers \
             WHERE id = ? AND state = 'redeemed'",
        )?
        .query_row([&issuance.offer_id], |row| {
            Ok((
                row.get::<_, Option<String>>(0)?,
                row.get::<_, Option<i64>>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, Option<String>>(3)?,
            ))
        })
        .optional()?;
    let Some((token_jti, revoked_at, sealed, subject)) = offer else {
        return Ok((IssueOutcome::TokenRevoked, Vec::new()));
    };
    if !token_is_live(&issuance.token_jti, token_jti, revoked_at) {
        return Ok((IssueOutcome::TokenRevoked, Vec::new()));
    }
    let inserted = db
        .prepare_cached(
            "INSERT INTO credential_issuances \
             (offer_id, configuration_id, token_jti, notification_id, issued_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (offer_id, configuration_id) DO NOTHING",
        )?
        .execute((
            &issuance.offer_id,
            &issuance.configuration_id,
            &issuance.token_jti,
            &issuance.notification_id,
            now,
        ))?;
    if inserted == 0 {
        return Ok((IssueOutcome::AlreadyIssued, Vec::new()));
    }
    for nonce in &issuance.spent_nonces {
        if !record_proof_jti(db, &nonce.key, nonce.keep_until)? {
            return Ok((IssueOutcome::NonceUsed, Vec::new()));
        }
    }
    db.prepare_cached("UPDATE offers SET claims_sealed = ? WHERE id = ?")?
        .execute((
            without_configuration(sealed, &issuance.configuration_id),
            &issuance.offer_id,
        ))?;
    let mut insert = db.prepare_cached(
        "INSERT INTO credentials (id, offer_id, configuration_id, format, kid, holder_jkt, \
         sha256, issued_at, expires_at, subject, status_list, status_index) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    for c in &issuance.credentials {
        let inserted = insert.execute(rusqlite::params![
            c.id,
            issuance.offer_id,
            issuance.configuration_id,
            c.format,
            c.kid,
            c.holder_jkt,
            c.sha256,
            c.issued_at,
            c.expires_at,
            subject,
            c.status.as_ref().map(|(list, _)| list.as_str()),
            c.status.as_ref().map(|(_, index)| *index),
        ]);
        // Only the SD-JWT holder-key index can conflict here (ids are
        // random). The caller undoes the issuance row.
        if let Err(e) = inserted {
            return match StoreError::from(e) {
                StoreError::Conflict(_) => Ok((IssueOutcome::HolderKeyUsed, Vec::new())),
                other => Err(other),
            };
        }
    }
    Ok((IssueOutcome::Issued, issued_events(issuance)))
}

thread_local! {
    /// The read connection of the thread that asks (a tokio worker), to the
    /// database file it names; opened on the first read.
    static READER: std::cell::RefCell<Option<(PathBuf, Connection)>> =
        const { std::cell::RefCell::new(None) };
}

/// Pages a reader keeps (KiB, as SQLite's negative `cache_size`): the
/// offers index and the rows being redeemed, not the whole file.
const READER_CACHE_KIB: i64 = -512;

/// The readers' offer lookups, made once: every redemption and credential
/// request runs one.
static OFFER_BY_CODE_HASH: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {OFFER_COLUMNS} FROM offers WHERE code_hash = ?"));
static OFFER_BY_ID: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {OFFER_COLUMNS} FROM offers WHERE id = ?"));

/// The offer whose code hashes to `code_hash`, read on the calling thread.
///
/// The lookup every redemption starts with, made on the request's own
/// worker: a read in WAL mode never waits for a writer, and it costs tens of
/// microseconds from the kernel's page cache, about what the two thread
/// hand-offs of the driver's read cost on their own.
pub(super) fn find_offer_by_code_hash(
    file: &Path,
    code_hash: &[u8; 32],
) -> Result<Option<OfferRecord>, StoreError> {
    with_reader(file, |db| {
        db.prepare_cached(&OFFER_BY_CODE_HASH)?
            .query_row([code_hash.as_slice()], offer_from_row)
            .optional()
    })?
    .transpose()
}

/// The offer with id `id`, read on the calling thread like
/// [`find_offer_by_code_hash`]: every credential request opens its offer's
/// claims.
pub(super) fn get_offer(file: &Path, id: &str) -> Result<Option<OfferRecord>, StoreError> {
    with_reader(file, |db| {
        db.prepare_cached(&OFFER_BY_ID)?
            .query_row([id], offer_from_row)
            .optional()
    })?
    .transpose()
}

/// The offer and revocation time of the token `jti`, read on the calling
/// thread: every credential request checks its access token.
pub(super) fn token_status(file: &Path, jti: &str) -> Result<Option<TokenStatus>, StoreError> {
    with_reader(file, |db| {
        db.prepare_cached("SELECT id, token_revoked_at FROM offers WHERE token_jti = ?")?
            .query_row([jti], |row| {
                Ok(TokenStatus {
                    offer_id: row.get(0)?,
                    revoked_at: row.get(1)?,
                })
            })
            .optional()
    })
}

/// Whether `sql` (a `SELECT` of one constant) finds a row, read on the
/// calling thread like [`find_offer_by_code_hash`].
pub(super) fn exists<P: rusqlite::Params>(
    file: &Path,
    sql: &str,
    params: P,
) -> Result<bool, StoreError> {
    with_reader(file, |db| {
        Ok(db
            .prepare_cached(sql)?
            .query_row(params, |_| Ok(()))
            .optional()?
            .is_some())
    })
}

/// Runs `read` on this thread's reader of `file`, opened on first use. A
/// reader that failed is not kept.
fn with_reader<T>(
    file: &Path,
    read: impl FnOnce(&Connection) -> Result<T, rusqlite::Error>,
) -> Result<T, StoreError> {
    READER.with(|reader| {
        let mut reader = reader.borrow_mut();
        if reader.as_ref().is_none_or(|(path, _)| path != file) {
            *reader = Some((file.to_owned(), open_reader(file)?));
        }
        let Some((_, db)) = reader.as_ref() else {
            return Err(StoreError::Internal("no SQLite reader".into()));
        };
        read(db).map_err(|e| {
            *reader = None;
            e.into()
        })
    })
}

fn open_reader(file: &Path) -> Result<Connection, StoreError> {
    let db = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Unavailable(format!("opening {}: {e}", file.display())))?;
    db.busy_handler(Some(wait_a_moment))?;
    db.execute_batch(&format!(
        "PRAGMA cache_size = {READER_CACHE_KIB}; PRAGMA temp_store = MEMORY;"
    ))?;
    Ok(db)
}

/// An offer from a row of [`OFFER_COLUMNS`], in their order. The outer
/// error is SQLite's, the inner one a value notary does not know.
fn offer_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<OfferRecord, StoreError>> {
    let state: String = row.get(6)?;
    let Some(state) = OfferState::parse(&state) else {
        return Ok(Err(StoreError::Internal(format!(
            "unknown offer state {state:?}"
        ))));
    };
    Ok(Ok(OfferRecord {
        id: row.get(0)?,
        pin_hash: row.get(1)?,
        tx_code: row.get(2)?,
        subject: row.get(3)?,
        credential_ids: row.get(4)?,
        claims_sealed: row.get(5)?,
        state,
        attempts: u32::try_from(row.get::<_, i64>(7)?).unwrap_or(u32::MAX),
        max_attempts: u32::try_from(row.get::<_, i64>(8)?).unwrap_or(0),
        created_at: row.get(9)?,
        expires_at: row.get(10)?,
        redeemed_at: row.get(11)?,
        locked_at: row.get(12)?,
        revoked_at: row.get(13)?,
        token_revoked_at: row.get(14)?,
    }))
}
