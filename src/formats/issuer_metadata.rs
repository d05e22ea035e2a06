//! SD-JWT VC issuer metadata (draft-ietf-oauth-sd-jwt-vc, "JWT VC Issuer
//! Metadata"): the document a verifier fetches from
//! `/.well-known/jwt-vc-issuer` to find the keys of the `iss` of an SD-JWT VC
//! that carries no `x5c`.

use serde_json::{Value, json};

/// The path, relative to the issuer's origin, the document is served at.
/// For an issuer URL with a path, the path follows this suffix
/// (`https://h.example/tenant` -> `/.well-known/jwt-vc-issuer/tenant`).
pub const WELL_KNOWN_PATH: &str = "/.well-known/jwt-vc-issuer";

/// The issuer metadata: `issuer` must equal the credentials' `iss` exactly,
/// and `jwks` lists the public keys, by `kid`, that verify them. The keys
/// are given as served (e.g. from `PublicKey::to_jwk`); nothing is added.
pub fn jwt_vc_issuer(issuer: &str, jwks: &[Value]) -> Value {
    json!({ "issuer": issuer, "jwks": { "keys": jwks } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::PublicKey;

    #[test]
    fn the_document_names_the_issuer_and_its_keys() {
        let key = PublicKey::Ed25519([7; 32]).to_jwk();
        let document = jwt_vc_issuer("https://notary.example", std::slice::from_ref(&key));
        assert_eq!(
            document,
            json!({"issuer": "https://notary.example", "jwks": {"keys": [key]}})
        );
        assert_eq!(
            jwt_vc_issuer("https://notary.example", &[])["jwks"]["keys"],
            json!([])
        );
    }
}
