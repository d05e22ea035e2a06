//! Decentralised identifiers for `jwt_vc_json`: `did:web` names the issuer
//! (its document is served by the issuer itself), `did:jwk` names a holder
//! by its public key, with nothing to resolve.
//!
//! `did:web` follows the W3C CCG did:web method: the host, a port with its
//! colon percent-encoded, then path segments separated by `:`. `did:jwk`
//! follows the did:jwk method: base64url of the public JWK's JSON.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use super::{FormatError, has_private_members};
use crate::jose::b64url;

/// The prefix of every `did:jwk`.
pub const DID_JWK_PREFIX: &str = "did:jwk:";

/// Longest `did:jwk` (or its `#0` DID URL) accepted. A P-256 or Ed25519
/// key is under 200 characters and a 4096-bit RSA key under 1 KiB; the
/// bound keeps a hostile proof from making us decode megabytes.
pub const MAX_DID_JWK_LEN: usize = 4 * 1024;

/// Public JWK members kept in a `did:jwk` and in a DID document: the key
/// itself (EC, OKP, RSA). Anything else, private members included, is left
/// out rather than published.
const PUBLIC_KEY_MEMBERS: [&str; 6] = ["kty", "crv", "x", "y", "e", "n"];

/// The `did:web` of an HTTPS URL: `https://notary.example` is
/// `did:web:notary.example`, `https://localhost:8443` is
/// `did:web:localhost%3A8443`, `https://h.example/a/b` is
/// `did:web:h.example:a:b`. Refuses other schemes, IP addresses (the method
/// requires a domain name), credentials, queries, fragments, and empty or
/// colon-bearing path segments, which would not map back to the same URL.
pub fn did_web(url: &str) -> Result<String, FormatError> {
    let url = url::Url::parse(url).map_err(|_| FormatError::DidWeb("not a URL"))?;
    if url.scheme() != "https" {
        return Err(FormatError::DidWeb("the scheme must be https"));
    }
    let host = match url.host() {
        Some(url::Host::Domain(host)) => host,
        Some(_) => return Err(FormatError::DidWeb("the host must be a domain name")),
        None => return Err(FormatError::DidWeb("the URL has no host")),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FormatError::DidWeb("the URL must not carry credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(FormatError::DidWeb(
            "the URL must not have a query or fragment",
        ));
    }
    let mut did = format!("did:web:{host}");
    if let Some(port) = url.port() {
        did.push_str(&format!("%3A{port}"));
    }
    let path = url.path().trim_end_matches('/');
    for segment in path.split('/').skip(1) {
        if segment.is_empty() || segment.contains(':') {
            return Err(FormatError::DidWeb(
                "a path segment is empty or contains a colon",
            ));
        }
        did.push(':');
        did.push_str(segment);
    }
    Ok(did)
}

/// The DID document of a `did:web` issuer: one `JsonWebKey2020`
/// verification method per key (id `<did>#<kid>`, as `jwt_vc_json` headers
/// name it), each usable for credentials (`assertionMethod`) and for
/// authentication. `keys` are public JWKs with a `kid`; only the key
/// members, `kid` and `alg` are published.
pub fn did_web_document(did: &str, keys: &[Value]) -> Result<Value, FormatError> {
    let mut methods = Vec::with_capacity(keys.len());
    let mut ids = Vec::with_capacity(keys.len());
    for key in keys {
        let kid = key
            .get("kid")
            .and_then(Value::as_str)
            .filter(|kid| !kid.is_empty())
            .ok_or(FormatError::KeyWithoutKid)?;
        let mut jwk = public_members(key);
        for member in ["kid", "alg"] {
            if let Some(value) = key.get(member) {
                jwk.insert(member.into(), value.clone());
            }
        }
        let id = format!("{did}#{kid}");
        methods.push(json!({
            "id": id,
            "type": "JsonWebKey2020",
            "controller": did,
            "publicKeyJwk": jwk,
        }));
        ids.push(Value::from(id));
    }
    Ok(json!({
        "@context": [
            "https://www.w3.org/ns/did/v1",
            "https://w3id.org/security/suites/jws-2020/v1",
        ],
        "id": did,
        "verificationMethod": methods,
        "assertionMethod": ids,
        "authentication": ids,
    }))
}

