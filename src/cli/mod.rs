//! The command line: one file per command, mirroring `notary --help`.

mod admin_keys;
mod audit;
mod check;
mod credentials;
mod init;
mod keys;
mod migrate;
mod module_env;
mod offers;
mod probe;
mod serve;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::hsm::{Hsm, HsmError, HsmSettings, KeyRole};
use crate::issuance::{Notary, Policy};
use crate::store::Store;

/// notary: HSM-backed token server for the OpenID4VCI Pre-Authorized Code flow.
#[derive(Debug, Parser)]
#[command(name = "notary", version, about, long_about = LONG_ABOUT, after_long_help = AFTER_LONG_HELP)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        env = "NOTARY_CONFIG",
        default_value = "/etc/notary/notary.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a complete single-host set-up (SoftHSM2 token, keys, TLS, database, admin key).
    Init(Box<init::InitArgs>),
    /// Run the server.
    Serve,
    /// Validate the config and reach the HSM and the database.
    Check,
    /// Manage admin API keys.
    #[command(subcommand)]
    AdminKeys(admin_keys::AdminKeysCommand),
    /// Manage credential offers from the host.
    #[command(subcommand)]
    Offers(offers::OffersCommand),
    /// Issued credentials and their status (revoke, suspend, reinstate).
    #[command(subcommand)]
    Credentials(credentials::CredentialsCommand),
    /// Apply database migrations.
    Migrate,
    /// Notary key lifecycle in the HSM, and custody evidence.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Verify, export or checkpoint the tamper-evident audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// End-to-end smoke test against a running notary: offer, redeem, verify.
    Probe(probe::ProbeArgs),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
}

const LONG_ABOUT: &str = "\
notary is an on-premises token server for the OpenID4VCI Pre-Authorized Code \
flow. A back office creates credential offers (admin API or `notary offers \
create`); wallets redeem the one-time code and PIN at POST /oid4vci/token and \
receive a short-lived access token signed by the Notary key, which is \
generated inside a PKCS#11 HSM and never leaves it. Codes, PINs and API keys \
are stored only as keyed hashes computed inside the HSM.";

const AFTER_LONG_HELP: &str = "\
FILES
    /etc/notary/notary.toml        configuration (`notary config print-default`)
    /etc/notary/hsm-pin.cred       the HSM PIN, a systemd encrypted credential
    /etc/notary/audit-key.pub      verifier key of the audit checkpoints
    /var/lib/notary/notary.db      the SQLite database

ENVIRONMENT
    NOTARY_CONFIG          configuration file (default /etc/notary/notary.toml)
    NOTARY_LOG             log filter, e.g. info, debug, notary=trace
    CREDENTIALS_DIRECTORY  set by systemd; holds the PIN credential

EXIT STATUS
    0 on success; 78 when the HSM refused the PIN (the PIN is never
    presented again: fix the PIN source, then start again); 1 with a
    one-line message on any other error.

EXAMPLES
    notary init --dir ./dev                   a complete development set-up
    notary serve --config ./dev/notary.toml   run it
    notary check                              validate config, HSM, keys, database
    notary keys custody-report --json         evidence for auditors
    notary audit verify                       check the tamper-evident log
    notary probe --url https://notary.example.org --admin-key-file key

See /usr/share/doc/notary/ (README.md, docs/) for the full documentation.";

/// Exit status when the HSM refused the PIN: `EX_CONFIG` of sysexits.h.
/// `systemd/notary.service` lists it in `RestartPreventExitStatus=`, so a
/// wrong PIN is presented once, not once per restart until a real HSM
/// locks the user.
pub const EXIT_PIN_REFUSED: u8 = 78;

/// The process exit status for an error `run` returned.
pub fn exit_status(error: &anyhow::Error) -> u8 {
    let refused = error
        .chain()
        .any(|cause| matches!(cause.downcast_ref::<HsmError>(), Some(HsmError::Auth(_))));
    if refused { EXIT_PIN_REFUSED } else { 1 }
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    private_files();
    let serving = matches!(cli.command, Command::Serve);
    let default_level = if serving { "info" } else { "warn" };
    match cli.command {
        Command::Init(args) => {
            init_logging(default_level, crate::config::LogFormat::Text);
            init::run(*args)
        }
        Command::Config(ConfigCommand::PrintDefault) => {
            print!("{}", crate::config::REFERENCE);
            Ok(())
        }
        Command::Probe(args) => {
            init_logging(default_level, crate::config::LogFormat::Text);
            let runtime = crate::memory::runtime().context("starting the async runtime")?;
            runtime.block_on(probe::run(args))
        }
        command => {
            let config = Config::load(&cli.config)?;
            init_logging(default_level, config.log.format);
            if !matches!(command, Command::Migrate) {
                // Before any thread exists: the PKCS#11 module reads its
                // environment when it is loaded.
                module_env::ensure(&config.module_env())?;
            }
            crate::memory::forbid_core_dumps().context("disabling core dumps")?;
            let runtime = crate::memory::runtime().context("starting the async runtime")?;
            runtime.block_on(async move {
                match command {
                    Command::Serve => serve::run(config).await,
                    Command::Check => check::run(config).await,
                    Command::AdminKeys(c) => admin_keys::run(config, c).await,
                    Command::Offers(c) => offers::run(config, c).await,
                    Command::Credentials(c) => credentials::run(config, c).await,
                    Command::Migrate => migrate::run(config).await,
                    Command::Keys(c) => keys::run(config, c).await,
                    Command::Audit(c) => audit::run(config, c).await,
                    Command::Init(_) | Command::Probe(_) | Command::Config(_) => unreachable_init(),
                }
            })
        }
    }
}

