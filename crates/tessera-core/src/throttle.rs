//! Login throttling that counts before it hashes: an attempt is reserved (counted as a failure)
//! atomically before its password is checked and released when it succeeds, per account, per
//! known device (OWASP's device cookies) and per client address.
//!
//! The scheme, after OWASP's "Slow Down Online Guessing Attacks with Device Cookies":
//! - a client that has logged in to an account carries a signed device cookie for it
//!   ([`DeviceCookies`]); its attempts at that account count under the device (`d:NONCE`) and
//!   never under the account, so failures from elsewhere never lock out the owner's device;
//! - every other attempt counts under the account (`a:NAME`), whether or not it exists;
//! - every attempt also counts under its client address (`ip:ADDR`).
//!
//! Each key allows its free attempts, then doubling delays. Because the count is taken before
//! the hash, N guesses sent at once against one key let at most its free attempts through; a
//! request abandoned by its client keeps its count (the failure it would have been).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use tessera_jose::b64;

use crate::token::CsrfKey;

/// Throttling parameters (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Attempts per account (from unknown devices) and per known device before delays start
    /// (default 5).
    pub account_free: u32,
    /// Attempts per client address before delays start (default 20).
    pub ip_free: u32,
    /// The first delay (default 1 s); each further failure doubles it.
    pub base_delay: i64,
    /// The longest delay (default 15 min).
    pub max_delay: i64,
    /// Failures older than this are forgotten (default 1 h).
    pub window: i64,
    /// Most keys tracked at once in memory; past it, expired ones are dropped and new ones not
    /// tracked.
    pub capacity: usize,
    /// How long a device cookie is honoured after the login that issued it (default 365 days).
    pub device_ttl: i64,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            account_free: 5,
            ip_free: 20,
            base_delay: 1,
            max_delay: 15 * 60,
            window: 3600,
            capacity: 100_000,
            device_ttl: 365 * 86_400,
        }
    }
}

impl ThrottlePolicy {
    /// The delay after the `count`-th attempt under a key with `free` free attempts (0: none).
    pub fn delay(&self, count: u32, free: u32) -> i64 {
        if count < free.max(1) {
            return 0;
        }
        let doublings = (count - free.max(1)).min(30);
        self.base_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay)
    }
}

/// The keys one attempt counts under, with their free attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// `(key, free attempts)`: the account or the device, then the address.
    pub keys: Vec<(String, u32)>,
    /// Whether the first key is a known device rather than the account.
    pub known_device: bool,
}

impl Attempt {
    /// The keys a success forgets: the account's or the device's (its owner is in).
    pub fn cleared_on_success(&self) -> &[(String, u32)] {
        &self.keys[..1]
    }

