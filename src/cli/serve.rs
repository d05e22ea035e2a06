//! `notary serve`: log in to the HSM, check custody, and serve over TLS.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::audit::AuditEvent;
use crate::config::Config;
use crate::hsm::HsmError;
use crate::http::{self, AppState};
use crate::issuance::{Notary, now};

/// Runs the server until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = crate::telemetry::install().map_err(|e| anyhow::anyhow!("metrics: {e}"))?;
    // aws-lc seeds its random generator from CPU jitter on first use, about
    // 60 ms of work; do it while the HSM logs in, not in the first handshake.
    let entropy = tokio::task::spawn_blocking(|| aws_lc_rs::rand::fill(&mut [0u8; 16]));
    let notary = super::open_notary(&config).await?;
    let hsm = notary.hsm().clone();
    for key in notary.custody_report().await?.keys {
        tracing::info!(key = %key.custody.label, role = ?key.role, custody = %key.custody.summary(), "key custody attributes");
    }
    let key = notary
        .active_key()
        .context("no active signing key: run `notary keys rotate`")?;
    tracing::info!(
        kid = %key.kid,
        alg = key.algorithm().as_str(),
        token = %hsm.token().label,
        serial = %hsm.token().serial,
        "Notary signing key ready"
    );
    let credential_kid = match notary.active_credential_key() {
        Some(credential) => {
            tracing::info!(
                kid = %credential.info.kid,
                alg = credential.info.algorithm().as_str(),
                certificate = credential.x5c.is_some(),
                "credential key ready"
            );
            Some(credential.info.kid.clone())
        }
        None => {
            tracing::warn!("no credential key: run notary keys rotate --purpose credential");
            None
        }
    };

    let certs = http::tls::CertStore::load(
        &config.resolve(&config.tls.cert),
        &config.resolve(&config.tls.key),
    )?;
    let tls = certs.server_config()?;
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("listening on {}", config.server.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;

    let store = notary.store().clone();
    let kids: Vec<String> = notary
        .key_ring()
        .published
        .iter()
        .map(|(k, _)| k.kid.clone())
        .collect();
    store
        .audit(
            AuditEvent::global(
                "server.started",
                serde_json::json!({ "active_kid": key.kid, "kids": kids,
                                    "credential_kid": credential_kid,
                                    "token_serial": hsm.token().serial }),
            ),
            now(),
        )
        .await?;
    let background = [
        tokio::spawn(reload_on_sighup(certs)),
        tokio::spawn(crate::service::watchdog(notary.clone())),
        tokio::spawn(sweep(
            notary.store().clone(),
            config.retention.sweep_interval_secs,
            config.retention.offers_secs,
        )),
        tokio::spawn(refresh_keys(notary.clone(), config.keys.refresh_secs)),
        tokio::spawn(sign_status_lists(
            notary.clone(),
            config.status.sign_interval_secs,
        )),
        tokio::spawn(checkpoints(
            notary.clone(),
            config.audit.checkpoint_interval_secs,
            config
                .audit
                .checkpoint_file
                .as_ref()
                .map(|f| config.resolve(f)),
        )),
    ];
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(addr) = config.metrics.listen {
        let local = crate::telemetry::serve(addr, metrics, async {
            let _ = metrics_stopped.await;
        })
        .await
        .with_context(|| format!("listening for metrics on {addr}"))?;
        tracing::info!(listen = %local, "metrics at http://{local}/metrics");
    }
    let app = http::router(AppState::new(&config, notary.clone())?);
    entropy
        .await
        .context("seeding the random generator")?
        .map_err(|_| anyhow::anyhow!("the random generator could not be seeded"))?;
    tracing::info!(listen = %local, public_url = %config.server.public_url, "notary is serving");
    crate::service::ready(&format!("serving on {local}, kid {}", key.kid));
    let limits = http::server::Limits {
        header_read_timeout: Duration::from_secs(config.server.header_read_timeout_secs),
        max_connections: config.server.max_connections,
        max_connections_per_address: config.server.max_connections_per_address,
        handshake_timeout: Duration::from_secs(config.server.handshake_timeout_secs),
        shutdown_grace: Duration::from_secs(config.server.shutdown_grace_secs),
    };
    let refused = hsm.clone();
    let stop = async move {
        tokio::select! {
            () = shutdown_signal() => {},
            () = refused.pin_refusal() => {
                tracing::error!("stopping: the HSM refused the PIN");
                crate::service::stopping();
            },
        }
    };
    http::server::serve(listener, TlsAcceptor::from(tls), app, limits, stop).await;

    for task in background {
        task.abort();
    }
    let _ = metrics_stop.send(());
    let ring = notary.key_ring();
    let active = ring.active.as_ref().map(|k| k.kid.clone());
    let kids: Vec<String> = ring.published.iter().map(|(k, _)| k.kid.clone()).collect();
    store
        .audit(
            AuditEvent::global(
                "server.stopped",
                serde_json::json!({ "active_kid": active, "kids": kids }),
            ),
            now(),
        )
        .await?;
    let sink = config
        .audit
        .checkpoint_file
        .as_ref()
        .map(|f| config.resolve(f));
    let _ = write_checkpoint(&notary, sink.as_deref()).await;
    store.close().await;
    hsm.close();
    tracing::info!("notary stopped");
    if hsm.pin_refused() {
        // Exit status 78: systemd does not restart it (the unit's
        // RestartPreventExitStatus=), so the PIN is not presented again.
        return Err(anyhow::Error::new(HsmError::Auth(
            "the token refused the PIN while serving".to_owned(),
        )));
    }
    Ok(())
}

