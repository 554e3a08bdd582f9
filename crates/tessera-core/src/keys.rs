//! Signing keys: kept in the store with their private part sealed (AES-256-GCM) under a master
//! key that never enters the store; rotated by adding a key that becomes active after a delay,
//! so verifiers learn it from the JWKS before it signs anything; kept in the JWKS after it is
//! superseded for as long as tokens it signed can live. Or, with a [`KeyVault`] (an HSM through
//! PKCS#11), made and used inside the vault: the store then keeps the public JWK and the key's
//! life, and no private material at all.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use serde::Serialize;
use tessera_jose::{
    Algorithm, EncodedHeader, Jwk, JwkSet, KeySet, Signer, SigningKey, VerifyingKey, b64,
};
use zeroize::Zeroizing;

use crate::store::KeyStore as _;
use crate::store::{Change, StoredKey, Stores};

/// Why key material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The master key is missing, malformed, or unreadable.
    #[error("master key: {0}")]
    Master(String),
    /// A stored key does not open under the master key (wrong master key, or tampering).
    #[error("the stored signing key {0} cannot be opened with this master key")]
    Sealed(String),
    /// The key material is not usable.
    #[error("signing key: {0}")]
    Key(String),
    /// The key vault (the HSM) did not answer, or refused. The text is for logs.
    #[error("key vault: {0}")]
    Vault(String),
}

/// Where signing keys are made and used without their private part ever leaving: a hardware
/// security module, a cloud KMS or a smart card, through PKCS#11. Its calls block (a device
/// answers them): the key manager makes them off the async runtime, at most
/// [`KeyVault::concurrency`] at once.
pub trait KeyVault: Send + Sync + fmt::Debug + 'static {
    /// The backend's name, as `keys list` shows it (`pkcs11`).
    fn backend(&self) -> &'static str;
    /// How many calls it serves at once (its sessions).
    fn concurrency(&self) -> usize;
    /// Makes an `alg` key inside the vault, not extractable, and returns its public JWK with
    /// `kid` (the RFC 7638 thumbprint, under which the vault finds the key from then on) and
    /// `alg`.
    fn generate(&self, alg: Algorithm) -> Result<Jwk, KeyError>;
    /// Signs `message` with the key `kid` as JOSE's `alg` wants it (ES256: r ‖ s, 64 bytes).
    fn sign(&self, kid: &str, alg: Algorithm, message: &[u8]) -> Result<Vec<u8>, KeyError>;
    /// Destroys the key `kid`; nothing happens if it is not there.
    fn destroy(&self, kid: &str) -> Result<(), KeyError>;
    /// Whether the vault answers now (one cheap call, reconnecting if it was lost) and, given
    /// a kid, holds that key.
    fn check(&self, kid: Option<&str>) -> Result<(), KeyError>;
}

/// A vault and the permits that keep its calls within its sessions: a caller beyond them waits
/// on the runtime, not on a blocked thread.
#[derive(Debug, Clone)]
pub struct Vault {
    vault: Arc<dyn KeyVault>,
    permits: Arc<tokio::sync::Semaphore>,
}

impl Vault {
    /// Destroys `kid` in the vault, best effort: a key made there that the store will not hold
    /// would never be found, nor retired.
    async fn forget(&self, kid: &str) {
        let k = kid.to_owned();
        if let Err(e) = self.call(move |v| v.destroy(&k)).await {
            tracing::warn!(kid = %kid, error = %e, "a new key the store does not hold could not be removed from the vault");
        }
    }

    fn new(vault: Arc<dyn KeyVault>) -> Vault {
        let permits = Arc::new(tokio::sync::Semaphore::new(vault.concurrency().max(1)));
        Vault { vault, permits }
    }

    /// Runs `f` on the vault off the runtime. The permit goes with the blocking call, not with
    /// the caller: a request that gives up (a timeout, a client gone) leaves its permit taken
    /// until the device has answered, so a hung device holds at most `concurrency` threads.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn KeyVault) -> Result<T, KeyError> + Send + 'static,
    ) -> Result<T, KeyError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| KeyError::Vault("closed".into()))?;
        let vault = Arc::clone(&self.vault);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(vault.as_ref())
        })
        .await
        .map_err(|_| KeyError::Vault("the signing thread failed".into()))?
    }
}

