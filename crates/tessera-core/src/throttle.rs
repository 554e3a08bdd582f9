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
use crate::user::User;

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

/// Throttle keys, each with its free attempts.
pub type Keys = [(String, u32)];

/// The keys one attempt counts under, with their free attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// `(key, free attempts)`: the account or the device, then the address.
    pub keys: Vec<(String, u32)>,
    /// Whether the first key is a known device rather than the account.
    pub known_device: bool,
}

impl Attempt {
    /// When a reserved attempt ends without being found wrong: the keys whose count is
    /// forgotten, and the keys given back this one attempt. A `success` forgets the account's or
    /// the device's count (its owner is in) and gives the address, which keeps the failures of
    /// everyone else behind it, its attempt back; an attempt never checked (a full hashing line,
    /// a failed store) gives back only itself, on every key, so that provoking such a failure
    /// can never wipe a count.
    pub fn returned(&self, success: bool) -> (&Keys, &Keys) {
        if success {
            self.keys.split_at(1)
        } else {
            (&[], &self.keys)
        }
    }
}

/// The address key of `ip`: an IPv4 address (IPv4-mapped IPv6 included) as itself, an IPv6
/// address by its /64, the block one subscriber is routinely given.
fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let s = v6.segments();
                format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
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
            keys.push((address_key(ip), p.ip_free));
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
        if entries.len() + untracked(&entries, &attempt.keys) > p.capacity {
            make_room(&mut entries, &p, now, &attempt.keys);
            if entries.len() + untracked(&entries, &attempt.keys) > p.capacity {
                // Every entry left is locked: refuse rather than stop counting.
                return Err(p.base_delay.max(1));
            }
        }
        for (key, free) in &attempt.keys {
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

    /// Ends a reservation that was not found wrong: forgets the `cleared` keys and gives one
    /// attempt back to the `released` ones (unlocked again if that leaves them under their free
    /// attempts). See [`Attempt::returned`].
    pub fn release(&self, cleared: &Keys, released: &Keys) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for (key, _) in cleared {
            entries.remove(key);
        }
        for (key, free) in released {
            if let Some(e) = entries.get_mut(key) {
                e.count = e.count.saturating_sub(1);
                if e.count < (*free).max(1) {
                    e.locked_until = 0;
                }
            }
        }
    }
}

/// How many of `keys` the table does not hold yet.
fn untracked(entries: &HashMap<String, Entry>, keys: &[(String, u32)]) -> usize {
    keys.iter()
        .filter(|(k, _)| !entries.contains_key(k))
        .count()
}

/// Makes room in a full table for the keys of an attempt (never dropped here): first the
/// forgotten entries (past the window and unlocked), then the least recently used tenth of the
/// unlocked ones. Locked entries are never dropped, so filling the table cannot unlock an
/// account or stop its count.
fn make_room(
    entries: &mut HashMap<String, Entry>,
    p: &ThrottlePolicy,
    now: i64,
    keep: &[(String, u32)],
) {
    let kept = |k: &String| keep.iter().any(|(key, _)| key == k);
    entries.retain(|k, e| now - e.last <= p.window || e.locked_until > now || kept(k));
    let needed = keep
        .iter()
        .filter(|(k, _)| !entries.contains_key(k))
        .count();
    if entries.len() + needed <= p.capacity {
        return;
    }
    let mut unlocked: Vec<(i64, String)> = entries
        .iter()
        .filter(|(k, e)| e.locked_until <= now && !kept(k))
        .map(|(k, e)| (e.last, k.clone()))
        .collect();
    let drop = (p.capacity / 10).max(needed).min(unlocked.len());
    if drop == 0 {
        return;
    }
    unlocked.select_nth_unstable(drop - 1);
    for (_, key) in unlocked.into_iter().take(drop) {
        entries.remove(&key);
    }
}

