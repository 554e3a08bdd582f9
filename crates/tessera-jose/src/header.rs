//! The JOSE header of a JWS: parsed strictly, with `crit` and `b64` enforced, and with the
//! key-carrying members (`jku`, `x5u`, `jwk`, `x5c`, `x5t`, `x5t#S256`) read only to be ignored
//! (each must still have its registered type), and the JWE members `enc` and `zip` refused.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};

use crate::alg::Algorithm;
use crate::error::{Error, Malformed};
use crate::json::{CowStr, Ctx, Seen, StrictValue};

/// The header members tessera acts on. Every other member is checked for well-formedness and
/// dropped: in particular `jku`, `x5u`, `jwk` and `x5c` never select, supply or fetch a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    /// The algorithm the token claims; accepted only if it is the one bound to the key.
    pub alg: Algorithm,
    /// Key id (shared with the key that verified the token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<Arc<str>>,
    /// Media type of the whole token (`at+jwt` for RFC 9068 access tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typ: Option<Cow<'static, str>>,
    /// Media type of the payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cty: Option<Cow<'static, str>>,
}

/// Media types common enough to keep without an allocation.
fn media_type(s: Cow<'_, str>) -> Cow<'static, str> {
    match s.as_ref() {
        "at+jwt" => Cow::Borrowed("at+jwt"),
        "JWT" => Cow::Borrowed("JWT"),
        "application/at+jwt" => Cow::Borrowed("application/at+jwt"),
        _ => Cow::Owned(s.into_owned()),
    }
}

/// A parsed header and the `kid` it names, still borrowed from the input: the verifier looks the
/// key up with it, then shares the key's own `kid` with the header.
pub(crate) struct Parsed<'a> {
    pub header: Header,
    pub kid: Option<Cow<'a, str>>,
}

impl Serialize for Algorithm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Header members that RFC 7515/7518 define: they may never appear in `crit` (RFC 7515 §4.1.11).
const REGISTERED: &[&str] = &[
    "alg", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty", "crit", "enc",
    "zip", "epk", "apu", "apv", "iv", "tag", "p2s", "p2c",
];

struct HeaderSeed<'c>(&'c Ctx);

struct Raw<'a> {
    alg: Option<Result<Algorithm, Error>>,
    kid: Option<Cow<'a, str>>,
    typ: Option<Cow<'static, str>>,
    cty: Option<Cow<'static, str>>,
    crit: Option<Vec<String>>,
    b64: Option<bool>,
    names: Vec<String>,
    /// A member that makes the token something other than a JWS tessera verifies.
    refused: Option<Error>,
}

