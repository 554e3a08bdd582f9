//! The revocations an instance holds in memory: what its own Bearer checks refuse, and the log
//! its revocation feed serves to verifiers.
//!
//! Every revocation this instance makes or learns of (from the store at start, from the change
//! feed later) is appended to an ordered log under a sequence number. A follower of the feed
//! keeps a cursor `EPOCH.SEQ`; with this instance's epoch it gets what came after, with any
//! other (another instance, or this one before a restart) it gets every revocation still in
//! force, so a reconnecting follower misses nothing. Entries leave the log and the set when the
//! tokens they cover have expired: memory is bounded by the revocations still in force.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use hashbrown::HashTable;
use tessera_jose::{Claims, Revocation, RevocationEvent, RevocationKey};

use crate::store::{Change, Denied, DeniedSink, DenylistStore, StoreError, Stores};
use crate::token::random_id;

/// Clock-skew tolerance on token times, seconds: a revocation is kept this long past the
/// expiry of the tokens it covers.
pub const LEEWAY: i64 = 60;

/// The `exp` of a log entry superseded by a later one for the same token or session: it is
/// skipped by the feed and dropped at the next purge. No held expiry is this ([`held_exp`]).
const SUPERSEDED: u32 = 0;

/// One revocation in the log, in 16 bytes: its place in the feed (counted from [`Held::base`]),
/// until when it matters ([`held_exp`]), and where its key ([`Revocation::key`]'s form) lies in
/// [`Held::keys`].
#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u32,
    exp: u32,
    start: u32,
    len: u32,
}

/// An expiry as the log holds it: Unix seconds in `1..=u32::MAX`. A later one (past the year
/// 2106) is held until then and announced so.
fn held_exp(exp: i64) -> u32 {
    u32::try_from(exp.max(1)).unwrap_or(u32::MAX)
}

/// The revocations held, in as little memory as a log needs: every key once, end to end in
/// one string; the log in feed order (ascending `seq`) naming ranges of it; and an index of
/// token and session revocations holding only sequence numbers (the key it matches is read
/// from the log). Subject revocations, few and merged per subject, have a map of their own.
/// About 45 bytes per revocation of a 22-character id, against about 190 for a map of owned
/// keys beside a log of their copies.
#[derive(Default)]
struct Held {
    log: Vec<Entry>,
    /// The feed's sequence number of the log's 0 (entries count in 32 bits from here, and are
    /// renumbered from the oldest held when the numbers run out: [`Held::number`]).
    base: u64,
    keys: String,
    /// Bytes of `keys` no live entry names (compacted away once they are half).
    dead: usize,
    /// The `seq` of each live token and session revocation, by the hash of what it names.
    index: HashTable<u32>,
    /// Per subject: the latest `at` revoked, and until when.
    subjects: HashMap<String, (i64, i64)>,
    hasher: RandomState,
    next: u64,
    purged_at: i64,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("revocations", &self.len())
            .field("log", &self.log.len())
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

/// The key of `e` in `keys`.
fn key_of<'a>(keys: &'a str, e: &Entry) -> &'a str {
    keys.get(e.start as usize..e.start as usize + e.len as usize)
        .unwrap_or_default()
}

/// Where the entry with sequence number `seq` is in the log. The numbers ascend with gaps where
/// entries left, so it is at most `seq - first` places in, and at least that less the gaps: one
/// place when there are none (a reload), and a search of the gaps and one more otherwise.
fn position(log: &[Entry], seq: u32) -> Option<usize> {
    let (first, last) = (log.first()?.seq, log.last()?.seq);
    let most = usize::try_from(seq.checked_sub(first)?).ok()?;
    // Checked: a log out of order (never made) finds nothing rather than panics.
    let gaps = usize::try_from(last.checked_sub(first)?)
        .ok()?
        .checked_sub(log.len() - 1)?;
    let least = most.saturating_sub(gaps);
    let within = log.get(least..=most.min(log.len() - 1))?;
    within
        .binary_search_by_key(&seq, |e| e.seq)
        .ok()
        .map(|i| least + i)
}

/// The index's hash of a token or session revocation (subjects are not in the index).
fn hash_key(hasher: &RandomState, key: RevocationKey<'_>) -> u64 {
    let (session, id) = match key {
        RevocationKey::Session(id) => (true, id),
        RevocationKey::Token(id) | RevocationKey::Subject(id, _) => (false, id),
    };
    let mut h = hasher.build_hasher();
    h.write_u8(u8::from(session));
    h.write(id.as_bytes());
    h.finish()
}

