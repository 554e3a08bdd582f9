//! Opaque tokens (`tss_`, `tsr_`, `tsc_`, `tsa_`): parse and checksum. Never a panic; a token
//! accepted is the text presented, of its kind, and a token made here is accepted as itself only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_core::token::{Kind, Token};

const KINDS: [Kind; 4] = [Kind::Session, Kind::Refresh, Kind::ClientSecret, Kind::Code];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut accepted = 0;
    for kind in KINDS {
        if let Some(t) = Token::parse(kind, text) {
            accepted += 1;
            assert_eq!(t.expose(), text);
            assert_eq!(t.kind(), kind);
            assert_eq!(t.hash(), Token::hash_of(text));
        }
    }
    assert!(accepted <= 1, "{text:?} parsed as two kinds");
    // One character of a real token changed: refused (the checksum covers every character).
    if let Some((&at, _)) = data.split_first() {
        let real = Token::generate(KINDS[usize::from(at) % 4]);
        let mut bytes = real.expose().as_bytes().to_vec();
        let i = usize::from(at) % bytes.len();
        let replacement = data.get(1).copied().unwrap_or(b'A');
        if bytes[i] != replacement {
            bytes[i] = replacement;
            if let Ok(changed) = String::from_utf8(bytes) {
                assert!(
                    Token::parse(real.kind(), &changed).is_none(),
                    "{changed} accepted"
                );
            }
        }
    }
});
