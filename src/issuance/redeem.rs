//! Redeeming a pre-authorized code (and PIN) for an access token, exactly once.
//!
//! Order of work: hash the code in the HSM and look the offer up; check its
//! state and expiry; sign the token; compare the PIN with its verifier,
//! keyed by the code's keyed hash; then one conditional write that counts the attempt and never
//! passes the limit. For a right PIN that write is the one that consumes
//! the offer (pending, unexpired at that moment and with an attempt left);
//! for a wrong one it adds the attempt, records it and locks the offer if
//! it was the last. Nothing is answered before that write is durable, and
//! nothing before it depends on the PIN, so no verdict escapes uncounted.
//! The token, signed before the PIN is compared (whatever the PIN), is
//! returned only if the consuming update changed a row: of any number of
//! concurrent redemptions exactly one wins, and a PIN that was right cannot
//! win after the offer locked.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use super::{InternalError, Notary, hashing, now, token};
use crate::oid4vci::PRE_AUTHORIZED_GRANT;
use crate::oid4vci::token::{CredentialAuthorization, TokenRequest, TokenResponse};
use crate::store::{OfferRecord, OfferState, PinAttempt, RedemptionAttempt, WrongPinOutcome};

/// Longest a request waits for the requests holding an offer's last
/// attempts to be judged.
const IN_FLIGHT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// First pause between looks; it doubles up to [`IN_FLIGHT_POLL_MAX`], so a
/// crowd of waiters does not starve the requests it waits for.
const IN_FLIGHT_POLL: std::time::Duration = std::time::Duration::from_millis(5);
const IN_FLIGHT_POLL_MAX: std::time::Duration = std::time::Duration::from_millis(160);

