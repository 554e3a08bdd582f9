//! Access and refresh tokens: RFC 9068 access JWTs signed by the key ring, opaque refresh
//! tokens rotated on every use, with replay detection that forgives an honest retry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tessera_jose::{Audience, Claims, Clock, Revocation, Validation};

use crate::client::{Client, CodeRecord, pkce_matches};
use crate::keys::KeyManager;
use crate::logsafe::Untrusted;
use crate::refresh::RefreshRecord;
use crate::revocation::Denylist;
use crate::store::{ClientStore as _, RefreshStore as _};
use crate::store::{FamilyRevocation, StoreError, Stores};
use crate::token::{Kind, Token, random_id};
use crate::user::User;

/// Token settings (seconds for lifetimes).
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// `iss`.
    pub issuer: String,
    /// `aud` of first-party access tokens.
    pub audience: String,
    /// Access-token lifetime.
    pub access_ttl: i64,
    /// The first-party public client.
    pub client_id: String,
    /// `scope` of first-party tokens.
    pub scope: String,
    /// Refresh idle lifetime.
    pub refresh_idle: i64,
    /// Refresh family absolute lifetime.
    pub refresh_absolute: i64,
    /// The honest-retry window.
    pub refresh_grace: i64,
    /// Live refresh families a user may hold with one client; a new one past it revokes the
    /// oldest (with its access tokens).
    pub max_refresh_families: usize,
    /// Clock-skew tolerance when verifying.
    pub leeway: i64,
    /// How many verified access tokens to remember (0: verify every time).
    pub verified_cache: usize,
    /// Whether new refresh tokens carry their issue time ([`Token::refresh`]), or are of the
    /// form versions before issued, which those versions can read: for a
    /// rolling upgrade from them. Both forms are read either way.
    pub timed_refresh: bool,
}

/// A token response.
#[derive(Debug)]
pub struct Issued {
    /// The access JWT.
    pub access_token: String,
    /// The refresh token.
    pub refresh_token: Token,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// The scope granted.
    pub scope: String,
}

/// An access token alone (client credentials, token exchange): no refresh token.
#[derive(Debug)]
pub struct AccessIssued {
    /// The access JWT.
    pub access_token: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// The scope it carries.
    pub scope: String,
}

/// What goes into an access token besides the issuer and times.
#[derive(Debug, Clone, Copy)]
pub struct AccessGrant<'a> {
    /// `sub`: a user id, or a client id for a client acting for itself.
    pub sub: &'a str,
    /// `client_id`.
    pub client_id: &'a str,
    /// `scope`.
    pub scope: &'a str,
    /// `aud` (`None`: the server's audience).
    pub aud: Option<&'a str>,
    /// `sid`, when issued under a session.
    pub sid: Option<&'a str>,
    /// The `jti` to use (`None`: a fresh one).
    pub jti: Option<&'a str>,
    /// The lifetime, when shorter than the configured one.
    pub ttl: Option<i64>,
}

impl<'a> AccessGrant<'a> {
    /// A grant with the defaults: server audience, fresh `jti`, configured lifetime.
    pub fn new(sub: &'a str, client_id: &'a str, scope: &'a str) -> AccessGrant<'a> {
        AccessGrant {
            sub,
            client_id,
            scope,
            aud: None,
            sid: None,
            jti: None,
            ttl: None,
        }
    }
}

/// Why a grant was refused (RFC 6749 §5.2 terms).
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The refresh token or code is unknown, expired, revoked, replayed, or not this client's.
    #[error("the grant is invalid")]
    InvalidGrant,
    /// An authorization code was used a second time: what its first use issued is revoked
    /// (its refresh family, and its access tokens denylisted in the store and in memory).
    #[error("the authorization code was used before")]
    CodeReused,
    /// More scope than the client may have.
    #[error("the requested scope is not allowed")]
    InvalidScope,
    /// An audience (`resource`, `audience`) the client may not name.
    #[error("the requested audience is not allowed")]
    InvalidTarget,
    /// A store failed, or no key can sign.
    #[error("temporarily unavailable")]
    Unavailable,
}

fn unavailable(e: StoreError) -> GrantError {
    tracing::error!(error = %e, "token store unavailable");
    GrantError::Unavailable
}

