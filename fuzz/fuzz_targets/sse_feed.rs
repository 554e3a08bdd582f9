//! The revocation feed's server-sent-events reader in tessera-verify: never a panic, and the
//! same events however the stream is cut into chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_verify::fuzzing::sse_events;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let whole = sse_events(&[stream]);
    let at = usize::from(cut).min(stream.len());
    let halves = sse_events(&[&stream[..at], &stream[at..]]);
    match (&whole, &halves) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        // Cut, the stream may fail at the first half (an event too large) where whole it fails
        // too: both refuse.
        (Err(_), Err(_)) => {}
        _ => panic!("whole {whole:?}, cut at {at}: {halves:?}"),
    }
    if let Ok(events) = whole {
        for (_, _, data) in events {
            let _ = serde_json::from_str::<tessera_jose::RevocationEvent>(&data);
        }
    }
});
