//! tessera-store: the backends of tessera-core's store traits. [`MemoryStore`] keeps everything
//! in the process (tests, single-instance development); [`SqliteStore`] is the embedded
//! default; [`PostgresStore`] and [`RedisStore`] are the shared stores of a cluster, paired by
//! [`SharedStore`]. [`CachedStore`] caches hot reads in front of any of them and learns of
//! changes through a feed of [`Change`]s: Redis pub/sub, or [`watch_generation`] for a database
//! alone. The same conformance suite (`tests/conformance.rs`) runs against every backend.

mod bus;
mod cached;
mod guard;
mod memory;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod oauth_sql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod record;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod shared;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod token_sql;

use std::future::Future;
use std::time::Duration;

pub use bus::{ChangeBus, Changes};
pub use cached::{CachedStore, stale_served};
pub use guard::{Announcer, Circuit, CircuitSettings, CircuitStats, Guarded, Probe, circuits};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "redis")]
pub use redis::{RedisStore, SessionForm};
#[cfg(feature = "redis")]
pub use shared::{ClusterRedis, SharedStore};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
use tessera_core::{Change, StoreResult};

/// A database with a revocation generation: a number every revoking change moves, so that
/// processes sharing the database notice each other's changes by polling it.
pub trait Generation: Clone + Send + Sync + 'static {
    /// The current generation.
    fn revocation_generation(&self) -> impl Future<Output = StoreResult<i64>> + Send;
}

/// Polls `store`'s generation every `every` and publishes [`Change::Everything`] on `bus` when
/// it moves; while it cannot be read, [`Change::FeedLost`]. Runs until aborted.
pub fn watch_generation<G: Generation>(
    store: G,
    every: Duration,
    bus: ChangeBus,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = store.revocation_generation().await.ok();
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let change = match store.revocation_generation().await {
                Ok(g) if Some(g) != last => {
                    last = Some(g);
                    Change::Everything
                }
                Ok(_) => continue,
                Err(_) => {
                    // Unreadable: nothing cached can be trusted until it reads again.
                    last = None;
                    Change::FeedLost
                }
            };
            bus.publish(change);
        }
    })
}
