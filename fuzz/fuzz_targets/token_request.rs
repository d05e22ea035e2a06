//! The token request parser, form and JSON: any bytes, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use notary::oid4vci::token::{BodyFormat, TokenRequest};

fuzz_target!(|data: &[u8]| {
    let _ = TokenRequest::parse(BodyFormat::Form, data);
    let _ = TokenRequest::parse(BodyFormat::Json, data);
});