/// What signs new tokens: a key in memory (opened from the store), or a key held by a vault.
#[derive(Debug)]
pub enum TokenSigner {
    /// A sealed key, opened.
    Local(Signer),
    /// A key that signs inside the vault.
    Held {
        /// The tokens' header, encoded once.
        header: EncodedHeader,
        /// The key's id in the vault.
        kid: String,
        /// The vault, with its permits.
        vault: Vault,
    },
}

impl TokenSigner {
    /// The signing key's id.
    pub fn kid(&self) -> &str {
        match self {
            TokenSigner::Local(s) => s.key().kid(),
            TokenSigner::Held { kid, .. } => kid,
        }
    }

    /// The algorithm it signs with.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            TokenSigner::Local(s) => s.key().algorithm(),
            TokenSigner::Held { header, .. } => header.algorithm(),
        }
    }

    /// Signs `claims` as a JWT. A held key signs in the vault, off the runtime.
    pub async fn sign<C: Serialize + ?Sized>(&self, claims: &C) -> Result<String, KeyError> {
        match self {
            TokenSigner::Local(s) => s.sign(claims).map_err(|e| KeyError::Key(e.to_string())),
            TokenSigner::Held { header, kid, vault } => {
                let input = header
                    .signing_input(claims)
                    .map_err(|e| KeyError::Key(e.to_string()))?;
                let (kid, alg) = (kid.clone(), header.algorithm());
                let (input, signature) = vault
                    .call(move |v| {
                        let signature = v.sign(&kid, alg, input.as_bytes())?;
                        Ok((input, signature))
                    })
                    .await?;
                header
                    .finish(input, &signature)
                    .map_err(|e| KeyError::Vault(format!("a signature of the wrong size: {e}")))
            }
        }
    }
}

/// The master key: 256 bits that seal private keys at rest and from which the service's other
/// secrets are derived.
pub struct MasterKey {
    aead: RandomizedNonceKey,
    bytes: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

const NONCE: usize = 12;

impl MasterKey {
    /// A master key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<MasterKey, KeyError> {
        if bytes.len() != 32 {
            return Err(KeyError::Master(
                "it must be 32 bytes (43 base64url characters)".into(),
            ));
        }
        let aead = RandomizedNonceKey::new(&AES_256_GCM, bytes)
            .map_err(|_| KeyError::Master("rejected by the cipher".into()))?;
        let mut own = Zeroizing::new([0u8; 32]);
        own.copy_from_slice(bytes);
        Ok(MasterKey { aead, bytes: own })
    }

    /// A master key from base64url text (`TESSERA_MASTER_KEY`).
    pub fn from_text(text: &str) -> Result<MasterKey, KeyError> {
        let bytes = Zeroizing::new(
            b64::decode(text.trim().as_bytes())
                .map_err(|_| KeyError::Master("it is not base64url".into()))?,
        );
        MasterKey::from_bytes(&bytes)
    }

