//! The signing keys' lifecycle (generate, rotate, retire) for both
//! purposes, and the key rings the server signs and publishes with: the
//! Notary keys (access tokens, the JWKS) and the credential keys
//! (credentials and status lists).

use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};

use super::{InternalError, Notary, now, random};
use crate::audit::AuditEvent;
use crate::hsm::{Custody, Hsm, HsmError, KeyRole, SigningKeyInfo};
use crate::jose::{Algorithm, PublicKey};
use crate::store::{KeyPurpose, KeyState, SigningKeyRecord, Store};

pub use super::custody::{CustodyReport, KeyEvidence};

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

pub(super) fn internal(e: impl Into<InternalError>) -> KeyError {
    KeyError::Internal(e.into())
}

/// The Notary keys in use: the one that signs tokens and those the JWKS
/// publishes. Never holds a credential key.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    /// Signs new tokens; `None` only before the first key exists.
    pub active: Option<Arc<SigningKeyInfo>>,
    /// Active and retiring keys, with the time until which a retiring key
    /// may still have live tokens.
    pub published: Vec<(Arc<SigningKeyInfo>, Option<i64>)>,
}

impl KeyRing {
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

/// A credential key as the server uses it: the key on the token (sign with
/// [`Hsm::sign_credential`]) and the certificate chain a CA issued for it,
/// if one is attached (`x5c`: base64 DER, leaf first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialKey {
    /// Label, public key and kid, as read from the token.
    pub info: SigningKeyInfo,
    /// The certificate chain, leaf first, as JWS `x5c` wants it.
    pub x5c: Option<Vec<String>>,
}

/// The credential keys in use.
#[derive(Debug, Clone, Default)]
struct CredentialRing {
    /// Signs new credentials.
    active: Option<Arc<CredentialKey>>,
    /// Active and retiring keys: credentials they signed may still be
    /// verified, so they stay published until `keys retire`.
    published: Vec<Arc<CredentialKey>>,
}

/// One recorded key's facts the rings depend on; a change in any of them (a
/// rotation, a retirement, an attached certificate) rebuilds the rings.
type KeyVersion = (String, KeyPurpose, KeyState, bool);

fn versions(records: &[SigningKeyRecord]) -> Vec<KeyVersion> {
    records
        .iter()
        .map(|r| (r.kid.clone(), r.purpose, r.state, r.x5c.is_some()))
        .collect()
}

/// Both rings, built together from one read of the key table.
#[derive(Debug, Default)]
pub struct LoadedKeys {
    tokens: Arc<KeyRing>,
    credentials: CredentialRing,
    /// The records these rings were built from, to notice changes.
    version: Vec<KeyVersion>,
}

impl LoadedKeys {
    /// Builds the rings from the database and the token. Every active or
    /// retiring key, of either purpose, must be on the token with the
    /// recorded public key and pass the custody rule.
    pub async fn load(hsm: &Hsm, store: &Store) -> Result<Self, KeyError> {
        let records = store.list_signing_keys().await.map_err(internal)?;
        Self::build(hsm, &records).await
    }

    async fn build(hsm: &Hsm, records: &[SigningKeyRecord]) -> Result<Self, KeyError> {
        let mut tokens = KeyRing::default();
        let mut credentials = CredentialRing::default();
        for record in records
            .iter()
            .filter(|r| r.state == KeyState::Active || r.state == KeyState::Retiring)
        {
            let info = checked_key(hsm, record).await?;
            let active = record.state == KeyState::Active;
            match record.purpose {
                KeyPurpose::Token => {
                    let info = Arc::new(info);
                    if active {
                        tokens.active = Some(Arc::clone(&info));
                    }
                    tokens.published.push((info, record.verify_until));
                }
                KeyPurpose::Credential => {
                    let key = Arc::new(CredentialKey {
                        info,
                        x5c: record.x5c.clone(),
                    });
                    if active {
                        credentials.active = Some(Arc::clone(&key));
                    }
                    credentials.published.push(key);
                }
            }
        }
        Ok(LoadedKeys {
            tokens: Arc::new(tokens),
            credentials,
            version: versions(records),
        })
    }
}

/// The custody role a key of this purpose is reported and checked as.
pub(super) fn role_of(purpose: KeyPurpose) -> KeyRole {
    match purpose {
        KeyPurpose::Token => KeyRole::Signing,
        KeyPurpose::Credential => KeyRole::Credential,
    }
}

