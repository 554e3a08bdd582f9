//! The first-party authentication service: accounts, password login, session tokens. Every
//! decision about who may do what lives here; the HTTP layer only translates.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use tessera_jose::{Clock, Revocation};

use crate::password::{PasswordError, PasswordHasherPool, PasswordPolicy};
use crate::revocation::Denylist;
use crate::session::{Session, SessionPolicy};
use crate::store::{Change, FamilyRevocation, StoreError, Stores};
use crate::store::{RefreshStore as _, SessionStore as _, ThrottleStore as _, UserStore as _};
use crate::throttle::{Attempt, DeviceCookies, Throttle};
use crate::token::{Kind, Token, TokenHash, random_id};
use crate::user::{User, normalize_username};

/// What the login request says about its client.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// `User-Agent`, as sent.
    pub user_agent: Option<String>,
    /// The client's address (after trusted-proxy resolution).
    pub ip: Option<IpAddr>,
    /// The device cookie it presented, as sent (checked against the typed username).
    pub device: Option<String>,
}

/// Why a login failed. `InvalidCredentials` covers unknown user, wrong password and disabled
/// user alike: callers must not tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Bad username or password (or a disabled account).
    #[error("invalid username or password")]
    InvalidCredentials,
    /// Too many failures: try again after this many seconds.
    #[error("too many attempts")]
    Throttled(i64),
    /// Password hashing is saturated: try again after this many seconds.
    #[error("too many logins at once")]
    Busy(i64),
    /// A store or the hasher failed.
    #[error("service unavailable")]
    Unavailable,
}

/// Why a presented session token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Malformed, unknown, expired, or its user is gone or disabled.
    #[error("no valid session")]
    Invalid,
    /// The session store failed.
    #[error("session store unavailable")]
    Unavailable,
}

/// Why an account could not be created or changed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Not a valid username.
    #[error("usernames are 1 to 64 letters, digits or . _ - @ +")]
    BadUsername,
    /// The username is taken.
    #[error("that username is taken")]
    Taken,
    /// The password breaks the policy.
    #[error("{0}")]
    Password(PasswordError),
    /// No such user.
    #[error("no such user")]
    NotFound,
    /// A store or the hasher failed.
    #[error("service unavailable")]
    Unavailable,
}

impl From<StoreError> for AccountError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => AccountError::Taken,
            StoreError::Unavailable(why) => {
                tracing::error!(error = %why, "store unavailable");
                AccountError::Unavailable
            }
        }
    }
}

fn unavailable(e: StoreError) -> SessionError {
    tracing::error!(error = %e, "session store unavailable");
    SessionError::Unavailable
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Successful logins.
    pub logins_ok: AtomicU64,
    /// Failed logins.
    pub logins_failed: AtomicU64,
    /// Logins refused by the throttle.
    pub logins_throttled: AtomicU64,
    /// Logins refused because the hashing line was full.
    pub logins_busy: AtomicU64,
    /// Sessions created.
    pub sessions_created: AtomicU64,
    /// Sessions ended (logout, end one, end others, user disabled or deleted).
    pub sessions_ended: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A session that was found valid.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Its token's hash.
    pub hash: TokenHash,
    /// The session.
    pub session: Session,
    /// Its user.
    pub user: User,
}

/// The service; the server shares one behind an `Arc`.
#[derive(Debug)]
pub struct Auth<S> {
    store: S,
    hasher: PasswordHasherPool,
    password_policy: PasswordPolicy,
    session_policy: SessionPolicy,
    throttle: Throttle,
    devices: DeviceCookies,
    clock: Arc<dyn Clock>,
    counters: Counters,
    denylist: Arc<Denylist>,
}

/// The longest `User-Agent` kept with a session.
const MAX_USER_AGENT: usize = 256;

