//! Passwords: the NIST SP 800-63B policy for new ones, and Argon2id hashing on a bounded pool of
//! blocking threads, so that a flood of logins queues behind itself and never starves the
//! request workers that answer `/auth/me`.

use std::collections::HashSet;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use tokio::sync::Semaphore;
use zeroize::{Zeroize, Zeroizing};

/// Argon2id cost parameters. The defaults are OWASP's first recommendation (m = 19 MiB, t = 2,
/// p = 1); lower values are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Parallelism.
    pub p_cost: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams {
            m_cost: Params::DEFAULT_M_COST,
            t_cost: Params::DEFAULT_T_COST,
            p_cost: Params::DEFAULT_P_COST,
        }
    }
}

impl HashParams {
    /// The floor: m = 19 MiB, t = 2, p = 1.
    pub const MINIMUM: HashParams = HashParams {
        m_cost: 19 * 1024,
        t_cost: 2,
        p_cost: 1,
    };

    fn argon2(&self) -> Result<Argon2<'static>, PasswordError> {
        let params = Params::new(self.m_cost, self.t_cost, self.p_cost, None)
            .map_err(|_| PasswordError::Internal)?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// Whether a stored PHC string was made with exactly these parameters (Argon2id, v19).
    pub fn matches(&self, phc: &str) -> bool {
        let expected = format!(
            "$argon2id$v=19$m={},t={},p={}$",
            self.m_cost, self.t_cost, self.p_cost
        );
        phc.starts_with(&expected)
    }
}

/// Why a password operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Shorter than the configured minimum.
    #[error("the password must be at least {0} characters long")]
    TooShort(usize),
    /// Longer than the maximum (a bound on hashing work, far above what people type).
    #[error("the password must be at most {0} characters long")]
    TooLong(usize),
    /// On the list of common passwords, or the username itself.
    #[error("this password is too common; choose another")]
    Common,
    /// Hashing failed or its pool is gone.
    #[error("password hashing failed")]
    Internal,
    /// Every hashing thread is busy and the queue before them is full.
    #[error("password hashing is saturated; try again shortly")]
    Busy,
}

/// The rules for new passwords (SP 800-63B §5.1.1.2): a minimum length (default 8), at least 64
/// characters allowed (here up to 1024), no composition rules, no truncation, and no password
/// from the list of common ones (`data/common-passwords.txt`, see `data/SOURCES.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Minimum length in characters.
    pub min_len: usize,
    /// Maximum length in characters.
    pub max_len: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            min_len: 8,
            max_len: 1024,
        }
    }
}

static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt")
        .lines()
        .filter(|l| !l.is_empty())
        .collect()
});

impl PasswordPolicy {
    /// Checks a new password for `username`.
    pub fn check(&self, password: &str, username: &str) -> Result<(), PasswordError> {
        let len = password.chars().count();
        if len < self.min_len {
            return Err(PasswordError::TooShort(self.min_len));
        }
        if len > self.max_len {
            return Err(PasswordError::TooLong(self.max_len));
        }
        let lower = password.to_lowercase();
        if COMMON.contains(lower.as_str()) || lower == username.to_lowercase() {
            return Err(PasswordError::Common);
        }
        Ok(())
    }
}

/// Hashes and verifies passwords with Argon2id on `concurrency` dedicated threads of a lowered
/// scheduling priority, so that a flood of logins slows logins, not the requests beside them,
/// while logins keep a small share of a core that request handling saturates.
#[derive(Debug, Clone)]
pub struct PasswordHasherPool {
    params: HashParams,
    permits: Arc<Semaphore>,
    /// Hashes running or waiting, and the most allowed (threads plus queue).
    in_line: Arc<AtomicUsize>,
    max_in_line: usize,
    /// Hashes computed (for `/metrics`, and to show that abandoned ones are not).
    computed: Arc<AtomicU64>,
    /// The hashing threads' Argon2 working memory, kept between logins.
    memory: Arc<MemoryCount>,
    jobs: Arc<Jobs>,
    /// A hash of a random password, verified against when the user does not exist, so that an
    /// unknown username costs what a wrong password costs.
    dummy: Arc<String>,
}

