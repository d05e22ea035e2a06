//! The credential request (1.0 and draft forms) and every key proof in it
//! (JWS parsing, `jwk` or `did:jwk` key import, signature, claims): any
//! bytes, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use notary::oid4vci::credential::{CredentialRequest, ProofExpectations, check_proof};

fuzz_target!(|data: &[u8]| {
    let Ok(request) = CredentialRequest::parse(data, 4) else { return };
    let expected = ProofExpectations {
        audience: "https://notary.example",
        now: 1_800_000_000,
        max_age: 300,
    };
    for proof in &request.proofs {
        let _ = check_proof(proof, expected);
    }
});
