//! The workload's report (a pod's termination message, the training code's word):
//! `observe::report::parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Some((_, outputs))) =
        provenant::observe::report::parse(message, "registry.example.com/models/bert")
    {
        // Every output accepted is inside the run's repository.
        for output in outputs {
            assert!(provenant::observe::report::inside(
                &output.repository,
                "registry.example.com/models/bert"
            ));
        }
    }
});
