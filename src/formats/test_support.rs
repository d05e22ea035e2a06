//! A software ES256 key standing in for the HSM in format tests, and an
//! independent check of what the formats produce: signatures are verified
//! with `jsonwebtoken`, not with notary's own JOSE code.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// An ES256 key pair made for one test.
pub(crate) struct TestKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl TestKey {
    pub(crate) fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        TestKey { pair, rng }
    }

    /// The raw `r || s` signature the HSM would return.
    pub(crate) fn sign(&self, signing_input: &str) -> Vec<u8> {
        self.pair
            .sign(&self.rng, signing_input.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
    }

    /// The public key as a JWK, as a wallet would send it.
    pub(crate) fn public_jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        assert_eq!((point.len(), point[0]), (65, 0x04));
        serde_json::json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        })
    }

    /// Verifies a compact JWS with `jsonwebtoken` and returns its claims.
    /// Time claims are not checked: tests use fixed, past times.
    pub(crate) fn verify(&self, jws: &str) -> Result<Value, jsonwebtoken::errors::Error> {
        let jwk = self.public_jwk();
        let key = DecodingKey::from_ec_components(
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap(),
        )?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        jsonwebtoken::decode::<Value>(jws, &key, &validation).map(|data| data.claims)
    }
}

/// Decodes one base64url part into JSON.
pub(crate) fn b64_json(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Decodes one base64url part into text.
pub(crate) fn b64_text(part: &str) -> String {
    String::from_utf8(URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Splits a compact JWS into its decoded header and payload text.
pub(crate) fn jws_parts(jws: &str) -> (Value, String) {
    let parts: Vec<&str> = jws.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWS has three parts");
    (b64_json(parts[0]), b64_text(parts[1]))
}
