//! Redis: sessions with native expiry, the access-token denylist with TTL = remaining lifetime,
//! and the pub/sub channel that carries [`Change`]s between the instances of a cluster.
//!
//! Keys, under a configurable prefix `P`:
//! - `P:s:HASH` a session, expiring when the session would end: a hash of `fixed` (the fields
//!   that never change, one JSON array), `last_seen_at` and `data` ([`SessionForm::Compact`]), or
//!   of each field alone, the form versions before commit f8b4cdf read and write
//!   ([`SessionForm::Fields`]); both are read, whichever is written;
//! - `P:u:USER` the set of a user's session hashes, expiring with the last of them;
//! - `P:sx` every session hash scored by when it ends (purging, counting);
//! - `P:d:JTI` a denylisted access token, expiring a leeway after the token;
//! - `P:dx` every denylisted `jti` scored by its expiry (how an instance loads its copy);
//! - `P:changes` the pub/sub channel.
//!
//! Multi-key updates run as Lua scripts, so each is atomic.

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use serde_json::Value;
use tessera_core::{
    Change, DenylistStore, Purged, Session, SessionStore, StoreError, StoreResult, ThrottlePolicy,
    ThrottleStore, TokenHash,
};
use tessera_jose::Clock;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

/// How long a command may take before the store answers "unavailable": a Redis that does not
/// answer makes requests fail in this time, never hang.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(1500);
/// Sessions purged per script call, so that no call blocks Redis for long.
const PURGE_BATCH: u64 = 500;
/// Session reads sent in one pipeline at most (see [`SessionReads`]).
const READ_BATCH: usize = 256;

/// The Redis store. Clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    client: redis::Client,
    prefix: Arc<str>,
    clock: Arc<dyn Clock>,
    leeway: i64,
    form: SessionForm,
    reads: SessionReads,
    /// A compact read that met a session of each field alone reads it again here.
    fallback: SessionReads,
}

/// How new sessions are laid out in Redis. Either is read whatever this is, so instances of
/// either setting share sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionForm {
    /// `fixed`, `last_seen_at`, `data`: a read parses three values, and a session holds three
    /// fields.
    #[default]
    Compact,
    /// Each field alone, the only form versions before commit f8b4cdf read: for a rolling
    /// upgrade from them.
    Fields,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never printed.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Unavailable(format!("redis: malformed {what}"))
}

