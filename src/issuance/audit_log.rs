//! Signed checkpoints of the audit chain, and verification of the chain as
//! stored (which needs only the audit public key, never the HSM).

use super::{InternalError, Notary, now};
use crate::audit::{self, AuditError, ChainReport, EntryView, NoteVerifier};
use crate::store::{AuditFilter, AuditRecord, CheckpointRecord, Store, StoreError};

/// Entries read per page when walking the whole chain.
const PAGE: i64 = 5_000;

impl Notary {
    /// The verifier key of this log's checkpoints (name = origin).
    pub async fn note_verifier(&self) -> Result<NoteVerifier, InternalError> {
        let public = self.hsm.audit_public_key().await?;
        let public_key = match public {
            crate::jose::PublicKey::Ed25519(key) => key,
            crate::jose::PublicKey::P256 { .. } => {
                return Err(InternalError::Hsm(crate::hsm::HsmError::Unsupported(
                    "the audit key must be Ed25519".to_owned(),
                )));
            }
        };
        Ok(NoteVerifier {
            name: self.policy.audit_origin.clone(),
            public_key,
        })
    }

    /// Signs the current chain head with the audit key, unless it is
    /// already checkpointed. Returns the new checkpoint.
    pub async fn checkpoint(&self) -> Result<Option<CheckpointRecord>, InternalError> {
        let Some((size, head_hash)) = self.store.audit_head().await? else {
            return Ok(None);
        };
        let latest = self.store.list_checkpoints().await?.last().map(|c| c.size);
        if latest == Some(size) {
            return Ok(None);
        }
        let verifier = self.note_verifier().await?;
        let body = audit::checkpoint_body(&verifier.name, size, &head_hash);
        let signature = self.hsm.sign_audit(body.as_bytes().to_vec()).await?;
        let record = CheckpointRecord {
            size,
            head_hash,
            note: audit::signed_note(&body, &verifier, &signature),
            created_at: now(),
        };
        Ok(self
            .store
            .insert_checkpoint(&record)
            .await?
            .then_some(record))
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
