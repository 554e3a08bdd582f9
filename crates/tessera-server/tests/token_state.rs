//! Token state when the second store fails between the steps of an operation (issue 16): the
//! service built over a database and a "Redis" whose session deletes can be made to fail or to
//! wait, with a clock the test moves. Each case was a hole a reviewer demonstrated: an end that
//! came undone, a disable that left refresh families live, a refresh on another instance
//! during a disable that issued a token nothing refused. And readiness over a session store
//! whose count is slow (a table of millions): `/readyz` must not wait on it; and the purge of
//! refresh families past their end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tessera_core::{
    Change, ClientInfo, DenylistStore, Kind, MasterKey, RefreshStore, Session, SessionStore,
    StoreError, StoreResult, Tasks, ThrottleStore, Token, TokenHash,
};
use tessera_jose::{Clock, ManualClock};
use tessera_server::{AppState, Config};
use tessera_store::{Announcer, MemoryStore, SharedStore};

const PW: &str = "correct horse battery";
const T0: i64 = 1_800_000_000;

/// "Redis": session deletes fail while `fail` is set, and wait at `gate` while it is held;
/// counting the sessions takes a second while `slow_count` is set, and is counted in `counts`.
#[derive(Debug, Clone, Default)]
struct Flaky {
    store: MemoryStore,
    fail: Arc<AtomicBool>,
    gate: Arc<Gate>,
    slow_count: Arc<AtomicBool>,
    counts: Arc<AtomicUsize>,
    count_fails: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct Gate {
    hold: AtomicBool,
    reached: tokio::sync::Notify,
    go: tokio::sync::Notify,
}

impl Flaky {
    fn check(&self) -> StoreResult<()> {
        if self.fail.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("redis did not answer".into()))
        } else {
            Ok(())
        }
    }
}

impl SessionStore for Flaky {
    async fn create_session(&self, h: &TokenHash, s: &Session) -> StoreResult<()> {
        self.store.create_session(h, s).await
    }
    async fn session(&self, h: &TokenHash) -> StoreResult<Option<Session>> {
        self.store.session(h).await
    }
    async fn touch_session(&self, h: &TokenHash, t: i64) -> StoreResult<()> {
        self.store.touch_session(h, t).await
    }
    async fn set_session_data(&self, h: &TokenHash, d: &Value) -> StoreResult<bool> {
        self.store.set_session_data(h, d).await
    }
    async fn delete_session(&self, h: &TokenHash) -> StoreResult<bool> {
        self.check()?;
        self.store.delete_session(h).await
    }
    async fn sessions_of(&self, u: &str) -> StoreResult<Vec<(TokenHash, Session)>> {
        self.store.sessions_of(u).await
    }
    async fn delete_sessions_of(&self, u: &str, e: Option<&TokenHash>) -> StoreResult<u64> {
        if self.gate.hold.load(Ordering::SeqCst) {
            self.gate.reached.notify_one();
            self.gate.go.notified().await;
        }
        self.check()?;
        self.store.delete_sessions_of(u, e).await
    }
    async fn purge_expired_sessions(&self, n: i64) -> StoreResult<tessera_core::Purged> {
        self.store.purge_expired_sessions(n).await
    }
    async fn count_sessions(&self) -> StoreResult<u64> {
        self.counts.fetch_add(1, Ordering::SeqCst);
        if self.slow_count.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if self.count_fails.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("count timed out".into()));
        }
        self.store.count_sessions().await
    }
}

impl DenylistStore for Flaky {
    async fn deny_access(&self, j: &str, e: i64, n: i64) -> StoreResult<()> {
        self.store.deny_access(j, e, n).await
    }
    async fn denied_access(&self, n: i64) -> StoreResult<tessera_core::Denied> {
        self.store.denied_access(n).await
    }
    async fn purge_denied(&self, n: i64) -> StoreResult<tessera_core::Purged> {
        self.store.purge_denied(n).await
    }
}

impl ThrottleStore for Flaky {}

impl Announcer for Flaky {
    async fn publish(&self, _: &Change) -> StoreResult<()> {
        Ok(())
    }
}