impl RedisStore {
    /// A store on `url` (`redis://[:password@]host[:port][/db]`) with keys under `prefix`.
    /// Lifetimes are turned into TTLs with `clock`; denylist entries outlive their token by
    /// `leeway` seconds (the verifier's clock-skew allowance). Connects lazily and reconnects by
    /// itself: a Redis that is down makes calls fail with [`StoreError::Unavailable`] until it is
    /// back.
    pub fn open(
        url: &str,
        prefix: &str,
        clock: Arc<dyn Clock>,
        leeway: i64,
    ) -> StoreResult<RedisStore> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unavailable)?;
        Ok(RedisStore {
            conn,
            client,
            prefix: prefix.into(),
            clock,
            leeway,
            form: SessionForm::Compact,
            reads: SessionReads::new(COMPACT_READ),
            fallback: SessionReads::new(FIELDS_READ),
        })
    }

    /// The store, writing new sessions in `form` (reads find either).
    #[must_use]
    pub fn writing(self, form: SessionForm) -> RedisStore {
        let reads = match form {
            SessionForm::Compact => COMPACT_READ,
            SessionForm::Fields => FIELDS_READ,
        };
        RedisStore {
            form,
            reads: SessionReads::new(reads),
            ..self
        }
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}:{kind}:{id}", self.prefix)
    }

    fn sessions_index(&self) -> String {
        format!("{}:sx", self.prefix)
    }

    fn denylist_index(&self) -> String {
        format!("{}:dx", self.prefix)
    }

    /// The pub/sub channel of this prefix.
    pub fn channel(&self) -> String {
        format!("{}:changes", self.prefix)
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> StoreResult<()> {
        let mut c = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Tells every instance (this one too) of `change`.
    pub async fn publish(&self, change: &Change) -> StoreResult<()> {
        let mut c = self.conn.clone();
        c.publish::<_, _, i64>(self.channel(), encode(change))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Removes every key under this prefix (tests, and `tessera` never calls it on its own).
    pub async fn remove_all(&self) -> StoreResult<u64> {
        let mut c = self.conn.clone();
        let pattern = format!("{}:*", self.prefix);
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            if !keys.is_empty() {
                removed += c.del::<_, u64>(&keys).await.map_err(unavailable)?;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// Follows the change channel until aborted, publishing each change on `bus`. On every
    /// (re)connection it publishes [`Change::Everything`] (messages may have been missed
    /// before); when the connection is lost, [`Change::FeedLost`], then it retries with backoff.
    pub fn follow_changes(&self, bus: crate::ChangeBus) -> tokio::task::JoinHandle<()> {
        let client = self.client.clone();
        let channel = self.channel();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match subscribe(&client, &channel).await {
                    Ok((mut sink, mut stream)) => {
                        backoff = Duration::from_millis(100);
                        bus.publish(Change::Everything);
                        // A ping every second finds a connection that died silently.
                        let mut tick = tokio::time::interval(Duration::from_secs(1));
                        loop {
                            tokio::select! {
                                msg = stream.next() => {
                                    let Some(msg) = msg else { break };
                                    let change = match msg.get_payload::<String>() {
                                        Ok(line) => decode(&line),
                                        Err(_) => Change::Everything,
                                    };
                                    bus.publish(change);
                                }
                                _ = tick.tick() => {
                                    // Subscribed, Redis answers a PING with an array, not +PONG.
                                    let ping = tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await;
                                    if !matches!(ping, Ok(Ok(_))) {
                                        break;
                                    }
                                }
                            }
                        }
                        tracing::warn!(
                            "lost the Redis change feed; caches are bypassed until it is back"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot follow the Redis change feed; retrying");
                    }
                }
                bus.publish(Change::FeedLost);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        })
    }
}

/// A change's wire form on the pub/sub channel: one line, a word and its arguments.
fn encode(change: &Change) -> String {
    match change {
        Change::Session(h) => format!("session {}", h.to_hex()),
        Change::SessionsOf(u) => format!("sessions-of {u}"),
        Change::User(u) => format!("user {u}"),
        Change::Client(c) => format!("client {c}"),
        Change::Denied { jti, exp } => format!("denied {exp} {jti}"),
        Change::Keys => "keys".into(),
        Change::Everything => "everything".into(),
        Change::FeedLost => "feed-lost".into(),
    }
}

/// Parses [`encode`]'s form; anything unreadable is taken as [`Change::Everything`], the safe
/// reading.
fn decode(line: &str) -> Change {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let parsed = match word {
        "session" => TokenHash::from_hex(rest).map(Change::Session),
        "sessions-of" if !rest.is_empty() => Some(Change::SessionsOf(rest.into())),
        "user" if !rest.is_empty() => Some(Change::User(rest.into())),
        "client" if !rest.is_empty() => Some(Change::Client(rest.into())),
        "denied" => rest.split_once(' ').and_then(|(exp, jti)| {
            Some(Change::Denied {
                jti: jti.into(),
                exp: exp.parse().ok()?,
            })
        }),
        "keys" => Some(Change::Keys),
        _ => None,
    };
    parsed.unwrap_or(Change::Everything)
}

#[cfg(test)]
mod wire_tests {
    use super::*;

    #[test]
    fn changes_round_trip_and_garbage_means_everything() {
        let h = tessera_core::Token::generate(tessera_core::Kind::Session).hash();
        for c in [
            Change::Session(h),
            Change::SessionsOf("usr_1".into()),
            Change::User("usr_2".into()),
            Change::Client("svc:1".into()),
            Change::Denied {
                jti: "j 1".into(),
                exp: 1_700_000_000,
            },
            Change::Keys,
            Change::Everything,
        ] {
            assert_eq!(decode(&encode(&c)), c);
        }
        for junk in [
            "",
            "session zz",
            "denied x y",
            "user",
            "nonsense 1",
            "\u{0}",
        ] {
            assert_eq!(decode(junk), Change::Everything, "{junk:?}");
        }
    }
}

#[cfg(test)]
mod session_tests {
    use super::*;

    fn values<const N: usize>(v: [Option<&str>; N]) -> Vec<Option<String>> {
        v.iter().map(|v| v.map(str::to_string)).collect()
    }

    fn read(v: Vec<Option<String>>) -> Option<Session> {
        match found(v).unwrap() {
            Found::Session(s) => Some(*s),
            Found::Nothing => None,
            Found::Other => panic!("of the other form"),
        }
    }

    #[test]
    fn sessions_are_read_in_either_form_by_either_read() {
        let s = Session {
            handle: "ses_1".into(),
            user_id: "usr \"1\" é".into(),
            created_at: 1_000,
            last_seen_at: 1_500,
            expires_at: 44_200,
            idle_timeout: 1_800,
            user_agent: None,
            ip: Some("2001:db8::1".into()),
            data: serde_json::json!({"a": [1, 2]}),
        };
        let fixed = fixed_field(&s).unwrap();
        let data = r#"{"a":[1,2]}"#;
        // Compact, by each read.
        assert_eq!(
            read(values([Some(&fixed), Some("1500"), Some(data)])),
            Some(s.clone())
        );
        let mut ten = [None; 10];
        ten[9] = Some(fixed.as_str());
        ten[3] = Some("1500");
        ten[6] = Some(data);
        assert_eq!(read(values(ten)), Some(s.clone()));
        // Each field alone, by the read of that form; the compact read sends it there.
        let (created, expires, idle) = ("1000", "44200", "1800");
        let alone = [
            Some("ses_1"),
            Some(s.user_id.as_str()),
            Some(created),
            Some("1500"),
            Some(expires),
            Some(idle),
            Some(data),
            None,
            Some("2001:db8::1"),
            None,
        ];
        assert_eq!(read(values(alone)), Some(s.clone()));
        assert!(matches!(
            found(values([None, Some("1500"), Some("{}")])).unwrap(),
            Found::Other
        ));
        // Nothing there.
        assert_eq!(read(values([None, None, None])), None);
        assert_eq!(read(values([None; 10])), None);

        for bad in [
            [Some(fixed.as_str()), None, Some("{}")],
            [Some(fixed.as_str()), Some("1500"), None],
            [None, None, Some("{}")],
            [None, Some("1500"), None],
            [Some(fixed.as_str()), Some("soon"), Some("{}")],
            [Some(fixed.as_str()), Some("1500"), Some("{")],
            [Some("[]"), Some("1500"), Some("{}")],
            [Some(r#"["ses_1","usr",1,2]"#), Some("1500"), Some("{}")],
            [
                Some(r#"["s","u",1,2,3,null,null,4]"#),
                Some("1500"),
                Some("{}"),
            ],
        ] {
            assert!(found(values(bad)).is_err(), "{bad:?}");
        }
        let mut no_data = ten;
        no_data[6] = None;
        let mut half = alone;
        half[2] = None;
        let mut stray = [None; 10];
        stray[3] = Some("1500");
        for bad in [no_data, half, stray] {
            assert!(found(values(bad)).is_err(), "{bad:?}");
        }
        assert!(found(vec![None, None]).is_err());
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> redis::RedisResult<(redis::aio::PubSubSink, redis::aio::PubSubStream)> {
    let pubsub = tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
    let (mut sink, stream) = pubsub.split();
    sink.subscribe(channel).await?;
    Ok((sink, stream))
}

/// Adds a session unless its hash exists. KEYS: session, user set, index. ARGV: hash, ttl,
/// ends_at, then field/value pairs.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
if redis.call('TTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1",
    )
});

/// Records activity and moves the expiry. KEYS: session, index. ARGV: last_seen_at, now, hash,
/// user-set key prefix.
static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            FIXED_OF,
            r"
local f = redis.call('HMGET', KEYS[1], 'expires_at', 'idle_timeout', 'user_id', 'fixed')
if not f[1] then
  local x = fixed_of(f[4])
  if not (x and tonumber(x[4]) and tonumber(x[5]) and type(x[2]) == 'string') then return 0 end
  f = {x[4], x[5], x[2]}
end
local ends = math.min(tonumber(f[1]), tonumber(ARGV[1]) + tonumber(f[2]))
redis.call('HSET', KEYS[1], 'last_seen_at', ARGV[1])
local ttl = math.max(1, ends - tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[1], ttl)
local users = ARGV[4] .. f[3]
if redis.call('TTL', users) < ttl then redis.call('EXPIRE', users, ttl) end
redis.call('ZADD', KEYS[2], ends, ARGV[3])
return 1",
        ]
        .concat(),
    )
});

/// Replaces the data of an existing session. KEYS: session. ARGV: JSON.
static SET_DATA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[1])
return 1",
    )
});

