//! tessera's signing keys in a PKCS#11 token: a hardware security module, a cloud KMS's PKCS#11
//! library, a smart card, or SoftHSM2 for tests. Keys are generated inside the token
//! (`CKA_SENSITIVE`, not `CKA_EXTRACTABLE`), found by their kid (`CKA_ID` and `CKA_LABEL`), and
//! every signature is the token's (`C_Sign`): the process never holds a private key.
//!
//! [`Pkcs11Vault`] is a [`KeyVault`]: its calls block, and the key manager runs them off the
//! async runtime, at most [`KeyVault::concurrency`] at once, each on a session of the pool. The
//! token is logged in once per connection. A call that fails at the token marks the connection
//! lost: the next call (at most one a second) finalizes the module, initializes it again and
//! logs in, so a token that comes back is used again without a restart. A PIN the token refuses
//! then is never tried again (tokens lock, some wipe, after a few wrong PINs): the process needs
//! a restart with the right one.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use tessera_core::{KeyError, KeyVault};
use tessera_jose::{Algorithm, Jwk, b64};
use zeroize::Zeroizing;

/// `CKA_EC_PARAMS` of P-256: the DER of OID 1.2.840.10045.3.1.7.
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// `CKA_EC_PARAMS` of Ed25519: the DER of OID 1.3.101.112 (RFC 8410).
const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// How often a lost token is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Where the token is and how to log in.
pub struct Pkcs11Settings {
    /// The PKCS#11 library (`libsofthsm2.so`, the HSM vendor's, the cloud KMS's).
    pub module: PathBuf,
    /// The label of the token the keys live in.
    pub token_label: String,
    /// The user PIN.
    pub pin: Zeroizing<String>,
    /// Sessions (and so signatures) at once.
    pub sessions: usize,
}

impl fmt::Debug for Pkcs11Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Settings")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}