type Job = Box<dyn FnOnce(&mut Workspace) + Send>;

/// How long a hashing thread keeps its Argon2 working memory after its last job. While logins
/// keep coming, each verification reuses it; without that, each had its 19 MiB mapped, faulted in
/// page by page and unmapped again (a thread's malloc arena returns an emptied heap at once):
/// a third of a login's time. A second after the last login it is wiped and given back.
const KEEP_MEMORY: Duration = Duration::from_secs(1);

/// What the hashing threads' working memory amounts to, for `/metrics` and the tests.
#[derive(Debug, Default)]
struct MemoryCount {
    /// Bytes held now, all threads together.
    held: AtomicUsize,
    /// Times a thread had to allocate (or grow) its memory.
    allocations: AtomicU64,
}

/// The Argon2 working memory of one hashing thread.
struct Workspace {
    blocks: Vec<Block>,
    count: Arc<MemoryCount>,
}

impl Workspace {
    fn new(count: Arc<MemoryCount>) -> Workspace {
        Workspace {
            blocks: Vec::new(),
            count,
        }
    }

    /// At least `n` blocks, allocated only if fewer are held (a smaller hash runs in the front
    /// of a larger one's). Their content is whatever the last hash left: Argon2 writes every
    /// block it reads first.
    fn blocks(&mut self, n: usize) -> Result<&mut [Block], PasswordError> {
        if self.blocks.len() < n {
            self.release(); // not copied into the larger one: never two held at once
            let mut blocks = Vec::new();
            blocks
                .try_reserve_exact(n)
                .map_err(|_| PasswordError::Internal)?;
            blocks.resize(n, Block::default());
            self.count
                .held
                .fetch_add(n * Block::SIZE, Ordering::Relaxed);
            self.count.allocations.fetch_add(1, Ordering::Relaxed);
            self.blocks = blocks;
        }
        Ok(&mut self.blocks[..n])
    }

    /// Wipes the memory (the last hash's blocks) and gives it back.
    fn release(&mut self) {
        if self.blocks.is_empty() {
            return;
        }
        // What `blocks` added: its length, not the capacity the allocator may have rounded up.
        self.count
            .held
            .fetch_sub(self.blocks.len() * Block::SIZE, Ordering::Relaxed);
        self.blocks.zeroize();
        self.blocks = Vec::new();
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        self.release();
    }
}

/// A place in the hashing line, given back when dropped.
struct InLine<'a>(&'a AtomicUsize);

impl<'a> InLine<'a> {
    fn take(count: &'a AtomicUsize, max: usize) -> Result<InLine<'a>, PasswordError> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| InLine(count))
            .map_err(|_| PasswordError::Busy)
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The hashing threads' queue: jobs in arrival order, and whether the pool is gone. Every idle
/// thread waits on it with a timeout of its own.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A hashing thread's life: jobs as they come, its memory wiped and given back once it has
    /// waited `keep` without one; it ends when the pool is gone and the queue is empty.
    fn serve(&self, keep: Duration, mut memory: Workspace) {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                drop(state);
                // A job that panics answers its caller with an error (its sender dropped) and
                // leaves the thread serving.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut memory)));
                state = self.lock();
            } else if state.closed {
                return;
            } else if memory.blocks.is_empty() {
                state = self
                    .ready
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            } else {
                let (s, waited) = self
                    .ready
                    .wait_timeout(state, keep)
                    .unwrap_or_else(PoisonError::into_inner);
                state = s;
                if waited.timed_out() && state.jobs.is_empty() {
                    drop(state);
                    memory.release();
                    state = self.lock();
                }
            }
        }
    }
}

/// The pool's end of the queue; when the last clone of the pool is dropped, the threads end.
struct Jobs(Arc<Queue>);

impl Jobs {
    fn send(&self, job: Job) {
        self.0.lock().jobs.push_back(job);
        self.0.ready.notify_one();
    }
}

impl Drop for Jobs {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.ready.notify_all();
    }
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Jobs")
    }
}

