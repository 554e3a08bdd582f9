//! tessera-store: the backends of tessera-core's store traits. [`MemoryStore`] keeps everything
//! in the process (tests, single-instance development); [`SqliteStore`] is the embedded
//! default. PostgreSQL and Redis come with the many-servers work. The same conformance suite
//! (`tests/conformance.rs`) runs against every backend.

mod cached;
mod memory;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use cached::CachedStore;
pub use memory::MemoryStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
