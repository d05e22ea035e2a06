//! Signed checkpoints of the audit chain, and verification of the chain as
//! stored (which needs only the audit public key, never the HSM).

use std::sync::{Arc, Mutex, PoisonError};

use super::{InternalError, Notary, now};
use crate::audit::{self, AuditError, ChainReport, Checkpoint, EntryView, NoteVerifier};
use crate::store::{AuditFilter, AuditRecord, CheckpointRecord, Store, StoreError};

/// Entries read per page when walking the whole chain.
const PAGE: i64 = 5_000;

impl Notary {
    /// The verifier key of this log's checkpoints (name = origin).
    pub async fn note_verifier(&self) -> Result<NoteVerifier, InternalError> {
        let key = self.hsm.audit_public_key().await?;
        Ok(NoteVerifier {
            name: self.policy.audit_origin.clone(),
            key,
        })
    }

    /// Signs the current chain head with the audit key, unless it is
    /// already checkpointed. Returns the new checkpoint.
    ///
    /// The head is signed only if it extends the last signed checkpoint:
    /// the stored entries from that checkpoint's size up to the head must
    /// reproduce its signed hash and chain from it. Otherwise history was
    /// rewritten (or removed) under the log, and signing would make the
    /// rewrite look authentic: refused, with an error-level alert and
    /// `notary_audit_checkpoints_refused_total`.
    pub async fn checkpoint(&self) -> Result<Option<CheckpointRecord>, CheckpointError> {
        let Some((size, head_hash)) = self.store.audit_head().await.map_err(internal)? else {
            return Ok(None);
        };
        let verifier = self.note_verifier().await?;
        let last = match self.last_signed_checkpoint(&verifier).await? {
            Ok(last) => last,
            Err(reason) => return Err(refuse(reason)),
        };
        if let Some(last) = &last {
            if last.size == size && last.head_hash == head_hash {
                return Ok(None);
            }
        }
        if let Err(reason) = extends(&self.store, last.as_ref(), size, &head_hash).await? {
            return Err(refuse(reason));
        }
        let body = audit::checkpoint_body(&verifier.name, size, &head_hash);
        let raw = self
            .hsm
            .sign_audit(body.as_bytes().to_vec())
            .await
            .map_err(internal)?;
        let signature = verifier.note_signature(&raw).ok_or_else(|| {
            internal(crate::hsm::HsmError::Internal {
                context: "signing an audit checkpoint",
                detail: format!("the audit key returned a {}-byte signature", raw.len()),
            })
        })?;
        let record = CheckpointRecord {
            size,
            head_hash: head_hash.clone(),
            note: audit::signed_note(&body, &verifier, &signature),
            created_at: now(),
        };
        let inserted = self
            .store
            .insert_checkpoint(&record)
            .await
            .map_err(internal)?;
        self.last_checkpoint.raise(Checkpoint { size, head_hash });
        Ok(inserted.then_some(record))
    }

    /// The largest checkpoint known to be signed by the audit key: the
    /// database's last row (its signature checked) or the one this process
    /// remembers, whichever is larger. `Err(reason)` when the database's
    /// rows contradict what was signed.
    async fn last_signed_checkpoint(
        &self,
        verifier: &NoteVerifier,
    ) -> Result<Result<Option<Checkpoint>, String>, CheckpointError> {
        let stored = self.store.list_checkpoints().await.map_err(internal)?;
        let from_db = match stored.iter().max_by_key(|c| c.size) {
            None => None,
            Some(row) => match audit::open_checkpoint(&row.note, verifier) {
                Ok(cp) if cp.size == row.size && cp.head_hash == row.head_hash => Some(cp),
                Ok(_) => {
                    return Ok(Err(format!(
                        "the checkpoint row of size {} differs from its signed note",
                        row.size
                    )));
                }
                Err(e) => return Ok(Err(format!("the last stored checkpoint is invalid: {e}"))),
            },
        };
        let remembered = self.last_checkpoint.get();
        if let (Some(mine), Some(db)) = (&remembered, &from_db) {
            if mine.size == db.size && mine.head_hash != db.head_hash {
                return Ok(Err(format!(
                    "the checkpoint of size {} signed earlier differs from the stored one",
                    mine.size
                )));
            }
        }
        let last = match (remembered, from_db) {
            (Some(mine), Some(db)) if mine.size > db.size => Some(mine),
            (_, Some(db)) => Some(db),
            (mine, None) => mine,
        };
        if let Some(cp) = &last {
            self.last_checkpoint.raise(cp.clone());
        }
        Ok(Ok(last))
    }
}

