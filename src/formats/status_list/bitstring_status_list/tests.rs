use std::io::Read as _;

use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::*;
use crate::formats::status_list::zlib;
use crate::formats::test_support::{TestKey, jws_parts};
use crate::jose::{Algorithm, compact};

const LIST_URI: &str = "https://notary.example/status/9b1e";
const ISSUER: &str = "did:web:notary.example";

fn key() -> IssuerKey<'static> {
    IssuerKey {
        alg: Algorithm::ES256,
        kid: "key-1",
        x5c: None,
    }
}

/// The bitstring inside an `encodedList`, unpacked with flate2 directly
/// rather than with [`decode`].
fn raw_bitstring(encoded: &str) -> Vec<u8> {
    let compressed = URL_SAFE_NO_PAD.decode(&encoded[1..]).unwrap();
    assert_eq!(compressed[..3], [0x1F, 0x8B, 8], "GZIP magic, DEFLATE");
    assert_eq!(compressed[3..8], [0; 5], "no flags (no name), no time");
    let mut bitstring = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_end(&mut bitstring)
        .unwrap();
    bitstring
}

fn list_with(set: &[usize]) -> StatusBits {
    let mut list = StatusBits::new(1, MIN_ENTRIES).unwrap();
    for index in set {
        list.set(*index, 1).unwrap();
    }
    list
}

#[test]
fn index_0_is_the_left_most_bit_of_the_first_byte() {
    let list = list_with(&[0, 9, 15, MIN_ENTRIES - 1]);
    let bitstring = raw_bitstring(&encoded_list(&list).unwrap());
    assert_eq!(bitstring.len(), MIN_ENTRIES / 8, "16 KB");
    assert_eq!(bitstring[0], 0b1000_0000);
    assert_eq!(bitstring[1], 0b0100_0001);
    assert_eq!(bitstring[MIN_ENTRIES / 8 - 1], 0b0000_0001);
    assert!(bitstring[2..MIN_ENTRIES / 8 - 1].iter().all(|b| *b == 0));
}

#[test]
fn a_list_of_131072_entries_round_trips() {
    let set = [0, 1, 7, 8, 4242, 65_535, 65_536, 94_567, MIN_ENTRIES - 2];
    let list = list_with(&set);
    let encoded = encoded_list(&list).unwrap();
    assert!(encoded.starts_with('u'));
    assert!(encoded.len() < 1000, "a sparse list compresses well");
    let decoded = decode(&encoded).unwrap();
    assert_eq!(decoded, list);
    for index in 0..MIN_ENTRIES {
        assert_eq!(decoded.get(index), Some(u8::from(set.contains(&index))));
    }
}

#[test]
fn the_recommendations_example_list_decodes_to_16_kb_of_zeros() {
    // The encodedList of the BitstringStatusListCredential example.
    let example = "uH4sIAAAAAAAAA-3BMQEAAADCoPVPbQwfoAAAAAAAAAAAAAAAAAAAAIC3AYbSVKsAQAAA";
    let decoded = decode(example).unwrap();
    assert_eq!(decoded, StatusBits::new(1, MIN_ENTRIES).unwrap());
}

#[test]
fn short_lists_other_widths_and_malformed_encodings_are_refused() {
    let short = StatusBits::new(1, MIN_ENTRIES - 1).unwrap();
    assert!(matches!(
        encoded_list(&short),
        Err(FormatError::StatusList(_))
    ));
    let wide = StatusBits::new(2, MIN_ENTRIES).unwrap();
    assert!(matches!(
        encoded_list(&wide),
        Err(FormatError::StatusList(_))
    ));

    let encoded = encoded_list(&list_with(&[3])).unwrap();
    let short_gzip = format!("u{}", b64url(&gzip(&[0; MIN_ENTRIES / 8 - 1]).unwrap()));
    for bad in [
        encoded[1..].to_string(),
        format!("z{}", &encoded[1..]),
        format!("{encoded}="),
        format!("u{}", b64url(&zlib(&[0; MIN_ENTRIES / 8]).unwrap())),
        format!("u{}", b64url(b"not gzip")),
        short_gzip,
        String::new(),
        "u".into(),
    ] {
        assert!(
            matches!(decode(&bad), Err(FormatError::StatusList(_))),
            "{bad:.20}"
        );
    }
    // Longer than the minimum is fine.
    let long = StatusBits::new(1, MIN_ENTRIES * 2).unwrap();
    assert_eq!(decode(&encoded_list(&long).unwrap()).unwrap(), long);
}

