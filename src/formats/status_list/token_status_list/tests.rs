use serde_json::json;

use super::*;
use crate::formats::test_support::{TestKey, jws_parts};
use crate::jose::{Algorithm, compact};

const LIST_URI: &str = "https://notary.example/status/7f3c";

fn key(x5c: Option<&[String]>) -> IssuerKey<'_> {
    IssuerKey {
        alg: Algorithm::ES256,
        kid: "key-1",
        x5c,
    }
}

fn list(bits: u8, statuses: &[u8]) -> StatusBits {
    let mut list = StatusBits::new(bits, statuses.len()).unwrap();
    for (index, status) in statuses.iter().enumerate() {
        list.set(index, *status).unwrap();
    }
    list
}

fn statuses(list: &StatusBits) -> Vec<u8> {
    (0..list.len()).map(|i| list.get(i).unwrap()).collect()
}

/// draft-ietf-oauth-status-list §4.1: 16 one-bit statuses.
const ONE_BIT: [u8; 16] = [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1];
/// §4.1: 12 two-bit statuses.
const TWO_BIT: [u8; 12] = [1, 2, 0, 3, 0, 1, 0, 1, 1, 2, 3, 3];

#[test]
fn the_drafts_examples_encode_to_its_bytes_and_lst() {
    for (bits, statuses_, bytes, compressed, lst) in [
        (
            1,
            &ONE_BIT[..],
            &[0xB9, 0xA3][..],
            "78dadbb918000217015d",
            "eNrbuRgAAhcBXQ",
        ),
        (
            2,
            &TWO_BIT[..],
            &[0xC9, 0x44, 0xF9][..],
            "78da3be9f2130003df0207",
            "eNo76fITAAPfAgc",
        ),
    ] {
        let list = list(bits, statuses_);
        assert_eq!(list.as_bytes(), bytes, "bits {bits}");
        let member = status_list_member(&list).unwrap();
        assert_eq!(member, json!({"bits": bits, "lst": lst}));
        let raw = URL_SAFE_NO_PAD.decode(lst).unwrap();
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, compressed);
        let decoded = decode(&member).unwrap();
        assert_eq!(decoded.as_bytes(), bytes);
        assert_eq!(&statuses(&decoded)[..statuses_.len()], statuses_);
    }
}

// The draft's test vectors (appendix "Test vectors for Status List encoding"):
// `lst` of 2^20 entries, split for line length.
const LONG_1_LST: &[&str] = &[
    "eNrt3AENwCAMAEGogklACtKQPg9LugC9k_ACvreiogEAAKkeCQAAAAAAAAAAAAAAAAAAAIBylgQA",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAXG9IAAAAAAAAAPwsJAAAAAAA",
    "AAAAAAAAvhsSAAAAAAAAAAAA7KpLAAAAAAAAAAAAAAAAAAAAAJsLCQAAAAAAAAAAADjelAAAAAAA",
    "AAAAKjDMAQAAAACAZC8L2AEb",
];

const LONG_2_LST: &[&str] = &[
    "eNrt2zENACEQAEEuoaBABP5VIO01fCjIHTMStt9ovGVIAAAAAABAbiEBAAAAAAAAAAAAAAAAAAAA",
    "AAAAAAAAAAAAAAAAAAAAAEB5WwIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAID0ugQAAAAAAAAAAAAA",
    "AAAAQG12SgAAAAAAAAAAAAAAAAAAAAAAAAAAAOCSIQEAAAAAAAAAAAAAAAAAAAAAAAD8ExIAAAAA",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAwJEuAQAAAAAAAAAAAAAAAAAAAAAAAMB9SwIAAAAA",
    "AAAAAAAAAAAAAACoYUoAAAAAAAAAAAAAAEBqH81gAQw",
];

const LONG_4_LST: &[&str] = &[
    "eNrt0EENgDAQADAIHwImkIIEJEwCUpCEBBQRHOy35Li1EjoOQGabAgAAAAAAAAAAAAAAAAAAACC1",
    "SQEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABADrsCAAAAAAAAAAAAAAAAAAAAAAAA",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAADoxaEAAAAAAAAA",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "AAAAAAAAAAAAAAAAAIIoCgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "AACArpwKAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAGhqVkAzlwIAAAAAiGVR",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABx3AoAgLpVAQAAAAAAAAAAAAAAwM89rwMA",
    "AAAAAAAAAAjsA9xMBMA",
];

#[test]
fn the_drafts_test_vectors_decode_to_their_statuses() {
    // Appendix "Test vectors for Status List encoding": 2^20 entries, all
    // VALID but these.
    let indexes = [
        0, 1993, 25460, 159495, 495669, 554353, 645645, 723232, 854545, 934534, 1000345,
    ];
    let one = [1; 11];
    let two = [1, 2, 1, 3, 1, 1, 2, 1, 1, 2, 3];
    let four_at = [
        0, 1993, 35460, 459495, 595669, 754353, 845645, 923232, 924445, 934534, 1004534, 1000345,
        1030203, 1030204, 1030205,
    ];
    let four = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    for (bits, lst, at, values) in [
        (1, LONG_1_LST, &indexes[..], &one[..]),
        (2, LONG_2_LST, &indexes[..], &two[..]),
        (4, LONG_4_LST, &four_at[..], &four[..]),
    ] {
        let member = json!({"bits": bits, "lst": lst.concat()});
        let decoded = decode(&member).unwrap();
        assert_eq!((decoded.bits(), decoded.len()), (bits, 1 << 20));
        let mut expected = StatusBits::new(bits, 1 << 20).unwrap();
        for (index, value) in at.iter().zip(values) {
            assert_eq!(
                decoded.get(*index),
                Some(*value),
                "bits {bits} index {index}"
            );
            expected.set(*index, *value).unwrap();
        }
        assert_eq!(decoded, expected, "bits {bits}: every other entry VALID");
        // Ours may compress differently; it must decode to the same list.
        assert_eq!(
            decode(&status_list_member(&expected).unwrap()).unwrap(),
            expected
        );
    }
}

