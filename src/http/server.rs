//! The TLS accept loop: TCP → rustls → hyper (HTTP/1.1 or HTTP/2) → axum.
//!
//! `serve` takes a bound listener and a shutdown future, so tests can bind
//! `127.0.0.1:0` and stop the server when they like. Each connection is
//! driven here rather than by a library helper, because four things must
//! happen per connection: it holds one of its address's
//! `max_connections_per_address` slots and one of `max_connections`, it
//! must finish the TLS handshake quickly, it is closed when idle (HTTP/1.1
//! and HTTP/2 alike: an idle connection's buffers still hold its last
//! request), and it drains gracefully at shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use tracing::Instrument as _;

mod per_address;

use per_address::PerAddress;

/// How often a connection checks whether it has been idle too long.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// Limits that protect the server from slow or greedy clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client gets to send a request's headers, and how long a
    /// connection may sit idle between requests before it is closed.
    pub header_read_timeout: Duration,
    /// Connections served at once. At the cap the server stops accepting;
    /// new connections wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections open at once from one IPv4 address or IPv6 /64; more are
    /// closed at accept, so that one host cannot hold `max_connections`.
    pub max_connections_per_address: usize,
    /// Time a client gets, from accept, to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time in-flight requests get to finish after shutdown starts.
    pub shutdown_grace: Duration,
}

/// Requests in flight on one connection and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    last_done: Mutex<Instant>,
}

impl Activity {
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        self.last_done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The caller's `X-Request-Id` if it is a plain token, else a fresh one.
fn request_id(headers: &hyper::HeaderMap) -> String {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| crate::issuance::random::token(9).unwrap_or_else(|_| "-".to_owned()))
}

/// Marks a request finished when dropped (also when its future is cancelled).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(crate::telemetry::IN_FLIGHT).decrement(1.0);
        *self
            .0
            .last_done
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The path as logs may show it: a by-reference offer's URL is a bearer
/// secret, so its reference is replaced.
fn loggable_path(path: &str) -> &str {
    if path.starts_with(crate::issuance::OFFER_REFERENCE_PATH) {
        "/oid4vci/credential-offer/[REDACTED]"
    } else {
        path
    }
}

/// Most header fields in one request.
const MAX_HEADERS: usize = 64;
/// Most bytes of request head (HTTP/1.1 read buffer, HTTP/2 header list).
const MAX_HEADER_BYTES: usize = 32 * 1024;
/// HTTP/2 requests one connection may have open at once (hyper: 200). A
/// wallet needs one or two; more connections are the way to more.
const H2_MAX_STREAMS: u32 = 16;
/// HTTP/2 flow-control credit a client gets per stream and per connection
/// (hyper: 1 MiB each): what it may send before notary has read it. Request
/// bodies are small, so these bound buffered bytes without slowing anyone.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
const H2_CONNECTION_WINDOW: u32 = 256 * 1024;
/// Response bytes queued per stream for a client that does not read
/// (hyper: 400 KiB); notary's responses are a few KiB.
const H2_SEND_BUFFER: usize = 64 * 1024;
/// Streams a client may open and reset before notary accepted them (the
/// "rapid reset" attack); beyond it the connection is closed.
const H2_PENDING_RESETS: usize = 16;
/// Streams notary may reset for a client's protocol errors before it closes
/// the connection (hyper: 1,024).
const H2_LOCAL_RESETS: usize = 64;

/// Accepts connections until `shutdown` resolves, then lets in-flight
/// requests finish (up to a grace period).
pub async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = Builder::new(TokioExecutor::new());
    // Requests to notary are small: a token request is well under 4 KiB.
    // Headers beyond these limits get 431 (HTTP/1.1) or a stream reset
    // (HTTP/2) before any handler runs.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(H2_MAX_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_send_buf_size(H2_SEND_BUFFER)
        .max_pending_accept_reset_streams(H2_PENDING_RESETS)
        .max_local_error_reset_streams(H2_LOCAL_RESETS);
    let per_address = PerAddress::new(limits.max_connections_per_address);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // The address's slot is checked before a global one is waited for:
        // a connection over its address's cap is closed at once and never
        // holds a global slot, so one host holds at most its cap of them.
        let Some(address_slot) = per_address.try_take(peer.ip()) else {
            tracing::debug!(%peer, "too many connections from this address; closed");
            // A reset, not a FIN: the kernel keeps no closing state for it.
            let _ = tcp.set_zero_linger();
            drop(tcp);
            continue;
        };
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let connection = Connection {
            tls: tls.clone(),
            app: app.clone(),
            builder: builder.clone(),
            handshake_timeout: limits.handshake_timeout,
            idle_timeout: limits.header_read_timeout,
            stop: stop_rx.clone(),
        };
        tokio::spawn(async move {
            let _slots = (slot, address_slot);
            connection.run(tcp, peer).await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends: all slots back means all closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(limits.shutdown_grace, slots.acquire_many(all)).await {
        Ok(_) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!("grace period over; closing remaining connections"),
    }
}

struct Connection {
    tls: TlsAcceptor,
    app: Router,
    builder: Builder<TokioExecutor>,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, tcp: tokio::net::TcpStream, peer: SocketAddr) {
        // No TLS state (rustls allocates a 4 KiB read buffer on its first
        // read) exists until the client has sent its first byte.
        let handshake = async {
            tcp.readable().await?;
            self.tls.accept(tcp).await
        };
        let stream = match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last_done: Mutex::new(Instant::now()),
        });
        let app = self.app.clone();
        let tracker = Arc::clone(&activity);
        let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
            tracker.in_flight.fetch_add(1, Ordering::SeqCst);
            metrics::gauge!(crate::telemetry::IN_FLIGHT).increment(1.0);
            let in_flight = InFlight(Arc::clone(&tracker));
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(peer));
            let id = request_id(request.headers());
            // Every log line of this request carries its id (never the query
            // string, which could hold a misplaced secret, nor the reference
            // of a by-reference offer, which is one).
            let span = tracing::info_span!(
                "request",
                id = %id,
                method = %request.method(),
                path = %loggable_path(request.uri().path()),
            );
            let response = app.clone().oneshot(request).instrument(span);
            async move {
                let mut response = response.await;
                if let Ok(response) = &mut response {
                    if let Ok(value) = HeaderValue::from_str(&id) {
                        response.headers_mut().insert(REQUEST_ID, value);
                    }
                }
                drop(in_flight);
                response
            }
        });
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let mut closing = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = tokio::time::sleep(IDLE_CHECK), if !closing => {
                    if activity.idle_for() >= self.idle_timeout {
                        tracing::trace!(%peer, "closing idle connection");
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
                _ = self.stop.changed(), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}
