//! A read-through cache of sessions, users and OAuth clients in front of a slower store, for the hot path of
//! every request (`/auth/me`). Writes made through it update or evict at once; writes made by
//! another process (the CLI disabling a user) arrive through [`CachedStore::invalidate_all`],
//! which the server calls when the store's revocation generation moves; and no entry lives
//! longer than its time-to-live.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tessera_core::{
    Change, Client, ClientStore, CodeRecord, Consent, Purged, RefreshRecord, Session, SessionStore,
    StoreResult, Stores, TokenHash, User, UserStore,
};

#[derive(Debug)]
struct Entry<T> {
    value: T,
    at: Instant,
}

#[derive(Debug)]
struct Cache {
    sessions: RwLock<HashMap<TokenHash, Entry<Session>>>,
    users: RwLock<HashMap<String, Entry<User>>>,
    clients: RwLock<HashMap<String, Entry<Client>>>,
    /// Bumped by every eviction: a read that started before one does not fill the cache.
    epoch: AtomicU64,
    /// How long a session is served from here (users: `ttl`).
    session_ttl: Duration,
    /// False while the change feed is lost: then nothing is served from the cache or put in it.
    live: AtomicBool,
    ttl: Duration,
    capacity: usize,
}

/// `inner` with a bounded, short-lived cache of `session(hash)` and `user_by_id(id)`.
#[derive(Debug, Clone)]
pub struct CachedStore<T> {
    inner: T,
    cache: Arc<Cache>,
}

impl<T> CachedStore<T> {
    /// Caches at most `capacity` sessions and as many users, each for at most `ttl`.
    pub fn new(inner: T, ttl: Duration, capacity: usize) -> CachedStore<T> {
        Self::with_session_ttl(inner, ttl, ttl, capacity)
    }

    /// As [`CachedStore::new`], sessions cached for `session_ttl` (zero: never served from
    /// the cache).
    pub fn with_session_ttl(
        inner: T,
        ttl: Duration,
        session_ttl: Duration,
        capacity: usize,
    ) -> CachedStore<T> {
        CachedStore {
            inner,
            cache: Arc::new(Cache {
                sessions: RwLock::new(HashMap::new()),
                users: RwLock::new(HashMap::new()),
                clients: RwLock::new(HashMap::new()),
                epoch: AtomicU64::new(0),
                live: AtomicBool::new(true),
                session_ttl,
                ttl,
                capacity,
            }),
        }
    }

    /// The store behind the cache.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// Forgets everything (another process changed the store).
    pub fn invalidate_all(&self) {
        self.cache.epoch.fetch_add(1, Ordering::SeqCst);
        write(&self.cache.sessions).clear();
        write(&self.cache.users).clear();
        write(&self.cache.clients).clear();
    }

    /// Applies every change `bus` carries from now on ([`CachedStore::apply`]), until the bus's
    /// publishers are gone.
    pub fn follow(&self, bus: &crate::ChangeBus) -> tokio::task::JoinHandle<()>
    where
        T: Clone + Send + Sync + 'static,
    {
        let cache = self.clone();
        let mut changes = bus.subscribe();
        tokio::spawn(async move {
            while let Some(change) = changes.next().await {
                cache.apply(&change);
            }
        })
    }

    /// Applies a change announced by another instance (or process): evicts what it touches.
    /// While the feed is lost ([`Change::FeedLost`] until the next [`Change::Everything`]) the
    /// cache is bypassed, since changes could go unseen.
    pub fn apply(&self, change: &Change) {
        match change {
            Change::Session(hash) => self.evict_session(hash),
            Change::SessionsOf(_) => self.evict_sessions(),
            Change::User(id) => self.evict_user(id),
            Change::Client(id) => self.evict_client(id),
            Change::Denied { .. } | Change::Keys => {}
            Change::Everything => {
                self.invalidate_all();
                self.cache.live.store(true, Ordering::SeqCst);
            }
            Change::FeedLost => {
                self.cache.live.store(false, Ordering::SeqCst);
                self.invalidate_all();
            }
        }
    }

    fn evict_session(&self, hash: &TokenHash) {
        self.cache.epoch.fetch_add(1, Ordering::SeqCst);
        write(&self.cache.sessions).remove(hash);
    }

    fn evict_sessions(&self) {
        self.cache.epoch.fetch_add(1, Ordering::SeqCst);
        write(&self.cache.sessions).clear();
    }