/// Why no checkpoint was signed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The stored log does not extend the last signed checkpoint.
    #[error("refusing to sign an audit checkpoint: {0}")]
    Refused(String),
    /// The HSM or the database failed.
    #[error(transparent)]
    Internal(#[from] InternalError),
}

fn internal(e: impl Into<InternalError>) -> CheckpointError {
    CheckpointError::Internal(e.into())
}

/// Raises the alert for a refused checkpoint (no secret: the log holds none).
fn refuse(reason: String) -> CheckpointError {
    metrics::counter!(crate::telemetry::AUDIT_CHECKPOINTS_REFUSED).increment(1);
    tracing::error!(
        alert = "audit_log_rewritten",
        reason = %reason,
        "ALERT: the audit log no longer extends its last signed checkpoint; not signing"
    );
    CheckpointError::Refused(reason)
}

/// The largest checkpoint seen by this process, shared by its clones.
#[derive(Debug, Clone, Default)]
pub struct LastCheckpoint(Arc<Mutex<Option<Checkpoint>>>);

impl LastCheckpoint {
    fn get(&self) -> Option<Checkpoint> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn raise(&self, cp: Checkpoint) {
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if last.as_ref().is_none_or(|l| l.size < cp.size) {
            *last = Some(cp);
        }
    }
}

/// Whether the stored entries up to `size` extend `last` (or, with no
/// checkpoint yet, chain from the genesis hash) and end at `head_hash`.
/// Reads only the entries from `last.size` on, page by page.
async fn extends(
    store: &Store,
    last: Option<&Checkpoint>,
    size: i64,
    head_hash: &[u8],
) -> Result<Result<(), String>, CheckpointError> {
    let (mut after, mut expected_hash): (i64, Option<Vec<u8>>) = match last {
        Some(cp) if cp.size > size => {
            return Ok(Err(format!(
                "the log ends at entry {size} but a checkpoint covers {} entries",
                cp.size
            )));
        }
        Some(cp) if cp.size < 1 => return Ok(Err("a checkpoint of size 0 was signed".into())),
        Some(cp) => (cp.size - 1, Some(cp.head_hash.clone())),
        None => (0, None),
    };
    // With a checkpoint, the first entry read is the one it signed: its
    // stored hash must be the signed one. Without, entry 1 starts from genesis.
    let mut prev: Option<Vec<u8>> = None;
    while after < size {
        let limit = PAGE.min(size - after);
        let page = store
            .audit_entries(&AuditFilter::all(after, limit))
            .await
            .map_err(internal)?;
        if page.is_empty() {
            return Ok(Err(format!("entry {} is missing", after + 1)));
        }
        for e in &page {
            let Some(next) = after.checked_add(1) else {
                return Ok(Err("sequence numbers overflow".into()));
            };
            if e.seq != next {
                return Ok(Err(format!(
                    "entry {next} is missing (found {} instead)",
                    e.seq
                )));
            }
            let chained = match &prev {
                Some(p) => e.prev_hash == *p,
                None if e.seq == 1 => e.prev_hash == audit::GENESIS,
                None => true,
            };
            let hash = audit::chain_hash(
                &e.prev_hash,
                e.seq,
                e.at,
                &e.event,
                e.subject.as_deref(),
                &e.details,
            );
            if !chained || hash.as_slice() != e.hash.as_slice() {
                return Ok(Err(format!("entry {} does not chain", e.seq)));
            }
            if let Some(signed) = expected_hash.take() {
                if e.hash != signed {
                    return Ok(Err(format!(
                        "the stored chain no longer reproduces the hash signed at size {}: \
                         entries up to {} were rewritten",
                        e.seq, e.seq
                    )));
                }
            }
            prev = Some(e.hash.clone());
            after = e.seq;
        }
    }
    match prev {
        Some(hash) if hash == head_hash => Ok(Ok(())),
        _ => Ok(Err(format!(
            "the head at entry {size} changed while it was checked"
        ))),
    }
}

