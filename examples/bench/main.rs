//! The benchmark: one run, one JSON object. For one key algorithm and one
//! database it
//!
//! 1. measures the raw HSM throughput of the configured key (signatures/s)
//!    and of the hashing key (HMAC/s) through the same session pool the
//!    server uses, at 1 and at N concurrent callers (N = the pool size);
//! 2. starts the release `notary serve` on a fresh `notary init` set-up and
//!    measures the time from process start to `/readyz` answering 200;
//! 3. creates the offers it needs (with PINs) through the admin API and
//!    measures offers/s;
//! 4. redeems them at the token endpoint over TLS with keep-alive HTTP/1.1
//!    connections, every request a fresh code, at each connection count,
//!    and reports redemptions/s, p50/p99/p99.9 latency and non-200 answers;
//! 5. runs whole wallet flows (offer with claims → token → nonce →
//!    credential with a fresh key and proof) at each connection count, and
//!    reports flows/s, p50/p99 and flows not completed; the raw signing rate
//!    of the credential key is among the HSM figures of step 1;
//! 6. reads the server's peak RSS at the end.
//!
//! Usage: bench [--alg EdDSA|ES256] [--database postgres://...] [--redemptions N]
//!              [--connections 16,64] [--hsm-ops N] [--flows N] [--sessions N]
//!              [--init-arg ARG]...   (e.g. the --token set-up of a TPM)
//!        bench --peer DIR [--rounds N] [--wallets N] [--notary-only]
//!              (notary against the peer, see versus.rs; --notary-only runs
//!              notary's redemption rounds alone, for before/after runs)
//! `scripts/bench` builds it in release and runs every configuration.

// A measuring tool, not the product: any failure should stop it loudly.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod full_flow;
mod server;
mod status;
mod versus;
mod wallet;

use server::{Server, SetUp};

const GRANT: &str = "urn:ietf:params:oauth:grant-type:pre-authorized_code";

