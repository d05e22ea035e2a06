//! Per-address budget for failing requests that cost notary real work.
//!
//! Every request that may cost an HSM operation or a database write before
//! it can fail (a token request, a by-reference offer lookup, an admin API
//! key check) first takes one unit of its address's budget. A request that
//! succeeds gives its unit back; one that fails, or whose client goes away,
//! keeps it spent. An address that has spent `max` units within the window
//! gets 429 before any HSM or database work is done. Because the unit is
//! taken before the work, concurrent requests cannot overshoot the budget.
//!
//! The table is bounded and O(1) per request:
//! - counts live in two generations of one window each (the current one
//!   and the one before), and an address's load is estimated as
//!   `current + previous × (unelapsed share of the window)`, a sliding
//!   window without per-address timestamps; at each window boundary the
//!   older generation is dropped whole, never scanned;
//! - a generation holds at most `max_addresses` entries; addresses that
//!   arrive once it is full share one overflow entry, so a flood from very
//!   many addresses throttles newcomers together instead of growing memory;
//! - IPv6 clients are keyed by their /64, the block one host usually gets,
//!   so rotating addresses within it does not buy a fresh budget.
//!
//! The counters live in this process: with N instances behind a balancer the
//! effective budget is up to N × max (docs/architecture.md).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Whom a budget belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ClientKey {
    /// One IPv4 address (IPv4-mapped IPv6 included).
    V4(u32),
    /// One IPv6 /64 network.
    V6(u64),
    /// Every address that arrived after a generation filled up.
    Overflow,
}

impl ClientKey {
    fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(v4) => ClientKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(u32::from(v4)),
                None => {
                    let [a, b, c, d, ..] = v6.segments();
                    ClientKey::V6(
                        (u64::from(a) << 48)
                            | (u64::from(b) << 32)
                            | (u64::from(c) << 16)
                            | u64::from(d),
                    )
                }
            },
        }
    }
}

/// Spent units per client in one window.
type Generation = HashMap<ClientKey, u32>;

#[derive(Debug)]
struct Table {
    /// Start of the current window.
    started: Instant,
    /// Counts of the current window.
    current: Generation,
    /// Counts of the window before it.
    previous: Generation,
    /// Number of the current window, so a refund finds its generation.
    window_number: u64,
}

/// The per-address budgets of this process.
#[derive(Debug)]
pub struct FloodGuard {
    max: u32,
    window: Duration,
    max_addresses: usize,
    table: Mutex<Table>,
}

/// One unit of an address's budget, taken for a request. Dropping it keeps
/// the unit spent (the request failed, or its client went away);
/// [`Admission::succeeded`] gives it back.
#[derive(Debug)]
#[must_use = "dropping an admission counts the request as failed"]
pub struct Admission<'a> {
    guard: &'a FloodGuard,
    key: ClientKey,
    window_number: u64,
}

impl Admission<'_> {
    /// The request succeeded: its unit goes back to the budget.
    pub fn succeeded(self) {
        self.guard.refund(self.key, self.window_number);
    }
}

impl FloodGuard {
    /// `max` failing requests per address per `window`, counting at most
    /// `max_addresses` distinct addresses per window.
    pub fn new(max: u32, window: Duration, max_addresses: usize) -> Self {
        let window = window.max(Duration::from_secs(1));
        FloodGuard {
            max,
            window,
            max_addresses: max_addresses.max(1),
            table: Mutex::new(Table {
                started: Instant::now(),
                current: HashMap::new(),
                previous: HashMap::new(),
                window_number: 0,
            }),
        }
    }

    /// The budget `[flood]` configures.
    pub fn from_config(config: &crate::config::FloodConfig) -> Self {
        FloodGuard::new(
            config.max_failures,
            Duration::from_secs(config.window_secs),
            config.max_addresses,
        )
    }

