//! The domain service: everything tessera does, over one store, with no HTTP in sight.
//! [`Service::start`] builds it (the password hashers, the throttle, the signing keys, the
//! token issuer, the denylist reloaded from the store); [`Service::spawn_tasks`] runs what it
//! does on its own (reloading keys, catching up with revocations, purging what expired);
//! [`Service::apply`] takes in a change another process announced. The server and the CLI
//! are both built on it.

use std::sync::Arc;
use std::time::Duration;

use tessera_jose::{Algorithm, Clock};

use crate::revocation::LEEWAY;
use crate::store::{Change, Purged, StoreError, StoreResult, Stores};
use crate::store::{
    ClientStore as _, DenylistStore as _, RefreshStore as _, SessionStore as _, UserStore as _,
};
use crate::{
    Auth, Client, Consent, Denylist, DeviceCookies, HashParams, KeyManager, MasterKey,
    PasswordHasherPool, PasswordPolicy, SessionPolicy, Throttle, ThrottlePolicy, TokenSettings,
    Tokens, User,
};

/// What the service is built with.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Argon2id parameters of new password hashes.
    pub hash: HashParams,
    /// Hashes computed at once.
    pub hash_concurrency: usize,
    /// Logins that may wait for a hashing thread.
    pub hash_queue: usize,
    /// Niceness of the hashing threads.
    pub hash_nice: i32,
    /// Shortest password of a new account.
    pub password_min_length: usize,
    /// Login throttling.
    pub throttle: ThrottlePolicy,
    /// Session lifetimes and bounds.
    pub session: SessionPolicy,
    /// Access and refresh tokens.
    pub tokens: TokenSettings,
    /// Algorithm of new signing keys.
    pub algorithm: Algorithm,
    /// Where new signing keys are made and sign (an HSM), if not in the store.
    pub vault: Option<Arc<dyn crate::KeyVault>>,
}

/// Why the service could not start: one sentence.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// How often the service's own tasks run ([`Service::spawn_tasks`]).
#[derive(Debug, Clone, Copy)]
pub struct Tasks {
    /// Reloading the signing keys (a rotation elsewhere, a key reaching its activation).
    pub keys: Duration,
    /// Catching up with the revocations in the store (the bound on how long one made
    /// elsewhere can go unseen when the change feed did not bring it).
    pub denylist: Duration,
    /// Removing what expired (sessions, codes, denylist entries, access-token records, ended
    /// refresh families).
    pub purge: Duration,
}

/// The domain service over store `S`; its parts are shared (`Arc`) with whoever serves it.
#[derive(Debug)]
pub struct Service<S> {
    /// Accounts, logins and sessions.
    pub auth: Arc<Auth<S>>,
    /// Access and refresh tokens, codes, client credentials.
    pub tokens: Arc<Tokens<S>>,
    /// The signing keys.
    pub keys: Arc<KeyManager<S>>,
    /// Access tokens and sessions revoked before their expiry.
    pub denylist: Arc<Denylist>,
    /// The last count of the stored sessions, and when it was taken.
    counted: Arc<SessionCount>,
}

/// The sessions in the store, counted at most once every [`SessionCount::EVERY`] seconds and
/// by one caller at a time (counting a large store is a scan; `/metrics` is open).
struct SessionCount {
    clock: Arc<dyn Clock>,
    /// The last count (or its failure) and when it was taken.
    last: std::sync::Mutex<Option<(i64, StoreResult<u64>)>>,
    /// Held by the caller counting.
    counting: tokio::sync::Mutex<()>,
}

impl SessionCount {
    /// How long a count stands (a scrape interval is 15 s or more).
    const EVERY: i64 = 10;
}

impl std::fmt::Debug for SessionCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCount").finish_non_exhaustive()
    }
}

impl<S> Clone for Service<S> {
    fn clone(&self) -> Self {
        Service {
            auth: Arc::clone(&self.auth),
            tokens: Arc::clone(&self.tokens),
            keys: Arc::clone(&self.keys),
            denylist: Arc::clone(&self.denylist),
            counted: Arc::clone(&self.counted),
        }
    }
}

