//! Revocations of access tokens before their expiry, and the set a verifier checks them in.
//!
//! A token can be taken back three ways: by its own id (`jti`), by the session it was issued
//! under (`sid`), or by its subject (`sub`: every token of a disabled or deleted account issued
//! up to the moment it was disabled). Each revocation is kept until `exp`, the latest time a
//! token it covers could still be valid; after that it is forgotten, so the set holds only what
//! can still matter. Pure: no I/O, no clock of its own.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::Claims;

/// What a revocation covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Revocation {
    /// The token with this `jti`.
    Token(String),
    /// Every token carrying this `sid`.
    Session(String),
    /// Every token of `sub` issued at or before `at` (seconds since the epoch).
    Subject {
        /// The subject.
        sub: String,
        /// Tokens with `iat` up to this are refused.
        at: i64,
    },
}

impl Revocation {
    /// One string naming the revocation, for a store's key: a bare `jti` (the form stores held
    /// before sessions and subjects were revoked this way), `sid:ID`, or `sub:AT:ID`.
    pub fn key(&self) -> String {
        match self {
            Revocation::Token(jti) => jti.clone(),
            Revocation::Session(sid) => format!("sid:{sid}"),
            Revocation::Subject { sub, at } => format!("sub:{at}:{sub}"),
        }
    }

    /// Reads [`Revocation::key`]'s form. tessera's `jti`s never contain `:`.
    pub fn from_key(key: &str) -> Revocation {
        RevocationKey::parse(key).to_revocation()
    }
}

