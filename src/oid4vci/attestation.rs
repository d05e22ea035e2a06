//! OAuth 2.0 Attestation-Based Client Authentication (the IETF draft that
//! OID4VCI 1.0 cites and HAIP requires for wallets): the stateless checks.
//!
//! A wallet sends two JWTs in headers: the Client Attestation, signed by its
//! wallet provider and naming the wallet (`sub`, the `client_id`) and the
//! wallet instance's key (`cnf.jwk`); and a proof of possession signed by
//! that instance key for this server (`aud`). The PoP's `jti` replay cache
//! is in `issuance::proofs`.

use jsonwebtoken::jwk::Jwk;
use serde_json::Value;

use super::dpop::FUTURE_SKEW_SECS;
use super::jwt::{self, JwtError};

/// Request header carrying the Client Attestation JWT.
pub const ATTESTATION_HEADER: &str = "oauth-client-attestation";
/// Request header carrying the Client Attestation PoP JWT.
pub const POP_HEADER: &str = "oauth-client-attestation-pop";
/// `typ` of the Client Attestation JWT.
pub const ATTESTATION_TYP: &str = "oauth-client-attestation+jwt";
/// `typ` of the Client Attestation PoP JWT.
pub const POP_TYP: &str = "oauth-client-attestation-pop+jwt";

/// Public keys of the wallet providers whose attestations are trusted.
#[derive(Debug, Clone, Default)]
pub struct TrustedProviders {
    keys: Vec<(Option<String>, Jwk)>,
}

impl TrustedProviders {
    /// Reads a JWKS document (`{"keys": [...]}`) of public keys.
    pub fn from_jwks(jwks: &Value) -> Result<Self, JwtError> {
        let keys = jwks.get("keys").and_then(Value::as_array).ok_or_else(|| {
            JwtError("the trusted keys file must be a JWKS: {\"keys\": [...]}".into())
        })?;
        let keys = keys
            .iter()
            .map(|k| {
                let kid = k.get("kid").and_then(Value::as_str).map(str::to_owned);
                jwt::public_jwk(k).map(|jwk| (kid, jwk))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProviders { keys })
    }

    /// Number of trusted keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys that may have signed a JWT with this header `kid`: the matching
    /// key when `kid` is given, every key otherwise.
    fn candidates<'a>(&'a self, kid: Option<&'a str>) -> impl Iterator<Item = &'a Jwk> + 'a {
        self.keys
            .iter()
            .filter(move |(k, _)| kid.is_none() || k.as_deref() == kid)
            .map(|(_, jwk)| jwk)
    }
}

/// A verified attestation and its proof of possession.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedClient {
    /// The wallet's `client_id` (the attestation's `sub`).
    pub client_id: String,
    /// The wallet provider (the attestation's `iss`).
    pub provider: String,
    /// The PoP's `jti`, for the replay cache.
    pub pop_jti: String,
    /// The PoP's `iat`.
    pub pop_iat: i64,
}

/// What the PoP must be bound to.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// This server's issuer identifier: the PoP's `aud`.
    pub audience: &'a str,
    /// Now, unix seconds.
    pub now: i64,
    /// Oldest acceptable PoP `iat`, as an age in seconds.
    pub max_age: i64,
}

/// Verifies the attestation against the trusted providers and the PoP
/// against the attested instance key.
pub fn check(
    attestation: &str,
    pop: &str,
    trusted: &TrustedProviders,
    expected: Expected<'_>,
) -> Result<AttestedClient, JwtError> {
    let header = jwt::header(attestation)?;
    let kid = header.get("kid").and_then(Value::as_str);
    jwt::check_form(&header, ATTESTATION_TYP)
        .map_err(|e| JwtError(format!("client attestation: {e}")))?;
    let verified = trusted
        .candidates(kid)
        .find_map(|key| jwt::verify(attestation, key, ATTESTATION_TYP).ok())
        .ok_or_else(|| {
            JwtError("client attestation: not signed by a trusted wallet provider".into())
        })?;
    let claims = &verified.claims;
    let provider = jwt::str_claim(claims, "iss")?.to_owned();
    let client_id = jwt::str_claim(claims, "sub")?.to_owned();
    if jwt::time_claim(claims, "exp")? <= expected.now {
        return Err(JwtError("client attestation: expired".into()));
    }
    if let Ok(nbf) = jwt::time_claim(claims, "nbf") {
        if nbf > expected.now + FUTURE_SKEW_SECS {
            return Err(JwtError("client attestation: not valid yet".into()));
        }
    }
    let instance_key = claims
        .get("cnf")
        .and_then(|c| c.get("jwk"))
        .ok_or_else(|| JwtError("client attestation: cnf.jwk is missing".into()))
        .and_then(jwt::public_jwk)?;

    let pop = jwt::verify(pop, &instance_key, POP_TYP)
        .map_err(|e| JwtError(format!("client attestation PoP: {e}")))?;
    let pc = &pop.claims;
    let audience_ok = match pc.get("aud") {
        Some(Value::String(a)) => a == expected.audience,
        Some(Value::Array(all)) => all.iter().any(|a| a == expected.audience),
        _ => false,
    };
    if !audience_ok {
        return Err(JwtError(format!(
            "client attestation PoP: aud must be {}",
            expected.audience
        )));
    }
    // Earlier drafts put the client_id in the PoP's iss; when present it must agree.
    if let Some(iss) = pc.get("iss") {
        if iss.as_str() != Some(client_id.as_str()) {
            return Err(JwtError(
                "client attestation PoP: iss differs from the attested client_id".into(),
            ));
        }
    }
    let pop_jti = jwt::str_claim(pc, "jti")?.to_owned();
    let pop_iat = jwt::time_claim(pc, "iat")?;
    if pop_iat > expected.now + FUTURE_SKEW_SECS || pop_iat < expected.now - expected.max_age {
        return Err(JwtError(format!(
            "client attestation PoP: iat is outside the accepted window ({} s old at most)",
            expected.max_age
        )));
    }
    Ok(AttestedClient {
        client_id,
        provider,
        pop_jti,
        pop_iat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trust_list_with_a_private_key_is_refused() {
        let jwks = serde_json::json!({"keys": [{"kty":"OKP","crv":"Ed25519","x":"AA","d":"AA"}]});
        assert!(TrustedProviders::from_jwks(&jwks).is_err());
        assert!(TrustedProviders::from_jwks(&serde_json::json!({})).is_err());
    }
}
