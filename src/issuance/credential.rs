//! The credential endpoint's use case (OID4VCI 1.0 §8): from an accepted
//! access token and a parsed request to credentials signed in the HSM,
//! issued exactly once per offer and credential configuration.
//!
//! Order matters. Everything that can refuse the request without a write
//! comes first (the configuration, every key proof, the nonce's tag and
//! expiry, "issued already?", "nonce spent already?"), so bad input
//! consumes nothing and costs no HSM work. Then the
//! claims are opened, the credentials are signed, and the issuance is
//! recorded in one transaction that also spends the nonce (shared by every
//! instance: a nonce spent before refuses the issuance) and deletes the
//! claims. Credentials leave only after that transaction commits.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::access::AuthorizedToken;
use super::c_nonce::NonceError;
use super::profiles::{CredentialProfile, Format};
use super::{InternalError, Notary, claims, now, random};
use crate::formats::{self, IssuerKey};
use crate::jose;
use crate::oid4vci::ErrorCode;
use crate::oid4vci::credential::{
    CredentialRequest, HolderKey, ProofExpectations, Requested, check_proof,
};
use crate::store::{IssueOutcome, IssuedCredential, NewIssuance, ReplayKey};

/// Credentials issued for one request.
#[derive(Debug)]
pub struct Issued {
    /// The credentials, one per proven key, in the order of the proofs.
    pub credentials: Vec<String>,
    /// Names this issuance in the wallet's notifications.
    pub notification_id: String,
}

/// Why no credential was issued.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A §8.3.1.2 error: code and a description safe to return.
    #[error("{1}")]
    Refused(ErrorCode, String),
    /// The token was revoked while the request was under way.
    #[error("the access token has been revoked")]
    TokenRevoked,
    /// Internal failure.
    #[error(transparent)]
    Internal(#[from] InternalError),
}

fn refused(code: ErrorCode, message: impl Into<String>) -> CredentialError {
    CredentialError::Refused(code, message.into())
}

impl From<NonceError> for CredentialError {
    fn from(e: NonceError) -> Self {
        match e {
            NonceError::Internal(e) => CredentialError::Internal(e),
            other => refused(ErrorCode::InvalidNonce, other.to_string()),
        }
    }
}

impl Notary {
    /// Issues the credentials `request` asks for with `token`.
    pub async fn issue_credentials(
        &self,
        token: &AuthorizedToken,
        request: &CredentialRequest,
    ) -> Result<Issued, CredentialError> {
        let now = now();
        let (configuration, profile) = self.resolve(token, &request.requested)?;
        let (holders, spent_nonces) = self.check_proofs(&request.proofs, now).await?;
        if self
            .store
            .is_issued(&token.offer_id, &configuration)
            .await
            .map_err(InternalError::from)?
        {
            return Err(already_issued());
        }
        if profile.format == Format::SdJwtVc {
            self.refuse_bound_keys(&holders).await?;
        }
        // Each nonce is spent once, by the write that records the
        // issuance. One spent before is refused here, by a read, before any
        // HSM work: a refused issuance records nothing, so without this a
        // wallet could send one spent nonce again and again.
        for spending in &spent_nonces {
            if self
                .store
                .replay_key_seen(&spending.key)
                .await
                .map_err(InternalError::from)?
            {
                return Err(NonceError::Used.into());
            }
        }
        let claims = self.open_claims(token, &configuration).await?;
        let key = self.active_credential_key().ok_or_else(|| {
            InternalError::Task(
                "no active credential key: run `notary keys rotate --purpose credential`".into(),
            )
        })?;
        // Places in status lists are reserved before signing (a place of a
        // credential that is then not issued stays unused: never reused).
        let places = self.reserve_status(profile.format, holders.len()).await?;
        let mut credentials = Vec::with_capacity(holders.len());
        let mut records = Vec::with_capacity(holders.len());
        let exp = now.saturating_add(i64::try_from(self.policy.credential_validity).unwrap_or(0));
        for (i, holder) in holders.iter().enumerate() {
            let id = credential_id()?;
            let place = places.as_ref().and_then(|p| p.get(i));
            let credential = self
                .sign_credential(
                    &profile,
                    &key,
                    &claims,
                    holder,
                    &id,
                    (now, exp),
                    place.map(|p| &p.claim),
                )
                .await?;
            records.push(IssuedCredential {
                id,
                format: profile.format.as_str().to_owned(),
                kid: key.info.kid.clone(),
                holder_jkt: holder.jkt.clone(),
                sha256: hex(&Sha256::digest(credential.as_bytes())),
                issued_at: now,
                expires_at: exp,
                status: place.map(|p| (p.list_id.clone(), p.index)),
            });
            credentials.push(credential);
        }
        drop(claims);
        let notification_id = random::token(16).map_err(InternalError::from)?;
        let issuance = NewIssuance {
            offer_id: token.offer_id.clone(),
            configuration_id: configuration,
            token_jti: token.jti.clone(),
            notification_id: notification_id.clone(),
            credentials: records,
            spent_nonces,
        };
        match self
            .store
            .record_issuance(&issuance, super::now())
            .await
            .map_err(InternalError::from)?
        {
            IssueOutcome::Issued => Ok(Issued {
                credentials,
                notification_id,
            }),
            IssueOutcome::AlreadyIssued => Err(already_issued()),
            IssueOutcome::TokenRevoked => Err(CredentialError::TokenRevoked),
            IssueOutcome::HolderKeyUsed => Err(key_bound(None)),
            IssueOutcome::NonceUsed => Err(NonceError::Used.into()),
        }
    }

