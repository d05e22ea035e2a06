//! The redemption's offer lookup on PostgreSQL, shared: the lookups that
//! arrive while earlier ones are in flight go to the database together, as
//! one `WHERE code_hash = ANY($1)`.
//!
//! Every redemption starts with this read, and on PostgreSQL a query's
//! fixed cost (a round trip over TLS, waking a backend, starting an
//! executor) was most of it: one query per redemption took about as much
//! of the database's CPU as the redemption's share of its batch write
//! (docs/performance.md, sixth pass). Under load the lookups now arrive in
//! tens per query; a lookup that arrives while fewer than two queries are
//! running is sent at once, so an idle server answers as fast as before. A
//! query that fails fails the lookups it carried, each answered as a read
//! of its own that failed would be (nothing is consumed or counted).
//!
//! Nothing about the answer changes: each lookup gets the row of its own
//! code hash as it was when its query ran, which is no older than a lookup
//! of its own would have seen, since the query is sent after the lookup
//! was queued. Decisions are still made by the conditional writes, not by
//! this read.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use sqlx::{PgPool, Row};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::postgres::{OFFER_COLUMNS, offer_from_row};
use super::{OfferRecord, StoreError};

/// Queries in flight at once: while they run, the next lookups gather.
/// Two keep the database busy while one answer travels back.
const IN_FLIGHT: usize = 2;
/// Most code hashes in one query.
const MAX_LOOKUPS: usize = 128;
/// Lookups waiting to be sent, beyond which callers wait their turn.
const QUEUE: usize = 4096;
/// Longest a query may take, once it has a connection (whose wait the
/// read pool bounds, as long). Only [`IN_FLIGHT`] run at once, so one that
/// hangs (a database failing over, a lock on `offers`) must give its place
/// up, failing its own lookups, or it would hold every later one; its
/// connection is closed, not pooled. (The lookups on connections of their
/// own with a server-side `statement_timeout` were measured: the p99 of
/// PostgreSQL redemptions went from 24–27 to 112–148 ms, docs/performance.md.)
const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

static BY_CODE_HASHES: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT code_hash, {OFFER_COLUMNS} FROM offers WHERE code_hash = ANY($1::bytea[])")
});

type Answer = Result<Option<OfferRecord>, StoreError>;

struct Lookup {
    code_hash: [u8; 32],
    reply: oneshot::Sender<Answer>,
}

/// The queue in front of the shared lookups. Cheap to clone; the task that
/// sends them ends when every clone is dropped.
#[derive(Debug, Clone)]
pub(super) struct CodeLookups {
    queue: mpsc::Sender<Lookup>,
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A code hash is a lookup key for a live code: not for logs.
        f.write_str("Lookup")
    }
}

impl CodeLookups {
    /// Starts the task that sends lookups on `pool`.
    pub(super) fn start(pool: PgPool) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(send_lookups(pool, waiting));
        CodeLookups { queue }
    }

    /// The offer whose code hashes to `code_hash`.
    pub(super) async fn find(&self, code_hash: &[u8; 32]) -> Answer {
        let stopped = || StoreError::Unavailable("the offer lookups have stopped".to_owned());
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Lookup {
                code_hash: *code_hash,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Takes what is queued (up to [`MAX_LOOKUPS`]) once a query may start, and
/// sends it as one query; lookups queued meanwhile wait for the next.
async fn send_lookups(pool: PgPool, mut waiting: mpsc::Receiver<Lookup>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = waiting.recv().await {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let mut lookups = Vec::with_capacity(MAX_LOOKUPS);
        lookups.push(first);
        while lookups.len() < MAX_LOOKUPS {
            match waiting.try_recv() {
                Ok(lookup) => lookups.push(lookup),
                Err(_) => break,
            }
        }
        // A request that went away needs no answer.
        lookups.retain(|lookup| !lookup.reply.is_closed());
        if lookups.is_empty() {
            continue;
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let answers = look_up(&pool, &lookups).await;
            for (lookup, answer) in lookups.into_iter().zip(answers) {
                let _ = lookup.reply.send(answer);
            }
            drop(permit);
        });
    }
}

/// One query for every lookup; the answers in the lookups' order. A failed
/// query fails each of them.
async fn look_up(pool: &PgPool, lookups: &[Lookup]) -> Vec<Answer> {
    let hashes: Vec<&[u8]> = lookups.iter().map(|l| l.code_hash.as_slice()).collect();
    let mut connection = match pool.acquire().await {
        Ok(connection) => connection,
        Err(e) => return failed(lookups, StoreError::from(e)),
    };
    let query = sqlx::query(sqlx::AssertSqlSafe(BY_CODE_HASHES.as_str()))
        .bind(hashes)
        .fetch_all(&mut *connection);
    let rows = match tokio::time::timeout(QUERY_TIMEOUT, query).await {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => return failed(lookups, StoreError::from(e)),
        Err(_) => {
            // The query may still be running on the server; back in the
            // pool, the connection would wait for it and hold its place.
            // Closed instead, it frees the place at once.
            connection.close_on_drop();
            let e = StoreError::Unavailable(format!(
                "PostgreSQL did not answer an offer lookup within {} s",
                QUERY_TIMEOUT.as_secs()
            ));
            return failed(lookups, e);
        }
    };
    // Code hashes are unique; two lookups of one code (a replay racing its
    // first use) both get its row.
    let mut found: HashMap<Vec<u8>, Result<OfferRecord, StoreError>> =
        HashMap::with_capacity(rows.len());
    for row in &rows {
        match row.try_get::<Vec<u8>, _>("code_hash") {
            Ok(hash) => {
                found.insert(hash, offer_from_row(row));
            }
            Err(e) => return failed(lookups, StoreError::from(e)),
        }
    }
    lookups
        .iter()
        .map(|l| found.get(l.code_hash.as_slice()).cloned().transpose())
        .collect()
}

/// The same error for every lookup of a query that failed.
fn failed(lookups: &[Lookup], e: StoreError) -> Vec<Answer> {
    lookups.iter().map(|_| Err(e.clone())).collect()
}