/// Starts `n` hashing threads at niceness `nice`, fed by one queue; each keeps its working
/// memory until it has had no job for `keep`.
fn start_threads(
    n: usize,
    nice: i32,
    keep: Duration,
    count: &Arc<MemoryCount>,
) -> Result<Jobs, PasswordError> {
    let queue = Arc::new(Queue::default());
    for i in 0..n {
        let queue = Arc::clone(&queue);
        let memory = Workspace::new(Arc::clone(count));
        std::thread::Builder::new()
            .name(format!("tessera-hash-{i}"))
            .spawn(move || {
                // Best effort: without the right to lower it, hashing runs at normal priority.
                // On Linux the niceness of "the process" 0 is the calling thread's own.
                if rustix::process::setpriority_process(None, nice).is_err() {
                    tracing::debug!(nice, "could not set the hashing thread's priority");
                }
                queue.serve(keep, memory);
            })
            .map_err(|_| PasswordError::Internal)?;
    }
    Ok(Jobs(queue))
}

/// Whether `password` matches the PHC string `phc`, as the argon2 crate's `verify_password`
/// decides it (algorithm, version, parameters and salt from the string, the outputs compared in
/// constant time), computed in the thread's `memory` instead of a new allocation. `None`: a
/// string it cannot verify against (which nothing matches).
fn verify_in(memory: &mut Workspace, password: &[u8], phc: &str) -> Option<bool> {
    let hash = PasswordHash::new(phc).ok()?;
    let (salt, expected) = (hash.salt.as_ref()?, hash.hash.as_ref()?);
    let algorithm = Algorithm::try_from(hash.algorithm.as_str()).ok()?;
    let version = match hash.version {
        Some(v) => Version::try_from(v).ok()?,
        None => Version::default(),
    };
    let params = Params::try_from(&hash).ok()?;
    let blocks = memory.blocks(params.block_count()).ok()?;
    let mut out = Zeroizing::new([0u8; Output::MAX_LENGTH]);
    let out = out.get_mut(..expected.len())?;
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, out, blocks)
        .ok()?;
    Some(Output::new(out).ok()? == *expected)
}

/// Salt length in bytes.
const SALT: usize = 16;

/// A new PHC string for `password` with `params` and a random salt, computed in `memory`.
fn hash_in(
    memory: &mut Workspace,
    params: HashParams,
    password: &[u8],
) -> Result<String, PasswordError> {
    fn internal<E>(_: E) -> PasswordError {
        PasswordError::Internal
    }
    let mut salt = [0u8; SALT];
    aws_lc_rs::rand::fill(&mut salt).map_err(internal)?;
    let argon2 = params.argon2()?;
    let mut out = Zeroizing::new([0u8; Params::DEFAULT_OUTPUT_LEN]);
    let blocks = memory.blocks(argon2.params().block_count())?;
    argon2
        .hash_password_into_with_memory(password, &salt, out.as_mut(), blocks)
        .map_err(internal)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params()).map_err(internal)?,
        salt: Some(Salt::new(&salt).map_err(internal)?),
        hash: Some(Output::new(out.as_ref()).map_err(internal)?),
    };
    Ok(phc.to_string())
}

/// A PHC string with `params` that no password verifies against, made without paying for
/// `params`: a hash of a random password under the cheapest Argon2id parameters, relabelled with
/// `params`. Verifying against it runs Argon2id with `params` (they travel in the string), so an
/// unknown username costs what a wrong password costs; the start no longer runs a full hash
/// (tens of milliseconds and the parameters' memory) to make it.
fn dummy_hash(params: HashParams) -> Result<String, PasswordError> {
    let cheap = HashParams {
        m_cost: 8,
        t_cost: 1,
        p_cost: 1,
    };
    let mut random = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(random.as_mut()).map_err(|_| PasswordError::Internal)?;
    let phc = hash_in(&mut Workspace::new(Arc::default()), cheap, random.as_ref())?;
    let salt_and_hash = phc
        .strip_prefix("$argon2id$v=19$m=8,t=1,p=1$")
        .ok_or(PasswordError::Internal)?;
    Ok(format!(
        "$argon2id$v=19$m={},t={},p={}${salt_and_hash}",
        params.m_cost, params.t_cost, params.p_cost
    ))
}

