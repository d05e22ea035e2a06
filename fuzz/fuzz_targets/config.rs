//! The config loader (TOML, typed fields, validation): any string, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use notary::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = Config::parse(text, std::path::Path::new("/etc/notary/notary.toml"));
});