    /// Reads `path`, or creates it with a new random key readable by its owner only.
    pub fn load_or_create(path: &Path) -> Result<MasterKey, KeyError> {
        match std::fs::read_to_string(path) {
            Ok(text) => MasterKey::from_text(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = Zeroizing::new([0u8; 32]);
                aws_lc_rs::rand::fill(bytes.as_mut())
                    .map_err(|_| KeyError::Master("no randomness".into()))?;
                let text = Zeroizing::new(b64::encode(bytes.as_ref()));
                write_private(path, text.as_bytes()).map_err(|e| {
                    KeyError::Master(format!("cannot create {}: {e}", path.display()))
                })?;
                MasterKey::from_bytes(bytes.as_ref())
            }
            Err(e) => Err(KeyError::Master(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// An HMAC-SHA256 key derived for `purpose` (HMAC of the purpose under the master key).
    pub fn derive(&self, purpose: &str) -> aws_lc_rs::hmac::Key {
        let outer = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, self.bytes.as_ref());
        let tag = aws_lc_rs::hmac::sign(&outer, purpose.as_bytes());
        aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, tag.as_ref())
    }

    /// Seals `plain` bound to `context` (the key id): nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, plain: &[u8], context: &str) -> Result<Vec<u8>, KeyError> {
        let mut buf = plain.to_vec();
        let nonce = self
            .aead
            .seal_in_place_append_tag(Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| KeyError::Key("sealing failed".into()))?;
        let mut out = nonce.as_ref().to_vec();
        out.extend_from_slice(&buf);
        zeroize::Zeroize::zeroize(&mut buf);
        Ok(out)
    }

    /// Opens what [`MasterKey::seal`] made for the same `context`.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let bad = || KeyError::Sealed(context.to_owned());
        if sealed.len() < NONCE + 16 {
            return Err(bad());
        }
        let (nonce, body) = sealed.split_at(NONCE);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?;
        let mut buf = Zeroizing::new(body.to_vec());
        let len = self
            .aead
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| bad())?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// Generates a key for `alg` and seals it.
pub fn new_key(
    master: &MasterKey,
    alg: Algorithm,
    now: i64,
    activates_at: i64,
) -> Result<StoredKey, KeyError> {
    let key = SigningKey::generate(alg, None).map_err(|e| KeyError::Key(e.to_string()))?;
    let jwk = key.to_jwk().map_err(|e| KeyError::Key(e.to_string()))?;
    let json = Zeroizing::new(serde_json::to_vec(&jwk).map_err(|e| KeyError::Key(e.to_string()))?);
    Ok(StoredKey {
        kid: key.kid().to_owned(),
        alg: alg.name().to_owned(),
        sealed: master.seal(&json, key.kid())?,
        public_jwk: None,
        created_at: now,
        activates_at,
    })
}

/// Makes an `alg` key in `vault`, checks that it signs what its public key verifies (a vault's
/// signature format, converted wrong, would otherwise be found by every verifier), and returns
/// what the store keeps of it: no private material.
async fn new_held_key(
    vault: &Vault,
    alg: Algorithm,
    now: i64,
    activates_at: i64,
) -> Result<StoredKey, KeyError> {
    if alg.is_symmetric() {
        return Err(KeyError::Key(format!(
            "{} is a shared secret: a key vault holds EdDSA, ES256, RS256 or PS256 keys",
            alg.name()
        )));
    }
    let jwk = vault.call(move |v| v.generate(alg)).await?;
    let kid = jwk.kid.clone().unwrap_or_default();
    match checked_held_key(vault, &jwk, alg).await {
        Ok(json) => Ok(StoredKey {
            kid,
            alg: alg.name().to_owned(),
            sealed: Vec::new(),
            public_jwk: Some(json),
            created_at: now,
            activates_at,
        }),
        Err(e) => {
            vault.forget(&kid).await;
            Err(e)
        }
    }
}

/// The public JWK (as the store keeps it) of a key just made in `vault`, once a probe it
/// signed has verified.
async fn checked_held_key(vault: &Vault, jwk: &Jwk, alg: Algorithm) -> Result<String, KeyError> {
    let public =
        VerifyingKey::from_jwk(jwk, Some(alg)).map_err(|e| KeyError::Key(e.to_string()))?;
    let kid = public.kid().to_owned();
    const PROBE: &[u8] = b"tessera: a new key signs";
    let probe_kid = kid.clone();
    let signature = vault.call(move |v| v.sign(&probe_kid, alg, PROBE)).await?;
    public.verify_signature(PROBE, &signature).map_err(|_| {
        KeyError::Vault(format!(
            "the new key {kid} signs what its public key does not verify"
        ))
    })?;
    serde_json::to_string(public.public_jwk().unwrap_or(jwk))
        .map_err(|e| KeyError::Key(e.to_string()))
}

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Published, not signing yet.
    Next,
    /// Signing.
    Active,
    /// Superseded; published until the tokens it signed have expired.
    Retiring,
    /// Superseded long enough ago that no token it signed is still valid.
    Expired,
}

/// A key's state at a given time, for `tessera keys list`.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: String,
    /// Where its private part is: `store` (sealed under the master key) or `pkcs11` (held by
    /// the HSM).
    pub backend: &'static str,
    /// State now.
    pub state: KeyState,
    /// From when it signs.
    pub activates_at: i64,
    /// When a newer key took over, if one did.
    pub superseded_at: Option<i64>,
    /// When it leaves the JWKS, if superseded.
    pub unpublished_at: Option<i64>,
}

