//! Login throttling per account and per client address, with delays that double after a number
//! of free failures. Attempted usernames are throttled whether or not they exist, so the
//! throttle reveals nothing about which accounts exist.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Throttling parameters (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures per account before delays start (default 5).
    pub account_free: u32,
    /// Failures per client address before delays start (default 20).
    pub ip_free: u32,
    /// The first delay (default 1 s); each further failure doubles it.
    pub base_delay: i64,
    /// The longest delay (default 15 min).
    pub max_delay: i64,
    /// Failures older than this are forgotten (default 1 h).
    pub window: i64,
    /// Most keys tracked at once; past it, expired ones are dropped and new ones not tracked.
    pub capacity: usize,
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
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Ip(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: i64,
    locked_until: i64,
}

/// The in-process throttle.
#[derive(Debug, Default)]
pub struct Throttle {
    policy: ThrottlePolicy,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Throttle {
    /// A throttle with `policy`.
    pub fn new(policy: ThrottlePolicy) -> Throttle {
        Throttle {
            policy,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn keys(username: &str, ip: Option<IpAddr>) -> impl Iterator<Item = Key> {
        std::iter::once(Key::Account(username.to_owned())).chain(ip.map(Key::Ip))
    }

    /// The policy.
    pub fn policy(&self) -> &ThrottlePolicy {
        &self.policy
    }

    /// The keys a shared store counts under for this attempt, with their free failures.
    pub fn shared_keys(&self, username: &str, ip: Option<IpAddr>) -> Vec<(String, u32)> {
        Self::keys(username, ip)
            .map(|k| match k {
                Key::Account(name) => (format!("a:{name}"), self.policy.account_free),
                Key::Ip(ip) => (format!("ip:{ip}"), self.policy.ip_free),
            })
            .collect()
    }

    /// `Err(seconds)` while either key is locked: how long until it may try again.
    pub fn check(&self, username: &str, ip: Option<IpAddr>, now: i64) -> Result<(), i64> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let wait = Self::keys(username, ip)
            .filter_map(|k| entries.get(&k))
            .map(|e| e.locked_until - now)
            .max()
            .unwrap_or(0);
        if wait > 0 { Err(wait) } else { Ok(()) }
    }

    /// Counts a failed attempt; returns the delay now in force (0 if none).
    pub fn failure(&self, username: &str, ip: Option<IpAddr>, now: i64) -> i64 {
        let p = self.policy;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= p.capacity {
            entries.retain(|_, e| now - e.last_failure <= p.window && e.locked_until > now - 1);
        }
        let mut longest = 0;
        for key in Self::keys(username, ip) {
            let free = match key {
                Key::Account(_) => p.account_free,
                Key::Ip(_) => p.ip_free,
            };
            if !entries.contains_key(&key) && entries.len() >= p.capacity {
                continue;
            }
            let e = entries.entry(key).or_insert(Entry {
                failures: 0,
                last_failure: now,
                locked_until: 0,
            });
            if now - e.last_failure > p.window {
                e.failures = 0;
            }
            e.failures = e.failures.saturating_add(1);
            e.last_failure = now;
            if e.failures > free {
                let doublings = (e.failures - free - 1).min(30);
                let delay = p.base_delay.saturating_mul(1 << doublings).min(p.max_delay);
                e.locked_until = now + delay;
                longest = longest.max(delay);
            }
        }
        longest
    }

    /// A successful login clears the account's record (the address keeps its own, so that one
    /// valid account cannot launder a guessing run from the same address).
    pub fn success(&self, username: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(&Key::Account(username.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_cap_and_success_resets() {
        let t = Throttle::new(ThrottlePolicy {
            max_delay: 8,
            ..ThrottlePolicy::default()
        });
        let ip = Some("192.0.2.1".parse().unwrap());
        let mut now = 1000;
        for _ in 0..5 {
            assert_eq!(t.check("alice", ip, now), Ok(()));
            assert_eq!(t.failure("alice", ip, now), 0);
        }
        assert_eq!(t.failure("alice", ip, now), 1);
        assert_eq!(t.check("alice", ip, now), Err(1));
        now += 1;
        assert_eq!(t.failure("alice", ip, now), 2);
        now += 2;
        assert_eq!(t.failure("alice", ip, now), 4);
        now += 4;
        assert_eq!(t.failure("alice", ip, now), 8);
        now += 8;
        assert_eq!(t.failure("alice", ip, now), 8);
        // Another account from another address is not affected.
        assert_eq!(
            t.check("bob", Some("192.0.2.2".parse().unwrap()), now),
            Ok(())
        );
        now += 8;
        t.success("alice");
        assert_eq!(t.check("alice", ip, now), Ok(()));
    }

    #[test]
    fn an_address_is_throttled_across_accounts() {
        let t = Throttle::new(ThrottlePolicy::default());
        let ip = Some("2001:db8::1".parse().unwrap());
        for i in 0..20 {
            assert_eq!(t.failure(&format!("user{i}"), ip, 50), 0);
        }
        assert_eq!(t.failure("user20", ip, 50), 1);
        assert_eq!(t.check("someone-else", ip, 50), Err(1));
        // Forgotten after the window.
        assert_eq!(t.check("someone-else", ip, 50 + 3601), Ok(()));
    }
}