/// A compact session's `fixed` decoded (a table), or nil: none, or one that does not parse
/// (only something other than tessera writes one; a script must not fail on it). Lua, prepended
/// to the scripts that read it.
const FIXED_OF: &str = r"
local function fixed_of(s)
  if not s then return nil end
  local ok, x = pcall(cjson.decode, s)
  if ok and type(x) == 'table' then return x end
  return nil
end";

/// A session's user id, in either form, or nil (no such session, or a `fixed` that does not
/// parse). Lua, prepended (with [`FIXED_OF`]) to the scripts that need it.
const USER_OF: &str = r"
local function user_of(k)
  local f = redis.call('HMGET', k, 'user_id', 'fixed')
  if f[1] then return f[1] end
  local x = fixed_of(f[2])
  if x and type(x[2]) == 'string' then return x[2] end
  return nil
end";

/// Ends one session (one whose user cannot be read too). KEYS: session, index. ARGV: hash,
/// user-set key prefix.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            FIXED_OF,
            USER_OF,
            r"
local u = user_of(KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local n = redis.call('DEL', KEYS[1])
if u then redis.call('SREM', ARGV[2] .. u, ARGV[1]) end
return n",
        ]
        .concat(),
    )
});

/// Ends a user's sessions but one. KEYS: user set, index. ARGV: kept hash or '', session key
/// prefix.
static DELETE_OF: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
for _, h in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if h ~= ARGV[1] then
    n = n + redis.call('DEL', ARGV[2] .. h)
    redis.call('SREM', KEYS[1], h)
    redis.call('ZREM', KEYS[2], h)
  end
