//! Tests of SD-JWT VC issuance: each credential is signed with a software
//! key, then taken apart by hand and verified with `jsonwebtoken`.

use super::*;
use crate::formats::test_support::{TestKey, b64_json, jws_parts};
use crate::jose::Algorithm;

const ISSUER: &str = "https://notary.example";

fn claims() -> Map<String, Value> {
    json!({
        "given_name": "Erika-Secret",
        "family_name": "Mustermann-Secret",
        "address": {"street_address": "Geheimweg 7"},
        "degree": "MSc",
    })
    .as_object()
    .unwrap()
    .clone()
}

/// Salts 1, 2, 3, ... in every byte: fixed, and distinct per call.
fn counting_salts() -> impl FnMut() -> [u8; 16] {
    let mut n = 0u8;
    move || {
        n += 1;
        [n; 16]
    }
}

fn issue(
    claims: &Map<String, Value>,
    visible: &[&str],
    x5c: Option<&[String]>,
    signer: &TestKey,
) -> Result<String, FormatError> {
    let visible: BTreeSet<String> = visible.iter().map(|s| s.to_string()).collect();
    let holder = json!({"kty": "EC", "crv": "P-256", "x": "hx", "y": "hy"});
    let status = json!({"status_list": {"idx": 7, "uri": "https://notary.example/status/1"}});
    let input = Input {
        issuer: ISSUER,
        vct: "https://notary.example/vct/degree",
        claims,
        always_visible: &visible,
        holder_jwk: &holder,
        iat: 1_700_000_000,
        exp: 1_700_086_400,
        status: Some(&status),
    };
    let key = IssuerKey {
        alg: Algorithm::ES256,
        kid: "issuer-kid",
        x5c,
    };
    let prepared = prepare(&input, &key, &mut counting_salts())?;
    let signing_input = prepared.unsigned.signing_input();
    let signature = signer.sign(&signing_input);
    Ok(assemble(signing_input, &signature, &prepared.disclosures))
}

/// Splits an issued SD-JWT by hand: the JWS, the disclosures, and the
/// empty element after the trailing `~`.
fn split(sd_jwt: &str) -> (&str, Vec<&str>) {
    let mut parts: Vec<&str> = sd_jwt.split('~').collect();
    assert_eq!(
        parts.pop(),
        Some(""),
        "an SD-JWT without key binding ends in ~"
    );
    let jws = parts.remove(0);
    (jws, parts)
}

#[test]
fn the_rfc_9901_example_disclosure_has_the_published_digest() {
    // RFC 9901 §4.2.3: the family_name "Möbius" disclosure.
    assert_eq!(
        digest("WyJfMjZiYzRMVC1hYzZxMktJNmNCVzVlcyIsICJmYW1pbHlfbmFtZSIsICJNw7ZiaXVzIl0"),
        "X9yH0Ajrdm1Oij4tWso9UzzKJvPoDxwmuEcO3XAdRC0"
    );
}

