//! `notary probe`: an end-to-end smoke test from outside, for operators and
//! black-box monitoring. Creates an offer through the admin API, redeems it
//! as a wallet would, and verifies the token against the published JWKS;
//! when notary is the credential issuer it goes on as the wallet: a nonce,
//! a key proof with a fresh key, the credential, its check against the
//! published issuer keys, and a notification. One line per step with its
//! latency.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::oid4vci::PRE_AUTHORIZED_GRANT;

mod wallet;

/// Arguments of `notary probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// notary's public URL, e.g. https://notary.example.org
    #[arg(long)]
    url: String,
    /// File holding an admin or issuer API key.
    #[arg(long)]
    admin_key_file: PathBuf,
    /// Trust this CA (PEM) instead of the system's roots.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Credential configuration to offer (default: the first in the metadata).
    #[arg(long)]
    credential: Option<String>,
}

pub(super) struct Step {
    started: Instant,
}

impl Step {
    pub(super) fn start() -> Self {
        Step {
            started: Instant::now(),
        }
    }

    pub(super) fn ok(self, name: &str, detail: &str) {
        println!(
            "ok    {name:<10} {:>7.1} ms  {detail}",
            self.started.elapsed().as_secs_f64() * 1e3
        );
    }
}

pub(super) async fn json_of(response: reqwest::Response, step: &str) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("{step}: the response is not JSON (HTTP {status})"))?;
    if !status.is_success() {
        bail!("{step}: HTTP {status}: {body}");
    }
    Ok(body)
}

/// Runs the probe; any failed step is an error (non-zero exit).
pub async fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let key = std::fs::read_to_string(&args.admin_key_file)
        .with_context(|| format!("reading {}", args.admin_key_file.display()))?;
    let key = key.trim();
    let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10));
    if let Some(ca) = &args.ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        builder =
            builder
                .tls_certs_only([reqwest::Certificate::from_pem(&pem)
                    .context("--ca is not a PEM certificate")?]);
    }
    let client = builder.build().context("building the HTTP client")?;
    let base = args.url.trim_end_matches('/');

    let step = Step::start();
    let meta = json_of(
        client
            .get(format!("{base}/.well-known/oauth-authorization-server"))
            .send()
            .await
            .context("metadata")?,
        "metadata",
    )
    .await?;
    let token_endpoint = meta["token_endpoint"]
        .as_str()
        .context("metadata: no token_endpoint")?
        .to_owned();
    let jwks_uri = meta["jwks_uri"]
        .as_str()
        .context("metadata: no jwks_uri")?
        .to_owned();
    let issuer = meta["issuer"]
        .as_str()
        .context("metadata: no issuer")?
        .to_owned();
    let credential = match args.credential {
        Some(c) => c,
        None => {
            let ci = json_of(
                client
                    .get(format!("{base}/.well-known/openid-credential-issuer"))
                    .send()
                    .await?,
                "metadata",
            )
            .await?;
            ci["credential_configurations_supported"]
                .as_object()
                .and_then(|m| m.keys().next().cloned())
                .context("metadata: no credential configuration; pass --credential")?
        }
    };
    step.ok("metadata", &token_endpoint);

    let issuer_meta = json_of(
        client
            .get(format!("{base}/.well-known/openid-credential-issuer"))
            .send()
            .await
            .context("metadata")?,
        "metadata",
    )
    .await
    .ok();
    // notary issues credentials itself when it advertises its own nonce
    // endpoint; then the offer carries a value for every declared claim.
    let issuing = issuer_meta
        .as_ref()
        .and_then(|m| m["nonce_endpoint"].as_str())
        .is_some_and(|n| n.starts_with(base));
    let configuration = issuer_meta
        .as_ref()
        .map(|m| m["credential_configurations_supported"][&credential].clone())
        .unwrap_or(Value::Null);
    let mut request =
        json!({ "credentials": [credential], "userId": "notary-probe", "expiresIn": 60 });
    if issuing {
        request["claims"] = json!({ &credential: wallet::probe_claims(&configuration) });
    }

    let step = Step::start();
    let offer = json_of(
        client
            .post(format!("{base}/v1/openid/offers/pre-authorized"))
            .bearer_auth(key)
            .json(&request)
            .send()
            .await
            .context("offer")?,
        "offer",
    )
    .await?;
    let uri = offer["uri"].as_str().context("offer: no uri")?;
    let query = uri
        .split_once('?')
        .map(|(_, q)| q)
        .context("offer: uri has no query")?;
    let credential_offer = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "credential_offer")
        .map(|(_, v)| v.into_owned())
        .context("offer: no credential_offer")?;
    let credential_offer: Value =
        serde_json::from_str(&credential_offer).context("offer: not JSON")?;
    let code = credential_offer["grants"][PRE_AUTHORIZED_GRANT]["pre-authorized_code"]
        .as_str()
        .context("offer: no pre-authorized code")?
        .to_owned();
    let pin = offer["transactionCode"].as_str().map(str::to_owned);
    step.ok("offer", offer["id"].as_str().unwrap_or(""));

    let step = Step::start();
    let mut form = vec![
        ("grant_type", PRE_AUTHORIZED_GRANT.to_owned()),
        ("pre-authorized_code", code),
    ];
    if let Some(pin) = pin {
        form.push(("tx_code", pin));
    }
    let token = json_of(
        client
            .post(&token_endpoint)
            .form(&form)
            .send()
            .await
            .context("token")?,
        "token",
    )
    .await?;
    let access_token = token["access_token"]
        .as_str()
        .context("token: no access_token")?
        .to_owned();
    step.ok("token", token["token_type"].as_str().unwrap_or(""));

    let step = Step::start();
    let jwks = json_of(client.get(&jwks_uri).send().await.context("jwks")?, "jwks").await?;
    let claims = crate::jose::verify_with_jwks(&access_token, &jwks)
        .map_err(|e| anyhow::anyhow!("verify: {e}"))?;
    if claims["iss"] != issuer {
        bail!(
            "verify: iss is {} but the metadata says {issuer}",
            claims["iss"]
        );
    }
    if claims["exp"].as_i64().unwrap_or(0) <= crate::issuance::now() {
        bail!("verify: the token is already expired");
    }
    step.ok(
        "verify",
        &format!("signature and claims valid (sub {})", claims["sub"]),
    );
    if let (true, Some(meta)) = (issuing, issuer_meta.as_ref()) {
        wallet::obtain_credential(
            &client,
            base,
            meta,
            &credential,
            &configuration,
            &access_token,
            token["c_nonce"].as_str(),
        )
        .await?;
    }
    Ok(())
}