end
return n",
    )
});

/// Removes up to ARGV[4] sessions that ended by ARGV[1]. KEYS: index. ARGV: now, session key
/// prefix, user-set key prefix, batch.
static PURGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            FIXED_OF,
            USER_OF,
            r"
local n = 0
local hs = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[4])
for _, h in ipairs(hs) do
  local u = user_of(ARGV[2] .. h)
  n = n + redis.call('DEL', ARGV[2] .. h)
  if u then redis.call('SREM', ARGV[3] .. u, h) end
  redis.call('ZREM', KEYS[1], h)
end
return {n, #hs}",
        ]
        .concat(),
    )
});

/// Denylists a jti, never shortening an entry. KEYS: entry, index. ARGV: jti, exp, ttl.
static DENY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('ZSCORE', KEYS[2], ARGV[1])
if cur and tonumber(cur) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1",
    )
});

/// Counts a login failure under each key. KEYS: counters. ARGV: now, window, base delay, max
/// delay, then each key's free failures. Returns the longest delay now in force.
/// Reserves one login attempt under every key (KEYS), or none while any is locked. ARGV: now,
/// window, base delay, max delay, then each key's free attempts. Returns 0 (reserved) or the
/// seconds left of the longest lock. The rules are `tessera_core::Throttle::reserve`'s.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local base, maxd = tonumber(ARGV[3]), tonumber(ARGV[4])
local wait = 0
for i, k in ipairs(KEYS) do
  local u = tonumber(redis.call('HGET', k, 'locked_until')) or 0
  if u - now > wait then wait = u - now end
end
if wait > 0 then return wait end
for i, k in ipairs(KEYS) do
  local free = math.max(tonumber(ARGV[4 + i]), 1)
  local f = redis.call('HMGET', k, 'count', 'last', 'locked_until')
  local count = tonumber(f[1]) or 0
  if f[2] and now - tonumber(f[2]) > window then count = 0 end
  count = count + 1
  local locked = tonumber(f[3]) or 0
  local delay = 0
  if count >= free then
    delay = math.floor(math.min(base * 2 ^ math.min(count - free, 30), maxd))
    locked = now + delay
  end
  redis.call('HSET', k, 'count', count, 'last', now, 'locked_until', locked)
  redis.call('EXPIRE', k, window + delay + 1)
end
return 0",
    )
});

