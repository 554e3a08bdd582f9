//! The store traits the domain needs, one per kind of thing stored. Backends live in
//! tessera-store; every backend runs the same conformance suite.

use std::future::Future;

use serde_json::Value;

use crate::client::{Client, CodeRecord, Consent};
use crate::refresh::RefreshRecord;
use crate::session::Session;
use crate::throttle::ThrottlePolicy;
use crate::token::TokenHash;
use crate::user::User;

/// A signing key as the store keeps it.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredKey {
    /// Key id (the RFC 7638 thumbprint for asymmetric keys).
    pub kid: String,
    /// Algorithm name.
    pub alg: String,
    /// The private JWK, sealed under the master key with the kid as context; empty for a key
    /// held by a [`KeyVault`](crate::KeyVault).
    pub sealed: Vec<u8>,
    /// The public JWK of a key held by a [`KeyVault`](crate::KeyVault) (an HSM), which never
    /// lets its private part out; `None` for a sealed key.
    pub public_jwk: Option<String>,
    /// When it was made.
    pub created_at: i64,
    /// From when it signs (publication is immediate).
    pub activates_at: i64,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("held", &self.public_jwk.is_some())
            .field("activates_at", &self.activates_at)
            .finish_non_exhaustive()
    }
}

/// A store failure the domain cannot fix: the caller answers "unavailable".
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The key is taken (a username, a token hash).
    #[error("already exists")]
    Conflict,
    /// The backend failed or is unreachable. The text is for logs, never for clients.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// What one call of a purge did. A call removes at most a batch (a store's own size, such as
/// 500 rows), so that a write takes the store's lock, and the store's write timeout bounds it,
/// for a batch and not for a backlog (a mass expiry after an outage or a bulk load; an upgrade's
/// first purge of every family ever ended): the caller calls again while there is `more`, each
/// call a write of its own. A backlog cut short by a failure keeps the batches done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// What this call removed.
    pub removed: u64,
    /// Whether it stopped at its batch, with more perhaps left to remove.
    pub more: bool,
}

impl Purged {
    /// `removed`, and nothing left (a store that removes everything in one call).
    pub fn all(removed: u64) -> Purged {
        Purged {
            removed,
            more: false,
        }
    }

    /// `removed` of a batch of `batch`: more may be left when the batch was full.
    pub fn of(removed: u64, taken: u64, batch: u64) -> Purged {
        Purged {
            removed,
            more: taken >= batch,
        }
    }
}

