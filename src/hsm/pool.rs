//! Session pool, login state and cached key handles (see the module doc of `hsm`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::ObjectHandle;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::workers::Workers;
use super::{HsmError, HsmSettings, KeyRole, find_token, is_stale_error, keys, load_module};

/// Which key an operation needs.
#[derive(Debug, Clone)]
pub(super) enum KeyRef {
    /// The HMAC key for codes, PINs and API keys.
    Hashing,
    /// The key that signs audit checkpoints.
    Audit,
    /// A Notary signing key, by label.
    Signing(String),
    /// The AES key that seals offer claims.
    Claims,
    /// The HMAC key that authenticates claims sealed with AES-CBC.
    ClaimsMac,
}

/// One PKCS#11 operation, given a session and the handles of its keys.
type Operation<T, K> = dyn Fn(&Session, <K as Keys>::Handles) -> Result<T, CkError>;

/// The key or keys one operation uses, resolved to handles on its session.
pub(super) trait Keys: Send + 'static {
    /// What the operation gets.
    type Handles;
    /// Looks the handles up (cached per login).
    fn resolve(&self, pool: &Pool, session: &Session) -> Result<Self::Handles, Failure>;
}

impl Keys for KeyRef {
    type Handles = ObjectHandle;
    fn resolve(&self, pool: &Pool, session: &Session) -> Result<ObjectHandle, Failure> {
        pool.resolve(self, session)
    }
}

/// Two keys for one trip to an HSM thread (a PIN's keyed hash, then the
/// token's signature).
impl Keys for (KeyRef, KeyRef) {
    type Handles = (ObjectHandle, ObjectHandle);
    fn resolve(
        &self,
        pool: &Pool,
        session: &Session,
    ) -> Result<(ObjectHandle, ObjectHandle), Failure> {
        Ok((
            pool.resolve(&self.0, session)?,
            pool.resolve(&self.1, session)?,
        ))
    }
}

struct LoginState {
    pkcs11: Pkcs11,
    slot: Slot,
    /// Kept open for the life of the process: closing the last session of a
    /// token logs the process out. `None` after a failed recovery.
    keeper: Option<Session>,
    /// Bumped by every recovery: sessions and handles from an older
    /// generation are never reused.
    generation: u64,
    hashing: ObjectHandle,
    audit: ObjectHandle,
    /// Signing key handles, found on first use.
    signing: HashMap<String, ObjectHandle>,
    /// The claims key's handle, found (and its custody checked) on first use.
    claims: Option<ObjectHandle>,
    /// The claims MAC key's handle, likewise.
    claims_mac: Option<ObjectHandle>,
}

pub(super) struct Pool {
    module: PathBuf,
    token_label: String,
    pin: AuthPin,
    hashing_label: String,
    audit_label: String,
    claims_label: String,
    claims_mac_label: Option<String>,
    state: Mutex<LoginState>,
    idle: Mutex<Vec<(u64, Session)>>,
    /// Held (shared) by every PKCS#11 call; taken exclusively only to
    /// finalise and re-initialise the module, so no call is inside the
    /// module while it restarts.
    gate: RwLock<()>,
    /// The threads that make the calls, as many as there are sessions; the
    /// calls waiting for one queue there.
    workers: Workers,
    max_idle: usize,
    closed: AtomicBool,
    /// Set when the token refused the PIN: logging in again with the same
    /// PIN could lock the user on a real HSM, so no further attempt is made
    /// by this process, on any path.
    pin_refused: AtomicBool,
    /// Woken once when the PIN is refused, so `serve` can stop.
    refused: tokio::sync::Notify,
    /// `CK_TOKEN_INFO.serialNumber` at start-up: after a recovery the slot
    /// must hold this very token, not another one with the same label.
    serial: String,
    /// Longest wait for one operation, queueing for a session included.
    op_timeout: std::time::Duration,
    /// When the last reconnection failed: within [`RECONNECT_PAUSE`] of it
    /// calls fail at once instead of each re-initialising the module.
    failed_reconnect: FailedReconnect,
    /// Whether the keeper session is logged in (mirrors `state.keeper`, so
    /// the fail-fast path takes no lock).
    logged_in: AtomicBool,
    /// Set once the module has refused a read-only session and accepted a
    /// read-write one.
    read_only_refused: AtomicBool,
}

