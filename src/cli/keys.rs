//! `notary keys list|generate|rotate|retire|custody-report|generate-claims-key|csr|certificate`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};

use crate::config::Config;
use crate::hsm::KeyRole;
use crate::issuance::rfc3339;
use crate::jose::Algorithm;
use crate::store::KeyPurpose;

/// What a key signs, as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Purpose {
    /// A Notary key: signs access tokens (published in the JWKS).
    Token,
    /// A credential key: signs credentials and status lists.
    Credential,
}

impl From<Purpose> for KeyPurpose {
    fn from(p: Purpose) -> Self {
        match p {
            Purpose::Token => KeyPurpose::Token,
            Purpose::Credential => KeyPurpose::Credential,
        }
    }
}

/// The algorithm of a new key: as given, else EdDSA for Notary keys and
/// ES256 for credential keys (what HAIP wallets require).
fn algorithm_for(purpose: KeyPurpose, alg: Option<Algorithm>) -> Algorithm {
    alg.unwrap_or(match purpose {
        KeyPurpose::Token => Algorithm::EdDSA,
        KeyPurpose::Credential => Algorithm::ES256,
    })
}

/// The role of an adopted key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AdoptRole {
    /// Signs access tokens (a Notary key).
    Token,
    /// Signs credentials and status lists.
    Credential,
    /// Signs audit checkpoints (`hsm.audit_key`).
    Audit,
    /// Computes keyed hashes of codes, PINs and API keys (`hsm.hashing_key`).
    Hashing,
    /// Encrypts offer claims (`hsm.claims_key`).
    Claims,
    /// Authenticates claims sealed with AES-CBC (`hsm.claims_mac_key`).
    ClaimsMac,
}

