//! The PKCS#11 HSM: one module context per process, logged in once, a pool of
//! sessions, cached key handles, and every call made off the async executor.
//!
//! Why this shape (see also `docs/architecture.md`):
//! - A keeper session stays open for the life of the process, because closing
//!   a token's last session logs the whole process out.
//! - A `Session` is `Send` but not `Sync`, so each operation checks one out of
//!   the pool for its duration and never holds it across an `.await`.
//! - PKCS#11 calls block, so they run on a fixed set of HSM threads, one per
//!   pooled session (`workers.rs`), which take queued calls back to back.
//! - Cached handles go stale after a logout or a token reset; on the errors
//!   that mean "stale" we log in again, look the keys up again and retry once.

pub mod capabilities;
pub mod keys;
mod pool;
mod sealing;
pub mod uri;
mod workers;

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
use capabilities::{Capabilities, EcdsaMode, Sealing, SignMechanism};
pub use keys::Custody;
use pool::{KeyRef, Pool};

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
    /// The same error, said of `context` (an operation made of several).
    pub fn while_doing(self, context: &'static str) -> Self {
        match self {
            HsmError::Unavailable { detail, .. } => HsmError::Unavailable { context, detail },
            HsmError::Internal { detail, .. } => HsmError::Internal { context, detail },
            other => other,
        }
    }

    /// Sorts a cryptoki error into the kinds above.
    pub fn from_pkcs11(context: &'static str, err: CkError) -> Self {
        let detail = err.to_string();
        match &err {
            CkError::LibraryLoading(_) => HsmError::Unavailable { context, detail },
            CkError::Pkcs11(rv, _) => match rv {
                RvError::PinIncorrect
                | RvError::PinLocked
                | RvError::PinExpired
                | RvError::PinInvalid
                | RvError::PinLenRange => HsmError::Auth(detail),
                rv if is_stale(rv) => HsmError::Unavailable { context, detail },
                RvError::DeviceMemory | RvError::TokenNotRecognized => {
                    HsmError::Unavailable { context, detail }
                }
                _ => HsmError::Internal { context, detail },
            },
            _ => HsmError::Internal { context, detail },
        }
    }
}

/// Errors after which a fresh login and key lookup may succeed.
/// `CKR_DEVICE_ERROR` is what a module behind a link (p11-kit's client)
/// answers while its server is away, and what it keeps answering after the
/// server is back until the module is initialised again.
fn is_stale(rv: &RvError) -> bool {
    matches!(
        rv,
        RvError::DeviceError
            | RvError::ObjectHandleInvalid
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

/// Where to find the module, the token and the fixed keys.
#[derive(Debug, Clone)]
pub struct HsmSettings {
    /// Path of the PKCS#11 module.
    pub module: std::path::PathBuf,
    /// Token label.
    pub token: String,
    /// Label of the HMAC key.
    pub hashing_key: String,
    /// Label of the audit checkpoint signing key (Ed25519).
    pub audit_key: String,
    /// Label of the AES-256 key that seals offer claims. Looked up on first
    /// use, so that `keys generate-claims-key` can log in to a token made
    /// before the key existed.
    pub claims_key: String,
    /// Label of the HMAC key that authenticates sealed claims, when claims
    /// are sealed with AES-CBC or AES-CTR and HMAC (tokens without AES-GCM).
    pub claims_mac_key: Option<String>,
    /// The cipher under the claims MAC key (ignored without one).
    pub claims_cipher: capabilities::MacCipher,
    /// Pooled sessions (and concurrent operations), at most; fewer when the
    /// token allows fewer.
    pub sessions: usize,
    /// Longest wait for one operation before it fails as unavailable.
    pub operation_timeout: std::time::Duration,
}

/// A signing key as the rest of notary sees it: no handles, just facts.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    token: Arc<TokenIdentity>,
    capabilities: Arc<Capabilities>,
    /// How claims are sealed (from the configuration, checked against the token).
    sealing: Sealing,
    /// How P-256 keys sign on this token.
    ecdsa: EcdsaMode,
    /// The audit key's algorithm (fixed for the life of a set-up).
    audit_alg: Algorithm,
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm")
            .field("token", &self.token.label)
            .finish_non_exhaustive()
    }
}