/// When a reconnection last failed, readable without a lock: milliseconds
/// since `epoch`, plus one (0: none since the last success).
struct FailedReconnect {
    epoch: Instant,
    at_ms: AtomicU64,
}

impl FailedReconnect {
    fn new() -> Self {
        FailedReconnect {
            epoch: Instant::now(),
            at_ms: AtomicU64::new(0),
        }
    }

    fn millis(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX - 1)
            + 1
    }

    fn record(&self) {
        self.at_ms
            .store(self.millis(Instant::now()), Ordering::SeqCst);
    }

    fn clear(&self) {
        self.at_ms.store(0, Ordering::SeqCst);
    }

    /// A failure within the pause.
    fn recent(&self) -> bool {
        let at = self.at_ms.load(Ordering::SeqCst);
        at != 0 && self.millis(Instant::now()) < at.saturating_add(pause_ms())
    }

    /// A failure at or after `t`.
    fn since(&self, t: Instant) -> bool {
        let at = self.at_ms.load(Ordering::SeqCst);
        at != 0 && at >= self.millis(t)
    }
}

fn pause_ms() -> u64 {
    u64::try_from(RECONNECT_PAUSE.as_millis()).unwrap_or(u64::MAX)
}

/// How long after a failed reconnection calls fail fast. Short enough that
/// a token back after an outage serves again within it; long enough that a
/// burst of requests during the outage does not become a burst of
/// C_Finalize/C_Initialize cycles (and, behind a network link, of connects).
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent
    // (they only hold sessions and plain handles), so poisoning is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pool {
    pub(super) fn open(
        pkcs11: Pkcs11,
        slot: Slot,
        pin: AuthPin,
        serial: &str,
        settings: &HsmSettings,
    ) -> Result<Self, HsmError> {
        // A refusal here ends the process (exit status 78): one attempt.
        let keeper = login(&pkcs11, slot, &pin)?;
        let (hashing, audit) = find_fixed(&keeper, &settings.hashing_key, &settings.audit_key)?;
        let sessions = settings.sessions.max(1);
        Ok(Pool {
            module: settings.module.clone(),
            token_label: settings.token.clone(),
            pin,
            hashing_label: settings.hashing_key.clone(),
            audit_label: settings.audit_key.clone(),
            claims_label: settings.claims_key.clone(),
            claims_mac_label: settings.claims_mac_key.clone(),
            state: Mutex::new(LoginState {
                pkcs11,
                slot,
                keeper: Some(keeper),
                generation: 0,
                hashing,
                audit,
                signing: HashMap::new(),
                claims: None,
                claims_mac: None,
            }),
            idle: Mutex::new(Vec::with_capacity(sessions)),
            gate: RwLock::new(()),
            workers: Workers::start(sessions).map_err(|e| HsmError::Internal {
                context: "starting the HSM threads",
                detail: e.to_string(),
            })?,
            op_timeout: settings.operation_timeout,
            max_idle: sessions,
            closed: AtomicBool::new(false),
            pin_refused: AtomicBool::new(false),
            refused: tokio::sync::Notify::new(),
            serial: serial.to_owned(),
            failed_reconnect: FailedReconnect::new(),
            logged_in: AtomicBool::new(true),
            read_only_refused: AtomicBool::new(false),
        })
    }

    /// Whether the token refused the PIN (this process will not log in again).
    pub(super) fn pin_refused(&self) -> bool {
        self.pin_refused.load(Ordering::SeqCst)
    }

    /// Returns once the token has refused the PIN.
    pub(super) async fn refusal(&self) {
        if !self.pin_refused() {
            self.refused.notified().await;
        }
    }

    /// Logs in, unless the token refused the PIN before: then it fails
    /// at once without presenting the PIN again. A refusal is remembered.
    /// The slot must still hold the token notary started with (same
    /// serial), so the PIN is never presented to another token.
    fn log_in(&self, pkcs11: &Pkcs11, slot: Slot) -> Result<Session, HsmError> {
        if self.pin_refused() {
            return Err(refused_earlier());
        }
        let serial = pkcs11
            .get_token_info(slot)
            .map_err(|e| HsmError::from_pkcs11("reading token info", e))?
            .serial_number()
            .trim_end()
            .to_owned();
        if serial != self.serial {
            tracing::error!(
                expected = %self.serial,
                found = %serial,
                "the slot holds another token than the one notary started with; not logging in"
            );
            return Err(HsmError::Unavailable {
                context: "checking the token's identity",
                detail: format!(
                    "the token's serial is {serial:?}, not {:?} as at start-up",
                    self.serial
                ),
            });
        }
        match login(pkcs11, slot, &self.pin) {
            Err(HsmError::Auth(e)) => {
                self.pin_refused.store(true, Ordering::SeqCst);
                self.refused.notify_one();
                tracing::error!(
                    "the token refused the PIN; no further login attempts by this process"
                );
                Err(HsmError::Auth(e))
            }
            other => other,
        }
    }

    /// Runs `op` with the keeper session (start-up, key management and
    /// reports; not hot paths). Blocking.
    pub(super) fn with_keeper<T>(
        &self,
        op: impl FnOnce(&Session) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let _gate = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        let state = lock(&self.state);
        match &state.keeper {
            Some(keeper) => op(keeper),
            None => Err(HsmError::Unavailable {
                context: "using the keeper session",
                detail: "not logged in".to_owned(),
            }),
        }
    }

    /// The configured label of a fixed key (`None` for signing keys, and
    /// for the claims MAC key when none is configured).
    pub(super) fn label_of(&self, role: KeyRole) -> Option<&str> {
        match role {
            KeyRole::Hashing => Some(&self.hashing_label),
            KeyRole::Audit => Some(&self.audit_label),
            KeyRole::Claims => Some(&self.claims_label),
            KeyRole::ClaimsMac => self.claims_mac_label.as_deref(),
            KeyRole::Signing | KeyRole::Credential => None,
        }
    }

    /// Sessions the pool opens for operations, at most.
    pub(super) fn sessions(&self) -> usize {
        self.max_idle
    }

    /// Runs one PKCS#11 operation on an HSM thread with a pooled session
    /// and the handle of `key` (or the handles of a pair of keys).
    pub(super) async fn run<T, F, K>(
        self: &Arc<Self>,
        context: &'static str,
        key: K,
        op: F,
    ) -> Result<T, HsmError>
    where
        T: Send + 'static,
        K: Keys,
        F: Fn(&Session, K::Handles) -> Result<T, CkError> + Send + 'static,
    {
        let pool = Arc::clone(self);
        let start = std::time::Instant::now();
        // A token that stops answering must not hold requests forever: after
        // `op_timeout` the caller gets an error (500 server_error, /readyz
        // 503) while the PKCS#11 call, which cannot be cancelled, finishes on
        // its thread and its result is dropped. Nothing is consumed without
        // a token, since consumption comes after the signature. A call whose
        // caller stopped waiting before a thread reached it is taken back
        // out of the queue, not made.
        //
        // Calls wait in the threads' own queue, not at an async gate in
        // front of it: a thread that finishes a call takes the next one at
        // once, instead of sleeping until a request worker gets round to
        // the task waiting for its turn (docs/performance.md, sixth pass).
        let work = async move {
            if pool.closed.load(Ordering::SeqCst) {
                return Err(HsmError::Unavailable {
                    context,
                    detail: "the HSM connection is closed".to_owned(),
                });
            }
            let caller = Arc::clone(&pool);
            pool.workers
                .submit(move || caller.run_blocking(context, &key, &op))
                .await
                .map_err(|_| HsmError::Internal {
                    context,
                    detail: "the HSM call panicked".to_owned(),
                })?
        };
        let result = match tokio::time::timeout(self.op_timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(HsmError::Unavailable {
                context,
                detail: format!(
                    "the HSM did not answer within {} ms",
                    self.op_timeout.as_millis()
                ),
            }),
        };
        crate::telemetry::observe(crate::telemetry::HSM_SECONDS, context, start);
        result
    }

    fn run_blocking<T, K: Keys>(
        &self,
        context: &'static str,
        key: &K,
        op: &Operation<T, K>,
    ) -> Result<T, HsmError> {
        let mut last = None;
        for attempt in 0..2 {
            // An earlier recovery failed (e.g. the token was away): try again
            // now, before taking the shared gate that recovery must not wait on.
            if lock(&self.state).keeper.is_none() {
                self.recover_now(context)?;
            }
            let failed_generation = {
                let _gate = self.gate.read().unwrap_or_else(PoisonError::into_inner);
                let (session, generation) = self.checkout(context)?;
                let outcome = key
                    .resolve(self, &session)
                    .and_then(|handle| op(&session, handle).map_err(|e| (e, context).into()));
                match outcome {
                    Ok(value) => {
                        self.checkin(session, generation);
                        return Ok(value);
                    }
                    Err(Failure::Stale(e)) if attempt == 0 => {
                        tracing::warn!(error = %e, "HSM session or key handles are stale; recovering and retrying once");
                        last = Some(e);
                        generation
                    }
                    // A device error with the keeper session still answering
                    // is one operation's fault: no pool-wide recovery for it.
                    Err(Failure::Device(e)) if attempt == 0 && !self.keeper_answers() => {
                        tracing::warn!(error = %e, "the HSM link or device failed; recovering and retrying once");
                        last = Some(e);
                        generation
                    }
                    // The session is closed, not pooled: some modules
                    // (tpm2-pkcs11) leave a failed operation active, and
                    // the session's next call would fail with
                    // CKR_OPERATION_ACTIVE. Other sessions keep the login.
                    Err(Failure::Stale(e) | Failure::Device(e) | Failure::Other(e)) => {
                        drop(session);
                        return Err(e);
                    }
                }
            };
            self.recover(failed_generation, context)?;
        }
        Err(last.unwrap_or(HsmError::Internal {
            context,
            detail: "retry limit reached".to_owned(),
        }))
    }

    /// Whether the keeper session still answers the token (`C_GetSessionInfo`).
    fn keeper_answers(&self) -> bool {
        lock(&self.state)
            .keeper
            .as_ref()
            .is_some_and(|keeper| keeper.get_session_info().is_ok())
    }

    fn checkout(&self, context: &'static str) -> Result<(Session, u64), HsmError> {
        let (pkcs11, slot, generation) = {
            let state = lock(&self.state);
            if state.keeper.is_none() {
                return Err(HsmError::Unavailable {
                    context,
                    detail: "not logged in".to_owned(),
                });
            }
            (state.pkcs11.clone(), state.slot, state.generation)
        };
        self.session_for(pkcs11, slot, generation, context)
    }

    fn session_for(
        &self,
        pkcs11: Pkcs11,
        slot: Slot,
        generation: u64,
        context: &'static str,
    ) -> Result<(Session, u64), HsmError> {
        let pooled = {
            let mut idle = lock(&self.idle);
            let position = idle.iter().rposition(|(g, _)| *g == generation);
            position.map(|i| idle.swap_remove(i).1)
        };
        let session = match pooled {
            Some(s) => s,
            None => self
                .open_operation_session(&pkcs11, slot)
                .map_err(|e| HsmError::from_pkcs11(context, e))?,
        };
        Ok((session, generation))
    }

    /// Opens a session for operations: read-only, since operations create
    /// and change nothing on the token, unless the module refuses read-only
    /// sessions (AWS CloudHSM's SDK 5 answers `CKR_FUNCTION_FAILED`); from
    /// then on, read-write ones. Logged once.
    fn open_operation_session(&self, pkcs11: &Pkcs11, slot: Slot) -> Result<Session, CkError> {
        if self.read_only_refused.load(Ordering::Relaxed) {
            return pkcs11.open_rw_session(slot);
        }
        match pkcs11.open_ro_session(slot) {
            Err(CkError::Pkcs11(RvError::FunctionFailed | RvError::FunctionNotSupported, _)) => {
                // Only a module that then accepts a read-write session is
                // taken to refuse read-only ones (not a link that is down).
                let session = pkcs11.open_rw_session(slot)?;
                if !self.read_only_refused.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        "the token refuses read-only sessions; operation sessions are read-write"
                    );
                }
                Ok(session)
            }
            other => other,
        }
    }

    fn resolve(&self, key: &KeyRef, session: &Session) -> Result<ObjectHandle, Failure> {
        let mut state = lock(&self.state);
        match key {
            KeyRef::Hashing => Ok(state.hashing),
            KeyRef::Audit => Ok(state.audit),
            KeyRef::Signing(label) => {
                if let Some(handle) = state.signing.get(label) {
                    return Ok(*handle);
                }
                // First use since start-up or a recovery: the custody rule
                // is checked again before the key signs anything.
                let handle = keys::find_custodied_key(session, KeyRole::Signing, label)
                    .map_err(Failure::from_hsm)?;
                state.signing.insert(label.clone(), handle);
                Ok(handle)
            }
            // As for signing keys: custody checked again on first use
            // since start-up or a recovery.
            KeyRef::Claims => first_use(
                session,
                &mut state.claims,
                KeyRole::Claims,
                Some(&self.claims_label),
            ),
            KeyRef::ClaimsMac => first_use(
                session,
                &mut state.claims_mac,
                KeyRole::ClaimsMac,
                self.claims_mac_label.as_deref(),
            ),
        }
    }

    fn checkin(&self, session: Session, generation: u64) {
        // A session from before a recovery belongs to a dead login: close it.
        if generation != lock(&self.state).generation {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < self.max_idle {
            idle.push((generation, session));
        }
    }

    fn recover_now(&self, context: &'static str) -> Result<(), HsmError> {
        let generation = lock(&self.state).generation;
        self.recover(generation, context)
    }

    /// Logs in again and looks the keys up again, unless another thread
    /// already recovered since `failed_generation`. If the module itself has
    /// lost the token (it can no longer log in), it is finalised and
    /// initialised again, with no other call inside it meanwhile.
    fn recover(&self, failed_generation: u64, context: &'static str) -> Result<(), HsmError> {
        let closed = || HsmError::Unavailable {
            context,
            detail: "the HSM connection is closed".to_owned(),
        };
        if self.closed.load(Ordering::SeqCst) {
            return Err(closed());
        }
        if self.pin_refused() {
            return Err(refused_earlier());
        }
        let paused = || HsmError::Unavailable {
            context,
            detail: "the token is unreachable (reconnecting failed moments ago)".to_owned(),
        };
        // Lock-free: a recovery in progress holds the gate and the state.
        if !self.logged_in.load(Ordering::SeqCst) && self.failed_reconnect.recent() {
            return Err(paused());
        }
        let asked = Instant::now();
        let _gate = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        // `close` may have finished while this call waited for the gate: a
        // finalised module is not initialised and logged in again.
        if self.closed.load(Ordering::SeqCst) {
            return Err(closed());
        }
        let mut state = lock(&self.state);
        if state.generation != failed_generation && state.keeper.is_some() {
            return Ok(());
        }
        // A reconnection that failed while this call waited for the gate
        // answers for it too: no queue of callers each reconnecting in turn.
        if state.keeper.is_none() && self.failed_reconnect.since(asked) {
            return Err(paused());
        }
        lock(&self.idle).clear();
        state.keeper = None;
        self.logged_in.store(false, Ordering::SeqCst);
        state.signing.clear();
        state.claims = None;
        state.claims_mac = None;
        // Both paths check the token's serial before logging in, and the
        // custody of the fixed keys after (signing keys: on first use).
        let relogin = self.log_in(&state.pkcs11, state.slot).and_then(|keeper| {
            let fixed = find_fixed(&keeper, &self.hashing_label, &self.audit_label)?;
            Ok((keeper, fixed))
        });
        let (keeper, (hashing, audit)) = match relogin {
            Ok(found) => found,
            Err(e @ HsmError::Auth(_)) => return Err(e),
            Err(first) => {
                tracing::warn!(error = %first, "logging in again failed; re-initialising the PKCS#11 module");
                match self.reinitialise(&mut state) {
                    Ok(found) => found,
                    Err(e) => {
                        self.failed_reconnect.record();
                        return Err(e);
                    }
                }
            }
        };
        self.failed_reconnect.clear();
        state.keeper = Some(keeper);
        self.logged_in.store(true, Ordering::SeqCst);
        state.hashing = hashing;
        state.audit = audit;
        state.generation = state.generation.max(failed_generation) + 1;
        tracing::info!("HSM session recovered");
        Ok(())
    }

    /// Finalises the module and initialises it again (a module that lost its
    /// token or its link, as p11-kit's client after its server restarted,
    /// only recovers this way), then logs in and finds the fixed keys. The
    /// new module instance is kept even when the token is not back yet.
    fn reinitialise(
        &self,
        state: &mut LoginState,
    ) -> Result<(Session, (ObjectHandle, ObjectHandle)), HsmError> {
        if let Err(e) = state.pkcs11.clone().finalize() {
            tracing::debug!(error = %e, "C_Finalize before re-initialising");
        }
        state.pkcs11 = load_module(&self.module)?;
        state.slot = find_token(&state.pkcs11, &self.token_label)?;
        let keeper = self.log_in(&state.pkcs11, state.slot)?;
        let fixed = find_fixed(&keeper, &self.hashing_label, &self.audit_label)?;
        Ok((keeper, fixed))
    }

    /// Logs out and finalises the module. Idempotent; operations after it
    /// fail as "HSM unavailable".
    pub(super) fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let _gate = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        lock(&self.idle).clear();
        let mut state = lock(&self.state);
        if let Some(keeper) = state.keeper.take() {
            if let Err(e) = keeper.logout() {
                tracing::warn!(error = %e, "HSM logout failed");
            }
        }
        // cryptoki does not finalise on drop; sessions still held elsewhere
        // only keep handles that are now invalid.
        if let Err(e) = state.pkcs11.clone().finalize() {
            tracing::warn!(error = %e, "C_Finalize failed");
        }
    }
}