    /// An SD-JWT VC binds a fresh key: wallets make one per credential so
    /// that relying parties cannot link their presentations, and a key
    /// proven again means a wallet (or an attacker replaying one's proof
    /// material) reuses what should be single-use. W3C credentials name a
    /// long-lived DID instead, whose key may repeat.
    async fn refuse_bound_keys(&self, holders: &[HolderKey]) -> Result<(), CredentialError> {
        for (i, holder) in holders.iter().enumerate() {
            if self
                .store
                .holder_key_bound(&holder.jkt)
                .await
                .map_err(InternalError::from)?
            {
                return Err(key_bound(Some(i + 1)));
            }
        }
        Ok(())
    }

    /// The configuration the request names, if the token's offer has it.
    fn resolve(
        &self,
        token: &AuthorizedToken,
        requested: &Requested,
    ) -> Result<(String, CredentialProfile), CredentialError> {
        let configuration = match requested {
            Requested::Configuration(id) => {
                if !self.policy.credential_profiles.contains_key(id) {
                    return Err(refused(
                        ErrorCode::UnknownCredentialConfiguration,
                        "no credential configuration of this issuer has this id",
                    ));
                }
                id.clone()
            }
            // notary's credential identifiers are the configuration ids.
            Requested::Identifier(id) => {
                if !token.identifiers.contains(id) && !token.configurations.contains(id) {
                    return Err(refused(
                        ErrorCode::UnknownCredentialIdentifier,
                        "the access token grants no credential with this identifier",
                    ));
                }
                id.clone()
            }
            Requested::Format { format, vct, types } => token
                .configurations
                .iter()
                .find(|id| {
                    self.policy.credential_profiles.get(*id).is_some_and(|p| {
                        super::profiles::Format::parse(format) == Some(p.format)
                            && vct.as_ref().is_none_or(|v| p.vct.as_ref() == Some(v))
                            && types.as_ref().is_none_or(|t| *t == p.types)
                    })
                })
                .cloned()
                .ok_or_else(|| {
                    refused(
                        ErrorCode::UnknownCredentialConfiguration,
                        "no credential of this offer has this format and type",
                    )
                })?,
        };
        if !token.configurations.contains(&configuration) {
            return Err(refused(
                ErrorCode::CredentialRequestDenied,
                "this credential configuration is not in the offer the access token was issued for",
            ));
        }
        let profile = self
            .policy
            .credential_profiles
            .get(&configuration)
            .cloned()
            .ok_or_else(|| {
                refused(
                    ErrorCode::UnknownCredentialConfiguration,
                    "no credential configuration of this issuer has this id",
                )
            })?;
        Ok((configuration, profile))
    }

