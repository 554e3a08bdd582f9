//! The revocations an instance holds in memory: what its own Bearer checks refuse, and the log
//! its revocation feed serves to verifiers.
//!
//! Every revocation this instance makes or learns of (from the store at start, from the change
//! feed later) is appended to an ordered log under a sequence number. A follower of the feed
//! keeps a cursor `EPOCH.SEQ`; with this instance's epoch it gets what came after, with any
//! other (another instance, or this one before a restart) it gets every revocation still in
//! force, so a reconnecting follower misses nothing. Entries leave the log and the set when the
//! tokens they cover have expired: memory is bounded by the revocations still in force.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tessera_jose::{Claims, Revocation, RevocationEvent, RevocationSet};

use crate::store::{Change, DenylistStore, StoreError, Stores};
use crate::token::random_id;

/// Clock-skew tolerance on token times, seconds: a revocation is kept this long past the
/// expiry of the tokens it covers.
pub const LEEWAY: i64 = 60;

#[derive(Debug, Default)]
struct Held {
    set: RevocationSet,
    log: BTreeMap<u64, (Revocation, i64)>,
    next: u64,
    purged_at: i64,
}

/// Revoked access tokens (by `jti`, `sid` or `sub`), each kept until the tokens it covers
/// would have expired anyway.
#[derive(Debug)]
pub struct Denylist {
    held: RwLock<Held>,
    /// False while the change feed is lost: revocations made elsewhere may be missing.
    fresh: AtomicBool,
    /// Names this copy's log in cursors.
    epoch: String,
    /// The next sequence number, for followers waiting on new entries.
    head: tokio::sync::watch::Sender<u64>,
    /// The longest an access token lives: how long the end of a session or account must be
    /// remembered.
    token_lifetime: i64,
}

impl Denylist {
    /// An empty denylist for access tokens living at most `token_lifetime` seconds.
    pub fn new(token_lifetime: i64) -> Denylist {
        Denylist {
            held: RwLock::default(),
            fresh: AtomicBool::new(true),
            epoch: random_id(""),
            head: tokio::sync::watch::Sender::new(0),
            token_lifetime,
        }
    }

    /// The longest an access token lives, seconds.
    pub fn token_lifetime(&self) -> i64 {
        self.token_lifetime
    }

    /// Until when a revocation made `now` of a session or a subject must be kept.
    pub fn keep_until(&self, now: i64) -> i64 {
        now + self.token_lifetime
    }

    /// Whether this copy is known to hold every revocation (its feed is connected).
    pub fn is_fresh(&self) -> bool {
        self.fresh.load(Ordering::Relaxed)
    }

    /// Marks this copy current or possibly stale.
    pub fn set_fresh(&self, fresh: bool) {
        self.fresh.store(fresh, Ordering::Relaxed);
    }

    /// Refuses what `r` covers until `exp`.
    pub fn add(&self, r: Revocation, exp: i64, now: i64) {
        self.extend([(r, exp)], now);
    }

    /// Refuses what `r` covers until `exp`: in `store` (so other instances, verifiers following
    /// the feed, and this one after a restart learn of it), then here at once, and announces it.
    pub async fn record<S: Stores>(
        &self,
        store: &S,
        r: Revocation,
        exp: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let key = r.key();
        store.denylist().deny_access(&key, exp, now).await?;
        self.add(r, exp, now);
        store.announce(vec![Change::Denied { jti: key, exp }]).await;
        Ok(())
    }

    /// Adds entries a store has just denylisted (`(key, exp)`, as [`Denylist::extend_stored`])
    /// and announces them.
    pub async fn recorded<S: Stores>(&self, store: &S, entries: Vec<(String, i64)>, now: i64) {
        self.extend_stored(entries.iter().cloned(), now);
        let changes = entries
            .into_iter()
            .map(|(jti, exp)| Change::Denied { jti, exp })
            .collect();
        store.announce(changes).await;
    }

    /// Adds what a store holds: `(key, exp)` pairs in [`Revocation::key`]'s form.
    pub fn extend_stored(&self, entries: impl IntoIterator<Item = (String, i64)>, now: i64) {
        let entries = entries
            .into_iter()
            .map(|(key, exp)| (Revocation::from_owned_key(key), exp));
        self.extend(entries, now);
    }

