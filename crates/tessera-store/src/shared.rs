//! The cluster store: durable things (users, keys, refresh tokens) in a database, fast and
//! expiring things (sessions, the denylist) in Redis, and every revoking change announced on
//! Redis pub/sub so that each instance drops what it cached.

use serde_json::Value;
use tessera_core::{
    Change, Client, ClientStore, CodeRecord, Consent, DenylistStore, FamilyRevocation, KeyStore,
    RefreshRecord, RefreshStore, Session, SessionStore, StoreResult, StoredKey, ThrottlePolicy,
    ThrottleStore, TokenHash, User, UserStore,
};

use crate::RedisStore;
use crate::guard::Announcer;

/// `db` for users, keys and refresh tokens; `redis` for sessions and the denylist.
#[derive(Debug, Clone)]
pub struct SharedStore<D, R = RedisStore> {
    db: D,
    redis: R,
}

impl<D, R: Announcer> SharedStore<D, R> {
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

    /// Announces denylist entries already committed to the database, in a task of their
    /// own: the revocation is complete without them, and a Redis that hangs must not hold the
    /// request that made it.
    async fn announce_denied(&self, entries: &[(String, i64)]) {
        let redis = self.redis.clone();
        let changes: Vec<Change> = entries
            .iter()
            .map(|(jti, exp)| Change::Denied {
                jti: jti.clone(),
                exp: *exp,
            })
            .collect();
        tokio::spawn(async move {
            for change in changes {
                if let Err(e) = redis.publish(&change).await {
                    tracing::warn!(error = %e, "announcing a revocation on Redis failed; the instances catch up from the database");
                    return;
                }
            }
        });
    }

    /// Announces a change already committed to the database. A failed announcement is logged,
    /// not returned: the change itself stands, and caches expire on their own.
    async fn announce(&self, change: Change) {
        if let Err(e) = self.redis.publish(&change).await {
            tracing::warn!(error = %e, "announcing a change on Redis failed");
        }
    }
}

impl<D: UserStore, R: Announcer + SessionStore + DenylistStore + ThrottleStore> UserStore
    for SharedStore<D, R>
{
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        self.db.create_user(user).await
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        self.db.user_by_name(username).await
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        self.db.user_by_id(id).await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.db.list_users().await
    }

    async fn set_disabled(&self, id: &str, disabled: bool) -> StoreResult<bool> {
        let changed = self.db.set_disabled(id, disabled).await?;
        self.announce(Change::User(id.into())).await;
        Ok(changed)
    }

    async fn set_password_hash(&self, id: &str, hash: &str) -> StoreResult<bool> {
        self.db.set_password_hash(id, hash).await
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        let deleted = self.db.delete_user(id).await?;
        self.announce(Change::User(id.into())).await;
        Ok(deleted)
    }

    async fn ping(&self) -> StoreResult<()> {
        self.db.ping().await
    }
}

impl<D: Send + Sync + 'static, R: Announcer + SessionStore + DenylistStore + ThrottleStore>
    SessionStore for SharedStore<D, R>
{
    async fn create_session(&self, hash: &TokenHash, session: &Session) -> StoreResult<()> {
        self.redis.create_session(hash, session).await
    }

    async fn session(&self, hash: &TokenHash) -> StoreResult<Option<Session>> {
        self.redis.session(hash).await
    }

    async fn touch_session(&self, hash: &TokenHash, last_seen_at: i64) -> StoreResult<()> {
        self.redis.touch_session(hash, last_seen_at).await
    }

    async fn set_session_data(&self, hash: &TokenHash, data: &Value) -> StoreResult<bool> {
        self.redis.set_session_data(hash, data).await
    }

    async fn delete_session(&self, hash: &TokenHash) -> StoreResult<bool> {
        self.redis.delete_session(hash).await
    }

    async fn sessions_of(&self, user_id: &str) -> StoreResult<Vec<(TokenHash, Session)>> {
        self.redis.sessions_of(user_id).await
    }

    async fn delete_sessions_of(
        &self,
        user_id: &str,
        except: Option<&TokenHash>,
    ) -> StoreResult<u64> {
        self.redis.delete_sessions_of(user_id, except).await
    }

    async fn purge_expired_sessions(&self, now: i64) -> StoreResult<u64> {
        self.redis.purge_expired_sessions(now).await
    }

    async fn count_sessions(&self) -> StoreResult<u64> {
        self.redis.count_sessions().await
    }
}

impl<D: KeyStore, R: Announcer + SessionStore + DenylistStore + ThrottleStore> KeyStore
    for SharedStore<D, R>
{
    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        self.db.signing_keys().await
    }

    async fn add_signing_key(&self, key: &StoredKey) -> StoreResult<()> {
        self.db.add_signing_key(key).await?;
        self.announce(Change::Keys).await;
        Ok(())
    }
}

