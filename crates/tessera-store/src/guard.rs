//! Failing fast: every call to a store goes through its [`Circuit`], which bounds it by a
//! timeout (reads are the hot path and get a short one; writes, which may wait for a lock, a
//! longer one) and marks the store down for every request once it has failed three times in a
//! row, or once a call timed out and the store's [`Probe`] (a ping, which waits for no lock)
//! timed out or failed too. A slow call alone — many requests contending for one row — thus
//! fails only itself and never takes the store out for everyone. While down, calls fail at
//! once (callers fall back to what they cached), and one probe at a time, every `retry`, asks
//! the store whether it is back, in a task of its own so that no request waits for it. A store
//! that hangs is found as fast as one that is gone, and costs a timeout or two, not one per
//! request.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::Value;
use tessera_core::{
    Change, Client, ClientStore, CodeRecord, Consent, DenylistStore, FamilyRevocation, KeyStore,
    RefreshRecord, RefreshStore, Session, SessionStore, StoreError, StoreResult, StoredKey,
    ThrottlePolicy, ThrottleStore, TokenHash, User, UserStore,
};

/// Failures in a row (other than timeouts, which count at once) that mark a store down: one
/// unreadable row must not take the store out.
const FAILURES_TO_OPEN: u32 = 3;

/// How long a call may take, and how often a store marked down is tried again.
#[derive(Debug, Clone, Copy)]
pub struct CircuitSettings {
    /// The bound on a read (and on a probe).
    pub timeout: Duration,
    /// The bound on a write (a transaction may wait for a row another holds).
    pub write_timeout: Duration,
    /// While down, the store is probed this often.
    pub retry: Duration,
}

/// What a call does, for its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Reads.
    Read,
    /// Changes something.
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// Down, and one call is finding out whether it is back.
    Probing,
}

/// A store's probe: a cheap call that answers while the store is up.
pub trait Probe: Clone + Send + Sync + 'static {
    /// Asks the store whether it answers.
    fn probe(&self) -> impl Future<Output = StoreResult<()>> + Send;
}

type ProbeFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = StoreResult<()>> + Send>> + Send + Sync>;

/// The state of one store as every request sees it.
pub struct Circuit {
    probe: std::sync::OnceLock<ProbeFn>,
    name: &'static str,
    settings: CircuitSettings,
    state: Mutex<State>,
    errors: AtomicU64,
    timeouts: AtomicU64,
    rejected: AtomicU64,
    opened: AtomicU64,
    /// When the store last came back after being marked down (seconds since the epoch; 0:
    /// never).
    back_since: std::sync::atomic::AtomicI64,
    /// A probe runs while the store is not marked down (a call timed out).
    checking: std::sync::atomic::AtomicBool,
}

/// Counters of a circuit, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitStats {
    /// Calls that failed (timeouts included).
    pub errors: u64,
    /// Calls that timed out.
    pub timeouts: u64,
    /// Calls refused at once because the store was down.
    pub rejected: u64,
    /// Times the store was marked down.
    pub opened: u64,
    /// Whether it is down now.
    pub open: bool,
}

impl std::fmt::Debug for Circuit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Circuit")
            .field("name", &self.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// What a call may do.
enum Admit {
    Go,
    Refuse,
    /// Refused; the caller starts the probe.
    Probe(ProbeFn),
}

static REGISTRY: Mutex<Vec<Weak<Circuit>>> = Mutex::new(Vec::new());

/// Every circuit alive in this process (what `/metrics` and `/readyz` report).
pub fn circuits() -> Vec<Arc<Circuit>> {
    let mut all = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|w| w.strong_count() > 0);
    all.iter().filter_map(Weak::upgrade).collect()
}