    /// Adds each revocation (a reload from the store); entries past their expiry are
    /// forgotten, at most once a second.
    pub fn extend(&self, entries: impl IntoIterator<Item = (Revocation, i64)>, now: i64) {
        let mut g = self.held.write().unwrap_or_else(|e| e.into_inner());
        if g.purged_at != now {
            g.purged_at = now;
            let until = now - LEEWAY;
            g.set.purge(until);
            g.log.retain(|_, (_, exp)| *exp > until);
        }
        let mut added = false;
        for (r, exp) in entries {
            if exp > now - LEEWAY && g.set.insert(r.clone(), exp) {
                let seq = g.next;
                g.next += 1;
                g.log.insert(seq, (r, exp));
                added = true;
            }
        }
        if added {
            let next = g.next;
            drop(g);
            self.head.send_replace(next);
        }
    }

    /// Whether a token with these claims is revoked.
    pub fn refuses(&self, claims: &Claims) -> bool {
        self.held
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .set
            .refuses(claims)
    }

    /// Whether the session with public handle `sid` was ended (its end is durable once this
    /// holds, whatever became of the session's record).
    pub fn session_revoked(&self, sid: &str) -> bool {
        self.held
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .set
            .contains_sid(sid)
    }

    /// Up to when `sub`'s tokens are revoked, if they are.
    pub fn subject_revoked_at(&self, sub: &str) -> Option<i64> {
        self.held
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .set
            .subject_revoked_at(sub)
    }

    /// How many revocations are held.
    pub fn len(&self) -> usize {
        self.held
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .set
            .len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The revocations after `cursor` (one this log gave), or all held when the cursor is
    /// absent or another log's; each with its own cursor. At most `limit`.
    pub fn since(&self, cursor: Option<&str>, limit: usize) -> Vec<(String, RevocationEvent)> {
        let from = cursor
            .and_then(|c| c.split_once('.'))
            .filter(|(epoch, _)| *epoch == self.epoch)
            .and_then(|(_, seq)| seq.parse::<u64>().ok())
            .map_or(0, |seq| seq.saturating_add(1));
        let g = self.held.read().unwrap_or_else(|e| e.into_inner());
        g.log
            .range(from..)
            .take(limit)
            .map(|(seq, (r, exp))| {
                (
                    format!("{}.{seq}", self.epoch),
                    RevocationEvent::new(r, *exp),
                )
            })
            .collect()
    }

    /// Changes whenever a revocation is added.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.head.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_resume_here_and_start_over_elsewhere() {
        let d = Denylist::new(900);
        d.add(Revocation::Token("a".into()), 1000, 100);
        d.add(Revocation::Session("s".into()), 1000, 100);
        let all = d.since(None, 100);
        assert_eq!(all.len(), 2);
        assert!(d.since(Some(&all[1].0), 100).is_empty());
        assert_eq!(d.since(Some(&all[0].0), 100).len(), 1);
        d.add(Revocation::Token("b".into()), 1000, 100);
        let after = d.since(Some(&all[1].0), 100);
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].1.jti.as_deref(), Some("b"));
        // Another instance's (or an earlier life's) cursor: everything held.
        assert_eq!(d.since(Some("other.7"), 100).len(), 3);
        assert_eq!(d.since(Some("garbage"), 100).len(), 3);
        assert_eq!(d.since(None, 2).len(), 2);
        // The same revocation again adds nothing.
        d.add(Revocation::Token("b".into()), 1000, 100);
        assert_eq!(d.since(None, 100).len(), 3);
    }

    #[test]
    fn expired_revocations_leave_set_and_log() {
        let d = Denylist::new(900);
        for i in 0..100 {
            d.add(Revocation::Token(format!("j{i}")), 200, 100);
        }
        d.add(Revocation::Token("late".into()), 5000, 100);
        assert_eq!(d.len(), 101);
        d.add(Revocation::Token("x".into()), 5000, 200 + LEEWAY + 1);
        assert_eq!(d.len(), 2);
        assert_eq!(d.since(None, 1000).len(), 2);
    }
}
