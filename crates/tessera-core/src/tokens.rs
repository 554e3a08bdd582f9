//! Access and refresh tokens: RFC 9068 access JWTs signed by the key ring, opaque refresh
//! tokens rotated on every use, with replay detection that forgives an honest retry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tessera_jose::{Audience, Claims, Clock, Validation};

use crate::keys::KeyManager;
use crate::refresh::RefreshRecord;
use crate::store::{StoreError, Stores};
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
    /// Clock-skew tolerance when verifying.
    pub leeway: i64,
    /// How many verified access tokens to remember (0: verify every time).
    pub verified_cache: usize,
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
}

/// Why a grant was refused (RFC 6749 §5.2 terms).
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The refresh token is unknown, expired, revoked, replayed, or not this client's.
    #[error("the refresh token is invalid")]
    InvalidGrant,
    /// A store failed, or no key can sign.
    #[error("temporarily unavailable")]
    Unavailable,
}

fn unavailable(e: StoreError) -> GrantError {
    tracing::error!(error = %e, "token store unavailable");
    GrantError::Unavailable
}

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
    clock: Arc<dyn Clock>,
    counters: TokenCounters,
    verified: Verified,
    /// The verifier for the key ring of the given generation.
    verifier: std::sync::RwLock<(u64, Arc<tessera_jose::Verifier>)>,
}

impl<S: Stores> Tokens<S> {
    /// A service signing with `keys`; `successor` derives rotated refresh tokens.
    pub fn new(
        store: S,
        keys: Arc<KeyManager<S>>,
        successor: aws_lc_rs::hmac::Key,
        settings: TokenSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let validation = Validation {
            leeway: settings.leeway,
            issuer: Some(settings.issuer.clone()),
            audiences: vec![settings.audience.clone()],
            typ: Some("at+jwt".into()),
            required: vec!["exp".into(), "sub".into(), "jti".into()],
            ..Validation::default()
        };
        Tokens {
            store,
            keys,
            successor,
            settings,
            validation,
            clock,
            counters: TokenCounters::default(),
            verified: Verified::default(),
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
            self.validation.clone(),
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

    /// Signs an access token for `user` (or `sub`) and `client_id`; returns it and its jti.
    pub fn access_token(
        &self,
        sub: &str,
        client_id: &str,
        scope: &str,
        sid: Option<&str>,
        now: i64,
    ) -> Result<(String, String), GrantError> {
        let ring = self.keys.ring();
        let signer = ring.signer.as_ref().ok_or(GrantError::Unavailable)?;
        let jti = random_id("");
        let claims = Claims {
            iss: Some(self.settings.issuer.clone()),
            sub: Some(sub.to_owned()),
            aud: Some(Audience::One(self.settings.audience.clone())),
            exp: Some(now + self.settings.access_ttl),
            iat: Some(now),
            nbf: Some(now),
            jti: Some(jti.clone()),
            scope: Some(scope.to_owned()),
            client_id: Some(client_id.to_owned()),
            sid: sid.map(str::to_owned),
            ..Claims::default()
        };
        let token = signer.sign(&claims).map_err(|_| GrantError::Unavailable)?;
        self.counters.issued.fetch_add(1, Ordering::Relaxed);
        Ok((token, jti))
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
        let refresh = Token::generate(Kind::Refresh);
        let hash = refresh.hash();
        let (access, jti) = self.access_token(&user.id, &s.client_id, &s.scope, None, now)?;
        self.store
            .create_refresh(
                &hash,
                &RefreshRecord {
                    access_jti: Some(jti),
                    ..record
                },
            )
            .await
            .map_err(unavailable)?;
        tracing::info!(target: "audit", event = "tokens_issued", user = %user.id, client = %s.client_id);
        Ok(Issued {
            access_token: access,
            refresh_token: refresh,
            expires_in: s.access_ttl,
        })
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
            .refresh_token(&hash)
            .await
            .map_err(unavailable)?
            .ok_or(GrantError::InvalidGrant)?;
        if revoked || record.client_id != client_id || now >= record.expires_at {
            return Err(GrantError::InvalidGrant);
        }
        let successor = Token::derived(Kind::Refresh, &self.successor, token.expose());
        let succ_hash = successor.hash();
        let won = self
            .store
            .mark_refresh_used(&hash, now)
            .await
            .map_err(unavailable)?;
        if !won {
            // Used before (or by a concurrent request an instant ago).
            let used_at = match self.store.refresh_token(&hash).await.map_err(unavailable)? {
                Some((r, _)) => r.used_at.unwrap_or(now),
                None => return Err(GrantError::InvalidGrant),
            };
            let successor_unused = match self
                .store
                .refresh_token(&succ_hash)
                .await
                .map_err(unavailable)?
            {
                Some((r, fam_revoked)) => r.used_at.is_none() && !fam_revoked,
                // The winner has not stored it yet: it is certainly unused.
                None => true,
            };
            if now - used_at > self.settings.refresh_grace || !successor_unused {
                self.store
                    .revoke_family(&record.family)
                    .await
                    .map_err(unavailable)?;
                self.counters.reuse_detected.fetch_add(1, Ordering::Relaxed);
                self.counters.revoked.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "audit", event = "refresh_reuse_detected", user = %record.user_id, family = %record.family);
                return Err(GrantError::InvalidGrant);
            }
        }
        let succ_record = RefreshRecord {
            created_at: now,
            expires_at: (now + self.settings.refresh_idle).min(record.family_expires_at),
            used_at: None,
            access_jti: None,
            ..record.clone()
        };
        match self.store.create_refresh(&succ_hash, &succ_record).await {
            Ok(()) | Err(StoreError::Conflict) => {}
            Err(e) => return Err(unavailable(e)),
        }
        let (access, jti) =
            self.access_token(&record.user_id, &record.client_id, &record.scope, None, now)?;
        self.store
            .set_access_jti(&succ_hash, &jti)
            .await
            .map_err(unavailable)?;
        self.counters.refreshed.fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: "audit", event = "tokens_refreshed", user = %record.user_id, retry = !won);
        Ok(Issued {
            access_token: access,
            refresh_token: successor,
            expires_in: self.settings.access_ttl,
        })
    }