/// Re-reads the TLS certificate and key on SIGHUP (`systemctl reload`).
/// Open connections keep their session; a bad pair keeps the old one.
async fn reload_on_sighup(certs: std::sync::Arc<http::tls::CertStore>) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; TLS reload disabled");
            return;
        }
    };
    while hup.recv().await.is_some() {
        crate::service::reloading();
        match certs.reload() {
            Ok(()) => tracing::info!("TLS certificate and key reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "TLS reload failed; keeping the current certificate")
            }
        }
        crate::service::ready("serving (reloaded)");
    }
}

/// Records offer expiries and deletes finished offers after the retention
/// period, and converts the lookup keys of offers stored by an earlier
/// version. Every instance may run it: each step is conditional.
async fn sweep(store: crate::store::Store, every_secs: u64, retention_secs: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(every_secs.max(1)));
    let retention = i64::try_from(retention_secs).unwrap_or(i64::MAX / 2);
    loop {
        tick.tick().await;
        match store.sweep(now(), retention).await {
            Ok((0, 0)) => {}
            Ok((expired, purged)) => tracing::info!(expired, purged, "offers swept"),
            Err(e) => {
                tracing::warn!(error = %e, "offer sweep failed; retrying at the next interval")
            }
        }
        // Offers an instance of an earlier version still writes during a
        // rolling upgrade are found once converted.
        if let Err(e) = super::convert_stored_lookups(&store).await {
            tracing::warn!(error = %e, "could not convert stored lookup keys; retrying at the next interval");
        }
    }
}

/// Re-signs the status lists that changed (or near their expiry) at most
/// once per interval.
async fn sign_status_lists(notary: Notary, every_secs: u64) {
    let every = Duration::from_secs(every_secs.max(1));
    loop {
        let started = tokio::time::Instant::now();
        match notary.sign_due_status_lists().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(lists = n, "status lists signed"),
            Err(e) => tracing::error!(error = %e, "could not sign the status lists; retrying"),
        }
        if let Some(rest) = every.checked_sub(started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
}

/// Picks up keys rotated by the CLI or another instance.
async fn refresh_keys(notary: Notary, every_secs: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(every_secs.max(1)));
    loop {
        tick.tick().await;
        match notary.refresh_keys().await {
            Ok(true) => {
                let active = notary
                    .active_key()
                    .map(|k| k.kid.clone())
                    .unwrap_or_default();
                let credential = notary.active_credential_key();
                tracing::info!(
                    kid = %active,
                    credential_kid = %credential.as_ref().map(|k| k.info.kid.as_str()).unwrap_or_default(),
                    credential_certificate = credential.as_ref().is_some_and(|k| k.x5c.is_some()),
                    "signing keys reloaded"
                );
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "could not reload signing keys; keeping the current ones")
            }
        }
    }
}

/// Signs the audit chain head periodically.
async fn checkpoints(notary: Notary, every_secs: u64, sink: Option<PathBuf>) {
    let mut tick = tokio::time::interval(Duration::from_secs(every_secs.max(1)));
    tick.tick().await;
    loop {
        tick.tick().await;
        // Failures are logged (and alerted) inside; try again next time.
        let _ = write_checkpoint(&notary, sink.as_deref()).await;
    }
}

/// Makes a checkpoint if the head moved, and appends it to the sink file.
/// Failures are logged here; the error is returned for `audit checkpoint`.
pub(super) async fn write_checkpoint(
    notary: &Notary,
    sink: Option<&std::path::Path>,
) -> Result<(), crate::issuance::audit_log::CheckpointError> {
    match notary.checkpoint().await {
        Ok(Some(checkpoint)) => {
            tracing::info!(size = checkpoint.size, "audit checkpoint signed");
            if let Some(path) = sink {
                let appended = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .and_then(|mut f| {
                        use std::io::Write as _;
                        f.write_all(checkpoint.note.as_bytes())?;
                        f.write_all(b"\n")
                    });
                if let Err(e) = appended {
                    tracing::error!(error = %e, path = %path.display(), "could not append the checkpoint to its file");
                }
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "could not sign an audit checkpoint");
            return Err(e);
        }
    }
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
    crate::service::stopping();
}