#[test]
fn an_issued_sd_jwt_verifies_and_discloses_each_hidden_claim_once() {
    let signer = TestKey::new();
    let claims = claims();
    let sd_jwt = issue(&claims, &["degree"], None, &signer).unwrap();
    let (jws, disclosures) = split(&sd_jwt);

    let verified = signer.verify(jws).unwrap();
    let (header, payload_text) = jws_parts(jws);
    assert_eq!(
        header,
        json!({"alg": "ES256", "typ": "dc+sd-jwt", "kid": "issuer-kid"})
    );
    assert_eq!(verified["iss"], ISSUER);
    assert_eq!(verified["iat"], 1_700_000_000);
    assert_eq!(verified["exp"], 1_700_086_400);
    assert_eq!(verified["vct"], "https://notary.example/vct/degree");
    assert_eq!(verified["cnf"]["jwk"]["x"], "hx");
    assert_eq!(verified["status"]["status_list"]["idx"], 7);
    assert_eq!(verified["_sd_alg"], "sha-256");
    assert_eq!(verified["degree"], "MSc", "a visible claim is in the clear");

    let sd: Vec<&str> = verified["_sd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    let mut sorted = sd.clone();
    sorted.sort_unstable();
    assert_eq!(sd, sorted, "_sd is sorted");
    assert_eq!((sd.len(), disclosures.len()), (3, 3));

    let mut disclosed = Map::new();
    let mut salts = BTreeSet::new();
    for disclosure in &disclosures {
        let hash = b64url(&Sha256::digest(disclosure.as_bytes()));
        assert!(sd.contains(&hash.as_str()), "each digest is listed in _sd");
        let array = b64_json(disclosure);
        let [salt, name, value] = array.as_array().unwrap().as_slice() else {
            panic!("a disclosure is [salt, name, value]");
        };
        assert_eq!(salt.as_str().unwrap().len(), 22, "128-bit salt, base64url");
        assert!(salts.insert(salt.to_string()), "salts differ per claim");
        disclosed.insert(name.as_str().unwrap().to_owned(), value.clone());
    }
    let mut hidden = claims.clone();
    hidden.remove("degree");
    assert_eq!(
        disclosed, hidden,
        "every hidden claim is disclosed as given"
    );

    for name in hidden.keys() {
        assert!(verified.get(name).is_none());
        assert!(
            !payload_text.contains(name.as_str()),
            "{name} leaks by name"
        );
    }
    for secret in ["Erika-Secret", "Mustermann-Secret", "Geheimweg"] {
        assert!(!payload_text.contains(secret), "a hidden value leaks");
    }
}

#[test]
fn a_tampered_sd_jwt_does_not_verify() {
    let signer = TestKey::new();
    let sd_jwt = issue(&claims(), &[], None, &signer).unwrap();
    let (jws, _) = split(&sd_jwt);
    let [head, _, signature] = jws.split('.').collect::<Vec<_>>()[..] else {
        panic!("a compact JWS");
    };
    let (_, payload) = jws_parts(jws);
    let forged_payload = payload.replace(ISSUER, "https://forger.example");
    assert_ne!(forged_payload, payload);
    let forged = format!("{head}.{}.{signature}", b64url(forged_payload.as_bytes()));
    assert!(signer.verify(&forged).is_err(), "a changed payload");
    assert!(TestKey::new().verify(jws).is_err(), "another key");
}

#[test]
fn x5c_is_in_the_header_only_when_given_and_never_empty() {
    let signer = TestKey::new();
    let chain = vec!["TUlJQg==".to_owned(), "TUlJQw==".to_owned()];
    let with = issue(&claims(), &[], Some(&chain), &signer).unwrap();
    let (header, _) = jws_parts(split(&with).0);
    assert_eq!(header["x5c"], json!(chain));
    signer.verify(split(&with).0).unwrap();

    let without = issue(&claims(), &[], None, &signer).unwrap();
    assert!(jws_parts(split(&without).0).0.get("x5c").is_none());

    assert_eq!(
        issue(&claims(), &[], Some(&[]), &signer),
        Err(FormatError::EmptyCertificateChain)
    );
}

#[test]
fn with_every_claim_visible_there_is_no_sd_and_no_disclosure() {
    let signer = TestKey::new();
    let names = ["given_name", "family_name", "address", "degree"];
    let sd_jwt = issue(&claims(), &names, None, &signer).unwrap();
    let (jws, disclosures) = split(&sd_jwt);
    assert!(disclosures.is_empty());
    assert_eq!(sd_jwt.matches('~').count(), 1);
    let verified = signer.verify(jws).unwrap();
    assert!(verified.get("_sd").is_none());
    assert_eq!(verified["address"]["street_address"], "Geheimweg 7");
}

#[test]
fn reserved_claims_and_nested_sd_members_are_refused_by_name_without_their_value() {
    let signer = TestKey::new();
    for name in RESERVED_CLAIMS {
        let mut claims = claims();
        claims.insert(name.to_owned(), json!("Forged-Value-1"));
        for visible in [&[][..], &[name][..]] {
            let error = issue(&claims, visible, None, &signer).unwrap_err();
            assert_eq!(error, FormatError::ReservedClaim(name.to_owned()));
            let message = error.to_string();
            assert!(message.contains(name) && !message.contains("Forged"));
        }
    }
    for nested in [
        json!({"street": "x", "_sd": ["Forged-Digest"]}),
        json!([{"...": "Forged-Digest"}]),
        json!({"a": [[{"b": {"...": "Forged-Digest"}}]]}),
    ] {
        let mut claims = claims();
        claims.insert("address".into(), nested);
        for visible in [&[][..], &["address"][..]] {
            let error = issue(&claims, visible, None, &signer).unwrap_err();
            assert_eq!(error, FormatError::NestedSdMember("address".into()));
            assert!(!error.to_string().contains("Forged"));
        }
    }
    let mut with_sub = claims();
    with_sub.insert("sub".into(), json!("subject-1"));
    assert!(
        issue(&with_sub, &[], None, &signer).is_ok(),
        "sub is a claim"
    );
}

#[test]
fn a_private_or_malformed_holder_key_and_a_backwards_lifetime_are_refused() {
    let visible = BTreeSet::new();
    let claims = claims();
    let key = IssuerKey {
        alg: Algorithm::EdDSA,
        kid: "k",
        x5c: None,
    };
    let private = json!({"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "d": "secret"});
    let not_object = json!("did:jwk:abc");
    let public = json!({"kty": "OKP", "crv": "Ed25519", "x": "a"});
    let input = |holder_jwk, exp| Input {
        issuer: ISSUER,
        vct: "v",
        claims: &claims,
        always_visible: &visible,
        holder_jwk,
        iat: 100,
        exp,
        status: None,
    };
    let mut salts = counting_salts();
    let err = |i: Input, s: &mut dyn FnMut() -> [u8; 16]| prepare(&i, &key, s).unwrap_err();
    assert!(matches!(
        err(input(&private, 200), &mut salts),
        FormatError::HolderKey(_)
    ));
    assert!(matches!(
        err(input(&not_object, 200), &mut salts),
        FormatError::HolderKey(_)
    ));
    assert_eq!(err(input(&public, 100), &mut salts), FormatError::Validity);
    let ok = prepare(&input(&public, 101), &key, &mut salts).unwrap();
    assert_eq!(ok.unsigned.header["alg"], "EdDSA");
    assert!(ok.unsigned.payload.get("status").is_none());
}
