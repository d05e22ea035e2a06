//! `notary check`: validate the config and reach everything the server needs.

use crate::config::Config;

/// Prints one line per check; fails on the first problem.
pub async fn run(config: Config) -> anyhow::Result<()> {
    println!("ok   config");
    crate::http::tls::server_config(
        &config.resolve(&config.tls.cert),
        &config.resolve(&config.tls.key),
    )?;
    println!("ok   TLS certificate and key");
    let hsm = super::open_hsm(&config).await?;
    let token = hsm.token();
    println!(
        "ok   HSM token {:?} ({} {}, serial {})",
        token.label, token.manufacturer, token.model, token.serial
    );
    let key = hsm.signing_key();
    println!(
        "ok   signing key {:?}: {} kid {}",
        key.label,
        key.algorithm().as_str(),
        key.kid
    );
    for custody in hsm.custody().await? {
        println!("ok   custody of {:?}: {}", custody.label, custody.summary());
    }
    hsm.ping().await?;
    let store = super::open_store(&config).await?;
    store.ping().await?;
    println!("ok   database (schema current)");
    store.close().await;
    hsm.close();
    Ok(())
}