/// States of `keys` at `now`, oldest first. A superseded key stays published for `retain`
/// seconds (the longest access-token lifetime plus leeway).
pub fn key_states(keys: &[StoredKey], now: i64, retain: i64) -> Vec<KeyInfo> {
    let mut sorted: Vec<&StoredKey> = keys.iter().collect();
    // `kid` breaks ties, so that instances that made a first key at the same moment agree on
    // which one signs.
    sorted.sort_by(|a, b| {
        (a.activates_at, a.created_at, &a.kid).cmp(&(b.activates_at, b.created_at, &b.kid))
    });
    // The active key: the last one whose activation has come.
    let active = sorted.iter().rposition(|k| k.activates_at <= now);
    sorted
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let superseded_at = match active {
                Some(a) if i < a => sorted.get(i + 1).map(|n| n.activates_at),
                _ => None,
            };
            let unpublished_at = superseded_at.map(|s| s.saturating_add(retain));
            let state = match (active, superseded_at, unpublished_at) {
                (_, _, Some(u)) if now >= u => KeyState::Expired,
                (_, Some(_), _) => KeyState::Retiring,
                (Some(a), None, _) if i == a => KeyState::Active,
                _ => KeyState::Next,
            };
            KeyInfo {
                kid: k.kid.clone(),
                alg: k.alg.clone(),
                backend: if k.public_jwk.is_some() {
                    "pkcs11"
                } else {
                    "store"
                },
                state,
                activates_at: k.activates_at,
                superseded_at,
                unpublished_at,
            }
        })
        .collect()
}

/// The entity tag of a JWKS document: the first 128 bits of its SHA-256, base64url, quoted.
fn jwks_etag(jwks: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, jwks.as_bytes());
    format!("\"{}\"", b64::encode(&digest.as_ref()[..16]))
}

/// What the server signs and verifies with at a moment: built from the stored keys.
#[derive(Debug)]
pub struct KeyRing {
    /// Signs new tokens (`None` until a key is active).
    pub signer: Option<TokenSigner>,
    /// Verifies tokens: every published key, and the HMAC secret if one is in use.
    pub keys: KeySet,
    /// The JWKS document (public keys only), serialized once.
    pub jwks: Arc<str>,
    /// Its strong entity tag (`"…"`: 128 bits of its SHA-256), the same on every instance that
    /// publishes the same keys.
    pub jwks_etag: Arc<str>,
    /// The earliest future time at which a key changes state (rebuild then).
    pub next_change: Option<i64>,
}

impl KeyRing {
    /// Opens the stored keys that are still published and arranges them at `now`.
    pub fn build(
        stored: &[StoredKey],
        master: &MasterKey,
        now: i64,
        retain: i64,
    ) -> Result<KeyRing, KeyError> {
        Self::build_with(stored, master, None, now, retain)
    }

