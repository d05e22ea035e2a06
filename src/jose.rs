//! JOSE pieces notary needs to *produce* tokens: algorithms, public JWKs,
//! RFC 7638 thumbprints and the compact-JWS signing input.
//!
//! Signing itself happens in the HSM; this module only shapes the bytes.
//! Verification of foreign JWTs (later: DPoP proofs) belongs to a library.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Base64url without padding, as JOSE uses everywhere.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signature algorithms the Notary key can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    /// Ed25519 (RFC 8037).
    EdDSA,
    /// ECDSA on P-256 with SHA-256 (RFC 7518 §3.4).
    ES256,
}

impl Algorithm {
    /// The JOSE `alg` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::ES256 => "ES256",
        }
    }
}

impl std::str::FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "EdDSA" | "eddsa" | "Ed25519" | "ed25519" => Ok(Algorithm::EdDSA),
            "ES256" | "es256" | "P-256" | "p256" => Ok(Algorithm::ES256),
            other => Err(format!("unknown algorithm {other:?}: use EdDSA or ES256")),
        }
    }
}

/// A public key as the HSM reports it, in the form JOSE needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// 32-byte Ed25519 public key.
    Ed25519([u8; 32]),
    /// P-256 affine coordinates.
    P256 {
        /// x coordinate, big-endian.
        x: [u8; 32],
        /// y coordinate, big-endian.
        y: [u8; 32],
    },
}

impl PublicKey {
    /// Parses `CKA_EC_POINT`: a DER OCTET STRING around the point, or the bare
    /// point (some modules omit the wrapping).
    /// A bare point is tried too when the unwrapped bytes do not fit, since
    /// a bare P-256 point can look like a DER header by chance.
    pub fn from_ec_point(alg: Algorithm, ec_point: &[u8]) -> Option<Self> {
        unwrap_der_octet_string(ec_point)
            .and_then(|inner| Self::from_bare_point(alg, inner))
            .or_else(|| Self::from_bare_point(alg, ec_point))
    }

    fn from_bare_point(alg: Algorithm, point: &[u8]) -> Option<Self> {
        match alg {
            Algorithm::EdDSA => Some(PublicKey::Ed25519(point.try_into().ok()?)),
            Algorithm::ES256 => {
                let (tag, xy) = point.split_first()?;
                if *tag != 0x04 || xy.len() != 64 {
                    return None;
                }
                Some(PublicKey::P256 {
                    x: xy[..32].try_into().ok()?,
                    y: xy[32..].try_into().ok()?,
                })
            }
        }
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            PublicKey::Ed25519(_) => Algorithm::EdDSA,
            PublicKey::P256 { .. } => Algorithm::ES256,
        }
    }

    /// The RFC 7638 thumbprint input: required members only, sorted, no spaces.
    fn thumbprint_input(&self) -> String {
        match self {
            PublicKey::Ed25519(x) => {
                format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64url(x))
            }
            PublicKey::P256 { x, y } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64url(x),
                b64url(y)
            ),
        }
    }

    /// RFC 7638 JWK thumbprint (SHA-256, base64url): notary's `kid`.
    pub fn thumbprint(&self) -> String {
        b64url(&Sha256::digest(self.thumbprint_input().as_bytes()))
    }

    /// The raw public key (Ed25519 bytes, or the uncompressed P-256 point).
    pub fn raw_bytes(&self) -> Vec<u8> {
        match self {
            PublicKey::Ed25519(x) => x.to_vec(),
            PublicKey::P256 { x, y } => [&[0x04][..], x, y].concat(),
        }
    }

    /// The public JWK with `kid`, `alg` and `use`, as served in the JWKS.
    pub fn to_jwk(&self) -> serde_json::Value {
        let kid = self.thumbprint();
        match self {
            PublicKey::Ed25519(x) => serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "x": b64url(x),
                "kid": kid, "alg": "EdDSA", "use": "sig",
            }),
            PublicKey::P256 { x, y } => serde_json::json!({
                "kty": "EC", "crv": "P-256", "x": b64url(x), "y": b64url(y),
                "kid": kid, "alg": "ES256", "use": "sig",
            }),
        }
    }
}

