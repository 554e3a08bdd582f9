//! Compact JWS parse + verify against a key set of every algorithm. Never a panic; and never a
//! token accepted that these keys did not sign: a token signed here, with one byte changed
//! anywhere, is refused (no malleable encoding, no second reading of a signature).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_jose::sign_jws;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let keys = common::keys();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode < 128 {
        // The input as a token, whatever it is.
        if let Ok(token) = std::str::from_utf8(rest) {
            if keys.verifier.verify_at(token, common::NOW).is_ok() {
                panic!("a token these keys did not sign was accepted: {token:?}");
            }
        }
        return;
    }
    // A token signed here: `rest` is [key, position, xor, claim bytes…].
    let [k, pos_hi, pos_lo, xor, claim @ ..] = rest else {
        return;
    };
    let key = &keys.signing[usize::from(*k) % keys.signing.len()];
    let header = format!(r#"{{"alg":"{}","kid":"{}"}}"#, key.algorithm(), key.kid());
    // Mostly under the verifier's size cap (8 KiB), which refuses longer tokens by design; a
    // kilobyte of claim bytes can still pass it once escaped (`\u0000` is six bytes, and base64
    // adds a third): both crashes this target found were this harness signing such a token.
    let claim = &claim[..claim.len().min(1024)];
    let payload = serde_json::json!({
        "exp": common::NOW + 600,
        "x": String::from_utf8_lossy(claim),
    })
    .to_string();
    let token = sign_jws(key, header.as_bytes(), payload.as_bytes()).unwrap();
    if token.len() > tessera_jose::DEFAULT_MAX_TOKEN_LEN {
        assert!(
            keys.verifier.verify_at(&token, common::NOW).is_err(),
            "a token over the size cap was accepted: {} bytes",
            token.len()
        );
        return;
    }
    assert!(
        keys.verifier.verify_at(&token, common::NOW).is_ok(),
        "a token signed here was refused: {token}"
    );
    let mut bytes = token.clone().into_bytes();
    let at = usize::from(u16::from_be_bytes([*pos_hi, *pos_lo])) % bytes.len();
    if *xor == 0 {
        return;
    }
    bytes[at] ^= xor;
    if let Ok(changed) = String::from_utf8(bytes) {
        let accepted = keys.verifier.verify_at(&changed, common::NOW);
        assert!(
            accepted.is_err(),
            "byte {at} of a signed token changed (^{xor:#04x}) and still accepted: {changed}"
        );
    }
});
