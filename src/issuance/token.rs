//! The access token: an RFC 9068 JWT, prepared here and signed in the HSM.

use serde::Serialize;

use super::{InternalError, Policy, random};
use crate::hsm::SigningKeyInfo;
use crate::jose;
use crate::oid4vci::token::CredentialAuthorization;
use crate::store::{IssuedToken, OfferRecord};

/// The `client_id` claim of a token for a wallet that neither presented a
/// client attestation nor sent a `client_id`. RFC 9068 §2.2 requires the
/// claim in every access token; this value says no client was identified.
pub const ANONYMOUS_CLIENT_ID: &str = "anonymous-wallet";

/// Who the token is for, beyond the offer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Binding<'a> {
    /// The wallet's `client_id` (attested, or as sent); without one (or
    /// with an empty one) the token says [`ANONYMOUS_CLIENT_ID`].
    pub client_id: Option<&'a str>,
    /// DPoP key thumbprint (`cnf.jkt`).
    pub jkt: Option<&'a str>,
    /// The granted authorization details.
    pub authorization_details: Option<&'a [CredentialAuthorization]>,
}

/// The claims of an access token (RFC 9068 §2.2), serialized in this
/// order.
#[derive(Debug, Serialize)]
pub struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
    jti: &'a str,
    client_id: &'a str,
    credential_configuration_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<Confirmation<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorization_details: Option<&'a [CredentialAuthorization]>,
}

/// `cnf`: the DPoP key the token is bound to (RFC 9449 §6).
#[derive(Debug, Serialize)]
struct Confirmation<'a> {
    jkt: &'a str,
}

/// The JOSE header of an access token.
#[derive(Debug, Serialize)]
struct Header<'a> {
    alg: &'a str,
    kid: &'a str,
    typ: &'a str,
}

/// The claims of an access token for `offer`. Nothing here is derived from
/// the pre-authorized code or the PIN, nor taken from the offer's claims.
pub fn claims<'a>(
    policy: &'a Policy,
    offer: &'a OfferRecord,
    binding: Binding<'a>,
    jti: &'a str,
    now: i64,
) -> Claims<'a> {
    let exp = now.saturating_add(i64::try_from(policy.access_token_ttl).unwrap_or(300));
    let client_id = binding
        .client_id
        .filter(|c| !c.is_empty())
        .unwrap_or(ANONYMOUS_CLIENT_ID);
    // The offer's claims are not copied in: they are personal data, kept
    // sealed for the credential endpoint, and an access token is readable
    // by whoever holds it.
    Claims {
        iss: &policy.public_url,
        sub: offer.subject.as_deref().unwrap_or(&offer.id),
        aud: &policy.credential_issuer,
        iat: now,
        exp,
        jti,
        client_id,
        credential_configuration_ids: serde_json::from_str(&offer.credential_ids)
            .unwrap_or_default(),
        cnf: binding.jkt.map(|jkt| Confirmation { jkt }),
        authorization_details: binding.authorization_details,
    }
}

/// An access token ready to be signed.
#[derive(Debug)]
pub struct Unsigned {
    /// The JWS signing input.
    pub input: String,
    /// jti, kid, exp for the store and the audit log.
    issued: IssuedToken,
}

impl Unsigned {
    /// What the store records of the token.
    pub fn issued(&self) -> &IssuedToken {
        &self.issued
    }

    /// The token with its signature: the compact JWS.
    pub fn signed(self, signature: &[u8]) -> String {
        jose::compact(self.input, signature)
    }
}

/// An access token for `offer` to be signed by the Notary key `key`.
pub fn prepare(
    key: &SigningKeyInfo,
    policy: &Policy,
    offer: &OfferRecord,
    binding: Binding<'_>,
    now: i64,
) -> Result<Unsigned, InternalError> {
    // Time-ordered: the store indexes jti, and random ones would each
    // change an index page of their own at every commit.
    let jti = random::time_ordered_id(std::time::SystemTime::now())?;
    let claims = claims(policy, offer, binding, &jti, now);
    let expires_at = claims.exp;
    let header = Header {
        alg: key.algorithm().as_str(),
        kid: &key.kid,
        typ: &policy.access_token_typ,
    };
    let input = jose::signing_input_of(&header, &claims)
        .map_err(|e| InternalError::Task(format!("encoding an access token: {e}")))?;
    Ok(Unsigned {
        input,
        issued: IssuedToken {
            jti,
            kid: key.kid.clone(),
            expires_at,
        },
    })
}