/// The facts a `key.adopted` entry records: label, CKA_ID, how the token
/// says the key was made, type, every custody attribute as read, and the
/// public key's SHA-256 for a key pair.
fn adoption_details(custody: &Custody, public: Option<&PublicKey>) -> serde_json::Value {
    let attributes: serde_json::Map<String, serde_json::Value> = custody
        .attributes
        .iter()
        .map(|a| {
            (
                a.name.to_owned(),
                serde_json::to_value(a.value).unwrap_or_default(),
            )
        })
        .collect();
    serde_json::json!({
        "label": custody.label,
        "id": custody.id,
        "key": custody.key,
        "key_gen_mechanism": custody.key_gen_mechanism,
        "attributes": attributes,
        "public_key_sha256": public.map(|p| hex(&Sha256::digest(p.raw_bytes()))),
    })
}

/// What keys of `purpose` sign, as messages and `check` name it.
pub fn purpose_name(purpose: KeyPurpose) -> &'static str {
    match purpose {
        KeyPurpose::Token => "access tokens",
        KeyPurpose::Credential => "credentials",
    }
}

/// Reads a recorded key from the token, refusing it unless it passes the
/// custody rule and has the recorded kid.
async fn checked_key(hsm: &Hsm, record: &SigningKeyRecord) -> Result<SigningKeyInfo, KeyError> {
    let custody = hsm
        .custody(role_of(record.purpose), Some(&record.label))
        .await
        .map_err(internal)?;
    if let Some(violation) = custody.violation() {
        return Err(KeyError::Refused(format!(
            "refusing to use the HSM keys: {violation}"
        )));
    }
    let info = hsm.signing_key(&record.label).await.map_err(internal)?;
    if let Err(refused) = hsm
        .capabilities()
        .signing(purpose_name(record.purpose), info.algorithm())
    {
        return Err(KeyError::Refused(format!(
            "key {:?}: {refused}",
            record.label
        )));
    }
    if info.kid != record.kid {
        return Err(KeyError::Refused(format!(
            "key {:?} on the token has kid {} but the database records {}",
            record.label, info.kid, record.kid
        )));
    }
    Ok(info)
}

/// Shared, swappable key rings.
pub type SharedKeyRing = Arc<RwLock<Arc<LoadedKeys>>>;

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The label prefix of keys of `purpose` (`notary-signing-N`, `notary-credential-N`).
fn label_prefix(purpose: KeyPurpose) -> &'static str {
    match purpose {
        KeyPurpose::Token => "notary-signing",
        KeyPurpose::Credential => "notary-credential",
    }
}

impl Notary {
    fn loaded_keys(&self) -> Arc<LoadedKeys> {
        Arc::clone(
            &self
                .keys
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// The key that signs new tokens (`None` before the first rotation).
    pub fn active_key(&self) -> Option<Arc<SigningKeyInfo>> {
        self.loaded_keys().tokens.active.clone()
    }

    /// The current Notary key ring (access tokens only).
    pub fn key_ring(&self) -> Arc<KeyRing> {
        Arc::clone(&self.loaded_keys().tokens)
    }

    /// The key that signs new credentials and status lists (`None` on a
    /// set-up made before credential keys existed, until `notary keys
    /// rotate --purpose credential`).
    pub fn active_credential_key(&self) -> Option<Arc<CredentialKey>> {
        self.loaded_keys().credentials.active.clone()
    }

    /// Keys whose credentials may still be verified: active + retiring
    /// (retiring credential keys stay published until `keys retire`).
    pub fn published_credential_keys(&self) -> Vec<Arc<CredentialKey>> {
        self.loaded_keys().credentials.published.clone()
    }

    /// Reloads the rings if the recorded keys changed (another instance or
    /// the CLI rotated, retired, or attached a certificate). Returns
    /// whether they changed.
    pub async fn refresh_keys(&self) -> Result<bool, KeyError> {
        let records = self.store.list_signing_keys().await.map_err(internal)?;
        if versions(&records) == self.loaded_keys().version {
            return Ok(false);
        }
        let loaded = LoadedKeys::build(&self.hsm, &records).await?;
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
        Ok(true)
    }

    /// Generates a key for `purpose` in the HSM and records it as pending.
    pub async fn generate_key(
        &self,
        purpose: KeyPurpose,
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
                let prefix = label_prefix(purpose);
                let mut n = existing.iter().filter(|r| r.purpose == purpose).count() + 1;
                while self.label_taken(&existing, &format!("{prefix}-{n}")).await {
                    n += 1;
                }
                format!("{prefix}-{n}")
            }
        };
        let record = generate_and_record(
            &self.hsm,
            &self.store,
            purpose,
            alg,
            &label,
            KeyState::Pending,
        )
        .await?;
        Ok(record)
    }

