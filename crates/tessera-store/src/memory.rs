//! Everything in a map behind a lock: for tests and a single process.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::Value;
use tessera_core::{
    Client, ClientStore, CodeRecord, Consent, DenylistStore, FamilyRevocation, KeyStore, Purged,
    RefreshRecord, RefreshStore, Session, SessionStore, StoreError, StoreResult, StoredKey,
    TokenHash, User, UserStore,
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
    /// Access token → (family, issued at).
    access: HashMap<String, (String, i64)>,
    /// Key → (expiry, added at).
    denied: HashMap<String, (i64, i64)>,
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
    /// Stores a refresh token and records its access token (`create_refresh`).
    fn insert_refresh(&mut self, hash: &TokenHash, r: &RefreshRecord) -> StoreResult<()> {
        if self.refresh.contains_key(hash) {
            return Err(StoreError::Conflict);
        }
        self.families
            .entry(r.family.clone())
            .or_insert_with(|| (r.user_id.clone(), false));
        self.refresh.insert(*hash, r.clone());
        if let Some(jti) = &r.access_jti {
            self.access
                .entry(jti.clone())
                .or_insert_with(|| (r.family.clone(), r.created_at));
        }
        Ok(())
    }

    fn family_live(&self, family: &str) -> bool {
        self.families.get(family).is_some_and(|f| !f.1)
    }

    /// Denylists the access tokens recorded in the families `of` picks, issued after
    /// `rev.since`, and `rev.also`: the entries, one per key with its latest expiry.
    fn deny_issued_in(
        &mut self,
        of: impl Fn(&str) -> bool,
        rev: &FamilyRevocation<'_>,
    ) -> Vec<(String, i64)> {
        let mut denied: Vec<(String, i64)> = self
            .access
            .iter()
            .filter(|(_, (f, issued))| of(f) && *issued > rev.since)
            .map(|(jti, (_, issued))| (jti.clone(), issued + rev.access_ttl))
            .chain(rev.also.iter().cloned())
            .collect();
        denied.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        denied.dedup_by(|a, b| a.0 == b.0);
        for (key, exp) in &denied {
            self.deny(key, *exp, rev.now);
        }
        denied
    }

    fn deny(&mut self, key: &str, exp: i64, now: i64) {
        let e = self.denied.entry(key.to_owned()).or_insert((exp, now));
        *e = (e.0.max(exp), now);
    }

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

    async fn purge_expired_sessions(&self, now: i64) -> StoreResult<Purged> {
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
        Ok(Purged::all(n))
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
        self.write().insert_refresh(hash, r)
    }

    async fn refresh_token(&self, hash: &TokenHash) -> StoreResult<Option<(RefreshRecord, bool)>> {
        let g = self.read();
        Ok(g.refresh.get(hash).map(|r| {
            let revoked = g.families.get(&r.family).is_some_and(|f| f.1);
            (r.clone(), revoked)
        }))
    }

    async fn rotate_refresh(
        &self,
        hash: &TokenHash,
        at: i64,
        successor: &TokenHash,
        record: &RefreshRecord,
    ) -> StoreResult<bool> {
        let mut g = self.write();
        if !g.family_live(&record.family) {
            return Ok(false);
        }
        match g.refresh.get_mut(hash) {
            Some(r) if r.used_at.is_none() => r.used_at = Some(at),
            _ => return Ok(false),
        }
        match g.insert_refresh(successor, record) {
            Ok(()) => {}
            Err(_) => {
                // Kept from before: only its access token is new.
                if let Some(jti) = &record.access_jti {
                    g.access
                        .entry(jti.clone())
                        .or_insert_with(|| (record.family.clone(), record.created_at));
                }
            }
        }
        Ok(true)
    }

    async fn record_access(&self, family: &str, jti: &str, issued_at: i64) -> StoreResult<bool> {
        let mut g = self.write();
        if !g.family_live(family) {
            return Ok(false);
        }
        g.access
            .entry(jti.to_owned())
            .or_insert_with(|| (family.to_owned(), issued_at));
        Ok(true)
    }

    async fn family_of_access(&self, jti: &str) -> StoreResult<Option<String>> {
        Ok(self.read().access.get(jti).map(|(f, _)| f.clone()))
    }

    async fn revoke_family(
        &self,
        family: &str,
        rev: &FamilyRevocation<'_>,
    ) -> StoreResult<Vec<(String, i64)>> {
        let mut g = self.write();
        if let Some(f) = g.families.get_mut(family) {
            f.1 = true;
        }
        Ok(g.deny_issued_in(|f| f == family, rev))
    }

    async fn revoke_families_of(
        &self,
        user_id: &str,
        rev: &FamilyRevocation<'_>,
    ) -> StoreResult<(u64, Vec<(String, i64)>)> {
        let mut g = self.write();
        let mut n = 0;
        let mut theirs = HashSet::new();
        for (family, (user, revoked)) in g.families.iter_mut() {
            if user == user_id {
                theirs.insert(family.clone());
                if !*revoked {
                    *revoked = true;
                    n += 1;
                }
            }
        }
        Ok((n, g.deny_issued_in(|f| theirs.contains(f), rev)))
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

    async fn purge_access(&self, before: i64) -> StoreResult<Purged> {
        let mut g = self.write();
        let n = g.access.len();
        g.access.retain(|_, (_, issued)| *issued >= before);
        Ok(Purged::all((n - g.access.len()) as u64))
    }

    async fn purge_families(&self, before: i64) -> StoreResult<Purged> {
        let mut g = self.write();
        let mut ended = HashSet::new();
        g.refresh.retain(|_, r| {
            let live = r.family_expires_at > before;
            if !live {
                ended.insert(r.family.clone());
            }
            live
        });
        for family in &ended {
            g.families.remove(family);
        }
        Ok(Purged::all(ended.len() as u64))
    }
}

impl DenylistStore for MemoryStore {
    async fn deny_access(&self, jti: &str, exp: i64, now: i64) -> StoreResult<()> {
        self.write().deny(jti, exp, now);
        Ok(())
    }

    async fn denied_access(&self, now: i64) -> StoreResult<tessera_core::Denied> {
        Ok(self
            .read()
            .denied
            .iter()
            .filter(|(_, (e, _))| *e > now)
            .map(|(j, (e, _))| (j, *e))
            .collect())
    }

    async fn denied_since(&self, since: i64, now: i64) -> StoreResult<tessera_core::Denied> {
        Ok(self
            .read()
            .denied
            .iter()
            .filter(|(_, (e, added))| *e > now && *added >= since)
            .map(|(j, (e, _))| (j, *e))
            .collect())
    }

    async fn purge_denied(&self, now: i64) -> StoreResult<Purged> {
        let mut g = self.write();
        let before = g.denied.len();
        g.denied.retain(|_, (e, _)| *e > now);
        Ok(Purged::all((before - g.denied.len()) as u64))
    }
}

/// Each process counts login failures for itself (a single instance, or a cluster without
/// Redis).
impl tessera_core::ThrottleStore for MemoryStore {}

tessera_core::stores_in_one!(MemoryStore);

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

    async fn code(&self, hash: &TokenHash) -> StoreResult<Option<(CodeRecord, bool)>> {
        Ok(self
            .read()
            .codes
            .get(hash)
            .map(|(record, used)| (record.clone(), used.is_some())))
    }

    async fn redeem_code(
        &self,
        hash: &TokenHash,
        at: i64,
        refresh: &TokenHash,
        record: &RefreshRecord,
    ) -> StoreResult<bool> {
        let mut g = self.write();
        if !g.codes.get(hash).is_some_and(|(_, used)| used.is_none()) {
            return Ok(false);
        }
        g.insert_refresh(refresh, record)?;
        if let Some((_, used)) = g.codes.get_mut(hash) {
            *used = Some(at);
        }
        Ok(true)
    }

    async fn purge_codes(&self, now: i64) -> StoreResult<Purged> {
        let mut g = self.write();
        let before = g.codes.len();
        g.codes.retain(|_, (r, _)| r.expires_at > now);
        Ok(Purged::all((before - g.codes.len()) as u64))
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

impl crate::guard::Probe for MemoryStore {
    async fn probe(&self) -> StoreResult<()> {
        Ok(())
    }
}