/// The index's hash of what the entry `seq` names.
fn hash_seq(hasher: &RandomState, log: &[Entry], keys: &str, seq: u32) -> u64 {
    position(log, seq).map_or(0, |i| {
        hash_key(hasher, RevocationKey::parse(key_of(keys, &log[i])))
    })
}

/// Whether the entry `seq` names `want`.
fn names(log: &[Entry], keys: &str, seq: u32, want: RevocationKey<'_>) -> bool {
    position(log, seq).is_some_and(|i| RevocationKey::parse(key_of(keys, &log[i])) == want)
}

impl Held {
    fn len(&self) -> usize {
        self.index.len() + self.subjects.len()
    }

    /// Whether a live token or session revocation names `want`.
    fn holds(&self, want: RevocationKey<'_>) -> bool {
        let h = hash_key(&self.hasher, want);
        self.index
            .find(h, |&seq| names(&self.log, &self.keys, seq, want))
            .is_some()
    }

    /// The index, and the hash of any sequence number it holds (for its growth and shrinking).
    fn index_mut(&mut self) -> (&mut HashTable<u32>, impl Fn(&u32) -> u64 + '_) {
        let Held {
            index,
            log,
            keys,
            hasher,
            ..
        } = self;
        let (log, keys, hasher) = (&*log, &*keys, &*hasher);
        (index, move |&s: &u32| hash_seq(hasher, log, keys, s))
    }

    /// The feed's sequence number of the log's `seq`.
    fn feed_seq(&self, seq: u32) -> u64 {
        self.base + u64::from(seq)
    }

    /// The log's number for the next entry. When the numbers since `base` have run out, the
    /// log is renumbered from its oldest entry (the feed's numbers stay what they were); `None`
    /// if even that leaves no room (2^32 revocations since the oldest still held).
    fn number(&mut self) -> Option<u32> {
        if let Ok(seq) = u32::try_from(self.next - self.base) {
            return Some(seq);
        }
        let Some(oldest) = self.log.first() else {
            // Nothing held (nor indexed): the log starts over at the next number.
            self.base = self.next;
            return Some(0);
        };
        let by = oldest.seq;
        let seq = u32::try_from(self.next - self.base - u64::from(by)).ok()?;
        for e in &mut self.log {
            e.seq -= by;
        }
        for s in self.index.iter_mut() {
            *s -= by;
        }
        self.base += u64::from(by);
        Some(seq)
    }

    /// Room for `entries` more of `key_bytes` in all, made at once (a reload grown by doubling
    /// would leave the allocator holding each smaller copy). Room for what is already held is
    /// not counted twice: a catch-up brings mostly what is held.
    fn reserve(&mut self, entries: usize, key_bytes: usize) {
        let entries = entries.saturating_sub(self.log.len());
        if entries == 0 {
            return;
        }
        self.log.reserve_exact(entries);
        self.keys
            .reserve_exact(key_bytes.saturating_sub(self.keys.len()));
        let (index, rehash) = self.index_mut();
        index.reserve(entries, rehash);
    }

    /// Appends `key` to the log until `exp`; its sequence number in the log.
    fn push(&mut self, key: &str, exp: u32) -> Option<u32> {
        let start = u32::try_from(self.keys.len()).ok()?;
        let len = u32::try_from(key.len()).ok()?;
        start.checked_add(len)?;
        let seq = self.number()?;
        self.keys.push_str(key);
        self.next += 1;
        self.log.push(Entry {
            seq,
            exp,
            start,
            len,
        });
        Some(seq)
    }

