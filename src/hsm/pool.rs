//! Session pool, login state and cached key handles (see the module doc of `hsm`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use tokio::sync::Semaphore;

use super::workers::Workers;
use super::{HsmError, HsmSettings, find_token, is_stale_error, keys, load_module};

/// Which key an operation needs.
#[derive(Debug, Clone)]
pub(super) enum KeyRef {
    /// The HMAC key for codes, PINs and API keys.
    Hashing,
    /// The key that signs audit checkpoints.
    Audit,
    /// A Notary signing key, by label.
    Signing(String),
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
}

pub(super) struct Pool {
    module: PathBuf,
    token_label: String,
    pin: AuthPin,
    hashing_label: String,
    audit_label: String,
    state: Mutex<LoginState>,
    idle: Mutex<Vec<(u64, Session)>>,
    /// Held (shared) by every PKCS#11 call; taken exclusively only to
    /// finalise and re-initialise the module, so no call is inside the
    /// module while it restarts.
    gate: RwLock<()>,
    permits: Arc<Semaphore>,
    /// The threads that make the calls, as many as there are sessions.
    workers: Workers,
    max_idle: usize,
    closed: AtomicBool,
    /// Set when the token refused the PIN during a recovery: logging in
    /// again with the same PIN could lock the user on a real HSM, so no
    /// further attempt is made until the process restarts.
    pin_refused: AtomicBool,
    /// Longest wait for one operation, queueing for a session included.
    op_timeout: std::time::Duration,
}

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
        settings: &HsmSettings,
    ) -> Result<Self, HsmError> {
        let keeper = login(&pkcs11, slot, &pin)?;
        let (hashing, audit) = find_fixed(&keeper, &settings.hashing_key, &settings.audit_key)?;
        let sessions = settings.sessions.max(1);
        Ok(Pool {
            module: settings.module.clone(),
            token_label: settings.token.clone(),
            pin,
            hashing_label: settings.hashing_key.clone(),
            audit_label: settings.audit_key.clone(),
            state: Mutex::new(LoginState {
                pkcs11,
                slot,
                keeper: Some(keeper),
                generation: 0,
                hashing,
                audit,
                signing: HashMap::new(),
            }),
            idle: Mutex::new(Vec::with_capacity(sessions)),
            gate: RwLock::new(()),
            permits: Arc::new(Semaphore::new(sessions)),
            workers: Workers::start(sessions).map_err(|e| HsmError::Internal {
                context: "starting the HSM threads",
                detail: e.to_string(),
            })?,
            op_timeout: settings.operation_timeout,
            max_idle: sessions,
            closed: AtomicBool::new(false),
            pin_refused: AtomicBool::new(false),
        })
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

    /// Labels of the fixed keys: (hashing, audit).
    pub(super) fn fixed_labels(&self) -> (&str, &str) {
        (&self.hashing_label, &self.audit_label)
    }

    /// Runs one PKCS#11 operation on an HSM thread with a pooled session
    /// and the handle of `key`.
    pub(super) async fn run<T, F>(
        self: &Arc<Self>,
        context: &'static str,
        key: KeyRef,
        op: F,
    ) -> Result<T, HsmError>
    where
        T: Send + 'static,
        F: Fn(&Session, ObjectHandle) -> Result<T, CkError> + Send + 'static,
    {
        let pool = Arc::clone(self);
        let start = std::time::Instant::now();
        // A token that stops answering must not hold requests forever: after
        // `op_timeout` the caller gets an error (500 server_error, /readyz
        // 503) while the PKCS#11 call, which cannot be cancelled, finishes on
        // its thread and its result is dropped. Nothing is consumed without
        // a token, since consumption comes after the signature.
        let work = async move {
            let permit = Arc::clone(&pool.permits)
                .acquire_owned()
                .await
                .map_err(|_| HsmError::Unavailable {
                    context,
                    detail: "the HSM connection is closed".to_owned(),
                })?;
            let caller = Arc::clone(&pool);
            pool.workers
                .submit(move || {
                    let _permit = permit;
                    caller.run_blocking(context, &key, &op)
                })
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

    fn run_blocking<T>(
        &self,
        context: &'static str,
        key: &KeyRef,
        op: &dyn Fn(&Session, ObjectHandle) -> Result<T, CkError>,
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
                let outcome = self
                    .resolve(key, &session)
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
                    Err(Failure::Stale(e)) | Err(Failure::Other(e)) => {
                        self.checkin(session, generation);
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
            None => pkcs11
                .open_ro_session(slot)
                .map_err(|e| HsmError::from_pkcs11(context, e))?,
        };
        Ok((session, generation))
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
                let handle = keys::find_one(session, ObjectClass::PRIVATE_KEY, label)
                    .map_err(Failure::from_hsm)?;
                state.signing.insert(label.clone(), handle);
                Ok(handle)
            }
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
        if self.closed.load(Ordering::SeqCst) {
            return Err(HsmError::Unavailable {
                context,
                detail: "the HSM connection is closed".to_owned(),
            });
        }
        if self.pin_refused.load(Ordering::SeqCst) {
            return Err(HsmError::Auth(
                "the token refused the PIN earlier; fix the PIN source and restart".to_owned(),
            ));
        }
        let _gate = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        let mut state = lock(&self.state);
        if state.generation != failed_generation && state.keeper.is_some() {
            return Ok(());
        }
        lock(&self.idle).clear();
        state.keeper = None;
        state.signing.clear();
        let relogin = login(&state.pkcs11, state.slot, &self.pin).and_then(|keeper| {
            let fixed = find_fixed(&keeper, &self.hashing_label, &self.audit_label)?;
            Ok((keeper, fixed))
        });
        let (keeper, (hashing, audit)) = match relogin {
            Ok(found) => found,
            Err(HsmError::Auth(e)) => {
                self.pin_refused.store(true, Ordering::SeqCst);
                tracing::error!(
                    "the token refused the PIN; no further login attempts until restart"
                );
                return Err(HsmError::Auth(e));
            }
            Err(first) => {
                tracing::warn!(error = %first, "logging in again failed; re-initialising the PKCS#11 module");
                if let Err(e) = state.pkcs11.clone().finalize() {
                    tracing::debug!(error = %e, "C_Finalize before re-initialising");
                }
                let pkcs11 = load_module(&self.module)?;
                let slot = find_token(&pkcs11, &self.token_label)?;
                state.pkcs11 = pkcs11;
                state.slot = slot;
                let keeper = login(&state.pkcs11, slot, &self.pin)?;
                let fixed = find_fixed(&keeper, &self.hashing_label, &self.audit_label)?;
                (keeper, fixed)
            }
        };
        state.keeper = Some(keeper);
        state.hashing = hashing;
        state.audit = audit;
        state.generation = state.generation.max(failed_generation) + 1;
        tracing::info!("HSM session recovered");
        Ok(())
    }

    /// Logs out and finalises the module. Idempotent; operations after it
    /// fail as "HSM unavailable".
    pub(super) fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.permits.close();
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
enum Failure {
    Stale(HsmError),
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
        let stale = is_stale_error(&e);
        let e = HsmError::from_pkcs11(context, e);
        if stale {
            Failure::Stale(e)
        } else {
            Failure::Other(e)
        }
    }
}

/// Opens a read-write session and logs the user in. A token that says the
/// user is already logged in (another session did it) is fine.
pub(super) fn login(pkcs11: &Pkcs11, slot: Slot, pin: &AuthPin) -> Result<Session, HsmError> {
    let session = pkcs11
        .open_rw_session(slot)
        .map_err(|e| HsmError::from_pkcs11("opening a session", e))?;
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(e) => Err(HsmError::from_pkcs11("logging in", e)),
    }
}

fn find_fixed(
    session: &Session,
    hashing_label: &str,
    audit_label: &str,
) -> Result<(ObjectHandle, ObjectHandle), HsmError> {
    Ok((
        keys::find_one(session, ObjectClass::SECRET_KEY, hashing_label)?,
        keys::find_one(session, ObjectClass::PRIVATE_KEY, audit_label)?,
    ))
}
