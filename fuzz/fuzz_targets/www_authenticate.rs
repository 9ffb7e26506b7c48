//! A registry's `WWW-Authenticate` header: `storage::registry::parse_challenge`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provenant::storage::registry::{Challenge, parse_challenge};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(Challenge::Bearer { realm, .. }) = parse_challenge(value) {
        assert!(!realm.is_empty(), "a bearer challenge names its realm");
    }
});