/// Key lifecycle commands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the signing keys (Notary and credential keys) and their states.
    List,
    /// Generate a key inside the token (pending: not used until rotated to).
    Generate {
        /// What the key signs: access tokens or credentials.
        #[arg(long, value_enum, default_value_t = Purpose::Token)]
        purpose: Purpose,
        /// EdDSA (Ed25519) or ES256 (P-256); default EdDSA for token keys,
        /// ES256 for credential keys.
        #[arg(long)]
        alg: Option<Algorithm>,
        /// CKA_LABEL for the key (default: notary-signing-N or notary-credential-N).
        #[arg(long)]
        label: Option<String>,
    },
    /// Generate a key and make it active. Only the active key of the same
    /// purpose steps down: a Notary key keeps verifying until the tokens it
    /// signed have expired; a credential key stays published until retired.
    Rotate {
        /// Activate this pending key (from `keys generate`) instead of a new one.
        /// (A kid may start with '-': it is base64url.)
        #[arg(long, allow_hyphen_values = true)]
        kid: Option<String>,
        /// What the key signs: access tokens or credentials.
        #[arg(long, value_enum, default_value_t = Purpose::Token)]
        purpose: Purpose,
        /// EdDSA (Ed25519) or ES256 (P-256); default EdDSA for token keys,
        /// ES256 for credential keys.
        #[arg(long)]
        alg: Option<Algorithm>,
        /// CKA_LABEL for the key (default: notary-signing-N or notary-credential-N).
        #[arg(long)]
        label: Option<String>,
    },
    /// Retire a key: it is no longer published. Refused for a Notary key
    /// while tokens it signed may still be live, and for a credential key
    /// (the credentials it signed stop verifying), unless --force.
    Retire {
        /// The key's kid (may start with '-': it is base64url).
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// Retire it all the same.
        #[arg(long)]
        force: bool,
    },
    /// Adopt a key that already exists on the token (made in a key ceremony
    /// with the module's own tool): it must pass the custody rule, and is
    /// recorded in the audit log with its attributes and public key hash.
    /// A token or credential key becomes pending (active with --activate);
    /// a fixed key (hashing, audit, claims, claims-mac) must be the one the
    /// configuration names.
    Adopt {
        /// What the key is for.
        #[arg(long, value_enum)]
        role: AdoptRole,
        /// Its CKA_LABEL, or a PKCS#11 URI naming it (pkcs11:object=LABEL).
        #[arg(long)]
        label: String,
        /// Make an adopted token or credential key active at once.
        #[arg(long)]
        activate: bool,
        /// First set to false the usage flags the key's role forbids
        /// (CKA_DECRYPT, CKA_UNWRAP, CKA_DERIVE, ...), which generic tools
        /// leave at the module's defaults. Only ever removes a permission.
        #[arg(long)]
        restrict_usage: bool,
    },
    /// Print the custody evidence of every key, as read from the token.
    CustodyReport {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Generate the AES-256 key that seals offer claims (`hsm.claims_key`)
    /// inside the token: once, on set-ups made before notary sealed claims
    /// (`notary init` makes it). Refused if the token already has it.
    GenerateClaimsKey,
    /// Write a PKCS#10 certificate request (PEM) for a credential key,
    /// signed inside the HSM, for the issuer's CA.
    Csr {
        /// The credential key's kid (may start with '-': it is base64url).
        #[arg(long, allow_hyphen_values = true)]
        kid: String,
        /// The subject, RFC 4514 style, most specific first:
        /// "CN=Example Issuer,O=Example University,C=NL" (CN, O, OU, C, L,
        /// ST, serialNumber, organizationIdentifier; escape ',' as '\,').
        #[arg(long)]
        subject: String,
        /// Write the request to FILE instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Attach the certificate chain a CA issued for a credential key; it is
    /// then sent as `x5c` with every credential the key signs.
    Certificate {
        /// The credential key's kid (may start with '-': it is base64url).
        #[arg(long, allow_hyphen_values = true)]
        kid: String,
        /// PEM file with the chain, leaf first, then each issuer.
        #[arg(long, value_name = "FILE.pem")]
        chain: PathBuf,
    },
}

/// Runs a keys command.
pub async fn run(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    if let KeysCommand::GenerateClaimsKey = command {
        return generate_claims_key(&config).await;
    }
    // Read before the HSM is opened: a missing file costs no login.
    let chain = match &command {
        KeysCommand::Certificate { chain, .. } => {
            Some(std::fs::read(chain).with_context(|| format!("reading {}", chain.display()))?)
        }
        _ => None,
    };
    if let KeysCommand::Adopt {
        role,
        label,
        restrict_usage: true,
        ..
    } = &command
    {
        restrict_usage(&config, *role, label).await?;
    }
    let notary = super::open_notary(&config).await?;
    let result = run_with(&notary, &config, command, chain).await;
    notary.store().close().await;
    notary.hsm().close();
    result
}

async fn run_with(
    notary: &crate::issuance::Notary,
    config: &Config,
    command: KeysCommand,
    chain: Option<Vec<u8>>,
) -> anyhow::Result<()> {
    match command {
        KeysCommand::List => {
            for k in notary.list_keys().await? {
                let until = k
                    .verify_until
                    .map(|t| format!("\tverifies until {}", rfc3339(t)))
                    .unwrap_or_default();
                let certificate = k
                    .x5c
                    .as_deref()
                    .map(|x5c| match crate::x509::leaf_facts(x5c) {
                        Some(leaf) => format!(
                            "\tcertificate {} until {}",
                            leaf.subject,
                            rfc3339(leaf.not_after)
                        ),
                        None => "\tcertificate (does not parse)".to_owned(),
                    })
                    .unwrap_or_default();
                println!(
                    "{}\t{}\t{}\t{}\t{}\tcreated {}{until}{certificate}",
                    k.kid,
                    k.label,
                    k.alg,
                    k.state.as_str(),
                    k.purpose.as_str(),
                    rfc3339(k.created_at)
                );
            }
        }
        KeysCommand::Generate {
            purpose,
            alg,
            label,
        } => {
            let purpose = KeyPurpose::from(purpose);
            let k = notary
                .generate_key(purpose, algorithm_for(purpose, alg), label)
                .await?;
            println!(
                "generated {} ({}, {}, {}) inside the token: pending",
                k.kid,
                k.label,
                k.alg,
                purpose.as_str()
            );
        }
        KeysCommand::Rotate {
            kid,
            purpose,
            alg,
            label,
        } => {
            let purpose = KeyPurpose::from(purpose);
            let (k, previous) = notary
                .rotate_key(purpose, algorithm_for(purpose, alg), label, kid.as_deref())
                .await?;
            println!(
                "active: {} ({}, {}, {})",
                k.kid,
                k.label,
                k.alg,
                purpose.as_str()
            );
            match (previous, purpose) {
                (Some(previous), KeyPurpose::Token) => {
                    println!("retiring: {previous} (stays in the JWKS until its tokens expire)");
                }
                (Some(previous), KeyPurpose::Credential) => println!(
                    "retiring: {previous} (stays published, so the credentials it signed keep \
                     verifying, until `notary keys retire`)"
                ),
                (None, _) => {}
            }
            println!("running servers pick the new key up within [keys] refresh_secs");
            if purpose == KeyPurpose::Credential {
                println!(
                    "for a certificate: notary keys csr --kid {} --subject \"CN=...,O=...,C=..\"",
                    k.kid
                );
            }
        }
        KeysCommand::Retire { kid, force } => {
            notary.retire_key(&kid, force).await?;
            println!("retired {kid}");
        }
        KeysCommand::Csr { kid, subject, out } => {
            let pem = notary.credential_key_csr(&kid, &subject).await?;
            match out {
                None => print!("{pem}"),
                Some(path) => {
                    std::fs::write(&path, &pem)
                        .with_context(|| format!("writing {}", path.display()))?;
                    println!(
                        "wrote the certificate request for {kid} to {}",
                        path.display()
                    );
                }
            }
        }
        KeysCommand::Certificate { kid, chain: path } => {
            let chain = chain.unwrap_or_default();
            let leaf = notary
                .attach_certificate_chain(&kid, &chain)
                .await
                .with_context(|| format!("{}", path.display()))?;
            println!(
                "attached to {kid}: {}, issued by {}, valid until {}",
                leaf.subject,
                leaf.issuer,
                rfc3339(leaf.not_after)
            );
            println!("running servers send it as x5c within [keys] refresh_secs");
        }
        // Run by `run` before the key ring is opened, which needs the key.
        KeysCommand::GenerateClaimsKey => {
            anyhow::bail!("generate-claims-key runs before the key ring is opened")
        }
        KeysCommand::Adopt {
            role,
            label,
            activate,
            ..
        } => adopt(notary, config, role, &label, activate).await?,
        KeysCommand::CustodyReport { json } => {
            let report = notary.custody_report().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&report);
            }
        }
    }
    Ok(())
}

