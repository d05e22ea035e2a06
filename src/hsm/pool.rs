//! Session pool, login state and cached key handles (see the module doc of `hsm`).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use tokio::sync::Semaphore;

use super::keys::{self, Custody};
use super::{HsmError, HsmSettings, is_stale_error};

/// Key handles valid for one login "generation". A recovery bumps the
/// generation, so sessions and handles from before it are never reused.
#[derive(Debug, Clone, Copy)]
pub(super) struct Handles {
    pub signing: ObjectHandle,
    pub hashing: ObjectHandle,
    generation: u64,
}

struct LoginState {
    /// Kept open for the life of the process: closing the last session of a
    /// token logs the process out. `None` after a failed recovery.
    keeper: Option<Session>,
    handles: Handles,
}

pub(super) struct Pool {
    pkcs11: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    signing_label: String,
    hashing_label: String,
    state: Mutex<LoginState>,
    idle: Mutex<Vec<(u64, Session)>>,
    permits: Arc<Semaphore>,
    max_idle: usize,
    closed: std::sync::atomic::AtomicBool,
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
        let handles = find_handles(&keeper, &settings.signing_key, &settings.hashing_key, 0)?;
        let sessions = settings.sessions.max(1);
        Ok(Pool {
            pkcs11,
            slot,
            pin,
            signing_label: settings.signing_key.clone(),
            hashing_label: settings.hashing_key.clone(),
            state: Mutex::new(LoginState {
                keeper: Some(keeper),
                handles,
            }),
            idle: Mutex::new(Vec::with_capacity(sessions)),
            permits: Arc::new(Semaphore::new(sessions)),
            max_idle: sessions,
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Runs `op` with the keeper session (start-up and reports, not hot paths).
    pub(super) fn with_keeper<T>(
        &self,
        op: impl FnOnce(&Session) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let state = lock(&self.state);
        match &state.keeper {
            Some(keeper) => op(keeper),
            None => Err(HsmError::Unavailable {
                context: "using the keeper session",
                detail: "not logged in".to_owned(),
            }),
        }
    }

    pub(super) fn custody(&self) -> Result<Vec<Custody>, HsmError> {
        self.with_keeper(|s| {
            let signing = keys::find_one(s, ObjectClass::PRIVATE_KEY, &self.signing_label)?;
            let hashing = keys::find_one(s, ObjectClass::SECRET_KEY, &self.hashing_label)?;
            Ok(vec![
                keys::read_custody(s, signing, &self.signing_label)?,
                keys::read_custody(s, hashing, &self.hashing_label)?,
            ])
        })
    }

    /// Runs one PKCS#11 operation on a blocking thread with a pooled session.
    pub(super) async fn run<T, F>(
        self: &Arc<Self>,
        context: &'static str,
        op: F,
    ) -> Result<T, HsmError>
    where
        T: Send + 'static,
        F: Fn(&Session, &Handles) -> Result<T, CkError> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| HsmError::Unavailable {
                context,
                detail: "the HSM is shutting down".to_owned(),
            })?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let result = pool.run_blocking(context, &op);
            // The module may have left a code or PIN on this thread's stack;
            // blocking threads never park, so wipe here.
            crate::memory::wipe_stack();
            result
        })
        .await
        .map_err(|e| HsmError::Internal {
            context,
            detail: format!("HSM worker failed: {e}"),
        })?
    }

    fn run_blocking<T>(
        &self,
        context: &'static str,
        op: &dyn Fn(&Session, &Handles) -> Result<T, CkError>,
    ) -> Result<T, HsmError> {
        let (session, handles) = self.checkout(context)?;
        match op(&session, &handles) {
            Ok(value) => {
                self.checkin(session, handles.generation);
                Ok(value)
            }
            Err(err) if is_stale_error(&err) => {
                drop(session);
                tracing::warn!(
                    error = %err,
                    "HSM session or key handles are stale; logging in again and retrying once"
                );
                self.recover(handles.generation, context)?;
                let (session, handles) = self.checkout(context)?;
                let value =
                    op(&session, &handles).map_err(|e| HsmError::from_pkcs11(context, e))?;
                self.checkin(session, handles.generation);
                Ok(value)
            }
            Err(err) => {
                self.checkin(session, handles.generation);
                Err(HsmError::from_pkcs11(context, err))
            }
        }
    }

    fn checkout(&self, context: &'static str) -> Result<(Session, Handles), HsmError> {
        let handles = {
            let state = lock(&self.state);
            if state.keeper.is_some() {
                Some(state.handles)
            } else {
                None
            }
        };
        let handles = match handles {
            Some(h) => h,
            None => {
                let failed = lock(&self.state).handles.generation;
                self.recover(failed, context)?;
                lock(&self.state).handles
            }
        };
        let pooled = {
            let mut idle = lock(&self.idle);
            let position = idle.iter().rposition(|(g, _)| *g == handles.generation);
            position.map(|i| idle.swap_remove(i).1)
        };
        let session = match pooled {
            Some(s) => s,
            None => self
                .pkcs11
                .open_ro_session(self.slot)
                .map_err(|e| HsmError::from_pkcs11(context, e))?,
        };
        Ok((session, handles))
    }

    fn checkin(&self, session: Session, generation: u64) {
        // A session from before a recovery belongs to a dead login: close it.
        if generation != lock(&self.state).handles.generation {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < self.max_idle {
            idle.push((generation, session));
        }
    }

    /// Logs in again and refreshes handles, unless another thread already did
    /// so since `failed_generation`.
    fn recover(&self, failed_generation: u64, context: &'static str) -> Result<(), HsmError> {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(HsmError::Unavailable {
                context,
                detail: "the HSM connection is closed".to_owned(),
            });
        }
        let mut state = lock(&self.state);
        if state.handles.generation != failed_generation && state.keeper.is_some() {
            return Ok(());
        }
        lock(&self.idle).clear();
        state.keeper = None;
        let keeper = login(&self.pkcs11, self.slot, &self.pin).map_err(|e| {
            tracing::error!(error = %e, context, "HSM recovery failed");
            e
        })?;
        let handles = find_handles(
            &keeper,
            &self.signing_label,
            &self.hashing_label,
            failed_generation + 1,
        )?;
        state.keeper = Some(keeper);
        state.handles = handles;
        tracing::info!("HSM session recovered");
        Ok(())
    }

    /// Logs out and finalises the module. Idempotent; operations after it
    /// fail as "HSM unavailable".
    pub(super) fn close(&self) {
        if self.closed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        self.permits.close();
        lock(&self.idle).clear();
        let keeper = lock(&self.state).keeper.take();
        if let Some(keeper) = keeper {
            if let Err(e) = keeper.logout() {
                tracing::warn!(error = %e, "HSM logout failed");
            }
        }
        // cryptoki does not finalise on drop; sessions still held elsewhere
        // only keep handles that are now invalid.
        if let Err(e) = self.pkcs11.clone().finalize() {
            tracing::warn!(error = %e, "C_Finalize failed");
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

fn find_handles(
    session: &Session,
    signing_label: &str,
    hashing_label: &str,
    generation: u64,
) -> Result<Handles, HsmError> {
    Ok(Handles {
        signing: keys::find_one(session, ObjectClass::PRIVATE_KEY, signing_label)?,
        hashing: keys::find_one(session, ObjectClass::SECRET_KEY, hashing_label)?,
        generation,
    })
}
