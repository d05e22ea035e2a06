//! The RFC 7512 PKCS#11 URI parser: any string, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use notary::hsm::uri::{Pkcs11Uri, label_from};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = Pkcs11Uri::parse(text);
    let _ = label_from(text, "token");
});