    /// The keys a success gives its one attempt back to: the address's, which keeps the
    /// failures of everyone else behind it.
    pub fn released_on_success(&self) -> &[(String, u32)] {
        &self.keys[1..]
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    count: u32,
    last: i64,
    locked_until: i64,
}

/// The in-process throttle (a cluster shares its counts through the store instead).
#[derive(Debug, Default)]
pub struct Throttle {
    policy: ThrottlePolicy,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Throttle {
    /// A throttle with `policy`.
    pub fn new(policy: ThrottlePolicy) -> Throttle {
        Throttle {
            policy,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &ThrottlePolicy {
        &self.policy
    }

    /// The keys of an attempt at `username` from `ip`, by the device `device` (the nonce of a
    /// device cookie verified for this username) if known.
    pub fn attempt(&self, username: &str, ip: Option<IpAddr>, device: Option<&str>) -> Attempt {
        let p = self.policy;
        let first = match device {
            Some(nonce) => (format!("d:{nonce}"), p.account_free),
            None => (format!("a:{username}"), p.account_free),
        };
        let mut keys = vec![first];
        if let Some(ip) = ip {
            keys.push((format!("ip:{ip}"), p.ip_free));
        }
        Attempt {
            keys,
            known_device: device.is_some(),
        }
    }

    /// Reserves an attempt: `Err(seconds)` while any of its keys is locked (nothing counted),
    /// else one attempt counted under each key, all at once.
    pub fn reserve(&self, attempt: &Attempt, now: i64) -> Result<(), i64> {
        let p = self.policy;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let wait = attempt
            .keys
            .iter()
            .filter_map(|(k, _)| entries.get(k))
            .filter(|e| now - e.last <= p.window || e.locked_until > now)
            .map(|e| e.locked_until - now)
            .max()
            .unwrap_or(0);
        if wait > 0 {
            return Err(wait);
        }
        if entries.len() >= p.capacity {
            entries.retain(|_, e| now - e.last <= p.window || e.locked_until > now);
        }
        for (key, free) in &attempt.keys {
            if !entries.contains_key(key) && entries.len() >= p.capacity {
                continue;
            }
            let e = entries.entry(key.clone()).or_insert(Entry {
                count: 0,
                last: now,
                locked_until: 0,
            });
            if now - e.last > p.window {
                e.count = 0;
            }
            e.count = e.count.saturating_add(1);
            e.last = now;
            let delay = p.delay(e.count, *free);
            if delay > 0 {
                e.locked_until = now + delay;
            }
        }
        Ok(())
    }

    /// A reserved attempt succeeded: the account's or device's count is forgotten, and the
    /// address gets this attempt back (unlocked again if that leaves it under its free
    /// attempts).
    pub fn release(&self, attempt: &Attempt) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for (key, _) in attempt.cleared_on_success() {
            entries.remove(key);
        }
        for (key, free) in attempt.released_on_success() {
            if let Some(e) = entries.get_mut(key) {
                e.count = e.count.saturating_sub(1);
                if e.count < (*free).max(1) {
                    e.locked_until = 0;
                }
            }
        }
    }
}

/// Signed device cookies: `v1.NAME.NONCE.EXP.MAC`, the name base64url-encoded, the MAC an
/// HMAC-SHA256 (under a key derived from the master key) of everything before it. Nothing
/// secret is inside; the server keeps nothing per device but its throttle count.
#[derive(Debug)]
pub struct DeviceCookies {
    key: CsrfKey,
    ttl: i64,
}

impl DeviceCookies {
    /// Cookies signed with `key`, honoured for `ttl` seconds.
    pub fn new(key: CsrfKey, ttl: i64) -> DeviceCookies {
        DeviceCookies { key, ttl }
    }

    /// How long a new cookie is honoured, in seconds.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// A new cookie for `username` (normalised), with a fresh random nonce.
    pub fn issue(&self, username: &str, now: i64) -> String {
        let nonce = crate::token::random_id("");
        let body = format!(
            "v1.{}.{nonce}.{}",
            b64::encode(username.as_bytes()),
            now.saturating_add(self.ttl)
        );
        let mac = self.key.token(&format!("device:{body}"));
        format!("{body}.{mac}")
    }

    /// The nonce of `cookie` if it is ours, unexpired and issued for `username`.
    pub fn verify<'c>(&self, cookie: &'c str, username: &str, now: i64) -> Option<&'c str> {
        let (body, mac) = cookie.rsplit_once('.')?;
        if !self.key.verify(&format!("device:{body}"), mac) {
            return None;
        }
        let mut parts = body.split('.');
        let (Some("v1"), Some(name), Some(nonce), Some(exp), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let exp: i64 = exp.parse().ok()?;
        (exp > now && b64::decode(name.as_bytes()).ok()? == username.as_bytes()).then_some(nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_delay: i64) -> ThrottlePolicy {
        ThrottlePolicy {
            max_delay,
            ..ThrottlePolicy::default()
        }
    }

    #[test]
    fn free_attempts_then_doubling_delays_counted_before_the_hash() {
        let t = Throttle::new(policy(8));
        let ip = Some("192.0.2.1".parse().unwrap());
        let a = t.attempt("alice", ip, None);
        let mut now = 1000;
        // Five reservations at once, the sixth refused before anything was checked.
        for _ in 0..5 {
            assert_eq!(t.reserve(&a, now), Ok(()));
        }
        assert_eq!(t.reserve(&a, now), Err(1));
        now += 1;
        assert_eq!(t.reserve(&a, now), Ok(()));
        assert_eq!(t.reserve(&a, now), Err(2));
        now += 2;
        assert_eq!(t.reserve(&a, now), Ok(()));
        assert_eq!(t.reserve(&a, now), Err(4));
        now += 4;
        assert_eq!(t.reserve(&a, now), Ok(()));
        assert_eq!(t.reserve(&a, now), Err(8));
        now += 8;
        assert_eq!(t.reserve(&a, now), Ok(()));
        assert_eq!(t.reserve(&a, now), Err(8), "capped");
        // Another account from another address is not affected.
        let b = t.attempt("bob", Some("192.0.2.2".parse().unwrap()), None);
        assert_eq!(t.reserve(&b, now), Ok(()));
        // Forgotten after the window.
        assert_eq!(t.reserve(&a, now + 3601), Ok(()));
    }

    #[test]
    fn a_success_clears_its_account_or_device_and_gives_the_address_its_attempt_back() {
        let t = Throttle::new(ThrottlePolicy {
            ip_free: 6,
            ..policy(60)
        });
        let ip = Some("192.0.2.1".parse().unwrap());
        let a = t.attempt("alice", ip, None);
        for _ in 0..4 {
            t.reserve(&a, 10).unwrap();
        }
        // The fifth succeeds: the account starts again, the address keeps four failures.
        t.reserve(&a, 10).unwrap();
        t.release(&a);
        let other = t.attempt("bob", ip, None);
        t.reserve(&other, 10).unwrap();
        t.reserve(&other, 10).unwrap();
        assert_eq!(t.reserve(&a, 10), Err(1), "the address is at its six");
        // A known device of alice's is throttled on its own, and cleared by its success.
        let t = Throttle::new(policy(60));
        let d = t.attempt("alice", Some("192.0.2.9".parse().unwrap()), Some("n1"));
        for _ in 0..4 {
            t.reserve(&d, 10).unwrap();
        }
        t.reserve(&d, 10).unwrap();
        t.release(&d);
        for _ in 0..5 {
            t.reserve(&d, 10).unwrap();
        }
        assert_eq!(t.reserve(&d, 10), Err(1));
        // Its failures never touched the account.
        let elsewhere = t.attempt("alice", Some("192.0.2.7".parse().unwrap()), None);
        assert_eq!(t.reserve(&elsewhere, 10), Ok(()));
    }

    #[test]
    fn an_address_is_throttled_across_accounts() {
        let t = Throttle::new(ThrottlePolicy::default());
        let ip = Some("2001:db8::1".parse().unwrap());
        for i in 0..20 {
            assert_eq!(
                t.reserve(&t.attempt(&format!("user{i}"), ip, None), 50),
                Ok(())
            );
        }
        assert_eq!(t.reserve(&t.attempt("user20", ip, None), 50), Err(1));
        assert_eq!(t.reserve(&t.attempt("x", ip, Some("n")), 50), Err(1));
        assert_eq!(t.reserve(&t.attempt("x", ip, None), 50 + 3601), Ok(()));
    }

    #[test]
    fn device_cookies_are_bound_to_their_account_and_lifetime() {
        let key = CsrfKey::new(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            &[7; 32],
        ));
        let d = DeviceCookies::new(key, 100);
        let c = d.issue("alice", 1000);
        let nonce = d.verify(&c, "alice", 1050).unwrap();
        assert_eq!(nonce.len(), 22);
        assert_eq!(d.verify(&c, "bob", 1050), None);
        assert_eq!(d.verify(&c, "alice", 1100), None, "expired");
        let forged = c.replacen("v1.", "v1.x", 1);
        assert_eq!(d.verify(&forged, "alice", 1050), None);
        assert_eq!(d.verify("v1.YQ.n.9999.AAAA", "a", 1), None);
        assert_ne!(d.issue("alice", 1000), c, "a fresh nonce each time");
    }
}