/// How an attempt failed: stale (worth one recovery) or not.
pub(super) enum Failure {
    Stale(HsmError),
    /// `CKR_DEVICE_ERROR`: a lost link (stale) or a fault of one operation;
    /// the keeper session tells which.
    Device(HsmError),
    Other(HsmError),
}

impl Failure {
    fn from_hsm(e: HsmError) -> Self {
        match e {
            HsmError::Unavailable { .. } => Failure::Stale(e),
            other => Failure::Other(other),
        }
    }
}

impl From<(CkError, &'static str)> for Failure {
    fn from((e, context): (CkError, &'static str)) -> Self {
        let device = matches!(e, CkError::Pkcs11(RvError::DeviceError, _));
        let stale = is_stale_error(&e);
        let e = HsmError::from_pkcs11(context, e);
        if device {
            Failure::Device(e)
        } else if stale {
            Failure::Stale(e)
        } else {
            Failure::Other(e)
        }
    }
}

/// Opens a read-write session and logs the user in. A token that says the
/// user is already logged in (another session did it) is fine. Only
/// `Pool::open` (once) and `Pool::log_in` call it.
fn login(pkcs11: &Pkcs11, slot: Slot, pin: &AuthPin) -> Result<Session, HsmError> {
    tracing::info!("logging in to the HSM token");
    let session = pkcs11
        .open_rw_session(slot)
        .map_err(|e| HsmError::from_pkcs11("opening a session", e))?;
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(e) => Err(HsmError::from_pkcs11("logging in", e)),
    }
}

