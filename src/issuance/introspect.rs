//! Token introspection (RFC 7662) for credential issuers: is this access
//! token one notary issued, unexpired, and not revoked?

use serde_json::{Value, json};

use super::{InternalError, Notary, now};
use crate::jose;

/// Longest token looked at; notary's tokens are well under 4 KiB.
const MAX_TOKEN_LEN: usize = 8 * 1024;

impl Notary {
    /// The RFC 7662 answer for `token`. Anything notary did not issue, or
    /// that expired or was revoked (its code was replayed), is
    /// `{"active": false}` with nothing else, as §2.2 asks.
    pub async fn introspect(&self, token: &str) -> Result<Value, InternalError> {
        let inactive = json!({ "active": false });
        if token.len() > MAX_TOKEN_LEN {
            return Ok(inactive);
        }
        let now = now();
        let Ok(claims) = jose::verify_with_jwks(token, &self.key_ring().jwks(now)) else {
            return Ok(inactive);
        };
        let issued_here = claims["iss"].as_str() == Some(self.policy.public_url.as_str());
        let live = claims["exp"].as_i64().is_some_and(|exp| exp > now);
        let Some(jti) = claims["jti"].as_str().filter(|_| issued_here && live) else {
            return Ok(inactive);
        };
        match self.store.token_status(jti).await? {
            Some(status) if status.revoked_at.is_none() => {}
            _ => return Ok(inactive),
        }
        let mut answer = json!({
            "active": true,
            "token_type": if claims.get("cnf").is_some() { "DPoP" } else { "Bearer" },
        });
        for name in [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "jti",
            "client_id",
            "cnf",
            "credential_configuration_ids",
            "authorization_details",
        ] {
            if let Some(value) = claims.get(name) {
                answer[name] = value.clone();
            }
        }
        Ok(answer)
    }
}