/// Why the token could not be used at start: one sentence each.
#[derive(Debug)]
pub enum OpenError {
    /// The PIN was refused.
    Pin,
    /// The token's PIN is locked (too many wrong ones).
    PinLocked,
    /// Anything else: the module, the token, the login.
    Other(String),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Pin => f.write_str("the PKCS#11 token refused the PIN"),
            OpenError::PinLocked => f.write_str("the PKCS#11 token's PIN is locked"),
            OpenError::Other(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for OpenError {}

/// Signing keys in a PKCS#11 token.
pub struct Pkcs11Vault {
    settings: Pkcs11Settings,
    state: Mutex<State>,
}

impl fmt::Debug for Pkcs11Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Vault")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    conn: Option<Arc<Conn>>,
    /// A lost connection still in use by calls that have not returned: the module is
    /// initialized again only once they have (and the connection finalized it).
    lost: Option<Weak<Conn>>,
    last_attempt: Option<Instant>,
    last_error: String,
    /// The token refused the PIN on a reconnection: it is not offered again.
    pin_refused: bool,
}

/// One initialization of the module, logged in to the token.
struct Conn {
    ctx: Option<Pkcs11>,
    slot: Slot,
    /// The session that logged in: while it is open, the application stays logged in.
    anchor: Mutex<Option<Session>>,
    /// Idle signing sessions.
    idle: Mutex<Vec<Session>>,
    /// Private-key handles by kid.
    handles: Mutex<HashMap<String, ObjectHandle>>,
    broken: std::sync::atomic::AtomicBool,
}

fn ck(what: &str, e: CkError) -> KeyError {
    KeyError::Vault(describe(what, &e))
}

/// A PKCS#11 failure in a few words: the call and the return value's name.
fn describe(what: &str, e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, f) => format!("{what}: {f} returned {rv:?}"),
        other => format!("{what}: {other}"),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Conn {
    fn connect(settings: &Pkcs11Settings) -> Result<Conn, OpenError> {
        let other = |what: &str, e: CkError| OpenError::Other(describe(what, &e));
        let ctx = Pkcs11::new(&settings.module).map_err(|e| {
            OpenError::Other(format!(
                "cannot load the PKCS#11 module {}: {e}",
                settings.module.display()
            ))
        })?;
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| other("initializing the PKCS#11 module", e))?;
        let mut conn = Conn {
            ctx: Some(ctx),
            slot: Slot::try_from(0u64).map_err(|e| other("slot", e))?,
            anchor: Mutex::new(None),
            idle: Mutex::new(Vec::new()),
            handles: Mutex::new(HashMap::new()),
            broken: std::sync::atomic::AtomicBool::new(false),
        };
        // From here on, dropping `conn` finalizes the module.
        let ctx = conn.ctx()?.clone();
        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| other("listing the PKCS#11 slots", e))?;
        conn.slot = slots
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s)
                    .is_ok_and(|i| i.label().trim_end() == settings.token_label)
            })
            .ok_or_else(|| {
                OpenError::Other(format!(
                    "no PKCS#11 token is labelled {:?} in {}",
                    settings.token_label,
                    settings.module.display()
                ))
            })?;
        let anchor = ctx
            .open_rw_session(conn.slot)
            .map_err(|e| other("opening a PKCS#11 session", e))?;
        let pin = AuthPin::new(settings.pin.as_str().into());
        match anchor.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid, _)) => {
                return Err(OpenError::Pin);
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => return Err(OpenError::PinLocked),
            Err(e) => return Err(other("logging in to the PKCS#11 token", e)),
        }
        *lock(&conn.anchor) = Some(anchor);
        Ok(conn)
    }

    fn ctx(&self) -> Result<&Pkcs11, OpenError> {
        self.ctx
            .as_ref()
            .ok_or_else(|| OpenError::Other("the PKCS#11 module is finalized".into()))
    }

    /// A session for one call: an idle one, or a new one.
    fn session(&self) -> Result<Session, KeyError> {
        if let Some(s) = lock(&self.idle).pop() {
            return Ok(s);
        }
        let ctx = self
            .ctx
            .as_ref()
            .ok_or_else(|| KeyError::Vault("finalized".into()))?;
        ctx.open_rw_session(self.slot)
            .map_err(|e| ck("opening a PKCS#11 session", e))
    }

    /// Runs `f` on a session; a failure of the token marks the connection lost (the session is
    /// dropped with it).
    fn with_session<T>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, CkError>,
        what: &str,
    ) -> Result<T, KeyError> {
        let session = self.session().inspect_err(|_| self.lose())?;
        match f(&session) {
            Ok(v) => {
                lock(&self.idle).push(session);
                Ok(v)
            }
            Err(e) => {
                self.lose();
                Err(ck(what, e))
            }
        }
    }

    fn lose(&self) {
        self.broken.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn is_lost(&self) -> bool {
        self.broken.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The private key `kid`, found once per connection.
    fn private_key(&self, kid: &str) -> Result<ObjectHandle, KeyError> {
        if let Some(h) = lock(&self.handles).get(kid) {
            return Ok(*h);
        }
        let template = [
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(kid.as_bytes().to_vec()),
        ];
        let found = self.with_session(|s| s.find_objects(&template), "finding a key")?;
        let handle = *found.first().ok_or_else(|| {
            KeyError::Key(format!("the PKCS#11 token holds no private key {kid}"))
        })?;
        lock(&self.handles).insert(kid.to_owned(), handle);
        Ok(handle)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Sessions first (they close themselves), then the module.
        lock(&self.idle).clear();
        lock(&self.anchor).take();
        if let Some(ctx) = self.ctx.take() {
            let _ = ctx.finalize();
        }
    }
}

impl Pkcs11Vault {
    /// Loads the module, finds the token by its label and logs in: a wrong PIN, a module that
    /// does not load or a token that is not there fails here, at start.
    pub fn open(settings: Pkcs11Settings) -> Result<Pkcs11Vault, OpenError> {
        let conn = Conn::connect(&settings)?;
        Ok(Pkcs11Vault {
            settings,
            state: Mutex::new(State {
                conn: Some(Arc::new(conn)),
                ..State::default()
            }),
        })
    }

    /// The connection in use, or a new one if it was lost (at most one attempt a second).
    fn conn(&self) -> Result<Arc<Conn>, KeyError> {
        let mut st = lock(&self.state);
        if let Some(c) = &st.conn {
            if !c.is_lost() {
                return Ok(Arc::clone(c));
            }
            tracing::warn!("the PKCS#11 token was lost: reconnecting");
            st.lost = Some(Arc::downgrade(c));
            st.conn = None;
        }
        if st.pin_refused {
            return Err(KeyError::Vault(
                "the PKCS#11 token refused the PIN when tessera logged in again: it is not \
                 offered again (a token locks after a few wrong PINs); restart with the right one"
                    .into(),
            ));
        }
        if st.lost.as_ref().is_some_and(|w| w.strong_count() > 0) {
            return Err(KeyError::Vault(
                "the lost PKCS#11 connection is still closing".into(),
            ));
        }
        if st.last_attempt.is_some_and(|t| t.elapsed() < RETRY) {
            return Err(KeyError::Vault(st.last_error.clone()));
        }
        st.last_attempt = Some(Instant::now());
        match Conn::connect(&self.settings) {
            Ok(c) => {
                let c = Arc::new(c);
                st.conn = Some(Arc::clone(&c));
                st.lost = None;
                tracing::info!("the PKCS#11 token answers again: logged in");
                Ok(c)
            }
            Err(OpenError::Pin | OpenError::PinLocked) => {
                st.pin_refused = true;
                tracing::error!(
                    "the PKCS#11 token refused the PIN when tessera logged in again: no more \
                     attempts; no token is issued until tessera restarts with the right PIN"
                );
                Err(KeyError::Vault("the PKCS#11 token refused the PIN".into()))
            }
            Err(e) => {
                st.last_error = format!("the PKCS#11 token is unavailable: {e}");
                Err(KeyError::Vault(st.last_error.clone()))
            }
        }
    }

    fn generate_in(conn: &Conn, alg: Algorithm) -> Result<Jwk, KeyError> {
        // A random id while the kid (the thumbprint of the public key) is not known yet.
        let mut temp = [0u8; 16];
        aws_lc_rs::rand::fill(&mut temp).map_err(|_| KeyError::Key("no randomness".into()))?;
        let temp = format!("tessera-new-{}", b64::encode(&temp));
        // Each part may do one thing: the private key signs, the public key verifies.
        let mut public = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::Id(temp.as_bytes().to_vec()),
            Attribute::Label(temp.as_bytes().to_vec()),
        ];
        let private = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Id(temp.as_bytes().to_vec()),
            Attribute::Label(temp.as_bytes().to_vec()),
        ];
        let mechanism = match alg {
            Algorithm::EdDSA => {
                public.push(Attribute::EcParams(ED25519.to_vec()));
                Mechanism::EccEdwardsKeyPairGen
            }
            Algorithm::ES256 => {
                public.push(Attribute::EcParams(P256.to_vec()));
                Mechanism::EccKeyPairGen
            }
            Algorithm::RS256 | Algorithm::PS256 => {
                public.push(Attribute::ModulusBits(2048u64.into()));
                public.push(Attribute::PublicExponent(vec![1, 0, 1]));
                Mechanism::RsaPkcsKeyPairGen
            }
            _ => {
                return Err(KeyError::Key(format!(
                    "{} is not a key a PKCS#11 token holds for tessera",
                    alg.name()
                )));
            }
        };
        let (pub_handle, priv_handle) = conn.with_session(
            |s| s.generate_key_pair(&mechanism, &public, &private),
            "generating a key pair",
        )?;
        let named = Self::name_new_pair(conn, alg, pub_handle, priv_handle);
        let (mut jwk, kid) = match named {
            Ok(named) => named,
            Err(e) => {
                // A pair that is not named would never be found, nor destroyed: remove it now.
                for object in [pub_handle, priv_handle] {
                    let _ = conn.with_session(|s| s.destroy_object(object), "removing a new key");
                }
                return Err(e);
            }
        };
        lock(&conn.handles).insert(kid.clone(), priv_handle);
        jwk.kid = Some(kid);
        jwk.alg = Some(alg.name().into());
        jwk.use_ = Some("sig".into());
        Ok(jwk)
    }
}

