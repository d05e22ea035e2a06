//! Credential status: places in status lists for new credentials, status
//! changes by issuers, and the lists signed in the HSM by the credential
//! key and served to relying parties.
//!
//! A place is a list and a counter value; the list's index permutation,
//! keyed by an HMAC of the list id made in the HSM (the same on every
//! instance, never stored), turns the counter into the index. Indexes are
//! so never reused and say nothing about the order of issue.
//!
//! Lists are signed by whichever instance's signer finds them due: their
//! version (bumped by every status change) is newer than the signed one,
//! or the signed one nears its expiry. The signer runs once per
//! `status.sign_interval_secs`, so a storm of changes costs one signature
//! per list and interval. A new list is signed by the request that opens
//! it, before its credential leaves, so credentials never point at a list
//! that is not served.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::profiles::Format;
use super::{InternalError, Notary, now};
use crate::formats::status_list::bitstring_status_list::{self, Purpose};
use crate::formats::status_list::{IndexPermutation, StatusBits, token_status_list};
use crate::formats::{self, IssuerKey};
use crate::store::{
    AuditFilter, AuditRecord, CredentialRecord, CredentialStatus, SignedStatusList, StatusChange,
    StatusListContent, StatusListKind, StatusSlot,
};

const PERMUTATION_DOMAIN: &[u8] = b"notary/status-index/v1\0";

/// Per-process state: the lists' permutations, the lists as last read for
/// serving, and places reserved ahead of need.
#[derive(Default)]
pub struct StatusState {
    permutations: Mutex<HashMap<String, Arc<IndexPermutation>>>,
    served: Mutex<HashMap<String, (std::time::Instant, Arc<SignedStatusList>)>>,
    /// Places reserved ahead, for Token Status Lists and for Bitstring
    /// ones. Async locks, held while a refill is written, so that a burst
    /// of requests finding none left makes one reservation, not one each.
    spare: [tokio::sync::Mutex<SparePlaces>; 2],
}

/// Places of one kind of list that this process reserved in the database
/// and has not given to a credential yet, and the lists it has seen
/// signed.
#[derive(Default)]
struct SparePlaces {
    places: Vec<StatusSlot>,
    signed_lists: std::collections::HashSet<String>,
}

/// Places reserved per database write. A credential request then costs a
/// write for its places once in this many, not every time; the price is
/// that places reserved by a process that stops are never used (at most
/// this many per kind and process, of lists of at least 131,072), and
/// that a list's last places, too few for a block, are left unused.
const PLACES_PER_RESERVATION: usize = 16;

/// How long a list read for serving is reused: relying parties fetch lists
/// far more often than they change, and a second costs nothing against
/// `sign_interval_secs`.
const SERVED_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether `uri_id` names a list the way notary names them: `t<n>` or
/// `w<n>r` / `w<n>s`. Anything else is not looked up at all.
fn is_list_name(uri_id: &str) -> bool {
    let (digits, ok_suffix) = match uri_id.as_bytes() {
        [b't', rest @ ..] => (rest, true),
        [b'w', rest @ .., b'r' | b's'] => (rest, true),
        _ => (&[][..], false),
    };
    ok_suffix
        && (1..=9).contains(&digits.len())
        && digits.first() != Some(&b'0')
        && digits.iter().all(u8::is_ascii_digit)
}

impl std::fmt::Debug for StatusState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusState")
    }
}

/// A new credential's place in a status list.
#[derive(Debug, Clone)]
pub struct StatusPlace {
    /// The list.
    pub list_id: String,
    /// The index.
    pub index: i64,
    /// What the credential carries: the `status` claim (SD-JWT VC) or the
    /// `credentialStatus` entries (W3C).
    pub claim: Value,
}

/// The kind of list a format's credentials are placed in.
fn kind_of(format: Format) -> StatusListKind {
    match format {
        Format::SdJwtVc => StatusListKind::Token,
        Format::JwtVcJson => StatusListKind::Bitstring,
    }
}

