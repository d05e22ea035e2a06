//! `notary init`: a complete, working single-host set-up in one directory.
//!
//! Creates a SoftHSM2 token with the Notary signing key, the credential key,
//! the hashing key, the audit key and the claims key generated inside it, a
//! self-signed TLS certificate, the SQLite database,
//! one admin API key, and `notary.toml` last (its presence marks a finished
//! set-up; `init` refuses to touch a directory that has one).
//!
//! Everything it creates is private to the owner whatever the umask:
//! directories 0700, files 0600 (`run` also sets the process umask to 077,
//! which covers the files SQLite and SoftHSM2 create), and an existing
//! `--dir` that others can enter or read is refused.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use cryptoki::session::UserType;

use super::module_env;
use crate::config::Config;
use crate::hsm::{self, KeyRole, keys};
use crate::issuance::keys::create_first_key;
use crate::issuance::random;
use crate::issuance::{Notary, Policy};
use crate::jose::Algorithm;
use crate::secret::HsmPin;
use crate::store::{KeyPurpose, Role, Store};

/// Arguments of `notary init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to create the set-up in.
    #[arg(long)]
    dir: PathBuf,
    /// Address the server listens on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// URL wallets reach the server at (default: https://localhost:PORT).
    #[arg(long)]
    public_url: Option<String>,
    /// Notary key algorithm: EdDSA (Ed25519) or ES256 (P-256).
    #[arg(long, default_value = "EdDSA")]
    alg: Algorithm,
    /// Credential key algorithm: ES256 (P-256, what HAIP wallets require) or EdDSA.
    #[arg(long, default_value = "ES256")]
    credential_alg: Algorithm,
    /// Audit checkpoint key algorithm: EdDSA (Ed25519) or ES256 (P-256, for
    /// modules without Ed25519, such as a TPM).
    #[arg(long, default_value = "EdDSA")]
    audit_alg: Algorithm,
    /// Database URL (default: SQLite in DIR).
    #[arg(long)]
    database: Option<String>,
    /// Plain-HTTP Prometheus listener (keep it on loopback).
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics_listen: SocketAddr,
    /// PKCS#11 module (default: the installed SoftHSM2).
    #[arg(long)]
    module: Option<PathBuf>,
    /// Use this existing, initialised token (a TPM, an HSM, a token made in a
    /// key ceremony) instead of creating a SoftHSM2 token: keys found under
    /// the labels below are adopted under the custody rule, missing signing
    /// keys are generated when the token can, and the PIN is read from
    /// --pin-file.
    #[arg(long, requires_all = ["module", "pin_file"])]
    token: Option<String>,
    /// The user PIN of --token (mode 0600); the configuration refers to it.
    #[arg(long, requires = "token")]
    pin_file: Option<PathBuf>,
    /// Environment the module reads (KEY=VALUE, repeatable), written to
    /// [hsm.module_env], e.g. TPM2_PKCS11_STORE=/var/lib/notary/tpm.
    #[arg(long = "module-env", value_name = "KEY=VALUE", requires = "token")]
    module_env: Vec<String>,
    /// With --token: label of the access-token (Notary) key.
    #[arg(long, default_value = SIGNING_LABEL)]
    signing_key: String,
    /// With --token: label of the credential key.
    #[arg(long, default_value = CREDENTIAL_LABEL)]
    credential_key: String,
    /// With --token: label of the HMAC key for keyed hashes.
    #[arg(long, default_value = HASHING_LABEL)]
    hashing_key: String,
    /// With --token: label of the audit checkpoint key.
    #[arg(long, default_value = AUDIT_LABEL)]
    audit_key: String,
    /// With --token: label of the AES-256 claims key.
    #[arg(long, default_value = CLAIMS_LABEL)]
    claims_key: String,
    /// With --token: label of an HMAC-SHA256 key; seals claims with AES-CBC
    /// and HMAC (for tokens without AES-GCM, such as a TPM).
    #[arg(long, requires = "token")]
    claims_mac_key: Option<String>,
    /// With --claims-mac-key: the cipher under it, cbc (AES-256-CBC) or ctr
    /// (AES-256-CTR made with CKM_AES_ECB, for links such as p11-kit's that
    /// forward neither GCM nor CBC).
    #[arg(long, requires = "claims_mac_key", value_parser = ["cbc", "ctr"])]
    claims_cipher: Option<String>,
}

