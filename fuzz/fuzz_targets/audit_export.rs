//! The audit export reader and verifier (`notary audit verify --export`):
//! any bytes, no panic, no overflow on sequence numbers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use notary::audit::NoteVerifier;
use notary::issuance::audit_log::{parse_export, verify_records};

fuzz_target!(|data: &[u8]| {
    let Ok((entries, checkpoints)) = parse_export(data) else {
        return;
    };
    let verifier = NoteVerifier {
        name: "localhost/notary-audit".to_owned(),
        public_key: [0x3b; 32],
    };
    for whole_chain in [false, true] {
        let _ = verify_records(&entries, &checkpoints, &verifier, whole_chain);
    }
});
