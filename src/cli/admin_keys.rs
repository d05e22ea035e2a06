//! `notary admin-keys create|list|revoke`.

use clap::Subcommand;

use crate::config::Config;
use crate::issuance::rfc3339;
use crate::store::Role;

/// Admin API key commands.
#[derive(Debug, Subcommand)]
pub enum AdminKeysCommand {
    /// Create a key; its secret is printed once and stored only hashed.
    Create {
        /// admin, issuer, auditor or introspect (credential issuers calling /introspect).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A name to recognise the key by.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id.
    Revoke {
        /// The key id (from `list`).
        id: String,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s)
        .ok_or_else(|| format!("unknown role {s:?}: use admin, issuer, auditor or introspect"))
}

/// Runs an admin-keys command.
pub async fn run(config: Config, command: AdminKeysCommand) -> anyhow::Result<()> {
    let notary = super::open_notary(&config).await?;
    let result = match command {
        AdminKeysCommand::Create { role, name } => {
            let created = notary.create_api_key(role, &name).await?;
            println!("id:   {}", created.record.id);
            println!("role: {}", role.as_str());
            println!("key:  {}", created.secret.expose());
            println!("The key is shown only now; notary keeps only a keyed hash of it.");
            Ok(())
        }
        AdminKeysCommand::List => {
            for key in notary.list_api_keys().await? {
                let status = match key.revoked_at {
                    Some(at) => format!("revoked {}", rfc3339(at)),
                    None => "active".to_owned(),
                };
                println!(
                    "{}\t{}\t{}\tcreated {}\t{}",
                    key.id,
                    key.role.as_str(),
                    key.name,
                    rfc3339(key.created_at),
                    status
                );
            }
            Ok(())
        }
        AdminKeysCommand::Revoke { id } => {
            if notary.revoke_api_key(&id).await? {
                println!("revoked {id}");
                Ok(())
            } else {
                Err(anyhow::anyhow!("no active API key with id {id:?}"))
            }
        }
    };
    notary.store().close().await;
    notary.hsm().close();
    result
}
