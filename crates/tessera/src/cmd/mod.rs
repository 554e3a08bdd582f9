//! One module per command.

pub(crate) mod client;
pub(crate) mod decode;
pub(crate) mod keys;
pub(crate) mod migrate;
pub(crate) mod serve;
pub(crate) mod store;
pub(crate) mod user;
pub(crate) mod verify;

use std::io::Read as _;

use crate::Failure;

/// The longest token read from the command line or stdin (the verifier's own cap is lower).
const MAX_INPUT: usize = 64 * 1024;

/// The token argument: itself, or stdin when it is `-`. Surrounding whitespace is dropped.
pub(crate) fn token_arg(arg: &str) -> Result<String, Failure> {
    let text = if arg == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .lock()
            .take(MAX_INPUT as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Failure::refused(format!("cannot read the token from stdin: {e}")))?;
        if buf.len() > MAX_INPUT {
            return Err(Failure::refused("the token on stdin is too large"));
        }
        String::from_utf8(buf)
            .map_err(|_| Failure::refused("the token on stdin is not UTF-8 text"))?
    } else {
        arg.to_owned()
    };
    let token = text.trim();
    if token.is_empty() {
        return Err(Failure::refused("no token given"));
    }
    Ok(token.to_owned())
}

/// The async runtime of the stateful commands.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::refused(format!("cannot start the runtime: {e}")))
}

/// Pretty JSON; serde_json cannot fail on a `Value`.
pub(crate) fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}
