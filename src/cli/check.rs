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
    let notary = super::open_notary(&config).await?;
    let token = notary.hsm().token();
    println!(
        "ok   HSM token {:?} ({} {}, serial {})",
        token.label, token.manufacturer, token.model, token.serial
    );
    print_mechanisms(&notary)?;
    let now = crate::issuance::now();
    let ring = notary.key_ring();
    let active = ring.active.as_ref().map(|k| k.kid.clone());
    if active.is_none() {
        anyhow::bail!("no active signing key: run `notary keys rotate`");
    }
    for key in ring.verifying(now) {
        let role = if Some(&key.kid) == active.as_ref() {
            "active"
        } else {
            "retiring"
        };
        println!(
            "ok   signing key {:?} ({role}): {} kid {}",
            key.label,
            key.algorithm().as_str(),
            key.kid
        );
    }
    let credential_active = notary.active_credential_key().map(|k| k.info.kid.clone());
    for key in notary.published_credential_keys() {
        let state = if Some(&key.info.kid) == credential_active.as_ref() {
            "active"
        } else {
            "retiring"
        };
        let certificate = match key.x5c.as_deref().map(crate::x509::leaf_facts) {
            None => "no certificate".to_owned(),
            Some(None) => "a certificate that does not parse".to_owned(),
            Some(Some(leaf)) if leaf.not_after < now => format!(
                "certificate {} EXPIRED {}",
                leaf.subject,
                crate::issuance::rfc3339(leaf.not_after)
            ),
            Some(Some(leaf)) => format!(
                "certificate {} until {}",
                leaf.subject,
                crate::issuance::rfc3339(leaf.not_after)
            ),
        };
        println!(
            "ok   credential key {:?} ({state}): {} kid {}, {certificate}",
            key.info.label,
            key.info.algorithm().as_str(),
            key.info.kid
        );
    }
    if credential_active.is_none() {
        println!("warn no credential key: run `notary keys rotate --purpose credential`");
    }
    let report = notary.custody_report().await?;
    for key in &report.keys {
        println!(
            "ok   custody of {:?}: {}",
            key.custody.label,
            key.custody.summary()
        );
    }
    notary.hsm().ping().await?;
    notary.store().ping().await?;
    println!("ok   database (schema current)");
    notary.store().close().await;
    notary.hsm().close();
    Ok(())
}

/// One line per key role: the mechanism the token will be asked for.
/// (Start-up has already refused any role the token cannot serve.)
fn print_mechanisms(notary: &crate::issuance::Notary) -> anyhow::Result<()> {
    let hsm = notary.hsm();
    let mut roles = Vec::new();
    if let Some(key) = notary.key_ring().active.as_ref() {
        roles.push(("access tokens", key.algorithm()));
    }
    if let Some(key) = notary.active_credential_key() {
        roles.push(("credentials", key.info.algorithm()));
    }
    roles.push(("audit checkpoints", hsm.audit_algorithm()));
    for (role, alg) in roles {
        let mechanism = hsm.signing_mechanism(role, alg)?;
        println!("ok   {role}: {} with {}", alg.as_str(), mechanism.name());
    }
    let keyed_hash = hsm
        .capabilities()
        .keyed_hash()
        .map_err(anyhow::Error::msg)?;
    println!("ok   keyed hash: {keyed_hash}");
    println!("ok   claims encryption: {}", hsm.sealing().describe());
    let limit = hsm
        .capabilities()
        .max_sessions
        .map_or("none stated".to_owned(), |n| n.to_string());
    println!(
        "ok   HSM sessions: {} for operations and 1 kept logged in (token limit: {limit})",
        hsm.sessions()
    );
    Ok(())
}