/// Reads the whole chain from the store, page by page.
pub async fn all_entries(store: &Store, since: i64) -> Result<Vec<AuditRecord>, StoreError> {
    let mut entries = Vec::new();
    let mut after = 0;
    loop {
        let mut filter = AuditFilter::all(after, PAGE);
        filter.since = since;
        let page = store.audit_entries(&filter).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        let full = page.len() as i64 == PAGE;
        entries.extend(page);
        if !full {
            break;
        }
    }
    Ok(entries)
}

/// Verifies `entries` and `checkpoints` (signed notes) with `verifier`.
pub fn verify_records(
    entries: &[AuditRecord],
    checkpoints: &[String],
    verifier: &NoteVerifier,
    whole_chain: bool,
) -> Result<ChainReport, AuditError> {
    let views: Vec<EntryView<'_>> = entries
        .iter()
        .map(|e| EntryView {
            seq: e.seq,
            at: e.at,
            event: &e.event,
            subject: e.subject.as_deref(),
            details: &e.details,
            prev_hash: &e.prev_hash,
            hash: &e.hash,
        })
        .collect();
    audit::verify(&views, checkpoints, verifier, whole_chain)
}

/// Splits a file of shipped checkpoints (as `[audit] checkpoint_file`
/// writes them: each signed note followed by a blank line) into notes.
pub fn split_notes(text: &str) -> Vec<String> {
    let mut notes = Vec::new();
    let mut lines = text.lines().peekable();
    while lines.peek().is_some() {
        // Skip blank lines between notes.
        while lines.peek().is_some_and(|l| l.is_empty()) {
            lines.next();
        }
        let body: Vec<&str> = lines.by_ref().take(3).collect();
        if body.len() < 3 {
            break;
        }
        let mut note = body.join("\n") + "\n\n";
        lines.next(); // the blank line between body and signatures
        while let Some(sig) = lines.next_if(|l| !l.is_empty()) {
            note.push_str(sig);
            note.push('\n');
        }
        notes.push(note);
    }
    notes
}