impl<S: Stores + Clone> Service<S> {
    /// Builds the service over `store` with `clock`; signing keys are sealed under `master`
    /// (a first key is made if the store has none), and revocations in force are reloaded.
    pub async fn start(
        store: S,
        settings: ServiceSettings,
        clock: Arc<dyn Clock>,
        master: MasterKey,
    ) -> Result<Service<S>, StartError> {
        let hasher = PasswordHasherPool::new(
            settings.hash,
            settings.hash_concurrency,
            settings.hash_queue,
            settings.hash_nice,
        )
        .map_err(|e| StartError(format!("password hashing: {e}")))?;
        let access_ttl = settings.tokens.access_ttl;
        let now = clock.now();
        let successor = master.derive("refresh-token-successor");
        // Revocations survive a restart: the denylist is reloaded from the store.
        let denylist = Arc::new(Denylist::new(access_ttl));
        store
            .denylist()
            .each_denied(now, &mut denylist.loader(now))
            .await
            .map_err(|e| StartError(format!("reading the access-token denylist: {e}")))?;
        let devices = DeviceCookies::new(
            crate::CsrfKey::new(master.derive("device-cookie")),
            settings.throttle.device_ttl,
        );
        let keys = Arc::new(
            KeyManager::start(
                store.clone(),
                master,
                settings.vault,
                settings.algorithm,
                now,
                access_ttl + LEEWAY,
            )
            .await
            .map_err(|e| StartError(e.to_string()))?,
        );
        let tokens = Tokens::new(
            store.clone(),
            Arc::clone(&keys),
            successor,
            settings.tokens,
            Arc::clone(&clock),
            Arc::clone(&denylist),
        );
        let auth = Auth::new(
            store,
            hasher,
            PasswordPolicy {
                min_len: settings.password_min_length,
                ..PasswordPolicy::default()
            },
            settings.session,
            Throttle::new(settings.throttle),
            devices,
            Arc::clone(&clock),
            Arc::clone(&denylist),
        );
        Ok(Service {
            auth: Arc::new(auth),
            tokens: Arc::new(tokens),
            keys,
            denylist,
            counted: Arc::new(SessionCount {
                clock,
                last: std::sync::Mutex::new(None),
                counting: tokio::sync::Mutex::new(()),
            }),
        })
    }
}

/// How far before the previous catch-up each catch-up looks, seconds: an entry is stamped
/// with its writer's clock before its transaction commits, and becomes visible up to this
/// much later (transactions are bounded well below it; clocks of a cluster agree within it).
const SYNC_LOOKBACK: i64 = 10;

/// How often the catch-up reads every entry in force instead of the recent ones.
const SYNC_FULL_EVERY: Duration = Duration::from_secs(60);

/// What the HTTP layer asks of the store, in the domain's words: the server names no store.
impl<S: Stores> Service<S> {
    /// The registered client `id`.
    pub async fn client(&self, id: &str) -> StoreResult<Option<Client>> {
        self.auth.store().clients().client(id).await
    }

    /// The user `id` (disabled or not).
    pub async fn user(&self, id: &str) -> StoreResult<Option<User>> {
        self.auth.store().users().user_by_id(id).await
    }

    /// The applications `user_id` allowed, with the scopes.
    pub async fn consents_of(&self, user_id: &str) -> StoreResult<Vec<Consent>> {
        self.auth.store().clients().consents_of(user_id).await
    }

    /// Records that `user_id` allowed `consent.client_id` the scopes of `consent`.
    pub async fn grant_consent(&self, user_id: &str, consent: &Consent) -> StoreResult<()> {
        self.auth
            .store()
            .clients()
            .set_consent(user_id, consent)
            .await
    }

    /// Withdraws `user_id`'s consent to `client_id`: the client's refresh tokens for this person
    /// stop working, and it must ask again. Whether there was one.
    pub async fn withdraw_consent(&self, user_id: &str, client_id: &str) -> StoreResult<bool> {
        self.auth
            .store()
            .clients()
            .delete_consent(user_id, client_id)
            .await
    }