    /// [`KeyRing::build`] where keys held by `vault` sign in it.
    fn build_with(
        stored: &[StoredKey],
        master: &MasterKey,
        vault: Option<&Vault>,
        now: i64,
        retain: i64,
    ) -> Result<KeyRing, KeyError> {
        let states = key_states(stored, now, retain);
        let mut signer = None;
        let mut verifying = Vec::new();
        let mut next_change: Option<i64> = None;
        let mut soonest = |t: i64| {
            if t > now {
                next_change = Some(next_change.map_or(t, |c: i64| c.min(t)));
            }
        };
        for info in &states {
            soonest(info.activates_at);
            if let Some(u) = info.unpublished_at {
                soonest(u);
            }
            if info.state == KeyState::Expired {
                continue;
            }
            let Some(k) = stored.iter().find(|k| k.kid == info.kid) else {
                continue;
            };
            let alg = Algorithm::from_name(&k.alg)
                .ok_or_else(|| KeyError::Key(format!("unknown algorithm {}", k.alg)))?;
            let bad = |e: tessera_jose::Error| KeyError::Key(format!("{}: {e}", k.kid));
            if let Some(public) = &k.public_jwk {
                let jwk: Jwk =
                    serde_json::from_str(public).map_err(|e| KeyError::Key(e.to_string()))?;
                let key = VerifyingKey::from_public_jwk(&jwk).map_err(bad)?;
                if key.algorithm() != alg || key.kid() != k.kid {
                    return Err(KeyError::Key(format!(
                        "the public key stored for {} is another key",
                        k.kid
                    )));
                }
                verifying.push(key);
                if info.state == KeyState::Active {
                    let Some(v) = vault else {
                        return Err(KeyError::Key(format!(
                            "the signing key {} is held by a PKCS#11 token: keys.backend must be \
                             pkcs11 to sign with it",
                            k.kid
                        )));
                    };
                    signer = Some(TokenSigner::Held {
                        header: EncodedHeader::new(alg, &k.kid, Some("at+jwt")).map_err(bad)?,
                        kid: k.kid.clone(),
                        vault: v.clone(),
                    });
                }
                continue;
            }
            let plain = master.open(&k.sealed, &k.kid)?;
            let jwk: Jwk =
                serde_json::from_slice(&plain).map_err(|e| KeyError::Key(e.to_string()))?;
            let key = SigningKey::from_jwk(&jwk, Some(alg)).map_err(bad)?;
            verifying.push(key.verifying_key().map_err(bad)?);
            if info.state == KeyState::Active {
                signer = Some(TokenSigner::Local(
                    Signer::new(key, Some("at+jwt")).map_err(bad)?,
                ));
            }
        }
        let keys = KeySet::new(verifying).map_err(|e| KeyError::Key(e.to_string()))?;
        let jwks: JwkSet = keys.to_jwks();
        let jwks = serde_json::to_string(&jwks).map_err(|e| KeyError::Key(e.to_string()))?;
        Ok(KeyRing {
            signer,
            keys,
            jwks_etag: jwks_etag(&jwks).into(),
            jwks: jwks.into(),
            next_change,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let m = MasterKey::from_bytes(&[7u8; 32]).unwrap();
        let sealed = m.seal(b"private", "kid1").unwrap();
        assert_eq!(&*m.open(&sealed, "kid1").unwrap(), b"private");
        assert!(m.open(&sealed, "kid2").is_err());
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(m.open(&bad, "kid1").is_err());
        let other = MasterKey::from_bytes(&[8u8; 32]).unwrap();
        assert!(other.open(&sealed, "kid1").is_err());
        assert!(MasterKey::from_bytes(&[1u8; 16]).is_err());
        assert!(!format!("{m:?}").contains('7'));
    }

    #[test]
    fn rotation_states() {
        let m = MasterKey::from_bytes(&[7u8; 32]).unwrap();
        let a = new_key(&m, Algorithm::EdDSA, 0, 0).unwrap();
        let b = new_key(&m, Algorithm::EdDSA, 100, 160).unwrap();
        let keys = vec![a.clone(), b.clone()];
        let at = |now| {
            key_states(&keys, now, 1000)
                .into_iter()
                .map(|i| i.state)
                .collect::<Vec<_>>()
        };
        assert_eq!(at(120), [KeyState::Active, KeyState::Next]);
        assert_eq!(at(160), [KeyState::Retiring, KeyState::Active]);
        assert_eq!(at(1159), [KeyState::Retiring, KeyState::Active]);
        assert_eq!(at(1160), [KeyState::Expired, KeyState::Active]);
        let ring = KeyRing::build(&keys, &m, 120, 1000).unwrap();
        assert_eq!(ring.signer.as_ref().unwrap().kid(), a.kid);
        assert_eq!(ring.keys.keys().len(), 2);
        assert_eq!(ring.next_change, Some(160));
        assert!(ring.jwks.contains(&b.kid) && !ring.jwks.contains("\"d\""));
        let etag = ring.jwks_etag.clone();
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() == 24,
            "{etag}"
        );
        let ring = KeyRing::build(&keys, &m, 2000, 1000).unwrap();
        assert_ne!(ring.jwks_etag, etag, "another document, another tag");
        assert_eq!(
            KeyRing::build(&keys, &m, 2001, 1000).unwrap().jwks_etag,
            ring.jwks_etag
        );
        assert_eq!(ring.keys.keys().len(), 1);
        assert_eq!(ring.signer.as_ref().unwrap().kid(), b.kid);
    }
}

/// The readiness check of a vault in flight (since when), and the last answer.
#[derive(Debug)]
struct VaultCheck {
    started: std::sync::Mutex<Option<std::time::Instant>>,
    last: std::sync::atomic::AtomicBool,
}

/// Keeps the current [`KeyRing`] of a server: built at start, rebuilt when the stored keys
/// change (a rotation by the CLI or another instance) or when a key changes state.
#[derive(Debug)]
pub struct KeyManager<S> {
    store: S,
    master: MasterKey,
    /// Where new keys are made, when not in the store.
    vault: Option<Vault>,
    /// The held keys destroyed in the vault after they expired.
    destroyed: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The vault's readiness checks.
    check: Arc<VaultCheck>,
    retain: i64,
    ring: std::sync::RwLock<Arc<KeyRing>>,
    /// The kids and activation times the ring was built from.
    built_from: std::sync::Mutex<Vec<(String, i64)>>,
    /// Counts rebuilds: whatever was verified under an older ring must be verified again.
    generation: std::sync::atomic::AtomicU64,
}

impl<S: Stores> KeyManager<S> {
    /// Loads the keys, creating a first `alg` key (active at once) if the store has none; new
    /// keys are made in `vault` when there is one, else sealed under `master` in the store.
    /// Superseded keys stay published for `retain` seconds.
    pub async fn start(
        store: S,
        master: MasterKey,
        vault: Option<Arc<dyn KeyVault>>,
        alg: Algorithm,
        now: i64,
        retain: i64,
    ) -> Result<KeyManager<S>, KeyError> {
        let vault = vault.map(Vault::new);
        let stored = store
            .keys()
            .signing_keys()
            .await
            .map_err(|e| KeyError::Key(e.to_string()))?;
        if stored.is_empty() {
            let key = match &vault {
                Some(v) => new_held_key(v, alg, now, now).await?,
                None => new_key(&master, alg, now, now)?,
            };
            // Instances starting together may each make one: all are stored (their kids
            // differ), the one sorting last by kid signs, the others retire as any superseded
            // key does (and, held by a vault, are destroyed there then).
            match store.keys().add_signing_key(&key).await {
                Ok(()) => store.announce(vec![Change::Keys]).await,
                Err(crate::StoreError::Conflict) => {}
                Err(e) => {
                    if let Some(v) = &vault {
                        v.forget(&key.kid).await;
                    }
                    return Err(KeyError::Key(e.to_string()));
                }
            }
            tracing::info!(target: "audit", event = "key_created", kid = %key.kid, alg = %key.alg);
        }
        let manager = KeyManager {
            store,
            master,
            vault,
            destroyed: std::sync::Mutex::new(std::collections::HashSet::new()),
            check: Arc::new(VaultCheck {
                started: std::sync::Mutex::new(None),
                last: std::sync::atomic::AtomicBool::new(true),
            }),
            retain,
            ring: std::sync::RwLock::new(Arc::new(KeyRing {
                signer: None,
                keys: KeySet::default(),
                jwks: "{\"keys\":[]}".into(),
                jwks_etag: jwks_etag("{\"keys\":[]}").into(),
                next_change: None,
            })),
            built_from: std::sync::Mutex::new(Vec::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
        };
        manager.refresh(now).await?;
        // The key that signs must be in the vault that signs with it: a wrong token label or
        // an HSM partition without the key fails the start rather than every issuance.
        if let (Some(v), Some(TokenSigner::Held { kid, .. })) =
            (&manager.vault, &manager.ring().signer)
        {
            let kid = kid.clone();
            v.call(move |v| v.check(Some(&kid))).await?;
        }
        Ok(manager)
    }

    /// How many times the ring was rebuilt.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The ring in force.
    pub fn ring(&self) -> Arc<KeyRing> {
        Arc::clone(&self.ring.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Rebuilds the ring if the stored keys changed or a key changed state since the last build.
    pub async fn refresh(&self, now: i64) -> Result<bool, KeyError> {
        let stored = self
            .store
            .keys()
            .signing_keys()
            .await
            .map_err(|e| KeyError::Key(e.to_string()))?;
        let mut ids: Vec<(String, i64)> = stored
            .iter()
            .map(|k| (k.kid.clone(), k.activates_at))
            .collect();
        ids.sort();
        let due = self.ring().next_change.is_some_and(|t| t <= now);
        // Every reload, not only when the ring changes: a destruction that failed (the vault
        // was down) is tried again at the next.
        self.destroy_expired(&stored, now).await;
        {
            let built = self.built_from.lock().unwrap_or_else(|e| e.into_inner());
            if *built == ids && !due {
                return Ok(false);
            }
        }
        let ring =
            KeyRing::build_with(&stored, &self.master, self.vault.as_ref(), now, self.retain)?;
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
        *self.built_from.lock().unwrap_or_else(|e| e.into_inner()) = ids;
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(true)
    }

    /// Destroys in the vault the held keys no token they signed can outlive (they left the
    /// JWKS). Every instance tries; destroying a key that is gone does nothing. A failure is
    /// logged and tried again at the next reload. Each instance remembers what it destroyed, so
    /// a reload asks the vault nothing when nothing expired (after a restart, one search per
    /// expired held key).
    async fn destroy_expired(&self, stored: &[StoredKey], now: i64) {
        let Some(vault) = &self.vault else { return };
        for info in key_states(stored, now, self.retain) {
            let held = stored
                .iter()
                .any(|k| k.kid == info.kid && k.public_jwk.is_some());
            if !held || info.state != KeyState::Expired {
                continue;
            }
            if self
                .destroyed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&info.kid)
            {
                continue;
            }
            let kid = info.kid.clone();
            match vault.call(move |v| v.destroy(&kid)).await {
                Ok(()) => {
                    tracing::info!(target: "audit", event = "key_destroyed", kid = %info.kid, backend = vault.vault.backend());
                    self.destroyed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(info.kid);
                }
                Err(e) => {
                    tracing::warn!(kid = %info.kid, error = %e, "an expired key could not be destroyed in the vault; trying again later");
                }
            }
        }
    }

    /// The key vault, if keys are made in one.
    pub fn vault_backend(&self) -> Option<&'static str> {
        self.vault.as_ref().map(|v| v.vault.backend())
    }

    /// Whether the key vault answers and holds the key that signs (true without a vault). Off
    /// the runtime, and outside the signing permits (so a busy vault is not called down); one
    /// check at a time: a caller that finds one running gets the last answer.
    /// A check that has not answered within a second says the vault is not ready.
    pub async fn vault_ready(&self) -> bool {
        use std::sync::atomic::Ordering;
        let Some(v) = &self.vault else { return true };
        {
            let mut started = self.check.started.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = *started {
                return t.elapsed() < std::time::Duration::from_secs(1)
                    && self.check.last.load(Ordering::SeqCst);
            }
            *started = Some(std::time::Instant::now());
        }
        let kid = match &self.ring().signer {
            Some(TokenSigner::Held { kid, .. }) => Some(kid.clone()),
            _ => None,
        };
        let vault = Arc::clone(&v.vault);
        let check = Arc::clone(&self.check);
        // The blocking half records the answer, so a caller that stops waiting loses nothing.
        tokio::task::spawn_blocking(move || {
            let ok = vault.check(kid.as_deref()).is_ok();
            check.last.store(ok, Ordering::SeqCst);
            *check.started.lock().unwrap_or_else(|e| e.into_inner()) = None;
            ok
        })
        .await
        .unwrap_or(false)
    }

    /// Adds a new `alg` key that signs from `now + delay` (published at once). Keys are ordered
    /// by activation time (ties broken by kid, so that instances agree), and times are seconds:
    /// two keys made in the same second with no delay used to share an activation time, and the
    /// newer one signed only if its random kid sorted last. So the new key's activation is moved
    /// past any stored key's that it would equal: a newer key always takes over from an older one
    /// activating at the same moment (a second later at most). A key planned for later (a
    /// longer delay) is not overtaken: it still takes over at its own time.
    pub async fn rotate(
        &self,
        alg: Algorithm,
        now: i64,
        delay: i64,
    ) -> Result<StoredKey, KeyError> {
        let taken: std::collections::HashSet<i64> = self
            .store
            .keys()
            .signing_keys()
            .await
            .map_err(|e| KeyError::Key(e.to_string()))?
            .iter()
            .map(|k| k.activates_at)
            .collect();
        let mut activates_at = now.saturating_add(delay.max(0));
        while taken.contains(&activates_at) {
            activates_at = activates_at.saturating_add(1);
        }
        let key = match &self.vault {
            Some(v) => new_held_key(v, alg, now, activates_at).await?,
            None => new_key(&self.master, alg, now, activates_at)?,
        };
        if let Err(e) = self.store.keys().add_signing_key(&key).await {
            if let Some(v) = &self.vault {
                v.forget(&key.kid).await;
            }
            return Err(KeyError::Key(e.to_string()));
        }
        self.store.announce(vec![Change::Keys]).await;
        tracing::info!(target: "audit", event = "key_rotated", kid = %key.kid, alg = %key.alg, activates_at = key.activates_at);
        self.refresh(now).await?;
        Ok(key)
    }

    /// Every key's state at `now`.
    pub async fn states(&self, now: i64) -> Result<Vec<KeyInfo>, KeyError> {
        let stored = self
            .store
            .keys()
            .signing_keys()
            .await
            .map_err(|e| KeyError::Key(e.to_string()))?;
        Ok(key_states(&stored, now, self.retain))
    }
}
