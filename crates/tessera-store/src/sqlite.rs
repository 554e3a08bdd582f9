//! SQLite through sqlx: one file, WAL journal, migrations embedded in the binary.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use tessera_core::{StoreError, StoreResult};

/// The embedded schema, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "users and sessions",
        include_str!("../migrations/sqlite/0001_users_sessions.sql"),
    ),
    (
        2,
        "revocation generation",
        include_str!("../migrations/sqlite/0002_revocation_generation.sql"),
    ),
    (
        3,
        "signing keys",
        include_str!("../migrations/sqlite/0003_signing_keys.sql"),
    ),
    (
        4,
        "refresh tokens",
        include_str!("../migrations/sqlite/0004_refresh_tokens.sql"),
    ),
    (
        5,
        "access token denylist",
        include_str!("../migrations/sqlite/0005_denylist.sql"),
    ),
    (
        6,
        "oauth clients, codes and consents",
        include_str!("../migrations/shared/oauth.sql"),
    ),
    (
        7,
        "access tokens by family, denylist catch-up",
        include_str!("../migrations/shared/token_state.sql"),
    ),
    (
        8,
        "signing keys held by an HSM",
        include_str!("../migrations/shared/held_keys.sql"),
    ),
    (
        9,
        "indexes at scale",
        include_str!("../migrations/shared/scale_indexes.sql"),
    ),
];

/// The SQLite store. Clones share the connection pools.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Reads: a WAL reader never waits for the writer.
    pool: SqlitePool,
    /// Writes: one connection, handed out in the order it is asked for (sqlx's pool queue is
    /// first come, first served). SQLite has one write lock; left to its busy handler, writers on
    /// several connections retry it after sleeps of growing length (up to 100 ms a try), and
    /// whichever retries at the right moment wins: under load a refresh waited up to 1.35 s for
    /// it, and some past the write timeout. Taken in turn, a writer waits for the writes queued
    /// before it, no more; and the one connection's page cache stays warm, where SQLite empties a
    /// connection's cache whenever another connection has written. (In memory, where the one
    /// connection holds the database, the same pool as `pool`.)
    writes: SqlitePool,
    /// Whether the database is a file (not in memory, where the one connection holds it).
    file: bool,
    /// The checkpointer (see [`checkpoints`]); none in memory.
    checkpointer: Option<Arc<Checkpointer>>,
}