#[derive(Debug, Clone)]
struct Args {
    setup: SetUp,
    redemptions: usize,
    connections: Vec<usize>,
    hsm_ops: usize,
    hsm_only: Option<PathBuf>,
    flows: usize,
    /// A prepared copy of the peer issuer (`../shared/peer/` after
    /// `npm ci`): notary is then measured against it instead.
    peer: Option<PathBuf>,
    /// Rounds of the redemption comparison.
    rounds: usize,
    /// Wallets per whole-issuance phase.
    wallets: usize,
    /// With `--peer`: only notary's redemption rounds (the peer is not
    /// started; its load script is used), for quick before/after runs.
    notary_only: bool,
    /// With `--notary-only`: after the rounds, the same count split over
    /// two instances at once (for `--database` on PostgreSQL).
    two_instances: bool,
    /// Only notary's whole-issuance phases (no peer, no redemption
    /// rounds), for quick before/after runs on the credential path.
    issuance_only: bool,
    /// With `--issuance-only`: only this phase, e.g. "jwt_vc_json DPoP off".
    phase: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        setup: SetUp {
            alg: "EdDSA".into(),
            ..SetUp::default()
        },
        redemptions: 20_000,
        connections: vec![16, 64],
        hsm_ops: 20_000,
        hsm_only: None,
        flows: 2_000,
        peer: None,
        rounds: 5,
        wallets: 2_000,
        notary_only: false,
        two_instances: false,
        issuance_only: false,
        phase: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--alg" => args.setup.alg = value(),
            "--database" => args.setup.database = Some(value()),
            "--redemptions" => args.redemptions = value().parse().expect("--redemptions N"),
            "--connections" => {
                args.connections = value()
                    .split(',')
                    .map(|c| c.parse().expect("--connections 16,64"))
                    .collect()
            }
            "--hsm-ops" => args.hsm_ops = value().parse().expect("--hsm-ops N"),
            "--hsm-only" => args.hsm_only = Some(PathBuf::from(value())),
            "--flows" => args.flows = value().parse().expect("--flows N"),
            "--init-arg" => args.setup.init_args.push(value()),
            "--sessions" => args.setup.sessions = Some(value().parse().expect("--sessions N")),
            "--peer" => args.peer = Some(PathBuf::from(value())),
            "--rounds" => args.rounds = value().parse().expect("--rounds N"),
            "--wallets" => args.wallets = value().parse().expect("--wallets N"),
            "--notary-only" => args.notary_only = true,
            "--two-instances" => args.two_instances = true,
            "--issuance-only" => args.issuance_only = true,
            "--phase" => args.phase = Some(value()),
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn main() {
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(config) = &args.hsm_only {
        println!("{}", runtime.block_on(hsm_throughput(config, args.hsm_ops)));
    } else if args.issuance_only {
        println!("{:#}", runtime.block_on(versus::notary_issuance(&args)));
    } else if let Some(peer) = args.peer.as_ref().filter(|_| args.notary_only) {
        println!("{:#}", runtime.block_on(versus::notary_rounds(&args, peer)));
    } else if let Some(peer) = &args.peer {
        println!("{:#}", runtime.block_on(versus::run(&args, peer)));
    } else {
        println!("{:#}", runtime.block_on(run(&args)));
    }
}

async fn run(args: &Args) -> Value {
    // (1) Raw HSM throughput, in a child process that loads the module with
    // the set-up's environment (the server is not running yet).
    let mut hsm = Value::Null;
    let server = Server::start(&args.setup, |config| hsm = hsm_child(config, args.hsm_ops)).await;
    // (2) Start to ready: measured by Server::start.
    let (ca, base, admin_key) = (&server.ca, &server.base, &server.admin_key);

    // (3) Offers for every phase, through the admin API.
    let total = args.redemptions * args.connections.len();
    let (offers, create) = create_offers(
        ca,
        base,
        admin_key,
        total,
        16,
        &json!({"credentials": ["UniversityDegree_jwt"]}),
    )
    .await;

    // (4) Redemptions at each connection count.
    let mut phases = Vec::new();
    let mut codes = offers.into_iter();
    for &connections in &args.connections {
        let batch: Vec<_> = codes.by_ref().take(args.redemptions).collect();
        let (machine, ticks) = (Cpu::now(), cpu_ticks(server.pid()));
        let mut phase = redeem(ca, base, batch, connections).await;
        let (cpu, ticks) = (machine.since(), cpu_ticks(server.pid()) - ticks);
        // CPU seconds of the server per redemption: steadier than the rate
        // on a shared machine, and what "everything else costs little" means.
        phase["server_cpu_us_per_redemption"] =
            json!(ticks as f64 / TICKS_PER_SEC * 1e6 / args.redemptions as f64);
        phase["machine_cpu_busy_percent"] = json!(cpu.busy_percent);
        phase["machine_cpu_steal_percent"] = json!(cpu.steal_percent);
        phases.push(phase);
    }

    // (5) Whole wallet flows, to a credential.
    let mut flows = Vec::new();
    if args.flows > 0 {
        for &connections in &args.connections {
            let ticks = cpu_ticks(server.pid());
            let mut phase = full_flow::run(ca, base, admin_key, args.flows, connections).await;
            let ticks = cpu_ticks(server.pid()) - ticks;
            phase["server_cpu_us_per_flow"] =
                json!(ticks as f64 / TICKS_PER_SEC * 1e6 / args.flows as f64);
            flows.push(phase);
        }
    }

    // (6) Status: revocations, the list's size, and revocation-to-served.
    let status_phase = status::run(ca, base, admin_key, 131_072, 50).await;

    // (7) The server's memory.
    let (peak_rss, rss) = server.memory_kib();
    let start_to_ready_ms = server.start_to_ready_ms;
    drop(server);

    let signatures_1 = hsm["sign"]["1"].as_f64().unwrap_or(0.0);
    let signatures_n = hsm["sign"]["n"].as_f64().unwrap_or(0.0);
    let ratios: Vec<Value> = phases
        .iter()
        .map(|p| {
            let rate = p["redemptions_per_sec"].as_f64().unwrap_or(0.0);
            json!({
                "connections": p["connections"],
                "vs_hsm_signatures_1_thread": rate / signatures_1,
                "vs_hsm_signatures_n_threads": rate / signatures_n,
            })
        })
        .collect();
    json!({
        "alg": args.setup.alg,
        "init_args": args.setup.init_args,
        "hsm_sessions": args.setup.sessions,
        "database": if args.setup.database.is_some() { "postgresql" } else { "sqlite" },
        "cores": std::thread::available_parallelism().map_or(0, usize::from),
        "memory_wiping": true,
        "hsm": hsm,
        "start_to_ready_ms": start_to_ready_ms,
        "offer_creation": create,
        "redemption": phases,
        "redemptions_total": total,
        "full_flow": flows,
        "status": status_phase,
        "server_peak_rss_mib": peak_rss as f64 / 1024.0,
        "server_rss_at_end_mib": rss as f64 / 1024.0,
        "redemptions_vs_hsm": ratios,
    })
}

/// `sysconf(_SC_CLK_TCK)`: 100 on Linux.
const TICKS_PER_SEC: f64 = 100.0;

/// User and system CPU ticks a process has used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The machine's CPU counters (`/proc/stat`), to tell how busy the cores
/// were and how much time the hypervisor gave to other guests (steal).
struct Cpu {
    ticks: Vec<u64>,
}

struct CpuShare {
    busy_percent: f64,
    steal_percent: f64,
}

impl Cpu {
    fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap();
        let line = stat.lines().next().unwrap();
        Cpu {
            ticks: line
                .split_whitespace()
                .skip(1)
                .map(|t| t.parse().unwrap())
                .collect(),
        }
    }

