//! `notary offers create`: the offer endpoint, for scripts on the host.

use anyhow::Context as _;
use clap::Subcommand;

use crate::config::Config;
use crate::issuance::{CreateOffer, TransactionCodeRequest};

/// Offer commands.
#[derive(Debug, Subcommand)]
pub enum OffersCommand {
    /// Create an offer and print it as JSON (as the HTTP API does).
    Create {
        /// Credential configuration id (repeat for several).
        #[arg(long = "credential", required = true)]
        credentials: Vec<String>,
        /// Subject of the token.
        #[arg(long)]
        user_id: Option<String>,
        /// Lifetime in seconds.
        #[arg(long)]
        expires_in: Option<u64>,
        /// Do not require a PIN.
        #[arg(long)]
        no_tx_code: bool,
        /// PIN length.
        #[arg(long)]
        tx_code_length: Option<u32>,
        /// Where the holder finds the PIN (shown by the wallet).
        #[arg(long)]
        tx_code_description: Option<String>,
        /// Claims per credential configuration, as JSON:
        /// `{"UniversityDegree_jwt": {"given_name": "Alice"}}`. Stored only
        /// sealed in the HSM. (A command line is visible to other users of
        /// the host: prefer the admin API for real personal data.)
        #[arg(long)]
        claims: Option<String>,
    },
}

/// Runs an offers command.
pub async fn run(config: Config, command: OffersCommand) -> anyhow::Result<()> {
    let OffersCommand::Create {
        credentials,
        user_id,
        expires_in,
        no_tx_code,
        tx_code_length,
        tx_code_description,
        claims,
    } = command;
    let transaction_code = if no_tx_code {
        TransactionCodeRequest::Flag(false)
    } else {
        TransactionCodeRequest::Spec {
            length: tx_code_length,
            input_mode: None,
            description: tx_code_description,
        }
    };
    let claims = claims
        .map(|c| serde_json::from_str(&c).context("--claims must be a JSON object"))
        .transpose()?;
    let request = CreateOffer {
        credentials,
        user_id,
        expires_in,
        transaction_code,
        by_reference: false,
        claims,
    };
    let notary = super::open_notary(&config).await?;
    let result = notary.create_offer(request, "cli").await;
    notary.store().close().await;
    notary.hsm().close();
    let created = result?;
    println!("{}", serde_json::to_string_pretty(&created)?);
    Ok(())
}
