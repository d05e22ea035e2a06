//! Hash-chained audit entries: what happened, never a secret.
//!
//! Each entry commits to the one before it:
//! `hash = SHA-256(prev_hash || canonical entry)`, where the canonical entry is
//! the JSON array `[seq, at, event, subject, details]` exactly as stored.
//! Changing, removing or reordering an entry breaks every hash after it.
//! The store appends entries in the same transaction as the state change
//! they describe.

use sha2::{Digest, Sha256};

use crate::jose::PublicKey;

/// The `prev_hash` of the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// An event to record. `details` must never hold a code, PIN, token or key.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Dotted event name, e.g. `offer.created`.
    pub event: &'static str,
    /// What the event is about: an offer id, an API key id, a key id.
    pub subject: Option<String>,
    /// Further facts as a JSON object.
    pub details: serde_json::Value,
}

impl AuditEvent {
    /// An event about `subject` with `details`.
    pub fn new(
        event: &'static str,
        subject: impl Into<String>,
        details: serde_json::Value,
    ) -> Self {
        Self {
            event,
            subject: Some(subject.into()),
            details,
        }
    }

    /// An event about the server as a whole.
    pub fn global(event: &'static str, details: serde_json::Value) -> Self {
        Self {
            event,
            subject: None,
            details,
        }
    }
}

/// The hash of an entry given its predecessor's hash and its stored fields.
pub fn chain_hash(
    prev_hash: &[u8],
    seq: i64,
    at: i64,
    event: &str,
    subject: Option<&str>,
    details: &str,
) -> [u8; 32] {
    let canonical = serde_json::json!([seq, at, event, subject, details]).to_string();
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    hasher.update(canonical.as_bytes());
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_keys_round_trip_and_notes_verify() {
        use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
        let pair = Ed25519KeyPair::generate().unwrap();
        let verifier = NoteVerifier {
            name: "example.test/notary-audit".to_owned(),
            key: PublicKey::Ed25519(pair.public_key().as_ref().try_into().unwrap()),
        };
        assert_eq!(NoteVerifier::decode(&verifier.encode()).unwrap(), verifier);
        let body = checkpoint_body(&verifier.name, 7, &[9; 32]);
        let note = signed_note(&body, &verifier, pair.sign(body.as_bytes()).as_ref());
        assert_eq!(
            open_checkpoint(&note, &verifier).unwrap(),
            Checkpoint {
                size: 7,
                head_hash: vec![9; 32]
            }
        );
        let forged = note.replace("\n7\n", "\n8\n");
        assert!(open_checkpoint(&forged, &verifier).is_err());
        let other = Ed25519KeyPair::generate().unwrap();
        let by_other = signed_note(&body, &verifier, other.sign(body.as_bytes()).as_ref());
        assert!(open_checkpoint(&by_other, &verifier).is_err());
    }

    #[test]
    fn ecdsa_verifier_keys_round_trip_and_notes_verify() {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        let rng = SystemRandom::new();
        let sign = |pair: &EcdsaKeyPair, body: &str| {
            pair.sign(&rng, body.as_bytes()).unwrap().as_ref().to_vec()
        };
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let key =
            PublicKey::from_ec_point(crate::jose::Algorithm::ES256, pair.public_key().as_ref())
                .unwrap();
        let verifier = NoteVerifier {
            name: "example.test/notary-audit".to_owned(),
            key,
        };
        let text = verifier.encode();
        assert!(text.contains("+AjBZMBMGByqGSM49"), "{text}");
        assert_eq!(NoteVerifier::decode(&text).unwrap(), verifier);
        let body = checkpoint_body(&verifier.name, 3, &[5; 32]);
        let raw = sign(&pair, &body);
        let note = signed_note(&body, &verifier, &verifier.note_signature(&raw).unwrap());
        assert_eq!(open_checkpoint(&note, &verifier).unwrap().size, 3);
        // The raw r || s form is not what notes carry.
        assert!(open_checkpoint(&signed_note(&body, &verifier, &raw), &verifier).is_err());
        let forged = note.replace("\n3\n", "\n4\n");
        assert!(open_checkpoint(&forged, &verifier).is_err());
        // A key id computed the Ed25519 way is refused.
        let tampered = text.replacen(&hex(&verifier.key_id()), "00000000", 1);
        assert!(NoteVerifier::decode(&tampered).is_err());
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = chain_hash(&GENESIS, 1, 100, "offer.created", Some("o1"), "{}");
        assert_ne!(
            base,
            chain_hash(&[1; 32], 1, 100, "offer.created", Some("o1"), "{}")
        );
        assert_ne!(
            base,
            chain_hash(&GENESIS, 2, 100, "offer.created", Some("o1"), "{}")
        );
        assert_ne!(
            base,
            chain_hash(&GENESIS, 1, 101, "offer.created", Some("o1"), "{}")
        );
        assert_ne!(
            base,
            chain_hash(&GENESIS, 1, 100, "offer.revoked", Some("o1"), "{}")
        );
        assert_ne!(
            base,
            chain_hash(&GENESIS, 1, 100, "offer.created", None, "{}")
        );
        assert_ne!(
            base,
            chain_hash(&GENESIS, 1, 100, "offer.created", Some("o1"), "{\"a\":1}")
        );
    }
}