impl Circuit {
    /// A circuit for the store called `name` (`database`, `redis`), registered for
    /// [`circuits`].
    pub fn new(name: &'static str, settings: CircuitSettings) -> Arc<Circuit> {
        let c = Arc::new(Circuit {
            probe: std::sync::OnceLock::new(),
            name,
            settings,
            state: Mutex::new(State::Closed { failures: 0 }),
            errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            back_since: std::sync::atomic::AtomicI64::new(0),
            checking: std::sync::atomic::AtomicBool::new(false),
        });
        REGISTRY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&c));
        c
    }

    /// The store's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the store is marked down.
    pub fn is_open(&self) -> bool {
        !matches!(self.state(), State::Closed { .. })
    }

    /// The counters.
    pub fn stats(&self) -> CircuitStats {
        CircuitStats {
            errors: self.errors.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            opened: self.opened.load(Ordering::Relaxed),
            open: self.is_open(),
        }
    }

    fn state(&self) -> State {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives the circuit its store's probe (without one, the call that comes when a probe is
    /// due is the probe).
    pub fn set_probe<P: Probe>(&self, store: P) {
        let probe: ProbeFn = Arc::new(move || {
            let store = store.clone();
            Box::pin(async move { store.probe().await })
        });
        let _ = self.probe.set(probe);
    }

    /// Whether a call may go to the store now.
    fn admit(&self) -> Admit {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match *s {
            State::Closed { .. } => Admit::Go,
            State::Open { until } if Instant::now() >= until => {
                *s = State::Probing;
                match self.probe.get() {
                    Some(p) => Admit::Probe(Arc::clone(p)),
                    None => Admit::Go,
                }
            }
            State::Open { .. } | State::Probing => Admit::Refuse,
        }
    }

    /// Runs `probe` in a task of its own; its answer marks the store up or down again.
    fn start_probe(self: &Arc<Self>, probe: ProbeFn) {
        let c = Arc::clone(self);
        tokio::spawn(async move {
            let mut pending = Pending(Some(&c));
            let out = tokio::time::timeout(c.settings.timeout, probe()).await;
            pending.0 = None;
            c.settle(Outcome::of(&out), true);
        });
    }

    /// A call timed out: is the store down, or was the call slow? The probe says (without a
    /// probe, the timeout is taken as the answer).
    fn check(self: &Arc<Self>) {
        let Some(probe) = self.probe.get().map(Arc::clone) else {
            self.failed(true);
            return;
        };
        if self.checking.swap(true, Ordering::SeqCst) {
            return;
        }
        let c = Arc::clone(self);
        tokio::spawn(async move {
            let out = tokio::time::timeout(c.settings.timeout, probe()).await;
            c.checking.store(false, Ordering::SeqCst);
            c.settle(Outcome::of(&out), true);
        });
    }

    fn succeeded(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(*s, State::Closed { .. }) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            self.back_since.store(now, Ordering::Relaxed);
            tracing::info!(store = self.name, "store back");
        }
        *s = State::Closed { failures: 0 };
    }

    /// When the store last came back after being marked down (seconds since the epoch).
    pub fn back_since(&self) -> Option<i64> {
        Some(self.back_since.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }

    /// A failure: the store is marked down `at_once` (a probe failed, or a call timed out and
    /// there is no probe to ask), or after [`FAILURES_TO_OPEN`] in a row.
    fn failed(&self, at_once: bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let open = match *s {
            State::Closed { failures } => {
                let failures = failures + 1;
                if at_once || failures >= FAILURES_TO_OPEN {
                    self.opened.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        store = self.name,
                        by_probe = at_once,
                        "store marked down; calls fail at once until a probe succeeds"
                    );
                    true
                } else {
                    *s = State::Closed { failures };
                    false
                }
            }
            State::Open { .. } | State::Probing => true,
        };
        if open {
            *s = State::Open {
                until: Instant::now() + self.settings.retry,
            };
        }
    }

    /// Runs one call to the store under the circuit: refused at once while the store is down,
    /// bounded by the timeout otherwise.
    pub async fn call<T>(
        self: &Arc<Self>,
        kind: Call,
        call: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        match self.admit() {
            Admit::Go => {}
            refused => {
                if let Admit::Probe(p) = refused {
                    self.start_probe(p);
                }
                self.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(StoreError::Unavailable(format!(
                    "{} is down (failing fast until a probe succeeds)",
                    self.name
                )));
            }
        }
        // A call dropped by its caller (a client that hung up) says nothing of the store, but
        // must not leave a probe marked in flight forever.
        let mut pending = Pending(Some(self));
        let limit = match kind {
            Call::Read => self.settings.timeout,
            Call::Write => self.settings.write_timeout,
        };
        let out = tokio::time::timeout(limit, call).await;
        pending.0 = None;
        let outcome = Outcome::of(&out);
        self.settle(outcome, false);
        // A slow call alone says nothing of the store: the probe says (if it is not down
        // already).
        if outcome == Outcome::TimedOut && matches!(self.state(), State::Closed { .. }) {
            self.check();
        }
        out.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "{} did not answer within {limit:?}",
                self.name
            )))
        })
    }

    /// Counts an outcome and marks the store up or down by it: a probe's failure marks it
    /// down at once; a call's error counts towards [`FAILURES_TO_OPEN`], and its timeout is
    /// left to [`Circuit::check`].
    fn settle(&self, outcome: Outcome, probe: bool) {
        match outcome {
            Outcome::Answered => self.succeeded(),
            Outcome::Failed => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.failed(probe);
            }
            Outcome::TimedOut => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                if probe {
                    self.failed(true);
                }
            }
        }
    }
}