type State = AppState<SharedStore<MemoryStore, Flaky>>;

async fn instance(db: &MemoryStore, redis: &Flaky, clock: &ManualClock) -> State {
    instance_with(Config::default(), db, redis, clock).await
}

async fn instance_with(
    mut config: Config,
    db: &MemoryStore,
    redis: &Flaky,
    clock: &ManualClock,
) -> State {
    config.password.hash_concurrency = 2;
    let shared = SharedStore::new(db.clone(), redis.clone());
    tessera_server::build(
        &config,
        shared,
        Arc::new(clock.clone()),
        MasterKey::from_bytes(&[42u8; 32]).unwrap(),
    )
    .await
    .unwrap()
}

/// What the denylist sync does every 500 ms: catch up with the store (and forget what expired).
async fn catch_up(state: &State, db: &MemoryStore, clock: &ManualClock) {
    let now = clock.now();
    let all = db.denied_access(now - 60).await.unwrap();
    state.denylist.reload(&all, now);
}

#[tokio::test]
async fn a_session_ended_while_its_record_could_not_be_removed_stays_ended() {
    let (db, redis, clock) = (MemoryStore::new(), Flaky::default(), ManualClock::new(T0));
    let state = instance(&db, &redis, &clock).await;
    state.auth.create_user("alice", PW).await.unwrap();
    let (token, authd) = state
        .auth
        .login("alice", PW, &ClientInfo::default())
        .await
        .unwrap();
    let presented = token.expose().to_owned();
    redis.fail.store(true, Ordering::SeqCst);
    // The end is durable (the denylist, in the database): the logout stands.
    assert!(
        state
            .auth
            .logout(&authd.hash, &authd.session)
            .await
            .unwrap()
    );
    assert!(state.auth.authenticate(&presented).await.is_err());
    redis.fail.store(false, Ordering::SeqCst);
    // Not presented again until past the access tokens' lifetime (15 min), within the
    // session's idle timeout (30 min): still ended.
    clock.advance(16 * 60);
    catch_up(&state, &db, &clock).await;
    assert!(state.auth.authenticate(&presented).await.is_err());
}