    /// Verifies every proof and its nonce's tag and expiry (nothing
    /// written); one holder key per proof, no key twice. With the holder
    /// keys come the replay keys that spend the proofs' nonces: each
    /// distinct nonce once, in one order for every request (so that two
    /// issuances spending the same two never wait for each other).
    async fn check_proofs(
        &self,
        proofs: &[String],
        now: i64,
    ) -> Result<(Vec<HolderKey>, Vec<ReplayKey>), CredentialError> {
        let expected = ProofExpectations {
            audience: &self.policy.credential_issuer,
            now,
            max_age: i64::try_from(self.policy.proof_max_age_secs).unwrap_or(300),
        };
        let mut holders: Vec<HolderKey> = Vec::with_capacity(proofs.len());
        let mut nonces = BTreeMap::new();
        for (i, proof) in proofs.iter().enumerate() {
            let holder = check_proof(proof, expected)
                .map_err(|e| refused(ErrorCode::InvalidProof, format!("proof {}: {e}", i + 1)))?;
            if holders.iter().any(|h| h.jkt == holder.jkt) {
                return Err(refused(
                    ErrorCode::InvalidProof,
                    format!("proof {}: the same key is proven twice", i + 1),
                ));
            }
            let Some(nonce) = holder.nonce.as_deref() else {
                return Err(refused(
                    ErrorCode::InvalidNonce,
                    format!(
                        "proof {}: no nonce; fetch one from the nonce endpoint",
                        i + 1
                    ),
                ));
            };
            let spending = self.c_nonce_spending(nonce, now).await?;
            nonces.insert(spending.key, spending);
            holders.push(holder);
        }
        Ok((holders, nonces.into_values().collect()))
    }

    /// The offer's claims for `configuration`, opened in the HSM. Like
    /// every heap block, their buffers are wiped when freed (the global
    /// allocator zero-fills on free), so they live only as long as this
    /// request. An offer without claims for it issues a credential with none,
    /// unless the configuration has mandatory claims.
    async fn open_claims(
        &self,
        token: &AuthorizedToken,
        configuration: &str,
    ) -> Result<Map<String, Value>, CredentialError> {
        let offer = self
            .store
            .get_offer(&token.offer_id)
            .await
            .map_err(InternalError::from)?
            .ok_or(CredentialError::TokenRevoked)?;
        let mandatory = self
            .policy
            .declared_claims
            .get(configuration)
            .and_then(|d| d.as_ref())
            .is_some_and(|d| !d.mandatory.is_empty());
        let Some(stored) = offer.claims_sealed.as_deref() else {
            return self.no_claims(token, configuration, mandatory).await;
        };
        match claims::open(&self.hsm, &offer.id, stored, configuration).await {
            Ok(plaintext) => match serde_json::from_slice::<Value>(&plaintext) {
                Ok(Value::Object(map)) => Ok(map),
                _ => Err(InternalError::Task("opened claims are not a JSON object".into()).into()),
            },
            Err(claims::OpenError::Absent) => self.no_claims(token, configuration, mandatory).await,
            Err(claims::OpenError::Unreadable) => Err(InternalError::Task(format!(
                "the sealed claims of offer {} do not open: altered or moved",
                offer.id
            ))
            .into()),
            Err(claims::OpenError::Hsm(e)) => Err(InternalError::from(e).into()),
        }
    }

    /// No claims are stored for the configuration: none were given, or a
    /// concurrent request issued it (and deleted them) since this one
    /// checked; the latter is answered as such.
    async fn no_claims(
        &self,
        token: &AuthorizedToken,
        configuration: &str,
        mandatory: bool,
    ) -> Result<Map<String, Value>, CredentialError> {
        if self
            .store
            .is_issued(&token.offer_id, configuration)
            .await
            .map_err(InternalError::from)?
        {
            return Err(already_issued());
        }
        if !mandatory {
            return Ok(Map::new());
        }
        Err(refused(
            ErrorCode::CredentialRequestDenied,
            "no claims are held for this credential",
        ))
    }

