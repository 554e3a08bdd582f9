//! Everything in a map behind a lock: for tests and a single process.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::Value;
use tessera_core::{
    Client, ClientStore, CodeRecord, Consent, DenylistStore, KeyStore, RefreshRecord, RefreshStore,
    Session, SessionStore, StoreError, StoreResult, StoredKey, TokenHash, User, UserStore,
};

#[derive(Debug, Default)]
struct Inner {
    users: HashMap<String, User>,
    user_by_name: HashMap<String, String>,
    sessions: HashMap<TokenHash, Session>,
    sessions_by_user: HashMap<String, HashSet<TokenHash>>,
    keys: Vec<StoredKey>,
    refresh: HashMap<TokenHash, RefreshRecord>,
    /// Family → (user, revoked).
    families: HashMap<String, (String, bool)>,
    denied: HashMap<String, i64>,
    clients: std::collections::BTreeMap<String, Client>,
    /// Code hash → (record, used at).
    codes: HashMap<TokenHash, (CodeRecord, Option<i64>)>,
    /// User → client → consent.
    consents: HashMap<String, std::collections::BTreeMap<String, Consent>>,
}

/// The in-process store. Clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<RwLock<Inner>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    // A poisoned lock only means a panic elsewhere while holding it; the maps stay consistent
    // because every mutation below is a single step, so carry on with the data.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn remove_session(&mut self, hash: &TokenHash) -> bool {
        match self.sessions.remove(hash) {
            Some(s) => {
                if let Some(set) = self.sessions_by_user.get_mut(&s.user_id) {
                    set.remove(hash);
                    if set.is_empty() {
                        self.sessions_by_user.remove(&s.user_id);
                    }
                }
                true
            }
            None => false,
        }
    }
}