impl<D: RefreshStore, R: Announcer + SessionStore + DenylistStore + ThrottleStore> RefreshStore
    for SharedStore<D, R>
{
    async fn create_refresh(&self, hash: &TokenHash, record: &RefreshRecord) -> StoreResult<()> {
        self.db.create_refresh(hash, record).await
    }

    async fn refresh_token(&self, hash: &TokenHash) -> StoreResult<Option<(RefreshRecord, bool)>> {
        self.db.refresh_token(hash).await
    }

    async fn rotate_refresh(
        &self,
        hash: &TokenHash,
        at: i64,
        successor: &TokenHash,
        record: &RefreshRecord,
    ) -> StoreResult<bool> {
        self.db.rotate_refresh(hash, at, successor, record).await
    }

    async fn record_access(&self, family: &str, jti: &str, issued_at: i64) -> StoreResult<bool> {
        self.db.record_access(family, jti, issued_at).await
    }

    async fn family_of_access(&self, jti: &str) -> StoreResult<Option<String>> {
        self.db.family_of_access(jti).await
    }

    async fn revoke_family(
        &self,
        family: &str,
        revocation: &FamilyRevocation<'_>,
    ) -> StoreResult<Vec<(String, i64)>> {
        let denied = self.db.revoke_family(family, revocation).await?;
        self.announce_denied(&denied).await;
        Ok(denied)
    }

    async fn revoke_families_of(
        &self,
        user_id: &str,
        revocation: &FamilyRevocation<'_>,
    ) -> StoreResult<(u64, Vec<(String, i64)>)> {
        let (n, denied) = self.db.revoke_families_of(user_id, revocation).await?;
        self.announce_denied(&denied).await;
        Ok((n, denied))
    }

    async fn live_families(
        &self,
        user_id: &str,
        client_id: &str,
        now: i64,
    ) -> StoreResult<Vec<(String, i64)>> {
        self.db.live_families(user_id, client_id, now).await
    }

    async fn purge_access(&self, before: i64) -> StoreResult<u64> {
        self.db.purge_access(before).await
    }

    fn back_since(&self) -> Option<i64> {
        self.db.back_since()
    }
}

/// The denylist is the database's: a revocation is complete once committed there, whatever
/// Redis does. Redis carries it to the other instances at once (pub/sub, best effort); their
/// catch-up from the database (`DenylistStore::denied_since`) brings what it could not.
impl<D: DenylistStore, R: Announcer + SessionStore + DenylistStore + ThrottleStore> DenylistStore
    for SharedStore<D, R>
{
    async fn deny_access(&self, jti: &str, exp: i64, now: i64) -> StoreResult<()> {
        self.db.deny_access(jti, exp, now).await?;
        self.announce_denied(&[(jti.to_owned(), exp)]).await;
        Ok(())
    }

    async fn denied_access(&self, now: i64) -> StoreResult<Vec<(String, i64)>> {
        let mut entries = self.db.denied_access(now).await?;
        // Entries an earlier version kept in Redis alone, while they last.
        match self.redis.denied_access(now).await {
            Ok(earlier) => entries.extend(earlier),
            Err(e) => tracing::debug!(error = %e, "reading Redis's denylist failed"),
        }
        Ok(entries)
    }

    async fn denied_since(&self, since: i64, now: i64) -> StoreResult<Vec<(String, i64)>> {
        self.db.denied_since(since, now).await
    }

    async fn purge_denied(&self, now: i64) -> StoreResult<u64> {
        if let Err(e) = self.redis.purge_denied(now).await {
            tracing::debug!(error = %e, "purging Redis's denylist failed");
        }
        self.db.purge_denied(now).await
    }
}

impl<D: Send + Sync + 'static, R: Announcer + SessionStore + DenylistStore + ThrottleStore>
    ThrottleStore for SharedStore<D, R>
{
    async fn throttle_reserve(
        &self,
        keys: &[(String, u32)],
        policy: &ThrottlePolicy,
        now: i64,
    ) -> StoreResult<Option<i64>> {
        self.redis.throttle_reserve(keys, policy, now).await
    }

    async fn throttle_release(
        &self,
        cleared: &[(String, u32)],
        released: &[(String, u32)],
    ) -> StoreResult<()> {
        self.redis.throttle_release(cleared, released).await
    }
}

impl<T: ClientStore, R: Announcer + SessionStore + DenylistStore + ThrottleStore> ClientStore
    for SharedStore<T, R>
{
    async fn create_client(&self, client: &Client) -> StoreResult<()> {
        self.db.create_client(client).await
    }

    async fn client(&self, id: &str) -> StoreResult<Option<Client>> {
        self.db.client(id).await
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        self.db.list_clients().await
    }

    async fn delete_client(&self, id: &str) -> StoreResult<bool> {
        let deleted = self.db.delete_client(id).await?;
        self.announce(Change::Client(id.into())).await;
        Ok(deleted)
    }

    async fn create_code(&self, hash: &TokenHash, record: &CodeRecord) -> StoreResult<()> {
        self.db.create_code(hash, record).await
    }

    async fn use_code(&self, hash: &TokenHash, at: i64) -> StoreResult<Option<(CodeRecord, bool)>> {
        self.db.use_code(hash, at).await
    }

    async fn code(&self, hash: &TokenHash) -> StoreResult<Option<(CodeRecord, bool)>> {
        self.db.code(hash).await
    }

    async fn redeem_code(
        &self,
        hash: &TokenHash,
        at: i64,
        refresh: &TokenHash,
        record: &RefreshRecord,
    ) -> StoreResult<bool> {
        self.db.redeem_code(hash, at, refresh, record).await
    }

    async fn purge_codes(&self, now: i64) -> StoreResult<u64> {
        self.db.purge_codes(now).await
    }

    async fn set_consent(&self, user_id: &str, consent: &Consent) -> StoreResult<()> {
        self.db.set_consent(user_id, consent).await
    }

    async fn consents_of(&self, user_id: &str) -> StoreResult<Vec<Consent>> {
        self.db.consents_of(user_id).await
    }

    async fn delete_consent(&self, user_id: &str, client_id: &str) -> StoreResult<bool> {
        self.db.delete_consent(user_id, client_id).await
    }
}