/// What a [`Revocation::key`] names, borrowed from the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationKey<'a> {
    /// A token id.
    Token(&'a str),
    /// A session id.
    Session(&'a str),
    /// A subject, and up to when its tokens are refused.
    Subject(&'a str, i64),
}

impl<'a> RevocationKey<'a> {
    /// Reads `sid:ID`, `sub:AT:ID`, or else a bare token id.
    pub fn parse(key: &'a str) -> RevocationKey<'a> {
        // The prefixes matched byte by byte: a reload parses 10^5 keys, several times each, and
        // `strip_prefix` compares by a call to `memcmp`.
        let rest = key.get(4..).unwrap_or_default();
        match key.as_bytes() {
            [b's', b'i', b'd', b':', ..] => RevocationKey::Session(rest),
            [b's', b'u', b'b', b':', ..] => match rest
                .split_once(':')
                .and_then(|(at, sub)| Some((at.parse().ok()?, sub)))
            {
                Some((at, sub)) => RevocationKey::Subject(sub, at),
                None => RevocationKey::Token(key),
            },
            _ => RevocationKey::Token(key),
        }
    }

    /// The revocation it names.
    pub fn to_revocation(self) -> Revocation {
        match self {
            RevocationKey::Token(jti) => Revocation::Token(jti.to_owned()),
            RevocationKey::Session(sid) => Revocation::Session(sid.to_owned()),
            RevocationKey::Subject(sub, at) => Revocation::Subject {
                sub: sub.to_owned(),
                at,
            },
        }
    }
}

/// A revocation as the feed carries it (JSON): exactly one of `jti`, `sid`, `sub` (with
/// `revoked_at`), and `exp`, until when it matters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationEvent {
    /// A token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// A session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// A subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// For `sub`: tokens issued at or before this are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
    /// Until when the revocation is kept.
    pub exp: i64,
}

impl RevocationEvent {
    /// The event for `r`, kept until `exp`.
    pub fn new(r: &Revocation, exp: i64) -> RevocationEvent {
        let mut e = RevocationEvent {
            jti: None,
            sid: None,
            sub: None,
            revoked_at: None,
            exp,
        };
        match r {
            Revocation::Token(j) => e.jti = Some(j.clone()),
            Revocation::Session(s) => e.sid = Some(s.clone()),
            Revocation::Subject { sub, at } => {
                e.sub = Some(sub.clone());
                e.revoked_at = Some(*at);
            }
        }
        e
    }

    /// What it revokes; `None` unless exactly one of `jti`, `sid`, `sub`+`revoked_at` is given.
    pub fn revocation(&self) -> Option<Revocation> {
        match (&self.jti, &self.sid, &self.sub, self.revoked_at) {
            (Some(j), None, None, None) => Some(Revocation::Token(j.clone())),
            (None, Some(s), None, None) => Some(Revocation::Session(s.clone())),
            (None, None, Some(sub), Some(at)) => Some(Revocation::Subject {
                sub: sub.clone(),
                at,
            }),
            _ => None,
        }
    }
}

/// The revocations in force, each until its `exp`. Lookups are by hash; memory is bounded by
/// the number of revocations not yet expired (see [`RevocationSet::purge`]).
#[derive(Debug, Default, Clone)]
pub struct RevocationSet {
    jti: HashMap<String, i64>,
    sid: HashMap<String, i64>,
    /// Per subject: the latest `at` revoked, and until when.
    sub: HashMap<String, (i64, i64)>,
}

impl RevocationSet {
    /// Adds `r` until `exp`; whether it was new (or extended what was held).
    pub fn insert(&mut self, r: Revocation, exp: i64) -> bool {
        fn later(m: &mut HashMap<String, i64>, k: String, exp: i64) -> bool {
            match m.get_mut(&k) {
                Some(e) if *e >= exp => false,
                Some(e) => {
                    *e = exp;
                    true
                }
                None => {
                    m.insert(k, exp);
                    true
                }
            }
        }
        match r {
            Revocation::Token(j) => later(&mut self.jti, j, exp),
            Revocation::Session(s) => later(&mut self.sid, s, exp),
            Revocation::Subject { sub, at } => match self.sub.get_mut(&sub) {
                Some((a, e)) if *a >= at && *e >= exp => false,
                Some((a, e)) => {
                    *a = (*a).max(at);
                    *e = (*e).max(exp);
                    true
                }
                None => {
                    self.sub.insert(sub, (at, exp));
                    true
                }
            },
        }
    }

    /// Whether a token with these claims is revoked. A token without `iat` counts as issued
    /// at the epoch (refused by any revocation of its subject).
    pub fn refuses(&self, claims: &Claims) -> bool {
        if self.is_empty() {
            return false;
        }
        claims
            .jti
            .as_ref()
            .is_some_and(|j| self.jti.contains_key(j))
            || claims
                .sid
                .as_ref()
                .is_some_and(|s| self.sid.contains_key(s))
            || claims.sub.as_ref().is_some_and(|s| {
                self.sub
                    .get(s)
                    .is_some_and(|(at, _)| claims.iat.unwrap_or(0) <= *at)
            })
    }

    /// Up to when `sub`'s tokens are revoked (their `iat` at most this), if they are.
    pub fn subject_revoked_at(&self, sub: &str) -> Option<i64> {
        self.sub.get(sub).map(|(at, _)| *at)
    }

    /// Whether the token `jti` is revoked by its id.
    pub fn contains_jti(&self, jti: &str) -> bool {
        self.jti.contains_key(jti)
    }

    /// Whether the session `sid` is revoked.
    pub fn contains_sid(&self, sid: &str) -> bool {
        self.sid.contains_key(sid)
    }

    /// Forgets every revocation whose `exp` is at or before `until`; how many were forgotten.
    pub fn purge(&mut self, until: i64) -> usize {
        let before = self.len();
        self.jti.retain(|_, e| *e > until);
        self.sid.retain(|_, e| *e > until);
        self.sub.retain(|_, (_, e)| *e > until);
        before - self.len()
    }

    /// How many revocations are held.
    pub fn len(&self) -> usize {
        self.jti.len() + self.sid.len() + self.sub.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.jti.is_empty() && self.sid.is_empty() && self.sub.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(jti: &str, sid: Option<&str>, sub: &str, iat: i64) -> Claims {
        Claims {
            jti: Some(jti.into()),
            sid: sid.map(Into::into),
            sub: Some(sub.into()),
            iat: Some(iat),
            ..Claims::default()
        }
    }

    #[test]
    fn keys_round_trip() {
        for r in [
            Revocation::Token("abc_DEF-1".into()),
            Revocation::Session("ses_1".into()),
            Revocation::Subject {
                sub: "usr_1:odd".into(),
                at: 1_700_000_000,
            },
        ] {
            assert_eq!(Revocation::from_key(&r.key()), r);
            let e = RevocationEvent::new(&r, 5);
            let json = serde_json::to_string(&e).unwrap();
            let back: RevocationEvent = serde_json::from_str(&json).unwrap();
            assert_eq!(back.revocation(), Some(r));
        }
        // A key that only looks like a subject's is a token id.
        for odd in ["sub:x", "sub:", "sid", "sub:x:y"] {
            assert_eq!(Revocation::from_key(odd), Revocation::Token(odd.into()));
        }
        assert_eq!(RevocationKey::parse("sid:"), RevocationKey::Session(""));
        assert_eq!(
            RevocationKey::parse("sub:5:"),
            RevocationKey::Subject("", 5)
        );
        assert_eq!(RevocationKey::parse("sid:é"), RevocationKey::Session("é"));
        assert_eq!(RevocationKey::parse("éd:x"), RevocationKey::Token("éd:x"));
    }

    #[test]
    fn events_name_exactly_one_thing() {
        for bad in [
            r#"{"exp":1}"#,
            r#"{"jti":"a","sid":"b","exp":1}"#,
            r#"{"sub":"a","exp":1}"#,
            r#"{"jti":"a","revoked_at":3,"exp":1}"#,
        ] {
            let e: RevocationEvent = serde_json::from_str(bad).unwrap();
            assert_eq!(e.revocation(), None, "{bad}");
        }
        assert!(serde_json::from_str::<RevocationEvent>(r#"{"jti":"a","exp":1,"x":1}"#).is_err());
    }

    #[test]
    fn refuses_by_jti_sid_and_subject_up_to_its_time() {
        let mut set = RevocationSet::default();
        assert!(!set.refuses(&claims("j1", Some("s1"), "u1", 100)));
        set.insert(Revocation::Token("j1".into()), 1000);
        set.insert(Revocation::Session("s2".into()), 1000);
        set.insert(
            Revocation::Subject {
                sub: "u3".into(),
                at: 100,
            },
            1000,
        );
        assert!(set.refuses(&claims("j1", None, "u1", 100)));
        assert!(set.refuses(&claims("j2", Some("s2"), "u1", 100)));
        assert!(!set.refuses(&claims("j2", Some("s3"), "u1", 100)));
        assert!(set.refuses(&claims("j3", None, "u3", 100)));
        assert!(set.refuses(&claims("j3", None, "u3", 99)));
        assert!(!set.refuses(&claims("j3", None, "u3", 101)), "issued after");
        assert_eq!(set.len(), 3);
        assert!(
            !set.insert(Revocation::Token("j1".into()), 900),
            "not later"
        );
        assert_eq!(set.purge(999), 0);
        assert_eq!(set.purge(1000), 3);
        assert!(set.is_empty());
        assert!(!set.refuses(&claims("j1", Some("s2"), "u3", 1)));
    }
}