/// A signed-note verifier key (C2SP `signed-note`): a name and a public key.
/// Its text form is `name+hex(key id)+base64(type byte || key)`.
///
/// Two signature types, as the module allows: Ed25519 (type `0x01`, the
/// 32-byte key; the default) and ECDSA P-256 (type `0x02`, as the
/// transparency-dev witness defines it: the key as DER SubjectPublicKeyInfo,
/// the key id from that DER alone, a DER signature over the note text with
/// SHA-256). The second exists for modules without Ed25519, such as a TPM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    /// The key name, also the checkpoints' origin line.
    pub name: String,
    /// The audit public key.
    pub key: PublicKey,
}

/// Signature type byte for Ed25519 in signed notes.
const ED25519_NOTE_ALG: u8 = 0x01;
/// Signature type byte for ECDSA in signed notes.
const ECDSA_NOTE_ALG: u8 = 0x02;

impl NoteVerifier {
    /// The type byte and the key bytes of the text form.
    fn typed_key(&self) -> (u8, Vec<u8>) {
        match &self.key {
            PublicKey::Ed25519(key) => (ED25519_NOTE_ALG, key.to_vec()),
            PublicKey::P256 { .. } => (
                ECDSA_NOTE_ALG,
                crate::x509::subject_public_key_info(&self.key),
            ),
        }
    }

    /// The 4-byte key id: for Ed25519 the first bytes of
    /// SHA-256(name || "\n" || 0x01 || public key), for ECDSA those of
    /// SHA-256(DER SubjectPublicKeyInfo).
    pub fn key_id(&self) -> [u8; 4] {
        let (alg, key) = self.typed_key();
        let mut h = Sha256::new();
        if alg == ED25519_NOTE_ALG {
            h.update(self.name.as_bytes());
            h.update(b"\n");
            h.update([alg]);
        }
        h.update(key);
        let digest = h.finalize();
        [digest[0], digest[1], digest[2], digest[3]]
    }

    /// The verifier key in its text form.
    pub fn encode(&self) -> String {
        let (alg, key) = self.typed_key();
        let mut typed = vec![alg];
        typed.extend_from_slice(&key);
        format!(
            "{}+{}+{}",
            self.name,
            hex(&self.key_id()),
            base64::engine::general_purpose::STANDARD.encode(typed)
        )
    }

