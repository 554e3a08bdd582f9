//! PEM armour (RFC 7468) around DER: one block of the expected label, standard base64 body.

use base64_simd::STANDARD;

use crate::error::Error;

/// Decodes the first PEM block labelled `label`, ignoring text around it.
pub(crate) fn decode(pem: &str, label: &str) -> Result<Vec<u8>, Error> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem
        .find(&begin)
        .ok_or(Error::InvalidKey("no PEM block of the expected kind"))?
        + begin.len();
    let stop = pem[start..]
        .find(&end)
        .ok_or(Error::InvalidKey("unterminated PEM block"))?
        + start;
    let body: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD
        .decode_to_vec(body)
        .map_err(|_| Error::InvalidKey("PEM body is not base64"))
}

/// Encodes DER as a PEM block with 64-character lines.
pub(crate) fn encode(der: &[u8], label: &str) -> String {
    let body = STANDARD.encode_to_string(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
