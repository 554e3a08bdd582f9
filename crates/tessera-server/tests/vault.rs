//! The key manager with a key vault (keys.backend = "pkcs11" without the device): a vault of the
//! test's own that keeps its keys in memory and can be made to fail, so that every branch of a
//! held key's life is reached: made and stored without private material, signing in the vault,
//! a probe signature that does not verify, destruction after expiry and its retry, a vault
//! down. The real device is in crates/tessera/tests/it/hsm.rs (SoftHSM2).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tessera_core::Stores as _;
use tessera_core::store::KeyStore as _;
use tessera_core::{KeyError, KeyManager, KeyState, KeyVault, MasterKey, TokenSigner};
use tessera_jose::{Algorithm, Claims, Jwk, KeySet, SigningKey, Validation, Verifier};
use tessera_store::MemoryStore;

const T0: i64 = 1_800_000_000;
const RETAIN: i64 = 960;

/// Keys in memory, standing for a device; `down` fails every call, `bad_signatures` makes it
/// sign with the wrong key, `fail_destroy` fails destructions.
#[derive(Debug, Default)]
struct FakeVault {
    keys: Mutex<HashMap<String, SigningKey>>,
    destroyed: Mutex<Vec<String>>,
    down: AtomicBool,
    bad_signatures: AtomicBool,
    fail_destroy: AtomicBool,
}

impl FakeVault {
    fn up(&self) -> Result<(), KeyError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(KeyError::Vault("down".into()));
        }
        Ok(())
    }

    fn held(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.keys.lock().unwrap().keys().cloned().collect();
        kids.sort();
        kids
    }
}

impl KeyVault for FakeVault {
    fn backend(&self) -> &'static str {
        "pkcs11"
    }

    fn concurrency(&self) -> usize {
        2
    }

    fn generate(&self, alg: Algorithm) -> Result<Jwk, KeyError> {
        self.up()?;
        let key = SigningKey::generate(alg, None).unwrap();
        let jwk = key.verifying_key().unwrap().public_jwk().unwrap().clone();
        self.keys.lock().unwrap().insert(key.kid().to_owned(), key);
        Ok(jwk)
    }

    fn sign(&self, kid: &str, alg: Algorithm, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.up()?;
        if self.bad_signatures.load(Ordering::SeqCst) {
            return Ok(SigningKey::generate(alg, None)
                .unwrap()
                .sign(message)
                .unwrap());
        }
        let keys = self.keys.lock().unwrap();
        let key = keys
            .get(kid)
            .ok_or_else(|| KeyError::Key(format!("no key {kid}")))?;
        assert_eq!(key.algorithm(), alg);
        Ok(key.sign(message).unwrap())
    }

    fn destroy(&self, kid: &str) -> Result<(), KeyError> {
        self.up()?;
        if self.fail_destroy.load(Ordering::SeqCst) {
            return Err(KeyError::Vault("destroy refused".into()));
        }
        if self.keys.lock().unwrap().remove(kid).is_some() {
            self.destroyed.lock().unwrap().push(kid.to_owned());
        }
        Ok(())
    }

    fn check(&self, kid: Option<&str>) -> Result<(), KeyError> {
        self.up()?;
        match kid {
            Some(k) if !self.keys.lock().unwrap().contains_key(k) => {
                Err(KeyError::Key(format!("no key {k}")))
            }
            _ => Ok(()),
        }
    }
}

fn master() -> MasterKey {
    MasterKey::from_bytes(&[9u8; 32]).unwrap()
}

async fn manager(
    store: &MemoryStore,
    vault: &Arc<FakeVault>,
    now: i64,
) -> Result<KeyManager<MemoryStore>, KeyError> {
    let v: Arc<dyn KeyVault> = vault.clone();
    KeyManager::start(
        store.clone(),
        master(),
        Some(v),
        Algorithm::EdDSA,
        now,
        RETAIN,
    )
    .await
}

async fn sign(keys: &KeyManager<MemoryStore>) -> Result<String, KeyError> {
    let claims = Claims {
        sub: Some("alice".into()),
        exp: Some(4_000_000_000),
        ..Claims::default()
    };
    let ring = keys.ring();
    ring.signer.as_ref().unwrap().sign(&claims).await
}

fn verifies(keys: &KeyManager<MemoryStore>, token: &str) -> bool {
    let set: KeySet = keys.ring().keys.clone();
    let validation = Validation {
        typ: Some("at+jwt".into()),
        ..Validation::default()
    };
    Verifier::new(set, validation).verify(token).is_ok()
}

