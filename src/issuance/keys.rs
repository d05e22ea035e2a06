//! The Notary keys' lifecycle (generate, rotate, retire), the key ring the
//! server signs and publishes with, and the custody report.

use std::sync::{Arc, RwLock};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{InternalError, Notary, now, random};
use crate::audit::AuditEvent;
use crate::hsm::{Custody, Hsm, KeyRole, SigningKeyInfo, TokenIdentity};
use crate::jose::Algorithm;
use crate::store::{KeyState, SigningKeyRecord, Store};

/// Why a key operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The operation is not allowed now; the message says why.
    #[error("{0}")]
    Refused(String),
    /// Internal failure.
    #[error(transparent)]
    Internal(#[from] InternalError),
}

fn internal(e: impl Into<InternalError>) -> KeyError {
    KeyError::Internal(e.into())
}

/// The keys in use: the one that signs and those the JWKS publishes.
#[derive(Debug, Clone)]
pub struct KeyRing {
    /// Signs new tokens; `None` only before the first key exists.
    pub active: Option<Arc<SigningKeyInfo>>,
    /// Active and retiring keys, with the time until which a retiring key
    /// may still have live tokens.
    pub published: Vec<(Arc<SigningKeyInfo>, Option<i64>)>,
    /// The records this ring was built from, to notice changes.
    version: Vec<(String, KeyState)>,
}

impl KeyRing {
    /// Builds the ring from the database and the token. Every active or
    /// retiring key must be on the token with the recorded public key and
    /// pass the custody rule.
    pub async fn load(hsm: &Hsm, store: &Store) -> Result<Self, KeyError> {
        let records = store.list_signing_keys().await.map_err(internal)?;
        Self::build(hsm, &records).await
    }

    async fn build(hsm: &Hsm, records: &[SigningKeyRecord]) -> Result<Self, KeyError> {
        let mut active = None;
        let mut published = Vec::new();
        for record in records
            .iter()
            .filter(|r| r.state == KeyState::Active || r.state == KeyState::Retiring)
        {
            let custody = hsm
                .custody(KeyRole::Signing, Some(&record.label))
                .await
                .map_err(internal)?;
            if let Some(violation) = custody.violation() {
                return Err(KeyError::Refused(format!(
                    "refusing to use the HSM keys: {violation}"
                )));
            }
            let info = hsm.signing_key(&record.label).await.map_err(internal)?;
            if info.kid != record.kid {
                return Err(KeyError::Refused(format!(
                    "key {:?} on the token has kid {} but the database records {}",
                    record.label, info.kid, record.kid
                )));
            }
            let info = Arc::new(info);
            if record.state == KeyState::Active {
                active = Some(Arc::clone(&info));
            }
            published.push((info, record.verify_until));
        }
        Ok(KeyRing {
            active,
            published,
            version: records.iter().map(|r| (r.kid.clone(), r.state)).collect(),
        })
    }

    /// The keys that may have signed a live token now: the active key, and
    /// retiring keys until their `verify_until` passes (they drop out of the
    /// JWKS by themselves; `keys retire` only records it).
    pub fn verifying(&self, now: i64) -> impl Iterator<Item = &Arc<SigningKeyInfo>> {
        self.published
            .iter()
            .filter(move |(_, until)| until.is_none_or(|until| now < until))
            .map(|(key, _)| key)
    }

    /// The JWKS document.
    pub fn jwks(&self, now: i64) -> serde_json::Value {
        let keys: Vec<_> = self.verifying(now).map(|k| k.public_key.to_jwk()).collect();
        serde_json::json!({ "keys": keys })
    }

    /// `alg` values of the keys that may sign or have signed live tokens.
    pub fn algorithms(&self, now: i64) -> Vec<&'static str> {
        let mut algs: Vec<&'static str> = self
            .verifying(now)
            .map(|k| k.algorithm().as_str())
            .collect();
        algs.sort_unstable();
        algs.dedup();
        algs
    }
}

/// Shared, swappable key ring.
pub type SharedKeyRing = Arc<RwLock<Arc<KeyRing>>>;

/// One key in a custody report.
#[derive(Debug, Clone, Serialize)]
pub struct KeyEvidence {
    /// What the key is for.
    pub role: KeyRole,
    /// JWK thumbprint (signing keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `EdDSA`, `ES256`, `HMAC-SHA256` or `AES-256-GCM`.
    pub algorithm: String,
    /// Lifecycle state (signing keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<KeyState>,
    /// SHA-256 of the raw public key, hex (asymmetric keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key_sha256: Option<String>,
    /// Attributes as read from the token.
    pub custody: Custody,
    /// Signatures made with the key according to the audit log (tokens for
    /// signing keys, checkpoints for the audit key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signatures: Option<i64>,
}