    /// Adopts a key pair of `purpose` that was made on the token outside
    /// notary (a key ceremony with the vendor's tool): it must pass the
    /// custody rule (made on the token, never extractable, always
    /// sensitive, sign-only) and be one the token can sign with. It is
    /// recorded as pending, with a `key.adopted` audit entry carrying its
    /// attributes and public key hash; `rotate_key` makes it active.
    pub async fn adopt_key(
        &self,
        purpose: KeyPurpose,
        label: &str,
    ) -> Result<SigningKeyRecord, KeyError> {
        let existing = self.store.list_signing_keys().await.map_err(internal)?;
        if let Some(record) = existing.iter().find(|r| r.label == label) {
            return Err(KeyError::Refused(format!(
                "the key labelled {label:?} is recorded already (kid {}, {})",
                record.kid,
                record.state.as_str()
            )));
        }
        let role = role_of(purpose);
        let custody = match self.hsm.custody(role, Some(label)).await {
            Ok(custody) => custody,
            Err(HsmError::KeyNotFound(why)) => return Err(KeyError::Refused(why)),
            Err(e) => return Err(internal(e)),
        };
        if let Some(violation) = custody.violation() {
            return Err(KeyError::Refused(format!("refusing to adopt {violation}")));
        }
        let info = self.hsm.signing_key(label).await.map_err(internal)?;
        if let Err(refused) = self
            .hsm
            .capabilities()
            .signing(purpose_name(purpose), info.algorithm())
        {
            return Err(KeyError::Refused(refused));
        }
        // One key, one purpose: the audit key (a key pair of the same class
        // and type) never signs tokens or credentials too.
        if info.public_key == self.hsm.audit_public_key().await.map_err(internal)? {
            return Err(KeyError::Refused(format!(
                "the key labelled {label:?} is the audit key; a key serves one role"
            )));
        }
        if existing.iter().any(|r| r.kid == info.kid) {
            return Err(KeyError::Refused(format!(
                "the key labelled {label:?} is a recorded key under another label (kid {})",
                info.kid
            )));
        }
        let record = SigningKeyRecord {
            kid: info.kid.clone(),
            label: label.to_owned(),
            purpose,
            alg: info.algorithm().as_str().to_owned(),
            public_jwk: info.public_key.to_jwk().to_string(),
            state: KeyState::Pending,
            created_at: now(),
            activated_at: None,
            verify_until: None,
            retired_at: None,
            x5c: None,
        };
        let mut details = adoption_details(&custody, Some(&info.public_key));
        details["purpose"] = purpose.as_str().into();
        details["alg"] = info.algorithm().as_str().into();
        let event = AuditEvent::new("key.adopted", &record.kid, details);
        self.store
            .insert_signing_key(&record, event)
            .await
            .map_err(internal)?;
        Ok(record)
    }

    /// Records the adoption of a fixed key (the keyed-hash, audit, claims
    /// or claims MAC key), which the configuration names: checks its
    /// custody and writes an audit entry `event` (`key.adopted`, or
    /// `key.generated` for a key init just made) with its attributes (and
    /// the audit key's public key hash). Returns its custody.
    pub async fn adopt_fixed_key(
        &self,
        role: KeyRole,
        event: &'static str,
    ) -> Result<Custody, KeyError> {
        let custody = self.hsm.custody(role, None).await.map_err(internal)?;
        if let Some(violation) = custody.violation() {
            return Err(KeyError::Refused(format!("refusing to adopt {violation}")));
        }
        let public = match role {
            KeyRole::Audit => Some(self.hsm.audit_public_key().await.map_err(internal)?),
            _ => None,
        };
        let mut details = adoption_details(&custody, public.as_ref());
        details["role"] = serde_json::to_value(role).unwrap_or_default();
        let event = AuditEvent::new(event, &custody.label, details);
        self.store.audit(event, now()).await.map_err(internal)?;
        Ok(custody)
    }

    /// Whether a label is used by a recorded key or by any key on the token
    /// (a token may hold keys the database does not know, e.g. after a
    /// restore or a ceremony).
    async fn label_taken(&self, records: &[SigningKeyRecord], label: &str) -> bool {
        records.iter().any(|r| r.label == label) || self.hsm.signing_key(label).await.is_ok()
    }