    /// Shares since `self`: fields are user nice system idle iowait irq
    /// softirq steal.
    fn since(&self) -> CpuShare {
        let now = Cpu::now();
        let d: Vec<f64> = now
            .ticks
            .iter()
            .zip(&self.ticks)
            .take(8)
            .map(|(a, b)| (a - b) as f64)
            .collect();
        let total: f64 = d.iter().sum::<f64>().max(1.0);
        CpuShare {
            busy_percent: 100.0 * (total - d[3] - d[4] - d[7]) / total,
            steal_percent: 100.0 * d[7] / total,
        }
    }
}

fn hsm_child(config: &Path, ops: usize) -> Value {
    let loaded = notary::config::Config::load(config).expect("config");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--hsm-only",
            config.to_str().unwrap(),
            "--hsm-ops",
            &ops.to_string(),
        ])
        .envs(loaded.module_env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hsm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("hsm JSON")
}

/// Signatures/s and HMAC/s on one bare PKCS#11 session, one thread, no
/// pool: the module's own cost, to show what the pool adds.
fn hsm_bare_session(loaded: &notary::config::Config, label: &str, alg: &str, ops: usize) -> Value {
    use cryptoki::mechanism::Mechanism;
    use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
    use cryptoki::session::UserType;
    use notary::hsm::{KeyRole, auth_pin, find_token, keys::find_key, load_module};

    let pkcs11 = load_module(&loaded.resolve(&loaded.hsm.module)).expect("module");
    let slot = find_token(&pkcs11, &loaded.hsm.token_label()).expect("token");
    let session = pkcs11.open_rw_session(slot).expect("session");
    let pin = auth_pin(&loaded.hsm_pin().expect("PIN"));
    session.login(UserType::User, Some(&pin)).expect("login");
    let key = find_key(&session, KeyRole::Signing, label).expect("signing key");
    let hmac =
        find_key(&session, KeyRole::Hashing, &loaded.hsm.hashing_key_label()).expect("hashing key");
    let message = vec![7u8; 200];
    let digest = vec![7u8; 32];
    let start = Instant::now();
    for _ in 0..ops {
        match alg {
            "EdDSA" => session.sign(
                &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                key,
                &message,
            ),
            _ => session.sign(&Mechanism::Ecdsa, key, &digest),
        }
        .expect("sign");
    }
    let sign = ops as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for _ in 0..ops {
        session
            .sign(&Mechanism::Sha256Hmac, hmac, &[9u8; 64])
            .expect("hmac");
    }
    let hmac_rate = ops as f64 / start.elapsed().as_secs_f64();
    session.logout().ok();
    drop(session);
    pkcs11.finalize().ok();
    json!({ "sign": sign, "hmac": hmac_rate })
}

/// Signatures/s and HMAC/s through the server's own session pool.
async fn hsm_throughput(config: &Path, ops: usize) -> Value {
    let loaded = notary::config::Config::load(config).expect("config");
    let records = {
        let store = notary::store::Store::connect(&loaded.database_url(), 1)
            .await
            .expect("store");
        let keys = store.list_signing_keys().await.expect("keys");
        store.close().await;
        keys
    };
    let active = records
        .iter()
        .find(|k| k.state == notary::store::KeyState::Active)
        .expect("an active key");
    let (label, alg) = (active.label.clone(), active.alg.clone());
    let bare = tokio::task::spawn_blocking({
        let loaded = loaded.clone();
        move || hsm_bare_session(&loaded, &label, &alg, ops)
    })
    .await
    .unwrap();
    let notary = notary::cli::open_notary(&loaded)
        .await
        .expect("open the HSM and store");
    let key = notary.active_key().expect("an active key");
    let hsm = notary.hsm().clone();
    let sessions = loaded
        .hsm
        .sessions
        .unwrap_or(2 * std::thread::available_parallelism().map_or(2, usize::from));
    let message = vec![7u8; 200];
    let mut sign = serde_json::Map::new();
    let mut hmac = serde_json::Map::new();
    for (label, callers) in [("1", 1), ("n", sessions)] {
        let rate = measure(ops, callers, {
            let (hsm, key, message) = (hsm.clone(), key.clone(), message.clone());
            move || {
                let (hsm, key, message) = (hsm.clone(), key.clone(), message.clone());
                async move {
                    hsm.sign(&key, message).await.expect("sign");
                }
            }
        })
        .await;
        sign.insert(label.into(), json!(rate));
        let rate = measure(ops, callers, {
            let hsm = hsm.clone();
            move || {
                let hsm = hsm.clone();
                async move {
                    hsm.keyed_hash(zeroize::Zeroizing::new(vec![9u8; 64]))
                        .await
                        .expect("hmac");
                }
            }
        })
        .await;
        hmac.insert(label.into(), json!(rate));
    }
    let mut credential_sign = serde_json::Map::new();
    if let Some(credential_key) = notary.active_credential_key() {
        for (label, callers) in [("1", 1), ("n", sessions)] {
            let rate = measure(ops, callers, {
                let (hsm, key, message) =
                    (hsm.clone(), credential_key.info.clone(), message.clone());
                move || {
                    let (hsm, key, message) = (hsm.clone(), key.clone(), message.clone());
                    async move {
                        hsm.sign_credential(&key, message).await.expect("sign");
                    }
                }
            })
            .await;
            credential_sign.insert(label.into(), json!(rate));
        }
        credential_sign.insert(
            "key_alg".into(),
            json!(credential_key.info.algorithm().as_str()),
        );
    }
    json!({ "key_alg": key.algorithm().as_str(), "pool_sessions": sessions, "n": sessions,
            "sign": sign, "hmac": hmac, "credential_sign": credential_sign,
            "bare_session_1_thread": bare })
}