#[test]
fn the_entry_has_the_recommendations_shape() {
    assert_eq!(
        entry(LIST_URI, Purpose::Revocation, 94_567),
        json!({
            "id": "https://notary.example/status/9b1e#94567",
            "type": "BitstringStatusListEntry",
            "statusPurpose": "revocation",
            "statusListIndex": "94567",
            "statusListCredential": LIST_URI,
        })
    );
    assert_eq!(
        entry(LIST_URI, Purpose::Suspension, 0)["statusPurpose"],
        "suspension"
    );
}

fn input(purpose: Purpose) -> Input<'static> {
    Input {
        list_uri: LIST_URI,
        issuer_did: ISSUER,
        purpose,
        iat: 1_700_000_000,
        exp: 1_700_086_400,
        ttl_secs: 300,
    }
}

#[test]
fn a_signed_status_list_credential_verifies_and_has_the_recommendations_shape() {
    let signer = TestKey::new();
    let list = list_with(&[94_567]);
    let unsigned = prepare(&input(Purpose::Suspension), &list, &key()).unwrap();
    let signing_input = unsigned.signing_input();
    let jwt = compact(signing_input.clone(), &signer.sign(&signing_input));

    let claims = signer.verify(&jwt).unwrap();
    let (header, _) = jws_parts(&jwt);
    assert_eq!(
        header,
        json!({"alg": "ES256", "typ": "vc+jwt", "kid": "did:web:notary.example#key-1"})
    );
    let encoded = encoded_list(&list).unwrap();
    assert_eq!(
        claims,
        json!({
            "iss": ISSUER,
            "sub": "https://notary.example/status/9b1e#list",
            "iat": 1_700_000_000,
            "nbf": 1_700_000_000,
            "exp": 1_700_086_400,
            "jti": LIST_URI,
            "vc": {
                "@context": ["https://www.w3.org/ns/credentials/v2"],
                "id": LIST_URI,
                "type": ["VerifiableCredential", "BitstringStatusListCredential"],
                "issuer": ISSUER,
                "validFrom": "2023-11-14T22:13:20Z",
                "validUntil": "2023-11-15T22:13:20Z",
                "credentialSubject": {
                    "id": "https://notary.example/status/9b1e#list",
                    "type": "BitstringStatusList",
                    "statusPurpose": "suspension",
                    "encodedList": encoded,
                    "ttl": 300_000,
                },
            },
        })
    );
    for date in ["validFrom", "validUntil"] {
        let text = claims["vc"][date].as_str().unwrap();
        let parsed = OffsetDateTime::parse(text, &Rfc3339).unwrap();
        assert_eq!(parsed.offset(), time::UtcOffset::UTC);
    }
    let subject = &claims["vc"]["credentialSubject"];
    let decoded = decode(subject["encodedList"].as_str().unwrap()).unwrap();
    assert_eq!(decoded.get(94_567), Some(1));
    assert_eq!(decoded.get(94_568), Some(0));
}

#[test]
fn bad_lifetimes_ttls_and_lists_are_refused() {
    let list = list_with(&[]);
    let backwards = Input {
        exp: 1_700_000_000,
        ..input(Purpose::Revocation)
    };
    assert_eq!(
        prepare(&backwards, &list, &key()),
        Err(FormatError::Validity)
    );
    for ttl_secs in [0, -5, i64::MAX] {
        let bad = Input {
            ttl_secs,
            ..input(Purpose::Revocation)
        };
        assert!(
            matches!(
                prepare(&bad, &list, &key()),
                Err(FormatError::StatusList(_))
            ),
            "ttl {ttl_secs}"
        );
    }
    let far = Input {
        exp: 285_000_000_000,
        ..input(Purpose::Revocation)
    };
    assert_eq!(prepare(&far, &list, &key()), Err(FormatError::Time));
    let short = StatusBits::new(1, 1024).unwrap();
    assert!(prepare(&input(Purpose::Revocation), &short, &key()).is_err());
}
