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
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

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
    /// Each call with its number, by which a caller that stops waiting
    /// takes it back.
    jobs: VecDeque<(u64, Job)>,
    /// The next call's number.
    next: u64,
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

    /// Queues `call` and returns its answer to await. The answer errs if
    /// `call` panicked (its thread survives). A caller that stops waiting
    /// (drops the answer: its timeout) takes its call back out of the
    /// queue if no thread has reached it yet, so the queue never holds
    /// calls nobody waits for, nor what they carry (codes and PINs), even
    /// while every thread is stuck in the module.
    pub(super) fn submit<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> Answer<T> {
        let (answer, receiver) = oneshot::channel();
        let job: Job = Box::new(move || {
            // Not taken back in time: the caller gave up just as a thread
            // reached the call, which is then not made.
            if answer.is_closed() {
                return;
            }
            let _ = answer.send(call());
        });
        let number = {
            let mut waiting = self.queue.lock();
            let number = waiting.next;
            waiting.next += 1;
            waiting.jobs.push_back((number, job));
            number
        };
        self.queue.arrived.notify_one();
        Answer {
            receiver,
            queue: Arc::clone(&self.queue),
            number,
            answered: false,
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.arrived.notify_all();
    }
}

/// The answer to a queued call. Dropped unanswered, it takes the call
/// back out of the queue (a search of the queue, made only when the caller
/// stops waiting: a timeout or a cancelled request).
pub(super) struct Answer<T> {
    receiver: oneshot::Receiver<T>,
    queue: Arc<Queue>,
    number: u64,
    answered: bool,
}

/// The call panicked: it has no answer.
#[derive(Debug)]
pub(super) struct Panicked;

impl<T> Future for Answer<T> {
    type Output = Result<T, Panicked>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let polled = Pin::new(&mut self.receiver).poll(cx);
        if polled.is_ready() {
            // Taken by a thread and done: nothing to take back.
            self.answered = true;
        }
        polled.map(|answer| answer.map_err(|_| Panicked))
    }
}

impl<T> Drop for Answer<T> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        // Closed first, so that a thread popping the call meanwhile sees
        // that nobody waits for it and does not make it.
        self.receiver.close();
        let withdrawn = {
            let mut waiting = self.queue.lock();
            let position = waiting.jobs.iter().position(|(n, _)| *n == self.number);
            position.and_then(|i| waiting.jobs.remove(i))
        };
        // Dropped outside the lock: what the call captured is wiped on drop.
        drop(withdrawn);
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
                if let Some((_, job)) = waiting.jobs.pop_front() {
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
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

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

    /// Occupies the only thread of `workers` until the returned sender
    /// sends (or is dropped); returns once the thread is in the call.
    fn stall(workers: &Workers) -> (std::sync::mpsc::Sender<()>, Answer<bool>) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, start) = std::sync::mpsc::channel::<()>();
        let stalled = workers.submit(move || {
            let _ = started.send(());
            held.recv().is_ok()
        });
        start.recv().expect("the thread took the call");
        (release, stalled)
    }

    #[tokio::test]
    async fn a_caller_that_stops_waiting_takes_its_call_back_and_it_is_not_made() {
        let workers = Workers::start(1).expect("thread");
        // The only thread is stuck, as in a module that stopped answering.
        let (release, stalled) = stall(&workers);
        let made = Arc::new(AtomicBool::new(false));
        let abandoned: Vec<_> = (0..100)
            .map(|_| {
                let flag = Arc::clone(&made);
                workers.submit(move || flag.store(true, Ordering::SeqCst))
            })
            .collect();
        let waited = workers.submit(|| 7);
        assert_eq!(workers.queue.lock().jobs.len(), 101);
        // Their callers give up (their timeout): the queue lets go of
        // their calls at once, with what they hold, while the thread is
        // still stuck; the call still waited for stays.
        drop(abandoned);
        assert_eq!(workers.queue.lock().jobs.len(), 1);
        release.send(()).expect("release");
        assert!(stalled.await.expect("stalled"));
        assert_eq!(waited.await.expect("answer"), 7);
        assert!(!made.load(Ordering::SeqCst), "an abandoned call ran");
    }
}