/// Runs `ops` calls of `op` from `callers` concurrent tasks; calls/s.
async fn measure<F, Fut>(ops: usize, callers: usize, op: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (op, next) = (op.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < ops {
                    op().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

/// One keep-alive HTTP/1.1 connection per client.
fn client(ca: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca).unwrap()])
        .http1_only()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap()
}

/// Creates `total` offers of `body` (which must ask for a PIN) through the
/// admin API; their codes and PINs, and offers/s.
async fn create_offers(
    ca: &[u8],
    base: &str,
    admin_key: &str,
    total: usize,
    connections: usize,
    body: &Value,
) -> (Vec<(String, String)>, Value) {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (c, base, key, next, body) = (
                client(ca),
                base.to_owned(),
                admin_key.to_owned(),
                next.clone(),
                body.clone(),
            );
            tokio::spawn(async move {
                let mut out = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let offer: Value = c
                        .post(format!("{base}/v1/openid/offers/pre-authorized"))
                        .bearer_auth(&key)
                        .json(&body)
                        .send()
                        .await
                        .expect("create offer")
                        .json()
                        .await
                        .expect("offer JSON");
                    out.push(code_and_pin(&offer));
                }
                out
            })
        })
        .collect();
    let mut offers = Vec::new();
    for t in tasks {
        offers.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    (
        offers,
        json!({ "offers": total, "connections": connections, "offers_per_sec": total as f64 / elapsed }),
    )
}

fn code_and_pin(offer: &Value) -> (String, String) {
    let uri = offer["uri"]
        .as_str()
        .unwrap_or_else(|| panic!("no offer URI in {offer}"));
    let query = uri.split_once('?').expect("query").1;
    let (_, document) = form_urlencoded::parse(query.as_bytes())
        .next()
        .expect("offer");
    let document: Value = serde_json::from_str(&document).expect("offer JSON");
    let code = document["grants"][GRANT]["pre-authorized_code"]
        .as_str()
        .expect("code");
    (
        code.to_owned(),
        offer["transactionCode"].as_str().expect("PIN").to_owned(),
    )
}

async fn redeem(ca: &[u8], base: &str, codes: Vec<(String, String)>, connections: usize) -> Value {
    let count = codes.len();
    let codes = Arc::new(codes);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (c, base, codes, next) = (client(ca), base.to_owned(), codes.clone(), next.clone());
            tokio::spawn(async move {
                let url = format!("{base}/oid4vci/token");
                let (mut latencies, mut failures) = (Vec::new(), 0usize);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((code, pin)) = codes.get(i) else { break };
                    let body = format!(
                        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Apre-authorized_code&pre-authorized_code={code}&tx_code={pin}"
                    );
                    let t = Instant::now();
                    let r = c
                        .post(&url)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(body)
                        .send()
                        .await;
                    let ok = match r {
                        Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    latencies.push(t.elapsed());
                    failures += usize::from(!ok);
                }
                (latencies, failures)
            })
        })
        .collect();
    let (mut latencies, mut non_200) = (Vec::with_capacity(count), 0);
    for t in tasks {
        let (l, f) = t.await.unwrap();
        latencies.extend(l);
        non_200 += f;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ms = percentile_ms(&mut latencies);
    json!({
        "connections": connections,
        "redemptions": count,
        "redemptions_per_sec": count as f64 / elapsed,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "p99_9_ms": ms(0.999),
        "non_200": non_200,
    })
}

/// Sorts `latencies` and returns a lookup of the p-th percentile (0..=1),
/// in milliseconds.
fn percentile_ms(latencies: &mut [Duration]) -> impl Fn(f64) -> f64 + '_ {
    latencies.sort();
    |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i].as_secs_f64() * 1e3
    }
}