#[test]
fn every_width_round_trips_through_lst() {
    for bits in [1u8, 2, 4, 8] {
        let len = 131_072;
        let mut list = StatusBits::new(bits, len).unwrap();
        let top = u8::MAX >> (8 - bits);
        for index in (0..len).step_by(97) {
            list.set(index, (index % usize::from(top) + 1) as u8)
                .unwrap();
        }
        list.set(len - 1, top).unwrap();
        let member = status_list_member(&list).unwrap();
        assert_eq!(member["bits"], bits);
        let decoded = decode(&member).unwrap();
        assert_eq!(decoded, list, "bits {bits}");
        let raw = URL_SAFE_NO_PAD
            .decode(member["lst"].as_str().unwrap())
            .unwrap();
        assert_eq!(raw[0], 0x78, "a ZLIB header");
    }
}

#[test]
fn a_malformed_status_list_member_is_refused() {
    let lst = "eNrbuRgAAhcBXQ";
    for member in [
        json!({"lst": lst}),
        json!({"bits": 3, "lst": lst}),
        json!({"bits": 257, "lst": lst}),
        json!({"bits": -1, "lst": lst}),
        json!({"bits": "1", "lst": lst}),
        json!({"bits": 1}),
        json!({"bits": 1, "lst": 5}),
        json!({"bits": 1, "lst": "eNrbuRgAAhcBXQ=="}),
        json!({"bits": 1, "lst": "eNrbuRgAAhcBXQ+/"}),
        json!({"bits": 1, "lst": b64url(b"not zlib")}),
        json!({"bits": 1, "lst": b64url(&zlib(&[]).unwrap())}),
        json!([1, lst]),
    ] {
        assert!(
            matches!(decode(&member), Err(FormatError::StatusList(_))),
            "{member}"
        );
    }
    let extra = json!({"bits": 1, "lst": lst, "aggregation_uri": "https://notary.example/a"});
    assert_eq!(decode(&extra).unwrap().as_bytes(), [0xB9, 0xA3]);
}

#[test]
fn the_reference_claim_has_the_drafts_shape() {
    assert_eq!(
        reference(LIST_URI, 94_567),
        json!({"status_list": {"idx": 94_567, "uri": LIST_URI}})
    );
}

#[test]
fn a_signed_status_list_token_verifies_and_has_the_drafts_shape() {
    let signer = TestKey::new();
    let list = list(2, &TWO_BIT);
    let unsigned = prepare(
        LIST_URI,
        &list,
        1_700_000_000,
        1_700_086_400,
        3600,
        &key(None),
    )
    .unwrap();
    let signing_input = unsigned.signing_input();
    let jwt = compact(signing_input.clone(), &signer.sign(&signing_input));

    let claims = signer.verify(&jwt).unwrap();
    let (header, _) = jws_parts(&jwt);
    assert_eq!(
        header,
        json!({"alg": "ES256", "typ": "statuslist+jwt", "kid": "key-1"})
    );
    assert_eq!(
        claims,
        json!({
            "sub": LIST_URI,
            "iat": 1_700_000_000,
            "exp": 1_700_086_400,
            "ttl": 3600,
            "status_list": {"bits": 2, "lst": "eNo76fITAAPfAgc"},
        })
    );
    let decoded = decode(&claims["status_list"]).unwrap();
    assert_eq!(decoded.get(1), Some(SUSPENDED));
    assert_eq!(decoded.get(2), Some(VALID));
    assert_eq!(decoded.get(5), Some(INVALID));
}

#[test]
fn x5c_is_in_the_header_only_when_given() {
    let list = list(1, &ONE_BIT);
    let chain = vec!["TUlJQg==".to_string()];
    let with = prepare(LIST_URI, &list, 10, 20, 5, &key(Some(&chain))).unwrap();
    assert_eq!(with.header["x5c"], json!(chain));
    let without = prepare(LIST_URI, &list, 10, 20, 5, &key(None)).unwrap();
    assert!(without.header.get("x5c").is_none());
    assert_eq!(
        prepare(LIST_URI, &list, 10, 20, 5, &key(Some(&[]))),
        Err(FormatError::EmptyCertificateChain)
    );
}

#[test]
fn a_backwards_lifetime_or_a_ttl_that_is_not_positive_is_refused() {
    let list = list(1, &ONE_BIT);
    assert_eq!(
        prepare(LIST_URI, &list, 20, 20, 5, &key(None)),
        Err(FormatError::Validity)
    );
    for ttl in [0, -1, i64::MIN] {
        assert_eq!(
            prepare(LIST_URI, &list, 10, 20, ttl, &key(None)),
            Err(FormatError::StatusList("ttl must be positive"))
        );
    }
}