/// A reserved attempt succeeded. KEYS: the keys to forget, then the keys to give one attempt
/// back to; ARGV: how many are forgotten, then each released key's free attempts.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cleared = tonumber(ARGV[1])
for i, k in ipairs(KEYS) do
  if i <= cleared then
    redis.call('DEL', k)
  elseif redis.call('EXISTS', k) == 1 then
    local free = math.max(tonumber(ARGV[1 + i - cleared]), 1)
    local count = math.max((tonumber(redis.call('HGET', k, 'count')) or 0) - 1, 0)
    redis.call('HSET', k, 'count', count)
    if count < free then redis.call('HSET', k, 'locked_until', 0) end
  end
end
return 0",
    )
});

fn session_fields(s: &Session, form: SessionForm) -> StoreResult<Vec<(&'static str, String)>> {
    if form == SessionForm::Compact {
        return Ok(vec![
            ("fixed", fixed_field(s)?),
            ("last_seen_at", s.last_seen_at.to_string()),
            ("data", s.data.to_string()),
        ]);
    }
    let mut f = vec![
        ("handle", s.handle.clone()),
        ("user_id", s.user_id.clone()),
        ("created_at", s.created_at.to_string()),
        ("last_seen_at", s.last_seen_at.to_string()),
        ("expires_at", s.expires_at.to_string()),
        ("idle_timeout", s.idle_timeout.to_string()),
        ("data", s.data.to_string()),
    ];
    if let Some(ua) = &s.user_agent {
        f.push(("user_agent", ua.clone()));
    }
    if let Some(ip) = &s.ip {
        f.push(("ip", ip.clone()));
    }
    Ok(f)
}

/// A session's fields that never change, as one value: a JSON array of `handle`, `user_id`,
/// `created_at`, `expires_at`, `idle_timeout`, `user_agent`, `ip` (the last two may be null).
/// Read with the two that change, a session is three values to parse instead of nine.
fn fixed_field(s: &Session) -> StoreResult<String> {
    serde_json::to_string(&(
        &s.handle,
        &s.user_id,
        s.created_at,
        s.expires_at,
        s.idle_timeout,
        &s.user_agent,
        &s.ip,
    ))
    .map_err(|_| corrupt("session"))
}

type Fixed = (
    String,
    String,
    i64,
    i64,
    i64,
    Option<String>,
    Option<String>,
);

/// How a session is read (one HMGET, no field names in the reply): the fields asked for, in
/// this order, the first ones those of the form it looks for first.
type ReadFields = &'static [&'static str];

/// The compact form's fields; a session of the other form answers `nil` for `fixed`.
const COMPACT_READ: ReadFields = &["fixed", "last_seen_at", "data"];

/// Each field alone, then `fixed` (a compact session answers it and its `last_seen_at` and
/// `data`, `nil` for the rest): either form in one read.
const FIELDS_READ: ReadFields = &[
    "handle",
    "user_id",
    "created_at",
    "last_seen_at",
    "expires_at",
    "idle_timeout",
    "data",
    "user_agent",
    "ip",
    "fixed",
];

/// A session as a read found it.
enum Found {
    Session(Box<Session>),
    /// No such key.
    Nothing,
    /// Not of the form asked for ([`COMPACT_READ`] met a session of each field alone): read
    /// again with [`FIELDS_READ`].
    Other,
}

/// Reads what [`COMPACT_READ`] or [`FIELDS_READ`] (by how many there are) answered.
fn found(values: Vec<Option<String>>) -> StoreResult<Found> {
    match values.len() {
        3 => {
            let mut v = values.into_iter();
            match (v.next().flatten(), v.next().flatten(), v.next().flatten()) {
                (Some(f), Some(l), Some(d)) => compact(&f, &l, &d),
                (None, None, None) => Ok(Found::Nothing),
                // Both forms hold `last_seen_at` and `data`.
                (None, Some(_), Some(_)) => Ok(Found::Other),
                _ => Err(corrupt("session")),
            }
        }
        10 => match (&values[0], &values[9], &values[3], &values[6]) {
            (Some(_), _, _, _) => {
                Ok(fields(values)?.map_or(Found::Nothing, |s| Found::Session(Box::new(s))))
            }
            (None, Some(f), Some(l), Some(d)) => compact(f, l, d),
            (None, None, None, None) => Ok(Found::Nothing),
            _ => Err(corrupt("session")),
        },
        _ => Err(corrupt("session")),
    }
}

