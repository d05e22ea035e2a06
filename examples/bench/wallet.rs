//! Wallets for the whole-issuance comparison: each redeems its offer's code
//! and PIN, fetches a nonce and obtains its credential with a fresh holder
//! key and key proof, with or without DPoP (a fresh DPoP key per wallet,
//! a proof at the token endpoint and one with `ath` at the credential
//! endpoint). The same client drives notary and the peer; only the
//! endpoints and configuration ids differ. Offers are made beforehand by
//! each issuer's back-office API: the figure is the wallets' side.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// Where an issuer's wallet-facing endpoints are.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The credential issuer identifier: the key proof's `aud`.
    pub issuer: String,
    pub token: String,
    pub nonce: String,
    pub credential: String,
}

impl Endpoints {
    pub fn notary(base: &str) -> Self {
        Endpoints {
            issuer: base.to_owned(),
            token: format!("{base}/oid4vci/token"),
            nonce: format!("{base}/oid4vci/nonce"),
            credential: format!("{base}/oid4vci/credential"),
        }
    }

    pub fn peer(base: &str) -> Self {
        Endpoints {
            issuer: base.to_owned(),
            token: format!("{base}/token"),
            nonce: format!("{base}/nonce"),
            credential: format!("{base}/credentials"),
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A fresh P-256 key of the wallet's.
struct Key {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Key {
    fn generate() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        Key { pair, rng }
    }

    fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])})
    }

    fn jws(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = self.pair.sign(&self.rng, input.as_bytes()).unwrap();
        format!("{input}.{}", b64(signature.as_ref()))
    }

    /// A key proof (`openid4vci-proof+jwt`) for `nonce`.
    fn key_proof(&self, audience: &str, nonce: &str) -> String {
        let header = json!({"typ": "openid4vci-proof+jwt", "alg": "ES256", "jwk": self.jwk()});
        self.jws(
            &header,
            &json!({"aud": audience, "iat": now(), "nonce": nonce}),
        )
    }

    /// A DPoP proof (RFC 9449) for a POST to `url`, with `ath` when it
    /// accompanies an access token.
    fn dpop_proof(&self, url: &str, access_token: Option<&str>) -> String {
        let mut jti = [0u8; 16];
        self.rng.fill(&mut jti).unwrap();
        let mut claims = json!({"jti": b64(&jti), "htm": "POST", "htu": url, "iat": now()});
        if let Some(token) = access_token {
            claims["ath"] = json!(b64(digest(&SHA256, token.as_bytes()).as_ref()));
        }
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk()});
        self.jws(&header, &claims)
    }
}

/// What one wallet phase asks for.
pub struct Phase<'a> {
    pub endpoints: &'a Endpoints,
    pub ca: &'a [u8],
    pub configuration: &'a str,
    pub dpop: bool,
    /// One (code, PIN) per wallet.
    pub offers: Vec<(String, String)>,
    pub connections: usize,
    /// The server's process, for its CPU time.
    pub server_pid: u32,
}

async fn expect_json(
    response: reqwest::Result<reqwest::Response>,
    step: &str,
) -> Result<Value, String> {
    let response = response.map_err(|e| format!("{step}: {e}"))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| format!("{step}: {e}"))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(format!("{step}: {status} {text}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{step}: {e}"))
}

/// One wallet, from its code to its credential.
async fn one_wallet(
    c: &reqwest::Client,
    e: &Endpoints,
    configuration: &str,
    dpop: bool,
    (code, pin): &(String, String),
) -> Result<(), String> {
    let dpop_key = dpop.then(Key::generate);
    let mut request = c.post(&e.token).form(&[
        ("grant_type", super::GRANT),
        ("pre-authorized_code", code),
        ("tx_code", pin),
    ]);
    if let Some(key) = &dpop_key {
        request = request.header("DPoP", key.dpop_proof(&e.token, None));
    }
    let token = expect_json(request.send().await, "token").await?;
    let access_token = token["access_token"]
        .as_str()
        .ok_or("token: no access_token")?;
    let nonce = expect_json(c.post(&e.nonce).send().await, "nonce").await?;
    let nonce = nonce["c_nonce"].as_str().ok_or("nonce: no c_nonce")?;

    let holder = Key::generate();
    let body = json!({"credential_configuration_id": configuration,
                      "proofs": {"jwt": [holder.key_proof(&e.issuer, nonce)]}});
    let mut request = c.post(&e.credential).json(&body);
    request = match &dpop_key {
        Some(key) => request
            .header("authorization", format!("DPoP {access_token}"))
            .header("DPoP", key.dpop_proof(&e.credential, Some(access_token))),
        None => request.bearer_auth(access_token),
    };
    let answer = expect_json(request.send().await, "credential").await?;
    match answer
        .get("credentials")
        .or_else(|| answer.get("credential"))
    {
        Some(_) => Ok(()),
        None => Err("credential: no credential in the answer".into()),
    }
}

/// Runs every wallet of `phase`, `connections` at a time, one keep-alive
/// connection each.
pub async fn run(phase: Phase<'_>) -> Value {
    let wallets = phase.offers.len();
    let offers = Arc::new(phase.offers);
    let next = Arc::new(AtomicUsize::new(0));
    let (client_ticks, server_ticks) = (
        super::cpu_ticks(std::process::id()),
        super::cpu_ticks(phase.server_pid),
    );
    let start = Instant::now();
    let tasks: Vec<_> = (0..phase.connections)
        .map(|_| {
            let (c, e, configuration, dpop, offers, next) = (
                super::client(phase.ca),
                phase.endpoints.clone(),
                phase.configuration.to_owned(),
                phase.dpop,
                offers.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), Vec::new());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(offer) = offers.get(i) else { break };
                    let t = Instant::now();
                    match one_wallet(&c, &e, &configuration, dpop, offer).await {
                        Ok(()) => latencies.push(t.elapsed()),
                        Err(error) => errors.push(error),
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut latencies, mut errors) = (Vec::with_capacity(wallets), Vec::new());
    for t in tasks {
        let (l, e) = t.await.unwrap();
        latencies.extend(l);
        errors.extend(e);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let client_cpu_s =
        (super::cpu_ticks(std::process::id()) - client_ticks) as f64 / super::TICKS_PER_SEC;
    let server_cpu_s =
        (super::cpu_ticks(phase.server_pid) - server_ticks) as f64 / super::TICKS_PER_SEC;
    let completed = latencies.len();
    let ms = super::percentile_ms(&mut latencies);
    let (p50, p99) = if completed > 0 {
        (ms(0.5), ms(0.99))
    } else {
        (0.0, 0.0)
    };
    json!({
        "configuration": phase.configuration,
        "dpop": phase.dpop,
        "connections": phase.connections,
        "wallets": wallets,
        "issuances_per_sec": completed as f64 / elapsed,
        "p50_ms": p50,
        "p99_ms": p99,
        "errors": errors.len(),
        "first_error": errors.first(),
        "client_cpu_cores": client_cpu_s / elapsed,
        "server_cpu_cores": server_cpu_s / elapsed,
    })
}