impl PasswordHasherPool {
    /// A pool hashing with `params`, at most `concurrency` (≥ 1) hashes at once and `queue`
    /// more waiting (past that, [`PasswordError::Busy`] at once), on threads of niceness `nice`
    /// (0 to 19): how much CPU hashing gets when request handling wants all of it.
    pub fn new(
        params: HashParams,
        concurrency: usize,
        queue: usize,
        nice: i32,
    ) -> Result<PasswordHasherPool, PasswordError> {
        Self::keeping_memory(params, concurrency, queue, nice, KEEP_MEMORY)
    }

    /// [`PasswordHasherPool::new`], each thread keeping its working memory for `keep` after
    /// its last job.
    fn keeping_memory(
        params: HashParams,
        concurrency: usize,
        queue: usize,
        nice: i32,
        keep: Duration,
    ) -> Result<PasswordHasherPool, PasswordError> {
        if params.m_cost < HashParams::MINIMUM.m_cost
            || params.t_cost < HashParams::MINIMUM.t_cost
            || params.p_cost < HashParams::MINIMUM.p_cost
        {
            return Err(PasswordError::Internal);
        }
        let dummy = dummy_hash(params)?;
        let concurrency = concurrency.max(1);
        let memory = Arc::new(MemoryCount::default());
        Ok(PasswordHasherPool {
            params,
            permits: Arc::new(Semaphore::new(concurrency)),
            in_line: Arc::new(AtomicUsize::new(0)),
            max_in_line: concurrency.saturating_add(queue),
            computed: Arc::new(AtomicU64::new(0)),
            jobs: Arc::new(start_threads(
                concurrency,
                nice.clamp(0, 19),
                keep,
                &memory,
            )?),
            memory,
            dummy: Arc::new(dummy),
        })
    }

    /// The parameters new hashes get.
    pub fn params(&self) -> HashParams {
        self.params
    }