    /// Parses the text form (and checks its key id).
    pub fn decode(text: &str) -> Result<Self, AuditError> {
        let bad = |why: &str| AuditError::Key(format!("not a signed-note verifier key: {why}"));
        let text = text.trim();
        // name+hash+key: names cannot contain '+', base64 keys can.
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected name+hash+key"));
        };
        let key = base64::engine::general_purpose::STANDARD
            .decode(key)
            .map_err(|_| bad("key is not base64"))?;
        let (alg, key) = key.split_first().ok_or_else(|| bad("empty key"))?;
        let key = match *alg {
            ED25519_NOTE_ALG => {
                PublicKey::Ed25519(key.try_into().map_err(|_| bad("key is not 32 bytes"))?)
            }
            ECDSA_NOTE_ALG => crate::x509::p256_from_subject_public_key_info(key)
                .ok_or_else(|| bad("key is not a P-256 SubjectPublicKeyInfo"))?,
            _ => {
                return Err(bad(
                    "only Ed25519 (0x01) and ECDSA P-256 (0x02) keys are supported",
                ));
            }
        };
        let verifier = NoteVerifier {
            name: name.to_owned(),
            key,
        };
        if hex(&verifier.key_id()) != id {
            return Err(bad("key id does not match the key"));
        }
        Ok(verifier)
    }

    /// The note signature for the raw signature an HSM returns (Ed25519, or
    /// ECDSA `r || s`, which notes carry as DER).
    pub fn note_signature(&self, raw: &[u8]) -> Option<Vec<u8>> {
        match self.key {
            PublicKey::Ed25519(_) => Some(raw.to_vec()),
            PublicKey::P256 { .. } => crate::x509::ecdsa_signature_der(raw),
        }
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ED25519, UnparsedPublicKey};
        let raw = self.key.raw_bytes();
        let algorithm: &'static dyn aws_lc_rs::signature::VerificationAlgorithm = match self.key {
            PublicKey::Ed25519(_) => &ED25519,
            PublicKey::P256 { .. } => &ECDSA_P256_SHA256_ASN1,
        };
        UnparsedPublicKey::new(algorithm, &raw)
            .verify(message, signature)
            .is_ok()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

use base64::Engine as _;

/// The text a checkpoint signs (C2SP `tlog-checkpoint`): origin, size, and
/// the head hash in standard base64. notary's log is a hash chain, not a
/// Merkle tree, so the "root hash" line carries the chain head's hash.
pub fn checkpoint_body(origin: &str, size: i64, head_hash: &[u8]) -> String {
    format!(
        "{origin}\n{size}\n{}\n",
        base64::engine::general_purpose::STANDARD.encode(head_hash)
    )
}

/// A signed note: the body, a blank line, and one signature line.
pub fn signed_note(body: &str, verifier: &NoteVerifier, signature: &[u8]) -> String {
    let mut sig = verifier.key_id().to_vec();
    sig.extend_from_slice(signature);
    format!(
        "{body}\n\u{2014} {} {}\n",
        verifier.name,
        base64::engine::general_purpose::STANDARD.encode(sig)
    )
}

/// A checkpoint whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Entries covered.
    pub size: i64,
    /// The head hash at that size.
    pub head_hash: Vec<u8>,
}

/// What verification found wrong, in words an auditor can act on.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The chain is broken at this entry.
    #[error("audit entry {seq}: {reason}")]
    Entry {
        /// First bad sequence number.
        seq: i64,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint is forged, malformed or contradicts the chain.
    #[error("checkpoint of size {size}: {reason}")]
    Checkpoint {
        /// Its size line (0 if unreadable).
        size: i64,
        /// What is wrong.
        reason: String,
    },
    /// The verifier key is unusable.
    #[error("{0}")]
    Key(String),
    /// An export file line is not what `notary audit export` writes.
    #[error("line {line}: {reason}")]
    Export {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Verifies a signed checkpoint note against `verifier`.
pub fn open_checkpoint(note: &str, verifier: &NoteVerifier) -> Result<Checkpoint, AuditError> {
    let bad = |size, reason: &str| AuditError::Checkpoint {
        size,
        reason: reason.to_owned(),
    };
    let (body, signatures) = note
        .split_once("\n\n")
        .ok_or_else(|| bad(0, "no signature block"))?;
    let body = format!("{body}\n");
    let mut lines = body.lines();
    let origin = lines.next().unwrap_or_default();
    let size: i64 = lines
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| bad(0, "no size line"))?;
    let head_hash = lines
        .next()
        .and_then(|l| base64::engine::general_purpose::STANDARD.decode(l).ok())
        .ok_or_else(|| bad(size, "no hash line"))?;
    if origin != verifier.name {
        return Err(bad(size, "its origin is not this log's"));
    }
    let key_id = verifier.key_id();
    let signed = signatures.lines().any(|line| {
        let Some(rest) = line.strip_prefix("\u{2014} ") else {
            return false;
        };
        let Some((name, sig)) = rest.split_once(' ') else {
            return false;
        };
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(sig) else {
            return false;
        };
        name == verifier.name
            && sig.len() > 4
            && sig[..4] == key_id
            && verifier.verifies(body.as_bytes(), &sig[4..])
    });
    if !signed {
        return Err(bad(size, "no valid signature by the audit key"));
    }
    Ok(Checkpoint { size, head_hash })
}

/// One entry as verification needs it.
#[derive(Debug, Clone)]
pub struct EntryView<'a> {
    /// Sequence number.
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    /// Event name.
    pub event: &'a str,
    /// Subject.
    pub subject: Option<&'a str>,
    /// Details as stored.
    pub details: &'a str,
    /// Stored previous hash.
    pub prev_hash: &'a [u8],
    /// Stored hash.
    pub hash: &'a [u8],
}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// First sequence number checked.
    pub first: i64,
    /// Last sequence number checked.
    pub last: i64,
    /// Checkpoints whose signature and head matched.
    pub checkpoints: usize,
}

