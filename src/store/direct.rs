//! The SQLite writer of the hot writes (offers created, PIN attempts
//! reserved, offers redeemed): a synchronous connection owned by the
//! group commit's thread, and the statements it makes.
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
use std::path::Path;
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, params_from_iter};

use super::group_commit::Consume;
use super::sqlite::{ChainedEntry, chain_entries, pin_attempt};
use super::{NewOffer, PinAttempt, StoreError};
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
    db.busy_timeout(Duration::from_secs(5))?;
    db.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;",
    )?;
    Ok(db)
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        match err.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Conflict(err.to_string()),
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
        blob(offer.pin_hash),
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

/// `count` rows of `row`, comma-separated: the VALUES of a multi-row
/// statement.
fn rows(row: &str, count: usize) -> String {
    vec![row; count].join(", ")
}

/// Inserts offers with one multi-row statement (their audit entries are
/// appended by the caller).
pub(super) fn insert_offers(db: &Connection, offers: &[&NewOffer]) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO offers (id, code_hash, pin_hash, tx_code, subject, credential_ids, \
         claims_sealed, state, attempts, max_attempts, created_at, expires_at, created_by, \
         ref_hash) VALUES {}",
        rows(
            "(?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?, ?)",
            offers.len()
        )
    );
    let values = offers.iter().flat_map(|o| offer_values(o));
    db.execute(&sql, params_from_iter(values))?;
    Ok(())
}

/// Counts one PIN attempt on each of several distinct offers with one
/// statement; returns the attempts reserved, by offer id. An offer left
/// out was refused: not pending, expired, or out of attempts. One
/// conditional statement, so concurrent attempts never pass the limit.
pub(super) fn reserve_pin_attempts(
    db: &Connection,
    reservations: &[(usize, &str, i64)],
) -> Result<HashMap<String, PinAttempt>, StoreError> {
    let sql = format!(
        "WITH v(id, now) AS (VALUES {}) \
         UPDATE offers SET attempts = offers.attempts + 1 FROM v \
         WHERE offers.id = v.id AND offers.state = 'pending' AND offers.expires_at > v.now \
           AND offers.attempts < offers.max_attempts \
         RETURNING offers.id, offers.attempts, offers.max_attempts",
        rows("(?, ?)", reservations.len())
    );
    let values = reservations
        .iter()
        .flat_map(|(_, id, now)| [Value::Text((*id).to_owned()), Value::Integer(*now)]);
    let mut statement = db.prepare(&sql)?;
    let mut found = statement.query(params_from_iter(values))?;
    let mut reserved = HashMap::with_capacity(reservations.len());
    while let Some(row) = found.next()? {
        reserved.insert(row.get(0)?, pin_attempt(row.get(1)?, row.get(2)?)?);
    }
    Ok(reserved)
}

/// One more attempt on an offer already counted in this batch (the same
/// conditions as [`reserve_pin_attempts`]).
pub(super) fn reserve_pin_attempt(
    db: &Connection,
    id: &str,
    now: i64,
) -> Result<Option<PinAttempt>, StoreError> {
    let mut statement = db.prepare(
        "UPDATE offers SET attempts = attempts + 1 \
         WHERE id = ? AND state = 'pending' AND expires_at > ? AND attempts < max_attempts \
         RETURNING attempts, max_attempts",
    )?;
    let mut found = statement.query((id, now))?;
    match found.next()? {
        Some(row) => Ok(Some(pin_attempt(row.get(0)?, row.get(1)?)?)),
        None => Ok(None),
    }
}

/// Redeems the given pending offers that are unexpired at `commit_now`
/// with one statement (each id at most once); returns the ids it changed.
/// A redemption that reserved a PIN attempt gives it back. Offers no longer
/// pending or already expired are left alone: their requests lost.
pub(super) fn consume_offers(
    db: &Connection,
    consumes: &[Consume<'_>],
    commit_now: i64,
) -> Result<HashSet<String>, StoreError> {
    let sql = format!(
        "WITH v(id, jti, exp, now, released) AS (VALUES {}) \
         UPDATE offers SET state = 'redeemed', redeemed_at = v.now, token_jti = v.jti, \
         token_expires_at = v.exp, attempts = MAX(offers.attempts - v.released, 0) FROM v \
         WHERE offers.id = v.id AND offers.state = 'pending' AND offers.expires_at > ? \
         RETURNING offers.id",
        rows("(?, ?, ?, ?, ?)", consumes.len())
    );
    let values = consumes
        .iter()
        .flat_map(|c| {
            [
                Value::Text(c.id.to_owned()),
                Value::Text(c.token.jti.clone()),
                Value::Integer(c.token.expires_at),
                Value::Integer(c.now),
                Value::Integer(i64::from(c.release_attempt)),
            ]
        })
        .chain([Value::Integer(commit_now)]);
    let mut statement = db.prepare(&sql)?;
    let ids = statement.query_map(params_from_iter(values), |row| row.get::<_, String>(0))?;
    Ok(ids.collect::<Result<_, _>>()?)
}

/// Appends entries (each with its time) to the audit chain with one
/// multi-row statement, chained from the head read once. The caller holds
/// the write lock.
pub(super) fn append_audit_entries(
    db: &Connection,
    events: &[(i64, AuditEvent)],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut head = db.prepare("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")?;
    let mut found = head.query(())?;
    let head = match found.next()? {
        Some(row) => Some((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?)),
        None => None,
    };
    let entries = chain_entries(head, events)?;
    let sql = format!(
        "INSERT INTO audit_log (seq, at, event, subject, details, prev_hash, hash) VALUES {}",
        rows("(?, ?, ?, ?, ?, ?, ?)", entries.len())
    );
    let values = entries.into_iter().flat_map(
        |ChainedEntry {
             seq,
             at,
             event,
             details,
             prev_hash,
             hash,
         }| {
            [
                Value::Integer(seq),
                Value::Integer(at),
                Value::Text(event.event.to_owned()),
                event.subject.clone().map_or(Value::Null, Value::Text),
                Value::Text(details),
                Value::Blob(prev_hash),
                Value::Blob(hash),
            ]
        },
    );
    db.execute(&sql, params_from_iter(values))?;
    Ok(())
}
