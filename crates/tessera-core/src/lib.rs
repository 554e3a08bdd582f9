//! tessera-core: the domain of tessera — users, passwords, opaque tokens, sessions, login
//! throttling — and the store traits it needs. No HTTP and no SQL: those live in
//! tessera-server and tessera-store. Time comes from a [`tessera_jose::Clock`].

pub mod auth;
pub mod client;
pub mod humantime;
pub mod keys;
pub mod logsafe;
pub mod password;
pub mod refresh;
pub mod revocation;
pub mod service;
pub mod session;
pub mod store;
pub mod throttle;
pub mod token;
pub mod tokens;
pub mod user;
pub mod weburl;

pub use auth::{AccountError, Auth, Authenticated, ClientInfo, Counters, LoginError, SessionError};
pub use client::{Client, ClientError, CodeRecord, Consent, NewClient};
pub use keys::{
    KeyError, KeyInfo, KeyManager, KeyRing, KeyState, KeyVault, MasterKey, TokenSigner,
};
pub use password::{HashParams, PasswordError, PasswordHasherPool, PasswordPolicy};
pub use refresh::RefreshRecord;
pub use revocation::{Denylist, LEEWAY, Loader};
pub use service::{Service, ServiceSettings, StartError, Tasks};
pub use session::{Session, SessionPolicy};
pub use store::{
    AllConcerns, Change, ClientStore, Denied, DeniedIter, DeniedSink, DenylistStore,
    FamilyRevocation, KeyStore, Purged, RefreshStore, SessionStore, StoreError, StoreResult,
    StoredKey, Stores, ThrottleStore, UserStore,
};
pub use throttle::{Attempt, DeviceCookies, Throttle, ThrottlePolicy};
pub use token::{CsrfKey, Kind, Token, TokenHash};
pub use tokens::{
    AccessGrant, AccessIssued, GrantError, Issued, TokenCounters, TokenSettings, Tokens,
};
pub use user::User;