/// Makes the claims key on a token that lacks it. Needs no database and
/// does not open the use cases, which refuse to start without the key.
async fn generate_claims_key(config: &Config) -> anyhow::Result<()> {
    let hsm = super::log_in_hsm(config).await?;
    let mut id = vec![0u8; 8];
    let made = match crate::issuance::random::fill(&mut id) {
        Ok(()) => hsm
            .generate_claims_key(id)
            .await
            .map_err(anyhow::Error::from),
        Err(e) => Err(e.into()),
    };
    hsm.close();
    let custody = made?;
    if let Some(violation) = custody.violation() {
        anyhow::bail!("the token made the claims key against the custody rule: {violation}");
    }
    println!(
        "generated the claims key {:?} ({}) inside the token",
        custody.label,
        custody.key.as_deref().unwrap_or("AES")
    );
    Ok(())
}

fn print_report(report: &crate::issuance::custody::CustodyReport) {
    let t = &report.token;
    println!("custody report, {}", report.generated_at);
    println!(
        "token: {:?}  manufacturer: {}  model: {}  serial: {}",
        t.label, t.manufacturer, t.model, t.serial
    );
    for key in &report.keys {
        let c = &key.custody;
        println!();
        println!("key {:?} ({:?}, {})", c.label, key.role, key.algorithm);
        if let Some(kid) = &key.kid {
            println!("  kid                    {kid}");
        }
        if let Some(state) = key.state {
            println!("  state                  {}", state.as_str());
        }
        println!(
            "  CKA_ID                 {}",
            c.id.as_deref().unwrap_or("(not returned by the token)")
        );
        if let Some(sha) = &key.public_key_sha256 {
            println!("  public key SHA-256     {sha}");
        }
        println!(
            "  key type and size      {}",
            c.key.as_deref().unwrap_or("(not returned by the token)")
        );
        println!(
            "  CKA_KEY_GEN_MECHANISM  {}",
            c.key_gen_mechanism
                .as_deref()
                .unwrap_or("(not returned by the token)")
        );
        if let Some(allowed) = &c.allowed_mechanisms {
            println!("  CKA_ALLOWED_MECHANISMS {}", allowed.join(", "));
        }
        for a in &c.attributes {
            let value = a
                .value
                .map_or("(not returned by the token)".to_owned(), |v| v.to_string());
            // A usage flag the rule forbids, made moot by the allowed mechanisms.
            let moot = c.usage_bounded && a.required.is_some_and(|r| Some(r) != a.value);
            let note = if moot {
                "  (grants nothing: only the mechanisms above are allowed)"
            } else {
                ""
            };
            println!("  {:<22} {value}{note}", a.name);
        }
        if let Some(n) = key.signatures {
            println!("  signatures (audit log) {n}");
        }
        if let Some(cert) = &key.certificate {
            println!("  certificate            {}", cert.subject);
            println!("    issued by            {}", cert.issuer);
            println!("    valid until          {}", rfc3339(cert.not_after));
            println!("    SHA-256              {}", cert.sha256);
        }
        match c.violation() {
            None => println!("  custody rule           satisfied"),
            Some(v) => println!("  custody rule           VIOLATED: {v}"),
        }
    }
}

