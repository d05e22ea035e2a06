//! A wallet's keys and the JWTs it signs: DPoP proofs, client attestations
//! and their proofs of possession. Signed with aws-lc-rs here, verified by
//! the server; nothing of notary's own JOSE code is used to make them.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A fresh random jti.
pub fn jti() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    b64(&bytes)
}

enum Pair {
    Ed(Ed25519KeyPair),
    P256(EcdsaKeyPair),
}

/// A key pair a wallet (or a wallet provider) holds.
pub struct WalletKey {
    pair: Pair,
    /// The public JWK.
    pub jwk: Value,
    /// `alg` it signs with.
    pub alg: &'static str,
}

impl WalletKey {
    pub fn ed25519() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref())});
        WalletKey {
            pair: Pair::Ed(pair),
            jwk,
            alg: "EdDSA",
        }
    }

    pub fn p256() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        assert_eq!(point.len(), 65);
        let jwk =
            json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])});
        WalletKey {
            pair: Pair::P256(pair),
            jwk,
            alg: "ES256",
        }
    }

    /// RFC 7638 thumbprint of the public key.
    pub fn thumbprint(&self) -> String {
        use sha2::Digest as _;
        let input = match self.alg {
            "EdDSA" => format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                self.jwk["x"].as_str().unwrap()
            ),
            _ => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                self.jwk["x"].as_str().unwrap(),
                self.jwk["y"].as_str().unwrap()
            ),
        };
        b64(&sha2::Sha256::digest(input.as_bytes()))
    }

    /// A compact JWS of `header` (with `alg` added) and `claims`.
    pub fn sign(&self, mut header: Value, claims: &Value) -> String {
        header["alg"] = json!(self.alg);
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = match &self.pair {
            Pair::Ed(p) => p.sign(input.as_bytes()).as_ref().to_vec(),
            Pair::P256(p) => p
                .sign(&SystemRandom::new(), input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
        };
        format!("{input}.{}", b64(&signature))
    }

    /// A DPoP proof for `POST htu`, with `extra` claims merged in.
    pub fn dpop(&self, htu: &str, extra: Value) -> String {
        let mut claims = json!({"htm": "POST", "htu": htu, "iat": now(), "jti": jti()});
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        self.sign(json!({"typ": "dpop+jwt", "jwk": self.jwk}), &claims)
    }
}

/// A wallet provider that attests wallet instances.
pub struct Provider {
    pub key: WalletKey,
    pub kid: String,
}

impl Provider {
    pub fn new() -> Self {
        Provider {
            key: WalletKey::p256(),
            kid: "provider-1".to_owned(),
        }
    }

    /// The JWKS an issuer configures as trusted.
    pub fn jwks(&self) -> Value {
        let mut jwk = self.key.jwk.clone();
        jwk["kid"] = json!(self.kid);
        json!({ "keys": [jwk] })
    }

    /// A Client Attestation JWT for `client_id` and the instance key.
    pub fn attest(&self, client_id: &str, instance: &WalletKey) -> String {
        self.key.sign(
            json!({"typ": "oauth-client-attestation+jwt", "kid": self.kid}),
            &json!({
                "iss": "https://wallet-provider.example",
                "sub": client_id,
                "iat": now(),
                "exp": now() + 3600,
                "cnf": {"jwk": instance.jwk},
            }),
        )
    }
}

/// A Client Attestation PoP JWT for `audience`.
pub fn attestation_pop(instance: &WalletKey, audience: &str) -> String {
    instance.sign(
        json!({"typ": "oauth-client-attestation-pop+jwt"}),
        &json!({"aud": audience, "jti": jti(), "iat": now()}),
    )
}