impl<S: Stores> Auth<S> {
    /// A service over these stores; what it revokes joins `denylist` (and the store's).
    #[expect(
        clippy::too_many_arguments,
        reason = "each part is distinct and required"
    )]
    pub fn new(
        store: S,
        hasher: PasswordHasherPool,
        password_policy: PasswordPolicy,
        session_policy: SessionPolicy,
        throttle: Throttle,
        devices: DeviceCookies,
        clock: Arc<dyn Clock>,
        denylist: Arc<Denylist>,
    ) -> Self {
        Auth {
            devices,
            denylist,
            store,
            hasher,
            password_policy,
            session_policy,
            throttle,
            clock,
            counters: Counters::default(),
        }
    }

    /// Now, from the service's clock.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The password hashing pool (its figures for `/metrics`).
    pub fn hasher(&self) -> &PasswordHasherPool {
        &self.hasher
    }

    /// The revocations held in memory.
    pub fn denylist(&self) -> &Arc<Denylist> {
        &self.denylist
    }

    /// Refuses what `r` covers until `exp`, in the store and in memory
    /// ([`Denylist::record`]).
    pub async fn revoke(&self, r: Revocation, exp: i64) -> Result<(), StoreError> {
        self.denylist.record(&self.store, r, exp, self.now()).await
    }

    /// Ends these sessions in the denylist: the access tokens issued under them are refused,
    /// and so is each session itself, until it would have ended anyway (so that a record that
    /// could not be removed never comes back).
    async fn revoke_sessions<'s>(
        &self,
        sessions: impl IntoIterator<Item = &'s Session>,
    ) -> Result<(), StoreError> {
        let tokens_until = self.denylist.keep_until(self.now());
        for s in sessions {
            let exp = tokens_until.max(s.ends_at());
            self.revoke(Revocation::Session(s.handle.clone()), exp)
                .await?;
        }
        Ok(())
    }

    /// Revokes every refresh family of `user_id` with the access tokens recorded in them (a
    /// rotation another instance made after the subject's revocation included); how many
    /// families were live.
    async fn revoke_families_of(&self, user_id: &str) -> Result<u64, StoreError> {
        let now = self.now();
        let ttl = self.denylist.token_lifetime();
        let revocation = FamilyRevocation {
            since: now - ttl - crate::revocation::LEEWAY,
            access_ttl: ttl,
            also: &[],
            now,
        };
        let (n, denied) = self
            .store
            .refresh()
            .revoke_families_of(user_id, &revocation)
            .await?;
        self.denylist.recorded(&self.store, denied, now).await;
        Ok(n)
    }

    /// Refuses every access token of `user_id` issued until now.
    async fn revoke_subject(&self, user_id: &str) -> Result<(), StoreError> {
        let now = self.now();
        let r = Revocation::Subject {
            sub: user_id.to_owned(),
            at: now,
        };
        self.revoke(r, self.denylist.keep_until(now)).await
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The session lifetimes.
    pub fn session_policy(&self) -> SessionPolicy {
        self.session_policy
    }

    /// Creates an account (CLI `user add`, self-service registration).
    pub async fn create_user(&self, username: &str, password: &str) -> Result<User, AccountError> {
        let username = normalize_username(username).ok_or(AccountError::BadUsername)?;
        self.password_policy
            .check(password, &username)
            .map_err(AccountError::Password)?;
        if self.store.users().user_by_name(&username).await?.is_some() {
            return Err(AccountError::Taken);
        }
        let hash = self
            .hasher
            .hash(password)
            .await
            .map_err(|_| AccountError::Unavailable)?;
        let user = User {
            id: random_id("usr_"),
            username,
            password_hash: hash,
            disabled: false,
            created_at: self.now(),
        };
        self.store.users().create_user(&user).await?;
        tracing::info!(target: "audit", event = "user_created", user = %user.id, username = %user.username);
        Ok(user)
    }

    /// Reserves a login attempt in the shared counts when the store keeps them (a cluster's
    /// Redis), else, or while they are unreachable, in this process's own. `Ok(true)`: reserved
    /// in the store.
    async fn throttle_reserve(&self, attempt: &Attempt, now: i64) -> Result<bool, i64> {
        match self
            .store
            .throttle()
            .throttle_reserve(&attempt.keys, self.throttle.policy(), now)
            .await
        {
            Ok(Some(0)) => Ok(true),
            Ok(Some(wait)) => Err(wait),
            Ok(None) => self.throttle.reserve(attempt, now).map(|()| false),
            Err(e) => {
                tracing::warn!(error = %e, "shared throttle unreachable; counting in this process");
                self.throttle.reserve(attempt, now).map(|()| false)
            }
        }
    }

    /// Ends a reservation whose password was not found wrong, where it was made: see
    /// [`Attempt::returned`].
    async fn throttle_release(&self, attempt: &Attempt, shared: bool, success: bool) {
        let (cleared, released) = attempt.returned(success);
        if !shared {
            self.throttle.release(cleared, released);
        } else if let Err(e) = self
            .store
            .throttle()
            .throttle_release(cleared, released)
            .await
        {
            tracing::warn!(error = %e, "releasing a shared throttle reservation failed");
        }
    }

    /// A new device cookie for `user` (after a successful login), and how long it is honoured.
    pub fn device_cookie(&self, user: &User) -> (String, i64) {
        (self.devices.issue(user, self.now()), self.devices.ttl())
    }

    /// Checks a username and password and returns the user. Throttled before the hash: the
    /// attempt is counted first and given back only if the password is right, so concurrent
    /// guesses cannot outrun the count, and a client that hangs up mid-check is counted as the
    /// failure it would have been. Unknown user, wrong password and disabled user are one
    /// answer; the log names the user id when the account exists, and nothing that was typed.
    pub async fn check_password(
        &self,
        username: &str,
        password: &str,
        client: &ClientInfo,
    ) -> Result<User, LoginError> {
        let now = self.now();
        let ip = client.ip;
        // An invalid username is answered like any wrong password. Invalid ones all count under
        // one key (`a:?`, which no real account can have): none of them can ever log in, and
        // typed text never becomes a key.
        let (name, user) = match normalize_username(username) {
            Some(name) => {
                let user = self.store.users().user_by_name(&name).await.map_err(|e| {
                    tracing::error!(error = %e, "user store unavailable");
                    LoginError::Unavailable
                })?;
                (name, user)
            }
            None => ("?".to_owned(), None),
        };
        let device = match (client.device.as_deref(), &user) {
            (Some(cookie), Some(u)) => self.devices.verify(cookie, u, now),
            _ => None,
        };
        let known_device = device.is_some();
        let attempt = self.throttle.attempt(&name, ip, device);
        let shared = match self.throttle_reserve(&attempt, now).await {
            Ok(shared) => shared,
            Err(wait) => {
                bump(&self.counters.logins_throttled, 1);
                tracing::warn!(target: "audit", event = "login_throttled", ip = ?ip, known_device, retry_after = wait);
                return Err(LoginError::Throttled(wait));
            }
        };
        // Unknown users cost one dummy verification, like a wrong password.
        let ok = match self
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await
        {
            Ok(ok) => ok,
            Err(e) => {
                self.throttle_release(&attempt, shared, false).await;
                return Err(match e {
                    PasswordError::Busy => {
                        bump(&self.counters.logins_busy, 1);
                        tracing::warn!(target: "audit", event = "login_refused", reason = "hashing_saturated", ip = ?ip);
                        LoginError::Busy(1)
                    }
                    _ => LoginError::Unavailable,
                });
            }
        };
        let user = match user {
            Some(u) if ok && !u.disabled => u,
            other => {
                bump(&self.counters.logins_failed, 1);
                let user = other.as_ref().map(|u| u.id.as_str());
                tracing::warn!(target: "audit", event = "login_failed", user, ip = ?ip, known_device);
                return Err(LoginError::InvalidCredentials);
            }
        };
        self.throttle_release(&attempt, shared, true).await;
        if self.hasher.needs_rehash(&user.password_hash)
            && let Ok(hash) = self.hasher.hash(password).await
            && let Err(e) = self.store.users().set_password_hash(&user.id, &hash).await
        {
            tracing::warn!(error = %e, "could not store the rehashed password");
        }
        bump(&self.counters.logins_ok, 1);
        tracing::info!(target: "audit", event = "login_ok", user = %user.id, ip = ?ip, known_device);
        Ok(user)
    }

    /// Checks a username and password and opens a session.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client: &ClientInfo,
    ) -> Result<(Token, Authenticated), LoginError> {
        let user = self.check_password(username, password, client).await?;
        self.open_session(user, client, self.now()).await
    }

    async fn open_session(
        &self,
        user: User,
        client: &ClientInfo,
        now: i64,
    ) -> Result<(Token, Authenticated), LoginError> {
        let p = self.session_policy;
        let session = Session {
            handle: random_id("ses_"),
            user_id: user.id.clone(),
            created_at: now,
            last_seen_at: now,
            expires_at: now.saturating_add(p.absolute_timeout),
            idle_timeout: p.idle_timeout,
            user_agent: client
                .user_agent
                .as_ref()
                .map(|ua| ua.chars().take(MAX_USER_AGENT).collect()),
            ip: client.ip.map(|ip| ip.to_string()),
            data: Value::Object(serde_json::Map::new()),
        };
        // A fresh random id every login; a collision of 256-bit ids is refused by the store and
        // retried, never overwritten.
        for _ in 0..3 {
            let token = Token::generate(Kind::Session);
            let hash = token.hash();
            match self.store.sessions().create_session(&hash, &session).await {
                Ok(()) => {
                    bump(&self.counters.sessions_created, 1);
                    tracing::info!(target: "audit", event = "session_created", user = %user.id, session = %session.handle);
                    self.bound_sessions(&user.id, &hash).await;
                    return Ok((
                        token,
                        Authenticated {
                            hash,
                            session,
                            user,
                        },
                    ));
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "session store unavailable");
                    return Err(LoginError::Unavailable);
                }
            }
        }
        Err(LoginError::Unavailable)
    }

    /// Ends the oldest sessions of `user_id` past [`SessionPolicy::max_per_user`], never
    /// `newest` (the one just opened). A failure is logged: the login itself stands.
    async fn bound_sessions(&self, user_id: &str, newest: &TokenHash) {
        let max = self.session_policy.max_per_user;
        if max == 0 {
            return;
        }
        let mut list = match self.sessions_of(user_id).await {
            Ok(list) if list.len() > max => list,
            Ok(_) => return,
            Err(_) => return,
        };
        // Newest first, the one just opened before all.
        list.sort_by_key(|(h, s)| (h != newest, std::cmp::Reverse(s.created_at)));
        let mut ended = 0u64;
        for (hash, s) in list.into_iter().skip(max) {
            match self.logout(&hash, &s).await {
                Ok(true) => ended += 1,
                Ok(false) => {}
                Err(_) => break,
            }
        }
        tracing::info!(target: "audit", event = "sessions_ended", reason = "too_many_sessions", user = %user_id, count = ended);
    }

    /// The session behind a presented token, if it is valid now. Records activity at most once
    /// per touch interval.
    pub async fn authenticate(&self, presented: &str) -> Result<Authenticated, SessionError> {
        let token = Token::parse(Kind::Session, presented).ok_or(SessionError::Invalid)?;
        let hash = token.hash();
        let now = self.now();
        let mut session = self
            .store
            .sessions()
            .session(&hash)
            .await
            .map_err(unavailable)?
            .ok_or(SessionError::Invalid)?;
        if self.denylist.session_revoked(&session.handle) {
            // Ended (its end is durable in the denylist) while its record could not be removed:
            // removed now.
            if let Err(e) = self.store.sessions().delete_session(&hash).await {
                tracing::debug!(error = %e, "removing an ended session failed");
            }
            return Err(SessionError::Invalid);
        }
        if !session.alive_at(now) {
            // Expired: remove it now rather than wait for the purge.
            if self
                .store
                .sessions()
                .delete_session(&hash)
                .await
                .map_err(unavailable)?
            {
                bump(&self.counters.sessions_ended, 1);
                self.revoke_sessions([&session])
                    .await
                    .map_err(unavailable)?;
                tracing::info!(target: "audit", event = "session_ended", reason = "expired", session = %session.handle);
            }
            return Err(SessionError::Invalid);
        }
        let user = match self.store.users().user_by_id(&session.user_id).await {
            Ok(Some(u)) if !u.disabled => u,
            Ok(_) => return Err(SessionError::Invalid),
            Err(e) => return Err(unavailable(e)),
        };
        if now - session.last_seen_at >= self.session_policy.touch_interval {
            self.store
                .sessions()
                .touch_session(&hash, now)
                .await
                .map_err(unavailable)?;
            session.last_seen_at = now;
        }
        Ok(Authenticated {
            hash,
            session,
            user,
        })
    }

    /// Ends the session with this hash, and the access tokens issued
    /// under it. The end is durable once the handle is denylisted, which comes first: a
    /// failure there changes nothing; after it, the session is refused everywhere, and a record
    /// that could not be removed is removed when it is next presented.
    pub async fn logout(&self, hash: &TokenHash, session: &Session) -> Result<bool, SessionError> {
        let handle = &session.handle;
        self.revoke_sessions([session]).await.map_err(unavailable)?;
        let ended = match self.store.sessions().delete_session(hash).await {
            Ok(ended) => ended,
            Err(e) => {
                tracing::warn!(error = %e, "removing an ended session's record failed; it is refused and removed later");
                true
            }
        };
        if ended {
            bump(&self.counters.sessions_ended, 1);
            tracing::info!(target: "audit", event = "session_ended", reason = "logout", session = %handle);
        }
        Ok(ended)
    }

    /// A user's live sessions, newest first.
    pub async fn sessions_of(
        &self,
        user_id: &str,
    ) -> Result<Vec<(TokenHash, Session)>, SessionError> {
        let now = self.now();
        let mut list: Vec<_> = self
            .store
            .sessions()
            .sessions_of(user_id)
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter(|(_, s)| s.alive_at(now))
            .collect();
        list.sort_by_key(|(_, s)| std::cmp::Reverse(s.created_at));
        Ok(list)
    }

    /// Ends one of `user_id`'s sessions by its public handle; false if the user has no such
    /// session (another user's handle included).
    pub async fn end_session(&self, user_id: &str, handle: &str) -> Result<bool, SessionError> {
        let list = self
            .store
            .sessions()
            .sessions_of(user_id)
            .await
            .map_err(unavailable)?;
        match list.into_iter().find(|(_, s)| s.handle == handle) {
            Some((hash, s)) => self.logout(&hash, &s).await,
            None => Ok(false),
        }
    }

    /// Ends every session of `user_id` but `keep`.
    pub async fn end_other_sessions(
        &self,
        user_id: &str,
        keep: &TokenHash,
    ) -> Result<u64, SessionError> {
        let ending: Vec<Session> = self
            .store
            .sessions()
            .sessions_of(user_id)
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter(|(h, _)| h != keep)
            .map(|(_, s)| s)
            .collect();
        // Refused first (durable), then removed: see `logout`.
        self.revoke_sessions(&ending).await.map_err(unavailable)?;
        let n = self
            .store
            .sessions()
            .delete_sessions_of(user_id, Some(keep))
            .await
            .map_err(unavailable)?;
        bump(&self.counters.sessions_ended, n);
        tracing::info!(target: "audit", event = "sessions_ended", reason = "end_others", user = %user_id, count = n);
        Ok(n)
    }

    /// Replaces the application data of a session.
    pub async fn set_session_data(
        &self,
        hash: &TokenHash,
        data: &Value,
    ) -> Result<bool, SessionError> {
        self.store
            .sessions()
            .set_session_data(hash, data)
            .await
            .map_err(unavailable)
    }

    /// Disables (or enables) a user; disabling ends all of its sessions at once.
    pub async fn set_disabled(&self, username: &str, disabled: bool) -> Result<User, AccountError> {
        let name = normalize_username(username).ok_or(AccountError::NotFound)?;
        let user = self
            .store
            .users()
            .user_by_name(&name)
            .await?
            .ok_or(AccountError::NotFound)?;
        if disabled {
            // Refused first: no token of the account outlives the moment it is disabled, and
            // the account change after it moves a polled store's generation, so servers
            // reloading on that move (SQLite with the CLI) pick the revocation up too.
            self.revoke_subject(&user.id).await?;
        } else if let Some(at) = self.denylist.subject_revoked_at(&user.id) {
            // Tokens issued in the second the account was disabled are refused (`iat` has
            // whole seconds): enabled again, its new tokens must be issued later than that.
            let wait = at + 1 - self.now();
            if wait > 0 {
                tokio::time::sleep(std::time::Duration::from_secs(wait.unsigned_abs())).await;
            }
        }
        self.store.users().set_disabled(&user.id, disabled).await?;
        self.store
            .announce(vec![Change::User(user.id.clone())])
            .await;
        if disabled {
            // The database's steps before Redis's: a failure at the sessions leaves no refresh
            // family live (and a disabled account's sessions are refused anyway).
            let families = self.revoke_families_of(&user.id).await?;
            let n = self
                .store
                .sessions()
                .delete_sessions_of(&user.id, None)
                .await?;
            bump(&self.counters.sessions_ended, n);
            tracing::info!(target: "audit", event = "user_disabled", user = %user.id, sessions_ended = n, refresh_families_revoked = families);
        } else {
            tracing::info!(target: "audit", event = "user_enabled", user = %user.id);
        }
        Ok(User { disabled, ..user })
    }

    /// Deletes a user and all of its sessions.
    pub async fn delete_user(&self, username: &str) -> Result<User, AccountError> {
        let name = normalize_username(username).ok_or(AccountError::NotFound)?;
        let user = self
            .store
            .users()
            .user_by_name(&name)
            .await?
            .ok_or(AccountError::NotFound)?;
        self.revoke_subject(&user.id).await?;
        self.revoke_families_of(&user.id).await?;
        let n = self
            .store
            .sessions()
            .delete_sessions_of(&user.id, None)
            .await?;
        bump(&self.counters.sessions_ended, n);
        self.store.users().delete_user(&user.id).await?;
        self.store
            .announce(vec![Change::User(user.id.clone())])
            .await;
        tracing::info!(target: "audit", event = "user_deleted", user = %user.id, sessions_ended = n);
        Ok(user)
    }
}

impl From<StoreError> for SessionError {
    fn from(e: StoreError) -> Self {
        unavailable(e)
    }
}
