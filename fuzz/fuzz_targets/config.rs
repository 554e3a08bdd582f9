//! Configuration: TOML text and `TESSERA_…` variables through the server's settings table, and
//! durations. Never a panic; a configuration read is valid (its checks passed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_server::config::parse_duration;
use tessera_server::settings::{self, SETTINGS};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_duration(text);
    // The first line, if it is NAME=VALUE, is an environment variable too.
    let env: Vec<(String, String)> = text
        .lines()
        .next()
        .and_then(|l| l.split_once('='))
        .map(|(k, v)| vec![(format!("TESSERA_{k}"), v.to_owned())])
        .unwrap_or_default();
    if let Ok(mut doc) = settings::parse(text, "fuzz", env, &[SETTINGS]) {
        if let Ok(config) = settings::take::<tessera_server::Config>(&mut doc) {
            let _ = config.issuer();
            let _ = config.check_transport();
        }
    }
});