impl<'de> DeserializeSeed<'de> for HeaderSeed<'_> {
    type Value = Raw<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Raw<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeaderSeed<'_> {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JOSE header object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
        let ctx = self.0;
        let mut seen = Seen::default();
        let mut raw = Raw {
            alg: None,
            kid: None,
            typ: None,
            cty: None,
            crit: None,
            b64: None,
            names: Vec::new(),
            refused: None,
        };
        while let Some(CowStr(name)) = map.next_key::<CowStr<'de>>()? {
            let bit = match name.as_ref() {
                "alg" => 0,
                "kid" => 1,
                "typ" => 2,
                "cty" => 3,
                "crit" => 4,
                "b64" => 5,
                "jku" => 6,
                "x5u" => 7,
                "x5t" => 8,
                "x5t#S256" => 9,
                "jwk" => 10,
                "x5c" => 11,
                "enc" => 12,
                "zip" => 13,
                _ => 31,
            };
            let fresh = if bit == 31 {
                seen.other(name.clone())
            } else {
                seen.known(bit)
            };
            if !fresh {
                return Err(ctx.fail(Malformed::DuplicateMember));
            }
            match bit {
                0 => {
                    let CowStr(a) = map
                        .next_value::<CowStr<'de>>()
                        .map_err(|_: A::Error| ctx.fail::<A::Error>(Malformed::MissingAlg))?;
                    raw.alg = Some(match Algorithm::from_name(&a) {
                        Some(alg) => Ok(alg),
                        None if a.eq_ignore_ascii_case("none") => {
                            Err(Error::Unsupported("unsecured JWS (alg none)"))
                        }
                        None => Err(Error::Unsupported("algorithm")),
                    });
                }
                1 => raw.kid = Some(map.next_value::<CowStr<'de>>()?.0),
                2 => raw.typ = Some(media_type(map.next_value::<CowStr<'de>>()?.0)),
                3 => raw.cty = Some(media_type(map.next_value::<CowStr<'de>>()?.0)),
                4 => raw.crit = Some(map.next_value::<Vec<String>>()?),
                5 => raw.b64 = Some(map.next_value::<bool>()?),
                // RFC 7515 §4.1.2–4.1.8: read for their types only; never used.
                6..=9 => {
                    map.next_value::<CowStr<'de>>()?;
                }
                10 => {
                    let jwk = map.next_value_seed(StrictValue { ctx, depth: 1 })?;
                    if !jwk.is_object() {
                        return Err(ctx.fail(Malformed::Header));
                    }
                }
                11 => {
                    map.next_value::<Vec<CowStr<'de>>>()?;
                }
                // RFC 7516 §9: `enc` is what marks a JWE.
                12 => return Err(ctx.fail(Malformed::Header)),
                13 => {
                    map.next_value_seed(StrictValue { ctx, depth: 1 })?;
                    raw.refused = Some(Error::Unsupported("compressed payload (zip)"));
                }
                _ => {
                    map.next_value_seed(StrictValue { ctx, depth: 1 })?;
                    raw.names.push(name.into_owned());
                }
            }
        }
        Ok(raw)
    }
}

impl Header {
    /// Parses decoded header bytes strictly; the `kid` stays borrowed.
    pub(crate) fn parse(bytes: &[u8], max_depth: usize) -> Result<Parsed<'_>, Error> {
        let ctx = Ctx::new(max_depth);
        // Validating UTF-8 once up front is cheaper than serde_json doing it string by string.
        let text = std::str::from_utf8(bytes).map_err(|_| Error::Malformed(Malformed::Header))?;
        let mut de = serde_json::Deserializer::from_str(text);
        let raw = HeaderSeed(&ctx)
            .deserialize(&mut de)
            .and_then(|r| de.end().map(|()| r))
            .map_err(|_| Error::Malformed(ctx.reason(Malformed::Header)))?;
        let alg = raw.alg.ok_or(Malformed::MissingAlg)??;
        if let Some(refused) = raw.refused {
            return Err(refused);
        }
        if let Some(crit) = &raw.crit {
            // We implement no extension but `b64`, and only its default value (true).
            if crit.is_empty() {
                return Err(Malformed::Header.into());
            }
            for (i, name) in crit.iter().enumerate() {
                if crit[..i].contains(name) || REGISTERED.contains(&name.as_str()) {
                    return Err(Malformed::Header.into());
                }
                let present = match name.as_str() {
                    "b64" => raw.b64.is_some(),
                    other => raw.names.iter().any(|n| n == other),
                };
                if !present {
                    return Err(Malformed::Header.into());
                }
                if name != "b64" {
                    return Err(Error::Unsupported("critical header extension"));
                }
            }
        }
        match raw.b64 {
            Some(false) => return Err(Error::Unsupported("unencoded payload (b64: false)")),
            Some(true) if !raw.crit.iter().flatten().any(|c| c == "b64") => {
                // RFC 7797 §6: b64 must be listed in crit when present.
                return Err(Malformed::Header.into());
            }
            _ => {}
        }
        Ok(Parsed {
            header: Header {
                alg,
                kid: None,
                typ: raw.typ,
                cty: raw.cty,
            },
            kid: raw.kid,
        })
    }
}