/// How long an authorization code may wait for its exchange (RFC 6749 §4.1.2: short).
pub const CODE_TTL: i64 = 60;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct TokenCounters {
    /// Access tokens issued (login or refresh).
    pub issued: AtomicU64,
    /// Successful refreshes.
    pub refreshed: AtomicU64,
    /// Refresh families revoked (logout, revocation, disable).
    pub revoked: AtomicU64,
    /// Replays of used refresh tokens caught (families revoked for it).
    pub reuse_detected: AtomicU64,
}

/// Access tokens already verified, keyed by the whole token: a client re-sends the same token
/// for its whole life, so the signature check runs once. An entry is used only while the key
/// ring it was verified under is still in force; expiry is checked on every hit, and the
/// caller checks the denylist on every hit too.
#[derive(Debug, Default)]
struct Verified {
    entries: std::sync::RwLock<std::collections::HashMap<Box<str>, VerifiedEntry>>,
}

/// A verified token and the key-ring generation it was verified under.
type VerifiedEntry = (Arc<tessera_jose::Token>, u64);

/// The token service.
#[derive(Debug)]
pub struct Tokens<S> {
    store: S,
    keys: Arc<KeyManager<S>>,
    successor: aws_lc_rs::hmac::Key,
    settings: TokenSettings,
    validation: Validation,
    /// The same without the audience: any token this server issued, for introspection.
    any_audience: Validation,
    clock: Arc<dyn Clock>,
    counters: TokenCounters,
    verified: Verified,
    denylist: Arc<Denylist>,
    /// The verifier for the key ring of the given generation.
    verifier: std::sync::RwLock<(u64, Arc<tessera_jose::Verifier>)>,
}

impl<S: Stores> Tokens<S> {
    /// A service signing with `keys`; `successor` derives rotated refresh tokens; the access
    /// tokens of a killed family join `denylist`.
    pub fn new(
        store: S,
        keys: Arc<KeyManager<S>>,
        successor: aws_lc_rs::hmac::Key,
        settings: TokenSettings,
        clock: Arc<dyn Clock>,
        denylist: Arc<Denylist>,
    ) -> Self {
        let validation = Validation {
            leeway: settings.leeway,
            issuer: Some(settings.issuer.clone()),
            audiences: vec![settings.audience.clone()],
            typ: Some("at+jwt".into()),
            required: vec!["exp".into(), "sub".into(), "jti".into()],
            ..Validation::default()
        };
        let any_audience = Validation {
            audiences: Vec::new(),
            ..validation.clone()
        };
        Tokens {
            store,
            keys,
            successor,
            settings,
            validation,
            any_audience,
            clock,
            counters: TokenCounters::default(),
            verified: Verified::default(),
            denylist,
            verifier: std::sync::RwLock::new((
                u64::MAX,
                Arc::new(tessera_jose::Verifier::new(
                    tessera_jose::KeySet::default(),
                    Validation::default(),
                )),
            )),
        }
    }

    /// A verifier over the current key ring, built once per ring.
    fn verifier(&self, generation: u64) -> Arc<tessera_jose::Verifier> {
        {
            let g = self.verifier.read().unwrap_or_else(|e| e.into_inner());
            if g.0 == generation {
                return Arc::clone(&g.1);
            }
        }
        let v = Arc::new(tessera_jose::Verifier::new(
            self.keys.ring().keys.clone(),
            self.any_audience.clone(),
        ));
        *self.verifier.write().unwrap_or_else(|e| e.into_inner()) = (generation, Arc::clone(&v));
        v
    }

    /// The settings.
    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// The counters.
    pub fn counters(&self) -> &TokenCounters {
        &self.counters
    }

    /// The key manager.
    pub fn keys(&self) -> &Arc<KeyManager<S>> {
        &self.keys
    }