impl Notary {
    /// The URL a list is served at.
    pub fn status_list_uri(&self, uri_id: &str) -> String {
        format!("{}/status/{uri_id}", self.policy.public_url)
    }

    /// Places for `count` new credentials of `format`, or `None` when
    /// status lists are off.
    pub(super) async fn reserve_status(
        &self,
        format: Format,
        count: usize,
    ) -> Result<Option<Vec<StatusPlace>>, InternalError> {
        if !self.policy.status.enabled {
            return Ok(None);
        }
        let kind = kind_of(format);
        let slots = self.take_places(kind, count).await?;
        let mut places = Vec::with_capacity(slots.len());
        for slot in slots {
            let permutation = self.permutation(&slot.list_id).await?;
            let index = usize::try_from(slot.n)
                .ok()
                .and_then(|n| permutation.index_of(n))
                .ok_or_else(|| InternalError::Task("a status slot beyond its list".into()))?;
            let claim = match kind {
                StatusListKind::Token => {
                    token_status_list::reference(&self.status_list_uri(&slot.list_id), index)
                }
                StatusListKind::Bitstring => json!([
                    bitstring_status_list::entry(
                        &self.status_list_uri(&format!("{}r", slot.list_id)),
                        Purpose::Revocation,
                        index
                    ),
                    bitstring_status_list::entry(
                        &self.status_list_uri(&format!("{}s", slot.list_id)),
                        Purpose::Suspension,
                        index
                    ),
                ]),
            };
            places.push(StatusPlace {
                list_id: slot.list_id,
                index: i64::try_from(index).unwrap_or(i64::MAX),
                claim,
            });
        }
        Ok(Some(places))
    }

    /// `count` places of `kind`, from those reserved ahead, refilled by
    /// one database write when too few are left. Each place is reserved
    /// once in the database (shared by every instance) and handed out once
    /// from here, so no two credentials share one. A place is handed out
    /// only once its list is known to be signed, so relying parties never
    /// find a credential's list missing: a list this process has not seen
    /// signed (opened by this refill, by another instance, or by a request
    /// that failed before signing it) is signed first.
    async fn take_places(
        &self,
        kind: StatusListKind,
        count: usize,
    ) -> Result<Vec<StatusSlot>, InternalError> {
        let spare = &self.status_lists.spare[match kind {
            StatusListKind::Token => 0,
            StatusListKind::Bitstring => 1,
        }];
        let (taken, unseen) = {
            let mut spare = spare.lock().await;
            if spare.places.len() < count {
                let size = i64::from(self.policy.status.list_size);
                let wanted = count
                    .saturating_sub(spare.places.len())
                    .max(PLACES_PER_RESERVATION);
                let fresh = self
                    .store
                    .reserve_status_slots(kind, i64::try_from(wanted).unwrap_or(1), size, now())
                    .await?;
                // Handed out in the order reserved, from the end.
                spare.places.splice(0..0, fresh.into_iter().rev());
            }
            let first = spare.places.len().saturating_sub(count);
            let taken: Vec<StatusSlot> = spare.places.drain(first..).rev().collect();
            let unseen: Vec<String> = taken
                .iter()
                .filter(|p| !spare.signed_lists.contains(&p.list_id))
                .map(|p| p.list_id.clone())
                .collect();
            (taken, unseen)
        };
        if unseen.is_empty() {
            return Ok(taken);
        }
        // Signed without the lock, so that other requests of this kind go
        // on meanwhile (from lists already seen signed). Signs every list
        // due, new ones included; on failure the places go back and the
        // next request tries again.
        let signed = self.sign_due_status_lists().await;
        let mut spare = spare.lock().await;
        match signed {
            Ok(_) => {
                spare.signed_lists.extend(unseen);
                Ok(taken)
            }
            Err(e) => {
                spare.places.extend(taken.into_iter().rev());
                Err(e)
            }
        }
    }