fn unwrap_der_octet_string(der: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = der.split_first()?;
    if tag != 0x04 {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let (len, body) = match len {
        0..=0x7f => (usize::from(len), rest),
        0x81 => {
            let (&l, body) = rest.split_first()?;
            (usize::from(l), body)
        }
        _ => return None,
    };
    (body.len() == len).then_some(body)
}

/// The bytes a compact JWS signs: `b64url(header) "." b64url(payload)`.
pub fn signing_input(header: &serde_json::Value, payload: &serde_json::Value) -> String {
    format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(payload.to_string().as_bytes())
    )
}

/// [`signing_input`] of typed header and payload, serialized straight to
/// JSON (no intermediate map): the access token's, made at every
/// redemption.
pub fn signing_input_of<H: serde::Serialize, P: serde::Serialize>(
    header: &H,
    payload: &P,
) -> Result<String, serde_json::Error> {
    Ok(format!(
        "{}.{}",
        b64url(&serde_json::to_vec(header)?),
        b64url(&serde_json::to_vec(payload)?)
    ))
}

/// Appends the signature to a signing input, giving the compact JWS.
pub fn compact(signing_input: String, signature: &[u8]) -> String {
    let mut jws = signing_input;
    jws.push('.');
    jws.push_str(&b64url(signature));
    jws
}

/// Verifies a compact JWS against a JWKS document and returns its claims.
/// Used by `notary probe` to check tokens the way a credential issuer would;
/// the test suite verifies with an independent library instead.
pub fn verify_with_jwks(
    token: &str,
    jwks: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ED25519, UnparsedPublicKey};
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS".to_owned());
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| "bad base64url".to_owned())
    };
    let header: serde_json::Value =
        serde_json::from_slice(&decode(h)?).map_err(|_| "header is not JSON".to_owned())?;
    let kid = header["kid"].as_str().ok_or("no kid in the header")?;
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid))
        .ok_or_else(|| format!("kid {kid} is not in the JWKS"))?;
    let field = |name: &str| {
        jwk[name]
            .as_str()
            .ok_or_else(|| format!("JWK has no {name}"))
            .and_then(decode)
    };
    let signing_input = format!("{h}.{p}");
    let signature = decode(s)?;
    let verified = match (header["alg"].as_str(), jwk["kty"].as_str()) {
        (Some("EdDSA"), Some("OKP")) => UnparsedPublicKey::new(&ED25519, field("x")?)
            .verify(signing_input.as_bytes(), &signature),
        (Some("ES256"), Some("EC")) => {
            let point = [vec![0x04], field("x")?, field("y")?].concat();
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                .verify(signing_input.as_bytes(), &signature)
        }
        (alg, kty) => return Err(format!("unsupported alg {alg:?} for key type {kty:?}")),
    };
    verified.map_err(|_| "the signature does not verify".to_owned())?;
    serde_json::from_slice(&decode(p)?).map_err(|_| "payload is not JSON".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8037_ed25519_thumbprint() {
        // RFC 8037 appendix A.3: the thumbprint of the example key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        let key = PublicKey::Ed25519(x.try_into().unwrap());
        assert_eq!(
            key.thumbprint(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn ec_point_parsing_accepts_der_and_bare_points() {
        let mut der = vec![0x04, 0x41, 0x04];
        der.extend([1u8; 32]);
        der.extend([2u8; 32]);
        let key = PublicKey::from_ec_point(Algorithm::ES256, &der).unwrap();
        assert_eq!(
            key,
            PublicKey::P256 {
                x: [1; 32],
                y: [2; 32]
            }
        );
        assert_eq!(
            PublicKey::from_ec_point(Algorithm::ES256, &der[2..]),
            Some(key)
        );
        let ed = [[0x04, 0x20].as_slice(), &[7u8; 32]].concat();
        assert_eq!(
            PublicKey::from_ec_point(Algorithm::EdDSA, &ed),
            Some(PublicKey::Ed25519([7; 32]))
        );
        assert_eq!(
            PublicKey::from_ec_point(Algorithm::EdDSA, &[0x04, 0x01, 0x00]),
            None
        );
    }
}
