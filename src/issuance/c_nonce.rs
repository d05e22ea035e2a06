//! `c_nonce`s that every instance can check without a lookup, accepted once.
//!
//! A nonce is `expires_at ‖ 16 random bytes ‖ tag`, base64url, where the tag
//! is an HMAC-SHA256 (cut to 16 bytes) over the first two parts. The MAC key
//! of an hour is derived inside the HSM from the hashing key (an HMAC of
//! the hour's number), so every instance derives the same key and nothing
//! needs to be shared or stored to check a nonce: the tag proves notary made
//! it, the expiry is read from it. The derived key is kept in memory for its
//! hour; it can vouch for nonces of that hour only, and a nonce guards
//! freshness, not a secret. Deriving it in the HSM once an hour, instead of
//! an HSM call per nonce, keeps the public nonce endpoint free of HSM work.
//!
//! "Accepted once" costs no write of its own: a nonce's replay key is
//! recorded in the proof replay table (shared by every instance) until it
//! expires, in the same transaction as the issuance that spends it.

use std::sync::Mutex;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{InternalError, Notary, random};
use crate::jose::b64url;
use crate::store::ReplayKey;

/// Length of one key's period, seconds.
const EPOCH_SECS: i64 = 3600;
const KEY_DOMAIN: &[u8] = b"notary/c_nonce-key/v1\0";
const TAG_DOMAIN: &[u8] = b"notary/c_nonce/v1\0";
const USED_DOMAIN: &[u8] = b"notary/c_nonce-used/v1\0";
const RANDOM_LEN: usize = 16;
const TAG_LEN: usize = 16;
const RAW_LEN: usize = 8 + RANDOM_LEN + TAG_LEN;
/// Clock difference between instances tolerated on a nonce's expiry.
const SKEW_SECS: i64 = 60;

/// Why a nonce was not accepted. Each is `invalid_nonce` to the wallet,
/// which then fetches a fresh one.
#[derive(Debug, thiserror::Error)]
pub enum NonceError {
    /// Not a nonce notary made (malformed, or the tag does not verify).
    #[error("the nonce was not issued by this credential issuer")]
    Unknown,
    /// Past its expiry.
    #[error("the nonce has expired")]
    Expired,
    /// Accepted before.
    #[error("the nonce was already used")]
    Used,
    /// The HSM or the database failed.
    #[error(transparent)]
    Internal(#[from] InternalError),
}

/// A fresh nonce and its lifetime.
#[derive(Debug, Clone)]
pub struct FreshNonce {
    /// The nonce.
    pub c_nonce: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// The derived keys of the hours in use, each derived once per process.
#[derive(Default)]
pub struct EpochKeys(Mutex<Vec<(i64, hmac::Key)>>);

impl std::fmt::Debug for EpochKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EpochKeys([REDACTED])")
    }
}

impl Notary {
    /// A new nonce, valid for `issuance.c_nonce_ttl_secs`.
    pub async fn fresh_c_nonce(&self) -> Result<FreshNonce, InternalError> {
        let ttl = self.policy.c_nonce_ttl;
        let expires_at = super::now().saturating_add(i64::try_from(ttl).unwrap_or(300));
        let mut raw = Vec::with_capacity(RAW_LEN);
        raw.extend_from_slice(&expires_at.to_be_bytes());
        let mut nonce_random = [0u8; RANDOM_LEN];
        random::fill(&mut nonce_random)?;
        raw.extend_from_slice(&nonce_random);
        let tag = self.nonce_tag(&raw).await?;
        raw.extend_from_slice(&tag.as_ref()[..TAG_LEN]);
        Ok(FreshNonce {
            c_nonce: b64url(&raw),
            expires_in: ttl,
        })
    }

    /// Checks that `nonce` is one notary made and has not expired, without
    /// recording anything. Cheap: no HSM call once the hour's key is known.
    pub async fn check_c_nonce(&self, nonce: &str, now: i64) -> Result<i64, NonceError> {
        if nonce.len() > 2 * RAW_LEN {
            return Err(NonceError::Unknown);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(nonce)
            .map_err(|_| NonceError::Unknown)?;
        if raw.len() != RAW_LEN {
            return Err(NonceError::Unknown);
        }
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&raw[..8]);
        let expires_at = i64::from_be_bytes(expiry);
        let ttl = i64::try_from(self.policy.c_nonce_ttl).unwrap_or(300);
        // An expiry too far ahead is no nonce of ours; refusing it before
        // deriving a key keeps strangers from making us derive keys for
        // hours of their choosing.
        if expires_at > now.saturating_add(ttl).saturating_add(SKEW_SECS) {
            return Err(NonceError::Unknown);
        }
        if expires_at <= now {
            return Err(NonceError::Expired);
        }
        let tag = self.nonce_tag(&raw[..8 + RANDOM_LEN]).await?;
        if !bool::from(tag.as_ref()[..TAG_LEN].ct_eq(&raw[8 + RANDOM_LEN..])) {
            return Err(NonceError::Unknown);
        }
        Ok(expires_at)
    }

    /// Checks `nonce` and gives the replay key that spends it: the store
    /// records it with the issuance it is spent on, and any instance then
    /// refuses it (of two requests with one nonce, one gets `NonceUsed`).
    pub async fn c_nonce_spending(&self, nonce: &str, now: i64) -> Result<ReplayKey, NonceError> {
        let expires_at = self.check_c_nonce(nonce, now).await?;
        let mut hasher = Sha256::new();
        hasher.update(USED_DOMAIN);
        hasher.update(nonce.as_bytes());
        Ok(ReplayKey {
            key: hasher.finalize().into(),
            keep_until: expires_at.saturating_add(SKEW_SECS),
        })
    }

    /// The tag over `expires_at ‖ random` with the key of the expiry's hour.
    async fn nonce_tag(&self, message: &[u8]) -> Result<hmac::Tag, InternalError> {
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&message[..8]);
        let epoch = i64::from_be_bytes(expiry).div_euclid(EPOCH_SECS);
        let key = self.epoch_key(epoch).await?;
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(TAG_DOMAIN);
        ctx.update(message);
        Ok(ctx.sign())
    }

    async fn epoch_key(&self, epoch: i64) -> Result<hmac::Key, InternalError> {
        {
            let cached = self
                .epoch_keys
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((_, key)) = cached.iter().find(|(e, _)| *e == epoch) {
                return Ok(key.clone());
            }
        }
        let mut message = Zeroizing::new(KEY_DOMAIN.to_vec());
        message.extend_from_slice(&epoch.to_be_bytes());
        let secret = Zeroizing::new(self.hsm.keyed_hash(message).await?);
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_slice());
        let mut cached = self
            .epoch_keys
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !cached.iter().any(|(e, _)| *e == epoch) {
            cached.push((epoch, key.clone()));
            cached.sort_by_key(|(e, _)| std::cmp::Reverse(*e));
            // Every hour a live nonce can expire in, and one more: a nonce
            // that passed the expiry check always finds its key here, so
            // nonces of many hours cannot make notary derive keys again.
            let ttl = i64::try_from(self.policy.c_nonce_ttl).unwrap_or(86_400);
            let kept = usize::try_from((ttl + SKEW_SECS) / EPOCH_SECS + 2).unwrap_or(26);
            cached.truncate(kept);
        }
        Ok(key)
    }
}