/// One line of an export (`notary audit export`, JSON lines).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ExportLine {
    /// An audit entry; hashes in hex.
    Entry {
        /// Sequence number.
        seq: i64,
        /// Unix seconds.
        at: i64,
        /// Event name.
        event: String,
        /// Subject.
        subject: Option<String>,
        /// Details as stored.
        details: String,
        /// Previous hash, hex.
        prev_hash: String,
        /// Hash, hex.
        hash: String,
    },
    /// A signed checkpoint note.
    Checkpoint {
        /// The note.
        note: String,
    },
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses hex (either case); `None` on anything else.
fn unhex(text: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if bytes.len() % 2 != 0 {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// Reads an export: its entries in file order, and its checkpoint notes.
/// Any input gives a result or an error naming the line, never a panic.
pub fn parse_export(
    reader: impl std::io::BufRead,
) -> Result<(Vec<AuditRecord>, Vec<String>), AuditError> {
    let mut entries = Vec::new();
    let mut checkpoints = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let bad = |reason: String| AuditError::Export {
            line: n.saturating_add(1),
            reason,
        };
        let line = line.map_err(|e| bad(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ExportLine = serde_json::from_str(&line)
            .map_err(|e| bad(format!("not an audit export line: {e}")))?;
        match parsed {
            ExportLine::Entry {
                seq,
                at,
                event,
                subject,
                details,
                prev_hash,
                hash,
            } => {
                let prev_hash =
                    unhex(&prev_hash).ok_or_else(|| bad("prev_hash is not hex".into()))?;
                let hash = unhex(&hash).ok_or_else(|| bad("hash is not hex".into()))?;
                entries.push(AuditRecord {
                    seq,
                    at,
                    event,
                    subject,
                    details,
                    prev_hash,
                    hash,
                });
            }
            ExportLine::Checkpoint { note } => checkpoints.push(note),
        }
    }
    Ok((entries, checkpoints))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> NoteVerifier {
        NoteVerifier {
            name: "example.test/notary-audit".to_owned(),
            key: crate::jose::PublicKey::Ed25519([7; 32]),
        }
    }

    fn entry_line(seq: &str, prev_hash: &str, hash: &str) -> String {
        format!(
            r#"{{"type":"entry","seq":{seq},"at":1,"event":"e","subject":null,"details":"{{}}","prev_hash":"{prev_hash}","hash":"{hash}"}}"#
        )
    }

    fn parse(text: &str) -> Result<(Vec<AuditRecord>, Vec<String>), AuditError> {
        parse_export(text.as_bytes())
    }

    #[test]
    fn crafted_export_lines_are_errors_not_panics() {
        let zero = "00".repeat(32);
        for (name, text) in [
            (
                "seq beyond i64",
                entry_line("99999999999999999999999", &zero, &zero),
            ),
            ("fractional seq", entry_line("1.5", &zero, &zero)),
            (
                "truncated line",
                entry_line("1", &zero, &zero)[..40].to_owned(),
            ),
            ("odd hex", entry_line("1", "abc", &zero)),
            ("multi-byte hex", entry_line("1", "a\u{e9}a0", &zero)),
            ("non-hex", entry_line("1", &zero, "zz")),
            ("unknown type", r#"{"type":"other"}"#.to_owned()),
            (
                "unknown field",
                r#"{"type":"checkpoint","note":"n","x":1}"#.to_owned(),
            ),
            ("not json", "\u{0}\u{ff}".to_owned()),
        ] {
            assert!(
                matches!(parse(&text), Err(AuditError::Export { line: 1, .. })),
                "{name}"
            );
        }
    }

    #[test]
    fn extreme_sequence_numbers_fail_verification_without_overflow() {
        let zero = "00".repeat(32);
        let max = i64::MAX.to_string();
        let min = i64::MIN.to_string();
        for (name, seqs, whole) in [
            ("after i64::MAX", vec![max.as_str(), min.as_str()], false),
            ("i64::MAX twice", vec![max.as_str(), max.as_str()], false),
            ("negative start of a whole chain", vec!["-1", "0"], true),
            ("zero start of a whole chain", vec!["0"], true),
            ("i64::MAX start of a whole chain", vec![max.as_str()], true),
        ] {
            let text: String = seqs
                .iter()
                .map(|seq| entry_line(seq, &zero, &zero) + "\n")
                .collect();
            let (entries, checkpoints) = parse(&text).expect(name);
            assert!(
                verify_records(&entries, &checkpoints, &verifier(), whole).is_err(),
                "{name}"
            );
        }
    }

    #[test]
    fn checkpoints_in_an_export_must_be_signed_and_readable() {
        for note in [
            "",
            "\n\n",
            "origin\n99999999999999999999\nAAAA\n\n\u{2014} x y\n",
            "example.test/notary-audit\n-5\nAAAA\n\n\u{2014} example.test/notary-audit AAAA\n",
        ] {
            let line = serde_json::to_string(&ExportLine::Checkpoint {
                note: note.to_owned(),
            })
            .expect("serialises");
            let (entries, checkpoints) = parse(&line).expect("a checkpoint line");
            assert!(verify_records(&entries, &checkpoints, &verifier(), false).is_err());
        }
    }
}