impl Pkcs11Vault {
    /// Reads the public key of a new pair and names both halves by its kid (the RFC 7638
    /// thumbprint): the public JWK (without `kid`) and the kid.
    fn name_new_pair(
        conn: &Conn,
        alg: Algorithm,
        pub_handle: ObjectHandle,
        priv_handle: ObjectHandle,
    ) -> Result<(Jwk, String), KeyError> {
        let wanted = match alg {
            Algorithm::EdDSA | Algorithm::ES256 => vec![AttributeType::EcPoint],
            _ => vec![AttributeType::Modulus, AttributeType::PublicExponent],
        };
        let attrs = conn.with_session(
            |s| s.get_attributes(pub_handle, &wanted),
            "reading a public key",
        )?;
        let jwk = public_jwk(alg, &attrs)?;
        let kid = jwk.thumbprint().map_err(|e| KeyError::Key(e.to_string()))?;
        let named = [
            Attribute::Id(kid.as_bytes().to_vec()),
            Attribute::Label(kid.as_bytes().to_vec()),
        ];
        conn.with_session(
            |s| {
                s.update_attributes(pub_handle, &named)?;
                s.update_attributes(priv_handle, &named)
            },
            "naming a new key",
        )?;
        Ok((jwk, kid))
    }
}

/// The public JWK from a public key's attributes.
fn public_jwk(alg: Algorithm, attrs: &[Attribute]) -> Result<Jwk, KeyError> {
    let bad = |what: &str| KeyError::Vault(format!("the token gave a malformed {what}"));
    let get = |t: AttributeType| {
        attrs.iter().find_map(|a| match (a, t) {
            (Attribute::EcPoint(v), AttributeType::EcPoint)
            | (Attribute::Modulus(v), AttributeType::Modulus)
            | (Attribute::PublicExponent(v), AttributeType::PublicExponent) => Some(v.as_slice()),
            _ => None,
        })
    };
    Ok(match alg {
        Algorithm::EdDSA => {
            let point = get(AttributeType::EcPoint).ok_or_else(|| bad("Ed25519 key"))?;
            // CKA_EC_POINT is a DER OCTET STRING; some tokens give the 32 bytes bare.
            let x = match point {
                [0x04, 32, x @ ..] if x.len() == 32 => x,
                x if x.len() == 32 => x,
                _ => return Err(bad("Ed25519 key")),
            };
            Jwk {
                kty: "OKP".into(),
                crv: Some("Ed25519".into()),
                x: Some(b64::encode(x)),
                ..Jwk::default()
            }
        }
        Algorithm::ES256 => {
            let point = get(AttributeType::EcPoint).ok_or_else(|| bad("P-256 key"))?;
            let xy = match point {
                [0x04, 65, 0x04, xy @ ..] if xy.len() == 64 => xy,
                [0x04, xy @ ..] if xy.len() == 64 => xy,
                _ => return Err(bad("P-256 key")),
            };
            Jwk {
                kty: "EC".into(),
                crv: Some("P-256".into()),
                x: Some(b64::encode(&xy[..32])),
                y: Some(b64::encode(&xy[32..])),
                ..Jwk::default()
            }
        }
        _ => {
            let strip = |v: &[u8]| -> Vec<u8> {
                let start = v.iter().position(|&b| b != 0).unwrap_or(v.len());
                v[start..].to_vec()
            };
            let n = get(AttributeType::Modulus).ok_or_else(|| bad("RSA key"))?;
            let e = get(AttributeType::PublicExponent).ok_or_else(|| bad("RSA key"))?;
            Jwk {
                kty: "RSA".into(),
                n: Some(b64::encode(&strip(n))),
                e: Some(b64::encode(&strip(e))),
                ..Jwk::default()
            }
        }
    })
}