/// Verifies the chain and every checkpoint. `entries` must be in the order
/// read; a full chain starts at seq 1 from `GENESIS`, an export made
/// `--since` starts wherever it starts (its first `prev_hash` is taken on
/// trust, which the report's `first` makes visible).
pub fn verify(
    entries: &[EntryView<'_>],
    checkpoints: &[String],
    verifier: &NoteVerifier,
    whole_chain: bool,
) -> Result<ChainReport, AuditError> {
    let first = entries.first().map_or(0, |e| e.seq);
    if whole_chain && !entries.is_empty() && first != 1 {
        return Err(AuditError::Entry {
            seq: first,
            reason: "the chain does not start at entry 1: earlier entries were removed".into(),
        });
    }
    let mut prev: Option<(i64, Vec<u8>)> = None;
    let mut hashes = std::collections::HashMap::new();
    for e in entries {
        let fail = |reason: String| AuditError::Entry { seq: e.seq, reason };
        match &prev {
            None if e.seq == 1 && e.prev_hash != GENESIS => {
                return Err(fail(
                    "the first entry does not start from the genesis hash".into(),
                ));
            }
            None => {}
            Some((seq, _)) if Some(e.seq) != seq.checked_add(1) => {
                return Err(fail(match seq.checked_add(1) {
                    Some(next) => {
                        format!("expected entry {next} next: entries are missing or reordered")
                    }
                    None => "an entry follows the largest possible sequence number".into(),
                }));
            }
            Some((_, hash)) if e.prev_hash != hash.as_slice() => {
                return Err(fail(
                    "its prev_hash is not the previous entry's hash".into(),
                ));
            }
            Some(_) => {}
        }
        let expected = chain_hash(e.prev_hash, e.seq, e.at, e.event, e.subject, e.details);
        if e.hash != expected {
            return Err(fail("its content does not match its hash (changed)".into()));
        }
        hashes.insert(e.seq, e.hash.to_vec());
        prev = Some((e.seq, e.hash.to_vec()));
    }
    let last = prev.as_ref().map_or(0, |(seq, _)| *seq);
    let mut checked = 0;
    for note in checkpoints {
        let cp = open_checkpoint(note, verifier)?;
        if cp.size > last {
            return Err(AuditError::Checkpoint {
                size: cp.size,
                reason: format!(
                    "it covers {} entries but the chain ends at {last}: entries were removed",
                    cp.size
                ),
            });
        }
        match hashes.get(&cp.size) {
            Some(hash) if *hash == cp.head_hash => checked += 1,
            Some(_) => {
                return Err(AuditError::Checkpoint {
                    size: cp.size,
                    reason: "the chain's hash at this size differs from the signed one".into(),
                });
            }
            // Before the start of a partial export: nothing to compare.
            None if !whole_chain && cp.size < first => {}
            None => {
                return Err(AuditError::Checkpoint {
                    size: cp.size,
                    reason: "the chain has no entry at this size".into(),
                });
            }
        }
    }
    Ok(ChainReport {
        first,
        last,
        checkpoints: checked,
    })
}