/// The custody role of an adopted key.
fn key_role(role: AdoptRole) -> KeyRole {
    match role {
        AdoptRole::Token => KeyRole::Signing,
        AdoptRole::Credential => KeyRole::Credential,
        AdoptRole::Audit => KeyRole::Audit,
        AdoptRole::Hashing => KeyRole::Hashing,
        AdoptRole::Claims => KeyRole::Claims,
        AdoptRole::ClaimsMac => KeyRole::ClaimsMac,
    }
}

/// `keys adopt --restrict-usage`: narrows the key's usage flags in a login
/// of its own, before the key ring (which refuses such a key) is opened.
async fn restrict_usage(config: &Config, role: AdoptRole, label: &str) -> anyhow::Result<()> {
    let label = crate::hsm::uri::label_from(label, "object")?;
    let settings = super::hsm_settings(config);
    let pin = config.hsm_pin()?;
    let narrowed = tokio::task::spawn_blocking(move || {
        crate::hsm::restrict_usage(&settings, &pin, key_role(role), &label)
    })
    .await
    .context("HSM task failed")??;
    if narrowed.is_empty() {
        println!("usage already limited to the key's role");
    } else {
        println!("set to false: {}", narrowed.join(", "));
    }
    Ok(())
}

/// `keys adopt`.
async fn adopt(
    notary: &crate::issuance::Notary,
    config: &Config,
    role: AdoptRole,
    label: &str,
    activate: bool,
) -> anyhow::Result<()> {
    let label = crate::hsm::uri::label_from(label, "object")?;
    let (configured, field) = match role {
        AdoptRole::Token | AdoptRole::Credential => {
            let purpose = match role {
                AdoptRole::Token => KeyPurpose::Token,
                _ => KeyPurpose::Credential,
            };
            let k = notary.adopt_key(purpose, &label).await?;
            println!(
                "adopted {} ({}, {}, {}): pending",
                k.kid,
                k.label,
                k.alg,
                purpose.as_str()
            );
            if activate {
                let alg = algorithm_for(purpose, None);
                let (k, previous) = notary.rotate_key(purpose, alg, None, Some(&k.kid)).await?;
                println!("active: {}", k.kid);
                if let Some(previous) = previous {
                    println!("retiring: {previous}");
                }
            } else {
                println!(
                    "make it active with: notary keys rotate --purpose {} --kid {}",
                    purpose.as_str(),
                    k.kid
                );
            }
            return Ok(());
        }
        AdoptRole::Audit => (Some(config.hsm.audit_key_label()), "hsm.audit_key"),
        AdoptRole::Hashing => (Some(config.hsm.hashing_key_label()), "hsm.hashing_key"),
        AdoptRole::Claims => (Some(config.hsm.claims_key_label()), "hsm.claims_key"),
        AdoptRole::ClaimsMac => (config.hsm.claims_mac_key_label(), "hsm.claims_mac_key"),
    };
    // The fixed keys are found by the labels the configuration gives, and
    // changing one (say the hashing key) would orphan everything made with
    // the old one: adoption records the configured key, it never switches.
    if configured.as_deref() != Some(label.as_str()) {
        anyhow::bail!(
            "{field} does not name {label:?}: set {field} = \"{label}\" in the configuration first"
        );
    }
    let key_role = key_role(role);
    let custody = notary.adopt_fixed_key(key_role, "key.adopted").await?;
    println!(
        "adopted {:?} ({}) as the {} key: {}",
        custody.label,
        custody.key.as_deref().unwrap_or("unknown type"),
        field,
        custody.summary()
    );
    if key_role == KeyRole::Audit {
        let path = config.resolve(&config.audit.verifier_key_file);
        let verifier = notary.note_verifier().await?;
        if !path.exists() {
            std::fs::write(&path, verifier.encode() + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            println!("wrote the audit verifier key to {}", path.display());
        }
    }
    Ok(())
}
