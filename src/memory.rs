//! Leaving no copy of a code or PIN in process memory once a request is done.
//!
//! Secret newtypes (`secret.rs`) wipe what notary owns. Copies also sit in
//! buffers that libraries own and free: rustls's and hyper's read buffers,
//! axum's body, serde's decoded strings. Three mechanisms cover those:
//!
//! 1. The binary's global allocator wipes every block when it is freed
//!    (`zeroizing-alloc`, which deliberately keeps the default `realloc`:
//!    allocate, copy, free, so the old block is wiped too). See `main.rs`.
//! 2. Hash functions and the PKCS#11 module leave the last blocks they
//!    processed on the thread's stack. Worker threads wipe their stack when
//!    they park (idle), the HSM threads when they run out of calls, before
//!    they wait for the next, and blocking threads that handled a secret
//!    before returning ([`wipe_stack`]).
//! 3. Idle keep-alive connections are closed by hyper's header read timeout,
//!    so the buffers holding their last request are freed (and wiped).
//!
//! The promise this supports, and the test that checks it: no copy of a code
//! or PIN is left after its connection has closed and the workers are idle.
//! During a request the values necessarily exist.

use std::sync::atomic::{AtomicBool, Ordering};

/// Bytes of stack zeroed by [`wipe_stack`]: more than the deepest hashing or
/// PKCS#11 call path uses.
const STACK_WIPE_BYTES: usize = 128 * 1024;

static STACK_WIPING: AtomicBool = AtomicBool::new(true);

/// Zero-fills the next [`STACK_WIPE_BYTES`] of the current thread's stack,
/// overwriting whatever earlier, deeper calls left there.
#[inline(never)]
pub fn wipe_stack() {
    if !STACK_WIPING.load(Ordering::Relaxed) {
        return;
    }
    let scratch = [0u8; STACK_WIPE_BYTES];
    // black_box keeps the otherwise dead store of zeros from being removed.
    std::hint::black_box(&scratch);
}

/// Switches stack wiping off for the whole process. Exists only for the
/// control experiment in the memory test (`examples/notary-unwiped.rs`),
/// which must be able to find secrets that wiping would have removed.
pub fn disable_stack_wiping_for_control_experiment() {
    STACK_WIPING.store(false, Ordering::Relaxed);
}

/// A tokio runtime whose worker threads wipe their stacks when idle.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(wipe_stack)
        .build()
}

/// Keeps secrets out of core dumps and away from unprivileged debuggers:
/// sets `RLIMIT_CORE` to 0 and marks the process not dumpable
/// (`PR_SET_DUMPABLE` 0), which also makes `/proc/PID/mem` readable only by
/// root. The systemd unit sets `LimitCORE=0` as well, so a crash before this
/// runs dumps nothing either.
pub fn forbid_core_dumps() -> std::io::Result<()> {
    use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    Ok(())
}
