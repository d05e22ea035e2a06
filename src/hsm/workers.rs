//! The threads that make the pool's PKCS#11 calls.
//!
//! A fixed set, one per pooled session, started with the pool: PKCS#11 calls
//! block, so they never run on the async workers; and unlike tokio's
//! blocking pool, which grows a thread whenever none is idle at the instant
//! of a call (two dozen under load here, each with its own stack and malloc
//! arena), the count is known and stays put. Each thread wipes its stack
//! whenever it runs out of calls, before it waits or ends, since the module
//! may have left a code or PIN there.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

/// Most calls waiting for a thread. Far more than a healthy server queues
/// (one per request in flight at most, and the threads make thousands a
/// second); reached only when the module stalls, and then a new call is
/// refused at once rather than waiting out its timeout behind the others.
pub(super) const MAX_WAITING: usize = 4096;

/// A call waiting for a thread, with the answer its caller awaits.
trait Call: Send {
    /// Whether the caller stopped waiting (its timeout).
    fn abandoned(&self) -> bool;
    /// Makes the call and answers, unless the caller stopped waiting.
    fn run(self: Box<Self>);
}

struct Pending<F, T> {
    call: F,
    answer: oneshot::Sender<T>,
}

impl<F: FnOnce() -> T + Send, T: Send> Call for Pending<F, T> {
    fn abandoned(&self) -> bool {
        self.answer.is_closed()
    }

    fn run(self: Box<Self>) {
        // A caller that stopped waiting before a thread reached its call
        // does not want it made: the HSM is slow or stuck, and a backlog of
        // abandoned calls would only add to it.
        if self.abandoned() {
            return;
        }
        let Pending { call, answer } = *self;
        let _ = answer.send(call());
    }
}

type Job = Box<dyn Call>;

/// `submit` found [`MAX_WAITING`] calls still waited for.
#[derive(Debug)]
pub(super) struct Full;

/// The calls waiting for a thread. A deque under a mutex with a condition
/// variable wakes exactly one thread per call; a `std::sync::mpsc` receiver
/// shared behind a mutex would wake a second one each time (the next in
/// line for the mutex), which costs a context switch per call.
#[derive(Default)]
struct Queue {
    jobs: Mutex<Waiting>,
    arrived: Condvar,
}

#[derive(Default)]
struct Waiting {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // Jobs run outside the lock, so a panic cannot poison it mid-update.
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hands PKCS#11 calls to the HSM threads. The threads end when this is
/// dropped and the calls already queued have run.
pub(super) struct Workers {
    queue: Arc<Queue>,
}

impl Workers {
    /// Starts `count` threads named `notary-hsm`.
    pub(super) fn start(count: usize) -> std::io::Result<Self> {
        let queue = Arc::new(Queue::default());
        for _ in 0..count.max(1) {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name("notary-hsm".to_owned())
                .spawn(move || run(&queue))?;
        }
        Ok(Workers { queue })
    }

    /// Queues `call`; the answer comes back on the receiver. The receiver
    /// errs if `call` panicked (its thread survives).
    ///
    /// Calls whose callers stopped waiting are dropped from the queue here,
    /// with what they hold (codes and PINs among it), whenever calls are
    /// waiting: with every thread stuck in the module none would be taken.
    pub(super) fn submit<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<T>, Full> {
        let (answer, receiver) = oneshot::channel();
        {
            let mut waiting = self.queue.lock();
            if !waiting.jobs.is_empty() {
                waiting.jobs.retain(|job| !job.abandoned());
            }
            if waiting.jobs.len() >= MAX_WAITING {
                return Err(Full);
            }
            waiting.jobs.push_back(Box::new(Pending { call, answer }));
        }
        self.queue.arrived.notify_one();
        Ok(receiver)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.arrived.notify_all();
    }
}

/// Runs calls until the queue closes. The stack is wiped each time the
/// thread runs out of calls, before it waits or exits, not after every
/// call: what a call left is overwritten before the thread is idle, which
/// is the promise (`memory.rs`), and a thread kept busy by a queue of calls
/// does not zero 128 KiB between each two of them (3 % of the server's CPU
/// under load, docs/performance.md, fifth pass).
fn run(queue: &Queue) {
    let mut wiped = true;
    loop {
        let job = {
            let mut waiting = queue.lock();
            loop {
                if let Some(job) = waiting.jobs.pop_front() {
                    break job;
                }
                if !wiped {
                    // Not under the lock: callers queue meanwhile.
                    drop(waiting);
                    crate::memory::wipe_stack();
                    wiped = true;
                    waiting = queue.lock();
                    continue;
                }
                if waiting.closed {
                    return;
                }
                waiting = queue
                    .arrived
                    .wait(waiting)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        wiped = false;
        // A panicking call loses its own answer, not the thread.
        let _ = catch_unwind(AssertUnwindSafe(|| job.run()));
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
            .expect("queued")
            .await
            .expect("answer");
        assert_eq!(name.as_deref(), Some("notary-hsm"));

        #[allow(clippy::panic)]
        let lost = workers
            .submit(|| -> u32 { panic!("a failing call") })
            .expect("queued")
            .await;
        assert!(lost.is_err(), "a panicked call has no answer");

        // Both threads are still there: two calls that wait for each other
        // can only finish if they run at the same time.
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let (a, b) = (Arc::clone(&barrier), barrier);
        let first = workers
            .submit(move || a.wait().is_leader())
            .expect("queued");
        let second = workers
            .submit(move || b.wait().is_leader())
            .expect("queued");
        let (first, second) = (first.await.expect("first"), second.await.expect("second"));
        assert!(first ^ second, "exactly one leader");
    }

    #[tokio::test]
    async fn a_call_whose_caller_stopped_waiting_is_not_made() {
        let workers = Workers::start(1).expect("thread");
        // Hold the only thread until the abandoned call is queued behind it.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let busy = workers.submit(move || held.recv().is_ok()).expect("queued");
        let made = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&made);
        let abandoned = workers
            .submit(move || flag.store(true, std::sync::atomic::Ordering::SeqCst))
            .expect("queued");
        drop(abandoned);
        release.send(()).expect("release");
        assert!(busy.await.expect("busy"));
        // Calls run in order on the one thread: once this one answers, the
        // abandoned one has been reached.
        workers.submit(|| ()).expect("queued").await.expect("after");
        assert!(
            !made.load(std::sync::atomic::Ordering::SeqCst),
            "the abandoned call ran"
        );
        // A call whose caller waits is made as before.
        assert_eq!(
            workers.submit(|| 7).expect("queued").await.expect("answer"),
            7
        );
    }

    #[tokio::test]
    async fn a_stalled_queue_refuses_calls_and_lets_go_of_abandoned_ones() {
        let workers = Workers::start(1).expect("thread");
        // The only thread stalls, as in a module that stopped answering.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let stalled = workers.submit(move || held.recv().is_ok()).expect("queued");
        let waited: Vec<_> = (0..MAX_WAITING)
            .map(|_| workers.submit(|| ()).expect("room"))
            .collect();
        assert!(
            workers.submit(|| ()).is_err(),
            "a full queue of calls still waited for refuses the next"
        );
        // Their callers give up (their timeout): the next call finds room,
        // and the abandoned calls are no longer held.
        drop(waited);
        let after = workers.submit(|| 7).expect("room once callers gave up");
        assert_eq!(workers.queue.lock().jobs.len(), 1);
        release.send(()).expect("release");
        assert!(stalled.await.expect("stalled"));
        assert_eq!(after.await.expect("answer"), 7);
    }
}