    /// Takes one unit of `addr`'s budget, or says how many seconds it must
    /// wait because the budget is spent.
    pub fn admit(&self, addr: IpAddr, now: Instant) -> Result<Admission<'_>, u64> {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        self.roll(&mut table, now);
        let elapsed = now.saturating_duration_since(table.started);
        let mut key = ClientKey::of(addr);
        if !table.current.contains_key(&key) && table.current.len() >= self.max_addresses {
            key = ClientKey::Overflow;
        }
        let current = table.current.get(&key).copied().unwrap_or(0);
        let previous = table.previous.get(&key).copied().unwrap_or(0);
        let unelapsed = 1.0 - elapsed.as_secs_f64() / self.window.as_secs_f64();
        let load = f64::from(current) + f64::from(previous) * unelapsed.clamp(0.0, 1.0);
        if load >= f64::from(self.max) {
            let left = self.window.saturating_sub(elapsed);
            let wait = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            return Err(wait.max(1));
        }
        *table.current.entry(key).or_insert(0) += 1;
        Ok(Admission {
            guard: self,
            key,
            window_number: table.window_number,
        })
    }

    /// [`FloodGuard::admit`] now, with a spent budget answered as the 429
    /// `slow_down` (and `Retry-After`) every endpoint sends for it.
    pub fn admit_now(
        &self,
        addr: IpAddr,
        description: &'static str,
    ) -> Result<Admission<'_>, super::error::ApiError> {
        self.admit(addr, Instant::now()).map_err(|retry_after| {
            super::error::ApiError::slow_down(description, Some(retry_after))
        })
    }

    /// Entries in the current generation (for tests and metrics).
    pub fn tracked_addresses(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .current
            .len()
    }

    /// Starts a new window when the current one has passed.
    fn roll(&self, table: &mut Table, now: Instant) {
        let elapsed = now.saturating_duration_since(table.started);
        if elapsed < self.window {
            return;
        }
        let windows = elapsed.as_nanos() / self.window.as_nanos().max(1);
        let ended = std::mem::take(&mut table.current);
        // Two or more windows passed: nothing of the ended one still counts.
        table.previous = if windows == 1 { ended } else { HashMap::new() };
        let step = self.window * u32::try_from(windows).unwrap_or(u32::MAX);
        table.started = table.started.checked_add(step).unwrap_or(now);
        table.window_number = table
            .window_number
            .saturating_add(u64::try_from(windows).unwrap_or(u64::MAX));
    }

    fn refund(&self, key: ClientKey, window_number: u64) {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let generation = if window_number == table.window_number {
            &mut table.current
        } else if window_number.saturating_add(1) == table.window_number {
            &mut table.previous
        } else {
            return;
        };
        if let Some(count) = generation.get_mut(&key) {
            *count -= (*count).min(1);
            if *count == 0 {
                generation.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    /// When the guard's first window began: the tests' time zero.
    fn start_of(guard: &FloodGuard) -> Instant {
        guard.table.lock().unwrap().started
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn failures_spend_the_budget_and_only_that_address_waits() {
        let guard = FloodGuard::new(3, MINUTE, 1000);
        let t0 = start_of(&guard);
        for _ in 0..3 {
            drop(guard.admit(ip("127.0.0.1"), t0).unwrap());
        }
        assert_eq!(guard.admit(ip("127.0.0.1"), t0).unwrap_err(), 60);
        let later = t0 + Duration::from_secs(45);
        assert_eq!(guard.admit(ip("127.0.0.1"), later).unwrap_err(), 15);
        assert!(guard.admit(ip("127.0.0.2"), t0).is_ok());
    }

    #[test]
    fn successes_give_their_unit_back() {
        let guard = FloodGuard::new(2, MINUTE, 1000);
        let t0 = start_of(&guard);
        for _ in 0..100 {
            guard.admit(ip("10.0.0.1"), t0).unwrap().succeeded();
        }
        assert_eq!(guard.tracked_addresses(), 0, "refunded entries are removed");
        drop(guard.admit(ip("10.0.0.1"), t0).unwrap());
        drop(guard.admit(ip("10.0.0.1"), t0).unwrap());
        assert!(guard.admit(ip("10.0.0.1"), t0).is_err());
    }

    #[test]
    fn requests_in_flight_hold_their_unit_so_a_burst_cannot_overshoot() {
        let guard = FloodGuard::new(5, MINUTE, 1000);
        let t0 = start_of(&guard);
        let held: Vec<_> = (0..5)
            .map(|_| guard.admit(ip("10.0.0.1"), t0).unwrap())
            .collect();
        assert!(guard.admit(ip("10.0.0.1"), t0).is_err());
        drop(held);
        assert!(guard.admit(ip("10.0.0.1"), t0).is_err());
    }

    #[test]
    fn the_previous_window_weighs_in_then_fades() {
        let guard = FloodGuard::new(10, MINUTE, 1000);
        let t0 = start_of(&guard);
        for _ in 0..10 {
            drop(guard.admit(ip("10.0.0.1"), t0).unwrap());
        }
        // Just after the boundary nearly all of the last window still counts
        // (59/60 of 10): one more fits.
        let next = t0 + Duration::from_secs(61);
        drop(guard.admit(ip("10.0.0.1"), next).unwrap());
        assert!(guard.admit(ip("10.0.0.1"), next).is_err());
        // Halfway through the next window, half of it does: 1 + 5, so 4 more fit.
        let half = t0 + Duration::from_secs(90);
        for _ in 0..4 {
            drop(guard.admit(ip("10.0.0.1"), half).unwrap());
        }
        assert!(guard.admit(ip("10.0.0.1"), half).is_err());
        // Two windows later nothing is left.
        assert!(
            guard
                .admit(ip("10.0.0.1"), t0 + Duration::from_secs(240))
                .is_ok()
        );
    }

    #[test]
    fn ipv6_clients_share_a_budget_per_64_and_mapped_ipv4_is_ipv4() {
        let guard = FloodGuard::new(2, MINUTE, 1000);
        let t0 = start_of(&guard);
        drop(guard.admit(ip("2001:db8:1:2::1"), t0).unwrap());
        drop(
            guard
                .admit(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), t0)
                .unwrap(),
        );
        assert!(guard.admit(ip("2001:db8:1:2::abcd"), t0).is_err());
        assert!(guard.admit(ip("2001:db8:1:3::1"), t0).is_ok());
        drop(guard.admit(ip("192.0.2.7"), t0).unwrap());
        drop(guard.admit(ip("192.0.2.7"), t0).unwrap());
        assert!(guard.admit(ip("::ffff:192.0.2.7"), t0).is_err());
    }

    #[test]
    fn a_hundred_thousand_addresses_stay_within_the_bound() {
        let max_addresses = 50_000;
        let guard = FloodGuard::new(3, MINUTE, max_addresses);
        let t0 = start_of(&guard);
        let mut admitted = 0;
        for i in 0..100_000u32 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            admitted += usize::from(guard.admit(addr, t0).is_ok());
        }
        // Each of the first 50,000 has its own entry; the other 50,000 share
        // the overflow entry and its budget of 3.
        assert_eq!(admitted, max_addresses + 3);
        assert_eq!(guard.tracked_addresses(), max_addresses + 1);
        // Latecomers share the overflow entry, which is now spent...
        assert!(guard.admit(ip("11.0.0.1"), t0).is_err());
        // ...while addresses tracked before the table filled keep their own.
        assert!(guard.admit(ip("10.0.0.1"), t0).is_ok());
        // The next window starts from the previous generation, not from zero
        // capacity, and the one after forgets everything.
        let later = t0 + Duration::from_secs(121);
        assert!(guard.admit(ip("11.0.0.1"), later).is_ok());
        assert_eq!(guard.tracked_addresses(), 1);
    }
}
