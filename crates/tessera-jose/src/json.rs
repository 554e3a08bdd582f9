//! Strict JSON for JOSE: every object's member names unique (RFC 7515 §4, RFC 7519 §4), nesting
//! capped, and a precise reason kept when a value is refused.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::Malformed;

/// Parsing context shared by the seeds of one document: the nesting cap and the first reason a
/// value was refused (serde's own errors carry only text).
pub(crate) struct Ctx {
    pub max_depth: usize,
    reason: Cell<Option<Malformed>>,
}

impl Ctx {
    pub(crate) fn new(max_depth: usize) -> Ctx {
        Ctx {
            max_depth,
            reason: Cell::new(None),
        }
    }

    /// Records `reason` (the first one wins) and returns a serde error to unwind with.
    pub(crate) fn fail<E: de::Error>(&self, reason: Malformed) -> E {
        if self.reason.get().is_none() {
            self.reason.set(Some(reason));
        }
        E::custom(format_args!("{reason}"))
    }

    /// The recorded reason, or `default` when serde itself refused the input.
    pub(crate) fn reason(&self, default: Malformed) -> Malformed {
        self.reason.get().unwrap_or(default)
    }
}

/// A string that borrows from the input when it has no escapes.
pub(crate) struct CowStr<'de>(pub Cow<'de, str>);

impl<'de> de::Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Remembers member names of one object and refuses a repeat. Known members are tracked by a bit
/// each; other names in a short list (objects in tokens have few members).
#[derive(Default)]
pub(crate) struct Seen<'de> {
    known: u32,
    others: Vec<Cow<'de, str>>,
}

impl<'de> Seen<'de> {
    /// Marks known member number `bit`; false if it was already seen.
    pub(crate) fn known(&mut self, bit: u32) -> bool {
        let mask = 1 << bit;
        let fresh = self.known & mask == 0;
        self.known |= mask;
        fresh
    }

    /// Marks another member name; false if it was already seen.
    pub(crate) fn other(&mut self, name: Cow<'de, str>) -> bool {
        if self.others.contains(&name) {
            return false;
        }
        self.others.push(name);
        true
    }
}

/// Deserializes any JSON value into a `serde_json::Value`, refusing duplicate member names at
/// every level and nesting deeper than `ctx.max_depth`.
pub(crate) struct StrictValue<'c> {
    pub ctx: &'c Ctx,
    pub depth: usize,
}

impl<'de> DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let depth = self.depth + 1;
        if depth > self.ctx.max_depth {
            return Err(self.ctx.fail(Malformed::TooDeep));
        }
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(StrictValue {
            ctx: self.ctx,
            depth,
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let depth = self.depth + 1;
        if depth > self.ctx.max_depth {
            return Err(self.ctx.fail(Malformed::TooDeep));
        }
        let mut out = Map::new();
        while let Some(CowStr(name)) = map.next_key::<CowStr<'de>>()? {
            if out.contains_key(name.as_ref()) {
                return Err(self.ctx.fail(Malformed::DuplicateMember));
            }
            let v = map.next_value_seed(StrictValue {
                ctx: self.ctx,
                depth,
            })?;
            out.insert(name.into_owned(), v);
        }
        Ok(Value::Object(out))
    }
}

/// Parses a whole document as a strict value (for inspection tools, never for trust).
pub(crate) fn parse_strict(
    bytes: &[u8],
    max_depth: usize,
    default: Malformed,
) -> Result<Value, Malformed> {
    let ctx = Ctx::new(max_depth);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = StrictValue {
        ctx: &ctx,
        depth: 0,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    v.map_err(|_| ctx.reason(default))
}
