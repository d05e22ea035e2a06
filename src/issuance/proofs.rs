//! Proofs a wallet sends with its token request: DPoP (RFC 9449) and client
//! attestation. The stateless checks are in `oid4vci`; this module adds what
//! needs shared state, so that it holds across every instance:
//!
//! - a replay cache of proof `jti`s in the database (one conditional insert
//!   each; a `jti` seen by any instance is refused by all of them);
//! - DPoP server nonces that any instance can check without storing them:
//!   a nonce is a time window number and an HMAC of it made in the HSM with
//!   the hashing key, valid for its window and the one before.

use std::sync::Mutex;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{InternalError, Notary};
use crate::jose::b64url;
use crate::oid4vci::attestation::{self, AttestedClient};
use crate::oid4vci::dpop::{self, DpopProof, FUTURE_SKEW_SECS};

/// How long one DPoP nonce window lasts, seconds; a nonce is accepted in its
/// window and the next, so for one to two windows.
pub const NONCE_WINDOW_SECS: i64 = 120;

const NONCE_DOMAIN: &[u8] = b"notary/dpop-nonce/v1\0";
const DPOP_REPLAY_DOMAIN: &[u8] = b"notary/dpop-jti/v1\0";
const POP_REPLAY_DOMAIN: &[u8] = b"notary/attestation-pop-jti/v1\0";

/// Why a proof was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// RFC 9449 `invalid_dpop_proof`.
    #[error("{0}")]
    InvalidDpopProof(String),
    /// RFC 9449 `use_dpop_nonce`: retry with the nonce in `DPoP-Nonce`.
    #[error("a DPoP proof with the server's nonce is required")]
    UseDpopNonce {
        /// Whether the proof carried a nonce (a wrong or stale one), rather
        /// than none at all (a wallet's first contact).
        presented: bool,
    },
    /// The attestation or its PoP does not verify.
    #[error("{0}")]
    InvalidClientAttestation(String),
    /// Internal failure.
    #[error(transparent)]
    Internal(#[from] InternalError),
}

/// The nonces of the current and the previous window, each computed once
/// (they are the same on every instance, so there is nothing to share). A
/// proof with a wrong nonce is judged against these without an HSM call.
#[derive(Debug, Default)]
pub struct NonceCache(Mutex<Vec<(i64, String)>>);

/// A check of a DPoP proof for one request.
#[derive(Debug, Clone, Copy)]
pub struct DpopRequest<'a> {
    /// The `DPoP` header value.
    pub proof: &'a str,
    /// HTTP method.
    pub htm: &'a str,
    /// The endpoint URL.
    pub htu: &'a url::Url,
    /// Now, unix seconds.
    pub now: i64,
    /// At a protected resource: the access token the proof must carry the
    /// hash of (`ath`).
    pub access_token: Option<&'a str>,
}

impl Notary {
    /// Verifies a DPoP proof, its nonce when nonces are required, and that
    /// its `jti` was never seen before. Returns the key thumbprint.
    pub async fn check_dpop(&self, request: DpopRequest<'_>) -> Result<DpopProof, ProofError> {
        let max_age = i64::try_from(self.policy.proof_max_age_secs).unwrap_or(300);
        let proof = dpop::check(
            request.proof,
            dpop::Expected {
                htm: request.htm,
                htu: request.htu,
                now: request.now,
                max_age,
                access_token: request.access_token,
            },
        )
        .map_err(|e| ProofError::InvalidDpopProof(e.0))?;
        if self.policy.require_dpop_nonce {
            match &proof.nonce {
                Some(nonce) if self.nonce_is_valid(nonce, request.now).await? => {}
                Some(_) => return Err(ProofError::UseDpopNonce { presented: true }),
                None => return Err(ProofError::UseDpopNonce { presented: false }),
            }
        }
        let key = replay_key(DPOP_REPLAY_DOMAIN, &proof.jkt, &proof.jti);
        if !self.remember_proof(&key, proof.iat, max_age).await? {
            return Err(ProofError::InvalidDpopProof(
                "this DPoP proof was already used (jti replay)".into(),
            ));
        }
        Ok(proof)
    }