    /// The list's index permutation, its key derived in the HSM once.
    async fn permutation(&self, list_id: &str) -> Result<Arc<IndexPermutation>, InternalError> {
        if let Some(p) = self
            .status_lists
            .permutations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(list_id)
        {
            return Ok(Arc::clone(p));
        }
        let mut message = Zeroizing::new(PERMUTATION_DOMAIN.to_vec());
        message.extend_from_slice(list_id.as_bytes());
        let key = Zeroizing::new(self.hsm.keyed_hash(message).await?);
        let size = usize::try_from(self.policy.status.list_size).unwrap_or(1 << 17);
        let permutation = Arc::new(
            IndexPermutation::new(&key, size).map_err(|e| InternalError::Task(e.to_string()))?,
        );
        self.status_lists
            .permutations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(list_id.to_owned(), Arc::clone(&permutation));
        Ok(permutation)
    }

    /// Signs every list that is due; returns how many signed lists were
    /// stored. Safe on every instance at once.
    pub async fn sign_due_status_lists(&self) -> Result<usize, InternalError> {
        let now = now();
        let validity = i64::try_from(self.policy.status.list_validity_secs).unwrap_or(86_400);
        // Renew while at least half the validity is left, so a relying
        // party that fetched late still has a list that is not expired.
        let due = self.store.status_lists_to_sign(now + validity / 2).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let Some(key) = self.active_credential_key() else {
            return Err(InternalError::Task(
                "status lists are due but there is no active credential key".into(),
            ));
        };
        let mut saved = 0;
        for list in &due {
            for (uri_id, token) in self.sign_list(list, &key, now, now + validity).await? {
                let stored = self
                    .store
                    .save_signed_status_list(&SignedStatusList {
                        uri_id,
                        list_id: list.id.clone(),
                        version: list.version,
                        token,
                        signed_at: now,
                        expires_at: now + validity,
                    })
                    .await?;
                saved += usize::from(stored);
            }
        }
        Ok(saved)
    }

    /// The signed form(s) of one list: (URI id, JWT).
    async fn sign_list(
        &self,
        list: &StatusListContent,
        key: &super::keys::CredentialKey,
        iat: i64,
        exp: i64,
    ) -> Result<Vec<(String, String)>, InternalError> {
        let size = usize::try_from(list.size).unwrap_or(0);
        let ttl = i64::try_from(self.policy.status.ttl_secs).unwrap_or(300);
        let task = |e: formats::FormatError| InternalError::Task(e.to_string());
        let issuer_key = IssuerKey {
            alg: key.info.algorithm(),
            kid: &key.info.kid,
            x5c: key.x5c.as_deref(),
        };
        let set = |bits: &mut StatusBits, index: i64, value: u8| {
            usize::try_from(index)
                .ok()
                .map_or(Ok(()), |i| bits.set(i, value))
        };
        let mut signed = Vec::new();
        match list.kind {
            StatusListKind::Token => {
                let mut bits = StatusBits::new(2, size).map_err(task)?;
                for (index, status) in &list.changed {
                    let value = match status {
                        CredentialStatus::Revoked => token_status_list::INVALID,
                        CredentialStatus::Suspended => token_status_list::SUSPENDED,
                        CredentialStatus::Valid => token_status_list::VALID,
                    };
                    set(&mut bits, *index, value).map_err(task)?;
                }
                let uri = self.status_list_uri(&list.id);
                let unsigned = token_status_list::prepare(&uri, &bits, iat, exp, ttl, &issuer_key)
                    .map_err(task)?;
                signed.push((list.id.clone(), self.sign_with(key, &unsigned).await?));
            }
            StatusListKind::Bitstring => {
                let issuer_did = formats::did::did_web(&self.policy.public_url).map_err(task)?;
                for (suffix, purpose, marks) in [
                    ("r", Purpose::Revocation, CredentialStatus::Revoked),
                    ("s", Purpose::Suspension, CredentialStatus::Suspended),
                ] {
                    let mut bits = StatusBits::new(1, size).map_err(task)?;
                    for (index, status) in &list.changed {
                        if *status == marks {
                            set(&mut bits, *index, 1).map_err(task)?;
                        }
                    }
                    let uri_id = format!("{}{suffix}", list.id);
                    let list_uri = self.status_list_uri(&uri_id);
                    let unsigned = bitstring_status_list::prepare(
                        &bitstring_status_list::Input {
                            list_uri: &list_uri,
                            issuer_did: &issuer_did,
                            purpose,
                            iat,
                            exp,
                            ttl_secs: ttl,
                        },
                        &bits,
                        &issuer_key,
                    )
                    .map_err(task)?;
                    signed.push((uri_id, self.sign_with(key, &unsigned).await?));
                }
            }
        }
        Ok(signed)
    }

