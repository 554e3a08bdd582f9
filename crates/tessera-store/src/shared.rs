//! The cluster store: durable things (users, keys, refresh tokens, clients, the denylist) in a
//! database, fast and expiring things (sessions, login-throttle counts) in Redis, and the
//! changes the domain announces ([`Stores::announce`]) published on Redis pub/sub so that
//! each instance drops what it cached. It is composition only: each concern is the database's
//! or Redis's own store, untouched, but for the denylist's reading of what an earlier version
//! kept in Redis.

use tessera_core::{
    Change, DenylistStore, Purged, SessionStore, StoreResult, Stores, ThrottleStore,
};

use crate::RedisStore;
use crate::guard::Announcer;

/// `db` for users, keys, refresh tokens, clients and the denylist; `redis` for sessions and
/// login throttling, and for announcing changes.
#[derive(Debug, Clone)]
pub struct SharedStore<D, R = RedisStore> {
    db: D,
    redis: R,
}

impl<D, R> SharedStore<D, R> {
    /// Pairs a database with Redis.
    pub fn new(db: D, redis: R) -> SharedStore<D, R> {
        SharedStore { db, redis }
    }

    /// The database.
    pub fn db(&self) -> &D {
        &self.db
    }

    /// Redis.
    pub fn redis(&self) -> &R {
        &self.redis
    }
}

/// A store Redis can be for the cluster: sessions, the throttle, the earlier denylist, and the
/// channel changes are announced on.
pub trait ClusterRedis: Announcer + SessionStore + DenylistStore + ThrottleStore {}

impl<R: Announcer + SessionStore + DenylistStore + ThrottleStore> ClusterRedis for R {}

impl<D: Stores, R: ClusterRedis> Stores for SharedStore<D, R> {
    type Users = D::Users;
    type Sessions = R;
    type Keys = D::Keys;
    type Refresh = D::Refresh;
    type Denylist = Self;
    type Throttle = R;
    type Clients = D::Clients;

    fn users(&self) -> &D::Users {
        self.db.users()
    }

    fn sessions(&self) -> &R {
        &self.redis
    }

    fn keys(&self) -> &D::Keys {
        self.db.keys()
    }

    fn refresh(&self) -> &D::Refresh {
        self.db.refresh()
    }

    fn denylist(&self) -> &Self {
        self
    }

    fn throttle(&self) -> &R {
        &self.redis
    }

    fn clients(&self) -> &D::Clients {
        self.db.clients()
    }

    /// Publishes each change on Redis. Denylist entries go in a task of their own: the
    /// revocation is complete without them (the instances catch up from the database), and a
    /// Redis that hangs must not hold the request that made it. The others are awaited, and a
    /// failure logged, not returned: the change itself stands, and caches expire on their own.
    async fn announce(&self, changes: Vec<Change>) {
        let (denied, others): (Vec<Change>, Vec<Change>) = changes
            .into_iter()
            .partition(|c| matches!(c, Change::Denied { .. }));
        if !denied.is_empty() {
            let redis = self.redis.clone();
            tokio::spawn(async move {
                for change in denied {
                    if let Err(e) = redis.publish(&change).await {
                        tracing::warn!(error = %e, "announcing a revocation on Redis failed; the instances catch up from the database");
                        return;
                    }
                }
            });
        }
        for change in others {
            if let Err(e) = self.redis.publish(&change).await {
                tracing::warn!(error = %e, "announcing a change on Redis failed");
            }
        }
    }
}

/// The denylist is the database's: a revocation is complete once committed there, whatever
/// Redis does. Redis carries it to the other instances at once (announced, best effort); their
/// catch-up from the database (`DenylistStore::denied_since`) brings what it could not.
impl<D: Stores, R: ClusterRedis> DenylistStore for SharedStore<D, R> {
    async fn deny_access(&self, jti: &str, exp: i64, now: i64) -> StoreResult<()> {
        self.db.denylist().deny_access(jti, exp, now).await
    }

    async fn denied_access(&self, now: i64) -> StoreResult<tessera_core::Denied> {
        let mut all = tessera_core::Denied::default();
        self.each_denied(now, &mut all).await?;
        Ok(all)
    }

    async fn each_denied(
        &self,
        now: i64,
        sink: &mut dyn tessera_core::DeniedSink,
    ) -> StoreResult<()> {
        self.db.denylist().each_denied(now, sink).await?;
        // Entries an earlier version kept in Redis alone, while they last.
        match self.redis.denied_access(now).await {
            Ok(earlier) => sink.page(&earlier),
            Err(e) => tracing::debug!(error = %e, "reading Redis's denylist failed"),
        }
        Ok(())
    }

    async fn denied_since(&self, since: i64, now: i64) -> StoreResult<tessera_core::Denied> {
        self.db.denylist().denied_since(since, now).await
    }

    async fn purge_denied(&self, now: i64) -> StoreResult<Purged> {
        if let Err(e) = self.redis.purge_denied(now).await {
            tracing::debug!(error = %e, "purging Redis's denylist failed");
        }
        self.db.denylist().purge_denied(now).await
    }
}
