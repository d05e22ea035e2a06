//! `notary keys list|generate|rotate|retire|custody-report|generate-claims-key`.

use clap::Subcommand;

use crate::config::Config;
use crate::issuance::rfc3339;
use crate::jose::Algorithm;

/// Key lifecycle commands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the Notary signing keys and their states.
    List,
    /// Generate a key inside the token (pending: not used until rotated to).
    Generate {
        /// EdDSA (Ed25519) or ES256 (P-256).
        #[arg(long, default_value = "EdDSA")]
        alg: Algorithm,
        /// CKA_LABEL for the key (default: notary-signing-N).
        #[arg(long)]
        label: Option<String>,
    },
    /// Generate a key and make it active; the previous key keeps verifying
    /// until the tokens it signed have expired.
    Rotate {
        /// Activate this pending key (from `keys generate`) instead of a new one.
        /// (A kid may start with '-': it is base64url.)
        #[arg(long, allow_hyphen_values = true)]
        kid: Option<String>,
        /// EdDSA (Ed25519) or ES256 (P-256).
        #[arg(long, default_value = "EdDSA")]
        alg: Algorithm,
        /// CKA_LABEL for the key (default: notary-signing-N).
        #[arg(long)]
        label: Option<String>,
    },
    /// Retire a key: it leaves the JWKS. Refused while tokens it signed may
    /// still be live, unless --force.
    Retire {
        /// The key's kid (may start with '-': it is base64url).
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// Retire even though tokens it signed may still be live.
        #[arg(long)]
        force: bool,
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
}

/// Runs a keys command.
pub async fn run(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    if let KeysCommand::GenerateClaimsKey = command {
        return generate_claims_key(&config).await;
    }
    let notary = super::open_notary(&config).await?;
    let result = run_with(&notary, command).await;
    notary.store().close().await;
    notary.hsm().close();
    result
}

async fn run_with(notary: &crate::issuance::Notary, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::List => {
            for k in notary.list_keys().await? {
                let until = k
                    .verify_until
                    .map(|t| format!("\tverifies until {}", rfc3339(t)))
                    .unwrap_or_default();
                println!(
                    "{}\t{}\t{}\t{}\tcreated {}{until}",
                    k.kid,
                    k.label,
                    k.alg,
                    k.state.as_str(),
                    rfc3339(k.created_at)
                );
            }
        }
        KeysCommand::Generate { alg, label } => {
            let k = notary.generate_key(alg, label).await?;
            println!(
                "generated {} ({}, {}) inside the token: pending",
                k.kid, k.label, k.alg
            );
        }
        KeysCommand::Rotate { kid, alg, label } => {
            let (k, previous) = notary.rotate_key(alg, label, kid.as_deref()).await?;
            println!("active: {} ({}, {})", k.kid, k.label, k.alg);
            if let Some(previous) = previous {
                println!("retiring: {previous} (stays in the JWKS until its tokens expire)");
            }
            println!("running servers pick the new key up within [keys] refresh_secs");
        }
        KeysCommand::Retire { kid, force } => {
            notary.retire_key(&kid, force).await?;
            println!("retired {kid}");
        }
        // Run by `run` before the key ring is opened, which needs the key.
        KeysCommand::GenerateClaimsKey => {
            anyhow::bail!("generate-claims-key runs before the key ring is opened")
        }
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

fn print_report(report: &crate::issuance::keys::CustodyReport) {
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
        for a in &c.attributes {
            let value = a
                .value
                .map_or("(not returned by the token)".to_owned(), |v| v.to_string());
            println!("  {:<22} {value}", a.name);
        }
        if let Some(n) = key.signatures {
            println!("  signatures (audit log) {n}");
        }
        match c.violation() {
            None => println!("  custody rule           satisfied"),
            Some(v) => println!("  custody rule           VIOLATED: {v}"),
        }
    }
}