    fn evict_user(&self, id: &str) {
        self.cache.epoch.fetch_add(1, Ordering::SeqCst);
        write(&self.cache.users).remove(id);
    }

    fn evict_client(&self, id: &str) {
        self.cache.epoch.fetch_add(1, Ordering::SeqCst);
        write(&self.cache.clients).remove(id);
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// Reads answered from an entry past its lifetime because the store failed.
static STALE_SERVED: AtomicU64 = AtomicU64::new(0);

/// How many reads in this process were answered from a cache entry past its lifetime because
/// the database failed (users and clients: the fallback that keeps Bearer checks going).
pub fn stale_served() -> u64 {
    STALE_SERVED.load(Ordering::Relaxed)
}

impl Cache {
    /// The cached value for `key` if fresh; otherwise `fetch`, remembered unless an eviction
    /// happened meanwhile (which could mean the fetched value is already stale).
    async fn read_through<K, Q, V>(
        &self,
        map: &RwLock<HashMap<K, Entry<V>>>,
        key: &Q,
        fetch: impl Future<Output = StoreResult<Option<V>>>,
        ttl: Duration,
        stale_if_error: bool,
    ) -> StoreResult<Option<V>>
    where
        K: Borrow<Q> + Hash + Eq,
        Q: ToOwned<Owned = K> + Hash + Eq + ?Sized,
        V: Clone,
    {
        if !self.live.load(Ordering::SeqCst) || ttl.is_zero() && !stale_if_error {
            return fetch.await;
        }
        if let Some(e) = read(map).get(key)
            && e.at.elapsed() < ttl
        {
            return Ok(Some(e.value.clone()));
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        let found = match fetch.await {
            Ok(found) => found,
            // The store is down: an entry past its TTL but never evicted by a change is still
            // the latest word on it (the feed is live, or it would have been dropped).
            Err(e) if stale_if_error => match read(map).get(key) {
                Some(stale) => {
                    STALE_SERVED.fetch_add(1, Ordering::Relaxed);
                    return Ok(Some(stale.value.clone()));
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        };
        if let Some(v) = &found {
            let mut m = write(map);
            if self.epoch.load(Ordering::SeqCst) == epoch && self.live.load(Ordering::SeqCst) {
                if m.len() >= self.capacity {
                    m.clear();
                }
                m.insert(
                    key.to_owned(),
                    Entry {
                        value: v.clone(),
                        at: Instant::now(),
                    },
                );
            }
        }
        Ok(found)
    }
}

impl<T: Stores> SessionStore for CachedStore<T> {
    async fn create_session(&self, hash: &TokenHash, session: &Session) -> StoreResult<()> {
        self.inner.sessions().create_session(hash, session).await
    }

    async fn session(&self, hash: &TokenHash) -> StoreResult<Option<Session>> {
        let c = &self.cache;
        c.read_through(
            &c.sessions,
            hash,
            self.inner.sessions().session(hash),
            c.session_ttl,
            false,
        )
        .await
    }

    async fn touch_session(&self, hash: &TokenHash, last_seen_at: i64) -> StoreResult<()> {
        self.inner
            .sessions()
            .touch_session(hash, last_seen_at)
            .await?;
        if let Some(e) = write(&self.cache.sessions).get_mut(hash) {
            e.value.last_seen_at = last_seen_at;
        }
        Ok(())
    }

    async fn set_session_data(&self, hash: &TokenHash, data: &Value) -> StoreResult<bool> {
        let r = self.inner.sessions().set_session_data(hash, data).await;
        self.evict_session(hash);
        r
    }

    async fn delete_session(&self, hash: &TokenHash) -> StoreResult<bool> {
        self.evict_session(hash);
        let r = self.inner.sessions().delete_session(hash).await;
        self.evict_session(hash);
        r
    }

    async fn sessions_of(&self, user_id: &str) -> StoreResult<Vec<(TokenHash, Session)>> {
        self.inner.sessions().sessions_of(user_id).await
    }

    async fn delete_sessions_of(
        &self,
        user_id: &str,
        except: Option<&TokenHash>,
    ) -> StoreResult<u64> {
        self.evict_sessions();
        let r = self
            .inner
            .sessions()
            .delete_sessions_of(user_id, except)
            .await;
        self.evict_sessions();
        r
    }

    async fn purge_expired_sessions(&self, now: i64) -> StoreResult<Purged> {
        let r = self.inner.sessions().purge_expired_sessions(now).await;
        // Not after a batch that removed nothing: a purge is a call a batch, and a backlog's
        // thousands of calls would empty the cache as often.
        if !matches!(r, Ok(Purged { removed: 0, .. })) {
            self.evict_sessions();
        }
        r
    }

    async fn count_sessions(&self) -> StoreResult<u64> {
        self.inner.sessions().count_sessions().await
    }
}

impl<T: Stores> UserStore for CachedStore<T> {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        self.inner.users().create_user(user).await
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        self.inner.users().user_by_name(username).await
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        let c = &self.cache;
        // A user is served from a stale entry while the database is down, so that Bearer
        // tokens go on verifying; sessions never are (their store being down means 503).
        c.read_through(&c.users, id, self.inner.users().user_by_id(id), c.ttl, true)
            .await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.inner.users().list_users().await
    }

    async fn set_disabled(&self, id: &str, disabled: bool) -> StoreResult<bool> {
        self.evict_user(id);
        let r = self.inner.users().set_disabled(id, disabled).await;
        self.evict_user(id);
        r
    }

    async fn set_password_hash(&self, id: &str, hash: &str) -> StoreResult<bool> {
        let r = self.inner.users().set_password_hash(id, hash).await;
        self.evict_user(id);
        r
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        self.evict_user(id);
        let r = self.inner.users().delete_user(id).await;
        self.evict_user(id);
        r
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.users().ping().await
    }
}

impl<T: Stores> ClientStore for CachedStore<T> {
    async fn create_client(&self, client: &Client) -> StoreResult<()> {
        self.inner.clients().create_client(client).await
    }

    async fn client(&self, id: &str) -> StoreResult<Option<Client>> {
        let c = &self.cache;
        // Every client-credentials request and introspection authenticates a client: served
        // from memory, and (like users) from a stale entry while the database is down.
        c.read_through(&c.clients, id, self.inner.clients().client(id), c.ttl, true)
            .await
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        self.inner.clients().list_clients().await
    }

    async fn delete_client(&self, id: &str) -> StoreResult<bool> {
        self.evict_client(id);
        let r = self.inner.clients().delete_client(id).await;
        self.evict_client(id);
        r
    }

    async fn create_code(&self, hash: &TokenHash, record: &CodeRecord) -> StoreResult<()> {
        self.inner.clients().create_code(hash, record).await
    }

    async fn use_code(&self, hash: &TokenHash, at: i64) -> StoreResult<Option<(CodeRecord, bool)>> {
        self.inner.clients().use_code(hash, at).await
    }

    async fn code(&self, hash: &TokenHash) -> StoreResult<Option<(CodeRecord, bool)>> {
        self.inner.clients().code(hash).await
    }

    async fn redeem_code(
        &self,
        hash: &TokenHash,
        at: i64,
        refresh: &TokenHash,
        record: &RefreshRecord,
    ) -> StoreResult<bool> {
        self.inner
            .clients()
            .redeem_code(hash, at, refresh, record)
            .await
    }

    async fn purge_codes(&self, now: i64) -> StoreResult<Purged> {
        self.inner.clients().purge_codes(now).await
    }

    async fn set_consent(&self, user_id: &str, consent: &Consent) -> StoreResult<()> {
        self.inner.clients().set_consent(user_id, consent).await
    }

    async fn consents_of(&self, user_id: &str) -> StoreResult<Vec<Consent>> {
        self.inner.clients().consents_of(user_id).await
    }

    async fn delete_consent(&self, user_id: &str, client_id: &str) -> StoreResult<bool> {
        self.inner
            .clients()
            .delete_consent(user_id, client_id)
            .await
    }
}

/// The cache wraps users, sessions and clients; the other concerns are `T`'s, untouched.
impl<T: Stores> Stores for CachedStore<T> {
    type Users = Self;
    type Sessions = Self;
    type Keys = T::Keys;
    type Refresh = T::Refresh;
    type Denylist = T::Denylist;
    type Throttle = T::Throttle;
    type Clients = Self;

    fn users(&self) -> &Self {
        self
    }

    fn sessions(&self) -> &Self {
        self
    }

    fn keys(&self) -> &T::Keys {
        self.inner.keys()
    }

    fn refresh(&self) -> &T::Refresh {
        self.inner.refresh()
    }

    fn denylist(&self) -> &T::Denylist {
        self.inner.denylist()
    }

    fn throttle(&self) -> &T::Throttle {
        self.inner.throttle()
    }

    fn clients(&self) -> &Self {
        self
    }

    async fn announce(&self, changes: Vec<Change>) {
        self.inner.announce(changes).await
    }
}