    /// Verifies a client attestation and its PoP, and that the PoP's `jti`
    /// was never seen before.
    pub async fn check_attestation(
        &self,
        attestation: &str,
        pop: &str,
        now: i64,
    ) -> Result<AttestedClient, ProofError> {
        let max_age = i64::try_from(self.policy.proof_max_age_secs).unwrap_or(300);
        let client = attestation::check(
            attestation,
            pop,
            &self.policy.trusted_wallet_providers,
            attestation::Expected {
                audience: &self.policy.public_url,
                now,
                max_age,
            },
        )
        .map_err(|e| ProofError::InvalidClientAttestation(e.0))?;
        let key = replay_key(POP_REPLAY_DOMAIN, &client.client_id, &client.pop_jti);
        if !self.remember_proof(&key, client.pop_iat, max_age).await? {
            return Err(ProofError::InvalidClientAttestation(
                "client attestation PoP: this proof was already used (jti replay)".into(),
            ));
        }
        Ok(client)
    }

    /// The DPoP nonce to send in `DPoP-Nonce` now.
    pub async fn dpop_nonce(&self, now: i64) -> Result<String, InternalError> {
        self.nonce_of(now.div_euclid(NONCE_WINDOW_SECS)).await
    }

    /// The nonce of `window`, from the cache when it is there.
    async fn nonce_of(&self, window: i64) -> Result<String, InternalError> {
        if let Ok(cached) = self.nonces.0.lock() {
            if let Some((_, nonce)) = cached.iter().find(|(w, _)| *w == window) {
                return Ok(nonce.clone());
            }
        }
        let nonce = self.nonce_for(window).await?;
        if let Ok(mut cached) = self.nonces.0.lock() {
            let newest = cached
                .iter()
                .map(|(w, _)| *w)
                .max()
                .unwrap_or(window)
                .max(window);
            cached.retain(|(w, _)| *w >= newest - 1 && *w != window);
            if window >= newest - 1 {
                cached.push((window, nonce.clone()));
            }
        }
        Ok(nonce)
    }

    async fn nonce_for(&self, window: i64) -> Result<String, InternalError> {
        let mut message = Zeroizing::new(NONCE_DOMAIN.to_vec());
        message.extend_from_slice(&window.to_be_bytes());
        let mac = self.hsm.keyed_hash(message).await?;
        let mut raw = window.to_be_bytes().to_vec();
        raw.extend_from_slice(&mac[..16]);
        Ok(b64url(&raw))
    }

    async fn nonce_is_valid(&self, nonce: &str, now: i64) -> Result<bool, InternalError> {
        let current = now.div_euclid(NONCE_WINDOW_SECS);
        for window in [current, current - 1] {
            let expected = self.nonce_of(window).await?;
            if bool::from(expected.as_bytes().ct_eq(nonce.as_bytes())) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Records a proof as used until it could no longer pass the `iat`
    /// check; false if it was recorded before.
    async fn remember_proof(
        &self,
        key: &[u8; 32],
        iat: i64,
        max_age: i64,
    ) -> Result<bool, InternalError> {
        // A proof is acceptable while iat >= now - max_age, and iat can be
        // up to FUTURE_SKEW_SECS ahead: keep it until iat + max_age.
        let keep_until = iat.saturating_add(max_age).saturating_add(FUTURE_SKEW_SECS);
        Ok(self.store.record_proof_jti(key, keep_until).await?)
    }
}

/// The replay-cache key of a proof: its `jti` within its signer's space.
fn replay_key(domain: &[u8], signer: &str, jti: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(domain);
    hasher.update(signer.as_bytes());
    hasher.update(b"\0");
    hasher.update(jti.as_bytes());
    hasher.finalize().into()
}
