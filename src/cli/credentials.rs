//! `notary credentials`: issued credentials and their status, from the host.

use anyhow::bail;
use clap::Subcommand;

use crate::config::Config;
use crate::store::{CredentialRecord, CredentialStatus, StatusChange};

/// Credential commands.
#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// List the credentials of an offer or of a subject (metadata only).
    List {
        /// The offer's id (random base64url: it may begin with `-`).
        #[arg(long, allow_hyphen_values = true)]
        offer: Option<String>,
        /// The offer's `userId`.
        #[arg(long)]
        user_id: Option<String>,
    },
    /// Revoke a credential (final), or every credential of an offer or a subject.
    Revoke {
        /// The credential's id.
        id: Option<String>,
        /// Every credential of this offer.
        #[arg(long, conflicts_with = "id", allow_hyphen_values = true)]
        offer: Option<String>,
        /// Every credential of this `userId`.
        #[arg(long, conflicts_with_all = ["id", "offer"])]
        user_id: Option<String>,
    },
    /// Suspend a credential (until reinstated).
    Suspend {
        /// The credential's id.
        id: String,
    },
    /// Lift a credential's suspension.
    Reinstate {
        /// The credential's id.
        id: String,
    },
}

fn line(c: &CredentialRecord) -> String {
    format!(
        "{}  {:<9}  {}  {}  offer {}  list {} index {}",
        c.id,
        c.status.as_str(),
        c.format,
        c.configuration,
        c.offer_id,
        c.status_list.as_deref().unwrap_or("-"),
        c.status_index
            .map_or_else(|| "-".to_owned(), |i| i.to_string()),
    )
}

/// Runs a credentials command.
pub async fn run(config: Config, command: CredentialsCommand) -> anyhow::Result<()> {
    let notary = super::open_notary(&config).await?;
    let result = async {
        match command {
            CredentialsCommand::List { offer, user_id } => {
                if offer.is_none() && user_id.is_none() {
                    bail!("name an offer (--offer ID) or a subject (--user-id X)");
                }
                for c in notary
                    .credentials(offer.as_deref(), user_id.as_deref(), i64::MAX / 2)
                    .await?
                {
                    println!("{}", line(&c));
                }
                Ok(())
            }
            CredentialsCommand::Revoke {
                id: None,
                offer,
                user_id,
            } => {
                if offer.is_none() && user_id.is_none() {
                    bail!("name a credential id, --offer ID or --user-id X");
                }
                let n = notary
                    .revoke_credentials_of(offer.as_deref(), user_id.as_deref(), "cli")
                    .await?;
                println!("revoked {n} credentials");
                Ok(())
            }
            CredentialsCommand::Revoke { id: Some(id), .. } => {
                change(&notary, &id, CredentialStatus::Revoked).await
            }
            CredentialsCommand::Suspend { id } => {
                change(&notary, &id, CredentialStatus::Suspended).await
            }
            CredentialsCommand::Reinstate { id } => {
                change(&notary, &id, CredentialStatus::Valid).await
            }
        }
    }
    .await;
    notary.store().close().await;
    notary.hsm().close();
    result
}

async fn change(
    notary: &crate::issuance::Notary,
    id: &str,
    to: CredentialStatus,
) -> anyhow::Result<()> {
    match notary.change_credential_status(id, to, "cli").await? {
        StatusChange::Changed(c) => println!("{}", line(&c)),
        StatusChange::Unchanged(c) => println!("{} (unchanged)", line(&c)),
        StatusChange::Refused(current) => bail!(
            "credential {id} is {}: {}",
            current.as_str(),
            "revocation is final"
        ),
        StatusChange::NotFound => bail!("no credential with id {id}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::CredentialsCommand;
    use crate::cli::{Cli, Command};

    /// Offer ids are random base64url, so one in 64 begins with `-`.
    #[test]
    fn an_offer_id_that_begins_with_a_hyphen_is_a_value() {
        for args in [
            ["notary", "credentials", "list", "--offer", "-jq4Xn0"],
            ["notary", "credentials", "revoke", "--offer", "-jq4Xn0"],
        ] {
            let cli = Cli::try_parse_from(args).expect("parses");
            let offer = match cli.command {
                Command::Credentials(
                    CredentialsCommand::List { offer, .. }
                    | CredentialsCommand::Revoke { offer, .. },
                ) => offer,
                other => panic!("parsed as {other:?}"),
            };
            assert_eq!(offer.as_deref(), Some("-jq4Xn0"));
        }
    }
}
