//! What the server reads off a request before anything else: `Authorization` (Basic, as the
//! token endpoint reads client credentials; Bearer), `Cookie`, and form bodies. Never a panic;
//! strict decoding round-trips.
#![no_main]

use axum::http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use tessera_server::{form, fuzzing::basic_credentials, http};

fuzz_target!(|data: &[u8]| {
    // A body that parses has as many pairs as non-empty pieces.
    if let Ok(pairs) = form::parse(data) {
        assert_eq!(pairs.len(), data.split(|b| *b == b'&').filter(|p| !p.is_empty()).count());
    }
    if let Ok(decoded) = form::decode_component(data) {
        // What decodes, encodes back to something that decodes to the same text.
        let encoded: String = decoded
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                b => format!("%{b:02X}"),
            })
            .collect();
        assert_eq!(
            form::decode_component(encoded.as_bytes()).as_deref(),
            Ok(decoded.as_str())
        );
    }
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value.clone());
    let _ = http::bearer(&headers);
    if let Ok(Some((id, _secret))) = basic_credentials(&headers) {
        assert!(!id.is_empty());
    }
    headers.insert(header::COOKIE, value.clone());
    headers.append(header::COOKIE, value);
    // The same cookie sent twice is trusted in neither copy.
    if let Some(v) = http::cookie(&headers, "tessera_session") {
        panic!("a doubled cookie header read as {v:?}");
    }
});
