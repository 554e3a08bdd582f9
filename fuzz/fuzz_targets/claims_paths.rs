//! The claims fast path against the strict serde path: whenever the fast path answers, the
//! strict path answers the same claims (the fast path may only ever leave a text to it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_jose::fuzzing::{claims_fast, claims_strict};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(fast) = claims_fast(text) {
        assert_eq!(
            Ok(fast),
            claims_strict(text),
            "the paths disagree on {text:?}"
        );
    }
});