/// Why a redemption was refused.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    /// The request is malformed (RFC 6749 `invalid_request`).
    #[error("{0}")]
    InvalidRequest(Cow<'static, str>),
    /// Not the pre-authorized code grant.
    #[error("only the pre-authorized code grant is supported")]
    UnsupportedGrantType,
    /// The code is unknown, expired, used or revoked; deliberately one answer
    /// for all of them. `unknown_code` feeds the flood limit.
    #[error("the pre-authorized code is invalid, expired or already used")]
    InvalidGrant {
        /// No offer has this code.
        unknown_code: bool,
    },
    /// The PIN is wrong.
    #[error("the tx_code is wrong; {remaining} attempt(s) left")]
    WrongTxCode {
        /// Attempts left before the offer locks (0: it is now locked).
        remaining: u32,
    },
    /// `authorization_details` asks for something the offer does not grant.
    #[error("{0}")]
    InvalidAuthorizationDetails(String),
    /// Too many wrong PINs: the offer is locked for good.
    #[error("too many wrong tx_code attempts; this offer is locked")]
    Locked,
    /// Internal failure; no detail goes to the client.
    #[error(transparent)]
    Internal(#[from] InternalError),
}

fn internal(e: impl Into<InternalError>) -> RedeemError {
    RedeemError::Internal(e.into())
}

/// What binds the token to its holder, from proofs checked before redemption.
#[derive(Debug, Clone, Default)]
pub struct Binding {
    /// Thumbprint of the DPoP key: the token's `cnf.jkt`.
    pub dpop_jkt: Option<String>,
    /// The `client_id` from a verified client attestation.
    pub attested_client_id: Option<String>,
}

impl Notary {
    /// Redeems a token request. On success the offer is consumed.
    pub async fn redeem(
        &self,
        request: TokenRequest,
        binding: Binding,
    ) -> Result<TokenResponse, RedeemError> {
        check_shape(&request)?;
        let Some(code) = request.code else {
            return Err(RedeemError::InvalidRequest(
                "pre-authorized_code is missing".into(),
            ));
        };
        // Every code is hashed, whatever its shape, so a malformed code costs
        // the same as a well-formed unknown one.
        let code_key = hashing::code_key(&self.hsm, &code)
            .await
            .map_err(internal)?;
        drop(code);
        let now = now();
        let offer = self
            .store
            .find_offer_by_code_hash(&code_key.lookup())
            .await
            .map_err(internal)?
            .ok_or(RedeemError::InvalidGrant { unknown_code: true })?;

        // Whether a PIN is expected is answered the same for a live offer
        // and a spent one: a leaked link without its PIN learns nothing.
        match (&offer.pin_hash, &request.tx_code) {
            (Some(_), None) => {
                return Err(RedeemError::InvalidRequest(
                    "tx_code is required for this offer".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(RedeemError::InvalidRequest(
                    "this offer has no tx_code; do not send tx_code or user_pin".into(),
                ));
            }
            _ => {}
        }

        match offer.state {
            OfferState::Redeemed => {
                self.revoke_replayed_token(&offer, now);
                return Err(RedeemError::InvalidGrant {
                    unknown_code: false,
                });
            }
            OfferState::Locked => return Err(RedeemError::Locked),
            OfferState::Revoked => {
                return Err(RedeemError::InvalidGrant {
                    unknown_code: false,
                });
            }
            OfferState::Pending if now >= offer.expires_at => {
                return Err(RedeemError::InvalidGrant {
                    unknown_code: false,
                });
            }
            OfferState::Pending
                if offer.pin_hash.is_some() && offer.attempts >= offer.max_attempts =>
            {
                // Every attempt is taken, by requests being judged now or
                // by a verdict that could not be recorded.
                return Err(self.refusal_after_race(&offer.id).await);
            }
            OfferState::Pending => {}
        }

        let authorization_details = request
            .authorization_details
            .map(|details| granted_details(details, &offer.credential_ids))
            .transpose()?;

        let key = self
            .active_key()
            .ok_or(RedeemError::Internal(InternalError::NoSigningKey))?;
        let unsigned = token::prepare(
            &key,
            &self.policy,
            &offer,
            token::Binding {
                client_id: binding
                    .attested_client_id
                    .as_deref()
                    .or(request.client_id.as_deref()),
                jkt: binding.dpop_jkt.as_deref(),
                authorization_details: authorization_details.as_deref(),
            },
            now,
        )
        .map_err(RedeemError::Internal)?;

        // With a PIN, nothing here depends on the verdict until the one
        // write that counts its attempt: the consuming write for a right
        // PIN, `count_wrong_pin` for a wrong one (the same shape: a
        // conditional update and its audit entries, in the group commit).
        // The token is signed first, whatever the PIN, so a right and a
        // wrong PIN take the same steps up to that write, and an HSM that
        // fails or is too slow leaves the offer as it was. The answer
        // waits for the write.
        let (attempt, signature) = match (&offer.pin_hash, request.tx_code) {
            (Some(stored), Some(pin)) if hashing::is_code_keyed_verifier(stored) => {
                let signature = self.sign_token(&key, &unsigned).await?;
                let right = code_key.pin_matches(&offer.id, &pin, stored);
                count_pin_verdict();
                drop((pin, code_key));
                if !right {
                    return Err(self.wrong_pin(&offer.id, super::now()).await);
                }
                (RedemptionAttempt::CountedHere, signature)
            }
            (Some(stored), Some(pin)) => {
                // An earlier offer's PIN hash is the HSM's, which compares
                // and signs only if right, in one trip: the attempt is
                // reserved durably before that trip.
                drop(code_key);
                let Some(attempt) = self
                    .store
                    .reserve_pin_attempt(&offer.id, now)
                    .await
                    .map_err(internal)?
                else {
                    return Err(self.refusal_after_race(&offer.id).await);
                };
                let presented = hashing::pin_message(&offer.id, &pin);
                drop(pin);
                let signature = self
                    .hsm
                    .sign_if_keyed_hash_matches(
                        presented,
                        stored.clone(),
                        &key,
                        unsigned.input.as_bytes().to_vec(),
                    )
                    .await
                    .map_err(internal)?;
                count_pin_verdict();
                let Some(signature) = signature else {
                    return Err(self.record_wrong_pin(&offer.id, attempt, now).await);
                };
                (RedemptionAttempt::Reserved, signature)
            }
            _ => (
                RedemptionAttempt::NoPin,
                self.sign_token(&key, &unsigned).await?,
            ),
        };
        let consumed = self
            .store
            .consume_offer(&offer.id, unsigned.issued(), attempt, super::now())
            .await
            .map_err(internal)?;
        if !consumed {
            // Another request redeemed it, or it locked, expired, ran out
            // of attempts or was revoked since we read it. The token we
            // signed is dropped.
            return Err(self.refusal_after_race(&offer.id).await);
        }
        let access_token = unsigned.signed(&signature);
        let nonce = if self.policy.legacy_c_nonce {
            Some(self.fresh_c_nonce().await.map_err(RedeemError::Internal)?)
        } else {
            None
        };
        Ok(TokenResponse {
            access_token,
            token_type: if binding.dpop_jkt.is_some() {
                "DPoP"
            } else {
                "Bearer"
            },
            expires_in: self.policy.access_token_ttl,
            c_nonce_expires_in: nonce.as_ref().map(|n| n.expires_in),
            c_nonce: nonce.map(|n| n.c_nonce),
            authorization_details,
        })
    }

    /// The answer for an offer that changed under a request: locked, else
    /// spent, expired or revoked. While every attempt is held by requests
    /// still being judged, it waits (briefly) for them, so that it can say
    /// what became of the offer rather than guess: a burst of right PINs
    /// answers "used", a burst of wrong ones "locked".
    async fn refusal_after_race(&self, offer_id: &str) -> RedeemError {
        let deadline = std::time::Instant::now() + IN_FLIGHT_WAIT;
        let mut pause = IN_FLIGHT_POLL;
        loop {
            match self.store.get_offer(offer_id).await {
                Ok(Some(o)) if o.state == OfferState::Locked => return RedeemError::Locked,
                Ok(Some(o))
                    if o.state == OfferState::Pending
                        && o.pin_hash.is_some()
                        && o.attempts >= o.max_attempts =>
                {
                    // Still held after the wait: a verdict that could not
                    // be recorded. The attempts are spent either way.
                    if std::time::Instant::now() >= deadline {
                        return RedeemError::Locked;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(IN_FLIGHT_POLL_MAX);
                }
                Ok(_) => {
                    return RedeemError::InvalidGrant {
                        unknown_code: false,
                    };
                }
                Err(e) => return internal(e),
            }
        }
    }

    /// Counts a wrong PIN's attempt with its audit entry (and the lock, if
    /// it was the last) in one write; the answer says the PIN was wrong
    /// only once that write is durable.
    async fn wrong_pin(&self, offer_id: &str, now: i64) -> RedeemError {
        match self.store.count_wrong_pin(offer_id, now).await {
            Ok(Some(WrongPinOutcome::Counted { remaining })) => {
                RedeemError::WrongTxCode { remaining }
            }
            Ok(Some(WrongPinOutcome::LockedNow)) => RedeemError::WrongTxCode { remaining: 0 },
            Ok(None) => self.refusal_after_race(offer_id).await,
            Err(e) => internal(e),
        }
    }

    /// The token's signature, made in the HSM.
    async fn sign_token(
        &self,
        key: &crate::hsm::SigningKeyInfo,
        unsigned: &token::Unsigned,
    ) -> Result<Vec<u8>, RedeemError> {
        self.hsm
            .sign(key, unsigned.input.as_bytes().to_vec())
            .await
            .map_err(internal)
    }

    /// Records a wrong PIN whose attempt is already counted.
    async fn record_wrong_pin(&self, offer_id: &str, attempt: PinAttempt, now: i64) -> RedeemError {
        match self.store.record_wrong_pin(offer_id, attempt, now).await {
            Ok(WrongPinOutcome::Counted { remaining }) => RedeemError::WrongTxCode { remaining },
            Ok(WrongPinOutcome::LockedNow) => RedeemError::WrongTxCode { remaining: 0 },
            // The attempt is counted; only its audit entry is missing.
            Err(e) => internal(e),
        }
    }

    /// RFC 6749 §4.1.2 spirit: a replayed code revokes the token it gave.
    /// Done off the response path, so a replayed code answers as fast as an
    /// unknown one; and once per offer: a token already revoked, or being
    /// revoked by another request now, costs no further write.
    fn revoke_replayed_token(&self, offer: &OfferRecord, now: i64) {
        if offer.token_revoked_at.is_some() || !self.revocations.start(&offer.id) {
            return;
        }
        let store = self.store.clone();
        let revocations = std::sync::Arc::clone(&self.revocations);
        let id = offer.id.clone();
        tokio::spawn(async move {
            if let Err(e) = store.revoke_token_of_replayed_offer(&id, now).await {
                tracing::error!(error = %e, offer = %id, "could not revoke the token of a replayed code");
            }
            revocations.finish(&id);
        });
    }
}

/// Counts a PIN compared with its offer's stored form, right or wrong.
fn count_pin_verdict() {
    metrics::counter!(crate::telemetry::PIN_VERDICTS).increment(1);
}

/// Offers whose replayed code's token is being revoked right now, so that a
/// burst of replays starts one revocation write, not one each.
#[derive(Debug, Default)]
pub(super) struct RevocationsInFlight(Mutex<HashSet<String>>);

impl RevocationsInFlight {
    /// False if a revocation for this offer is already under way.
    fn start(&self, offer_id: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(offer_id.to_owned())
    }

    fn finish(&self, offer_id: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(offer_id);
    }
}

/// The checks that need nothing but the request: the grant type, and that a
/// code is there. The token endpoint runs them before it verifies any proof,
/// so a request that cannot redeem costs no proof check or replay write.
pub fn check_shape(request: &TokenRequest) -> Result<(), RedeemError> {
    match request.grant_type.as_deref() {
        Some(PRE_AUTHORIZED_GRANT) => {}
        Some(_) => return Err(RedeemError::UnsupportedGrantType),
        None => return Err(RedeemError::InvalidRequest("grant_type is missing".into())),
    }
    if request.code.is_none() {
        return Err(RedeemError::InvalidRequest(
            "pre-authorized_code is missing".into(),
        ));
    }
    Ok(())
}

/// The requested `authorization_details`, each checked against the offer's
/// credential configurations and given its `credential_identifiers`. notary
/// has one credential dataset per configuration in an offer, so the
/// identifier is the configuration id itself.
fn granted_details(
    requested: Vec<CredentialAuthorization>,
    offer_credentials: &str,
) -> Result<Vec<CredentialAuthorization>, RedeemError> {
    let offered: Vec<String> = serde_json::from_str(offer_credentials).unwrap_or_default();
    requested
        .into_iter()
        .map(|mut detail| {
            if !offered.contains(&detail.credential_configuration_id) {
                return Err(RedeemError::InvalidAuthorizationDetails(format!(
                    "credential_configuration_id {:?} is not in this offer",
                    detail.credential_configuration_id
                )));
            }
            detail.credential_identifiers = Some(vec![detail.credential_configuration_id.clone()]);
            Ok(detail)
        })
        .collect()
}