const TOKEN_LABEL: &str = "notary";
const SIGNING_LABEL: &str = "notary-signing-1";
const CREDENTIAL_LABEL: &str = "notary-credential-1";
const HASHING_LABEL: &str = "notary-hmac-1";
const AUDIT_LABEL: &str = "notary-audit-1";
const CLAIMS_LABEL: &str = crate::config::DEFAULT_CLAIMS_KEY;

const SOFTHSM_CANDIDATES: [&str; 3] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
];

/// Runs `notary init`.
pub fn run(args: InitArgs) -> anyhow::Result<()> {
    let dir = absolute(&args.dir)?;
    if dir.join("notary.toml").exists() {
        bail!(
            "{} already holds a notary set-up (notary.toml); refusing to overwrite it",
            dir.display()
        );
    }
    let module = match &args.module {
        Some(m) => m.clone(),
        None => SOFTHSM_CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .context("SoftHSM2 is not installed (apt-get install softhsm2), or pass --module")?,
    };
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("https://localhost:{}", args.listen.port()));
    if !public_url.starts_with("https://") || public_url.ends_with('/') {
        bail!("--public-url must be an https URL without a trailing slash");
    }
    if let Some(db) = &args.database {
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            bail!("--database must be sqlite:PATH or postgres://...");
        }
    }

    if dir.join("hsm").exists() || dir.join("notary.toml.new").exists() {
        bail!(
            "an earlier `notary init` in {} did not finish; remove the directory and run init again",
            dir.display()
        );
    }
    refuse_shared_dir(&dir)?;
    make_dir(&dir)?;
    let hsm_section = match &args.token {
        Some(token) => existing_token(&args, token, &module)?,
        None => new_softhsm_token(&dir, &module, args.audit_alg)?,
    };
    let hosts = tls_hosts(&args.listen, &public_url);
    write_tls(&dir, &hosts)?;

    let database = args
        .database
        .clone()
        .unwrap_or_else(|| "sqlite:notary.db".to_owned());
    if args.database.is_none() {
        // An empty file is an empty SQLite database; made here it is 0600
        // whatever creates it later.
        write_private(&dir.join("notary.db"), "")?;
    }
    let config_text = config_file(&args, &public_url, &hsm_section, &database);
    let staged = dir.join("notary.toml.new");
    write_private(&staged, &config_text)?;
    let config = Config::load(&staged)?;

    let runtime = crate::memory::runtime().context("starting the async runtime")?;
    let (admin_key, kid, credential_kid) = runtime.block_on(async {
        let store = Store::connect(&config.database_url(), 2).await?;
        store.migrate().await?;
        let generated = match &args.token {
            Some(_) => {
                let settings = super::hsm_settings(&config);
                let pin = config.hsm_pin()?;
                let audit_alg = args.audit_alg;
                tokio::task::spawn_blocking(move || {
                    generate_missing_fixed_keys(&settings, &pin, audit_alg)
                })
                .await
                .context("key generation task failed")??
            }
            None => Vec::new(),
        };
        let hsm = super::open_hsm(&config).await?;
        let notary = match &args.token {
            None => {
                create_first_key(&hsm, &store, KeyPurpose::Token, args.alg, SIGNING_LABEL).await?;
                create_first_key(
                    &hsm,
                    &store,
                    KeyPurpose::Credential,
                    args.credential_alg,
                    CREDENTIAL_LABEL,
                )
                .await?;
                Notary::open(hsm, store, Policy::from_config(&config)?).await?
            }
            Some(_) => {
                let notary = Notary::open(hsm, store, Policy::from_config(&config)?).await?;
                adopt_existing_keys(&notary, &args, &generated).await?;
                notary
            }
        };
        let first = notary
            .key_ring()
            .active
            .clone()
            .context("no active Notary key")?;
        let credential = notary
            .active_credential_key()
            .map(|k| k.info.clone())
            .context("no active credential key")?;
        let verifier = notary.note_verifier().await?;
        write_private(
            &config.resolve(&config.audit.verifier_key_file),
            &(verifier.encode() + "\n"),
        )?;
        let created = notary.create_api_key(Role::Admin, "initial admin").await?;
        notary.store().close().await;
        notary.hsm().close();
        anyhow::Ok((created, first.kid.clone(), credential.kid))
    })?;
    write_secret(&dir.join("admin-key"), admin_key.secret.expose())?;
    fs::rename(&staged, dir.join("notary.toml")).context("finishing notary.toml")?;

    println!("notary set-up created in {}", dir.display());
    match &args.token {
        None => {
            println!(
                "  Notary key: {} ({}), generated inside the SoftHSM2 token {TOKEN_LABEL:?}",
                kid,
                args.alg.as_str()
            );
            println!(
                "  credential key: {} ({}), generated inside the same token",
                credential_kid,
                args.credential_alg.as_str()
            );
        }
        Some(token) => {
            println!(
                "  keys on the existing token {token:?}: Notary key {kid}, credential key {credential_kid}"
            );
            println!("  (each recorded in the audit log as key.adopted or key.generated)");
        }
    }
    println!("  public URL: {public_url}   listen: {}", args.listen);
    println!(
        "  TLS certificate (self-signed): {}",
        dir.join("tls/cert.pem").display()
    );
    println!(
        "  admin API key (shown once, also in {}):",
        dir.join("admin-key").display()
    );
    println!("    {}", admin_key.secret.expose());
    println!(
        "Start it with: notary serve --config {}",
        dir.join("notary.toml").display()
    );
    Ok(())
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_owned())
    } else {
        Ok(std::env::current_dir()
            .context("reading the current directory")?
            .join(path))
    }
}