    /// Sessions held in the store (live, and expired but not yet purged), as counted (or as
    /// failing to be counted) at most ten seconds ago by the service's clock. One caller counts
    /// at a time, and none waits for it: while a count is under way, the others get the last
    /// one (none yet: unavailable).
    pub async fn stored_sessions(&self) -> StoreResult<u64> {
        let c = &*self.counted;
        let last = || c.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let now = c.clock.now();
        let fresh = |at: i64| (at..at + SessionCount::EVERY).contains(&now);
        let Ok(_counting) = c.counting.try_lock() else {
            return last().map_or_else(
                || Err(StoreError::Unavailable("sessions being counted".into())),
                |(_, n)| n,
            );
        };
        if let Some((at, n)) = last()
            && fresh(at)
        {
            return n;
        }
        let n = self.auth.store().sessions().count_sessions().await;
        *c.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((now, n.clone()));
        n
    }

    /// Whether the store of users answers.
    pub async fn ping(&self) -> StoreResult<()> {
        self.auth.store().users().ping().await
    }

    /// Whether the store of sessions answers (for readiness): one lookup by key, of a session
    /// no token can name (the hash of nothing a client holds), which costs the same whatever
    /// the number of sessions, where counting them scans them all (and the cache does not keep
    /// a miss, so the store itself is asked).
    pub async fn ping_sessions(&self) -> StoreResult<()> {
        let nothing = crate::TokenHash([0; 32]);
        self.auth
            .store()
            .sessions()
            .session(&nothing)
            .await
            .map(drop)
    }
}

impl<S: Stores> Service<S> {
    /// Denylists a verified access token until its expiry and revokes its refresh family, in
    /// one step of the store.
    pub async fn revoke_access(
        &self,
        token: &tessera_jose::Token,
    ) -> Result<(), crate::GrantError> {
        let c = &token.claims;
        if let (Some(jti), Some(exp)) = (&c.jti, c.exp) {
            self.tokens.revoke_access(jti, exp).await?;
            tracing::info!(target: "audit", event = "access_token_denylisted", user = ?c.sub, until = exp);
        }
        Ok(())
    }

    /// Takes in a change another instance (or the CLI) announced: a revoked access token joins
    /// the denylist, a key change reloads the keys, and [`Change::Everything`] (a feed that
    /// reconnected, a generation that moved) reloads both. (The store's caches take changes
    /// on their own.)
    pub async fn apply(&self, change: &Change) {
        let now = self.auth.now();
        match change {
            Change::Denied { jti, exp } => {
                self.denylist.extend_stored([(jti.clone(), *exp)], now);
            }
            Change::Keys => self.reload_keys(now).await,
            Change::Everything => {
                match self
                    .auth
                    .store()
                    .denylist()
                    .each_denied(now - LEEWAY, &mut self.denylist.loader(now))
                    .await
                {
                    Ok(()) => self.denylist.set_fresh(true),
                    Err(e) => tracing::warn!(error = %e, "reloading the denylist failed"),
                }
                self.reload_keys(now).await;
            }
            // The denylist's freshness is the catch-up's to say (`Tasks::denylist`): it stays
            // complete without the feed.
            Change::FeedLost
            | Change::Session(_)
            | Change::SessionsOf(_)
            | Change::User(_)
            | Change::Client(_) => {}
        }
    }

    async fn reload_keys(&self, now: i64) {
        if let Err(e) = self.keys.refresh(now).await {
            tracing::warn!(error = %e, "reloading the signing keys failed");
        }
    }

