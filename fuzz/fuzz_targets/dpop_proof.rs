//! DPoP proof checks (JWS parsing, JWK import, signature, claims): any
//! string, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use notary::oid4vci::dpop::{Expected, check};

fuzz_target!(|data: &[u8]| {
    let Ok(proof) = std::str::from_utf8(data) else { return };
    let htu = url::Url::parse("https://notary.example/oid4vci/token").unwrap();
    let _ = check(proof, Expected { htm: "POST", htu: &htu, now: 1_800_000_000, max_age: 300, access_token: Some("at") });
});
