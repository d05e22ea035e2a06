//! Talking to systemd (`sd_notify(3)`): readiness, watchdog, reload and
//! stop notifications.
//!
//! Every function is a no-op when `NOTIFY_SOCKET` is not set, so `serve`
//! behaves the same from a terminal, in tests and under systemd. Messages
//! are sent without blocking: if the manager's queue is full the message is
//! dropped with a warning rather than stalling a worker or the shutdown.
//! (That is why this is not the `sd-notify` crate, whose send blocks.)

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::issuance::Notary;

fn send(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        socket.set_nonblocking(true)?;
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            // An abstract socket name (Linux).
            Some(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(message.as_bytes(), &addr)
            }
            None => socket.send_to(message.as_bytes(), &path),
        }
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// `READY=1`: the HSM is logged in, custody checked, the database pool and
/// the listener are up.
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={status}\n"));
}

/// `RELOADING=1` with the monotonic timestamp systemd 253+ requires.
pub fn reloading() {
    let now = monotonic_usec();
    send(&format!("RELOADING=1\nMONOTONIC_USEC={now}\n"));
}

/// `STOPPING=1`.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=stopping\n");
}

/// CLOCK_MONOTONIC in microseconds, as `MONOTONIC_USEC` wants.
fn monotonic_usec() -> u128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u128::try_from(t.tv_sec).unwrap_or(0) * 1_000_000
        + u128::try_from(t.tv_nsec).unwrap_or(0) / 1_000
}

/// The watchdog interval systemd asked for, if it asked this process.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Sends `WATCHDOG=1` at half the interval systemd asked for, but only
/// while the HSM answers a cheap probe: a server that cannot sign is not
/// alive in any useful sense, and systemd should restart it.
pub async fn watchdog(notary: Notary) {
    let Some(interval) = watchdog_interval() else {
        return;
    };
    let mut tick = tokio::time::interval((interval / 2).max(Duration::from_millis(100)));
    loop {
        tick.tick().await;
        match notary.hsm().ping().await {
            Ok(()) => send("WATCHDOG=1\n"),
            Err(e) => tracing::warn!(error = %e, "HSM probe failed; withholding the watchdog ping"),
        }
    }
}
