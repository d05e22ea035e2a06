//! `notary audit verify|export|checkpoint`.
//!
//! `verify` and `export` need only the database and the audit verifier key
//! (a public key): an auditor can run them without the HSM, and `verify`
//! also checks an export file offline.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

use crate::audit::NoteVerifier;
use crate::config::Config;
use crate::issuance::audit_log::{ExportLine, all_entries, hex, parse_export, verify_records};
use crate::store::{AuditRecord, Store};

/// Audit log commands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain and every checkpoint signature; report the first bad entry.
    Verify {
        /// Verify this export (JSON lines) instead of the database.
        #[arg(long)]
        export: Option<PathBuf>,
        /// The signed-note verifier key to trust (default: [audit] verifier_key_file).
        #[arg(long)]
        verifier_key: Option<PathBuf>,
        /// Also check the checkpoints shipped to this file ([audit]
        /// checkpoint_file or a copy): they catch entries removed together
        /// with their checkpoint rows.
        #[arg(long)]
        checkpoints: Option<PathBuf>,
    },
    /// Write the log and its checkpoints as JSON lines.
    Export {
        /// Only entries at or after this time (RFC 3339 or unix seconds).
        #[arg(long)]
        since: Option<String>,
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Sign the current chain head now (normally done periodically by `serve`).
    Checkpoint,
}

fn parse_time(s: &str) -> anyhow::Result<i64> {
    if let Ok(secs) = s.parse() {
        return Ok(secs);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("--since {s:?} is neither RFC 3339 nor unix seconds"))?;
    Ok(t.unix_timestamp())
}

/// Runs an audit command.
pub async fn run(config: Config, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Checkpoint => {
            let notary = super::open_notary(&config).await?;
            let sink = config
                .audit
                .checkpoint_file
                .as_ref()
                .map(|f| config.resolve(f));
            let before = notary.store().list_checkpoints().await?.len();
            let written = super::serve::write_checkpoint(&notary, sink.as_deref()).await;
            let after = notary.store().list_checkpoints().await?;
            notary.store().close().await;
            notary.hsm().close();
            written?;
            match after.last() {
                Some(c) if after.len() > before => println!("checkpoint signed at size {}", c.size),
                Some(c) => println!("the head (size {}) is already checkpointed", c.size),
                None => anyhow::bail!(
                    "no checkpoint: the audit log is empty or signing failed (see log)"
                ),
            }
            Ok(())
        }
        AuditCommand::Export { since, output } => {
            let since = since.as_deref().map(parse_time).transpose()?.unwrap_or(0);
            let store = super::open_store(&config).await?;
            let entries = all_entries(&store, since).await?;
            let checkpoints = store.list_checkpoints().await?;
            store.close().await;
            let mut out: Box<dyn std::io::Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            for e in entries {
                let line = ExportLine::Entry {
                    seq: e.seq,
                    at: e.at,
                    event: e.event,
                    subject: e.subject,
                    details: e.details,
                    prev_hash: hex(&e.prev_hash),
                    hash: hex(&e.hash),
                };
                writeln!(out, "{}", serde_json::to_string(&line)?)?;
            }
            for c in checkpoints {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string(&ExportLine::Checkpoint { note: c.note })?
                )?;
            }
            out.flush()?;
            Ok(())
        }
        AuditCommand::Verify {
            export,
            verifier_key,
            checkpoints: shipped,
        } => {
            let key_file =
                verifier_key.unwrap_or_else(|| config.resolve(&config.audit.verifier_key_file));
            let text = std::fs::read_to_string(&key_file).with_context(|| {
                format!("reading the audit verifier key {}", key_file.display())
            })?;
            let verifier = NoteVerifier::decode(&text)?;
            let (entries, mut checkpoints, source, whole) = match export {
                Some(path) => {
                    let (e, c) = read_export(&path)?;
                    (e, c, path.display().to_string(), false)
                }
                None => {
                    let store: Store = super::open_store(&config).await?;
                    let entries = all_entries(&store, 0).await?;
                    let checkpoints = store
                        .list_checkpoints()
                        .await?
                        .into_iter()
                        .map(|c| c.note)
                        .collect();
                    store.close().await;
                    (entries, checkpoints, "the database".to_owned(), true)
                }
            };
            if let Some(path) = shipped {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading shipped checkpoints {}", path.display()))?;
                checkpoints.extend(crate::issuance::audit_log::split_notes(&text));
            }
            let report = verify_records(&entries, &checkpoints, &verifier, whole)
                .with_context(|| format!("audit log in {source} FAILED verification"))?;
            println!(
                "ok: audit entries {}..{} chain correctly; {} checkpoint(s) signed by {} match",
                report.first,
                report.last,
                report.checkpoints,
                verifier.encode()
            );
            Ok(())
        }
    }
}

fn read_export(path: &std::path::Path) -> anyhow::Result<(Vec<AuditRecord>, Vec<String>)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    parse_export(std::io::BufReader::new(file))
        .with_context(|| format!("reading {}", path.display()))
}