    /// Makes a new key of `purpose` active (a new one, or the pending key
    /// `pending_kid`); only the active key of the same purpose steps down.
    /// A Notary key keeps verifying (stays in the JWKS) until every token it
    /// signed has expired; a credential key stays published, with no end,
    /// until `keys retire`: credentials live long.
    pub async fn rotate_key(
        &self,
        purpose: KeyPurpose,
        alg: Algorithm,
        label: Option<String>,
        pending_kid: Option<&str>,
    ) -> Result<(SigningKeyRecord, Option<String>), KeyError> {
        let record = match pending_kid {
            Some(kid) => {
                let record = self
                    .store
                    .list_signing_keys()
                    .await
                    .map_err(internal)?
                    .into_iter()
                    .find(|r| r.kid == kid && r.state == KeyState::Pending)
                    .ok_or_else(|| KeyError::Refused(format!("no pending key with kid {kid}")))?;
                if record.purpose != purpose {
                    return Err(KeyError::Refused(format!(
                        "pending key {kid} is a {0} key: rotate it with --purpose {0}",
                        record.purpose.as_str()
                    )));
                }
                record
            }
            None => self.generate_key(purpose, alg, label).await?,
        };
        let now = now();
        let verify_until = match purpose {
            // Servers keep signing with the old key until their next
            // refresh; tokens signed by then expire within one token lifetime.
            KeyPurpose::Token => {
                let lag = self.policy.key_refresh_secs + self.policy.access_token_ttl + 1;
                Some(now + i64::try_from(lag).unwrap_or(i64::MAX / 2))
            }
            KeyPurpose::Credential => None,
        };
        let previous = self
            .store
            .activate_signing_key(&record.kid, now, verify_until)
            .await
            .map_err(internal)?;
        Ok((record, previous))
    }

    /// Retires a key. Refused for the active key; for a retiring Notary key
    /// while tokens it signed may still be live, and for a retiring
    /// credential key at all (the credentials it signed stop verifying),
    /// unless `force`.
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
            KeyState::Retiring if force => {}
            KeyState::Retiring => match record.purpose {
                KeyPurpose::Credential => {
                    return Err(KeyError::Refused(format!(
                        "credentials signed by {kid} will no longer verify once it is retired \
                         (its key is no longer published); pass --force to retire it anyway"
                    )));
                }
                KeyPurpose::Token => {
                    let until = record.verify_until.unwrap_or(i64::MAX);
                    if now() < until {
                        return Err(KeyError::Refused(format!(
                            "tokens signed by {kid} may be live until {}; retire after that, or pass --force",
                            super::rfc3339(until)
                        )));
                    }
                }
            },
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

    /// All recorded signing keys, of both purposes.
    pub async fn list_keys(&self) -> Result<Vec<SigningKeyRecord>, KeyError> {
        self.store.list_signing_keys().await.map_err(internal)
    }
}

/// Generates a key pair in the HSM and records it in `state` (pending, or
/// active for a set-up's first key), with its audit entry.
async fn generate_and_record(
    hsm: &Hsm,
    store: &Store,
    purpose: KeyPurpose,
    alg: Algorithm,
    label: &str,
    state: KeyState,
) -> Result<SigningKeyRecord, KeyError> {
    let mut id = vec![0u8; 8];
    random::fill(&mut id).map_err(internal)?;
    let info = hsm
        .generate_signing_key(alg, label, id)
        .await
        .map_err(internal)?;
    let now = now();
    let active = state == KeyState::Active;
    let record = SigningKeyRecord {
        kid: info.kid.clone(),
        label: label.to_owned(),
        purpose,
        alg: alg.as_str().to_owned(),
        public_jwk: info.public_key.to_jwk().to_string(),
        state,
        created_at: now,
        activated_at: active.then_some(now),
        verify_until: None,
        retired_at: None,
        x5c: None,
    };
    let mut details = serde_json::json!({
        "label": label, "purpose": purpose.as_str(), "alg": alg.as_str(),
        "public_key_sha256": hex(&Sha256::digest(info.public_key.raw_bytes())),
    });
    if active {
        details["activated"] = serde_json::Value::Bool(true);
    }
    let event = AuditEvent::new("key.generated", &record.kid, details);
    store
        .insert_signing_key(&record, event)
        .await
        .map_err(internal)?;
    Ok(record)
}

/// Generates the first key of `purpose` of a new set-up and makes it
/// active. Refused when a key of that purpose is recorded already.
pub async fn create_first_key(
    hsm: &Hsm,
    store: &Store,
    purpose: KeyPurpose,
    alg: Algorithm,
    label: &str,
) -> Result<SigningKeyRecord, KeyError> {
    if store
        .list_signing_keys()
        .await
        .map_err(internal)?
        .iter()
        .any(|r| r.purpose == purpose)
    {
        return Err(KeyError::Refused(format!(
            "{} keys exist already",
            purpose.as_str()
        )));
    }
    generate_and_record(hsm, store, purpose, alg, label, KeyState::Active).await
}