/// How the store reaches its checkpointer task.
#[derive(Debug)]
struct Checkpointer {
    /// Wakes it when a write is on its way. When the last clone of the store goes, so does
    /// this, and the task ends.
    written: tokio::sync::mpsc::Sender<()>,
    /// Ends the task (set by [`SqliteStore::close`], before the writer closes).
    stop: tokio::sync::watch::Sender<bool>,
    /// The task, awaited by [`SqliteStore::close`].
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or `sqlite::memory:`)
    /// and brings its schema up to date.
    pub async fn open(url: &str) -> StoreResult<SqliteStore> {
        SqliteStore::connect(url, Duration::from_secs(5)).await
    }

    /// [`SqliteStore::open`], with SQLite's busy timeout `busy`: how long a connection retries a
    /// lock another process holds (the CLI writing while the server runs) before it fails.
    async fn connect(url: &str, busy: Duration) -> StoreResult<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(unavailable)?
            .create_if_missing(true)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(busy);
        let pool_of = |max: u32, options: SqliteConnectOptions| {
            SqlitePoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(5))
                // No ping on each acquire: it is a round trip to the connection's thread, in
                // front of every statement (and, on the one writer, of every writer queued); a
                // SQLite connection does not hang up, and a failing one fails its statement.
                .test_before_acquire(false)
                .connect_with(options)
        };
        // An in-memory database lives in one connection: give it exactly one.
        let file = !url.contains(":memory:");
        let writes = pool_of(
            1,
            options
                .clone()
                .journal_mode(SqliteJournalMode::Wal)
                .pragma("wal_autocheckpoint", WRITER_CHECKPOINTS_AT.to_string()),
        )
        .await
        .map_err(unavailable)?;
        crate::sql::migrator(MIGRATIONS)
            .run(&writes)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrating the SQLite schema: {e}")))?;
        // The readers cannot write: a write sent to them by mistake fails at once, every time,
        // rather than racing the writer for the lock. (WAL is the file's mode, set by the writer.)
        let reading = options.pragma("query_only", "ON");
        let pool = if file {
            pool_of(READERS, reading.clone())
                .await
                .map_err(unavailable)?
        } else {
            writes.clone()
        };
        let checkpointer = file.then(|| {
            let (written, rx) = tokio::sync::mpsc::channel(1);
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(checkpoints(reading.clone(), rx, stopped));
            Arc::new(Checkpointer {
                written,
                stop,
                task: std::sync::Mutex::new(Some(task)),
            })
        });
        Ok(SqliteStore {
            pool,
            writes,
            file,
            checkpointer,
        })
    }

    /// The pool writes go through (the checkpointer told that one is coming).
    fn writes(&self) -> &SqlitePool {
        if let Some(c) = &self.checkpointer {
            // Full: a checkpoint is due already.
            let _ = c.written.try_send(());
        }
        &self.writes
    }

    /// Ends the checkpointer (its connection closed), then closes the writer: the writer's
    /// connection, the last to close, checkpoints the WAL and removes it (two connections
    /// closing at once may each see the other open and leave it).
    async fn close_writes(&self) {
        if let Some(c) = &self.checkpointer {
            c.stop.send_replace(true);
            let task = c.task.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(task) = task {
                let _ = task.await;
            }
        }
        self.writes.close().await;
    }

    /// Readies a connection to read in bulk (a whole table: the denylist's reload). Read through
    /// the connection's 2 MB page cache, a table of 10^5 entries fills it, and the memory that
    /// thread allocated stays with its allocator arena after the cache is emptied, even after the
    /// connection is closed: an idle server grew by one cache each minute. So the read gets a
    /// small cache (read once, in order, it reuses nothing), and the connection is closed after
    /// it rather than returned to the pool with that cache; the pool opens another when it
    /// needs one.
    async fn bulk_read(
        &self,
        conn: &mut sqlx::pool::PoolConnection<sqlx::Sqlite>,
    ) -> StoreResult<()> {
        if self.file {
            conn.close_on_drop();
            sqlx::query("PRAGMA cache_size = 64")
                .execute(&mut **conn)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }
}

/// How many connections read a file database at once (the one that writes is besides).
const READERS: u32 = 7;

/// How long after a write the checkpointer copies what the WAL holds into the database file.
const CHECKPOINT_AFTER: Duration = Duration::from_millis(100);

/// How long the checkpointer keeps its connection after the last write.
const KEEP_CHECKPOINTER: Duration = Duration::from_secs(5);

/// The WAL's length, in pages, from which the writer checkpoints by itself (SQLite's default is
/// 1,000). Under continuous writes this is how the WAL starts over: the checkpointer copies its
/// pages, but only a writer can restart it, at the start of a write that finds every page
/// copied, which a commit between the checkpoint and that write prevents. So under sustained
/// writes the WAL grows to about 80 MB (20,000 pages of 4 KiB), and a checkpoint on the writer
/// then copies only what came since the checkpointer's last.
const WRITER_CHECKPOINTS_AT: u32 = 20_000;