/// Refuses an existing `dir` that its group or others may read, write or
/// enter: the PIN files and keys would be exposed through it.
fn refuse_shared_dir(dir: &Path) -> anyhow::Result<()> {
    let mode = match fs::metadata(dir) {
        Ok(meta) => meta.permissions().mode() & 0o777,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    if mode & 0o077 != 0 {
        bail!(
            "{} is open to other users (mode {mode:03o}); run `chmod 700 {}` or name a directory that does not exist yet",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Creates `path` (and missing parents) as 0700, and makes an existing one
/// 0700 too.
fn make_dir(path: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o700)))
        .with_context(|| format!("creating {}", path.display()))
}

/// Writes (or rewrites) a file readable only by its owner. The mode is set
/// again after opening: a file that already existed keeps its old mode
/// otherwise.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes a file readable only by its owner; fails if it exists.
fn write_secret(path: &Path, value: &str) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(value.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .with_context(|| format!("writing {}", path.display()))
}

/// Makes the SoftHSM2 token of a development set-up: its configuration and
/// token directory in `dir`, fresh PINs, and the hashing, audit and claims
/// keys. Returns the `[hsm]` section of the configuration.
fn new_softhsm_token(dir: &Path, module: &Path, audit_alg: Algorithm) -> anyhow::Result<String> {
    let tokens = dir.join("tokens");
    make_dir(&tokens)?;
    let softhsm_conf = dir.join("softhsm2.conf");
    write_private(
        &softhsm_conf,
        &format!(
            "# SoftHSM2 configuration written by `notary init`.\n\
             directories.tokendir = {}\n\
             objectstore.backend = file\n\
             log.level = ERROR\n\
             slots.removable = false\n",
            tokens.display()
        ),
    )?;
    let env = [(
        "SOFTHSM2_CONF".to_owned(),
        softhsm_conf.display().to_string(),
    )]
    .into_iter()
    .collect();
    // Re-executes `notary init` with SOFTHSM2_CONF set, unless it already is.
    module_env::ensure(&env)?;
    crate::memory::forbid_core_dumps().context("disabling core dumps")?;

    let user_pin = HsmPin::new(random::token(18)?);
    let so_pin = HsmPin::new(random::token(18)?);
    make_dir(&dir.join("hsm"))?;
    write_secret(&dir.join("hsm/user-pin"), user_pin.expose())?;
    write_secret(&dir.join("hsm/so-pin"), so_pin.expose())?;
    create_token_and_keys(module, &user_pin, &so_pin, audit_alg)?;
    Ok(format!(
        r#"[hsm]
module = "{module}"
token = "{TOKEN_LABEL}"
hashing_key = "{HASHING_LABEL}"
audit_key = "{AUDIT_LABEL}"
claims_key = "{CLAIMS_LABEL}"
# The PIN is never in this file. Production: pin_credential = "notary-hsm-pin"
# (systemd LoadCredentialEncrypted=). This development set-up reads a file.
pin_file = "hsm/user-pin"

[hsm.module_env]
SOFTHSM2_CONF = "softhsm2.conf"
"#,
        module = module.display()
    ))
}

/// Checks the arguments of a set-up on an existing token and applies its
/// module environment. Returns the `[hsm]` section of the configuration.
fn existing_token(args: &InitArgs, token: &str, module: &Path) -> anyhow::Result<String> {
    let pin_file = absolute(
        args.pin_file
            .as_deref()
            .context("--token needs --pin-file")?,
    )?;
    let mut env = std::collections::BTreeMap::new();
    for pair in &args.module_env {
        let (key, value) = pair
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .with_context(|| format!("--module-env {pair:?}: expected KEY=VALUE"))?;
        env.insert(key.to_owned(), value.to_owned());
    }
    module_env::ensure(&env)?;
    crate::memory::forbid_core_dumps().context("disabling core dumps")?;
    // Marks a started set-up, as for a SoftHSM2 token; holds no PIN here.
    make_dir(&args.dir.join("hsm"))?;
    let quoted = |text: &str| toml::Value::String(text.to_owned()).to_string();
    let mut section = format!(
        "[hsm]\nmodule = {}\ntoken = {}\nhashing_key = {}\naudit_key = {}\nclaims_key = {}\n",
        quoted(&module.display().to_string()),
        quoted(token),
        quoted(&args.hashing_key),
        quoted(&args.audit_key),
        quoted(&args.claims_key),
    );
    if let Some(mac) = &args.claims_mac_key {
        section += &format!("claims_mac_key = {}\n", quoted(mac));
    }
    if let Some(cipher) = &args.claims_cipher {
        section += &format!("claims_cipher = {}\n", quoted(cipher));
    }
    section += &format!(
        "# The PIN is never in this file; production: pin_credential (systemd credentials).\n\
         pin_file = {}\n\n[hsm.module_env]\n",
        quoted(&pin_file.display().to_string())
    );
    for (key, value) in &env {
        section += &format!("{} = {}\n", quoted(key), quoted(value));
    }
    Ok(section)
}

/// On an existing token: adopts the Notary and credential keys when the
/// token holds them (else generates them there), and records each fixed
/// key with its attributes: `key.generated` for those just made by
/// [`generate_missing_fixed_keys`], `key.adopted` for the others.
async fn adopt_existing_keys(
    notary: &Notary,
    args: &InitArgs,
    generated: &[KeyRole],
) -> anyhow::Result<()> {
    for (purpose, label, alg) in [
        (KeyPurpose::Token, &args.signing_key, args.alg),
        (
            KeyPurpose::Credential,
            &args.credential_key,
            args.credential_alg,
        ),
    ] {
        let kid = match notary.hsm().signing_key(label).await {
            Ok(_) => notary.adopt_key(purpose, label).await?.kid,
            Err(crate::hsm::HsmError::KeyNotFound(_)) => {
                notary
                    .generate_key(purpose, alg, Some(label.clone()))
                    .await?
                    .kid
            }
            Err(e) => return Err(e.into()),
        };
        notary.rotate_key(purpose, alg, None, Some(&kid)).await?;
    }
    notary.refresh_keys().await?;
    let mut fixed = vec![KeyRole::Hashing, KeyRole::Audit, KeyRole::Claims];
    if args.claims_mac_key.is_some() {
        fixed.push(KeyRole::ClaimsMac);
    }
    for role in fixed {
        let event = if generated.contains(&role) {
            "key.generated"
        } else {
            "key.adopted"
        };
        notary.adopt_fixed_key(role, event).await?;
    }
    Ok(())
}

/// On an existing token, generates the fixed keys (keyed hash, audit,
/// claims, claims MAC when configured) that no object's label names yet:
/// a network HSM or a freshly initialised token makes them itself, under
/// the same templates as a SoftHSM2 set-up. A label already in use is left
/// for adoption to judge, and a token that cannot make a key (a TPM's
/// HMAC key) is told to the operator with the tool that can. Blocking.
fn generate_missing_fixed_keys(
    settings: &hsm::HsmSettings,
    pin: &HsmPin,
    audit_alg: Algorithm,
) -> anyhow::Result<Vec<KeyRole>> {
    let mut wanted = vec![
        (KeyRole::Hashing, settings.hashing_key.as_str()),
        (KeyRole::Audit, settings.audit_key.as_str()),
        (KeyRole::Claims, settings.claims_key.as_str()),
    ];
    if let Some(mac) = &settings.claims_mac_key {
        wanted.push((KeyRole::ClaimsMac, mac.as_str()));
    }
    let pkcs11 = hsm::load_module(&settings.module)?;
    let generated = (|| {
        let slot = hsm::find_token(&pkcs11, &settings.token)?;
        let session = pkcs11.open_rw_session(slot).context("opening a session")?;
        session
            .login(UserType::User, Some(&hsm::auth_pin(pin)))
            .context("logging in as user")?;
        let mut generated = Vec::new();
        for (role, label) in wanted {
            // Only private objects count, as in notary's key lookup: anyone
            // may create a public object with a key's label, and it must
            // neither block the set-up nor stand in for the key. A private
            // object of the wrong kind is left for adoption to refuse.
            let named = session
                .find_objects(&[
                    cryptoki::object::Attribute::Label(label.as_bytes().to_vec()),
                    cryptoki::object::Attribute::Private(true),
                ])
                .context("looking keys up by label")?;
            if !named.is_empty() {
                continue;
            }
            let mut id = [0u8; 8];
            random::fill(&mut id)?;
            let made = match role {
                KeyRole::Audit => keys::generate_signing_key(&session, audit_alg, label, &id),
                KeyRole::Claims => keys::generate_claims_key(&session, label, &id),
                _ => keys::generate_hashing_key(&session, label, &id),
            };
            made.with_context(|| {
                format!(
                    "the token has no key labelled {label:?} and could not make one; \
                     make it with the token's own tool and run init again (docs/custody.md §9a)"
                )
            })?;
            println!("  generated {label:?} on the token ({role:?} key)");
            generated.push(role);
        }
        let _ = session.logout();
        anyhow::Ok(generated)
    })();
    let _ = pkcs11.finalize();
    generated
}

/// Initialises the token, sets the user PIN and generates the hashing key,
/// the audit key and the claims key in it (the first Notary key follows through `Hsm`).
fn create_token_and_keys(
    module: &Path,
    user_pin: &HsmPin,
    so_pin: &HsmPin,
    audit_alg: Algorithm,
) -> anyhow::Result<()> {
    let pkcs11 = hsm::load_module(module)?;
    let free = pkcs11
        .get_slots_with_token()
        .context("listing PKCS#11 slots")?
        .into_iter()
        .find(|slot| {
            pkcs11
                .get_token_info(*slot)
                .is_ok_and(|info| !info.token_initialized())
        })
        .context("the PKCS#11 module has no free slot for a new token")?;
    pkcs11
        .init_token(free, &hsm::auth_pin(so_pin), TOKEN_LABEL)
        .context("initialising the token")?;
    // SoftHSM renumbers slots after C_InitToken: find the token by label.
    let slot = hsm::find_token(&pkcs11, TOKEN_LABEL)?;
    let session = pkcs11.open_rw_session(slot).context("opening a session")?;
    session
        .login(UserType::So, Some(&hsm::auth_pin(so_pin)))
        .context("logging in as security officer")?;
    session
        .init_pin(&hsm::auth_pin(user_pin))
        .context("setting the user PIN")?;
    session
        .logout()
        .context("logging out the security officer")?;
    session
        .login(UserType::User, Some(&hsm::auth_pin(user_pin)))
        .context("logging in as user")?;
    let mut id = [0u8; 8];
    random::fill(&mut id)?;
    keys::generate_hashing_key(&session, HASHING_LABEL, &id)?;
    random::fill(&mut id)?;
    keys::generate_signing_key(&session, audit_alg, AUDIT_LABEL, &id)?;
    random::fill(&mut id)?;
    keys::generate_claims_key(&session, CLAIMS_LABEL, &id)?;
    session.logout().context("logging out")?;
    drop(session);
    pkcs11.finalize().context("closing the PKCS#11 module")?;
    Ok(())
}

fn tls_hosts(listen: &SocketAddr, public_url: &str) -> Vec<String> {
    let mut hosts = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let ip = listen.ip();
    if !ip.is_unspecified() {
        hosts.push(ip.to_string());
    }
    let authority = public_url.trim_start_matches("https://");
    let host = authority.split('/').next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if !host.is_empty() {
        hosts.push(host.to_owned());
    }
    hosts.sort();
    hosts.dedup();
    hosts
}

fn write_tls(dir: &Path, hosts: &[String]) -> anyhow::Result<()> {
    // A development certificate, but a well-formed one: named after the
    // first host, for TLS servers only, and valid for a year (browsers and
    // Mozilla's guidelines refuse longer lifetimes).
    let key = rcgen::KeyPair::generate().context("making the TLS key")?;
    let mut params =
        rcgen::CertificateParams::new(hosts.to_vec()).context("making the TLS certificate")?;
    let mut name = rcgen::DistinguishedName::new();
    name.push(
        rcgen::DnType::CommonName,
        hosts.first().map_or("notary", String::as_str),
    );
    params.distinguished_name = name;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(365);
    let cert = params
        .self_signed(&key)
        .context("signing the TLS certificate")?;
    make_dir(&dir.join("tls"))?;
    write_private(&dir.join("tls/cert.pem"), &cert.pem())?;
    write_secret(&dir.join("tls/key.pem"), key.serialize_pem().trim_end())
}

fn config_file(args: &InitArgs, public_url: &str, hsm_section: &str, database: &str) -> String {
    format!(
        r#"# notary configuration, written by `notary init`.
# Relative paths are relative to this file's directory.
# Every field is described in docs/configuration.md.

[server]
listen = "{listen}"
public_url = "{public_url}"

[tls]
cert = "tls/cert.pem"
key = "tls/key.pem"

[database]
url = "{database}"

{hsm_section}
[issuance]
access_token_ttl_secs = 300
access_token_typ = "at+jwt"
default_offer_ttl_secs = 600
max_tx_code_attempts = 5
tx_code_length = 6
wrong_pin_error = "invalid_grant"
locked_response = "slow_down"

[flood]
max_failures = 20
window_secs = 60

[metrics]
listen = "{metrics_listen}"

[log]
format = "text"

# notary is the credential issuer of this set-up: it serves the credential,
# nonce and notification endpoints and signs credentials with its credential
# key in the HSM. To be the authorization server alone for a credential
# issuer on another host, set credential_endpoint to that host's endpoint
# (and issuance.credential_issuer to its identifier).
[credential_issuer]
display = [{{ name = "Example University", locale = "en" }}]

# An SD-JWT VC: claims are selectively disclosable unless marked sd = "never".
[credential_issuer.credential_configurations_supported.UniversityDegree_sd_jwt]
format = "dc+sd-jwt"
vct = "{public_url}/credentials/university-degree"
display = [{{ name = "University Degree", locale = "en" }}]
claims = [
    {{ path = ["given_name"], mandatory = true, display = [{{ name = "Given name", locale = "en" }}] }},
    {{ path = ["family_name"], mandatory = true, display = [{{ name = "Family name", locale = "en" }}] }},
    {{ path = ["degree"], display = [{{ name = "Degree", locale = "en" }}] }},
    {{ path = ["graduation_year"], sd = "never", display = [{{ name = "Year of graduation", locale = "en" }}] }},
]

# A W3C verifiable credential as a JWT (jwt_vc_json), as dataspace wallets
# take it: the holder is a did:jwk, the issuer notary's did:web.
[credential_issuer.credential_configurations_supported.UniversityDegree_jwt]
format = "jwt_vc_json"
credential_definition = {{ type = ["VerifiableCredential", "UniversityDegreeCredential"] }}
display = [{{ name = "University Degree (W3C)", locale = "en" }}]
claims = [
    {{ path = ["given_name"], display = [{{ name = "Given name", locale = "en" }}] }},
    {{ path = ["family_name"], display = [{{ name = "Family name", locale = "en" }}] }},
    {{ path = ["degree"], display = [{{ name = "Degree", locale = "en" }}] }},
]
"#,
        listen = args.listen,
        metrics_listen = args.metrics_listen,
    )
}