/// The cached handle of a fixed key found on first use, or finds it now
/// (custody checked) and caches it. `label` is `None` when the key is not
/// configured.
fn first_use(
    session: &Session,
    cached: &mut Option<ObjectHandle>,
    role: KeyRole,
    label: Option<&str>,
) -> Result<ObjectHandle, Failure> {
    if let Some(handle) = *cached {
        return Ok(handle);
    }
    // Only the claims MAC key is optional.
    let label = label.ok_or_else(|| {
        Failure::Other(HsmError::KeyNotFound(
            "no claims MAC key is configured (hsm.claims_mac_key)".to_owned(),
        ))
    })?;
    let handle = keys::find_custodied_key(session, role, label).map_err(Failure::from_hsm)?;
    *cached = Some(handle);
    Ok(handle)
}

fn find_fixed(
    session: &Session,
    hashing_label: &str,
    audit_label: &str,
) -> Result<(ObjectHandle, ObjectHandle), HsmError> {
    Ok((
        keys::find_custodied_key(session, KeyRole::Hashing, hashing_label)?,
        keys::find_custodied_key(session, KeyRole::Audit, audit_label)?,
    ))
}

fn refused_earlier() -> HsmError {
    HsmError::Auth("the token refused the PIN earlier; fix the PIN source and restart".to_owned())
}