/// A compact session: `fixed`, `last_seen_at`, `data`.
fn compact(fixed: &str, last_seen_at: &str, data: &str) -> StoreResult<Found> {
    let (handle, user_id, created_at, expires_at, idle_timeout, user_agent, ip): Fixed =
        serde_json::from_str(fixed).map_err(|_| corrupt("session"))?;
    Ok(Found::Session(Box::new(Session {
        handle,
        user_id,
        created_at,
        last_seen_at: last_seen_at.parse().map_err(|_| corrupt("session"))?,
        expires_at,
        idle_timeout,
        user_agent,
        ip,
        data: serde_json::from_str(data).map_err(|_| corrupt("session data"))?,
    })))
}

/// A session read waiting for its batch: the key, and where its fields go.
type Read = (String, oneshot::Sender<StoreResult<Vec<Option<String>>>>);

/// Session reads (the one command of a request authenticated by a session cookie, with the
/// session cache off) gathered so that the reads of the requests that are ready at the same time
/// leave in one pipeline: one write and one read for many requests instead of one each.
///
/// The multiplexed connection pipelines whatever is queued when its task runs, but on tokio's
/// multi-threaded runtime a task woken by the running one runs right after it (the LIFO slot),
/// so the connection's task wrote each request's command alone, and a Redis sharing the core woke
/// and preempted tessera once per request (measured: 0.8 context switches per request, and 29 %
/// more requests/s with the reads gathered). A gathering task yields once before it takes the
/// queue, which tokio runs only after the other ready tasks and the I/O driver: every request
/// that became ready in that turn has queued its read by then. The cost is that hop: with one
/// request at a time, p50 116 µs instead of 109 µs.
#[derive(Clone)]
struct SessionReads {
    fields: ReadFields,
    queue: Arc<OnceLock<Option<UnboundedSender<Read>>>>,
}

impl SessionReads {
    fn new(fields: ReadFields) -> SessionReads {
        SessionReads {
            fields,
            queue: Arc::default(),
        }
    }

    /// `HMGET key fields`, in the next batch.
    async fn hmget(
        &self,
        conn: &ConnectionManager,
        mut key: String,
    ) -> StoreResult<Vec<Option<String>>> {
        // Started on first use, on the runtime of the caller (a store opened outside one).
        let queue = self.queue.get_or_init(|| {
            let handle = tokio::runtime::Handle::try_current().ok()?;
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            handle.spawn(gather_reads(conn.clone(), self.fields, rx));
            Some(tx)
        });
        if let Some(queue) = queue {
            let (tx, rx) = oneshot::channel();
            match queue.send((key, tx)) {
                Ok(()) => {
                    return rx.await.unwrap_or_else(|_| {
                        Err(StoreError::Unavailable(
                            "redis: the read was dropped".into(),
                        ))
                    });
                }
                // The gathering task ended with its runtime: read directly.
                Err(back) => key = back.0.0,
            }
        }
        let mut c = conn.clone();
        c.hmget(key, self.fields).await.map_err(unavailable)
    }
}

