//! `tessera decode`: a token's header and claims, times made readable; nothing is checked.

use serde_json::{Map, Value, json};
use tessera_jose::{Clock, SystemClock, dangerous};

use crate::humantime::{relative, utc};
use crate::{Failure, out};

/// Arguments of `tessera decode`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The token, or `-` to read it from stdin.
    token: String,
    /// Print one JSON object (header, claims, times) for scripts.
    #[arg(long)]
    json: bool,
}

const DATE_CLAIMS: [&str; 3] = ["exp", "nbf", "iat"];

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let token = super::token_arg(&args.token)?;
    // Decoding is for inspection: allow tokens up to the input cap, not just the verifier's.
    let decoded = dangerous::decode_unverified(&token, 64 * 1024)
        .map_err(|e| Failure::refused(format!("cannot decode the token: {e}")))?;
    let now = SystemClock.now();
    let mut times = Map::new();
    if let Some(Value::Object(claims)) = &decoded.claims {
        for name in DATE_CLAIMS {
            if let Some(v) = claims.get(name) {
                let entry = match v.as_f64() {
                    // Truncation to whole seconds is what NumericDate comparison does anyway.
                    #[allow(clippy::cast_possible_truncation)]
                    Some(secs) if secs.is_finite() && secs.abs() < 1e15 => {
                        let secs = secs.trunc() as i64;
                        json!({"unix": secs, "utc": utc(secs), "relative": relative(name, secs, now)})
                    }
                    _ => json!({"error": "not a NumericDate (a JSON number of seconds)"}),
                };
                times.insert(name.to_owned(), entry);
            }
        }
    }
    let payload_text = match &decoded.claims {
        Some(c) => c.clone(),
        None => Value::String(String::from_utf8_lossy(&decoded.payload).into_owned()),
    };
    if args.json {
        let doc = json!({
            "header": decoded.header,
            "claims": decoded.claims,
            "payload": if decoded.claims.is_none() { payload_text } else { Value::Null },
            "times": times,
            "signature_bytes": decoded.signature_len,
            "signature_checked": false,
        });
        out(&format!("{}\n", super::pretty(&doc)));
        return Ok(());
    }
    let mut text = String::new();
    text.push_str("Header:\n");
    text.push_str(&super::pretty(&decoded.header));
    text.push('\n');
    if decoded.claims.is_some() {
        text.push_str("Claims:\n");
    } else {
        text.push_str("Payload (not a JSON object):\n");
    }
    text.push_str(&super::pretty(&payload_text));
    text.push('\n');
    if !times.is_empty() {
        text.push_str("Times:\n");
        for (name, t) in &times {
            match (t.get("utc"), t.get("relative")) {
                (Some(Value::String(u)), Some(Value::String(r))) => {
                    text.push_str(&format!("  {name}  {u}  ({r})\n"));
                }
                _ => text.push_str(&format!("  {name}  not a NumericDate\n")),
            }
        }
    }
    text.push_str(&format!(
        "Signature: {} bytes, NOT checked: this output says nothing about who made the token.\n",
        decoded.signature_len
    ));
    out(&text);
    Ok(())
}