/// An ECDSA signature as JOSE wants it (r ‖ s, 32 bytes each). PKCS#11 gives that; a DER
/// `SEQUENCE { INTEGER r, INTEGER s }` (some bridges give it) is converted. A signature that
/// parses as strict DER is taken as DER even at 64 bytes (short r and s): a raw one parses so
/// with odds below 2^-40.
fn ecdsa_jose(sig: Vec<u8>) -> Result<Vec<u8>, KeyError> {
    match ecdsa_der(&sig) {
        Some(raw) => Ok(raw),
        None if sig.len() == 64 => Ok(sig),
        None => Err(KeyError::Vault(
            "the token gave a malformed ECDSA signature".into(),
        )),
    }
}

/// r ‖ s from a strict DER ECDSA signature: minimal, positive integers of at most 256 bits.
fn ecdsa_der(sig: &[u8]) -> Option<Vec<u8>> {
    let body = match sig {
        [0x30, len, body @ ..] if usize::from(*len) == body.len() => body,
        _ => return None,
    };
    let mut out = Vec::with_capacity(64);
    let mut rest = body;
    for _ in 0..2 {
        let (int, tail) = match rest {
            [0x02, len, tail @ ..] if usize::from(*len) <= tail.len() && *len > 0 => {
                tail.split_at(usize::from(*len))
            }
            _ => return None,
        };
        let minimal = match int {
            [0x00, next, ..] => *next >= 0x80,
            [first, ..] => *first < 0x80,
            [] => false,
        };
        if !minimal {
            return None;
        }
        let int = int.strip_prefix(&[0]).unwrap_or(int);
        if int.len() > 32 {
            return None;
        }
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend_from_slice(int);
        rest = tail;
    }
    rest.is_empty().then_some(out)
}

