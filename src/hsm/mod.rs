//! The PKCS#11 HSM: one module context per process, logged in once, a pool of
//! sessions, cached key handles, and every call made off the async executor.
//!
//! Why this shape (see also `docs/architecture.md`):
//! - A keeper session stays open for the life of the process, because closing
//!   a token's last session logs the whole process out.
//! - A `Session` is `Send` but not `Sync`, so each operation checks one out of
//!   the pool for its duration and never holds it across an `.await`.
//! - PKCS#11 calls block, so they run on tokio's blocking threads, bounded by
//!   a semaphore sized to the session pool.
//! - Cached handles go stale after a logout or a token reset; on the errors
//!   that mean "stale" we log in again, look the keys up again and retry once.

pub mod keys;
mod pool;

use std::path::Path;
use std::sync::Arc;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::jose::{Algorithm, PublicKey};
use crate::secret::HsmPin;
pub use keys::Custody;
use pool::Pool;

/// HSM failures, sorted by what the caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The token or module is unreachable right now; retrying later may work.
    #[error("HSM unavailable while {context}: {detail}")]
    Unavailable {
        /// What notary was doing.
        context: &'static str,
        /// The module's error.
        detail: String,
    },
    /// The PIN was refused. Never retried: retries can lock the token.
    #[error("HSM login refused ({0}); check the PIN source")]
    Auth(String),
    /// A configured key or token is not there.
    #[error("{0}")]
    KeyNotFound(String),
    /// The token cannot do what notary needs (mechanism, attribute, key type).
    #[error("{0}")]
    Unsupported(String),
    /// Anything else the module reported.
    #[error("HSM error while {context}: {detail}")]
    Internal {
        /// What notary was doing.
        context: &'static str,
        /// The module's error.
        detail: String,
    },
}

impl HsmError {
    /// Sorts a cryptoki error into the kinds above.
    pub fn from_pkcs11(context: &'static str, err: CkError) -> Self {
        let detail = err.to_string();
        match &err {
            CkError::LibraryLoading(_) => HsmError::Unavailable { context, detail },
            CkError::Pkcs11(rv, _) => match rv {
                RvError::PinIncorrect | RvError::PinLocked | RvError::PinExpired => {
                    HsmError::Auth(detail)
                }
                rv if is_stale(rv) => HsmError::Unavailable { context, detail },
                RvError::DeviceError | RvError::DeviceMemory | RvError::TokenNotRecognized => {
                    HsmError::Unavailable { context, detail }
                }
                _ => HsmError::Internal { context, detail },
            },
            _ => HsmError::Internal { context, detail },
        }
    }
}

/// Errors after which a fresh login and key lookup may succeed.
fn is_stale(rv: &RvError) -> bool {
    matches!(
        rv,
        RvError::ObjectHandleInvalid
            | RvError::KeyHandleInvalid
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::UserNotLoggedIn
            | RvError::DeviceRemoved
            | RvError::TokenNotPresent
    )
}

fn is_stale_error(err: &CkError) -> bool {
    matches!(err, CkError::Pkcs11(rv, _) if is_stale(rv))
}

/// Where to find the module, the token and the keys.
#[derive(Debug, Clone)]
pub struct HsmSettings {
    /// Path of the PKCS#11 module.
    pub module: std::path::PathBuf,
    /// Token label.
    pub token: String,
    /// Label of the signing key pair.
    pub signing_key: String,
    /// Label of the HMAC key.
    pub hashing_key: String,
    /// Pooled sessions (and concurrent operations).
    pub sessions: usize,
}

/// The signing key as the rest of notary sees it: no handles, just facts.
#[derive(Debug, Clone)]
pub struct SigningKeyInfo {
    /// Label on the token.
    pub label: String,
    /// Public key read from the token.
    pub public_key: PublicKey,
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
}

impl SigningKeyInfo {
    /// The JOSE algorithm of the key.
    pub fn algorithm(&self) -> Algorithm {
        self.public_key.algorithm()
    }
}

/// The token's identity, for logs and custody reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenIdentity {
    /// `CK_TOKEN_INFO.label`.
    pub label: String,
    /// `CK_TOKEN_INFO.manufacturerID`.
    pub manufacturer: String,
    /// `CK_TOKEN_INFO.model`.
    pub model: String,
    /// `CK_TOKEN_INFO.serialNumber`.
    pub serial: String,
}

/// A logged-in connection to the token. Cheap to clone.
#[derive(Clone)]
pub struct Hsm {
    inner: Arc<Pool>,
    signing: Arc<SigningKeyInfo>,
    token: Arc<TokenIdentity>,
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm")
            .field("token", &self.token.label)
            .field("kid", &self.signing.kid)
            .finish_non_exhaustive()
    }
}

/// Loads and initialises a PKCS#11 module.
pub fn load_module(path: &Path) -> Result<Pkcs11, HsmError> {
    let pkcs11 = Pkcs11::new(path).map_err(|e| HsmError::Unavailable {
        context: "loading the PKCS#11 module",
        detail: format!("{}: {e}", path.display()),
    })?;
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| HsmError::from_pkcs11("initialising the PKCS#11 module", e))?;
    Ok(pkcs11)
}