    /// Builds one credential and signs it with the credential key.
    #[allow(clippy::too_many_arguments)]
    async fn sign_credential(
        &self,
        profile: &CredentialProfile,
        key: &super::keys::CredentialKey,
        claims: &Map<String, Value>,
        holder: &HolderKey,
        id: &str,
        (iat, exp): (i64, i64),
        status: Option<&Value>,
    ) -> Result<String, CredentialError> {
        let issuer_key = IssuerKey {
            alg: key.info.algorithm(),
            kid: &key.info.kid,
            x5c: key.x5c.as_deref(),
        };
        let build_failed = |e: formats::FormatError| {
            // Claims were checked against the configuration when the offer
            // was made; a claim the format reserves is the issuer's mistake.
            refused(
                ErrorCode::CredentialRequestDenied,
                format!("this offer's claims cannot be issued in this format: {e}"),
            )
        };
        match profile.format {
            Format::SdJwtVc => {
                let mut salts = Vec::new();
                for _ in 0..claims.len() {
                    let mut salt = [0u8; 16];
                    random::fill(&mut salt).map_err(InternalError::from)?;
                    salts.push(salt);
                }
                let mut next = salts.into_iter();
                let prepared = formats::sd_jwt_vc::prepare(
                    &formats::sd_jwt_vc::Input {
                        issuer: &self.policy.credential_issuer,
                        vct: profile.vct.as_deref().unwrap_or_default(),
                        claims,
                        always_visible: &profile.always_visible,
                        holder_jwk: &holder.jwk,
                        iat,
                        exp,
                        status,
                    },
                    &issuer_key,
                    &mut || next.next().unwrap_or([0; 16]),
                )
                .map_err(build_failed)?;
                let input = prepared.unsigned.signing_input();
                let signature = self
                    .hsm
                    .sign_credential(&key.info, input.as_bytes().to_vec())
                    .await
                    .map_err(InternalError::from)?;
                Ok(formats::sd_jwt_vc::assemble(
                    input,
                    &signature,
                    &prepared.disclosures,
                ))
            }
            Format::JwtVcJson => {
                let issuer_did = formats::did::did_web(&self.policy.public_url)
                    .map_err(|e| InternalError::Task(e.to_string()))?;
                // The wallet's own spelling of its did:jwk when it sent one.
                let holder_did = holder
                    .did
                    .clone()
                    .unwrap_or_else(|| formats::did::did_jwk(&holder.jwk));
                let unsigned = formats::jwt_vc_json::prepare(
                    &formats::jwt_vc_json::Input {
                        issuer_did: &issuer_did,
                        holder_did: &holder_did,
                        types: &profile.types,
                        contexts: &profile.contexts,
                        claims,
                        credential_id: id,
                        iat,
                        exp,
                        status,
                    },
                    &issuer_key,
                )
                .map_err(build_failed)?;
                let input = unsigned.signing_input();
                let signature = self
                    .hsm
                    .sign_credential(&key.info, input.as_bytes().to_vec())
                    .await
                    .map_err(InternalError::from)?;
                Ok(jose::compact(input, &signature))
            }
        }
    }
}

fn key_bound(proof: Option<usize>) -> CredentialError {
    let which = proof.map_or_else(|| "a proof".to_owned(), |i| format!("proof {i}"));
    refused(
        ErrorCode::InvalidProof,
        format!("{which}: this key is bound to a credential already; prove a fresh key"),
    )
}

fn already_issued() -> CredentialError {
    refused(
        ErrorCode::CredentialRequestDenied,
        "this credential of the offer has been issued already",
    )
}

/// A random credential id: an RFC 9562 version 4 UUID URN, as W3C VCs use.
fn credential_id() -> Result<String, InternalError> {
    let mut b = [0u8; 16];
    random::fill(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    Ok(format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
