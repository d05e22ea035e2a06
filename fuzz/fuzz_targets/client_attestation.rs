//! Client attestation and PoP checks: two strings (split at the first
//! newline), a fixed trust list, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use notary::oid4vci::attestation::{Expected, TrustedProviders, check};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (attestation, pop) = text.split_once('\n').unwrap_or((text, ""));
    let trusted = TrustedProviders::from_jwks(&serde_json::json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "p1"}
    ]}))
    .unwrap();
    let expected = Expected { audience: "https://notary.example", now: 1_800_000_000, max_age: 300 };
    let _ = check(attestation, pop, &trusted, expected);
});
