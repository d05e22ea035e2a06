//! Accepting notary's own access tokens at the credential and notification
//! endpoints: signature by a published Notary key, `iss`, `aud`, expiry,
//! not revoked, and for DPoP-bound tokens a proof of the bound key that
//! carries the token's hash (RFC 9449 §7).

use serde_json::Value;

use super::proofs::{DpopRequest, ProofError};
use super::{InternalError, Notary};
use crate::jose;

/// Longest access token looked at; notary's are well under 2 KiB.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// How the token was presented (`Authorization: <scheme> <token>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// RFC 6750.
    Bearer,
    /// RFC 9449.
    Dpop,
}

/// A presented access token and what came with it.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    /// The authorization scheme.
    pub scheme: Scheme,
    /// The access token.
    pub token: &'a str,
    /// The `DPoP` header, if sent.
    pub dpop: Option<&'a str>,
    /// The endpoint's URL, which a DPoP proof must name.
    pub htu: &'a url::Url,
    /// Now, unix seconds.
    pub now: i64,
}

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct AuthorizedToken {
    /// `jti`.
    pub jti: String,
    /// The offer it was issued for.
    pub offer_id: String,
    /// Credential configuration ids of the offer.
    pub configurations: Vec<String>,
    /// `credential_identifiers` granted through `authorization_details`.
    pub identifiers: Vec<String>,
    /// `cnf.jkt`, when the token is DPoP-bound.
    pub jkt: Option<String>,
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// RFC 6750 `invalid_token`: bad, expired, revoked or foreign; the
    /// message is safe to return.
    #[error("{0}")]
    InvalidToken(&'static str),
    /// The DPoP proof for a bound token was refused.
    #[error(transparent)]
    Proof(ProofError),
    /// Internal failure.
    #[error(transparent)]
    Internal(#[from] InternalError),
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl Notary {
    /// Checks a presented access token; see the module documentation.
    pub async fn authorize_access(
        &self,
        presented: Presented<'_>,
    ) -> Result<AuthorizedToken, AccessError> {
        let refuse = AccessError::InvalidToken;
        if presented.token.len() > MAX_TOKEN_LEN {
            return Err(refuse("the access token is not one this server issued"));
        }
        let now = presented.now;
        let claims = jose::verify_with_jwks(presented.token, &self.key_ring().jwks(now))
            .map_err(|_| refuse("the access token is not one this server issued"))?;
        if claims["iss"].as_str() != Some(self.policy.public_url.as_str())
            || claims["aud"].as_str() != Some(self.policy.credential_issuer.as_str())
        {
            return Err(refuse("the access token is not one this server issued"));
        }
        if claims["exp"].as_i64().is_none_or(|exp| exp <= now) {
            return Err(refuse("the access token has expired"));
        }
        let Some(jti) = claims["jti"].as_str() else {
            return Err(refuse("the access token is not one this server issued"));
        };
        let jkt = claims.pointer("/cnf/jkt").and_then(Value::as_str);
        match (jkt, presented.scheme) {
            (Some(_), Scheme::Bearer) => {
                return Err(refuse(
                    "this access token is DPoP-bound: present it with the DPoP scheme and a proof",
                ));
            }
            (None, Scheme::Dpop) => {
                return Err(refuse(
                    "this access token is not DPoP-bound: present it with the Bearer scheme",
                ));
            }
            _ => {}
        }
        if let Some(jkt) = jkt {
            let Some(proof) = presented.dpop else {
                return Err(AccessError::Proof(ProofError::InvalidDpopProof(
                    "a DPoP proof is required with a DPoP-bound access token".into(),
                )));
            };
            let proof = self
                .check_dpop(DpopRequest {
                    proof,
                    htm: "POST",
                    htu: presented.htu,
                    now,
                    access_token: Some(presented.token),
                })
                .await
                .map_err(AccessError::Proof)?;
            if proof.jkt != jkt {
                return Err(AccessError::Proof(ProofError::InvalidDpopProof(
                    "the DPoP proof is not made with the key the access token is bound to".into(),
                )));
            }
        }
        let status = self
            .store
            .token_status(jti)
            .await
            .map_err(InternalError::from)?;
        let Some(status) = status.filter(|s| s.revoked_at.is_none()) else {
            return Err(refuse("the access token has been revoked"));
        };
        let identifiers = claims["authorization_details"]
            .as_array()
            .map(|details| {
                details
                    .iter()
                    .flat_map(|d| strings(&d["credential_identifiers"]))
                    .collect()
            })
            .unwrap_or_default();
        Ok(AuthorizedToken {
            jti: jti.to_owned(),
            offer_id: status.offer_id,
            configurations: strings(&claims["credential_configuration_ids"]),
            identifiers,
            jkt: jkt.map(str::to_owned),
        })
    }
}