impl UserStore for MemoryStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let mut g = self.write();
        if g.user_by_name.contains_key(&user.username) || g.users.contains_key(&user.id) {
            return Err(StoreError::Conflict);
        }
        g.user_by_name
            .insert(user.username.clone(), user.id.clone());
        g.users.insert(user.id.clone(), user.clone());
        Ok(())
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        let g = self.read();
        Ok(g.user_by_name
            .get(username)
            .and_then(|id| g.users.get(id))
            .cloned())
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        Ok(self.read().users.get(id).cloned())
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        let mut list: Vec<User> = self.read().users.values().cloned().collect();
        list.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(list)
    }

    async fn set_disabled(&self, id: &str, disabled: bool) -> StoreResult<bool> {
        Ok(match self.write().users.get_mut(id) {
            Some(u) => {
                u.disabled = disabled;
                true
            }
            None => false,
        })
    }

    async fn set_password_hash(&self, id: &str, hash: &str) -> StoreResult<bool> {
        Ok(match self.write().users.get_mut(id) {
            Some(u) => {
                u.password_hash = hash.to_owned();
                true
            }
            None => false,
        })
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        let mut g = self.write();
        match g.users.remove(id) {
            Some(u) => {
                g.user_by_name.remove(&u.username);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

impl SessionStore for MemoryStore {
    async fn create_session(&self, hash: &TokenHash, session: &Session) -> StoreResult<()> {
        let mut g = self.write();
        if g.sessions.contains_key(hash) {
            return Err(StoreError::Conflict);
        }
        g.sessions.insert(*hash, session.clone());
        g.sessions_by_user
            .entry(session.user_id.clone())
            .or_default()
            .insert(*hash);
        Ok(())
    }

    async fn session(&self, hash: &TokenHash) -> StoreResult<Option<Session>> {
        Ok(self.read().sessions.get(hash).cloned())
    }

    async fn touch_session(&self, hash: &TokenHash, last_seen_at: i64) -> StoreResult<()> {
        if let Some(s) = self.write().sessions.get_mut(hash) {
            s.last_seen_at = last_seen_at;
        }
        Ok(())
    }

    async fn set_session_data(&self, hash: &TokenHash, data: &Value) -> StoreResult<bool> {
        Ok(match self.write().sessions.get_mut(hash) {
            Some(s) => {
                s.data = data.clone();
                true
            }
            None => false,
        })
    }

    async fn delete_session(&self, hash: &TokenHash) -> StoreResult<bool> {
        Ok(self.write().remove_session(hash))
    }

    async fn sessions_of(&self, user_id: &str) -> StoreResult<Vec<(TokenHash, Session)>> {
        let g = self.read();
        Ok(g.sessions_by_user
            .get(user_id)
            .map(|set| {
                set.iter()
                    .filter_map(|h| g.sessions.get(h).map(|s| (*h, s.clone())))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn delete_sessions_of(
        &self,
        user_id: &str,
        except: Option<&TokenHash>,
    ) -> StoreResult<u64> {
        let mut g = self.write();
        let hashes: Vec<TokenHash> = g
            .sessions_by_user
            .get(user_id)
            .map(|set| set.iter().filter(|h| Some(*h) != except).copied().collect())
            .unwrap_or_default();
        let mut n = 0;
        for h in &hashes {
            if g.remove_session(h) {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn purge_expired_sessions(&self, now: i64) -> StoreResult<u64> {
        let mut g = self.write();
        let dead: Vec<TokenHash> = g
            .sessions
            .iter()
            .filter(|(_, s)| !s.alive_at(now))
            .map(|(h, _)| *h)
            .collect();
        let mut n = 0;
        for h in &dead {
            if g.remove_session(h) {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn count_sessions(&self) -> StoreResult<u64> {
        Ok(self.read().sessions.len() as u64)
    }
}

impl KeyStore for MemoryStore {
    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        Ok(self.read().keys.clone())
    }

    async fn add_signing_key(&self, key: &StoredKey) -> StoreResult<()> {
        let mut g = self.write();
        if g.keys.iter().any(|k| k.kid == key.kid) {
            return Err(StoreError::Conflict);
        }
        g.keys.push(key.clone());
        Ok(())
    }
}

impl RefreshStore for MemoryStore {
    async fn create_refresh(&self, hash: &TokenHash, r: &RefreshRecord) -> StoreResult<()> {
        let mut g = self.write();
        if g.refresh.contains_key(hash) {
            return Err(StoreError::Conflict);
        }
        g.families
            .entry(r.family.clone())
            .or_insert_with(|| (r.user_id.clone(), false));
        g.refresh.insert(*hash, r.clone());
        Ok(())
    }

    async fn refresh_token(&self, hash: &TokenHash) -> StoreResult<Option<(RefreshRecord, bool)>> {
        let g = self.read();
        Ok(g.refresh.get(hash).map(|r| {
            let revoked = g.families.get(&r.family).is_some_and(|f| f.1);
            (r.clone(), revoked)
        }))
    }

    async fn mark_refresh_used(&self, hash: &TokenHash, at: i64) -> StoreResult<bool> {
        Ok(match self.write().refresh.get_mut(hash) {
            Some(r) if r.used_at.is_none() => {
                r.used_at = Some(at);
                true
            }
            _ => false,
        })
    }

    async fn set_access_jti(&self, hash: &TokenHash, jti: &str) -> StoreResult<()> {
        if let Some(r) = self.write().refresh.get_mut(hash) {
            r.access_jti = Some(jti.to_owned());
        }
        Ok(())
    }

    async fn family_of_access(&self, jti: &str) -> StoreResult<Option<String>> {
        Ok(self
            .read()
            .refresh
            .values()
            .find(|r| r.access_jti.as_deref() == Some(jti))
            .map(|r| r.family.clone()))
    }

    async fn family_access(&self, family: &str, since: i64) -> StoreResult<Vec<(String, i64)>> {
        Ok(self
            .read()
            .refresh
            .values()
            .filter(|r| r.family == family && r.created_at > since)
            .filter_map(|r| Some((r.access_jti.clone()?, r.created_at)))
            .collect())
    }

    async fn revoke_family(&self, family: &str) -> StoreResult<()> {
        if let Some(f) = self.write().families.get_mut(family) {
            f.1 = true;
        }
        Ok(())
    }

    async fn revoke_families_of(&self, user_id: &str) -> StoreResult<u64> {
        let mut n = 0;
        for (user, revoked) in self.write().families.values_mut() {
            if user == user_id && !*revoked {
                *revoked = true;
                n += 1;
            }
        }
        Ok(n)
    }

    async fn live_families(
        &self,
        user_id: &str,
        client_id: &str,
        now: i64,
    ) -> StoreResult<Vec<(String, i64)>> {
        let g = self.read();
        // family -> (began, has a live unused token)
        let mut seen: HashMap<&str, (i64, bool)> = HashMap::new();
        for r in g.refresh.values() {
            if r.user_id != user_id || r.client_id != client_id {
                continue;
            }
            if g.families.get(&r.family).is_none_or(|f| f.1) {
                continue;
            }
            let e = seen.entry(&r.family).or_insert((r.created_at, false));
            e.0 = e.0.min(r.created_at);
            e.1 |= r.used_at.is_none() && r.expires_at > now && r.family_expires_at > now;
        }
        let mut out: Vec<(String, i64)> = seen
            .into_iter()
            .filter(|(_, (_, live))| *live)
            .map(|(f, (began, _))| (f.to_owned(), began))
            .collect();
        out.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        Ok(out)
    }
}

impl DenylistStore for MemoryStore {
    async fn deny_access(&self, jti: &str, exp: i64) -> StoreResult<()> {
        let mut g = self.write();
        let e = g.denied.entry(jti.to_owned()).or_insert(exp);
        *e = (*e).max(exp);
        Ok(())
    }

    async fn denied_access(&self, now: i64) -> StoreResult<Vec<(String, i64)>> {
        Ok(self
            .read()
            .denied
            .iter()
            .filter(|(_, e)| **e > now)
            .map(|(j, e)| (j.clone(), *e))
            .collect())
    }

    async fn purge_denied(&self, now: i64) -> StoreResult<u64> {
        let mut g = self.write();
        let before = g.denied.len();
        g.denied.retain(|_, e| *e > now);
        Ok((before - g.denied.len()) as u64)
    }
}

/// Each process counts login failures for itself (a single instance, or a cluster without
/// Redis).
impl tessera_core::ThrottleStore for MemoryStore {}

impl ClientStore for MemoryStore {
    async fn create_client(&self, client: &Client) -> StoreResult<()> {
        let mut g = self.write();
        if g.clients.contains_key(&client.id) {
            return Err(StoreError::Conflict);
        }
        g.clients.insert(client.id.clone(), client.clone());
        Ok(())
    }

    async fn client(&self, id: &str) -> StoreResult<Option<Client>> {
        Ok(self.read().clients.get(id).cloned())
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        Ok(self.read().clients.values().cloned().collect())
    }

    async fn delete_client(&self, id: &str) -> StoreResult<bool> {
        let mut g = self.write();
        for per_user in g.consents.values_mut() {
            per_user.remove(id);
        }
        Ok(g.clients.remove(id).is_some())
    }

    async fn create_code(&self, hash: &TokenHash, record: &CodeRecord) -> StoreResult<()> {
        let mut g = self.write();
        if g.codes.contains_key(hash) {
            return Err(StoreError::Conflict);
        }
        g.codes.insert(*hash, (record.clone(), None));
        Ok(())
    }

    async fn use_code(&self, hash: &TokenHash, at: i64) -> StoreResult<Option<(CodeRecord, bool)>> {
        let mut g = self.write();
        Ok(g.codes.get_mut(hash).map(|(record, used)| {
            let first = used.is_none();
            if first {
                *used = Some(at);
            }
            (record.clone(), first)
        }))
    }

    async fn purge_codes(&self, now: i64) -> StoreResult<u64> {
        let mut g = self.write();
        let before = g.codes.len();
        g.codes.retain(|_, (r, _)| r.expires_at > now);
        Ok((before - g.codes.len()) as u64)
    }

    async fn set_consent(&self, user_id: &str, consent: &Consent) -> StoreResult<()> {
        self.write()
            .consents
            .entry(user_id.to_owned())
            .or_default()
            .insert(consent.client_id.clone(), consent.clone());
        Ok(())
    }

    async fn consents_of(&self, user_id: &str) -> StoreResult<Vec<Consent>> {
        Ok(self
            .read()
            .consents
            .get(user_id)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn delete_consent(&self, user_id: &str, client_id: &str) -> StoreResult<bool> {
        Ok(self
            .write()
            .consents
            .get_mut(user_id)
            .is_some_and(|m| m.remove(client_id).is_some()))
    }
}
