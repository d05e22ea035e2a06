//! Per-address flood limit for unknown pre-authorized codes.
//!
//! Only requests whose code matches no offer count: a wallet that mistypes a
//! PIN is limited by the offer's own lockout, not by this. An address that
//! sends `max` unknown codes within one fixed window is refused with 429
//! until the window ends; other addresses are unaffected.
//!
//! The counters live in this process (see docs/architecture.md: several
//! instances each keep their own, so the effective limit is N × max).
//! It is small enough to own here rather than adapt a generic limiter, whose
//! "check" also consumes a cell and so cannot express "count only failures".

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Counters per client address.
#[derive(Debug)]
pub struct FloodGuard {
    max: u32,
    window: Duration,
    windows: Mutex<HashMap<IpAddr, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    unknown_codes: u32,
}

/// Entries kept before expired windows are swept.
const SWEEP_AT: usize = 10_000;

impl FloodGuard {
    /// `max` unknown codes per address per `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        FloodGuard {
            max,
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// If `addr` is over the limit: seconds until it may try again.
    pub fn blocked_for(&self, addr: IpAddr, now: Instant) -> Option<u64> {
        let windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let w = windows.get(&addr)?;
        let elapsed = now.saturating_duration_since(w.started);
        if w.unknown_codes >= self.max && elapsed < self.window {
            Some((self.window - elapsed).as_secs().max(1))
        } else {
            None
        }
    }

    /// Counts one unknown code from `addr`.
    pub fn record_unknown(&self, addr: IpAddr, now: Instant) {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if windows.len() >= SWEEP_AT {
            let window = self.window;
            windows.retain(|_, w| now.saturating_duration_since(w.started) < window);
        }
        let w = windows.entry(addr).or_insert(Window {
            started: now,
            unknown_codes: 0,
        });
        if now.saturating_duration_since(w.started) >= self.window {
            *w = Window {
                started: now,
                unknown_codes: 0,
            };
        }
        w.unknown_codes = w.unknown_codes.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_until_the_window_passes_and_only_that_address() {
        let guard = FloodGuard::new(3, Duration::from_secs(60));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..2 {
            guard.record_unknown(a, t0);
        }
        assert_eq!(guard.blocked_for(a, t0), None);
        guard.record_unknown(a, t0);
        assert_eq!(guard.blocked_for(a, t0), Some(60));
        assert_eq!(guard.blocked_for(b, t0), None);
        let later = t0 + Duration::from_secs(45);
        assert_eq!(guard.blocked_for(a, later), Some(15));
        assert_eq!(guard.blocked_for(a, t0 + Duration::from_secs(61)), None);
    }
}
