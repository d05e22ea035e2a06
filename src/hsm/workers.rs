//! The threads that make the pool's PKCS#11 calls.
//!
//! A fixed set, one per pooled session, started with the pool: PKCS#11 calls
//! block, so they never run on the async workers; and unlike tokio's
//! blocking pool, which grows a thread whenever none is idle at the instant
//! of a call (two dozen under load here, each with its own stack and malloc
//! arena), the count is known and stays put. Each thread wipes its stack
//! after every call, since the module may have left a code or PIN there.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Hands PKCS#11 calls to the HSM threads. The threads end when this is
/// dropped and the calls already queued have run.
pub(super) struct Workers {
    queue: mpsc::Sender<Job>,
}

impl Workers {
    /// Starts `count` threads named `notary-hsm`.
    pub(super) fn start(count: usize) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let jobs = Arc::new(Mutex::new(jobs));
        for _ in 0..count.max(1) {
            let jobs = Arc::clone(&jobs);
            std::thread::Builder::new()
                .name("notary-hsm".to_owned())
                .spawn(move || run(&jobs))?;
        }
        Ok(Workers { queue })
    }

    /// Queues `call`; the answer comes back on the receiver. The receiver
    /// errs if `call` panicked (its thread survives) or the threads are gone.
    pub(super) fn submit<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> oneshot::Receiver<T> {
        let (answer, receiver) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The caller may have stopped waiting (timeout); nothing to do then.
            let _ = answer.send(call());
        });
        // A send fails only when every thread has ended; the dropped job then
        // drops `answer`, and the caller sees the receiver err.
        let _ = self.queue.send(job);
        receiver
    }
}

fn run(jobs: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // Held only while taking one job, never while running it.
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else { return };
        // A panicking call loses its own answer, not the thread.
        let _ = catch_unwind(AssertUnwindSafe(job));
        crate::memory::wipe_stack();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_run_on_the_named_threads_and_a_panic_costs_only_its_answer() {
        let workers = Workers::start(2).expect("threads");
        let name = workers
            .submit(|| std::thread::current().name().map(str::to_owned))
            .await
            .expect("answer");
        assert_eq!(name.as_deref(), Some("notary-hsm"));

        #[allow(clippy::panic)]
        let lost = workers.submit(|| -> u32 { panic!("a failing call") }).await;
        assert!(lost.is_err(), "a panicked call has no answer");

        // Both threads are still there: two calls that wait for each other
        // can only finish if they run at the same time.
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let (a, b) = (Arc::clone(&barrier), barrier);
        let first = workers.submit(move || a.wait().is_leader());
        let second = workers.submit(move || b.wait().is_leader());
        let (first, second) = (first.await.expect("first"), second.await.expect("second"));
        assert!(first ^ second, "exactly one leader");
    }
}