/// Makes every file and directory notary creates private to its user,
/// whatever umask it was started with: the database and the WAL and shared
/// memory files SQLite adds beside it, keys, PINs, checkpoint files. The
/// systemd unit sets `UMask=0077` too; this covers `notary init`, `serve`
/// and the other commands run from a shell.
fn private_files() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

fn unreachable_init() -> anyhow::Result<()> {
    anyhow::bail!("this command is handled before the configuration is loaded")
}

/// `notary config ...`
#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the fully commented reference configuration.
    PrintDefault,
}

/// The HSM settings from a config.
pub(crate) fn hsm_settings(config: &Config) -> HsmSettings {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    HsmSettings {
        module: config.resolve(&config.hsm.module),
        token: config.hsm.token_label(),
        hashing_key: config.hsm.hashing_key_label(),
        audit_key: config.hsm.audit_key_label(),
        claims_key: config.hsm.claims_key_label(),
        claims_mac_key: config.hsm.claims_mac_key_label(),
        claims_cipher: config.hsm.claims_cipher.unwrap_or_default(),
        sessions: config.hsm.sessions.unwrap_or(2 * cores),
        operation_timeout: std::time::Duration::from_millis(config.hsm.operation_timeout_ms),
    }
}

/// Logs in to the HSM (on a blocking thread) and checks key custody, the
/// claims key's included: a token set up before the claims key existed is
/// refused with the command that adds it.
pub(crate) async fn open_hsm(config: &Config) -> anyhow::Result<Hsm> {
    let hsm = log_in_hsm(config).await?;
    match hsm.custody(KeyRole::Claims, None).await {
        Ok(custody) => {
            if let Some(violation) = custody.violation() {
                anyhow::bail!("refusing to use the HSM keys: {violation}");
            }
        }
        Err(HsmError::KeyNotFound(_)) => anyhow::bail!(
            "the token has no claims key {:?} (set-ups made before notary sealed offer claims): \
             create it with `notary keys generate-claims-key`",
            config.hsm.claims_key_label()
        ),
        Err(e) => return Err(e.into()),
    }
    if hsm.sealing().uses_mac_key() {
        if let Some(violation) = hsm.custody(KeyRole::ClaimsMac, None).await?.violation() {
            anyhow::bail!("refusing to use the HSM keys: {violation}");
        }
    }
    Ok(hsm)
}

/// Logs in to the HSM (on a blocking thread) and checks the custody of the
/// hashing and audit keys only: what `keys generate-claims-key` needs.
pub(crate) async fn log_in_hsm(config: &Config) -> anyhow::Result<Hsm> {
    let pin = config.hsm_pin()?;
    let settings = hsm_settings(config);
    let hsm = tokio::task::spawn_blocking(move || Hsm::open(&settings, &pin))
        .await
        .context("HSM start-up task failed")??;
    for role in [KeyRole::Hashing, KeyRole::Audit] {
        if let Some(violation) = hsm.custody(role, None).await?.violation() {
            anyhow::bail!("refusing to use the HSM keys: {violation}");
        }
    }
    Ok(hsm)
}

/// Connects to the database and checks its schema version.
pub(crate) async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(&config.database_url(), config.database.max_connections).await?;
    store.check_schema().await?;
    convert_stored_lookups(&store).await?;
    Ok(store)
}

/// Offers stored before 2026-12-05 are found by their code key itself:
/// converted to the SHA-256 form every other offer uses.
pub(crate) async fn convert_stored_lookups(store: &Store) -> anyhow::Result<()> {
    let converted = store
        .convert_stored_lookups(crate::issuance::hashing::lookup_of_code_key)
        .await?;
    if converted > 0 {
        tracing::info!(
            offers = converted,
            "converted the lookup keys of offers stored before 2026-12-05"
        );
    }
    Ok(())
}

/// HSM + store + policy: everything the use cases need (also used by the benchmark).
pub async fn open_notary(config: &Config) -> anyhow::Result<Notary> {
    // Independent, and each waits on I/O (the HSM login, the database's
    // connection handshakes): together they take as long as the slower.
    let (hsm, store) = tokio::try_join!(open_hsm(config), open_store(config))?;
    let policy = Policy::from_config(config)?;
    Ok(Notary::open(hsm, store, policy).await?)
}

/// Logs to stderr, filtered by `NOTARY_LOG` (e.g. `debug`,
/// `notary=trace,hyper=info`); `default` when it is unset. Under systemd
/// (`JOURNAL_STREAM` set) lines carry no timestamp of their own (the
/// journal adds one); colours only on a terminal.
fn init_logging(default: &str, format: crate::config::LogFormat) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    // cryptoki logs an ERROR for every mechanism number it has no name for
    // (a TPM lists CKM_AES_OFB in CKA_ALLOWED_MECHANISMS): not an error of
    // notary's, and not one an operator can act on. Silenced under any
    // filter that does not name cryptoki itself.
    let quiet_cryptoki = |spec: &str| match spec.contains("cryptoki") {
        true => spec.to_owned(),
        false => format!("{spec},cryptoki::mechanism=off"),
    };
    let default = &quiet_cryptoki(default);
    let (filter, bad) = match std::env::var("NOTARY_LOG") {
        Ok(spec) => match EnvFilter::try_new(quiet_cryptoki(&spec)) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new(default), Some(e)),
        },
        Err(_) => (EnvFilter::new(default), None),
    };
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match (format, journald) {
        (crate::config::LogFormat::Json, _) => builder.json().try_init(),
        (crate::config::LogFormat::Text, true) => builder.without_time().try_init(),
        (crate::config::LogFormat::Text, false) => builder.try_init(),
    };
    if let Some(e) = bad {
        tracing::warn!(error = %e, "NOTARY_LOG is not a valid filter; using {default}");
    }
}