impl KeyVault for Pkcs11Vault {
    fn backend(&self) -> &'static str {
        "pkcs11"
    }

    fn concurrency(&self) -> usize {
        self.settings.sessions.max(1)
    }

    fn generate(&self, alg: Algorithm) -> Result<Jwk, KeyError> {
        let conn = self.conn()?;
        Self::generate_in(&conn, alg)
    }

    fn sign(&self, kid: &str, alg: Algorithm, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let conn = self.conn()?;
        let key = conn.private_key(kid)?;
        let pss = PkcsPssParams {
            hash_alg: MechanismType::SHA256,
            mgf: PkcsMgfType::MGF1_SHA256,
            s_len: 32u64.into(),
        };
        let digest;
        let (mechanism, data) = match alg {
            Algorithm::EdDSA => (
                Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                message,
            ),
            Algorithm::ES256 => {
                digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
                (Mechanism::Ecdsa, digest.as_ref())
            }
            Algorithm::RS256 => (Mechanism::Sha256RsaPkcs, message),
            Algorithm::PS256 => (Mechanism::Sha256RsaPkcsPss(pss), message),
            _ => {
                return Err(KeyError::Key(format!(
                    "{} is not signed by a PKCS#11 token here",
                    alg.name()
                )));
            }
        };
        let signature = conn.with_session(|s| s.sign(&mechanism, key, data), "signing")?;
        match alg {
            Algorithm::ES256 => ecdsa_jose(signature),
            _ => Ok(signature),
        }
    }

    fn destroy(&self, kid: &str) -> Result<(), KeyError> {
        let conn = self.conn()?;
        lock(&conn.handles).remove(kid);
        let template = [Attribute::Id(kid.as_bytes().to_vec())];
        let found = conn.with_session(|s| s.find_objects(&template), "finding a key")?;
        for object in found {
            // Another instance destroying the same key at the same moment is no outage.
            conn.with_session(
                |s| match s.destroy_object(object) {
                    Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => Ok(()),
                    other => other,
                },
                "destroying a key",
            )?;
        }
        Ok(())
    }

    fn check(&self, kid: Option<&str>) -> Result<(), KeyError> {
        let conn = self.conn()?;
        // One search in the token, answered by the token and not by the library's memory: with
        // a kid, for that private key, which must be there.
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
        if let Some(kid) = kid {
            template.push(Attribute::Id(kid.as_bytes().to_vec()));
        }
        let found = conn.with_session(
            |s| {
                let mut objects = s.iter_objects_with_cache_size(&template, NonZeroUsize::MIN)?;
                objects.next().transpose()
            },
            "reading the token",
        )?;
        match (kid, found) {
            (Some(kid), None) => Err(KeyError::Key(format!(
                "the PKCS#11 token {:?} holds no private key {kid}",
                self.settings.token_label
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_signatures_become_jose() {
        let raw: Vec<u8> = (1..=64).collect();
        assert_eq!(ecdsa_jose(raw.clone()).unwrap(), raw);
        // r with a leading zero (high bit set), s short.
        let mut der = vec![0x30, 0x00, 0x02, 33, 0x00];
        der.extend(std::iter::repeat_n(0x80u8, 32));
        der.extend([0x02, 2, 0x01, 0x02]);
        der[1] = u8::try_from(der.len() - 2).unwrap();
        let jose = ecdsa_jose(der).unwrap();
        assert_eq!(&jose[..32], &[0x80u8; 32]);
        assert_eq!(&jose[32..62], &[0u8; 30]);
        assert_eq!(&jose[62..], &[1, 2]);
        for bad in [
            vec![],
            vec![0x30, 1, 0],
            vec![0x30, 4, 0x02, 9, 0, 0],
            vec![1; 63],
        ] {
            assert!(ecdsa_jose(bad).is_err());
        }
        // A DER signature of exactly 64 bytes (r and s of 29 bytes) is converted, not taken
        // for r ‖ s.
        let mut der = vec![0x30, 62, 0x02, 29];
        der.extend([0x11; 29]);
        der.extend([0x02, 29]);
        der.extend([0x22; 29]);
        assert_eq!(der.len(), 64);
        let jose = ecdsa_jose(der).unwrap();
        assert_eq!(&jose[..3], &[0, 0, 0]);
        assert_eq!(&jose[3..32], &[0x11; 29]);
        assert_eq!(&jose[35..], &[0x22; 29]);
        // Not minimal, or negative: not DER, and not 64 bytes either.
        assert!(ecdsa_jose(vec![0x30, 7, 0x02, 2, 0x00, 0x01, 0x02, 1, 0x01]).is_err());
        assert!(ecdsa_jose(vec![0x30, 6, 0x02, 1, 0x80, 0x02, 1, 0x01]).is_err());
    }

    #[test]
    fn p256_points_from_attributes() {
        let coords: Vec<u8> = (0..64).collect();
        let mut xy = vec![0x04];
        xy.extend(&coords);
        let mut der = vec![0x04, 65];
        der.extend(&xy);
        for point in [der, xy] {
            let jwk = public_jwk(Algorithm::ES256, &[Attribute::EcPoint(point)]).unwrap();
            assert_eq!(jwk.crv.as_deref(), Some("P-256"));
            assert_eq!(jwk.x.as_deref(), Some(b64::encode(&coords[..32]).as_str()));
            assert_eq!(jwk.y.as_deref(), Some(b64::encode(&coords[32..]).as_str()));
        }
        // Compressed, or the wrong length.
        assert!(public_jwk(Algorithm::ES256, &[Attribute::EcPoint(vec![0x02; 33])]).is_err());
        assert!(public_jwk(Algorithm::ES256, &[Attribute::EcPoint(vec![0x04; 64])]).is_err());
    }

    #[test]
    fn public_keys_from_attributes() {
        let x = [7u8; 32];
        let mut der = vec![0x04, 32];
        der.extend(x);
        for point in [der, x.to_vec()] {
            let jwk = public_jwk(Algorithm::EdDSA, &[Attribute::EcPoint(point)]).unwrap();
            assert_eq!(jwk.x.as_deref(), Some(b64::encode(&x).as_str()));
        }
        assert!(public_jwk(Algorithm::EdDSA, &[Attribute::EcPoint(vec![4, 31])]).is_err());
        let jwk = public_jwk(
            Algorithm::RS256,
            &[
                Attribute::Modulus(vec![0, 0xc1, 2]),
                Attribute::PublicExponent(vec![0, 1, 0, 1]),
            ],
        )
        .unwrap();
        assert_eq!(jwk.n.as_deref(), Some("wQI"));
        assert_eq!(jwk.e.as_deref(), Some("AQAB"));
    }

    #[test]
    fn the_pin_stays_out_of_debug() {
        let s = Pkcs11Settings {
            module: "/m.so".into(),
            token_label: "t".into(),
            pin: Zeroizing::new("1234-secret".into()),
            sessions: 2,
        };
        assert!(!format!("{s:?}").contains("1234-secret"));
    }
}