    /// Holds `key` until `exp`; whether it was new (or extended what was held).
    fn insert(&mut self, key: &str, exp: i64) -> bool {
        if self
            .keys
            .len()
            .checked_add(key.len())
            .is_none_or(|end| u32::try_from(end).is_err())
        {
            // 4 GiB of keys in force: what is held stays held; this one cannot join it.
            tracing::error!("the denylist is full; a revocation could not be held in memory");
            return false;
        }
        if self.number().is_none() {
            // 2^32 revocations since the oldest still held (a number is taken before anything
            // changes: an extension must not drop what it extends).
            tracing::error!("the denylist's log is full; a revocation could not be held in memory");
            return false;
        }
        let held = held_exp(exp);
        let want = match RevocationKey::parse(key) {
            RevocationKey::Subject(sub, at) => {
                match self.subjects.get_mut(sub) {
                    Some((a, e)) if *a >= at && *e >= exp => return false,
                    Some((a, e)) => {
                        *a = (*a).max(at);
                        *e = (*e).max(exp);
                    }
                    None => {
                        self.subjects.insert(sub.to_owned(), (at, exp));
                    }
                }
                self.push(key, held);
                return true;
            }
            other => other,
        };
        let h = hash_key(&self.hasher, want);
        let Held {
            index,
            log,
            keys,
            dead,
            ..
        } = self;
        if let Ok(slot) = index.find_entry(h, |&seq| names(log, keys, seq, want)) {
            let Some(i) = position(log, *slot.get()) else {
                return false;
            };
            if log[i].exp >= held {
                return false;
            }
            // Extended: the feed carries it again under a new number; the old entry goes.
            slot.remove();
            log[i].exp = SUPERSEDED;
            *dead += log[i].len as usize;
        }
        let Some(seq) = self.push(key, held) else {
            return false;
        };
        let (index, rehash) = self.index_mut();
        index.insert_unique(h, seq, rehash);
        true
    }

    /// Forgets every revocation whose `exp` is at or before `until`, and gives back the memory
    /// of what left once it is most of what is held.
    fn purge(&mut self, until: i64) {
        self.subjects.retain(|_, (_, e)| *e > until);
        for e in self.log.iter().filter(|e| i64::from(e.exp) <= until) {
            if e.exp == SUPERSEDED {
                continue;
            }
            self.dead += e.len as usize;
            let key = RevocationKey::parse(key_of(&self.keys, e));
            if let RevocationKey::Subject(..) = key {
                continue;
            }
            let h = hash_key(&self.hasher, key);
            if let Ok(slot) = self.index.find_entry(h, |&s| s == e.seq) {
                slot.remove();
            }
        }
        self.log.retain(|e| i64::from(e.exp) > until);
        if self.dead > 0 && self.dead * 2 >= self.keys.len() {
            let mut keys = String::with_capacity(self.keys.len() - self.dead);
            for e in &mut self.log {
                let key = key_of(&self.keys, e);
                // Shorter than before, so within u32.
                e.start = keys.len() as u32;
                keys.push_str(key);
            }
            self.keys = keys;
            self.dead = 0;
        }
        if self.log.len() < self.log.capacity() / 4 {
            self.log.shrink_to_fit();
            let (index, rehash) = self.index_mut();
            index.shrink_to_fit(rehash);
        }
    }
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

/// The room a reload makes for each key at least: the longest usual kind of key, a person's
/// subject revoked (`sub:`, the second, `usr_` and the id: 41 bytes), and some.
const ROOM_PER_KEY: usize = 48;

/// Adds a store's pages to a [`Denylist`] (see [`Denylist::loader`]).
#[derive(Debug)]
pub struct Loader<'a> {
    denylist: &'a Denylist,
    now: i64,
    /// The entries the store said are coming, until the first page sizes their keys.
    expected: usize,
}