/// How a call to the store ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// It answered (a conflict is an answer: the store is up).
    Answered,
    /// It failed.
    Failed,
    /// It did not answer in time.
    TimedOut,
}

impl Outcome {
    fn of<T>(out: &Result<StoreResult<T>, tokio::time::error::Elapsed>) -> Outcome {
        match out {
            Ok(Ok(_) | Err(StoreError::Conflict)) => Outcome::Answered,
            Ok(Err(_)) => Outcome::Failed,
            Err(_) => Outcome::TimedOut,
        }
    }
}

/// Held while a call is in flight; dropped with the call, it hands a probe back.
struct Pending<'a>(Option<&'a Circuit>);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.0 {
            let mut s = c.state.lock().unwrap_or_else(|e| e.into_inner());
            if *s == State::Probing {
                *s = State::Open {
                    until: Instant::now(),
                };
            }
        }
    }
}

/// A store whose every call goes through a [`Circuit`].
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    circuit: Arc<Circuit>,
}

impl<S> Guarded<S> {
    /// `inner` behind `circuit`, which probes `inner` while it is down.
    pub fn new(inner: S, circuit: Arc<Circuit>) -> Guarded<S>
    where
        S: Probe,
    {
        circuit.set_probe(inner.clone());
        Guarded { inner, circuit }
    }

    /// The store itself, past the circuit.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The circuit.
    pub fn circuit(&self) -> &Arc<Circuit> {
        &self.circuit
    }
}

impl<S: Probe> Probe for Guarded<S> {
    async fn probe(&self) -> StoreResult<()> {
        self.inner.probe().await
    }
}

/// Implements a store trait for `Guarded<S>` by passing each call through the circuit.
macro_rules! guarded {
    ($trait:ident { $( $kind:ident fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty; )* } $(extra { $($extra:item)* })?) => {
        impl<S: $trait> $trait for Guarded<S> {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    self.circuit.call(Call::$kind, self.inner.$name($($arg),*)).await
                }
            )*
            $($($extra)*)?
        }
    };
}

tessera_core::stores_in_one!(impl<S> Guarded<S> where S: tessera_core::AllConcerns);

guarded!(UserStore {
    Write fn create_user(&self, user: &User) -> StoreResult<()>;
    Read fn user_by_name(&self, username: &str) -> StoreResult<Option<User>>;
    Read fn user_by_id(&self, id: &str) -> StoreResult<Option<User>>;
    Read fn list_users(&self) -> StoreResult<Vec<User>>;
    Write fn set_disabled(&self, id: &str, disabled: bool) -> StoreResult<bool>;
    Write fn set_password_hash(&self, id: &str, hash: &str) -> StoreResult<bool>;
    Write fn delete_user(&self, id: &str) -> StoreResult<bool>;
    Read fn ping(&self) -> StoreResult<()>;
});

guarded!(SessionStore {
    Write fn create_session(&self, hash: &TokenHash, session: &Session) -> StoreResult<()>;
    Read fn session(&self, hash: &TokenHash) -> StoreResult<Option<Session>>;
    Write fn touch_session(&self, hash: &TokenHash, last_seen_at: i64) -> StoreResult<()>;
    Write fn set_session_data(&self, hash: &TokenHash, data: &Value) -> StoreResult<bool>;
    Write fn delete_session(&self, hash: &TokenHash) -> StoreResult<bool>;
    Read fn sessions_of(&self, user_id: &str) -> StoreResult<Vec<(TokenHash, Session)>>;
    Write fn delete_sessions_of(&self, user_id: &str, except: Option<&TokenHash>) -> StoreResult<u64>;
    Write fn purge_expired_sessions(&self, now: i64) -> StoreResult<tessera_core::Purged>;
    Read fn count_sessions(&self) -> StoreResult<u64>;
});

guarded!(KeyStore {
    Read fn signing_keys(&self) -> StoreResult<Vec<StoredKey>>;
    Write fn add_signing_key(&self, key: &StoredKey) -> StoreResult<()>;
});

