//! The full-flow phase: each simulated wallet gets an offer (with claims)
//! from the back office, redeems it, fetches a nonce and obtains its
//! credential with a fresh key and proof, as a real wallet would.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// The SD-JWT VC configuration `notary init` writes.
const CONFIGURATION: &str = "UniversityDegree_sd_jwt";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A wallet's fresh P-256 key and a key proof for `nonce`.
fn proof(audience: &str, nonce: &str) -> String {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = pair.public_key().as_ref();
    let header = json!({"typ": "openid4vci-proof+jwt", "alg": "ES256",
                        "jwk": {"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])}});
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"aud": audience, "iat": iat, "nonce": nonce});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = pair.sign(&rng, input.as_bytes()).unwrap();
    format!("{input}.{}", b64(signature.as_ref()))
}

/// One wallet's whole flow; false if any step did not answer as it should.
async fn one_flow(c: &reqwest::Client, base: &str, admin_key: &str, i: usize) -> bool {
    let offer: Value = match c
        .post(format!("{base}/v1/openid/offers/pre-authorized"))
        .bearer_auth(admin_key)
        .json(
            &json!({"credentials": [CONFIGURATION], "transactionCode": true,
                      "userId": format!("bench-{}", i % super::status::SUBJECTS),
                      "claims": {CONFIGURATION: {"given_name": format!("Given{i}"),
                                                 "family_name": format!("Family{i}"),
                                                 "degree": "BSc", "graduation_year": 2024}}}),
        )
        .send()
        .await
    {
        Ok(r) if r.status() == 201 => r.json().await.unwrap_or(Value::Null),
        _ => return false,
    };
    let (code, pin) = super::code_and_pin(&offer);
    let token: Value = match c
        .post(format!("{base}/oid4vci/token"))
        .form(&[
            ("grant_type", super::GRANT),
            ("pre-authorized_code", &code),
            ("tx_code", &pin),
        ])
        .send()
        .await
    {
        Ok(r) if r.status() == 200 => r.json().await.unwrap_or(Value::Null),
        _ => return false,
    };
    let nonce: Value = match c.post(format!("{base}/oid4vci/nonce")).send().await {
        Ok(r) if r.status() == 200 => r.json().await.unwrap_or(Value::Null),
        _ => return false,
    };
    let (Some(access_token), Some(nonce)) =
        (token["access_token"].as_str(), nonce["c_nonce"].as_str())
    else {
        return false;
    };
    let body = json!({"credential_configuration_id": CONFIGURATION,
                      "proofs": {"jwt": [proof(base, nonce)]}});
    match c
        .post(format!("{base}/oid4vci/credential"))
        .bearer_auth(access_token)
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
        Err(_) => false,
    }
}

/// Runs `flows` wallet flows over `connections` keep-alive connections.
pub async fn run(
    ca: &[u8],
    base: &str,
    admin_key: &str,
    flows: usize,
    connections: usize,
) -> Value {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (c, base, key, next) = (
                super::client(ca),
                base.to_owned(),
                admin_key.to_owned(),
                next.clone(),
            );
            tokio::spawn(async move {
                let (mut latencies, mut failures) = (Vec::new(), 0usize);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= flows {
                        break;
                    }
                    let t = Instant::now();
                    let ok = one_flow(&c, &base, &key, i).await;
                    latencies.push(t.elapsed());
                    failures += usize::from(!ok);
                }
                (latencies, failures)
            })
        })
        .collect();
    let (mut latencies, mut non_200) = (Vec::with_capacity(flows), 0);
    for t in tasks {
        let (l, f) = t.await.unwrap();
        latencies.extend(l);
        non_200 += f;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ms = super::percentile_ms(&mut latencies);
    json!({
        "connections": connections,
        "flows": flows,
        "flows_per_sec": flows as f64 / elapsed,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "flows_not_completed": non_200,
    })
}