#[tokio::test]
async fn a_disable_that_failed_at_redis_leaves_no_refresh_family_live() {
    let (db, redis, clock) = (MemoryStore::new(), Flaky::default(), ManualClock::new(T0));
    let state = instance(&db, &redis, &clock).await;
    let user = state.auth.create_user("bob", PW).await.unwrap();
    let refresh = state
        .tokens
        .issue_for_login(&user)
        .await
        .unwrap()
        .refresh_token
        .expose()
        .to_owned();
    redis.fail.store(true, Ordering::SeqCst);
    assert!(state.auth.set_disabled("bob", true).await.is_err());
    redis.fail.store(false, Ordering::SeqCst);
    let client = state.tokens.settings().client_id.clone();
    assert!(state.tokens.refresh(&refresh, &client).await.is_err());
    // Long after the subject's revocation has expired: the family is revoked for good.
    clock.advance(16 * 60);
    catch_up(&state, &db, &clock).await;
    assert!(state.tokens.refresh(&refresh, &client).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_on_another_instance_during_a_disable_issues_nothing_that_survives_it() {
    let (db, redis, clock) = (MemoryStore::new(), Flaky::default(), ManualClock::new(T0));
    let a = instance(&db, &redis, &clock).await;
    let b = instance(&db, &redis, &clock).await;
    let user = a.auth.create_user("carol", PW).await.unwrap();
    let refresh = a
        .tokens
        .issue_for_login(&user)
        .await
        .unwrap()
        .refresh_token
        .expose()
        .to_owned();
    // A disables the account and stops at the sessions (the last step); B has heard of
    // nothing yet (no feed here, no catch-up) and is asked to refresh.
    redis.gate.hold.store(true, Ordering::SeqCst);
    let disabling = {
        let a = a.clone();
        tokio::spawn(async move { a.auth.set_disabled("carol", true).await.map(|_| ()) })
    };
    redis.gate.reached.notified().await;
    clock.advance(1);
    let client = b.tokens.settings().client_id.clone();
    let issued = b.tokens.refresh(&refresh, &client).await;
    redis.gate.hold.store(false, Ordering::SeqCst);
    redis.gate.go.notify_one();
    assert!(disabling.await.unwrap().is_ok());
    catch_up(&a, &db, &clock).await;
    catch_up(&b, &db, &clock).await;
    // Either nothing was issued, or what was issued is refused everywhere.
    if let Ok(issued) = issued {
        let t = a.tokens.verify_access(&issued.access_token).unwrap();
        assert!(a.denylist.refuses(&t.claims) && b.denylist.refuses(&t.claims));
    }
}

/// A store of millions of sessions counts them slowly (PostgreSQL: 25-30 ms at 10^6 when idle,
/// more under load; beyond READY_WAIT's 100 ms somewhere past that). Readiness asks whether the
/// store answers, not how much it holds: an instance must not call itself degraded, nor a probe
/// cost a scan, because it has many users.
#[tokio::test]
async fn readiness_does_not_wait_for_the_sessions_to_be_counted() {
    let redis = Flaky::default();
    redis.slow_count.store(true, Ordering::SeqCst);
    let server = tessera_testkit::start(
        Config::default(),
        SharedStore::new(MemoryStore::new(), redis),
        Arc::new(ManualClock::new(T0)),
        MasterKey::from_bytes(&[42u8; 32]).unwrap(),
    )
    .await
    .unwrap();
    let ready: Value = reqwest::get(format!("{}/readyz", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["sessions"], true, "{ready}");
    assert_eq!(ready["status"], "ready", "{ready}");
}

/// A new user's login at the clock's time, and a rotation of its refresh token a second later.
async fn login_then_rotate(
    state: &State,
    clock: &ManualClock,
    name: &str,
) -> (tessera_core::Issued, tessera_core::Issued) {
    let user = state.auth.create_user(name, PW).await.unwrap();
    let first = state.tokens.issue_for_login(&user).await.unwrap();
    clock.advance(1);
    let client = state.tokens.settings().client_id.clone();
    let second = state
        .tokens
        .refresh(first.refresh_token.expose(), &client)
        .await
        .unwrap();
    (first, second)
}

/// An access token's `jti` begins with its issue time (the six characters of
/// `tessera_core::token::token_id`), so that ids issued later sort after and the records keyed by
/// them (a family's access tokens, the denylist) grow at one end of their indexes: at login and
/// at a rotation.
#[tokio::test]
async fn access_token_ids_begin_with_their_issue_time() {
    let (db, redis, clock) = (MemoryStore::new(), Flaky::default(), ManualClock::new(T0));
    let state = instance(&db, &redis, &clock).await;
    let (first, second) = login_then_rotate(&state, &clock, "erin").await;
    let ids: Vec<(String, i64)> = [&first, &second]
        .iter()
        .map(|issued| {
            let t = state.tokens.verify_access(&issued.access_token).unwrap();
            (t.claims.jti.clone().unwrap(), t.claims.iat.unwrap())
        })
        .collect();
    assert_eq!(ids[1].1, ids[0].1 + 1);
    for (jti, iat) in &ids {
        assert_eq!(jti.len(), 22, "{jti}");
        assert_eq!(jti[..6], tessera_core::token::token_id(*iat)[..6], "{jti}");
    }
    assert!(ids[0].0 < ids[1].0, "{ids:?}");
}

/// A refresh token carries its issue second, and the store keeps it under that time first
/// (then 224 bits of its SHA-256): each rotation's successor goes to the end of the table's
/// index, not to a random page of it. At login and at a rotation.
#[tokio::test]
async fn refresh_tokens_are_stored_in_the_order_of_their_issue() {
    let (db, redis, clock) = (MemoryStore::new(), Flaky::default(), ManualClock::new(T0));
    let state = instance(&db, &redis, &clock).await;
    let (first, second) = login_then_rotate(&state, &clock, "fay").await;
    let keys: Vec<String> = [&first, &second]
        .iter()
        .map(|issued| {
            Token::parse(Kind::Refresh, issued.refresh_token.expose())
                .unwrap()
                .hash()
                .to_hex()
        })
        .collect();
    assert_eq!(keys[0][..8], format!("{T0:08x}"));
    assert_eq!(keys[1][..8], format!("{:08x}", T0 + 1));
    let (record, revoked) = db
        .refresh_token(&TokenHash::from_hex(&keys[1]).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!revoked && record.used_at.is_none() && record.created_at == T0 + 1);
}

/// Refresh tokens issued by versions before (53 characters, no time, stored under their
/// SHA-256) keep working: one rotates, to a successor of the new form; and a retry of one that
/// an older version rotated (its successor of the old form) gets that successor.
#[tokio::test]
async fn refresh_tokens_of_the_earlier_form_rotate_and_retry() {
    let (db, redis, clock) = (MemoryStore::new(), Flaky::default(), ManualClock::new(T0));
    let state = instance(&db, &redis, &clock).await;
    let user = state.auth.create_user("gus", PW).await.unwrap();
    let client = state.tokens.settings().client_id.clone();
    let record = |family: &str| tessera_core::RefreshRecord {
        family: family.into(),
        user_id: user.id.clone(),
        client_id: client.clone(),
        scope: state.tokens.settings().scope.clone(),
        created_at: T0,
        expires_at: T0 + 3600,
        family_expires_at: T0 + 86_400,
        used_at: None,
        access_jti: None,
    };
    let old = Token::generate(Kind::Refresh);
    db.create_refresh(&old.hash(), &record("fam_old"))
        .await
        .unwrap();
    let next = state.tokens.refresh(old.expose(), &client).await.unwrap();
    assert_eq!(
        next.refresh_token.expose().len(),
        tessera_core::token::TIMED_LEN
    );
    state
        .tokens
        .refresh(next.refresh_token.expose(), &client)
        .await
        .unwrap();
    // Rotated by an older version: its successor derived without a time.
    let rotated = Token::generate(Kind::Refresh);
    db.create_refresh(&rotated.hash(), &record("fam_rotated"))
        .await
        .unwrap();
    let key = MasterKey::from_bytes(&[42u8; 32])
        .unwrap()
        .derive("refresh-token-successor");
    let its_successor = Token::successor(&key, rotated.expose(), None);
    assert!(
        db.rotate_refresh(
            &rotated.hash(),
            T0,
            &its_successor.hash(),
            &tessera_core::RefreshRecord {
                created_at: T0,
                ..record("fam_rotated")
            },
        )
        .await
        .unwrap()
    );
    clock.advance(2);
    let retried = state
        .tokens
        .refresh(rotated.expose(), &client)
        .await
        .unwrap();
    assert_eq!(retried.refresh_token, its_successor);
}

/// A rolling upgrade from a version that reads only refresh tokens without their time: the new
/// instances issue that form (`tokens.refresh_token_form = "untimed"`) until every instance
/// reads both, and a token of either form rotates on an instance of either setting.
#[tokio::test]
async fn untimed_instances_issue_the_earlier_form_and_read_both() {
    let (db, redis, clock) = (MemoryStore::new(), Flaky::default(), ManualClock::new(T0));
    let mut config = Config::default();
    config.tokens.refresh_token_form = "untimed".into();
    let untimed = instance_with(config, &db, &redis, &clock).await;
    let timed = instance(&db, &redis, &clock).await;
    let user = untimed.auth.create_user("hal", PW).await.unwrap();
    let client = untimed.tokens.settings().client_id.clone();
    let mut presented = untimed.tokens.issue_for_login(&user).await.unwrap();
    let mut forms = vec![presented.refresh_token.expose().len()];
    for next in [&timed, &untimed, &timed] {
        clock.advance(1);
        presented = next
            .tokens
            .refresh(presented.refresh_token.expose(), &client)
            .await
            .unwrap();
        forms.push(presented.refresh_token.expose().len());
    }
    use tessera_core::token::{LEN, TIMED_LEN};
    assert_eq!(forms, [LEN, TIMED_LEN, LEN, TIMED_LEN]);
}

/// `/metrics` is open to anyone who reaches the server, and counting the sessions of a large
/// store is a scan (SQLite at 10^6: 10 ms warm, 300 ms cold; PostgreSQL 25-30 ms): scrapes at
/// once, or one after another, must not each cost one, nor wait in line for one. The gauge is
/// counted by one scrape at a time, at most once every ten seconds of the service's clock; the
/// others read the last count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_gauge_is_counted_once_however_many_scrape() {
    let redis = Flaky::default();
    redis.slow_count.store(true, Ordering::SeqCst);
    let clock = ManualClock::new(T0);
    let server = tessera_testkit::start(
        Config::default(),
        SharedStore::new(MemoryStore::new(), redis.clone()),
        Arc::new(clock.clone()),
        MasterKey::from_bytes(&[42u8; 32]).unwrap(),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let scrape = || async {
        http.get(format!("{}/metrics", server.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert!(scrape().await.contains("\ntessera_active_sessions 0\n"));
    assert_eq!(redis.counts.load(Ordering::SeqCst), 1);
    for _ in 0..5 {
        assert!(scrape().await.contains("\ntessera_active_sessions 0\n"));
    }
    assert_eq!(redis.counts.load(Ordering::SeqCst), 1);
    // Ten seconds on, 40 at once: one counts (a second), the others read the last count.
    clock.advance(10);
    let scrapes: Vec<String> = futures_util::future::join_all((0..40).map(|_| scrape())).await;
    for text in &scrapes {
        assert!(text.contains("\ntessera_active_sessions 0\n"), "{text}");
    }
    assert_eq!(redis.counts.load(Ordering::SeqCst), 2);
    // A count that fails (slowly) is not tried again by every scrape in line behind it: its
    // failure stands for the ten seconds too, and the gauge is left out meanwhile.
    redis.count_fails.store(true, Ordering::SeqCst);
    clock.advance(10);
    let scrapes: Vec<String> = futures_util::future::join_all((0..40).map(|_| scrape())).await;
    let without = scrapes
        .iter()
        .filter(|t| !t.contains("tessera_active_sessions"))
        .count();
    assert_eq!(without, 1, "only the scrape that counted lacks the gauge");
    assert!(!scrape().await.contains("tessera_active_sessions"));
    assert_eq!(redis.counts.load(Ordering::SeqCst), 3);
}

/// The service's purge (every minute, and at start) removes a refresh family once it is past
/// its absolute end by the access tokens' lifetime and a minute (an access token it issued in
/// its last second can still be revoked through it until then), with its tokens: the tokens of
/// every rotation ever made used to stay. A family a second short of that stays.
#[tokio::test]
async fn the_purge_removes_refresh_families_past_their_end() {
    let (db, redis, clock) = (MemoryStore::new(), Flaky::default(), ManualClock::new(T0));
    let state = instance(&db, &redis, &clock).await;
    let user = state.auth.create_user("dave", PW).await.unwrap();
    let hash = |issued: tessera_core::Issued| {
        Token::parse(Kind::Refresh, issued.refresh_token.expose())
            .unwrap()
            .hash()
    };
    let ended = hash(state.tokens.issue_for_login(&user).await.unwrap());
    clock.advance(1);
    let within = hash(state.tokens.issue_for_login(&user).await.unwrap());
    let s = state.tokens.settings();
    // `ended` is exactly at the bound, `within` a second short of it.
    clock.advance(s.refresh_absolute + s.access_ttl + tessera_server::LEEWAY - 1);
    let tasks = state.service.spawn_tasks(Tasks {
        keys: Duration::from_secs(3600),
        denylist: Duration::from_secs(3600),
        purge: Duration::from_secs(3600),
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while db.refresh_token(&ended).await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "never purged");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tasks.iter().for_each(tokio::task::JoinHandle::abort);
    assert!(db.refresh_token(&within).await.unwrap().is_some());
}