guarded!(RefreshStore {
    Write fn create_refresh(&self, hash: &TokenHash, record: &RefreshRecord) -> StoreResult<()>;
    Read fn refresh_token(&self, hash: &TokenHash) -> StoreResult<Option<(RefreshRecord, bool)>>;
    Write fn rotate_refresh(&self, hash: &TokenHash, at: i64, successor: &TokenHash, record: &RefreshRecord) -> StoreResult<bool>;
    Write fn record_access(&self, family: &str, jti: &str, issued_at: i64) -> StoreResult<bool>;
    Read fn family_of_access(&self, jti: &str) -> StoreResult<Option<String>>;
    Write fn revoke_family(&self, family: &str, revocation: &FamilyRevocation<'_>) -> StoreResult<Vec<(String, i64)>>;
    Write fn revoke_families_of(&self, user_id: &str, revocation: &FamilyRevocation<'_>) -> StoreResult<(u64, Vec<(String, i64)>)>;
    Read fn live_families(&self, user_id: &str, client_id: &str, now: i64) -> StoreResult<Vec<(String, i64)>>;
    Write fn purge_access(&self, before: i64) -> StoreResult<tessera_core::Purged>;
    Write fn purge_families(&self, before: i64) -> StoreResult<tessera_core::Purged>;
} extra {
    fn back_since(&self) -> Option<i64> {
        self.circuit.back_since()
    }
});

guarded!(DenylistStore {
    Write fn deny_access(&self, jti: &str, exp: i64, now: i64) -> StoreResult<()>;
    Read fn denied_access(&self, now: i64) -> StoreResult<tessera_core::Denied>;
    Read fn denied_since(&self, since: i64, now: i64) -> StoreResult<tessera_core::Denied>;
    Read fn each_denied(&self, now: i64, sink: &mut dyn tessera_core::DeniedSink) -> StoreResult<()>;
    Write fn purge_denied(&self, now: i64) -> StoreResult<tessera_core::Purged>;
});

guarded!(ThrottleStore {
    Write fn throttle_reserve(&self, keys: &[(String, u32)], policy: &ThrottlePolicy, now: i64) -> StoreResult<Option<i64>>;
    Write fn throttle_release(&self, cleared: &[(String, u32)], released: &[(String, u32)]) -> StoreResult<()>;
});

guarded!(ClientStore {
    Write fn create_client(&self, client: &Client) -> StoreResult<()>;
    Read fn client(&self, id: &str) -> StoreResult<Option<Client>>;
    Read fn list_clients(&self) -> StoreResult<Vec<Client>>;
    Write fn delete_client(&self, id: &str) -> StoreResult<bool>;
    Write fn create_code(&self, hash: &TokenHash, record: &CodeRecord) -> StoreResult<()>;
    Write fn use_code(&self, hash: &TokenHash, at: i64) -> StoreResult<Option<(CodeRecord, bool)>>;
    Read fn code(&self, hash: &TokenHash) -> StoreResult<Option<(CodeRecord, bool)>>;
    Write fn redeem_code(&self, hash: &TokenHash, at: i64, refresh: &TokenHash, record: &RefreshRecord) -> StoreResult<bool>;
    Write fn purge_codes(&self, now: i64) -> StoreResult<tessera_core::Purged>;
    Write fn set_consent(&self, user_id: &str, consent: &Consent) -> StoreResult<()>;
    Read fn consents_of(&self, user_id: &str) -> StoreResult<Vec<Consent>>;
    Write fn delete_consent(&self, user_id: &str, client_id: &str) -> StoreResult<bool>;
});

guarded!(Generation {
    Read fn revocation_generation(&self) -> StoreResult<i64>;
});

/// Where the changes a cluster's instances must learn of are announced (Redis pub/sub).
pub trait Announcer: Clone + Send + Sync + 'static {
    /// Announces `change` to every instance.
    fn publish(&self, change: &Change) -> impl Future<Output = StoreResult<()>> + Send;
}

guarded!(Announcer {
    Write fn publish(&self, change: &Change) -> StoreResult<()>;
});

use crate::Generation;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn circuit() -> Arc<Circuit> {
        Circuit::new(
            "test",
            CircuitSettings {
                timeout: Duration::from_millis(50),
                write_timeout: Duration::from_millis(80),
                retry: Duration::from_millis(100),
            },
        )
    }

    fn down() -> StoreResult<()> {
        Err(StoreError::Unavailable("down".into()))
    }

    /// A store whose ping answers while `up`, and hangs otherwise.
    #[derive(Clone, Default)]
    struct Switch(Arc<AtomicBool>);

    impl Probe for Switch {
        async fn probe(&self) -> StoreResult<()> {
            if self.0.load(Ordering::SeqCst) {
                Ok(())
            } else {
                std::future::pending().await
            }
        }
    }

    #[tokio::test]
    async fn without_a_probe_a_timeout_opens_at_once_and_one_call_probes() {
        let c = circuit();
        let hang = c
            .call(Call::Read, std::future::pending::<StoreResult<()>>())
            .await;
        assert!(hang.is_err());
        assert!(c.is_open());
        // Refused without being run.
        let ran = AtomicBool::new(false);
        let r = c
            .call(Call::Read, async {
                ran.store(true, Ordering::SeqCst);
                Ok(())
            })
            .await;
        assert!(r.is_err() && !ran.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(120)).await;
        // One probe at a time: while it is in flight, the others are refused.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let probe = c.call(Call::Read, async {
            let _ = rx.await;
            Ok(())
        });
        let other = async {
            tokio::task::yield_now().await;
            let r = c.call(Call::Read, async { Ok(()) }).await;
            let _ = tx.send(());
            r
        };
        let (p, o) = tokio::join!(probe, other);
        assert!(p.is_ok() && o.is_err());
        assert!(!c.is_open());
        assert!(c.back_since().is_some());
        let s = c.stats();
        assert_eq!((s.timeouts, s.opened, s.rejected), (1, 1, 2));
    }

    #[tokio::test]
    async fn a_slow_call_fails_alone_when_the_probe_answers() {
        let c = circuit();
        let store = Switch::default();
        store.0.store(true, Ordering::SeqCst);
        c.set_probe(store.clone());
        // A write waiting on a lock past its bound: it fails, the store stays up.
        let slow = c
            .call(Call::Write, std::future::pending::<StoreResult<()>>())
            .await;
        assert!(slow.is_err());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!c.is_open());
        assert!(c.call(Call::Read, async { Ok(()) }).await.is_ok());
        assert_eq!(c.stats().opened, 0);
    }

    #[tokio::test]
    async fn a_hung_store_is_marked_down_and_no_request_waits_for_its_probes() {
        let c = circuit();
        let store = Switch::default();
        c.set_probe(store.clone());
        let started = Instant::now();
        assert!(
            c.call(Call::Read, std::future::pending::<StoreResult<()>>())
                .await
                .is_err()
        );
        // The probe hangs too: down one probe timeout later.
        tokio::time::sleep(Duration::from_millis(70)).await;
        assert!(c.is_open(), "{:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(120)).await;
        // A probe is due: this call is refused at once and the probe runs on its own.
        let started = Instant::now();
        assert!(
            c.call(Call::Read, std::future::pending::<StoreResult<()>>())
                .await
                .is_err()
        );
        assert!(started.elapsed() < Duration::from_millis(30));
        // The store comes back: the next probe marks it up.
        store.0.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(170)).await;
        let _ = c.call(Call::Read, async { Ok(()) }).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!c.is_open());
        assert!(c.call(Call::Read, async { Ok(()) }).await.is_ok());
    }

    #[tokio::test]
    async fn errors_open_after_three_in_a_row_and_a_dropped_probe_is_handed_back() {
        let c = circuit();
        assert!(c.call(Call::Read, async { down() }).await.is_err());
        assert!(c.call(Call::Read, async { Ok(()) }).await.is_ok());
        for _ in 0..2 {
            assert!(c.call(Call::Read, async { down() }).await.is_err());
        }
        assert!(!c.is_open());
        assert!(c.call(Call::Read, async { down() }).await.is_err());
        assert!(c.is_open());
        tokio::time::sleep(Duration::from_millis(120)).await;
        // The probe's caller goes away: the next call may probe at once.
        let probe = c.call(Call::Read, std::future::pending::<StoreResult<()>>());
        let _ = tokio::time::timeout(Duration::from_millis(10), probe).await;
        assert!(c.call(Call::Read, async { Ok(()) }).await.is_ok());
        assert!(!c.is_open());
        // Conflicts are answers: the store is up.
        let conflict = c
            .call(Call::Write, async { Err::<(), _>(StoreError::Conflict) })
            .await;
        assert!(matches!(conflict, Err(StoreError::Conflict)));
        assert!(circuits().iter().any(|x| Arc::ptr_eq(x, &c)));
    }
}
