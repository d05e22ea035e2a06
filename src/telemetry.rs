//! Prometheus metrics: what monitoring needs, never a secret in a label.
//!
//! Labels only ever take values from fixed sets chosen here (outcomes,
//! operation names); nothing a client sends becomes a label.

use std::net::SocketAddr;
use std::time::Instant;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Token requests by outcome.
pub const TOKEN_REQUESTS: &str = "notary_token_requests_total";
/// Credential requests by outcome (`issued` or the OAuth error code).
pub const CREDENTIAL_REQUESTS: &str = "notary_credential_requests_total";
/// Offers created through the admin API.
pub const OFFERS_CREATED: &str = "notary_offers_created_total";
/// Offers locked by wrong PINs.
pub const LOCKOUTS: &str = "notary_lockouts_total";
/// PINs compared with an offer's stored verifier (each after its attempt
/// was counted), right or wrong.
pub const PIN_VERDICTS: &str = "notary_tx_code_comparisons_total";
/// HSM operation latency by operation.
pub const HSM_SECONDS: &str = "notary_hsm_operation_seconds";
/// Database operation latency by operation.
pub const DB_SECONDS: &str = "notary_db_operation_seconds";
/// Writes committed together by the SQLite group commit.
pub const DB_BATCH_SIZE: &str = "notary_db_group_commit_writes";
/// Requests being handled now.
pub const IN_FLIGHT: &str = "notary_http_requests_in_flight";
/// Audit checkpoints refused because the stored log no longer extends the
/// last signed checkpoint (history rewritten or removed): alert on any.
pub const AUDIT_CHECKPOINTS_REFUSED: &str = "notary_audit_checkpoints_refused_total";
/// Constant 1, labelled with the version.
pub const BUILD_INFO: &str = "notary_build_info";

/// Installs the process-wide recorder; returns the handle that renders it.
pub fn install() -> Result<PrometheusHandle, String> {
    let buckets = [
        0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &buckets)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

/// Records how long an operation took since `start`.
pub fn observe(histogram: &'static str, operation: &'static str, start: Instant) {
    metrics::histogram!(histogram, "operation" => operation).record(start.elapsed().as_secs_f64());
}

/// Records how many writes one SQLite commit carried.
pub fn observe_batch(writes: usize) {
    metrics::histogram!(DB_BATCH_SIZE).record(writes as f64);
}

/// Serves `GET /metrics` (plain HTTP, meant for loopback) until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    handle.render(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
    Ok(local)
}