/// Signed device cookies: `v1.NONCE.EXP.MAC`, the MAC an HMAC-SHA256 (under a key derived from
/// the master key) of the body bound to the account's user id and a digest of its password hash,
/// so that a cookie is worth nothing for another account, for an account deleted and made again
/// under the same name, or after the password changes. Nothing secret is inside; the server
/// keeps nothing per device but its throttle count.
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

    fn binding(body: &str, user: &User) -> String {
        let d =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, user.password_hash.as_bytes());
        format!(
            "device:{body}:{}:{}",
            user.id,
            b64::encode(&d.as_ref()[..16])
        )
    }

    /// A new cookie for `user`, with a fresh random nonce.
    pub fn issue(&self, user: &User, now: i64) -> String {
        let nonce = crate::token::random_id("");
        let body = format!("v1.{nonce}.{}", now.saturating_add(self.ttl));
        let mac = self.key.token(&Self::binding(&body, user));
        format!("{body}.{mac}")
    }

    /// The nonce of `cookie` if it is ours, unexpired and issued for `user` as it is now.
    pub fn verify<'c>(&self, cookie: &'c str, user: &User, now: i64) -> Option<&'c str> {
        let (body, mac) = cookie.rsplit_once('.')?;
        if !self.key.verify(&Self::binding(body, user), mac) {
            return None;
        }
        let mut parts = body.split('.');
        let (Some("v1"), Some(nonce), Some(exp), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let exp: i64 = exp.parse().ok()?;
        (exp > now).then_some(nonce)
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
        let (cleared, released) = a.returned(true);
        t.release(cleared, released);
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
        let (cleared, released) = d.returned(true);
        t.release(cleared, released);
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
    fn device_cookies_are_bound_to_their_account_password_and_lifetime() {
        let key = CsrfKey::new(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            &[7; 32],
        ));
        let d = DeviceCookies::new(key, 100);
        let alice = User {
            id: "usr_a".into(),
            username: "alice".into(),
            password_hash: "$argon2id$v=19$one".into(),
            disabled: false,
            created_at: 0,
        };
        let c = d.issue(&alice, 1000);
        let nonce = d.verify(&c, &alice, 1050).unwrap();
        assert_eq!(nonce.len(), 22);
        let bob = User {
            id: "usr_b".into(),
            ..alice.clone()
        };
        assert_eq!(d.verify(&c, &bob, 1050), None, "another account");
        let changed = User {
            password_hash: "$argon2id$v=19$two".into(),
            ..alice.clone()
        };
        assert_eq!(d.verify(&c, &changed, 1050), None, "the password changed");
        assert_eq!(d.verify(&c, &alice, 1100), None, "expired");
        let forged = c.replacen("v1.", "v1.x", 1);
        assert_eq!(d.verify(&forged, &alice, 1050), None);
        assert_eq!(d.verify("v1.n.9999.AAAA", &alice, 1), None);
        assert_ne!(d.issue(&alice, 1000), c, "a fresh nonce each time");
    }

    #[test]
    fn a_full_table_never_stops_counting_nor_unlocks() {
        let t = Throttle::new(ThrottlePolicy {
            capacity: 40,
            ..policy(60)
        });
        // The victim's account is locked...
        let victim = t.attempt("victim", None, None);
        for _ in 0..5 {
            t.reserve(&victim, 10).unwrap();
        }
        assert_eq!(t.reserve(&victim, 10), Err(1));
        // ...then the table is flooded with fresh keys from fresh addresses.
        for i in 0..500u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            let _ = t.reserve(&t.attempt(&format!("u{i}"), Some(ip.into()), None), 10);
        }
        assert_eq!(t.reserve(&victim, 10), Err(1), "still locked");
        // A fresh account is still counted after the flood.
        let fresh = t.attempt("fresh", None, None);
        for _ in 0..5 {
            t.reserve(&fresh, 10).unwrap();
        }
        assert_eq!(t.reserve(&fresh, 10), Err(1));
    }

    #[test]
    fn an_ipv6_subscriber_is_one_address() {
        let t = Throttle::new(ThrottlePolicy::default());
        for i in 0..20u16 {
            let ip = std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, i, 0, 0, 1);
            assert_eq!(
                t.reserve(&t.attempt(&format!("u{i}"), Some(ip.into()), None), 5),
                Ok(())
            );
        }
        let other_host = std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0xffff, 0, 0, 9);
        assert_eq!(
            t.reserve(&t.attempt("x", Some(other_host.into()), None), 5),
            Err(1)
        );
        let next_block = std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1);
        assert_eq!(
            t.reserve(&t.attempt("x", Some(next_block.into()), None), 5),
            Ok(())
        );
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), "ip:192.0.2.7");
    }

    #[test]
    fn an_unchecked_attempt_gives_back_only_itself() {
        let t = Throttle::new(policy(60));
        let a = t.attempt("alice", None, None);
        for _ in 0..5 {
            t.reserve(&a, 10).unwrap();
        }
        // The lock passes; the next attempt is reserved but never checked (a full line).
        t.reserve(&a, 11).unwrap();
        let (cleared, released) = a.returned(false);
        t.release(cleared, released);
        assert_eq!(t.reserve(&a, 11), Err(2), "the account stays locked");
    }
}