impl DeniedSink for Loader<'_> {
    fn expect(&mut self, entries: usize) {
        self.expected = entries;
    }

    fn page(&mut self, page: &Denied) {
        if !page.is_empty() && self.expected > 0 {
            let expected = std::mem::take(&mut self.expected);
            // Room for every key at the longer of the first page's mean length and
            // ROOM_PER_KEY, and an eighth more: a first page may hold only the shortest kind
            // (PostgreSQL pages in key order), and room never written is never resident. Keys
            // longer than that grow the buffer once.
            let per_key = page.key_bytes().div_ceil(page.len()).max(ROOM_PER_KEY);
            let key_bytes = expected.saturating_mul(per_key);
            self.denylist
                .held_at(self.now)
                .reserve(expected, key_bytes.saturating_add(key_bytes / 8));
        }
        self.denylist.reload(page, self.now);
    }
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
        self.extend_stored([(r.key(), exp)], now);
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
        self.extend_stored([(&key, exp)], now);
        store.announce(vec![Change::Denied { jti: key, exp }]).await;
        Ok(())
    }

    /// Adds entries a store has just denylisted (`(key, exp)`, as [`Denylist::extend_stored`])
    /// and announces them.
    pub async fn recorded<S: Stores>(&self, store: &S, entries: Vec<(String, i64)>, now: i64) {
        self.extend_stored(entries.iter().map(|(k, exp)| (k, *exp)), now);
        let changes = entries
            .into_iter()
            .map(|(jti, exp)| Change::Denied { jti, exp })
            .collect();
        store.announce(changes).await;
    }

    /// Adds what a store holds (a reload, or a catch-up), with room made for all of it first.
    pub fn reload(&self, denied: &Denied, now: i64) {
        self.extend_sized(denied.iter(), denied.key_bytes(), now);
    }

    /// Where a store's pages of entries in force go ([`crate::DenylistStore::each_denied`]),
    /// added at `now` as [`Denylist::reload`] adds them, with room made for all of them when
    /// the store says how many.
    pub fn loader(&self, now: i64) -> Loader<'_> {
        Loader {
            denylist: self,
            now,
            expected: 0,
        }
    }

    /// Adds what a store holds (a change announced): `(key, exp)` pairs in
    /// [`Revocation::key`]'s form. Entries past their expiry are forgotten, at most once a
    /// second.
    pub fn extend_stored<K: AsRef<str>>(
        &self,
        entries: impl IntoIterator<Item = (K, i64)>,
        now: i64,
    ) {
        self.extend_sized(entries, 0, now);
    }

    /// [`Denylist::extend_stored`], with room made for `key_bytes` and the entries' count.
    fn extend_sized<K: AsRef<str>>(
        &self,
        entries: impl IntoIterator<Item = (K, i64)>,
        key_bytes: usize,
        now: i64,
    ) {
        let entries = entries.into_iter();
        let mut g = self.held_at(now);
        g.reserve(entries.size_hint().0, key_bytes);
        let mut added = false;
        for (key, exp) in entries {
            if exp > now - LEEWAY && g.insert(key.as_ref(), exp) {
                added = true;
            }
        }
        if added {
            let next = g.next;
            drop(g);
            self.head.send_replace(next);
        }
    }

    /// What is held, to be changed at `now`: entries past their expiry are forgotten first (at
    /// most once a second), so that room made after is not given back by that purge.
    fn held_at(&self, now: i64) -> std::sync::RwLockWriteGuard<'_, Held> {
        let mut g = self.held.write().unwrap_or_else(|e| e.into_inner());
        if g.purged_at != now {
            g.purged_at = now;
            g.purge(now - LEEWAY);
        }
        g
    }

    /// Whether a token with these claims is revoked.
    pub fn refuses(&self, claims: &Claims) -> bool {
        let g = self.held.read().unwrap_or_else(|e| e.into_inner());
        if g.len() == 0 {
            return false;
        }
        claims
            .jti
            .as_deref()
            .is_some_and(|j| g.holds(RevocationKey::Token(j)))
            || claims
                .sid
                .as_deref()
                .is_some_and(|s| g.holds(RevocationKey::Session(s)))
            || claims.sub.as_ref().is_some_and(|s| {
                g.subjects
                    .get(s)
                    .is_some_and(|(at, _)| claims.iat.unwrap_or(0) <= *at)
            })
    }

    /// Whether the session with public handle `sid` was ended (its end is durable once this
    /// holds, whatever became of the session's record).
    pub fn session_revoked(&self, sid: &str) -> bool {
        self.held
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .holds(RevocationKey::Session(sid))
    }

    /// Up to when `sub`'s tokens are revoked, if they are.
    pub fn subject_revoked_at(&self, sub: &str) -> Option<i64> {
        self.held
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .subjects
            .get(sub)
            .map(|(at, _)| *at)
    }

    /// How many revocations are held.
    pub fn len(&self) -> usize {
        self.held.read().unwrap_or_else(|e| e.into_inner()).len()
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
        let first = g.log.partition_point(|e| g.feed_seq(e.seq) < from);
        g.log[first..]
            .iter()
            .filter(|e| e.exp != SUPERSEDED)
            .take(limit)
            .map(|e| {
                let r = Revocation::from_key(key_of(&g.keys, e));
                (
                    format!("{}.{}", self.epoch, g.feed_seq(e.seq)),
                    RevocationEvent::new(&r, i64::from(e.exp)),
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

    /// An entry is found by its number whatever the gaps left before, after or among the
    /// entries held (a search bounded by the gaps), and a number not held is not found.
    #[test]
    fn log_positions_are_found_across_gaps() {
        let entry = |seq| Entry {
            seq,
            exp: 1,
            start: 0,
            len: 0,
        };
        let sets: [&[u32]; 5] = [
            &[],
            &[7],
            &[0, 1, 2, 3, 4, 5],
            &[3, 4, 9, 10, 11, 40, 41, 42, 100],
            &[0, 50, 51, 52, 53, 54, 55, 56, u32::MAX],
        ];
        for seqs in sets {
            let log: Vec<Entry> = seqs.iter().map(|&s| entry(s)).collect();
            for probe in (0..120).chain([u32::MAX - 1, u32::MAX]) {
                assert_eq!(
                    position(&log, probe),
                    seqs.iter().position(|&s| s == probe),
                    "{probe} in {seqs:?}"
                );
            }
        }
    }

    /// A reload in pages makes room for all of it when the store says how many entries are
    /// coming, the keys' bytes estimated from the first page, and keeps that room through the
    /// pages: grown page by page instead, each larger copy would be a freed block the allocator
    /// keeps (and raises its thresholds for).
    #[test]
    fn a_reload_in_pages_keeps_the_room_it_made() {
        let d = Denylist::new(900);
        let mut loader = d.loader(100);
        loader.expect(10_000);
        for p in 0..3 {
            // Keys of 60 bytes: longer than ROOM_PER_KEY, so the first page's mean makes the room.
            let page: Denied = (0..10)
                .map(|i| (format!("jti-{p}-{i}-{}", "x".repeat(52)), 1_000))
                .collect();
            loader.page(&page);
        }
        let held = d.held.read().unwrap();
        assert_eq!(held.log.len(), 30);
        assert!(held.log.capacity() >= 10_000, "{}", held.log.capacity());
        assert!(held.keys.capacity() >= 600_000, "{}", held.keys.capacity());
        assert!(held.index.capacity() >= 10_000, "{}", held.index.capacity());
    }

    /// A store that says nothing (0), or pages after an empty first page, still loads all; the
    /// room is made at the first page with entries, for at least `ROOM_PER_KEY` a key.
    #[test]
    fn a_reload_without_a_count_or_with_an_empty_first_page_loads_everything() {
        for expected in [0, 5_000] {
            let d = Denylist::new(900);
            let mut loader = d.loader(100);
            loader.expect(expected);
            loader.page(&Denied::default());
            for p in 0..5 {
                let page: Denied = (0..10).map(|i| (format!("k{p}{i}"), 1_000)).collect();
                loader.page(&page);
            }
            let held = d.held.read().unwrap();
            assert_eq!(held.len(), 50);
            assert!(held.holds(RevocationKey::Token("k49")));
            let room = expected * ROOM_PER_KEY;
            assert!(held.keys.capacity() >= room, "{}", held.keys.capacity());
        }
    }

    /// What a revocation costs besides its key: its log entry and its place in the index. At
    /// 10^5 revocations in force this is most of an idle server's own memory.
    #[test]
    fn a_revocation_costs_under_26_bytes_besides_its_key() {
        let d = Denylist::new(900);
        let n = 10_000;
        let page: Denied = (0..n).map(|i| (format!("j{i}"), 1_000)).collect();
        d.reload(&page, 100);
        let held = d.held.read().unwrap();
        assert_eq!(held.len(), n);
        let bytes = held.log.capacity() * size_of::<Entry>() + held.index.allocation_size();
        assert!(
            bytes < 26 * n,
            "{} bytes a revocation",
            bytes as f64 / n as f64
        );
    }

    /// The log numbers its entries from a base, in 32 bits; when the numbers run out it
    /// renumbers from the oldest held, and neither the checks nor the feed's cursors notice.
    #[test]
    fn running_out_of_numbers_renumbers_and_loses_nothing() {
        let d = Denylist::new(900);
        let start = u64::from(u32::MAX) - 3;
        d.held.write().unwrap().next = start;
        let ids: Vec<String> = (0..12).map(|i| format!("j{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            d.add(Revocation::Token(id.clone()), 1_000 + i as i64, 100);
        }
        d.add(Revocation::Session("s".into()), 1_000, 100);
        // Extended: superseded under a new number past the renumbering.
        d.add(Revocation::Token("j0".into()), 5_000, 100);
        let feed = d.since(None, 100);
        let seqs: Vec<u64> = feed
            .iter()
            .map(|(c, _)| c.rsplit_once('.').unwrap().1.parse().unwrap())
            .collect();
        assert_eq!(seqs.len(), 13);
        assert_eq!(seqs[0], start + 1, "j0's first entry is superseded");
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        assert!(seqs.last().unwrap() > &u64::from(u32::MAX));
        assert_eq!(feed.last().unwrap().1.exp, 5_000);
        for id in &ids {
            let c = Claims {
                jti: Some(id.clone()),
                ..Claims::default()
            };
            assert!(d.refuses(&c), "{id}");
        }
        assert!(d.session_revoked("s"));
        // A cursor into the renumbered log (j5's, numbered past 2^32 in the feed) resumes where
        // it was.
        let (cursor, _) = &feed[4];
        assert_eq!(d.since(Some(cursor), 100).len(), 8);
        // Expiries leave as before: j1..j11 end at 1_001..1_011.
        d.extend_stored(std::iter::empty::<(String, i64)>(), 1_006 + LEEWAY);
        assert_eq!(d.len(), 6, "j7..j11 and j0 (s ended at 1_000)");
        assert_eq!(d.since(Some(cursor), 100).len(), 6);
    }

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

    #[test]
    fn an_extended_revocation_moves_to_the_end_of_the_feed() {
        let d = Denylist::new(900);
        d.add(Revocation::Token("a".into()), 1000, 100);
        d.add(Revocation::Token("b".into()), 1000, 100);
        d.add(Revocation::Token("a".into()), 2000, 100);
        let all = d.since(None, 100);
        let got: Vec<_> = all
            .iter()
            .map(|(_, e)| (e.jti.clone().unwrap(), e.exp))
            .collect();
        assert_eq!(got, [("b".into(), 1000), ("a".into(), 2000)]);
        assert_eq!(d.len(), 2);
        // Held until the later expiry.
        d.add(Revocation::Token("c".into()), 5000, 1000 + LEEWAY + 1);
        assert!(
            d.since(None, 100)
                .iter()
                .any(|(_, e)| e.jti.as_deref() == Some("a"))
        );
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn tokens_sessions_and_subjects_are_told_apart() {
        let d = Denylist::new(900);
        d.add(Revocation::Session("x".into()), 1000, 100);
        let claims = |jti: &str, sid: &str, sub: &str, iat| Claims {
            jti: Some(jti.into()),
            sid: Some(sid.into()),
            sub: Some(sub.into()),
            iat: Some(iat),
            ..Claims::default()
        };
        assert!(!d.refuses(&claims("x", "y", "u", 50)));
        assert!(d.refuses(&claims("z", "x", "u", 50)));
        assert!(d.session_revoked("x"));
        d.add(
            Revocation::Subject {
                sub: "u".into(),
                at: 60,
            },
            1000,
            100,
        );
        d.add(
            Revocation::Subject {
                sub: "u".into(),
                at: 40,
            },
            900,
            100,
        );
        assert_eq!(d.subject_revoked_at("u"), Some(60));
        assert!(d.refuses(&claims("z", "y", "u", 60)));
        assert!(!d.refuses(&claims("z", "y", "u", 61)));
        assert_eq!(d.len(), 2);
    }

    /// Random additions and expiries, checked against the plain map of `RevocationSet`.
    #[test]
    fn agrees_with_a_plain_map_through_growth_purges_and_compaction() {
        let d = Denylist::new(900);
        let mut model = tessera_jose::RevocationSet::default();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut now = 1_000;
        let (mut compacted, mut longest) = (0, 0);
        for round in 0..40 {
            for _ in 0..500 {
                let id = format!("id{}", next() % 3000);
                let r = if next() % 4 == 0 {
                    Revocation::Session(id)
                } else {
                    Revocation::Token(id)
                };
                let exp = now + (next() % 600) as i64;
                d.add(r.clone(), exp, now);
                if exp > now - LEEWAY {
                    model.insert(r, exp);
                }
            }
            now += 37 + round;
            d.extend_stored(std::iter::empty::<(String, i64)>(), now);
            model.purge(now - LEEWAY);
            assert_eq!(d.len(), model.len(), "round {round}");
            let keys = d.held.read().unwrap().keys.len();
            compacted += usize::from(keys < longest);
            longest = longest.max(keys);
            for i in 0..3000 {
                let id = format!("id{i}");
                assert_eq!(d.session_revoked(&id), model.contains_sid(&id), "{id}");
                let c = Claims {
                    jti: Some(id.clone()),
                    ..Claims::default()
                };
                assert_eq!(d.refuses(&c), model.contains_jti(&id), "{id}");
            }
            // The feed holds each live revocation once, in order, at its latest expiry.
            let feed = d.since(None, usize::MAX);
            assert_eq!(feed.len(), model.len());
            let seqs: Vec<u64> = feed
                .iter()
                .map(|(c, _)| c.rsplit_once('.').unwrap().1.parse().unwrap())
                .collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        }
        assert!(compacted > 0, "the keys were never compacted");
    }
}