    /// Runs `job` on a hashing thread. The caller waits its turn in a bounded line; a caller
    /// that goes away before its job starts (a client that hung up) costs no hash.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Workspace) -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let _place = InLine::take(&self.in_line, self.max_in_line)?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| PasswordError::Internal)?;
        let (done, result) = tokio::sync::oneshot::channel();
        let computed = Arc::clone(&self.computed);
        self.jobs.send(Box::new(move |memory: &mut Workspace| {
            if !done.is_closed() {
                computed.fetch_add(1, Ordering::Relaxed);
                let _ = done.send(job(memory));
            }
        }));
        result.await.map_err(|_| PasswordError::Internal)
    }

    /// Hashes computed since start.
    pub fn computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }

    /// Hashes running or waiting now.
    pub fn in_line(&self) -> usize {
        self.in_line.load(Ordering::Relaxed)
    }

    /// Bytes of Argon2 working memory the hashing threads hold now (each keeps its own for a
    /// second after its last hash).
    pub fn memory_held(&self) -> usize {
        self.memory.held.load(Ordering::Relaxed)
    }

    /// Hashes a password (PHC string).
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let params = self.params;
        let password = Zeroizing::new(password.as_bytes().to_vec());
        self.run(move |memory| hash_in(memory, params, &password))
            .await?
    }

    /// Checks `password` against a stored hash, or against the dummy hash when `stored` is
    /// `None` (unknown user: same cost, always false).
    pub async fn verify(
        &self,
        password: &str,
        stored: Option<&str>,
    ) -> Result<bool, PasswordError> {
        let known = stored.is_some();
        let phc = stored.map_or_else(|| (*self.dummy).clone(), str::to_owned);
        let password = Zeroizing::new(password.as_bytes().to_vec());
        let ok = self
            .run(move |memory| verify_in(memory, &password, &phc) == Some(true))
            .await?;
        Ok(ok && known)
    }

    /// Whether a stored hash should be replaced after a successful login.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        !self.params.matches(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::{PasswordHasher as _, PasswordVerifier as _};

    #[test]
    fn policy_after_nist() {
        let p = PasswordPolicy::default();
        assert_eq!(p.check("short", "alice"), Err(PasswordError::TooShort(8)));
        assert_eq!(p.check("password", "alice"), Err(PasswordError::Common));
        assert_eq!(p.check("PassWord", "alice"), Err(PasswordError::Common));
        assert_eq!(
            p.check("alice-in-wonderland", "alice-in-wonderland"),
            Err(PasswordError::Common)
        );
        // No composition rules; 64+ characters fine, not truncated.
        assert_eq!(p.check("correct horse battery staple", "alice"), Ok(()));
        assert_eq!(p.check(&"x1".repeat(100), "alice"), Ok(()));
        assert_eq!(
            p.check(&"y".repeat(1025), "alice"),
            Err(PasswordError::TooLong(1024))
        );
        // Length counts characters, not bytes.
        assert_eq!(p.check("ééééééé", "alice"), Err(PasswordError::TooShort(8)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hash_verify_rehash() {
        let pool = PasswordHasherPool::new(HashParams::default(), 1, 8, 10).unwrap();
        let h = pool.hash("correct horse").await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        // A hash made in kept memory is one the argon2 crate verifies.
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", h.as_str())
                .is_ok()
        );
        assert_ne!(pool.hash("correct horse").await.unwrap(), h, "salted");
        assert!(pool.verify("correct horse", Some(&h)).await.unwrap());
        assert!(!pool.verify("correct horsE", Some(&h)).await.unwrap());
        assert!(!pool.verify("correct horse", None).await.unwrap());
        assert!(!pool.needs_rehash(&h));
        // The dummy an unknown username is checked against carries the pool's parameters (so
        // it costs a full verification) and is a well-formed hash nothing verifies against.
        assert!(pool.params().matches(&pool.dummy), "{}", pool.dummy);
        let parsed = PasswordHash::new(&pool.dummy).unwrap();
        assert_eq!(parsed.hash.map(|o| o.len()), Some(32));
        for guess in ["", "correct horse", "password"] {
            assert!(
                Argon2::default()
                    .verify_password(guess.as_bytes(), &parsed)
                    .is_err()
            );
        }
        let other = PasswordHasherPool::new(HashParams::default(), 1, 8, 10).unwrap();
        assert_ne!(*pool.dummy, *other.dummy, "a random one per pool");
        let stronger = HashParams {
            t_cost: 3,
            ..HashParams::default()
        };
        let pool3 = PasswordHasherPool::new(stronger, 1, 8, 10).unwrap();
        assert!(pool3.needs_rehash(&h));
        // Old hashes still verify with the new pool: the parameters travel with the hash.
        assert!(pool3.verify("correct horse", Some(&h)).await.unwrap());
        // Weaker than the floor is refused.
        assert!(
            PasswordHasherPool::new(
                HashParams {
                    m_cost: 1024,
                    ..HashParams::default()
                },
                1,
                8,
                10
            )
            .is_err()
        );
    }

    /// A pool of `threads` hashing threads with the default parameters, each keeping its memory
    /// for `keep`.
    fn keeping(threads: usize, keep: Duration) -> PasswordHasherPool {
        PasswordHasherPool::keeping_memory(HashParams::default(), threads, 8, 10, keep).unwrap()
    }

    /// A PHC string made by the argon2 crate itself.
    fn crate_hash(algorithm: Algorithm, version: Version, m: u32, t: u32, p: u32) -> String {
        Argon2::new(algorithm, version, Params::new(m, t, p, None).unwrap())
            .hash_password_with_salt(b"correct horse", b"a salt of 16 B..")
            .unwrap()
            .to_string()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verification_in_kept_memory_decides_as_the_argon2_crate_does() {
        let pool = keeping(1, Duration::from_secs(600));
        // Smaller after larger: a verification runs in memory a larger one left dirty.
        let hashes = [
            crate_hash(Algorithm::Argon2id, Version::V0x13, 19456, 2, 1),
            crate_hash(Algorithm::Argon2id, Version::V0x13, 24576, 3, 1),
            crate_hash(Algorithm::Argon2id, Version::V0x13, 19456, 2, 2),
            crate_hash(Algorithm::Argon2id, Version::V0x13, 64, 1, 1),
            crate_hash(Algorithm::Argon2i, Version::V0x13, 19456, 2, 1),
            crate_hash(Algorithm::Argon2d, Version::V0x10, 19456, 2, 1),
        ];
        for h in &hashes {
            for guess in ["correct horse", "correct horsE", ""] {
                let theirs = Argon2::default()
                    .verify_password(guess.as_bytes(), h.as_str())
                    .is_ok();
                assert_eq!(pool.verify(guess, Some(h)).await, Ok(theirs), "{guess} {h}");
                assert_eq!(theirs, guess == "correct horse");
            }
        }
        // Strings it cannot verify against match nothing, as for the crate.
        let good = &hashes[0];
        let cut = &good[..good.len() - 4];
        let no_hash = &good[..good.rfind('$').unwrap()];
        for bad in [
            "",
            "correct horse",
            "$argon2id$",
            cut,
            no_hash,
            "$scrypt$ln=4,r=8,p=1$c2FsdA$aGFzaA",
        ] {
            assert_eq!(
                pool.verify("correct horse", Some(bad)).await,
                Ok(false),
                "{bad}"
            );
        }
        // Memory was allocated twice: for the first hash, and grown for the larger one.
        assert_eq!(pool.memory.allocations.load(Ordering::Relaxed), 2);
        assert_eq!(pool.memory_held(), 24576 * 1024);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_working_memory_is_kept_from_one_hash_to_the_next() {
        let pool = keeping(1, Duration::from_secs(600));
        assert_eq!(pool.memory_held(), 0, "none before the first hash");
        let h = pool.hash("correct horse").await.unwrap();
        for _ in 0..3 {
            assert!(pool.verify("correct horse", Some(&h)).await.unwrap());
        }
        assert!(!pool.verify("wrong", None).await.unwrap());
        assert_eq!(pool.memory.allocations.load(Ordering::Relaxed), 1);
        assert_eq!(pool.memory_held(), 19456 * 1024);
    }

    /// Waits (at most 10 s) until the pool's threads hold no working memory.
    async fn given_back(pool: &PasswordHasherPool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.memory_held() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{} bytes still held",
                pool.memory_held()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_thread_gives_its_memory_back_when_idle() {
        // Three threads, each idle with its own timeout (not one at a time behind a lock).
        let pool = keeping(3, Duration::from_millis(200));
        let h = pool.hash("correct horse").await.unwrap();
        for _ in 0..3 {
            let checks: Vec<_> = (0..6)
                .map(|_| {
                    let (pool, h) = (pool.clone(), h.clone());
                    tokio::spawn(async move { pool.verify("correct horse", Some(&h)).await })
                })
                .collect();
            for c in checks {
                assert_eq!(c.await.unwrap(), Ok(true));
            }
            assert!(pool.memory_held() >= 19456 * 1024);
            assert!(pool.memory_held() <= 3 * 19456 * 1024);
            given_back(&pool).await;
        }
        // And hashing works after.
        assert!(pool.verify("correct horse", Some(&h)).await.unwrap());
        given_back(&pool).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_line_is_bounded_and_abandoned_hashes_do_not_run() {
        // Slow hashes (t = 8), so that the first is still running while the others arrive.
        let slow = HashParams {
            t_cost: 8,
            ..HashParams::default()
        };
        let pool = PasswordHasherPool::new(slow, 1, 1, 10).unwrap();
        let h = pool.hash("correct horse").await.unwrap();
        assert_eq!(pool.computed(), 1);
        // One running, one waiting: the third is refused at once.
        let (a, b) = (pool.clone(), pool.clone());
        let (ha, hb) = (h.clone(), h.clone());
        // Each in line before the next comes (waited for, not slept for: a busy machine ran
        // a spawned task later than 5 ms).
        let in_line = |n| {
            let pool = pool.clone();
            async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while pool.in_line() < n && std::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        };
        let first = tokio::spawn(async move { a.verify("x", Some(&ha)).await });
        in_line(1).await;
        let second = tokio::spawn(async move { b.verify("y", Some(&hb)).await });
        in_line(2).await;
        assert_eq!(pool.in_line(), 2);
        assert_eq!(pool.verify("z", Some(&h)).await, Err(PasswordError::Busy));
        // The waiting caller goes away: its hash never runs.
        second.abort();
        assert_eq!(first.await.unwrap(), Ok(false));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pool.computed(), 2);
        assert_eq!(pool.in_line(), 0);
    }
}
