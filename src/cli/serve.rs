//! `notary serve`: log in to the HSM, check custody, and serve over TLS.

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::audit::AuditEvent;
use crate::config::Config;
use crate::http::{self, AppState};
use crate::issuance::now;

/// Runs the server until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let notary = super::open_notary(&config).await?;
    let hsm = notary.hsm().clone();
    let key = hsm.signing_key();
    for custody in hsm.custody().await? {
        tracing::info!(key = %custody.label, custody = %custody.summary(), "key custody attributes");
    }
    tracing::info!(
        kid = %key.kid,
        alg = key.algorithm().as_str(),
        token = %hsm.token().label,
        serial = %hsm.token().serial,
        "Notary signing key ready"
    );

    let tls = http::tls::server_config(
        &config.resolve(&config.tls.cert),
        &config.resolve(&config.tls.key),
    )?;
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("listening on {}", config.server.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;

    let store = notary.store().clone();
    store
        .audit(
            AuditEvent::global(
                "server.started",
                serde_json::json!({ "kid": key.kid, "token_serial": hsm.token().serial }),
            ),
            now(),
        )
        .await?;
    let app = http::router(AppState::new(&config, notary));
    tracing::info!(listen = %local, public_url = %config.server.public_url, "notary is serving");
    let limits = http::server::Limits {
        header_read_timeout: std::time::Duration::from_secs(config.server.header_read_timeout_secs),
        max_connections: config.server.max_connections,
    };
    http::server::serve(
        listener,
        TlsAcceptor::from(tls),
        app,
        limits,
        shutdown_signal(),
    )
    .await;

    store
        .audit(
            AuditEvent::global("server.stopped", serde_json::json!({ "kid": key.kid })),
            now(),
        )
        .await?;
    store.close().await;
    hsm.close();
    tracing::info!("notary stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested");
}
