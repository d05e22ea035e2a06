//! What one request costs the per-address failure budget: admissions
//! against a table holding 100,000 addresses, spent and refunded, timed.
//!
//! Run: `cargo run --release --example flood_table`

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use notary::http::flood::FloodGuard;

const ADDRESSES: u32 = 100_000;
const ROUNDS: u32 = 10;

fn address(i: u32) -> IpAddr {
    if i % 2 == 0 {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
    } else {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            (i >> 16) as u16,
            i as u16,
            0,
            0,
            0,
            1,
        ))
    }
}

fn main() {
    let guard = FloodGuard::new(20, Duration::from_secs(60), 100_000);
    let now = Instant::now();
    // Fill the table: every address has spent one unit.
    for i in 0..ADDRESSES {
        if let Ok(admission) = guard.admit(address(i), now) {
            drop(admission);
        }
    }
    let start = Instant::now();
    let mut admitted = 0u64;
    for round in 0..ROUNDS {
        for i in 0..ADDRESSES {
            if let Ok(admission) = guard.admit(address(i), now) {
                admitted += 1;
                if round % 2 == 0 {
                    admission.succeeded();
                }
            }
        }
    }
    let calls = u64::from(ADDRESSES) * u64::from(ROUNDS);
    let per_call = start.elapsed().as_nanos() as f64 / calls as f64;
    println!(
        "{{\"addresses\": {}, \"tracked\": {}, \"admissions\": {calls}, \"admitted\": {admitted}, \"ns_per_admission\": {per_call:.0}}}",
        ADDRESSES,
        guard.tracked_addresses()
    );
}
