//! DPoP proofs (RFC 9449 §4.3): every check that needs no state. The replay
//! cache and the server nonces, which need the database and the HSM, are in
//! `issuance::proofs`.

use serde_json::Value;

use super::jwt::{self, JwtError};

/// `typ` of a DPoP proof.
pub const TYP: &str = "dpop+jwt";

/// How far in the future a proof's `iat` may be (clock skew), seconds.
pub const FUTURE_SKEW_SECS: i64 = 60;

/// Longest `jti` accepted.
const MAX_JTI: usize = 256;

/// A proof whose signature and claims checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopProof {
    /// RFC 7638 thumbprint of the proof's key: the token's `cnf.jkt`.
    pub jkt: String,
    /// The proof's unique id, for the replay cache.
    pub jti: String,
    /// When the proof was made.
    pub iat: i64,
    /// The server nonce it carries, if any.
    pub nonce: Option<String>,
}

/// The request a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// HTTP method, e.g. `POST`.
    pub htm: &'a str,
    /// The endpoint's URL, without query or fragment.
    pub htu: &'a url::Url,
    /// Now, unix seconds.
    pub now: i64,
    /// Oldest acceptable `iat`, as an age in seconds.
    pub max_age: i64,
    /// The access token the proof must be bound to by `ath` (RFC 9449
    /// §4.3 item 11), at a protected resource; `None` at the token endpoint.
    pub access_token: Option<&'a str>,
}

/// Checks a proof's form, signature, `htm`, `htu` and `iat`.
pub fn check(proof: &str, expected: Expected<'_>) -> Result<DpopProof, JwtError> {
    let header = jwt::header(proof)?;
    let jwk_value = header
        .get("jwk")
        .ok_or_else(|| JwtError("the DPoP proof has no jwk header".into()))?;
    let jwk = jwt::public_jwk(jwk_value)?;
    let verified = jwt::verify(proof, &jwk, TYP)?;
    let claims = &verified.claims;

    let jti = jwt::str_claim(claims, "jti")?;
    if jti.len() > MAX_JTI {
        return Err(JwtError(format!(
            "jti must be at most {MAX_JTI} characters"
        )));
    }
    if jwt::str_claim(claims, "htm")? != expected.htm {
        return Err(JwtError(format!("htm must be {}", expected.htm)));
    }
    if !same_endpoint(jwt::str_claim(claims, "htu")?, expected.htu) {
        return Err(JwtError(format!("htu must be {}", expected.htu)));
    }
    let iat = jwt::time_claim(claims, "iat")?;
    if iat > expected.now + FUTURE_SKEW_SECS || iat < expected.now - expected.max_age {
        return Err(JwtError(format!(
            "iat is outside the accepted window ({} s old at most)",
            expected.max_age
        )));
    }
    let nonce = match claims.get("nonce") {
        None => None,
        Some(Value::String(n)) => Some(n.clone()),
        Some(_) => return Err(JwtError("nonce must be a string".into())),
    };
    if let Some(token) = expected.access_token {
        use sha2::Digest as _;
        let ath = crate::jose::b64url(&sha2::Sha256::digest(token.as_bytes()));
        if claims.get("ath").and_then(Value::as_str) != Some(ath.as_str()) {
            return Err(JwtError(
                "ath must be the hash of the access token presented with the proof".into(),
            ));
        }
    }
    Ok(DpopProof {
        jkt: jwt::thumbprint(&jwk)?,
        jti: jti.to_owned(),
        iat,
        nonce,
    })
}

/// RFC 9449 §4.3 item 9: `htu` is compared without query and fragment, after
/// the normalisation of RFC 3986 §6 (case of scheme and host, default port).
fn same_endpoint(htu: &str, expected: &url::Url) -> bool {
    let Ok(mut presented) = url::Url::parse(htu) else {
        return false;
    };
    presented.set_query(None);
    presented.set_fragment(None);
    presented == *expected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htu_is_normalised_and_query_is_ignored() {
        let expected = url::Url::parse("https://notary.example/oid4vci/token").unwrap();
        assert!(same_endpoint(
            "https://NOTARY.example:443/oid4vci/token",
            &expected
        ));
        assert!(same_endpoint(
            "https://notary.example/oid4vci/token?x=1#f",
            &expected
        ));
        assert!(!same_endpoint(
            "https://notary.example/oid4vci/token/",
            &expected
        ));
        assert!(!same_endpoint(
            "http://notary.example/oid4vci/token",
            &expected
        ));
        assert!(!same_endpoint("not a url", &expected));
    }

    #[test]
    fn malformed_proofs_are_refused_with_a_reason() {
        let expected_url = url::Url::parse("https://n.example/oid4vci/token").unwrap();
        let expected = Expected {
            htm: "POST",
            htu: &expected_url,
            now: 1_000,
            max_age: 300,
            access_token: None,
        };
        assert!(check("a.b", expected).is_err());
        assert!(check("!!.b.c", expected).is_err());
        // A symmetric key in the header is refused before any signature check.
        let header = crate::jose::b64url(
            br#"{"typ":"dpop+jwt","alg":"HS256","jwk":{"kty":"oct","k":"AAAA"}}"#,
        );
        let e = check(&format!("{header}.e30.AAAA"), expected).unwrap_err();
        assert!(e.0.contains("public key"), "{e}");
    }
}