/// Finds the slot holding the initialised token labelled `label`.
pub fn find_token(pkcs11: &Pkcs11, label: &str) -> Result<Slot, HsmError> {
    let slots = pkcs11
        .get_slots_with_initialized_token()
        .map_err(|e| HsmError::from_pkcs11("listing slots", e))?;
    let mut found = Vec::new();
    for slot in slots {
        let info = pkcs11
            .get_token_info(slot)
            .map_err(|e| HsmError::from_pkcs11("reading token info", e))?;
        if info.label().trim_end() == label {
            found.push(slot);
        }
    }
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(HsmError::KeyNotFound(format!(
            "no initialised token labelled {label:?} (check hsm.token and the module's configuration)"
        ))),
        _ => Err(HsmError::KeyNotFound(format!(
            "{} tokens are labelled {label:?}; labels must be unique",
            found.len()
        ))),
    }
}

/// Converts notary's PIN type into cryptoki's without an intermediate copy
/// that outlives the call (cryptoki's `AuthPin` zeroizes on drop too).
pub fn auth_pin(pin: &HsmPin) -> AuthPin {
    AuthPin::from(pin.expose().to_owned())
}

impl Hsm {
    /// Loads the module, logs in, finds and checks the keys. Blocking: call it
    /// from a blocking context (start-up, or `spawn_blocking`).
    pub fn open(settings: &HsmSettings, pin: &HsmPin) -> Result<Self, HsmError> {
        let pkcs11 = load_module(&settings.module)?;
        let slot = find_token(&pkcs11, &settings.token)?;
        let info = pkcs11
            .get_token_info(slot)
            .map_err(|e| HsmError::from_pkcs11("reading token info", e))?;
        let token = TokenIdentity {
            label: info.label().trim_end().to_owned(),
            manufacturer: info.manufacturer_id().trim_end().to_owned(),
            model: info.model().trim_end().to_owned(),
            serial: info.serial_number().trim_end().to_owned(),
        };
        let pool = Pool::open(pkcs11, slot, auth_pin(pin), settings)?;
        let public_key = pool.with_keeper(|s| keys::read_public_key(s, &settings.signing_key))?;
        let kid = public_key.thumbprint();
        Ok(Hsm {
            inner: Arc::new(pool),
            signing: Arc::new(SigningKeyInfo {
                label: settings.signing_key.clone(),
                public_key,
                kid,
            }),
            token: Arc::new(token),
        })
    }

    /// The active signing key.
    pub fn signing_key(&self) -> &SigningKeyInfo {
        &self.signing
    }

    /// The token's identity.
    pub fn token(&self) -> &TokenIdentity {
        &self.token
    }

    /// Custody attributes of the signing key and the hashing key, read now.
    pub async fn custody(&self) -> Result<Vec<Custody>, HsmError> {
        let pool = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || pool.custody())
            .await
            .map_err(|e| HsmError::Internal {
                context: "reading custody attributes",
                detail: format!("HSM worker failed: {e}"),
            })?
    }

    /// Signs a JWS signing input with the Notary key; returns the JWS signature bytes.
    pub async fn sign(&self, signing_input: Vec<u8>) -> Result<Vec<u8>, HsmError> {
        let alg = self.signing.algorithm();
        self.inner
            .run("signing a token", move |session, handles| match alg {
                Algorithm::EdDSA => session.sign(
                    &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                    handles.signing,
                    &signing_input,
                ),
                // SoftHSM 2.6 has no CKM_ECDSA_SHA256: hash here, sign the
                // digest; CKM_ECDSA returns r||s, which is what JWS wants.
                Algorithm::ES256 => {
                    let digest = Sha256::digest(&signing_input);
                    session.sign(&Mechanism::Ecdsa, handles.signing, &digest)
                }
            })
            .await
    }

    /// HMAC-SHA256 of `data` with the hashing key, computed inside the token.
    /// `data` is wiped when the operation ends.
    pub async fn keyed_hash(&self, data: Zeroizing<Vec<u8>>) -> Result<[u8; 32], HsmError> {
        let mac = self
            .inner
            .run("computing a keyed hash", move |session, handles| {
                session.sign(&Mechanism::Sha256Hmac, handles.hashing, &data)
            })
            .await?;
        mac.try_into().map_err(|_| HsmError::Internal {
            context: "computing a keyed hash",
            detail: "HMAC-SHA256 did not return 32 bytes".to_owned(),
        })
    }

    /// A cheap round trip to the token, for `/readyz`.
    pub async fn ping(&self) -> Result<(), HsmError> {
        self.inner
            .run("probing the token", |session, _| {
                session.get_session_info().map(|_| ())
            })
            .await
    }

    /// Logs out and finalises the module, for every clone. Call at shutdown.
    pub fn close(&self) {
        self.inner.close();
    }
}