/// The `did:jwk` of a public key: `did:jwk:` and base64url of the JSON of
/// its key members (`kty`, `crv`, `x`, `y`, `e`, `n`). Other members
/// (`kid`, `use`, and any private ones) are left out, so the same key
/// always gives the same DID and a private key is never published.
/// Members are written in lexicographic order. A wallet may spell its own
/// `did:jwk` differently; when a proof names the key by a `did:jwk` `kid`,
/// use that DID as given rather than rebuilding it here.
pub fn did_jwk(jwk: &Value) -> String {
    let members = Value::Object(public_members(jwk));
    format!("{DID_JWK_PREFIX}{}", b64url(members.to_string().as_bytes()))
}

/// The public JWK named by a `did:jwk`, or by its DID URL `did:jwk:...#0`
/// (the form a proof's `kid` takes). Refuses input over
/// [`MAX_DID_JWK_LEN`], other fragments, anything that is not base64url of
/// a JSON object with a `kty`, and keys with private or symmetric members.
pub fn parse_did_jwk(did_or_kid: &str) -> Result<Value, FormatError> {
    if did_or_kid.len() > MAX_DID_JWK_LEN {
        return Err(FormatError::DidJwk("longer than allowed"));
    }
    let did = match did_or_kid.split_once('#') {
        Some((did, "0")) => did,
        Some(_) => return Err(FormatError::DidJwk("the only fragment allowed is #0")),
        None => did_or_kid,
    };
    let encoded = did
        .strip_prefix(DID_JWK_PREFIX)
        .ok_or(FormatError::DidJwk("it does not start with did:jwk:"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| FormatError::DidJwk("the key is not base64url"))?;
    let Ok(Value::Object(jwk)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(FormatError::DidJwk("the key is not a JSON object"));
    };
    if has_private_members(&jwk) {
        return Err(FormatError::DidJwk(
            "the key contains private or symmetric key material",
        ));
    }
    if !jwk.get("kty").is_some_and(Value::is_string) {
        return Err(FormatError::DidJwk("the key has no kty"));
    }
    Ok(Value::Object(jwk))
}

/// The key members of a JWK object; nothing for anything else.
fn public_members(jwk: &Value) -> Map<String, Value> {
    PUBLIC_KEY_MEMBERS
        .iter()
        .filter_map(|member| Some(((*member).to_owned(), jwk.get(*member)?.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_web_maps_host_port_and_path_as_the_method_says() {
        let cases = [
            ("https://notary.example", "did:web:notary.example"),
            ("https://notary.example/", "did:web:notary.example"),
            ("https://Notary.Example:443", "did:web:notary.example"),
            ("https://localhost:8443", "did:web:localhost%3A8443"),
            ("https://h.example/a/b", "did:web:h.example:a:b"),
            (
                "https://h.example:8443/a/b/",
                "did:web:h.example%3A8443:a:b",
            ),
            ("https://h.example/x%20y", "did:web:h.example:x%20y"),
        ];
        for (url, did) in cases {
            assert_eq!(did_web(url).as_deref(), Ok(did), "{url}");
        }
    }

    #[test]
    fn did_web_refuses_what_cannot_map_back_to_the_url() {
        for url in [
            "http://notary.example",
            "ftp://notary.example",
            "https://127.0.0.1",
            "https://[::1]:8443",
            "https://user:pw@notary.example",
            "https://notary.example/?q=1",
            "https://notary.example/#f",
            "https://notary.example/a//b",
            "https://notary.example/a:b",
            "notary.example",
            "",
        ] {
            assert!(
                matches!(did_web(url), Err(FormatError::DidWeb(_))),
                "{url} must be refused"
            );
        }
    }

    #[test]
    fn the_did_document_names_each_key_for_assertion_and_authentication() {
        let did = "did:web:notary.example";
        let keys = [
            json!({"kty": "EC", "crv": "P-256", "x": "ex", "y": "ey", "kid": "k1", "alg": "ES256", "use": "sig"}),
            json!({"kty": "OKP", "crv": "Ed25519", "x": "ox", "kid": "k2", "d": "private"}),
        ];
        let document = did_web_document(did, &keys).unwrap();
        assert_eq!(
            document["@context"],
            json!([
                "https://www.w3.org/ns/did/v1",
                "https://w3id.org/security/suites/jws-2020/v1"
            ])
        );
        assert_eq!(document["id"], did);
        let ids = json!(["did:web:notary.example#k1", "did:web:notary.example#k2"]);
        assert_eq!(document["assertionMethod"], ids);
        assert_eq!(document["authentication"], ids);
        let methods = document["verificationMethod"].as_array().unwrap();
        assert_eq!(
            methods[0],
            json!({
                "id": "did:web:notary.example#k1",
                "type": "JsonWebKey2020",
                "controller": did,
                "publicKeyJwk": {"kty": "EC", "crv": "P-256", "x": "ex", "y": "ey", "kid": "k1", "alg": "ES256"},
            })
        );
        assert_eq!(
            methods[1]["publicKeyJwk"],
            json!({"kty": "OKP", "crv": "Ed25519", "x": "ox", "kid": "k2"}),
            "no private member is published"
        );
        assert!(!document.to_string().contains("private"));

        let no_kid = [json!({"kty": "OKP", "crv": "Ed25519", "x": "ox"})];
        assert_eq!(
            did_web_document(did, &no_kid),
            Err(FormatError::KeyWithoutKid)
        );
    }

    #[test]
    fn did_jwk_round_trips_with_and_without_the_fragment() {
        let jwk =
            json!({"kty": "EC", "crv": "P-256", "x": "ex", "y": "ey", "kid": "k", "use": "sig"});
        let did = did_jwk(&jwk);
        assert!(did.starts_with("did:jwk:"));
        let key = json!({"kty": "EC", "crv": "P-256", "x": "ex", "y": "ey"});
        assert_eq!(parse_did_jwk(&did), Ok(key.clone()));
        assert_eq!(parse_did_jwk(&format!("{did}#0")), Ok(key.clone()));
        assert_eq!(did_jwk(&key), did, "kid and use do not change the DID");
    }

    #[test]
    fn did_jwk_matches_the_method_example() {
        // did:jwk method specification, the P-256 example: written the
        // way a wallet spells it, it must parse to the same key.
        let did = "did:jwk:eyJjcnYiOiJQLTI1NiIsImt0eSI6IkVDIiwieCI6ImFjYklRaXVNczNpOF91c3pFakoydHBUdFJNNEVVM3l6OTFQSDZDZEgyVjAiLCJ5IjoiX0tjeUxqOXZXTXB0bm1LdG00NkdxRHo4d2Y3NEk1TEtncmwyR3pIM25TRSJ9";
        let jwk = parse_did_jwk(did).unwrap();
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["x"], "acbIQiuMs3i8_uszEjJ2tpTtRM4EU3yz91PH6CdH2V0");
        assert_eq!(
            did_jwk(&jwk),
            did,
            "lexicographic members give the same DID"
        );
    }

    #[test]
    fn private_keys_and_garbage_are_refused() {
        let private = json!({"kty": "EC", "crv": "P-256", "x": "ex", "y": "ey", "d": "secret"});
        let encoded = format!("did:jwk:{}", b64url(private.to_string().as_bytes()));
        assert!(matches!(
            parse_did_jwk(&encoded),
            Err(FormatError::DidJwk(_))
        ));
        assert!(!did_jwk(&private).contains(&b64url(b"secret")));
        assert_eq!(
            parse_did_jwk(&did_jwk(&private)),
            Ok(json!({"kty": "EC", "crv": "P-256", "x": "ex", "y": "ey"}))
        );

        let symmetric = json!({"kty": "oct", "k": "c2VjcmV0"});
        let encoded = format!("did:jwk:{}", b64url(symmetric.to_string().as_bytes()));
        assert!(parse_did_jwk(&encoded).is_err());

        let valid = did_jwk(&json!({"kty": "OKP", "crv": "Ed25519", "x": "ox"}));
        let too_long = format!("did:jwk:{}", "A".repeat(MAX_DID_JWK_LEN));
        for garbage in [
            "",
            "did:jwk:",
            "did:web:notary.example",
            "did:jwk:!!!",
            "did:jwk:WzEsMl0",    // [1,2]
            "did:jwk:eyJ4IjoxfQ", // {"x":1}: no kty
            &format!("{valid}#1"),
            &format!("{valid}#0#0"),
            &too_long,
        ] {
            assert!(
                matches!(parse_did_jwk(garbage), Err(FormatError::DidJwk(_))),
                "{garbage:.40} must be refused"
            );
        }
    }
}