/// Which kind of key a custody report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    /// A Notary signing key (private half): signs access tokens.
    Signing,
    /// A credential key (private half): signs credentials and status lists.
    /// On the token it is an ordinary sign-only key pair like a Notary key,
    /// found and checked the same way; the role only names it in reports.
    Credential,
    /// The HMAC key.
    Hashing,
    /// The audit checkpoint key (private half).
    Audit,
    /// The AES-256 key that seals offer claims.
    Claims,
    /// The HMAC key that authenticates sealed claims (AES-CBC sealing only).
    ClaimsMac,
}

/// One signature by a private key: pure EdDSA, or ECDSA returning `r || s`
/// (what JWS wants), over a SHA-256 digest made here when the token offers
/// raw `CKM_ECDSA` (SoftHSM 2.6 has no `CKM_ECDSA_SHA256`), else with the
/// token hashing.
pub(crate) fn sign_with(
    session: &cryptoki::session::Session,
    key: cryptoki::object::ObjectHandle,
    alg: Algorithm,
    ecdsa: EcdsaMode,
    message: &[u8],
) -> Result<Vec<u8>, CkError> {
    match (alg, ecdsa) {
        (Algorithm::EdDSA, _) => session.sign(
            &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
            key,
            message,
        ),
        (Algorithm::ES256, EcdsaMode::OverDigest) => {
            session.sign(&Mechanism::Ecdsa, key, &Sha256::digest(message))
        }
        (Algorithm::ES256, EcdsaMode::HashingInToken) => {
            session.sign(&Mechanism::EcdsaSha256, key, message)
        }
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

/// Narrows the usage flags of the key of `role` labelled `label` on the
/// token of `settings` to what its role allows (see
/// [`keys::restrict_usage`]), in a login of its own: a fixed key with too
/// broad a usage keeps [`Hsm::open`] from starting at all. Blocking.
/// Returns the attributes set to false.
pub fn restrict_usage(
    settings: &HsmSettings,
    pin: &HsmPin,
    role: KeyRole,
    label: &str,
) -> Result<Vec<&'static str>, HsmError> {
    let pkcs11 = load_module(&settings.module)?;
    let narrowed = find_token(&pkcs11, &settings.token).and_then(|slot| {
        let session = pkcs11
            .open_rw_session(slot)
            .map_err(|e| HsmError::from_pkcs11("opening a session", e))?;
        session
            .login(cryptoki::session::UserType::User, Some(&auth_pin(pin)))
            .map_err(|e| HsmError::from_pkcs11("logging in", e))?;
        let narrowed = keys::restrict_usage(&session, role, label);
        let _ = session.logout();
        narrowed
    });
    let _ = pkcs11.finalize();
    narrowed
}

/// Converts notary's PIN type into cryptoki's without an intermediate copy
/// that outlives the call (cryptoki's `AuthPin` zeroizes on drop too).
pub fn auth_pin(pin: &HsmPin) -> AuthPin {
    AuthPin::from(pin.expose().to_owned())
}

impl Hsm {
    /// Loads the module, logs in and finds the fixed keys. Blocking: call it
    /// from a blocking context (start-up, or `spawn_blocking`).
    pub fn open(settings: &HsmSettings, pin: &HsmPin) -> Result<Self, HsmError> {
        let pkcs11 = load_module(&settings.module)?;
        let slot = find_token(&pkcs11, &settings.token)?;
        let info = pkcs11
            .get_token_info(slot)
            .map_err(|e| HsmError::from_pkcs11("reading token info", e))?;
        // Blank-padded by the standard; some modules (tpm2-pkcs11) pad with NULs.
        let field = |text: &str| text.trim_end_matches([' ', '\0']).to_owned();
        let token = TokenIdentity {
            label: field(info.label()),
            manufacturer: field(info.manufacturer_id()),
            model: field(info.model()),
            serial: field(info.serial_number()),
        };
        // What the token can do is read before the PIN is presented: a
        // token that cannot serve a role is refused without a login.
        let capabilities = Capabilities::read(&pkcs11, slot)?;
        capabilities.keyed_hash().map_err(HsmError::Unsupported)?;
        let sealing = capabilities
            .sealing(
                settings
                    .claims_mac_key
                    .as_ref()
                    .map(|_| settings.claims_cipher),
            )
            .map_err(HsmError::Unsupported)?;
        let sessions = capabilities::session_budget(settings.sessions, capabilities.max_sessions)
            .map_err(HsmError::Unsupported)?;
        if sessions < settings.sessions {
            tracing::warn!(
                configured = settings.sessions,
                used = sessions,
                "hsm.sessions lowered to stay within the token's session limit (ulMaxSessionCount)"
            );
        }
        let settings = HsmSettings {
            sessions,
            ..settings.clone()
        };
        let pool = Pool::open(pkcs11, slot, auth_pin(pin), &token.serial, &settings)?;
        let audit_alg = pool
            .with_keeper(|s| keys::read_public_key(s, KeyRole::Audit, &settings.audit_key))?
            .algorithm();
        if let Err(refused) = capabilities.signing("audit checkpoints", audit_alg) {
            pool.close();
            return Err(HsmError::Unsupported(refused));
        }
        Ok(Hsm {
            inner: Arc::new(pool),
            token: Arc::new(token),
            ecdsa: capabilities.ecdsa_mode(),
            capabilities: Arc::new(capabilities),
            sealing,
            audit_alg,
        })
    }

    /// What the token can do, as read at start-up.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Sessions the pool may open for operations (the keeper session aside).
    pub fn sessions(&self) -> usize {
        self.inner.sessions()
    }

    /// How offer claims are sealed.
    pub fn sealing(&self) -> Sealing {
        self.sealing
    }

    /// Refuses a key of `alg` for `role` (e.g. "access tokens") when the
    /// token cannot sign with it; the message names the missing mechanism.
    pub fn signing_mechanism(&self, role: &str, alg: Algorithm) -> Result<SignMechanism, HsmError> {
        self.capabilities
            .signing(role, alg)
            .map_err(HsmError::Unsupported)
    }

    /// The token's identity.
    pub fn token(&self) -> &TokenIdentity {
        &self.token
    }

    /// Runs a keeper-session operation on a blocking thread.
    async fn with_keeper<T: Send + 'static>(
        &self,
        context: &'static str,
        op: impl FnOnce(&Pool, &cryptoki::session::Session) -> Result<T, HsmError> + Send + 'static,
    ) -> Result<T, HsmError> {
        let pool = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || pool.with_keeper(|s| op(&pool, s)))
            .await
            .map_err(|e| HsmError::Internal {
                context,
                detail: format!("HSM worker failed: {e}"),
            })?
    }

    /// Reads a signing key's public half from the token.
    pub async fn signing_key(&self, label: &str) -> Result<SigningKeyInfo, HsmError> {
        let label = label.to_owned();
        self.with_keeper("reading a public key", move |_, s| {
            let public_key = keys::read_public_key(s, KeyRole::Signing, &label)?;
            Ok(SigningKeyInfo {
                kid: public_key.thumbprint(),
                label,
                public_key,
            })
        })
        .await
    }

    /// The audit key's public half.
    pub async fn audit_public_key(&self) -> Result<PublicKey, HsmError> {
        self.with_keeper("reading the audit public key", |pool, s| {
            keys::read_public_key(
                s,
                KeyRole::Audit,
                pool.label_of(KeyRole::Audit).unwrap_or_default(),
            )
        })
        .await
    }

    /// Generates a new signing key pair inside the token; returns its facts.
    pub async fn generate_signing_key(
        &self,
        alg: Algorithm,
        label: &str,
        id: Vec<u8>,
    ) -> Result<SigningKeyInfo, HsmError> {
        self.signing_mechanism("the new key", alg)?;
        if !self.capabilities.generates_key_pair(alg) {
            return Err(HsmError::Unsupported(format!(
                "the token cannot generate {} key pairs itself; make the key with the module's own \
                 tool and adopt it (notary keys adopt)",
                alg.as_str()
            )));
        }
        let label = label.to_owned();
        self.with_keeper("generating a signing key", move |_, s| {
            keys::generate_signing_key(s, alg, &label, &id)?;
            let public_key = keys::read_public_key(s, KeyRole::Signing, &label)?;
            Ok(SigningKeyInfo {
                kid: public_key.thumbprint(),
                label,
                public_key,
            })
        })
        .await
    }

    /// Generates the claims key (`hsm.claims_key`) inside the token, unless
    /// a key with that label is already there; returns its custody.
    pub async fn generate_claims_key(&self, id: Vec<u8>) -> Result<Custody, HsmError> {
        self.with_keeper("generating the claims key", move |pool, s| {
            let label = pool
                .label_of(KeyRole::Claims)
                .unwrap_or_default()
                .to_owned();
            match keys::find_key(s, KeyRole::Claims, &label) {
                Err(HsmError::KeyNotFound(_)) => {}
                Ok(_) => {
                    return Err(HsmError::Unsupported(format!(
                        "the token already holds a claims key labelled {label:?}"
                    )));
                }
                Err(e) => return Err(e),
            }
            keys::generate_claims_key(s, &label, &id)?;
            let handle = keys::find_key(s, KeyRole::Claims, &label)?;
            keys::read_custody(s, handle, KeyRole::Claims, &label)
        })
        .await
    }

    /// Custody evidence of a key, read now from the token.
    pub async fn custody(&self, role: KeyRole, label: Option<&str>) -> Result<Custody, HsmError> {
        let label = label.map(str::to_owned);
        self.with_keeper("reading custody attributes", move |pool, s| {
            let label = match role {
                KeyRole::Signing | KeyRole::Credential => label.unwrap_or_default(),
                fixed => pool.label_of(fixed).unwrap_or_default().to_owned(),
            };
            let handle = keys::find_key(s, role, &label)?;
            keys::read_custody(s, handle, role, &label)
        })
        .await
    }

    /// Signs a JWS signing input with a Notary key; returns the JWS signature bytes.
    pub async fn sign(
        &self,
        key: &SigningKeyInfo,
        signing_input: Vec<u8>,
    ) -> Result<Vec<u8>, HsmError> {
        self.sign_as("signing a token", key, signing_input).await
    }

    /// Signs with a credential key (a credential, a status list, a CSR):
    /// the same as [`Hsm::sign`] (EdDSA, or ES256 as raw `r || s`), counted
    /// apart in the HSM metrics (`signing with a credential key`).
    pub async fn sign_credential(
        &self,
        key: &SigningKeyInfo,
        message: Vec<u8>,
    ) -> Result<Vec<u8>, HsmError> {
        self.sign_as("signing with a credential key", key, message)
            .await
    }

    async fn sign_as(
        &self,
        context: &'static str,
        key: &SigningKeyInfo,
        signing_input: Vec<u8>,
    ) -> Result<Vec<u8>, HsmError> {
        let alg = key.algorithm();
        let ecdsa = self.ecdsa;
        self.inner
            .run(
                context,
                KeyRef::Signing(key.label.clone()),
                move |session, handle| sign_with(session, handle, alg, ecdsa, &signing_input),
            )
            .await
    }

    /// The audit key's algorithm.
    pub fn audit_algorithm(&self) -> Algorithm {
        self.audit_alg
    }

    /// Signature of `message` with the audit key (Ed25519, or ES256 as raw
    /// `r || s`).
    pub async fn sign_audit(&self, message: Vec<u8>) -> Result<Vec<u8>, HsmError> {
        let (alg, ecdsa) = (self.audit_alg, self.ecdsa);
        self.inner
            .run(
                "signing an audit checkpoint",
                KeyRef::Audit,
                move |session, handle| sign_with(session, handle, alg, ecdsa, &message),
            )
            .await
    }

    /// HMAC-SHA256 of `data` with the hashing key, computed inside the token.
    /// `data` is wiped when the operation ends.
    pub async fn keyed_hash(&self, data: Zeroizing<Vec<u8>>) -> Result<[u8; 32], HsmError> {
        let mac = self
            .inner
            .run(
                "computing a keyed hash",
                KeyRef::Hashing,
                move |session, handle| session.sign(&Mechanism::Sha256Hmac, handle, &data),
            )
            .await?;
        mac.try_into().map_err(|_| HsmError::Internal {
            context: "computing a keyed hash",
            detail: "HMAC-SHA256 did not return 32 bytes".to_owned(),
        })
    }

    /// Compares the HMAC-SHA256 of `data` (wiped when done) with `expected`
    /// in constant time and, only if they are equal, signs `signing_input`
    /// with the Notary key `key`: a redemption's PIN check and its token's
    /// signature in one trip to an HSM thread instead of two. `None`: the
    /// hash differs and nothing was signed. Counted in the HSM metrics as a
    /// keyed hash and, when it signed, as a token signature too, each with
    /// the whole trip's time; its errors name both.
    pub async fn sign_if_keyed_hash_matches(
        &self,
        data: Zeroizing<Vec<u8>>,
        expected: Vec<u8>,
        key: &SigningKeyInfo,
        signing_input: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, HsmError> {
        use subtle::ConstantTimeEq as _;
        let (alg, ecdsa) = (key.algorithm(), self.ecdsa);
        let start = std::time::Instant::now();
        let keys = (KeyRef::Hashing, KeyRef::Signing(key.label.clone()));
        let signature = self
            .inner
            .run(
                "computing a keyed hash",
                keys,
                move |session, (hashing, signing)| {
                    let mac =
                        Zeroizing::new(session.sign(&Mechanism::Sha256Hmac, hashing, &data)?);
                    if !bool::from(mac.as_slice().ct_eq(&expected)) {
                        return Ok(None);
                    }
                    sign_with(session, signing, alg, ecdsa, &signing_input).map(Some)
                },
            )
            .await
            .map_err(|e| e.while_doing("checking a PIN and signing a token"))?;
        if signature.is_some() {
            crate::telemetry::observe(crate::telemetry::HSM_SECONDS, "signing a token", start);
        }
        Ok(signature)
    }

    /// A cheap round trip to the token that uses a key, for `/readyz` and
    /// the watchdog: an HMAC of a constant with the hashing key. Reading the
    /// session state alone would pass while the token's key store is stuck.
    pub async fn ping(&self) -> Result<(), HsmError> {
        self.inner
            .run("probing the token", KeyRef::Hashing, |session, handle| {
                session
                    .sign(&Mechanism::Sha256Hmac, handle, b"notary/ping")
                    .map(|_| ())
            })
            .await
    }

    /// Whether the token refused the PIN. The process never presents it
    /// again; `serve` stops with exit status 78 so systemd does not restart it.
    pub fn pin_refused(&self) -> bool {
        self.inner.pin_refused()
    }

    /// Returns once the token has refused the PIN.
    pub async fn pin_refusal(&self) {
        self.inner.refusal().await;
    }

    /// Logs out and finalises the module, for every clone. Call at shutdown.
    pub fn close(&self) {
        self.inner.close();
    }
}