    /// Signs an access token; returns it, its `jti` and its lifetime in seconds.
    pub async fn sign_access(
        &self,
        g: AccessGrant<'_>,
        now: i64,
    ) -> Result<(String, String, i64), GrantError> {
        let ring = self.keys.ring();
        let signer = ring.signer.as_ref().ok_or(GrantError::Unavailable)?;
        let jti = g
            .jti
            .map_or_else(|| crate::token::token_id(now), str::to_owned);
        let ttl = g
            .ttl
            .map_or(self.settings.access_ttl, |t| {
                t.min(self.settings.access_ttl)
            })
            .max(1);
        let claims = Claims {
            iss: Some(self.settings.issuer.clone()),
            sub: Some(g.sub.to_owned()),
            aud: Some(Audience::One(
                g.aud.unwrap_or(&self.settings.audience).to_owned(),
            )),
            exp: Some(now + ttl),
            iat: Some(now),
            nbf: Some(now),
            jti: Some(jti.clone()),
            scope: Some(g.scope.to_owned()),
            client_id: Some(g.client_id.to_owned()),
            sid: g.sid.map(str::to_owned),
            ..Claims::default()
        };
        let token = signer.sign(&claims).await.map_err(|e| {
            tracing::error!(error = %e, kid = %signer.kid(), "the signing key did not sign");
            GrantError::Unavailable
        })?;
        self.counters.issued.fetch_add(1, Ordering::Relaxed);
        Ok((token, jti, ttl))
    }

