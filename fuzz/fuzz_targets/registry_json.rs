//! What a registry answers, read by the registry store: token responses
//! (`parse_token_response`: the lifetime must be bounded, so that adding it to an `Instant`
//! never panics) and error bodies (`error_summary`). Manifests and indexes go through the same
//! read side for a registry and a layout: the `oci_layout` target.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use provenant::storage::registry::{MAX_TOKEN_LIFETIME, error_summary, parse_token_response};

fuzz_target!(|data: &[u8]| {
    if let Ok((token, lifetime)) = parse_token_response(data) {
        assert!(!token.is_empty());
        assert!(lifetime <= MAX_TOKEN_LIFETIME, "{lifetime:?}");
        let _ = Instant::now() + lifetime;
    }
    let _ = error_summary(data);
});
