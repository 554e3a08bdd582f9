//! JWT claims (RFC 7519 §4, RFC 9068 §2.2): the registered ones typed, the rest kept as JSON.
//! Parsed strictly: no duplicate names, NumericDates must be JSON numbers, nesting capped.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Malformed};
use crate::json::{CowStr, Ctx, Seen, StrictValue};

/// The `aud` claim: one string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience, serialized as a string.
    One(String),
    /// Several audiences, serialized as an array.
    Many(Vec<String>),
}

impl Audience {
    /// True if `aud` names `value`.
    pub fn contains(&self, value: &str) -> bool {
        match self {
            Audience::One(a) => a == value,
            Audience::Many(list) => list.iter().any(|a| a == value),
        }
    }

    /// The audiences as a slice.
    pub fn as_slice(&self) -> &[String] {
        match self {
            Audience::One(a) => std::slice::from_ref(a),
            Audience::Many(list) => list,
        }
    }
}

/// A JWT claims set. Registered claims and the RFC 9068 / OAuth ones tessera uses are typed;
/// anything else is kept in `extra`. Serializes back to the same JSON shape.
///
/// ```
/// use tessera_jose::Claims;
/// let claims = Claims { sub: Some("alice".into()), exp: Some(1_900_000_000), ..Claims::default() };
/// assert_eq!(serde_json::to_string(&claims).unwrap(), r#"{"sub":"alice","exp":1900000000}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Claims {
    /// Issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Audience.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Expiry, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Not before, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Issued at, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Token id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Space-separated scopes (RFC 8693 §4.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The OAuth client the token was issued to (RFC 8693 §4.3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Session id (OpenID Connect Front-Channel Logout §3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Every other claim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Claims {
    /// The strict serde path: every shape of claims object, every refusal with its reason.
    pub(crate) fn parse_strict(text: &str, ctx: &Ctx) -> Result<Claims, Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        ClaimsSeed(ctx)
            .deserialize(&mut de)
            .and_then(|c| de.end().map(|()| c))
            .map_err(|_| Error::Malformed(ctx.reason(Malformed::Claims)))
    }

    /// True if the claim named `name` is present (registered or extra).
    pub fn has(&self, name: &str) -> bool {
        match name {
            "iss" => self.iss.is_some(),
            "sub" => self.sub.is_some(),
            "aud" => self.aud.is_some(),
            "exp" => self.exp.is_some(),
            "nbf" => self.nbf.is_some(),
            "iat" => self.iat.is_some(),
            "jti" => self.jti.is_some(),
            "scope" => self.scope.is_some(),
            "client_id" => self.client_id.is_some(),
            "sid" => self.sid.is_some(),
            other => self.extra.contains_key(other),
        }
    }
}

struct ClaimsSeed<'c>(&'c Ctx);

impl<'de> DeserializeSeed<'de> for ClaimsSeed<'_> {
    type Value = Claims;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Claims, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ClaimsSeed<'_> {
    type Value = Claims;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JWT claims object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claims, A::Error> {
        let ctx = self.0;
        let mut seen = Seen::default();
        let mut c = Claims::default();
        while let Some(CowStr(name)) = map.next_key::<CowStr<'de>>()? {
            let index = match name.as_ref() {
                "iss" => Some(0),
                "sub" => Some(1),
                "aud" => Some(2),
                "exp" => Some(3),
                "nbf" => Some(4),
                "iat" => Some(5),
                "jti" => Some(6),
                "scope" => Some(7),
                "client_id" => Some(8),
                "sid" => Some(9),
                _ => None,
            };
            let fresh = match index {
                Some(i) => seen.known(i),
                None => !c.extra.contains_key(name.as_ref()),
            };
            if !fresh {
                return Err(ctx.fail(Malformed::DuplicateMember));
            }
            let string = |s: CowStr<'de>| Some(s.0.into_owned());
            match index {
                Some(0) => c.iss = string(map.next_value()?),
                Some(1) => c.sub = string(map.next_value()?),
                Some(2) => c.aud = Some(map.next_value_seed(AudSeed)?),
                Some(i @ 3..=5) => {
                    let date = Some(map.next_value_seed(DateSeed(ctx))?);
                    match i {
                        3 => c.exp = date,
                        4 => c.nbf = date,
                        _ => c.iat = date,
                    }
                }
                Some(6) => c.jti = string(map.next_value()?),
                Some(7) => c.scope = string(map.next_value()?),
                Some(8) => c.client_id = string(map.next_value()?),
                Some(_) => c.sid = string(map.next_value()?),
                None => {
                    let v = map.next_value_seed(StrictValue { ctx, depth: 1 })?;
                    c.extra.insert(name.into_owned(), v);
                }
            }
        }
        Ok(c)
    }
}

/// `aud`: a string or a non-nested array of strings.
struct AudSeed;

impl<'de> DeserializeSeed<'de> for AudSeed {
    type Value = Audience;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Audience, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AudSeed {
    type Value = Audience;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }
    fn visit_str<E>(self, v: &str) -> Result<Audience, E> {
        Ok(Audience::One(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Audience, E> {
        Ok(Audience::One(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Audience, A::Error> {
        let mut out = Vec::new();
        while let Some(CowStr(s)) = seq.next_element::<CowStr<'de>>()? {
            out.push(s.into_owned());
        }
        Ok(Audience::Many(out))
    }
}

/// A NumericDate (RFC 7519 §2): a JSON number, possibly fractional (truncated to seconds). A
/// string, a boolean or a number outside ±2^53 is refused.
struct DateSeed<'c>(&'c Ctx);

const MAX_DATE: i64 = 1 << 53;

impl<'de> DeserializeSeed<'de> for DateSeed<'_> {
    type Value = i64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<i64, D::Error> {
        let ctx = self.0;
        d.deserialize_any(self)
            .map_err(|_: D::Error| ctx.fail(Malformed::NumericDate))
    }
}

impl<'de> Visitor<'de> for DateSeed<'_> {
    type Value = i64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a NumericDate")
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
        if (-MAX_DATE..=MAX_DATE).contains(&v) {
            Ok(v)
        } else {
            Err(self.0.fail(Malformed::NumericDate))
        }
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => Err(self.0.fail(Malformed::NumericDate)),
        }
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
        // The range check makes the cast exact: |v| ≤ 2^53 fits an i64 after truncation.
        if v.is_finite() && v.abs() <= MAX_DATE as f64 {
            #[allow(clippy::cast_possible_truncation)]
            Ok(v.trunc() as i64)
        } else {
            Err(self.0.fail(Malformed::NumericDate))
        }
    }
}