/// The checkpointer: `CHECKPOINT_AFTER` a write, copies the WAL's pages into the database file
/// (`PASSIVE`: waiting for no reader or writer), again while a checkpoint is held back (another
/// one running, or a reader still on older pages), until the store is closed or every
/// clone of the store is gone. On a connection of its own (opened at the first checkpoint,
/// reading only: a checkpoint is not a write to SQLite), so that it never waits behind the
/// readers, nor they behind it; once writes have stopped for `KEEP_CHECKPOINTER`, it empties the
/// WAL (`TRUNCATE`: a burst of writes may have grown it to tens of MB) and closes.
///
/// Left to SQLite, the checkpoint ran in the commit that took the WAL past 1,000 pages, on the
/// writer: a write every ~125 refresh rotations copied a thousand pages and waited for two
/// `fsync`s (3 ms on average here) while every other write waited behind it, and the server's
/// core sat idle for 13–19 % of a refresh benchmark. Off the writer, rotations ran 19 % (10^3
/// families) and 29 % (10^6) faster. With `synchronous = NORMAL` a commit becomes durable
/// (the WAL `fsync`ed) at the next checkpoint: now about `CHECKPOINT_AFTER` after the write
/// that woke it (a wake-up that comes during a round gets a round of its own), where before a
/// quiet server could leave its last commits unsynced until a thousand pages more had been
/// written.
async fn checkpoints(
    options: SqliteConnectOptions,
    mut written: tokio::sync::mpsc::Receiver<()>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use sqlx::Connection as _;
    let mut conn: Option<sqlx::SqliteConnection> = None;
    let mut failing = false;
    let mut again = false;
    loop {
        if !again {
            // The next write; once writes have stopped for a while, the WAL emptied and the
            // connection closed (an idle server keeps no connection, thread or page cache
            // for this).
            let next = tokio::select! {
                next = written.recv() => Some(next),
                _ = stop.wait_for(|s| *s) => break,
                () = tokio::time::sleep(KEEP_CHECKPOINTER), if conn.is_some() => None,
            };
            match next {
                Some(Some(())) => {}
                Some(None) => break,
                None => {
                    if let Some(mut c) = conn.take() {
                        let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                            .execute(&mut c)
                            .await;
                        let _ = c.close().await;
                    }
                    continue;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(CHECKPOINT_AFTER) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let done = async {
            let c = match &mut conn {
                Some(c) => c,
                None => conn.insert(sqlx::SqliteConnection::connect_with(&options).await?),
            };
            // (busy, pages in the WAL, pages copied)
            sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&mut *c)
                .await
        }
        .await;
        match done {
            Ok((busy, log, copied)) => {
                failing = false;
                again = busy != 0 || copied < log;
            }
            Err(e) => {
                if let Some(c) = conn.take() {
                    let _ = c.close().await;
                }
                if !failing {
                    tracing::warn!(error = %e, "checkpointing SQLite's WAL failed; the writer checkpoints by itself from {WRITER_CHECKPOINTS_AT} pages");
                }
                failing = true;
                again = false;
            }
        }
    }
    if let Some(c) = conn.take() {
        let _ = c.close().await;
    }
}

/// Up to `$2` refresh families ended at or before `$1`, oldest end first (see `sql::PURGE_FAMILY`);
/// SQLite's one writer at a time is the lock.
const ENDED_FAMILIES: &str = "SELECT family FROM refresh_families WHERE expires_at <= $1 ORDER BY expires_at, family LIMIT $2";

/// A page of the denylist entries in force at `$1`: up to `$3` after rowid `$2` in the table's
/// order (a range of the table, no sort; `+` keeps the expiry index out of it), aggregated
/// (`record::denied_page`), with the page's last rowid and its size.
const DENIED_PAGE: &str = "SELECT group_concat(expires_at || ' ' || length(jti) || ' ' || jti, '') AS list, CAST(max(r) AS TEXT) AS last, count(*) AS n FROM (SELECT rowid AS r, expires_at, jti FROM access_denylist WHERE rowid > CAST($2 AS INTEGER) AND +expires_at > $1 ORDER BY rowid LIMIT $3)";

/// Where the first page begins: before every rowid.
const DENIED_FROM: &str = "-9223372036854775808";

/// How many denylist entries are in force at `$1` (`n`), counted in the expiry index: the room
/// a reload makes first.
const DENIED_COUNT: &str = "SELECT COUNT(*) AS n FROM access_denylist WHERE expires_at > $1";

/// A rotation's writes (see `token_sql::rotate_in_one`), one round trip to the connection's
/// thread instead of one per statement: the writer is held from `BEGIN` to `COMMIT`, and every
/// other write waits for it, so each round trip (a hop between the connection's thread and
/// tokio's, behind whatever else tokio has to run) lengthened the line. The family's check is
/// a condition of the spend, where PostgreSQL takes the family's row first: SQLite's one write
/// lock, taken by the spend, orders the rotation against a revocation. The successor is stored
/// only if the spend changed the token (`changes()` is the spend's count there), so a lost
/// rotation writes no token (nor fails on the family's foreign key, its family purged); the
/// access token's record it may write is rolled back with it. Several statements in one
/// prepared string is behaviour sqlx's SQLite driver keeps but deprecates: should it change,
/// `rotate_in_one`'s count of outcomes turns it into an error, never into a commit.
/// Parameters: $1..$10 the successor's columns (`token_sql::bind_token`: hash, family, user,
/// client, scope, created, expires, family's end, use, access token's id), $11 the time of the
/// spend, $12 the spent token's hash.
const ROTATE_BATCH: Option<&str> = Some(concat!(
    "UPDATE refresh_tokens SET used_at = $11 WHERE token_hash = $12 AND used_at IS NULL ",
    "AND EXISTS (SELECT 1 FROM refresh_families WHERE family = $2 AND NOT revoked);",
    "INSERT INTO refresh_tokens (token_hash, family, user_id, client_id, scope, created_at, ",
    "expires_at, family_expires_at, used_at, access_jti) ",
    "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 WHERE changes() = 1 ",
    "ON CONFLICT (token_hash) DO NOTHING;",
    "INSERT INTO refresh_access (jti, family, issued_at) SELECT $10, $2, $6 ",
    "WHERE $10 IS NOT NULL ON CONFLICT DO NOTHING",
));

/// A read transaction is a snapshot already.
const SNAPSHOT: Option<&str> = None;

crate::sql::sql_store!(SqliteStore, sqlx::Sqlite, SqliteRow);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failure is a panic

    use sqlx::Row;
    use tessera_core::{RefreshStore, TokenHash};

    use crate::sql::plans::Param;

    /// How SQLite runs `sql`: the detail of each step of its plan.
    async fn plan(store: &super::SqliteStore, sql: &str, params: &[Param]) -> Vec<String> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
        for p in params {
            q = match p {
                Param::Int => q.bind(0_i64),
                Param::Text => q.bind("fam"),
            };
        }
        q.fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect()
    }

    #[tokio::test]
    async fn the_purges_read_only_what_they_remove() {
        let store = super::SqliteStore::open("sqlite::memory:").await.unwrap();
        // Every step a search by index; a `SCAN` would read every session or refresh token,
        // under the write lock, every minute. The first is the sessions' purge.
        for (i, (sql, params)) in crate::sql::plans::purges(super::ENDED_FAMILIES)
            .into_iter()
            .enumerate()
        {
            let plan = plan(&store, sql, params).await;
            assert!(
                plan.iter().all(|step| !step.starts_with("SCAN")),
                "{sql}: {plan:?}"
            );
            assert!(
                i > 0 || plan.iter().any(|s| s.contains("sessions_by_idle_end")),
                "{plan:?}"
            );
        }
    }

    /// The denylist's reload reads a page at a time, each a range of the table from where the
    /// last ended (no sort of what is left), until a page is short.
    #[tokio::test]
    async fn a_reload_reads_the_denylist_a_page_at_a_time() {
        #[derive(Default)]
        struct Sizes(Vec<usize>);
        impl tessera_core::DeniedSink for Sizes {
            fn expect(&mut self, _entries: usize) {}
            fn page(&mut self, page: &tessera_core::Denied) {
                self.0.push(page.len());
            }
        }
        let store = super::SqliteStore::open("sqlite::memory:").await.unwrap();
        let n = 2 * crate::sql::DENIED_PAGE_SIZE;
        sqlx::query("WITH RECURSIVE i(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM i WHERE k < $1) INSERT INTO access_denylist (jti, expires_at, added_at) SELECT 'jti' || k, 5000, 10 FROM i")
            .bind(n)
            .execute(&store.writes)
            .await
            .unwrap();
        let mut sizes = Sizes::default();
        tessera_core::DenylistStore::each_denied(&store, 1_000, &mut sizes)
            .await
            .unwrap();
        let page = usize::try_from(crate::sql::DENIED_PAGE_SIZE).unwrap();
        assert_eq!(sizes.0, [page, page, 0]);

        let plan = plan(
            &store,
            super::DENIED_PAGE,
            &[Param::Int, Param::Text, Param::Int],
        )
        .await;
        assert!(
            plan.iter()
                .any(|s| s.starts_with("SEARCH access_denylist USING INTEGER PRIMARY KEY")),
            "{plan:?}"
        );
        assert!(plan.iter().all(|s| !s.contains("TEMP B-TREE")), "{plan:?}");
        // The count before the pages reads the expiry index alone, not the table.
        let count = self::plan(&store, super::DENIED_COUNT, &[Param::Int]).await;
        assert_eq!(
            count,
            [
                "SEARCH access_denylist USING COVERING INDEX access_denylist_by_expiry (expires_at>?)"
            ]
        );
    }

    /// A file database's connection that read the denylist is closed after it (its page cache
    /// goes with it), and the pool serves on with another; the reload reads the same each time.
    #[tokio::test]
    async fn the_connection_of_a_reload_is_closed_after_it() {
        let db = TempDb::new("reload");
        let store = super::SqliteStore::open(&db.url()).await.unwrap();
        tessera_core::DenylistStore::deny_access(&store, "jti1", 5_000, 10)
            .await
            .unwrap();
        for _ in 0..3 {
            let all = tessera_core::DenylistStore::denied_access(&store, 1_000)
                .await
                .unwrap();
            assert_eq!(all.to_vec(), [("jti1".to_owned(), 5_000)]);
            // The connection that read goes (closed in the background); the write's is another
            // pool's.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while store.pool.size() > 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the reading connection stays"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert_eq!(store.writes.size(), 1, "the writer stays");
            tessera_core::DenylistStore::deny_access(&store, "jti1", 5_000, 10)
                .await
                .unwrap();
        }
        store.close().await;
    }

    /// The server's writers never contend for SQLite's write lock among themselves: they wait
    /// their turn in the order they came, in the process. Contended through SQLite's busy handler
    /// instead (sleeps of growing length, up to 100 ms a try, for whichever connection retries
    /// at the right moment), a refresh under load waited up to 1.35 s, and one in 40,000 past the
    /// store's 2 s write timeout (a 503). With a busy timeout of zero, any contention for the
    /// lock in the process is an error at once: there is none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn writers_take_turns_instead_of_racing_for_the_lock() {
        use tessera_core::{DenylistStore, RefreshRecord, SessionStore};
        let db = TempDb::new("turns");
        let store = super::SqliteStore::connect(&db.url(), std::time::Duration::ZERO)
            .await
            .unwrap();
        let record = |family: usize| RefreshRecord {
            family: format!("fam_{family}"),
            user_id: "usr_a".to_owned(),
            client_id: "tessera".to_owned(),
            scope: String::new(),
            created_at: 1_000,
            expires_at: 9_000,
            family_expires_at: 9_000,
            used_at: None,
            access_jti: Some(format!("jti_{family}_0")),
        };
        let families = 32;
        for f in 0..families {
            store.create_refresh(&key(f, 0), &record(f)).await.unwrap();
        }
        // Every family rotated 8 times, all at once; a session written and a jti denied beside
        // each rotation.
        let mut tasks = tokio::task::JoinSet::new();
        for f in 0..families {
            let store = store.clone();
            tasks.spawn(async move {
                for n in 0..8 {
                    let mut next = record(f);
                    next.access_jti = Some(format!("jti_{f}_{}", n + 1));
                    let rotated = store
                        .rotate_refresh(&key(f, n), 1_000, &key(f, n + 1), &next)
                        .await
                        .unwrap();
                    assert!(rotated, "family {f}, rotation {n}");
                    let session = tessera_core::Session {
                        handle: format!("ses_{f}_{n}"),
                        user_id: "usr_a".to_owned(),
                        created_at: 1_000,
                        last_seen_at: 1_000,
                        expires_at: 9_000,
                        idle_timeout: 600,
                        user_agent: None,
                        ip: None,
                        data: serde_json::Value::Null,
                    };
                    let hash = key(f + 1_000, n);
                    store.create_session(&hash, &session).await.unwrap();
                    store.touch_session(&hash, 1_001).await.unwrap();
                    store
                        .deny_access(&format!("jti_{f}_{n}"), 9_000, 1_000)
                        .await
                        .unwrap();
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        // And no write goes by the readers: they refuse it.
        let refused = sqlx::query("DELETE FROM sessions")
            .execute(&store.pool)
            .await;
        assert!(refused.is_err(), "{refused:?}");
        store.close().await;
    }

    /// Writes reach the database file about `CHECKPOINT_AFTER` after they commit (the WAL
    /// checkpointed, and with it `fsync`ed), not once a thousand pages of WAL have piled up;
    /// and the checkpointer's connection is closed with the store, the WAL emptied.
    #[cfg(target_os = "linux")] // the open descriptors, from /proc
    #[tokio::test]
    async fn the_checkpointer_copies_writes_into_the_file_soon_and_goes_with_the_store() {
        let db = TempDb::new("checkpoints");
        let file = db.0.join("t.db");
        let store = super::SqliteStore::open(&db.url()).await.unwrap();
        // The migrations' pages in the file first.
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&store.pool)
            .await
            .unwrap();
        let before = std::fs::metadata(&file).unwrap().len();
        // About 60 pages of entries and their indexes: far below any WAL length at which the
        // writer checkpoints by itself.
        for i in 0..600 {
            tessera_core::DenylistStore::deny_access(&store, &format!("{i:0>200}"), 5_000, 10)
                .await
                .unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::metadata(&file).unwrap().len() < before + 50 * 4096 {
            assert!(
                std::time::Instant::now() < deadline,
                "the writes stay in the WAL: {} bytes in the file, {before} before",
                std::fs::metadata(&file).unwrap().len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // A write just before the store is closed: the checkpointer is woken, and still
        // closes with the store, not after it.
        tessera_core::DenylistStore::deny_access(&store, "last", 5_000, 10)
            .await
            .unwrap();
        let clone = store.clone();
        store.close().await;
        // Every descriptor of the database file closed when `close` returns, though a clone of
        // the store lives on: the checkpointer's connection first, so that the writer's, the
        // last to close, checkpointed the WAL and removed it.
        let open = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target == &file)
                .count()
        };
        // (The WAL stayed in about one run of ten while the checkpointer and the writer closed
        // at once, each seeing the other open; the checkpointer ends first now.)
        assert_eq!(open(), 0, "descriptors of the database stay open");
        assert!(!db.0.join("t.db-wal").exists(), "the WAL stays");
        // Nor does anything open it again later (the wake-up of that last write).
        tokio::time::sleep(super::CHECKPOINT_AFTER * 3).await;
        assert_eq!(open(), 0, "the database was opened again after close");
        drop(clone);
    }

    /// A database file in a directory of its own, emptied first (a pid reused by a later run
    /// finds no database of an earlier one) and removed after, also when the test fails.
    struct TempDb(std::path::PathBuf);

    impl TempDb {
        fn new(name: &str) -> TempDb {
            let dir = std::env::temp_dir().join(format!("tessera-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDb(dir)
        }

        fn url(&self) -> String {
            format!("sqlite://{}", self.0.join("t.db").display())
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A token hash of its own for each `(a, b)`.
    fn key(a: usize, b: usize) -> TokenHash {
        let mut k = [0; 32];
        k[..8].copy_from_slice(&a.to_be_bytes());
        k[8..16].copy_from_slice(&b.to_be_bytes());
        TokenHash(k)
    }

    /// A purge called until it says there is no more: how many calls, and what they removed.
    async fn calls<F, Fut>(mut purge: F) -> (u32, u64)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = tessera_core::StoreResult<tessera_core::Purged>>,
    {
        let (mut calls, mut removed) = (0, 0);
        loop {
            let p = purge().await.unwrap();
            calls += 1;
            removed += p.removed;
            assert!(
                p.more || p.removed < u64::try_from(crate::sql::PURGE_BATCH).unwrap(),
                "{p:?}"
            );
            if !p.more {
                return (calls, removed);
            }
        }
    }

    /// A backlog (the first purge after an upgrade) goes in batches, a call each (each a write
    /// of its own under the write timeout), every one of it.
    #[tokio::test]
    async fn a_backlog_of_ended_families_goes_batch_by_batch() {
        let store = super::SqliteStore::open("sqlite::memory:").await.unwrap();
        let n = 2 * crate::sql::PURGE_BATCH + 1;
        for i in 0..n {
            sqlx::query("INSERT INTO refresh_families (family, user_id, expires_at) VALUES ($1, 'usr_a', 1000)")
                .bind(format!("fam_{i}"))
                .execute(&store.writes)
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, family, user_id, client_id, scope, created_at, expires_at, family_expires_at) VALUES ($1, $2, 'usr_a', 'tessera', '', 0, 1000, 1000)",
            )
            .bind(TokenHash([0; 32]).to_hex() + &i.to_string())
            .bind(format!("fam_{i}"))
            .execute(&store.writes)
            .await
            .unwrap();
        }
        assert_eq!(
            calls(|| store.purge_families(1_000)).await,
            (3, u64::try_from(n).unwrap())
        );
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM refresh_tokens")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(left, 0);
    }

    /// A mass expiry (the sessions of an outage, a bulk load) goes in batches: one call, one
    /// statement, takes at most a batch, so the write lock is held (and the write timeout runs)
    /// for a batch; the purge calls again until all of it is gone.
    #[tokio::test]
    async fn a_mass_expiry_of_sessions_goes_batch_by_batch() {
        use tessera_core::SessionStore;
        let store = super::SqliteStore::open("sqlite::memory:").await.unwrap();
        let n = 2 * crate::sql::PURGE_BATCH + 1;
        let insert = "INSERT INTO sessions (token_hash, handle, user_id, created_at, last_seen_at, expires_at, idle_timeout, data) VALUES ($1, $2, 'usr_a', 0, $3, 100000, 600, '{}')";
        for i in 0..=n {
            // Every one idle past its end at 1000 but the last, seen at 900.
            sqlx::query(insert)
                .bind(format!("{i:064}"))
                .bind(format!("ses_{i}"))
                .bind(if i == n { 900_i64 } else { 0 })
                .execute(&store.writes)
                .await
                .unwrap();
        }
        let one = sqlx::query(crate::sql::PURGE_SESSIONS)
            .bind(1_000_i64)
            .bind(crate::sql::PURGE_BATCH)
            .execute(&store.writes)
            .await
            .unwrap();
        assert_eq!(
            one.rows_affected(),
            u64::try_from(crate::sql::PURGE_BATCH).unwrap()
        );
        assert_eq!(
            calls(|| store.purge_expired_sessions(1_000)).await,
            (2, u64::try_from(n - crate::sql::PURGE_BATCH).unwrap())
        );
        let left: Vec<String> = sqlx::query_scalar("SELECT handle FROM sessions")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert_eq!(left, [format!("ses_{n}")]);
    }

    /// The denylist, the records of access tokens and the codes go a batch a call too: a mass
    /// expiry of any of them holds the write lock (and the write timeout runs) for a batch.
    #[tokio::test]
    async fn every_purge_goes_batch_by_batch() {
        use tessera_core::{ClientStore, DenylistStore};
        let store = super::SqliteStore::open("sqlite::memory:").await.unwrap();
        let n = 2 * crate::sql::PURGE_BATCH + 1;
        let rows = "WITH RECURSIVE i(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM i WHERE k < $1)";
        for insert in [
            "INSERT INTO access_denylist (jti, expires_at, added_at) SELECT 'jti' || k, 900, 10 FROM i",
            "INSERT INTO refresh_access (jti, family, issued_at) SELECT 'jti' || k, 'fam_a', 900 FROM i",
            "INSERT INTO oauth_codes (code_hash, record, expires_at) SELECT 'code' || k, '{}', 900 FROM i",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!("{rows} {insert}")))
                .bind(n)
                .execute(&store.writes)
                .await
                .unwrap();
        }
        let all = (3, u64::try_from(n).unwrap());
        assert_eq!(calls(|| store.purge_denied(1_000)).await, all);
        assert_eq!(calls(|| store.purge_access(1_000)).await, all);
        assert_eq!(calls(|| store.purge_codes(1_000)).await, all);
    }

    /// A family made by a version before migration 9 has no end in its row (0) while its tokens
    /// live (instances rolled one by one after `tessera migrate`): the purge gives it its
    /// tokens' end and leaves it, instead of failing on the foreign key every minute (or
    /// taking a live family).
    #[tokio::test]
    async fn a_family_without_its_end_gets_it_and_stays() {
        let store = super::SqliteStore::open("sqlite::memory:").await.unwrap();
        let hash = TokenHash([7; 32]);
        sqlx::query("INSERT INTO refresh_families (family, user_id) VALUES ('fam_old', 'usr_a')")
            .execute(&store.writes)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family, user_id, client_id, scope, created_at, expires_at, family_expires_at) VALUES ($1, 'fam_old', 'usr_a', 'tessera', '', 1000, 9000, 9000)",
        )
        .bind(hash.to_hex())
        .execute(&store.writes)
        .await
        .unwrap();
        assert_eq!(
            store.purge_families(5_000).await.unwrap(),
            tessera_core::Purged {
                removed: 0,
                more: false
            }
        );
        assert!(store.refresh_token(&hash).await.unwrap().is_some());
        let end: i64 =
            sqlx::query_scalar("SELECT expires_at FROM refresh_families WHERE family = 'fam_old'")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(end, 9_000);
        assert_eq!(store.purge_families(9_000).await.unwrap().removed, 1);
        assert_eq!(store.refresh_token(&hash).await.unwrap(), None);
    }
}