    async fn sign_with(
        &self,
        key: &super::keys::CredentialKey,
        unsigned: &formats::Unsigned,
    ) -> Result<String, InternalError> {
        let input = unsigned.signing_input();
        let signature = self
            .hsm
            .sign_credential(&key.info, input.as_bytes().to_vec())
            .await?;
        Ok(crate::jose::compact(input, &signature))
    }

    /// A signed list as served.
    /// A signed list as served, read at most once a second per list and
    /// process (only lists that exist are kept, and there are few).
    pub async fn served_status_list(
        &self,
        uri_id: &str,
    ) -> Result<Option<Arc<SignedStatusList>>, InternalError> {
        if !is_list_name(uri_id) {
            return Ok(None);
        }
        if let Some((at, list)) = self
            .status_lists
            .served
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(uri_id)
        {
            if at.elapsed() < SERVED_REUSE {
                return Ok(Some(Arc::clone(list)));
            }
        }
        let Some(list) = self.store.signed_status_list(uri_id).await? else {
            return Ok(None);
        };
        let list = Arc::new(list);
        self.status_lists
            .served
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                uri_id.to_owned(),
                (std::time::Instant::now(), Arc::clone(&list)),
            );
        Ok(Some(list))
    }

    /// Changes a credential's status on behalf of `by` (an API key id, or
    /// `cli`).
    pub async fn change_credential_status(
        &self,
        id: &str,
        to: CredentialStatus,
        by: &str,
    ) -> Result<StatusChange, InternalError> {
        Ok(self.store.change_status(id, to, by, now()).await?)
    }

    /// Revokes every credential of an offer, or of a subject; returns how
    /// many changed.
    pub async fn revoke_credentials_of(
        &self,
        offer_id: Option<&str>,
        subject: Option<&str>,
        by: &str,
    ) -> Result<usize, InternalError> {
        let mut changed = 0;
        for credential in self
            .store
            .list_credentials(offer_id, subject, i64::MAX / 2)
            .await?
        {
            if let StatusChange::Changed(_) = self
                .store
                .change_status(&credential.id, CredentialStatus::Revoked, by, now())
                .await?
            {
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Issued credentials of an offer and/or a subject (metadata only).
    pub async fn credentials(
        &self,
        offer_id: Option<&str>,
        subject: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CredentialRecord>, InternalError> {
        Ok(self
            .store
            .list_credentials(offer_id, subject, limit)
            .await?)
    }

    /// One credential and its status history from the audit log.
    pub async fn credential_history(
        &self,
        id: &str,
    ) -> Result<Option<(CredentialRecord, Vec<AuditRecord>)>, InternalError> {
        let Some(record) = self.store.credential(id).await? else {
            return Ok(None);
        };
        let history = self
            .store
            .audit_entries(&AuditFilter {
                after_seq: 0,
                since: 0,
                event: Some("credential.status_changed".to_owned()),
                subject: Some(id.to_owned()),
                limit: 1000,
            })
            .await?;
        Ok(Some((record, history)))
    }
}

#[cfg(test)]
mod tests {
    use super::is_list_name;

    #[test]
    fn only_notarys_list_names_are_looked_up() {
        for name in ["t1", "t42", "w1r", "w17s", "t123456789"] {
            assert!(is_list_name(name), "{name}");
        }
        for name in [
            "",
            "t",
            "t0",
            "t01",
            "w1",
            "w1x",
            "x1",
            "t1r",
            "wr",
            "t1234567890",
            "t-1",
        ] {
            assert!(!is_list_name(name), "{name}");
        }
    }
}