/// Where users live.
pub trait UserStore: Send + Sync + 'static {
    /// Adds a user; [`StoreError::Conflict`] if the username is taken.
    fn create_user(&self, user: &User) -> impl Future<Output = StoreResult<()>> + Send;
    /// The user with this (normalized) username.
    fn user_by_name(
        &self,
        username: &str,
    ) -> impl Future<Output = StoreResult<Option<User>>> + Send;
    /// The user with this id.
    fn user_by_id(&self, id: &str) -> impl Future<Output = StoreResult<Option<User>>> + Send;
    /// Every user, by username.
    fn list_users(&self) -> impl Future<Output = StoreResult<Vec<User>>> + Send;
    /// Sets `disabled`; false if there is no such user.
    fn set_disabled(
        &self,
        id: &str,
        disabled: bool,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Replaces the password hash (a rehash after a parameter change).
    fn set_password_hash(
        &self,
        id: &str,
        hash: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Removes a user; false if there was none.
    fn delete_user(&self, id: &str) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Whether the store answers (for readiness).
    fn ping(&self) -> impl Future<Output = StoreResult<()>> + Send;
}

/// Where sessions live, keyed by the hash of their token, indexed by user.
pub trait SessionStore: Send + Sync + 'static {
    /// Adds a session; [`StoreError::Conflict`] if the hash exists (never overwrites).
    fn create_session(
        &self,
        hash: &TokenHash,
        session: &Session,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// The session with this token hash.
    fn session(
        &self,
        hash: &TokenHash,
    ) -> impl Future<Output = StoreResult<Option<Session>>> + Send;
    /// Records activity.
    fn touch_session(
        &self,
        hash: &TokenHash,
        last_seen_at: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Replaces the application data; false if the session is gone.
    fn set_session_data(
        &self,
        hash: &TokenHash,
        data: &Value,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Ends one session; false if it was not there.
    fn delete_session(&self, hash: &TokenHash) -> impl Future<Output = StoreResult<bool>> + Send;
    /// A user's sessions with their hashes.
    fn sessions_of(
        &self,
        user_id: &str,
    ) -> impl Future<Output = StoreResult<Vec<(TokenHash, Session)>>> + Send;
    /// Ends all of a user's sessions but `except`; how many ended.
    fn delete_sessions_of(
        &self,
        user_id: &str,
        except: Option<&TokenHash>,
    ) -> impl Future<Output = StoreResult<u64>> + Send;
    /// Removes sessions no longer alive at `now` (idle or absolute expiry), at most a batch
    /// ([`Purged`]); for stores without native expiry.
    fn purge_expired_sessions(&self, now: i64) -> impl Future<Output = StoreResult<Purged>> + Send;
    /// How many sessions exist (for the active-sessions gauge).
    fn count_sessions(&self) -> impl Future<Output = StoreResult<u64>> + Send;
}

/// Where signing keys live (private parts sealed by the caller).
pub trait KeyStore: Send + Sync + 'static {
    /// Every stored signing key.
    fn signing_keys(&self) -> impl Future<Output = StoreResult<Vec<StoredKey>>> + Send;
    /// Adds a key; [`StoreError::Conflict`] if its kid exists.
    fn add_signing_key(&self, key: &StoredKey) -> impl Future<Output = StoreResult<()>> + Send;
}

/// Where refresh tokens, their families and the access tokens issued in them live, keyed by
/// the hash of the token. Every change of a token's state is one atomic step: a call that fails
/// leaves everything as it was.
pub trait RefreshStore: Send + Sync + 'static {
    /// Adds a token (its family is created with the first) and records `record.access_jti`,
    /// if any, as issued in the family at `record.created_at`, in one step;
    /// [`StoreError::Conflict`] if the hash exists.
    fn create_refresh(
        &self,
        hash: &TokenHash,
        record: &RefreshRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// The token and whether its family is revoked.
    fn refresh_token(
        &self,
        hash: &TokenHash,
    ) -> impl Future<Output = StoreResult<Option<(RefreshRecord, bool)>>> + Send;
    /// Rotates a token in one step: if it is unused and its family live, marks it used at
    /// `at`, stores `successor` (see [`RefreshStore::create_refresh`]; a successor already
    /// there is kept) and records its access token. True if this call did it (the one winner
    /// among concurrent uses); false, changing nothing, if the token was used or its family
    /// revoked.
    fn rotate_refresh(
        &self,
        hash: &TokenHash,
        at: i64,
        successor: &TokenHash,
        record: &RefreshRecord,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Records access token `jti` as issued in `family` at `issued_at` (an honest retry's),
    /// unless the family is revoked: then false and nothing recorded. A revocation of the
    /// family, before or after, covers every token recorded.
    fn record_access(
        &self,
        family: &str,
        jti: &str,
        issued_at: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// The family access token `jti` was issued in.
    fn family_of_access(
        &self,
        jti: &str,
    ) -> impl Future<Output = StoreResult<Option<String>>> + Send;
    /// Revokes a family and denylists, in the same step, every access token recorded in it
    /// that may still be alive and the other entries of `revocation`. Returns every entry
    /// denylisted (`(key, exp)`): what to refuse at once.
    fn revoke_family(
        &self,
        family: &str,
        revocation: &FamilyRevocation<'_>,
    ) -> impl Future<Output = StoreResult<Vec<(String, i64)>>> + Send;
    /// Revokes every family of a user (disabled or deleted) and denylists, in the same step,
    /// the access tokens recorded in them that may still be alive and the other entries of
    /// `revocation`: how many families were live, and every entry denylisted.
    fn revoke_families_of(
        &self,
        user_id: &str,
        revocation: &FamilyRevocation<'_>,
    ) -> impl Future<Output = StoreResult<(u64, Vec<(String, i64)>)>> + Send;
    /// The live families of `user_id` with `client_id` at `now` (not revoked, with an unused
    /// token neither idle-expired nor past the family's end), each with when it began (its first
    /// token's `created_at`), oldest first (ties by family id).
    fn live_families(
        &self,
        user_id: &str,
        client_id: &str,
        now: i64,
    ) -> impl Future<Output = StoreResult<Vec<(String, i64)>>> + Send;
    /// Forgets the access tokens recorded as issued before `before` (expired), at most a batch
    /// ([`Purged`]).
    fn purge_access(&self, before: i64) -> impl Future<Output = StoreResult<Purged>> + Send;
    /// Removes the families whose absolute end (`family_expires_at`) is at or before `before`,
    /// with every token of them, used or not: none can be honoured again. At most a batch of
    /// families ([`Purged`]: how many were removed; one that still has a token to honour gets
    /// that token's end instead, and counts towards the batch, not the removed).
    fn purge_families(&self, before: i64) -> impl Future<Output = StoreResult<Purged>> + Send;
    /// When (seconds) this process last saw the store come back after it could not be reached,
    /// if it ever did. A rotation whose answer was lost with the store (its commit reached the
    /// database, the acknowledgement did not) is retried once the store is back: the grace
    /// window of an honest retry runs from then too.
    fn back_since(&self) -> Option<i64> {
        None
    }
}

/// What [`RefreshStore::revoke_family`] denylists with the family.
#[derive(Debug, Clone, Copy)]
pub struct FamilyRevocation<'a> {
    /// The family's access tokens issued after this may still be alive.
    pub since: i64,
    /// Their lifetime: each is refused until its issue plus this.
    pub access_ttl: i64,
    /// More entries to refuse in the same step (`(key, exp)`).
    pub also: &'a [(String, i64)],
    /// When (the denylist's `added_at`).
    pub now: i64,
}

/// Denylist entries as a store reads them, `(key, exp)` with keys in
/// [`tessera_jose::Revocation::key`]'s form: every key end to end in one string, and each entry's
/// end in it beside its `exp`. SQL sends a page of them as one aggregated string
/// ([`Denied::from_list`]), read once into this form: a reload of 10^5 entries is a few
/// allocations a page, not one per entry (each of which the allocator would keep after it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Denied {
    keys: String,
    /// Each entry: where its key ends in `keys`, and its `exp`.
    entries: Vec<(usize, i64)>,
}

/// A decimal number up to the next space, and what follows that space; `None` when malformed.
fn number<T: std::str::FromStr>(list: &str) -> Option<(T, &str)> {
    let space = list.bytes().position(|b| b == b' ')?;
    Some((list[..space].parse().ok()?, &list[space + 1..]))
}

/// The first `chars` characters of `list`, and the rest; `None` if it is shorter.
fn take_chars(list: &str, chars: usize) -> Option<(&str, &str)> {
    let end = match list.as_bytes().get(..chars) {
        // All ASCII: as many bytes (the keys tessera makes).
        Some(head) if head.is_ascii() => chars,
        _ => match list.char_indices().nth(chars) {
            Some((i, _)) => i,
            None if list.chars().count() == chars => list.len(),
            None => return None,
        },
    };
    Some(list.split_at(end))
}

impl Denied {
    /// Reads a page in the form SQL aggregates it to: `EXP LEN KEY` for each entry, end to
    /// end, `EXP` and `LEN` in decimal, `LEN` the key's length in characters (whatever the
    /// database's encoding), so that a key may hold any character. `None` if it is malformed.
    pub fn from_list(list: &str) -> Option<Denied> {
        // At least two spaces an entry.
        let most = list.bytes().filter(|&b| b == b' ').count() / 2;
        let mut d = Denied {
            keys: String::with_capacity(list.len()),
            entries: Vec::with_capacity(most),
        };
        let mut rest = list;
        while !rest.is_empty() {
            let (exp, r) = number(rest)?;
            let (chars, r) = number(r)?;
            let (key, r) = take_chars(r, chars)?;
            d.push(key, exp);
            rest = r;
        }
        Some(d)
    }

    /// Adds `key` until `exp`.
    pub fn push(&mut self, key: &str, exp: i64) {
        self.keys.push_str(key);
        self.entries.push((self.keys.len(), exp));
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bytes of all the keys.
    pub fn key_bytes(&self) -> usize {
        self.keys.len()
    }

    /// Each `(key, exp)`, in the order added.
    pub fn iter(&self) -> DeniedIter<'_> {
        DeniedIter {
            keys: &self.keys,
            start: 0,
            entries: self.entries.iter(),
        }
    }

    /// The entries as owned pairs, in the order added.
    pub fn to_vec(&self) -> Vec<(String, i64)> {
        self.iter().map(|(k, e)| (k.to_owned(), e)).collect()
    }
}

/// The entries of a [`Denied`] list, in order.
#[derive(Debug, Clone)]
pub struct DeniedIter<'a> {
    keys: &'a str,
    start: usize,
    entries: std::slice::Iter<'a, (usize, i64)>,
}

impl<'a> Iterator for DeniedIter<'a> {
    type Item = (&'a str, i64);

    fn next(&mut self) -> Option<(&'a str, i64)> {
        let &(end, exp) = self.entries.next()?;
        // Ends ascend on character boundaries (checked when the list was made).
        let key = self.keys.get(self.start..end).unwrap_or_default();
        self.start = end;
        Some((key, exp))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl ExactSizeIterator for DeniedIter<'_> {}

impl<K: AsRef<str>> Extend<(K, i64)> for Denied {
    fn extend<I: IntoIterator<Item = (K, i64)>>(&mut self, entries: I) {
        for (key, exp) in entries {
            self.push(key.as_ref(), exp);
        }
    }
}

/// Collects every page into one list.
impl DeniedSink for Denied {
    fn expect(&mut self, _entries: usize) {}

    fn page(&mut self, page: &Denied) {
        let base = self.keys.len();
        self.keys.push_str(&page.keys);
        self.entries
            .extend(page.entries.iter().map(|&(end, exp)| (base + end, exp)));
    }
}

impl<K: AsRef<str>> FromIterator<(K, i64)> for Denied {
    fn from_iter<I: IntoIterator<Item = (K, i64)>>(entries: I) -> Denied {
        let mut d = Denied::default();
        d.extend(entries);
        d
    }
}

/// Where revoked access-token ids are kept until the tokens would have expired anyway. Each
/// entry is stamped with when it was added, so that instances catch up with each other's
/// revocations from the store alone ([`DenylistStore::denied_since`]).
pub trait DenylistStore: Send + Sync + 'static {
    /// Refuses access token `jti` (a [`tessera_jose::Revocation`] key) until `exp`, added at
    /// `now`.
    fn deny_access(
        &self,
        jti: &str,
        exp: i64,
        now: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Every entry still in force at `now`.
    fn denied_access(&self, now: i64) -> impl Future<Output = StoreResult<Denied>> + Send;
    /// The entries added at or after `since` and still in force at `now`. A store that keeps
    /// no times answers every entry in force.
    fn denied_since(
        &self,
        since: i64,
        now: i64,
    ) -> impl Future<Output = StoreResult<Denied>> + Send {
        let _ = since;
        self.denied_access(now)
    }
    /// Every entry in force at `now`, handed to `sink` a page at a time (after
    /// [`DeniedSink::expect`] says about how many): a reload of 10^5 entries holds a page
    /// beside the denylist, never a second copy of all of it (whose large buffers, once freed,
    /// the allocator would keep). A store that cannot page hands everything as one page.
    fn each_denied(
        &self,
        now: i64,
        sink: &mut dyn DeniedSink,
    ) -> impl Future<Output = StoreResult<()>> + Send {
        async move {
            let all = self.denied_access(now).await?;
            sink.expect(all.len());
            sink.page(&all);
            Ok(())
        }
    }
    /// Forgets entries whose tokens have expired by `now`, at most a batch ([`Purged`]).
    fn purge_denied(&self, now: i64) -> impl Future<Output = StoreResult<Purged>> + Send;
}

/// Where [`DenylistStore::each_denied`] hands what it reads.
pub trait DeniedSink: Send {
    /// About how many entries are coming (a hint, before the first page; 0 when not known).
    /// Not their keys' bytes: a store counts entries from its expiry index, but would read every
    /// key to add up their lengths (a sixth of a start with 10^5 revocations in force).
    fn expect(&mut self, entries: usize);
    /// A page of entries.
    fn page(&mut self, page: &Denied);
}

/// Login-throttle counts shared by the instances of a cluster, under keys like `a:NAME` (an
/// account), `d:NONCE` (a known device) and `ip:ADDR` (a client address), with the rules of
/// [`crate::Throttle`]. A store that does not share them keeps the defaults, which answer
/// `None`: each instance then counts for itself.
pub trait ThrottleStore: Send + Sync + 'static {
    /// Reserves one attempt under every key at once (each with its free attempts), or none when
    /// any is locked: `Some(0)` reserved, `Some(seconds)` locked for that long.
    fn throttle_reserve(
        &self,
        keys: &[(String, u32)],
        policy: &ThrottlePolicy,
        now: i64,
    ) -> impl Future<Output = StoreResult<Option<i64>>> + Send {
        let _ = (keys, policy, now);
        async { Ok(None) }
    }

    /// A reserved attempt succeeded: forgets the `cleared` keys and gives one attempt back to
    /// the `released` ones (unlocking those left under their free attempts).
    fn throttle_release(
        &self,
        cleared: &[(String, u32)],
        released: &[(String, u32)],
    ) -> impl Future<Output = StoreResult<()>> + Send {
        let _ = (cleared, released);
        async { Ok(()) }
    }
}

/// Where OAuth clients, their authorization codes and people's consents live.
pub trait ClientStore: Send + Sync + 'static {
    /// Registers a client; [`StoreError::Conflict`] if its id is taken.
    fn create_client(&self, client: &Client) -> impl Future<Output = StoreResult<()>> + Send;
    /// The client with this id.
    fn client(&self, id: &str) -> impl Future<Output = StoreResult<Option<Client>>> + Send;
    /// Every client, by id.
    fn list_clients(&self) -> impl Future<Output = StoreResult<Vec<Client>>> + Send;
    /// Removes a client and the consents given to it; false if there was none.
    fn delete_client(&self, id: &str) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Stores an authorization code; [`StoreError::Conflict`] if the hash exists.
    fn create_code(
        &self,
        hash: &TokenHash,
        record: &CodeRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Marks the code used at `at`: the record, and whether this call was its first use (the
    /// one winner among concurrent uses); `None` for an unknown code.
    fn use_code(
        &self,
        hash: &TokenHash,
        at: i64,
    ) -> impl Future<Output = StoreResult<Option<(CodeRecord, bool)>>> + Send;
    /// The code and whether it was used.
    fn code(
        &self,
        hash: &TokenHash,
    ) -> impl Future<Output = StoreResult<Option<(CodeRecord, bool)>>> + Send;
    /// Redeems a code in one step: if it is unused, marks it used at `at` and stores the first
    /// refresh token of its grant as [`RefreshStore::create_refresh`] does. True if this call
    /// did it; false, changing nothing, if the code was used (or is unknown).
    fn redeem_code(
        &self,
        hash: &TokenHash,
        at: i64,
        refresh: &TokenHash,
        record: &RefreshRecord,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Forgets codes that expired before `now`, at most a batch ([`Purged`]).
    fn purge_codes(&self, now: i64) -> impl Future<Output = StoreResult<Purged>> + Send;
    /// Records (or replaces) `user_id`'s consent to `consent.client_id`.
    fn set_consent(
        &self,
        user_id: &str,
        consent: &Consent,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// A user's consents, by client id.
    fn consents_of(&self, user_id: &str) -> impl Future<Output = StoreResult<Vec<Consent>>> + Send;
    /// Withdraws a consent; false if there was none.
    fn delete_consent(
        &self,
        user_id: &str,
        client_id: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
}

/// Everything the service keeps, by concern: each is a store of its own, so that a cache or a
/// cluster pairing wraps only the concerns it changes (a cache the users, sessions and
/// clients; Redis the sessions and the throttle) and passes the others through untouched. A
/// backend that keeps everything in one place is every concern at once
/// ([`stores_in_one!`](crate::stores_in_one)).
pub trait Stores: Clone + Send + Sync + 'static {
    /// Users.
    type Users: UserStore;
    /// Sessions.
    type Sessions: SessionStore;
    /// Signing keys.
    type Keys: KeyStore;
    /// Refresh tokens, their families and the access tokens issued in them.
    type Refresh: RefreshStore;
    /// The access-token denylist.
    type Denylist: DenylistStore;
    /// Login-throttle counts.
    type Throttle: ThrottleStore;
    /// OAuth clients, codes and consents.
    type Clients: ClientStore;

    /// Users.
    fn users(&self) -> &Self::Users;
    /// Sessions.
    fn sessions(&self) -> &Self::Sessions;
    /// Signing keys.
    fn keys(&self) -> &Self::Keys;
    /// Refresh tokens.
    fn refresh(&self) -> &Self::Refresh;
    /// The denylist.
    fn denylist(&self) -> &Self::Denylist;
    /// The throttle.
    fn throttle(&self) -> &Self::Throttle;
    /// Clients, codes and consents.
    fn clients(&self) -> &Self::Clients;

    /// Tells the other instances of a cluster of changes already committed, so that they
    /// drop what they cached ([`Change`]). Best effort: the changes stand without it, and
    /// the instances catch up from the store (a generation they poll, the denylist they
    /// read). A store no other instance shares has no one to tell.
    fn announce(&self, changes: Vec<Change>) -> impl Future<Output = ()> + Send {
        let _ = changes;
        async {}
    }
}

/// Implements [`Stores`] for a backend that keeps every concern itself (each accessor answers
/// the backend): `stores_in_one!(MemoryStore)`, or with generics
/// `stores_in_one!(impl<S> Guarded<S> where S: AllConcerns)`.
#[macro_export]
macro_rules! stores_in_one {
    (impl<$($g:ident),*> $ty:ty where $($bound:tt)*) => {
        impl<$($g),*> $crate::Stores for $ty where $($bound)* {
            $crate::stores_in_one!(@body);
        }
    };
    ($ty:ty) => {
        impl $crate::Stores for $ty {
            $crate::stores_in_one!(@body);
        }
    };
    (@body) => {
        type Users = Self;
        type Sessions = Self;
        type Keys = Self;
        type Refresh = Self;
        type Denylist = Self;
        type Throttle = Self;
        type Clients = Self;
        fn users(&self) -> &Self { self }
        fn sessions(&self) -> &Self { self }
        fn keys(&self) -> &Self { self }
        fn refresh(&self) -> &Self { self }
        fn denylist(&self) -> &Self { self }
        fn throttle(&self) -> &Self { self }
        fn clients(&self) -> &Self { self }
    };
}

/// Every concern in one type: the bound of a backend that can be [`stores_in_one!`].
pub trait AllConcerns:
    UserStore
    + SessionStore
    + KeyStore
    + RefreshStore
    + DenylistStore
    + ThrottleStore
    + ClientStore
    + Clone
{
}

impl<T> AllConcerns for T where
    T: UserStore
        + SessionStore
        + KeyStore
        + RefreshStore
        + DenylistStore
        + ThrottleStore
        + ClientStore
        + Clone
{
}

/// A change made by one instance that other instances' caches must learn of: the messages of
/// the invalidation feed (Redis pub/sub, or a generation number the instances poll).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// This session ended.
    Session(TokenHash),
    /// Sessions of this user ended (all, or all but one).
    SessionsOf(String),
    /// This user was disabled, enabled or deleted.
    User(String),
    /// This OAuth client was removed.
    Client(String),
    /// Access token `jti` is refused until `exp`.
    Denied {
        /// The token's id.
        jti: String,
        /// Its expiry (seconds since the epoch).
        exp: i64,
    },
    /// Signing keys were added.
    Keys,
    /// Anything may have changed (a generation moved, the feed reconnected): drop every cache
    /// and reload what is held in memory.
    Everything,
    /// The feed is lost: changes may go unseen until the next [`Change::Everything`], so
    /// caches must not be trusted meanwhile.
    FeedLost,
}

#[cfg(test)]
mod tests {
    use super::{Denied, DeniedSink};

    #[test]
    fn denied_lists_round_trip_any_key() {
        let entries = [("jti_1", 100), ("sid:a b\nc", -5), ("é€", 7), ("", 0)];
        let d: Denied = entries.iter().copied().collect();
        assert_eq!(d.len(), 4);
        assert_eq!(d.iter().len(), 4);
        assert_eq!(
            d.key_bytes(),
            entries.iter().map(|(k, _)| k.len()).sum::<usize>()
        );
        assert_eq!(d.iter().collect::<Vec<_>>(), entries);
        assert!(Denied::default().iter().next().is_none());
        let mut both = d.clone();
        DeniedSink::page(&mut both, &d);
        assert_eq!(both.iter().skip(4).collect::<Vec<_>>(), entries);
    }

    #[test]
    fn denied_lists_read_any_key() {
        let d = Denied::from_list("100 5 jti_1-5 9 sid:a b\nc7 2 é€0 0 ").unwrap();
        assert_eq!(
            d.iter().collect::<Vec<_>>(),
            [("jti_1", 100), ("sid:a b\nc", -5), ("é€", 7), ("", 0)]
        );
        assert_eq!(d.key_bytes(), 19);
        assert_eq!(Denied::from_list(""), Some(Denied::default()));
        // A length in characters, past ASCII at any point of the key.
        assert_eq!(
            Denied::from_list("1 3 aé€2 1 b").unwrap().to_vec(),
            [("aé€".to_owned(), 1), ("b".to_owned(), 2)]
        );
        for bad in [
            "100", "100 3", "100 3 ab", "x 1 a", "1 y a", "1 -1 a", "1 1", "1 2 é", " 1 a", "1  a",
        ] {
            assert_eq!(Denied::from_list(bad), None, "{bad:?}");
        }
    }
}