    /// The audience a client's tokens get: `requested` if the client may name it, else its
    /// first registered audience, else the server's.
    pub fn audience_for<'a>(
        &'a self,
        client: &'a Client,
        requested: Option<&'a str>,
    ) -> Result<&'a str, GrantError> {
        match requested {
            Some(r) if client.audience.iter().any(|a| a == r) => Ok(r),
            Some(r) if client.audience.is_empty() && r == self.settings.audience => Ok(r),
            Some(_) => Err(GrantError::InvalidTarget),
            None => Ok(client
                .audience
                .first()
                .map_or(self.settings.audience.as_str(), String::as_str)),
        }
    }

    /// `grant_type=client_credentials` (RFC 6749 §4.4) for an authenticated confidential
    /// client: an access token with the client as `sub`, never more scope than it was given.
    pub async fn client_credentials(
        &self,
        client: &Client,
        scope: Option<&str>,
        resource: Option<&str>,
    ) -> Result<AccessIssued, GrantError> {
        let scope = client.grant_scope(scope).ok_or(GrantError::InvalidScope)?;
        let aud = self.audience_for(client, resource)?;
        let grant = AccessGrant {
            aud: Some(aud),
            ..AccessGrant::new(&client.id, &client.id, &scope)
        };
        let (access_token, _, expires_in) = self.sign_access(grant, self.clock.now()).await?;
        tracing::info!(target: "audit", event = "client_token_issued", client = %Untrusted(&client.id));
        Ok(AccessIssued {
            access_token,
            expires_in,
            scope,
        })
    }

    /// An authorization code for `client`, after `user_id` consented to `scope`; it expires in
    /// a minute and works once.
    pub async fn issue_code(
        &self,
        client: &Client,
        user_id: &str,
        redirect_uri: &str,
        scope: &str,
        code_challenge: &str,
        sid: Option<&str>,
    ) -> Result<Token, GrantError> {
        let now = self.clock.now();
        let code = Token::generate(Kind::Code);
        let record = CodeRecord {
            client_id: client.id.clone(),
            user_id: user_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            scope: scope.to_owned(),
            code_challenge: code_challenge.to_owned(),
            sid: sid.map(str::to_owned),
            created_at: now,
            expires_at: now + CODE_TTL,
            family: random_id("fam_"),
            access_jti: crate::token::token_id(now),
        };
        self.store
            .clients()
            .create_code(&code.hash(), &record)
            .await
            .map_err(unavailable)?;
        tracing::info!(target: "audit", event = "authorization_code_issued", user = %user_id, client = %Untrusted(&client.id));
        Ok(code)
    }

    /// `grant_type=authorization_code` (RFC 6749 §4.1.3 with RFC 7636 S256): the code must be
    /// this client's, unexpired, for this `redirect_uri`, and `verifier` must hash to its
    /// challenge. Any use burns the code; a second use revokes what the first issued.
    pub async fn exchange_code(
        &self,
        client: &Client,
        presented: &str,
        redirect_uri: Option<&str>,
        verifier: &str,
    ) -> Result<Issued, GrantError> {
        let now = self.clock.now();
        let code = Token::parse(Kind::Code, presented).ok_or(GrantError::InvalidGrant)?;
        let hash = code.hash();
        let (record, used) = self
            .store
            .clients()
            .code(&hash)
            .await
            .map_err(unavailable)?
            .ok_or(GrantError::InvalidGrant)?;
        if used {
            return Err(self.code_reused(&record, now).await);
        }
        let valid = record.client_id == client.id
            && redirect_uri == Some(record.redirect_uri.as_str())
            && now < record.expires_at
            && pkce_matches(verifier, &record.code_challenge);
        if !valid {
            // Any use burns the code.
            let first = self
                .store
                .clients()
                .use_code(&hash, now)
                .await
                .map_err(unavailable)?
                .is_some_and(|(_, first)| first);
            if !first {
                return Err(self.code_reused(&record, now).await);
            }
            return Err(GrantError::InvalidGrant);
        }
        let s = &self.settings;
        let family_expires_at = now + s.refresh_absolute;
        let refresh = self.new_refresh(now);
        let aud = self.audience_for(client, None)?;
        let grant = AccessGrant {
            aud: Some(aud),
            sid: record.sid.as_deref(),
            jti: Some(&record.access_jti),
            ..AccessGrant::new(&record.user_id, &client.id, &record.scope)
        };
        let (access, jti, expires_in) = self.sign_access(grant, now).await?;
        let refresh_record = RefreshRecord {
            family: record.family.clone(),
            user_id: record.user_id.clone(),
            client_id: client.id.clone(),
            scope: record.scope.clone(),
            created_at: now,
            expires_at: (now + s.refresh_idle).min(family_expires_at),
            family_expires_at,
            used_at: None,
            access_jti: Some(jti),
        };
        // The code is spent and the tokens stored in one step: a failure leaves the code as
        // it was, for a retry.
        let redeemed = self
            .store
            .clients()
            .redeem_code(&hash, now, &refresh.hash(), &refresh_record)
            .await
            .map_err(unavailable)?;
        if !redeemed {
            return Err(self.code_reused(&record, now).await);
        }
        tracing::info!(target: "audit", event = "tokens_issued", user = %record.user_id, client = %Untrusted(&client.id), grant = "authorization_code");
        self.bound_families(&record.user_id, &client.id, &record.family)
            .await;
        Ok(Issued {
            access_token: access,
            refresh_token: refresh,
            expires_in,
            scope: record.scope,
        })
    }

    /// A code presented after its first use: what that use issued is revoked (its refresh
    /// family, and its access token even if the use failed after signing it).
    async fn code_reused(&self, record: &CodeRecord, now: i64) -> GrantError {
        let also = [(
            Revocation::Token(record.access_jti.clone()).key(),
            now + self.settings.access_ttl,
        )];
        if let Err(e) = self.kill_family(&record.family, &also).await {
            return e;
        }
        self.counters.reuse_detected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(target: "audit", event = "authorization_code_reused", user = %record.user_id, client = %Untrusted(&record.client_id), family = %record.family);
        GrantError::CodeReused
    }

    /// A new refresh family for `user` at login, with its first tokens.
    pub async fn issue_for_login(&self, user: &User) -> Result<Issued, GrantError> {
        let now = self.clock.now();
        let s = &self.settings;
        let family_expires_at = now + s.refresh_absolute;
        let record = RefreshRecord {
            family: random_id("fam_"),
            user_id: user.id.clone(),
            client_id: s.client_id.clone(),
            scope: s.scope.clone(),
            created_at: now,
            expires_at: (now + s.refresh_idle).min(family_expires_at),
            family_expires_at,
            used_at: None,
            access_jti: None,
        };
        let refresh = self.new_refresh(now);
        let hash = refresh.hash();
        let (access, jti, _) = self
            .sign_access(AccessGrant::new(&user.id, &s.client_id, &s.scope), now)
            .await?;
        self.store
            .refresh()
            .create_refresh(
                &hash,
                &RefreshRecord {
                    access_jti: Some(jti),
                    ..record.clone()
                },
            )
            .await
            .map_err(unavailable)?;
        tracing::info!(target: "audit", event = "tokens_issued", user = %user.id, client = %Untrusted(&s.client_id));
        self.bound_families(&user.id, &s.client_id, &record.family)
            .await;
        Ok(Issued {
            access_token: access,
            refresh_token: refresh,
            expires_in: s.access_ttl,
            scope: s.scope.clone(),
        })
    }

    /// A new refresh token, of the form the settings ask for.
    fn new_refresh(&self, now: i64) -> Token {
        Token::refresh(self.settings.timed_refresh.then_some(now))
    }

    /// `grant_type=refresh_token` for `client_id`: rotates the token. A used token presented
    /// again within the grace window, by the same client, while its successor is unused, gets
    /// that same successor (an honest retry); any other replay revokes the whole family.
    pub async fn refresh(&self, presented: &str, client_id: &str) -> Result<Issued, GrantError> {
        let now = self.clock.now();
        let token = Token::parse(Kind::Refresh, presented).ok_or(GrantError::InvalidGrant)?;
        let hash = token.hash();
        let (record, revoked) = self
            .store
            .refresh()
            .refresh_token(&hash)
            .await
            .map_err(unavailable)?
            .ok_or(GrantError::InvalidGrant)?;
        if revoked || record.client_id != client_id || now >= record.expires_at {
            return Err(GrantError::InvalidGrant);
        }
        // An account disabled or deleted since this token was issued: its families are revoked
        // in a step after the refusal of its tokens, and a refresh in between must not issue
        // tokens the refusal does not cover.
        if self
            .denylist
            .subject_revoked_at(&record.user_id)
            .is_some_and(|at| record.created_at <= at)
        {
            return Err(GrantError::InvalidGrant);
        }
        // A registered client's family lives while the client exists and the person's consent
        // still covers the scope: removing the client or withdrawing consent ends it.
        let client = if client_id == self.settings.client_id {
            None
        } else {
            let client = self
                .store
                .clients()
                .client(client_id)
                .await
                .map_err(unavailable)?
                .ok_or(GrantError::InvalidGrant)?;
            let consented = self
                .store
                .clients()
                .consents_of(&record.user_id)
                .await
                .map_err(unavailable)?
                .iter()
                .any(|c| {
                    c.client_id == client_id && crate::client::subset(&record.scope, &c.scope)
                });
            if !consented {
                return Err(GrantError::InvalidGrant);
            }
            Some(client)
        };
        let timed = self.settings.timed_refresh;
        let mut successor = Token::successor(&self.successor, token.expose(), timed.then_some(now));
        let aud = match &client {
            Some(c) => Some(self.audience_for(c, None)?),
            None => None,
        };
        let grant = AccessGrant {
            aud,
            ..AccessGrant::new(&record.user_id, &record.client_id, &record.scope)
        };
        // Signed first: the rotation records its `jti` in the same step that spends the token.
        let (access, jti, _) = self.sign_access(grant, now).await?;
        let succ_record = RefreshRecord {
            created_at: now,
            expires_at: (now + self.settings.refresh_idle).min(record.family_expires_at),
            used_at: None,
            access_jti: Some(jti.clone()),
            ..record.clone()
        };
        let won = self
            .store
            .refresh()
            .rotate_refresh(&hash, now, &successor.hash(), &succ_record)
            .await
            .map_err(unavailable)?;
        if !won {
            // Used before (or by a concurrent request an instant ago), or revoked since.
            let used_at = match self
                .store
                .refresh()
                .refresh_token(&hash)
                .await
                .map_err(unavailable)?
            {
                Some((_, true)) | None => return Err(GrantError::InvalidGrant),
                Some((r, false)) => r.used_at.unwrap_or(now),
            };
            // The successor the winning rotation stored, of either form (an instance of another
            // version or setting may have rotated it): the timed one issued at the token's use.
            // The form this instance issues is asked for first, the other only if it is not there.
            let mut successor_state = None;
            for form in [timed, !timed] {
                let candidate =
                    Token::successor(&self.successor, token.expose(), form.then_some(used_at));
                successor_state = self
                    .store
                    .refresh()
                    .refresh_token(&candidate.hash())
                    .await
                    .map_err(unavailable)?;
                if successor_state.is_some() {
                    successor = candidate;
                    break;
                }
            }
            let successor_unused = successor_state
                .as_ref()
                .is_none_or(|(r, fam_revoked)| r.used_at.is_none() && !fam_revoked);
            // An honest retry comes within the grace window of the token's use, or of the
            // store's return when it went away after that use: a client whose rotation
            // committed while its answer was lost with the store retries until the store is
            // back, however long that takes.
            let grace = self.settings.refresh_grace;
            let within_grace = now - used_at <= grace
                || self
                    .store
                    .refresh()
                    .back_since()
                    .is_some_and(|back| back >= used_at && now - back <= grace);
            if !within_grace || !successor_unused {
                self.kill_family(&record.family, &[]).await?;
                self.counters.reuse_detected.fetch_add(1, Ordering::Relaxed);
                self.counters.revoked.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "audit", event = "refresh_reuse_detected", user = %record.user_id, family = %record.family);
                return Err(GrantError::InvalidGrant);
            }
            // An honest retry: the same successor, and a new access token recorded in the
            // family so that revoking it refuses this one too. A used token without its
            // successor can only come from a version that rotated in two steps and failed
            // between them: refused, the family left as it is (logging in again mends it).
            if successor_state.is_none() {
                return Err(GrantError::InvalidGrant);
            }
            let recorded = self
                .store
                .refresh()
                .record_access(&record.family, &jti, now)
                .await
                .map_err(unavailable)?;
            if !recorded {
                return Err(GrantError::InvalidGrant);
            }
        }
        self.counters.refreshed.fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: "audit", event = "tokens_refreshed", user = %record.user_id, retry = !won);
        Ok(Issued {
            access_token: access,
            refresh_token: successor,
            expires_in: self.settings.access_ttl,
            scope: record.scope,
        })
    }

    /// Verifies a first-party access token now: signature by a published key, `typ`, `iss`,
    /// `aud`, times with leeway. A token verified before under the same key ring is not
    /// verified again; its times are.
    pub fn verify_access(
        &self,
        token: &str,
    ) -> Result<Arc<tessera_jose::Token>, tessera_jose::Error> {
        self.verify_with(token, &self.validation)
    }

    /// Verifies an access token this server issued for any audience (introspection): as
    /// [`Tokens::verify_access`] but without the audience check.
    pub fn verify_issued(
        &self,
        token: &str,
    ) -> Result<Arc<tessera_jose::Token>, tessera_jose::Error> {
        self.verify_with(token, &self.any_audience)
    }

    fn verify_with(
        &self,
        token: &str,
        validation: &Validation,
    ) -> Result<Arc<tessera_jose::Token>, tessera_jose::Error> {
        let now = self.clock.now();
        let generation = self.keys.generation();
        let hit = self
            .verified
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .filter(|(_, g)| *g == generation)
            .map(|(t, _)| Arc::clone(t));
        if let Some(t) = hit {
            // The signature was checked; claims (and time) are checked again.
            validation.check(&t.header, &t.claims, now)?;
            return Ok(t);
        }
        let verified = Arc::new(self.verifier(generation).verify_at(token, now)?);
        validation.check(&verified.header, &verified.claims, now)?;
        let capacity = self.settings.verified_cache;
        if capacity > 0 {
            let mut entries = self
                .verified
                .entries
                .write()
                .unwrap_or_else(|e| e.into_inner());
            // Past the bound the cache starts over.
            if entries.len() >= capacity {
                entries.clear();
            }
            entries.insert(token.into(), (Arc::clone(&verified), generation));
        }
        Ok(verified)
    }

    /// Revokes a refresh family and refuses, in the same step of the store, the access tokens
    /// issued in it that may still be alive and `also` (RFC 7009 §2.1: revoking a refresh
    /// token ends the access tokens of its grant); then refuses them here at once.
    async fn kill_family(&self, family: &str, also: &[(String, i64)]) -> Result<(), GrantError> {
        let now = self.clock.now();
        let ttl = self.settings.access_ttl;
        let revocation = FamilyRevocation {
            since: now - ttl - self.settings.leeway,
            access_ttl: ttl,
            also,
            now,
        };
        let denied = self
            .store
            .refresh()
            .revoke_family(family, &revocation)
            .await
            .map_err(unavailable)?;
        self.denylist.recorded(&self.store, denied, now).await;
        Ok(())
    }

    /// Keeps `user_id`'s live families with `client_id` within
    /// [`TokenSettings::max_refresh_families`] after `newest` began: the oldest beyond the
    /// bound are revoked, with their access tokens, as a revocation does, never `newest`; a
    /// failure is logged and the grant stands. Two logins at the
    /// same moment may each see one family too many and revoke the same one: the bound may be
    /// passed by the few families begun concurrently, until the next login.
    async fn bound_families(&self, user_id: &str, client_id: &str, newest: &str) {
        let max = self.settings.max_refresh_families.max(1);
        let live = match self
            .store
            .refresh()
            .live_families(user_id, client_id, self.clock.now())
            .await
        {
            Ok(live) => live,
            Err(e) => {
                tracing::warn!(error = %e, "bounding refresh families failed; the grant stands");
                return;
            }
        };
        // Oldest first; the family just made is never among those ended, whatever the ties.
        let others: Vec<_> = live.iter().filter(|(f, _)| f != newest).collect();
        let excess = others.len().saturating_sub(max - 1);
        for (family, _) in others.into_iter().take(excess) {
            if let Err(e) = self.kill_family(family, &[]).await {
                tracing::warn!(error = ?e, "bounding refresh families failed; the grant stands");
                return;
            }
            self.counters.revoked.fetch_add(1, Ordering::Relaxed);
            tracing::info!(target: "audit", event = "refresh_family_revoked", user = %user_id, client = %Untrusted(client_id), family = %family, reason = "family_limit");
        }
    }

    /// Revokes the family of a refresh token (RFC 7009); false if the token is unknown.
    pub async fn revoke_refresh(
        &self,
        presented: &str,
        client_id: Option<&str>,
    ) -> Result<bool, GrantError> {
        let Some(token) = Token::parse(Kind::Refresh, presented) else {
            return Ok(false);
        };
        let Some((record, revoked)) = self
            .store
            .refresh()
            .refresh_token(&token.hash())
            .await
            .map_err(unavailable)?
        else {
            return Ok(false);
        };
        if client_id.is_some_and(|c| c != record.client_id) {
            // RFC 7009 §2.1: a client may only revoke its own tokens; answer as if unknown.
            return Ok(false);
        }
        if !revoked {
            self.kill_family(&record.family, &[]).await?;
            self.counters.revoked.fetch_add(1, Ordering::Relaxed);
            tracing::info!(target: "audit", event = "refresh_family_revoked", user = %record.user_id, family = %record.family);
        }
        Ok(true)
    }

    /// Refuses access token `jti` until `exp` and revokes the refresh family it was issued in,
    /// in one step of the store (a Bearer logout): both or neither.
    pub async fn revoke_access(&self, jti: &str, exp: i64) -> Result<(), GrantError> {
        let family = self
            .store
            .refresh()
            .family_of_access(jti)
            .await
            .map_err(unavailable)?;
        match family {
            Some(family) => {
                let also = [(Revocation::Token(jti.to_owned()).key(), exp)];
                self.kill_family(&family, &also).await?;
                self.counters.revoked.fetch_add(1, Ordering::Relaxed);
                tracing::info!(target: "audit", event = "refresh_family_revoked", family = %family, reason = "logout");
            }
            None => {
                let now = self.clock.now();
                self.denylist
                    .record(&self.store, Revocation::Token(jti.to_owned()), exp, now)
                    .await
                    .map_err(unavailable)?;
            }
        }
        Ok(())
    }

    /// The record of a refresh token that could be used now (RFC 7662): known, unused,
    /// unexpired, its family live.
    pub async fn refresh_state(
        &self,
        presented: &str,
    ) -> Result<Option<RefreshRecord>, GrantError> {
        let Some(token) = Token::parse(Kind::Refresh, presented) else {
            return Ok(None);
        };
        let now = self.clock.now();
        Ok(self
            .store
            .refresh()
            .refresh_token(&token.hash())
            .await
            .map_err(unavailable)?
            .and_then(|(r, revoked)| {
                (!revoked && r.used_at.is_none() && now < r.expires_at).then_some(r)
            }))
    }

    /// Whether `presented` is a well-formed refresh token (refused where an access token belongs).
    pub fn is_refresh_token(presented: &str) -> bool {
        Token::parse(Kind::Refresh, presented).is_some()
    }
}