    /// Verifies a first-party access token now: signature by a published key, `typ`, `iss`,
    /// `aud`, times with leeway. A token verified before under the same key ring is not
    /// verified again; its times are.
    pub fn verify_access(
        &self,
        token: &str,
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
            // Signature and claims were checked; only time moves.
            self.validation.check(&t.header, &t.claims, now)?;
            return Ok(t);
        }
        let verified = Arc::new(self.verifier(generation).verify_at(token, now)?);
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
            self.store
                .revoke_family(&record.family)
                .await
                .map_err(unavailable)?;
            self.counters.revoked.fetch_add(1, Ordering::Relaxed);
            tracing::info!(target: "audit", event = "refresh_family_revoked", user = %record.user_id, family = %record.family);
        }
        Ok(true)
    }

    /// Revokes the refresh family an access token was issued with.
    pub async fn revoke_family_of_access(&self, jti: &str) -> Result<(), GrantError> {
        if let Some(family) = self
            .store
            .family_of_access(jti)
            .await
            .map_err(unavailable)?
        {
            self.store
                .revoke_family(&family)
                .await
                .map_err(unavailable)?;
            self.counters.revoked.fetch_add(1, Ordering::Relaxed);
            tracing::info!(target: "audit", event = "refresh_family_revoked", family = %family, reason = "logout");
        }
        Ok(())
    }

    /// Revokes every refresh family of a user (disabled or deleted).
    pub async fn revoke_user(&self, user_id: &str) -> Result<u64, GrantError> {
        let n = self
            .store
            .revoke_families_of(user_id)
            .await
            .map_err(unavailable)?;
        self.counters.revoked.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }

    /// Whether `presented` is a well-formed refresh token (refused where an access token belongs).
    pub fn is_refresh_token(presented: &str) -> bool {
        Token::parse(Kind::Refresh, presented).is_some()
    }
}