/// The gathering task: until every [`SessionReads`] handle is gone, takes what is queued after
/// one turn of the scheduler and sends it as one pipeline (several in flight at once).
async fn gather_reads(
    conn: ConnectionManager,
    fields: ReadFields,
    mut queue: UnboundedReceiver<Read>,
) {
    while let Some(first) = queue.recv().await {
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < READ_BATCH {
            match queue.try_recv() {
                Ok(read) => batch.push(read),
                Err(_) => break,
            }
        }
        let mut c = conn.clone();
        tokio::spawn(async move {
            let mut pipe = redis::pipe();
            for (key, _) in &batch {
                pipe.hmget(key, fields);
            }
            let answers = pipe
                .query_async::<Vec<Vec<Option<String>>>>(&mut c)
                .await
                .map_err(unavailable)
                .and_then(|a| {
                    if a.len() == batch.len() {
                        Ok(a)
                    } else {
                        Err(corrupt("pipeline answer"))
                    }
                });
            match answers {
                Ok(answers) => {
                    for ((_, to), values) in batch.into_iter().zip(answers) {
                        let _ = to.send(Ok(values));
                    }
                }
                Err(e) => {
                    for (_, to) in batch {
                        let _ = to.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// A session of each field alone, from the first nine of [`FIELDS_READ`].
fn fields(values: Vec<Option<String>>) -> StoreResult<Option<Session>> {
    let mut v = values.into_iter();
    let mut next = || v.next().flatten();
    let Some(handle) = next() else {
        // No such key (HMGET answers nils).
        return Ok(None);
    };
    let mut required = || next().ok_or_else(|| corrupt("session"));
    let user_id = required()?;
    let mut num = || required().and_then(|t| t.parse::<i64>().map_err(|_| corrupt("session")));
    let created_at = num()?;
    let last_seen_at = num()?;
    let expires_at = num()?;
    let idle_timeout = num()?;
    let data: Value = serde_json::from_str(&required()?).map_err(|_| corrupt("session data"))?;
    Ok(Some(Session {
        handle,
        user_id,
        created_at,
        last_seen_at,
        expires_at,
        idle_timeout,
        user_agent: next(),
        ip: next(),
        data,
    }))
}

impl SessionStore for RedisStore {
    async fn create_session(&self, hash: &TokenHash, s: &Session) -> StoreResult<()> {
        let hex = hash.to_hex();
        let ttl = (s.ends_at() - self.clock.now()).max(1);
        let mut inv = CREATE.key(self.key("s", &hex));
        inv.key(self.key("u", &s.user_id))
            .key(self.sessions_index())
            .arg(&hex)
            .arg(ttl)
            .arg(s.ends_at());
        for (k, v) in session_fields(s, self.form)? {
            inv.arg(k).arg(v);
        }
        let mut c = self.conn.clone();
        let created: i64 = inv.invoke_async(&mut c).await.map_err(unavailable)?;
        if created == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    async fn session(&self, hash: &TokenHash) -> StoreResult<Option<Session>> {
        let key = self.key("s", &hash.to_hex());
        let mut read = found(self.reads.hmget(&self.conn, key).await?)?;
        if let Found::Other = read {
            // (until the sessions an earlier setting wrote have ended: batched too)
            let key = self.key("s", &hash.to_hex());
            read = found(self.fallback.hmget(&self.conn, key).await?)?;
        }
        match read {
            Found::Session(s) => Ok(Some(*s)),
            Found::Nothing | Found::Other => Ok(None),
        }
    }

    async fn touch_session(&self, hash: &TokenHash, last_seen_at: i64) -> StoreResult<()> {
        let hex = hash.to_hex();
        let mut c = self.conn.clone();
        TOUCH
            .key(self.key("s", &hex))
            .key(self.sessions_index())
            .arg(last_seen_at)
            .arg(self.clock.now())
            .arg(&hex)
            .arg(format!("{}:u:", self.prefix))
            .invoke_async::<i64>(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn set_session_data(&self, hash: &TokenHash, data: &Value) -> StoreResult<bool> {
        let mut c = self.conn.clone();
        let n: i64 = SET_DATA
            .key(self.key("s", &hash.to_hex()))
            .arg(data.to_string())
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(n == 1)
    }

    async fn delete_session(&self, hash: &TokenHash) -> StoreResult<bool> {
        let hex = hash.to_hex();
        let mut c = self.conn.clone();
        let n: i64 = DELETE
            .key(self.key("s", &hex))
            .key(self.sessions_index())
            .arg(&hex)
            .arg(format!("{}:u:", self.prefix))
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        if n == 1 {
            self.publish(&Change::Session(*hash)).await?;
        }
        Ok(n == 1)
    }

    async fn sessions_of(&self, user_id: &str) -> StoreResult<Vec<(TokenHash, Session)>> {
        let mut c = self.conn.clone();
        let set = self.key("u", user_id);
        let hashes: Vec<String> = c.smembers(&set).await.map_err(unavailable)?;
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        // Either form in one read: this is not a hot path.
        let mut pipe = redis::pipe();
        for h in &hashes {
            pipe.hmget(self.key("s", h), FIELDS_READ);
        }
        let maps: Vec<Vec<Option<String>>> = pipe.query_async(&mut c).await.map_err(unavailable)?;
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (h, m) in hashes.into_iter().zip(maps) {
            match (TokenHash::from_hex(&h), found(m)?) {
                (Some(hash), Found::Session(s)) => out.push((hash, *s)),
                _ => gone.push(h),
            }
        }
        if !gone.is_empty() {
            // Expired by Redis: tidy the set.
            c.srem::<_, _, i64>(&set, &gone)
                .await
                .map_err(unavailable)?;
        }
        Ok(out)
    }

    async fn delete_sessions_of(
        &self,
        user_id: &str,
        except: Option<&TokenHash>,
    ) -> StoreResult<u64> {
        let mut c = self.conn.clone();
        let n: u64 = DELETE_OF
            .key(self.key("u", user_id))
            .key(self.sessions_index())
            .arg(except.map(TokenHash::to_hex).unwrap_or_default())
            .arg(format!("{}:s:", self.prefix))
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        self.publish(&Change::SessionsOf(user_id.into())).await?;
        Ok(n)
    }

    async fn purge_expired_sessions(&self, now: i64) -> StoreResult<Purged> {
        let mut c = self.conn.clone();
        let (n, seen): (u64, u64) = PURGE
            .key(self.sessions_index())
            .arg(now)
            .arg(format!("{}:s:", self.prefix))
            .arg(format!("{}:u:", self.prefix))
            .arg(PURGE_BATCH)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(Purged::of(n, seen, PURGE_BATCH))
    }

    async fn count_sessions(&self) -> StoreResult<u64> {
        let mut c = self.conn.clone();
        c.zcard(self.sessions_index()).await.map_err(unavailable)
    }
}

impl DenylistStore for RedisStore {
    async fn deny_access(&self, jti: &str, exp: i64, _now: i64) -> StoreResult<()> {
        let ttl = (exp + self.leeway - self.clock.now()).max(1);
        let mut c = self.conn.clone();
        let added: i64 = DENY
            .key(self.key("d", jti))
            .key(self.denylist_index())
            .arg(jti)
            .arg(exp)
            .arg(ttl)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        if added == 1 {
            self.publish(&Change::Denied {
                jti: jti.into(),
                exp,
            })
            .await?;
        }
        Ok(())
    }

    async fn denied_access(&self, now: i64) -> StoreResult<tessera_core::Denied> {
        let mut c = self.conn.clone();
        let rows: Vec<(String, f64)> = c
            .zrangebyscore_withscores(self.denylist_index(), format!("({now}"), "+inf")
            .await
            .map_err(unavailable)?;
        #[allow(clippy::cast_possible_truncation)] // scores are whole seconds, far below 2^53
        Ok(rows.iter().map(|(j, e)| (j, *e as i64)).collect())
    }

    async fn purge_denied(&self, now: i64) -> StoreResult<Purged> {
        // One command (a range of the index): Redis removes a backlog at once.
        let mut c = self.conn.clone();
        let removed = c
            .zrembyscore(self.denylist_index(), "-inf", now)
            .await
            .map_err(unavailable)?;
        Ok(Purged::all(removed))
    }
}

impl ThrottleStore for RedisStore {
    async fn throttle_reserve(
        &self,
        keys: &[(String, u32)],
        policy: &ThrottlePolicy,
        now: i64,
    ) -> StoreResult<Option<i64>> {
        let mut inv = RESERVE.prepare_invoke();
        for (k, _) in keys {
            inv.key(self.key("t", k));
        }
        inv.arg(now)
            .arg(policy.window)
            .arg(policy.base_delay)
            .arg(policy.max_delay);
        for (_, free) in keys {
            inv.arg(*free);
        }
        let mut c = self.conn.clone();
        let wait: i64 = inv.invoke_async(&mut c).await.map_err(unavailable)?;
        Ok(Some(wait))
    }

    async fn throttle_release(
        &self,
        cleared: &[(String, u32)],
        released: &[(String, u32)],
    ) -> StoreResult<()> {
        let mut inv = RELEASE.prepare_invoke();
        for (k, _) in cleared.iter().chain(released) {
            inv.key(self.key("t", k));
        }
        inv.arg(cleared.len());
        for (_, free) in released {
            inv.arg(*free);
        }
        let mut c = self.conn.clone();
        let _: i64 = inv.invoke_async(&mut c).await.map_err(unavailable)?;
        Ok(())
    }
}

impl crate::guard::Announcer for RedisStore {
    async fn publish(&self, change: &Change) -> StoreResult<()> {
        RedisStore::publish(self, change).await
    }
}

impl crate::guard::Probe for RedisStore {
    async fn probe(&self) -> StoreResult<()> {
        RedisStore::ping(self).await
    }
}
