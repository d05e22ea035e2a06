//! The probe's wallet half: from an access token to a checked credential.

use anyhow::{Context as _, bail};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

use super::{Step, json_of};
use crate::jose::b64url;

/// A value for every claim the configuration declares, so that an offer
/// for it passes the mandatory-claims check.
pub(super) fn probe_claims(configuration: &Value) -> Value {
    let mut claims = serde_json::Map::new();
    for entry in configuration["claims"].as_array().into_iter().flatten() {
        if let Some(name) = entry.pointer("/path/0").and_then(Value::as_str) {
            claims.insert(name.to_owned(), json!("notary-probe"));
        }
    }
    Value::Object(claims)
}

/// A fresh P-256 key, as a wallet makes one per credential.
struct HolderKey {
    pair: EcdsaKeyPair,
    jwk: Value,
}

impl HolderKey {
    fn generate() -> anyhow::Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("making a holder key"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|_| anyhow::anyhow!("loading the holder key"))?;
        let point = pair.public_key().as_ref().to_vec();
        if point.len() != 65 {
            bail!("unexpected P-256 public key length");
        }
        let jwk = json!({"kty": "EC", "crv": "P-256",
                         "x": b64url(&point[1..33]), "y": b64url(&point[33..])});
        Ok(HolderKey { pair, jwk })
    }

    /// An `openid4vci-proof+jwt` for `audience` and `nonce`.
    fn proof(&self, audience: &str, nonce: &str) -> anyhow::Result<String> {
        let header = json!({"typ": "openid4vci-proof+jwt", "alg": "ES256", "jwk": self.jwk});
        let claims = json!({"aud": audience, "iat": crate::issuance::now(), "nonce": nonce});
        let input = crate::jose::signing_input(&header, &claims);
        let signature = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| anyhow::anyhow!("signing the key proof"))?;
        Ok(crate::jose::compact(input, signature.as_ref()))
    }
}

/// Nonce, key proof, credential, its check, and a notification.
pub(super) async fn obtain_credential(
    client: &reqwest::Client,
    base: &str,
    meta: &Value,
    credential: &str,
    configuration: &Value,
    access_token: &str,
    token_nonce: Option<&str>,
) -> anyhow::Result<()> {
    let issuer = meta["credential_issuer"]
        .as_str()
        .context("metadata: no credential_issuer")?;
    let step = Step::start();
    let nonce_endpoint = meta["nonce_endpoint"]
        .as_str()
        .context("no nonce_endpoint")?;
    let nonce = json_of(
        client.post(nonce_endpoint).send().await.context("nonce")?,
        "nonce",
    )
    .await?;
    let nonce = nonce["c_nonce"]
        .as_str()
        .or(token_nonce)
        .context("nonce: no c_nonce")?
        .to_owned();
    step.ok("nonce", "fresh c_nonce");

    let step = Step::start();
    let holder = HolderKey::generate()?;
    let answer = json_of(
        client
            .post(
                meta["credential_endpoint"]
                    .as_str()
                    .context("no credential_endpoint")?,
            )
            .bearer_auth(access_token)
            .json(&json!({"credential_configuration_id": credential,
                          "proofs": {"jwt": [holder.proof(issuer, &nonce)?]}}))
            .send()
            .await
            .context("credential")?,
        "credential",
    )
    .await?;
    let issued = answer["credentials"][0]["credential"]
        .as_str()
        .context("credential: no credentials[0].credential")?;
    let format = configuration["format"].as_str().unwrap_or("");
    step.ok("credential", format);

    let step = Step::start();
    let detail = match format {
        "dc+sd-jwt" | "vc+sd-jwt" => {
            let keys = json_of(
                client
                    .get(format!("{base}/.well-known/jwt-vc-issuer"))
                    .send()
                    .await
                    .context("jwt-vc-issuer")?,
                "jwt-vc-issuer",
            )
            .await?;
            let (jws, disclosures) = issued.split_once('~').context("check: not an SD-JWT")?;
            let claims = crate::jose::verify_with_jwks(jws, &keys["jwks"])
                .map_err(|e| anyhow::anyhow!("check: {e}"))?;
            if claims["cnf"]["jwk"] != holder.jwk {
                bail!("check: cnf.jwk is not the key the proof was made with");
            }
            let count = disclosures.split('~').filter(|d| !d.is_empty()).count();
            format!("signature valid, bound to the holder key, {count} disclosures")
        }
        _ => {
            let doc = json_of(
                client
                    .get(format!("{base}/.well-known/did.json"))
                    .send()
                    .await
                    .context("did.json")?,
                "did.json",
            )
            .await?;
            let keys: Vec<Value> = doc["verificationMethod"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    let mut jwk = m["publicKeyJwk"].clone();
                    jwk["kid"] = m["id"].clone();
                    jwk
                })
                .collect();
            let claims = crate::jose::verify_with_jwks(issued, &json!({ "keys": keys }))
                .map_err(|e| anyhow::anyhow!("check: {e}"))?;
            if claims["iss"] != doc["id"] {
                bail!("check: iss is not the did:web of this server");
            }
            format!(
                "signature valid against {}",
                doc["id"].as_str().unwrap_or_default()
            )
        }
    };
    step.ok("check", &detail);

    let step = Step::start();
    if let (Some(endpoint), Some(id)) = (
        meta["notification_endpoint"].as_str(),
        answer["notification_id"].as_str(),
    ) {
        let r = client
            .post(endpoint)
            .bearer_auth(access_token)
            .json(&json!({"notification_id": id, "event": "credential_accepted"}))
            .send()
            .await
            .context("notification")?;
        if r.status() != reqwest::StatusCode::NO_CONTENT {
            bail!("notification: HTTP {}", r.status());
        }
        step.ok("notify", "credential_accepted recorded");
    }
    Ok(())
}