/// The first key is made in the vault and signs there; the store holds its public JWK and no
/// private or sealed material; the JWKS publishes it.
#[tokio::test]
async fn a_held_key_is_made_in_the_vault_and_signs_there() {
    let (store, vault) = (MemoryStore::new(), Arc::new(FakeVault::default()));
    let keys = manager(&store, &vault, T0).await.unwrap();
    let stored = store.keys().signing_keys().await.unwrap();
    assert_eq!(stored.len(), 1);
    let k = &stored[0];
    assert!(k.sealed.is_empty(), "nothing sealed for a held key");
    let public = k.public_jwk.as_deref().unwrap();
    assert!(!public.contains("\"d\""), "{public}");
    assert_eq!(vault.held(), vec![k.kid.clone()]);
    assert!(matches!(
        keys.ring().signer.as_ref(),
        Some(TokenSigner::Held { .. })
    ));
    let token = sign(&keys).await.unwrap();
    assert!(verifies(&keys, &token));
    assert!(keys.ring().jwks.contains(&k.kid));
    assert_eq!(keys.states(T0).await.unwrap()[0].backend, "pkcs11");
    assert_eq!(keys.vault_backend(), Some("pkcs11"));
    assert!(keys.vault_ready().await);

    // The vault down: signing fails (the caller answers 503), readiness says so, and both come
    // back with it.
    vault.down.store(true, Ordering::SeqCst);
    assert!(matches!(sign(&keys).await, Err(KeyError::Vault(_))));
    assert!(!keys.vault_ready().await);
    vault.down.store(false, Ordering::SeqCst);
    assert!(verifies(&keys, &sign(&keys).await.unwrap()));
    assert!(keys.vault_ready().await);
}

/// A vault whose new key signs what the key's public half does not verify (a signature format
/// converted wrong): the key is refused, and removed from the vault rather than left there.
#[tokio::test]
async fn a_new_key_whose_probe_does_not_verify_is_refused_and_removed() {
    let (store, vault) = (MemoryStore::new(), Arc::new(FakeVault::default()));
    vault.bad_signatures.store(true, Ordering::SeqCst);
    let e = manager(&store, &vault, T0).await.unwrap_err();
    assert!(e.to_string().contains("does not verify"), "{e}");
    assert!(vault.held().is_empty(), "{:?}", vault.held());
    assert_eq!(vault.destroyed.lock().unwrap().len(), 1);
    assert!(store.keys().signing_keys().await.unwrap().is_empty());
}

/// A rotation makes the next key in the vault; once no token the old key signed can be alive it
/// is unpublished and destroyed in the vault. A destruction that fails (the vault refused) is
/// tried again at the next reload, with nothing else changing.
#[tokio::test]
async fn a_retired_held_key_is_destroyed_and_a_failed_destruction_retried() {
    let (store, vault) = (MemoryStore::new(), Arc::new(FakeVault::default()));
    let keys = manager(&store, &vault, T0).await.unwrap();
    let first = keys.ring().signer.as_ref().unwrap().kid().to_owned();
    let old_token = sign(&keys).await.unwrap();
    let second = keys.rotate(Algorithm::EdDSA, T0 + 10, 0).await.unwrap();
    assert!(second.public_jwk.is_some() && second.sealed.is_empty());
    assert_eq!(keys.ring().signer.as_ref().unwrap().kid(), second.kid);
    assert_eq!(vault.held().len(), 2);
    assert!(
        verifies(&keys, &old_token),
        "the retiring key still verifies"
    );

    // Expired, but the vault refuses to destroy it: it stays, and is retried.
    vault.fail_destroy.store(true, Ordering::SeqCst);
    let expired = T0 + 10 + RETAIN;
    keys.refresh(expired).await.unwrap();
    let states = keys.states(expired).await.unwrap();
    assert_eq!(states[0].state, KeyState::Expired);
    assert!(!keys.ring().jwks.contains(&first), "unpublished");
    assert!(!verifies(&keys, &old_token));
    assert!(vault.held().contains(&first));
    vault.fail_destroy.store(false, Ordering::SeqCst);
    assert!(
        !keys.refresh(expired + 2).await.unwrap(),
        "the ring did not change"
    );
    assert_eq!(
        vault.held(),
        vec![second.kid.clone()],
        "destroyed at the retry"
    );
    assert_eq!(*vault.destroyed.lock().unwrap(), vec![first]);
    // Only once.
    keys.refresh(expired + 4).await.unwrap();
    assert_eq!(vault.destroyed.lock().unwrap().len(), 1);
}

/// A key held by a vault cannot sign without one (a deployment moved back to `store`), and a
/// vault without the signing key (a wrong token, a partition without it) fails the start.
#[tokio::test]
async fn the_signing_key_must_be_in_the_vault_that_signs() {
    let (store, vault) = (MemoryStore::new(), Arc::new(FakeVault::default()));
    let kid = {
        let keys = manager(&store, &vault, T0).await.unwrap();
        keys.ring().signer.as_ref().unwrap().kid().to_owned()
    };
    let e = KeyManager::start(store.clone(), master(), None, Algorithm::EdDSA, T0, RETAIN)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("keys.backend must be pkcs11"), "{e}");
    assert!(e.to_string().contains(&kid), "{e}");
    let empty = Arc::new(FakeVault::default());
    let e = manager(&store, &empty, T0).await.unwrap_err();
    assert!(e.to_string().contains(&kid), "{e}");
}

/// Signatures beyond the vault's sessions wait for one on the runtime; all of them are made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_signatures_at_once_share_the_sessions() {
    let (store, vault) = (MemoryStore::new(), Arc::new(FakeVault::default()));
    let keys = Arc::new(manager(&store, &vault, T0).await.unwrap());
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let keys = Arc::clone(&keys);
            tokio::spawn(async move { sign(&keys).await })
        })
        .collect();
    for t in tasks {
        let token = t.await.unwrap().unwrap();
        assert!(verifies(&keys, &token));
    }
}
