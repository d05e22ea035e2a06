//! The audit export reader and verifier (`notary audit verify --export`):
//! any bytes, no panic, no overflow on sequence numbers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use notary::audit::NoteVerifier;
use notary::issuance::audit_log::{parse_export, verify_records};
use notary::jose::PublicKey;

fuzz_target!(|data: &[u8]| {
    let Ok((entries, checkpoints)) = parse_export(data) else {
        return;
    };
    for key in [PublicKey::Ed25519([0x3b; 32]), p256_generator()] {
        let verifier = NoteVerifier {
            name: "localhost/notary-audit".to_owned(),
            key,
        };
        for whole_chain in [false, true] {
            let _ = verify_records(&entries, &checkpoints, &verifier, whole_chain);
        }
    }
});

/// A valid P-256 point (the curve's generator), so ES256 checkpoints reach
/// the signature check instead of stopping at the key.
fn p256_generator() -> PublicKey {
    let hex = |s: &str| -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0);
        }
        out
    };
    PublicKey::P256 {
        x: hex("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"),
        y: hex("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"),
    }
}
