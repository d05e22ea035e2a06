//! The admin API's offer request body: any bytes, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use notary::issuance::CreateOffer;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<CreateOffer>(data);
});