/// The evidence an auditor needs about key custody.
#[derive(Debug, Clone, Serialize)]
pub struct CustodyReport {
    /// RFC 3339.
    pub generated_at: String,
    /// The token the keys are on.
    pub token: TokenIdentity,
    /// One entry per key.
    pub keys: Vec<KeyEvidence>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Notary {
    /// The key that signs new tokens (`None` before the first rotation).
    pub fn active_key(&self) -> Option<Arc<SigningKeyInfo>> {
        let ring = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ring.active.clone()
    }

    /// The current key ring.
    pub fn key_ring(&self) -> Arc<KeyRing> {
        Arc::clone(
            &self
                .keys
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Reloads the ring if the recorded keys changed (another instance or
    /// the CLI rotated). Returns whether it changed.
    pub async fn refresh_keys(&self) -> Result<bool, KeyError> {
        let records = self.store.list_signing_keys().await.map_err(internal)?;
        let version: Vec<(String, KeyState)> =
            records.iter().map(|r| (r.kid.clone(), r.state)).collect();
        if version == self.key_ring().version {
            return Ok(false);
        }
        let ring = KeyRing::build(&self.hsm, &records).await?;
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(ring);
        Ok(true)
    }

    /// Generates a key in the HSM and records it as pending.
    pub async fn generate_key(
        &self,
        alg: Algorithm,
        label: Option<String>,
    ) -> Result<SigningKeyRecord, KeyError> {
        let existing = self.store.list_signing_keys().await.map_err(internal)?;
        let label = match label {
            Some(l) if self.label_taken(&existing, &l).await => {
                return Err(KeyError::Refused(format!("a key labelled {l:?} exists")));
            }
            Some(l) => l,
            None => {
                let mut n = existing.len() + 1;
                while self
                    .label_taken(&existing, &format!("notary-signing-{n}"))
                    .await
                {
                    n += 1;
                }
                format!("notary-signing-{n}")
            }
        };
        let mut id = vec![0u8; 8];
        random::fill(&mut id).map_err(internal)?;
        let info = self
            .hsm
            .generate_signing_key(alg, &label, id)
            .await
            .map_err(internal)?;
        let record = SigningKeyRecord {
            kid: info.kid.clone(),
            label: label.clone(),
            alg: alg.as_str().to_owned(),
            public_jwk: info.public_key.to_jwk().to_string(),
            state: KeyState::Pending,
            created_at: now(),
            activated_at: None,
            verify_until: None,
            retired_at: None,
        };
        let event = AuditEvent::new(
            "key.generated",
            &record.kid,
            serde_json::json!({ "label": label, "alg": alg.as_str(),
                                "public_key_sha256": hex(&Sha256::digest(info.public_key.raw_bytes())) }),
        );
        self.store
            .insert_signing_key(&record, event)
            .await
            .map_err(internal)?;
        Ok(record)
    }

    /// Whether a label is used by a recorded key or by any key on the token
    /// (a token may hold keys the database does not know, e.g. after a
    /// restore or a ceremony).
    async fn label_taken(&self, records: &[SigningKeyRecord], label: &str) -> bool {
        records.iter().any(|r| r.label == label) || self.hsm.signing_key(label).await.is_ok()
    }

    /// Makes a new key active. The previous one keeps verifying (stays in
    /// the JWKS) until every token it signed has expired.
    pub async fn rotate_key(
        &self,
        alg: Algorithm,
        label: Option<String>,
        pending_kid: Option<&str>,
    ) -> Result<(SigningKeyRecord, Option<String>), KeyError> {
        let record = match pending_kid {
            Some(kid) => self
                .store
                .list_signing_keys()
                .await
                .map_err(internal)?
                .into_iter()
                .find(|r| r.kid == kid && r.state == KeyState::Pending)
                .ok_or_else(|| KeyError::Refused(format!("no pending key with kid {kid}")))?,
            None => self.generate_key(alg, label).await?,
        };
        let now = now();
        // Servers keep signing with the old key until their next refresh;
        // tokens signed by then expire within one token lifetime.
        let lag = self.policy.key_refresh_secs + self.policy.access_token_ttl + 1;
        let verify_until = now + i64::try_from(lag).unwrap_or(i64::MAX / 2);
        let previous = self
            .store
            .activate_signing_key(&record.kid, now, verify_until)
            .await
            .map_err(internal)?;
        Ok((record, previous))
    }

    /// Retires a key. Refused for the active key, and for a retiring key
    /// while tokens it signed may still be live, unless `force`.
    pub async fn retire_key(&self, kid: &str, force: bool) -> Result<(), KeyError> {
        let records = self.store.list_signing_keys().await.map_err(internal)?;
        let record = records
            .iter()
            .find(|r| r.kid == kid)
            .ok_or_else(|| KeyError::Refused(format!("no key with kid {kid}")))?;
        match record.state {
            KeyState::Active => {
                return Err(KeyError::Refused(
                    "the active key cannot be retired: rotate first".to_owned(),
                ));
            }
            KeyState::Retired => {
                return Err(KeyError::Refused(format!("key {kid} is already retired")));
            }
            KeyState::Retiring => {
                let until = record.verify_until.unwrap_or(i64::MAX);
                if now() < until && !force {
                    return Err(KeyError::Refused(format!(
                        "tokens signed by {kid} may be live until {}; retire after that, or pass --force",
                        super::rfc3339(until)
                    )));
                }
            }
            KeyState::Pending => {}
        }
        if !self
            .store
            .retire_signing_key(kid, now(), force)
            .await
            .map_err(internal)?
        {
            return Err(KeyError::Refused(format!(
                "key {kid} changed state meanwhile"
            )));
        }
        Ok(())
    }

    /// All recorded signing keys.
    pub async fn list_keys(&self) -> Result<Vec<SigningKeyRecord>, KeyError> {
        self.store.list_signing_keys().await.map_err(internal)
    }

    /// Reads the custody evidence of every key from the token.
    pub async fn custody_report(&self) -> Result<CustodyReport, KeyError> {
        let records = self.store.list_signing_keys().await.map_err(internal)?;
        let counts = self.store.signature_counts().await.map_err(internal)?;
        let checkpoints = self.store.list_checkpoints().await.map_err(internal)?.len();
        let mut keys = Vec::new();
        for record in &records {
            let custody = self
                .hsm
                .custody(KeyRole::Signing, Some(&record.label))
                .await
                .map_err(internal)?;
            let public = self
                .hsm
                .signing_key(&record.label)
                .await
                .map_err(internal)?;
            keys.push(KeyEvidence {
                role: KeyRole::Signing,
                kid: Some(record.kid.clone()),
                algorithm: record.alg.clone(),
                state: Some(record.state),
                public_key_sha256: Some(hex(&Sha256::digest(public.public_key.raw_bytes()))),
                custody,
                signatures: Some(
                    counts
                        .iter()
                        .find(|(kid, _)| *kid == record.kid)
                        .map_or(0, |(_, n)| *n),
                ),
            });
        }
        let audit_public = self.hsm.audit_public_key().await.map_err(internal)?;
        keys.push(KeyEvidence {
            role: KeyRole::Audit,
            kid: None,
            algorithm: "EdDSA".to_owned(),
            state: None,
            public_key_sha256: Some(hex(&Sha256::digest(audit_public.raw_bytes()))),
            custody: self
                .hsm
                .custody(KeyRole::Audit, None)
                .await
                .map_err(internal)?,
            signatures: Some(i64::try_from(checkpoints).unwrap_or(i64::MAX)),
        });
        keys.push(KeyEvidence {
            role: KeyRole::Hashing,
            kid: None,
            algorithm: "HMAC-SHA256".to_owned(),
            state: None,
            public_key_sha256: None,
            custody: self
                .hsm
                .custody(KeyRole::Hashing, None)
                .await
                .map_err(internal)?,
            signatures: None,
        });
        keys.push(KeyEvidence {
            role: KeyRole::Claims,
            kid: None,
            algorithm: "AES-256-GCM".to_owned(),
            state: None,
            public_key_sha256: None,
            custody: self
                .hsm
                .custody(KeyRole::Claims, None)
                .await
                .map_err(internal)?,
            signatures: None,
        });
        Ok(CustodyReport {
            generated_at: super::rfc3339(now()),
            token: self.hsm.token().clone(),
            keys,
        })
    }
}

/// Generates the first Notary key of a new set-up and makes it active.
/// Refused when any key is recorded already.
pub async fn create_first_key(
    hsm: &Hsm,
    store: &Store,
    alg: Algorithm,
    label: &str,
) -> Result<SigningKeyRecord, KeyError> {
    if !store
        .list_signing_keys()
        .await
        .map_err(internal)?
        .is_empty()
    {
        return Err(KeyError::Refused("signing keys exist already".to_owned()));
    }
    let mut id = vec![0u8; 8];
    random::fill(&mut id).map_err(internal)?;
    let info = hsm
        .generate_signing_key(alg, label, id)
        .await
        .map_err(internal)?;
    let now = now();
    let record = SigningKeyRecord {
        kid: info.kid.clone(),
        label: label.to_owned(),
        alg: alg.as_str().to_owned(),
        public_jwk: info.public_key.to_jwk().to_string(),
        state: KeyState::Active,
        created_at: now,
        activated_at: Some(now),
        verify_until: None,
        retired_at: None,
    };
    let event = AuditEvent::new(
        "key.generated",
        &record.kid,
        serde_json::json!({ "label": label, "alg": alg.as_str(), "activated": true,
                            "public_key_sha256": hex(&Sha256::digest(info.public_key.raw_bytes())) }),
    );
    store
        .insert_signing_key(&record, event)
        .await
        .map_err(internal)?;
    Ok(record)
}