    /// Starts the service's own tasks, each every `every` of its kind, until the process ends:
    /// the key reloader, the denylist catch-up and the purger.
    pub fn spawn_tasks(&self, every: Tasks) -> [tokio::task::JoinHandle<()>; 3]
    where
        S: Clone,
    {
        let keys = {
            let s = self.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every.keys);
                loop {
                    tick.tick().await;
                    s.reload_keys(s.auth.now()).await;
                }
            })
        };
        let denylist = {
            let s = self.clone();
            tokio::spawn(async move { s.catch_up(every.denylist).await })
        };
        let purge = {
            let s = self.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every.purge);
                // A backlog's purge may outlast the period: the next starts a period after it
                // ends, not at once to catch up.
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    s.purge().await;
                }
            })
        };
        [keys, denylist, purge]
    }

    /// Catches up every `every` with the revocations made durable in the store by any instance
    /// (or the CLI): the denylist is complete within `every` of a revocation whether or not the
    /// change feed (the fast path) delivered it. The copy counts as fresh while these reads
    /// succeed, and stale once they have failed for three periods in a row.
    async fn catch_up(&self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first catch-up looks back from now: `start` loaded everything before.
        let mut last = self.auth.now();
        let mut failures = 0u32;
        let mut full_at = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            let now = self.auth.now();
            // Now and then everything in force, whenever it was stamped: an entry whose
            // transaction became visible later than the lookback (a partitioned writer, a
            // writer's clock far off) is not missed for longer than this.
            let full = full_at.elapsed() >= SYNC_FULL_EVERY;
            let store = self.auth.store().denylist();
            let read = if full {
                store
                    .each_denied(now - LEEWAY, &mut self.denylist.loader(now))
                    .await
            } else {
                let since = last - SYNC_LOOKBACK;
                (store.denied_since(since, now - LEEWAY).await)
                    .map(|entries| self.denylist.reload(&entries, now))
            };
            if full && read.is_ok() {
                full_at = tokio::time::Instant::now();
            }
            match read {
                Ok(()) => {
                    self.denylist.set_fresh(true);
                    last = now;
                    failures = 0;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if failures == 3 {
                        self.denylist.set_fresh(false);
                        tracing::warn!(error = %e, "the denylist cannot be read from the store; it may be stale until it can");
                    }
                }
            }
        }
    }

    /// Removes what expired: denylist entries, records of expired access tokens, refresh
    /// families past their end with their tokens, codes, and sessions (stores without native
    /// expiry).
    async fn purge(&self) {
        let store = self.auth.store();
        let now = self.auth.now();
        // Every access token issued before this has expired, on any instance's clock.
        let access_gone = now - self.tokens.settings().access_ttl - LEEWAY;
        if let (_, Some(e)) = batches(|| store.denylist().purge_denied(now - LEEWAY)).await {
            tracing::warn!(error = %e, "purging the access-token denylist failed");
        }
        if let (_, Some(e)) = batches(|| store.refresh().purge_access(access_gone)).await {
            tracing::warn!(error = %e, "purging the records of expired access tokens failed");
        }
        // A family past its end issues nothing more, but an access token it issued in its last
        // second lives `access_ttl` after it, and revoking the family's refresh token (RFC 7009)
        // must still reach that token until it expires: the family stays as long.
        let (n, failed) = batches(|| store.refresh().purge_families(access_gone)).await;
        if n > 0 {
            tracing::info!(target: "audit", event = "refresh_families_purged", count = n);
        }
        if let Some(e) = failed {
            tracing::warn!(error = %e, "purging ended refresh families failed");
        }
        if let (_, Some(e)) = batches(|| store.clients().purge_codes(now)).await {
            tracing::warn!(error = %e, "purging expired authorization codes failed");
        }
        let (n, failed) = batches(|| store.sessions().purge_expired_sessions(now)).await;
        if n > 0 {
            tracing::info!(target: "audit", event = "sessions_purged", count = n);
        }
        if let Some(e) = failed {
            tracing::warn!(error = %e, "purging expired sessions failed");
        }
    }
}

/// The most batches one purge takes (5 million rows, of 500): a store that kept saying there
/// is more would hold the purge task otherwise; what is left goes at the next purge.
const MAX_BATCHES: u32 = 10_000;

/// A purge to its end, batch by batch (each call a write of its own, under the store's write
/// timeout: [`Purged`]): how many were removed, and the failure that ended it early if one did
/// (the batches done stay done; the next purge goes on from there).
async fn batches<F, Fut>(mut batch: F) -> (u64, Option<StoreError>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Purged, StoreError>>,
{
    let mut removed = 0u64;
    for _ in 0..MAX_BATCHES {
        match batch().await {
            Ok(done) => {
                removed = removed.saturating_add(done.removed);
                if !done.more {
                    break;
                }
            }
            Err(e) => return (removed, Some(e)),
        }
    }
    (removed, None)
}
