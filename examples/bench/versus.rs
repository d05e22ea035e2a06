//! notary against the peer issuer (`../shared/peer/`), in one run, on one
//! machine, with the same load generators:
//!
//! 1. **Redemptions**: the peer's own `token-load.sh` (wrk, one thread,
//!    keep-alive TLS, a fresh code and PIN per request) against the peer and
//!    against notary (ES256, SQLite), alternately, for a number of rounds,
//!    each side's codes minted by its own back-office API just before its
//!    round; then notary with an EdDSA key, and notary on PostgreSQL when
//!    `BENCH_POSTGRES_URL` is set, each once with the same script.
//! 2. **Whole issuance**: the wallets of `wallet.rs` against both, for each
//!    format (SD-JWT VC, W3C VC as JWT), DPoP off and on.
//!
//! The JSON goes to stdout; a side-by-side table with the ratios to stderr.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use super::server::{Server, SetUp, bytes_written, context_switches, cpu_ticks, free_port};
use super::wallet::{self, Endpoints};
use super::{Args, create_offers};

/// The peer's configuration ids, and notary's, for each format.
const FORMATS: [(&str, &str, &str); 2] = [
    ("dc+sd-jwt", "PeerTestSdJwt", "UniversityDegree_sd_jwt"),
    ("jwt_vc_json", "PeerTestCredential", "UniversityDegree_jwt"),
];

/// The peer issuer, started from a prepared copy (`npm ci` done). Stopped
/// when dropped.
struct Peer {
    dir: PathBuf,
    port: u16,
    base: String,
    ca: Vec<u8>,
}

impl Peer {
    fn start(dir: &Path) -> Peer {
        let port = free_port();
        let out = Command::new("./peer-up.sh")
            .current_dir(dir)
            .env("PEER_PORT", port.to_string())
            .output()
            .expect("peer-up.sh");
        assert!(
            out.status.success(),
            "peer-up.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let base = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let ca = std::fs::read(dir.join("run/tls/ca.pem")).unwrap();
        Peer {
            dir: dir.to_owned(),
            port,
            base,
            ca,
        }
    }

    fn pid(&self) -> u32 {
        let file = self.dir.join(format!("run/peer-{}.pid", self.port));
        std::fs::read_to_string(file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// `count` offers with PINs for `configuration`, by the peer's own
    /// minting script; returns the `code<TAB>pin` file.
    fn mint(&self, count: usize, configuration: &str, file: &Path) {
        let out = Command::new("node")
            .current_dir(&self.dir)
            .env("NODE_EXTRA_CA_CERTS", "run/tls/ca.pem")
            .args(["mint-offers.mjs", &self.base, &count.to_string()])
            .args([
                "--out",
                file.to_str().unwrap(),
                "--config-id",
                configuration,
            ])
            .output()
            .expect("mint-offers.mjs");
        assert!(
            out.status.success(),
            "mint-offers.mjs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        Command::new("./peer-down.sh")
            .current_dir(&self.dir)
            .env("PEER_PORT", self.port.to_string())
            .output()
            .ok();
    }
}

/// Runs the peer's `token-load.sh` on `codes` against `base`; its JSON.
fn token_load(
    peer_dir: &Path,
    base: &str,
    path: &str,
    codes: &Path,
    connections: usize,
    server_pid: u32,
) -> Value {
    let count = std::fs::read_to_string(codes).unwrap().lines().count();
    let out = Command::new("./token-load.sh")
        .current_dir(peer_dir)
        .env("TOKEN_PATH", path)
        .env("SERVER_PID", server_pid.to_string())
        .args([
            base,
            codes.to_str().unwrap(),
            &count.to_string(),
            &connections.to_string(),
        ])
        .output()
        .expect("token-load.sh");
    assert!(
        out.status.success(),
        "token-load.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout
        .lines()
        .last()
        .expect("token-load.sh printed nothing");
    let r: Value = serde_json::from_str(last).unwrap();
    let elapsed = r["elapsed_s"].as_f64().unwrap_or(1.0);
    json!({
        "requests_per_sec": r["rps"],
        "p50_ms": r["p50_ms"],
        "p99_ms": r["p99_ms"],
        "non_200": r["non200"],
        "requests": r["responses"],
        "server_cpu_us_per_request": r["server_cpu_s"].as_f64().map(|s| s * 1e6 / count as f64),
        "server_cpu_cores": r["server_cpu_s"].as_f64().map(|s| s / elapsed),
        "loadgen_cpu_cores": r["loadgen_cpu_s"].as_f64().map(|s| s / elapsed),
    })
}

fn write_codes(offers: &[(String, String)], file: &Path) {
    let text: String = offers
        .iter()
        .map(|(code, pin)| format!("{code}\t{pin}\n"))
        .collect();
    std::fs::write(file, text).unwrap();
}

fn read_codes(file: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| {
            let (code, pin) = l.split_once('\t').unwrap_or((l, ""));
            (code.to_owned(), pin.to_owned())
        })
        .collect()
}

/// Redemptions of `count` fresh notary codes through `token-load.sh`.
async fn notary_redemptions(
    server: &Server,
    peer_dir: &Path,
    count: usize,
    connections: usize,
    work: &Path,
) -> Value {
    let file = mint_notary_codes(server, count, work).await;
    token_load(
        peer_dir,
        &server.base,
        "/oid4vci/token",
        &file,
        connections,
        server.pid(),
    )
}

/// `count` redemptions split over two instances of one set-up, loaded at
/// the same time with half the connections each; each instance's figures.
async fn two_instance_redemptions(
    server: &Server,
    other: &super::server::Instance,
    peer_dir: &Path,
    count: usize,
    connections: usize,
    work: &Path,
) -> Vec<Value> {
    let mut files = Vec::new();
    for name in ["first", "second"] {
        let minted = mint_notary_codes(server, count / 2, work).await;
        let file = work.join(format!("notary-codes-{name}.tsv"));
        std::fs::rename(minted, &file).unwrap();
        files.push(file);
    }
    let targets = [
        (server.base.clone(), server.pid()),
        (other.base.clone(), other.pid()),
    ];
    let ticks_before = cpu_ticks();
    let mut runs: Vec<Value> = std::thread::scope(|scope| {
        let runs: Vec<_> = targets
            .iter()
            .zip(&files)
            .map(|((base, pid), file)| {
                scope.spawn(move || {
                    token_load(
                        peer_dir,
                        base,
                        "/oid4vci/token",
                        file,
                        connections / 2,
                        *pid,
                    )
                })
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    // Whether the machine had CPU to spare while both ran: if it had none,
    // the pair was bound by CPU, not by waiting on each other.
    let ticks_after = cpu_ticks();
    let idle =
        (ticks_after.0 - ticks_before.0) as f64 / (ticks_after.1 - ticks_before.1).max(1) as f64;
    for run in &mut runs {
        run["machine_idle_share"] = json!(idle);
    }
    runs
}

/// `count` fresh offers with PINs from notary's admin API; the
/// `code<TAB>pin` file.
async fn mint_notary_codes(server: &Server, count: usize, work: &Path) -> PathBuf {
    let body = json!({"credentials": ["UniversityDegree_jwt"], "transactionCode": true});
    let (offers, _) = create_offers(
        &server.ca,
        &server.base,
        &server.admin_key,
        count,
        16,
        &body,
    )
    .await;
    let file = work.join("notary-codes.tsv");
    write_codes(&offers, &file);
    file
}

/// Mean of every histogram (per label set) between two scrapes of
/// `/metrics`, in ms for the `_seconds` ones: `{"name{labels}": mean}`,
/// beside the count, for those that moved.
fn metric_means(before: &str, after: &str) -> Value {
    let parse = |text: &str| -> std::collections::BTreeMap<String, f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect()
    };
    let (before, after) = (parse(before), parse(after));
    let delta =
        |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    let mut means = serde_json::Map::new();
    for key in after.keys().filter(|k| k.contains("_sum")) {
        let count_key = key.replacen("_sum", "_count", 1);
        let count = delta(&count_key);
        if count > 0.0 {
            let scale = if key.contains("_seconds") { 1e3 } else { 1.0 };
            let name = key.replacen("_sum", "", 1);
            means.insert(
                name,
                json!([
                    (delta(key) / count * scale * 1000.0).round() / 1000.0,
                    count
                ]),
            );
        }
    }
    Value::Object(means)
}

fn ratio(notary: &Value, peer: &Value, field: &str) -> f64 {
    notary[field].as_f64().unwrap_or(0.0) / peer[field].as_f64().unwrap_or(f64::NAN)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Writes out the page cache's dirty pages before the next phase. The
/// SQLite rounds leave a gigabyte or more of WAL and database pages for the
/// kernel to write back; done during the PostgreSQL phase, that writeback
/// made every commit's fsync wait behind it (1,500/s there instead of
/// 3,100–3,900/s alone).
fn settle_disk() {
    Command::new("sync").status().ok();
}

/// notary with a key of `alg`, on `database` (else SQLite), otherwise as
/// the command line set it up.
async fn start_notary(args: &Args, alg: &str, database: Option<String>) -> Server {
    let setup = SetUp {
        alg: alg.into(),
        database: database.or_else(|| args.setup.database.clone()),
        ..args.setup.clone()
    };
    Server::start(&setup, |_| {}).await
}

/// Notary's ES256 redemption rounds alone, through the peer's load script,
/// on the database of `--database` or SQLite: the quick before/after run
/// for a change (the peer is not started). One line per round on stderr,
/// with what the load phase cost (context switches, bytes written, the
/// machine's idle share) and the means of the server's histograms over it.
pub async fn notary_rounds(args: &Args, peer_dir: &Path) -> Value {
    let work = tempfile::tempdir().unwrap();
    let connections = *args.connections.iter().max().unwrap_or(&64);
    let server = start_notary(args, "ES256", None).await;
    eprintln!("notary pid {}", server.pid());
    let mut rounds = Vec::new();
    let scrape = |server: &Server| {
        let url = server.metrics.clone();
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    for round in 1..=args.rounds {
        let file = mint_notary_codes(&server, args.redemptions, work.path()).await;
        let metrics_before = scrape(&server).await;
        let switches_before = context_switches(server.pid());
        let written_before = bytes_written(server.pid());
        let ticks_before = cpu_ticks();
        let mut run = token_load(
            peer_dir,
            &server.base,
            "/oid4vci/token",
            &file,
            connections,
            server.pid(),
        );
        let ticks_after = cpu_ticks();
        let switches = context_switches(server.pid()) - switches_before;
        let written = bytes_written(server.pid()) - written_before;
        let means = metric_means(&metrics_before, &scrape(&server).await);
        run["context_switches_per_request"] = json!(switches as f64 / args.redemptions as f64);
        run["bytes_written_per_request"] = json!(written as f64 / args.redemptions as f64);
        run["machine_idle_share"] = json!(
            (ticks_after.0 - ticks_before.0) as f64
                / (ticks_after.1 - ticks_before.1).max(1) as f64
        );
        run["metric_means"] = means.clone();
        eprintln!("  {means}");
        eprintln!(
            "round {round}: {:.0}/s, p99 {:.1} ms, non-200 {}, {:.0} µs of server CPU on {:.2} cores, load generator {:.2} cores",
            run["requests_per_sec"].as_f64().unwrap_or(0.0),
            run["p99_ms"].as_f64().unwrap_or(0.0),
            run["non_200"],
            run["server_cpu_us_per_request"].as_f64().unwrap_or(0.0),
            run["server_cpu_cores"].as_f64().unwrap_or(0.0),
            run["loadgen_cpu_cores"].as_f64().unwrap_or(0.0),
        );
        eprintln!(
            "  per request: {:.1} context switches, {:.0} bytes written; machine idle {:.0} %",
            run["context_switches_per_request"].as_f64().unwrap_or(0.0),
            run["bytes_written_per_request"].as_f64().unwrap_or(0.0),
            run["machine_idle_share"].as_f64().unwrap_or(0.0) * 100.0
        );
        rounds.push(run);
    }
    let two_instances = if args.two_instances {
        let other = server.another_instance().await;
        let two = two_instance_redemptions(
            &server,
            &other,
            peer_dir,
            args.redemptions,
            connections,
            work.path(),
        )
        .await;
        for (i, run) in two.iter().enumerate() {
            eprintln!(
                "two instances, instance {}: {:.0}/s, p99 {:.1} ms, non-200 {}, {:.0} µs of server CPU; machine idle {:.0} %",
                i + 1,
                run["requests_per_sec"].as_f64().unwrap_or(0.0),
                run["p99_ms"].as_f64().unwrap_or(0.0),
                run["non_200"],
                run["server_cpu_us_per_request"].as_f64().unwrap_or(0.0),
                run["machine_idle_share"].as_f64().unwrap_or(0.0) * 100.0,
            );
        }
        json!(two)
    } else {
        Value::Null
    };
    json!({"connections": connections, "rounds": rounds, "two_instances": two_instances})
}

/// One whole-issuance phase on notary: `wallets` offers of `configuration`
/// with claims both notary configurations declare, then as many wallets.
async fn notary_issuance_phase(
    server: &Server,
    configuration: &str,
    dpop: bool,
    wallets: usize,
    connections: usize,
) -> Value {
    let claims = json!({"given_name": "Erika", "family_name": "Mustermann", "degree": "BSc"});
    let body = json!({"credentials": [configuration], "transactionCode": true,
                      "claims": {configuration: claims}});
    let (offers, _) = create_offers(
        &server.ca,
        &server.base,
        &server.admin_key,
        wallets,
        16,
        &body,
    )
    .await;
    wallet::run(wallet::Phase {
        endpoints: &Endpoints::notary(&server.base),
        ca: &server.ca,
        configuration,
        dpop,
        offers,
        connections,
        server_pid: server.pid(),
    })
    .await
}

/// Notary's whole-issuance phases alone (each format, DPoP off and on,
/// `--rounds` times), the way the side-by-side run drives them: the quick
/// before/after run for a change on the credential path. One line per
/// phase on stderr.
pub async fn notary_issuance(args: &Args) -> Value {
    let connections = *args.connections.iter().max().unwrap_or(&64);
    let server = start_notary(args, "ES256", None).await;
    eprintln!("notary pid {}", server.pid());
    let mut phases = Vec::new();
    for round in 1..=args.rounds {
        for (format, _, configuration) in FORMATS {
            for dpop in [false, true] {
                let label = format!("{format} DPoP {}", if dpop { "on" } else { "off" });
                if args.phase.as_ref().is_some_and(|only| *only != label) {
                    continue;
                }
                let run =
                    notary_issuance_phase(&server, configuration, dpop, args.wallets, connections)
                        .await;
                eprintln!(
                    "round {round} {label}: {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, errors {}, server {:.2} cores, client {:.2} cores",
                    run["issuances_per_sec"].as_f64().unwrap_or(0.0),
                    run["p50_ms"].as_f64().unwrap_or(0.0),
                    run["p99_ms"].as_f64().unwrap_or(0.0),
                    run["errors"],
                    run["server_cpu_cores"].as_f64().unwrap_or(0.0),
                    run["client_cpu_cores"].as_f64().unwrap_or(0.0),
                );
                phases.push(json!({"round": round, "format": format, "dpop": dpop, "notary": run}));
            }
        }
    }
    json!({"connections": connections, "phases": phases})
}

/// notary on PostgreSQL (`BENCH_POSTGRES_URL`), one instance and then two
/// at once, through the same script; `Null` without the variable. Run
/// before anything else is started: with the SQLite set-up, its 60,000
/// offers and the peer alive beside it, this phase measured 1,500–2,400/s
/// where it makes 3,000–3,900/s alone.
async fn postgres_phase(args: &Args, peer_dir: &Path, connections: usize, work: &Path) -> Value {
    match std::env::var("BENCH_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            let db = format!("notary_versus_{}", std::process::id());
            let psql = |sql: &str| {
                let status = Command::new("psql")
                    .args([&format!("{url}/postgres"), "-qc", sql])
                    .status()
                    .expect("psql");
                assert!(status.success(), "psql {sql}");
            };
            psql(&format!("DROP DATABASE IF EXISTS {db}"));
            psql(&format!("CREATE DATABASE {db}"));
            settle_disk();
            let server = start_notary(args, "ES256", Some(format!("{url}/{db}"))).await;
            // No unreported warm-up run first: one of 1,024 redemptions
            // left this instance at half its rate for the rest of the phase
            // (1,400–1,700/s, and 640–870/s against 1,300–1,860/s for the
            // fresh second instance), which `--notary-only` rounds of 1,024
            // on one server do not reproduce; docs/performance.md, "third
            // pass", records it as not yet explained.
            let count = (args.redemptions / 2).max(connections);
            let mut run = notary_redemptions(&server, peer_dir, count, connections, work).await;
            let one = run["requests_per_sec"].as_f64().unwrap_or(0.0);
            // The same load split over two instances sharing the database:
            // do writes from two instances queue on each other?
            let other = server.another_instance().await;
            let two =
                two_instance_redemptions(&server, &other, peer_dir, count, connections, work).await;
            let total: f64 = two
                .iter()
                .map(|r| r["requests_per_sec"].as_f64().unwrap_or(0.0))
                .sum();
            run["two_instances"] = json!({"instances": two, "requests_per_sec": total,
                                          "share_of_one_instance": total / one});
            drop(other);
            drop(server);
            psql(&format!("DROP DATABASE {db}"));
            run
        }
        _ => Value::Null,
    }
}

pub async fn run(args: &Args, peer_dir: &Path) -> Value {
    let work = tempfile::tempdir().unwrap();
    let connections = *args.connections.iter().max().unwrap_or(&64);
    let mut postgres = postgres_phase(args, peer_dir, connections, work.path()).await;
    settle_disk();
    let peer = Peer::start(peer_dir);
    let es256 = start_notary(args, "ES256", None).await;

    // (1) Redemptions, alternately.
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let file = work.path().join("peer-codes.tsv");
        peer.mint(args.redemptions, "PeerTestCredential", &file);
        let peer_run = token_load(
            peer_dir,
            &peer.base,
            "/token",
            &file,
            connections,
            peer.pid(),
        );
        let notary_run =
            notary_redemptions(&es256, peer_dir, args.redemptions, connections, work.path()).await;
        let r = ratio(&notary_run, &peer_run, "requests_per_sec");
        eprintln!(
            "round {round}: peer {:.0}/s, notary {:.0}/s: {r:.2}x",
            peer_run["requests_per_sec"].as_f64().unwrap_or(0.0),
            notary_run["requests_per_sec"].as_f64().unwrap_or(0.0)
        );
        rounds.push(json!({"round": round, "peer": peer_run, "notary": notary_run, "ratio": r}));
    }
    let median_ratio = median(
        rounds
            .iter()
            .map(|r| r["ratio"].as_f64().unwrap_or(0.0))
            .collect(),
    );
    let sqlite_rate = median(
        rounds
            .iter()
            .map(|r| r["notary"]["requests_per_sec"].as_f64().unwrap_or(0.0))
            .collect(),
    );

    // The peer keeps every offer it minted in memory (60,000 after three
    // rounds) and works on them in the background; it is stopped while
    // notary runs alone, and a fresh one serves the issuance phases.
    drop(peer);
    settle_disk();
    let eddsa = {
        let server = start_notary(args, "EdDSA", None).await;
        notary_redemptions(
            &server,
            peer_dir,
            args.redemptions,
            connections,
            work.path(),
        )
        .await
    };
    if let Some(one) = postgres["requests_per_sec"].as_f64() {
        postgres["share_of_sqlite"] = json!(one / sqlite_rate);
    }

    // (2) Whole issuance, per format, DPoP off and on.
    settle_disk();
    let peer = Peer::start(peer_dir);
    let mut issuance = Vec::new();
    for (format, peer_configuration, notary_configuration) in FORMATS {
        for dpop in [false, true] {
            let file = work.path().join("peer-wallets.tsv");
            peer.mint(args.wallets, peer_configuration, &file);
            let peer_run = wallet::run(wallet::Phase {
                endpoints: &Endpoints::peer(&peer.base),
                ca: &peer.ca,
                configuration: peer_configuration,
                dpop,
                offers: read_codes(&file),
                connections,
                server_pid: peer.pid(),
            })
            .await;
            let notary_run = notary_issuance_phase(
                &es256,
                notary_configuration,
                dpop,
                args.wallets,
                connections,
            )
            .await;
            let r = ratio(&notary_run, &peer_run, "issuances_per_sec");
            issuance.push(json!({"format": format, "dpop": dpop, "peer": peer_run,
                                 "notary": notary_run, "ratio": r}));
        }
    }
    drop(es256);
    drop(peer);

    let result = json!({
        "connections": connections,
        "redemptions_per_round": args.redemptions,
        "redemption_rounds": rounds,
        "redemption_ratio_median": median_ratio,
        "notary_eddsa": eddsa,
        "notary_postgresql": postgres,
        "issuance": issuance,
    });
    eprintln!("{}", summary(&result));
    result
}

/// The side-by-side table.
fn summary(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let n = |v: &Value| v.as_i64().unwrap_or(-1);
    let mut out = format!(
        "\nnotary against the peer, {} keep-alive TLS connections\n\n\
         redemptions (token-load.sh, wrk; fresh code and PIN per request)\n\
         {:<28} {:>10} {:>9} {:>9} {:>8}   {:>10} {:>9} {:>9} {:>8}   {:>6}\n",
        r["connections"],
        "",
        "peer/s",
        "p50 ms",
        "p99 ms",
        "non-200",
        "notary/s",
        "p50 ms",
        "p99 ms",
        "non-200",
        "ratio"
    );
    for round in r["redemption_rounds"].as_array().into_iter().flatten() {
        let (p, q) = (&round["peer"], &round["notary"]);
        out += &format!(
            "{:<28} {:>10.0} {:>9.1} {:>9.1} {:>8}   {:>10.0} {:>9.1} {:>9.1} {:>8}   {:>5.2}x\n",
            format!("round {} (ES256, SQLite)", round["round"]),
            f(&p["requests_per_sec"]),
            f(&p["p50_ms"]),
            f(&p["p99_ms"]),
            n(&p["non_200"]),
            f(&q["requests_per_sec"]),
            f(&q["p50_ms"]),
            f(&q["p99_ms"]),
            n(&q["non_200"]),
            f(&round["ratio"])
        );
    }
    out += &format!("median ratio: {:.2}x\n", f(&r["redemption_ratio_median"]));
    let e = &r["notary_eddsa"];
    out += &format!(
        "notary EdDSA, SQLite: {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, non-200 {}\n",
        f(&e["requests_per_sec"]),
        f(&e["p50_ms"]),
        f(&e["p99_ms"]),
        n(&e["non_200"])
    );
    let pg = &r["notary_postgresql"];
    if !pg.is_null() {
        out += &format!(
            "notary ES256, PostgreSQL: {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, non-200 {}: {:.0} % of SQLite's median\n",
            f(&pg["requests_per_sec"]),
            f(&pg["p50_ms"]),
            f(&pg["p99_ms"]),
            n(&pg["non_200"]),
            100.0 * f(&pg["share_of_sqlite"])
        );
        let two = &pg["two_instances"];
        let each: Vec<String> = two["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                format!(
                    "{:.0}/s (p99 {:.1} ms, non-200 {})",
                    f(&i["requests_per_sec"]),
                    f(&i["p99_ms"]),
                    n(&i["non_200"])
                )
            })
            .collect();
        out += &format!(
            "notary ES256, PostgreSQL, two instances at once: {} = {:.0}/s, {:.0} % of one instance's; machine idle {:.0} %\n",
            each.join(" + "),
            f(&two["requests_per_sec"]),
            100.0 * f(&two["share_of_one_instance"]),
            100.0 * f(&two["instances"][0]["machine_idle_share"])
        );
    }
    out += &format!(
        "\nwhole issuance (token, nonce, credential; fresh holder key and proof per wallet)\n\
         {:<22} {:>8} {:>8} {:>8} {:>6} {:>7}   {:>8} {:>8} {:>8} {:>6} {:>7}   {:>6}\n",
        "",
        "peer/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "client",
        "notary/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "client",
        "ratio"
    );
    for i in r["issuance"].as_array().into_iter().flatten() {
        let (p, q) = (&i["peer"], &i["notary"]);
        out += &format!(
            "{:<22} {:>8.0} {:>8.1} {:>8.1} {:>6} {:>6.2}c   {:>8.0} {:>8.1} {:>8.1} {:>6} {:>6.2}c   {:>5.2}x\n",
            format!(
                "{} DPoP {}",
                i["format"].as_str().unwrap_or(""),
                if i["dpop"] == true { "on" } else { "off" }
            ),
            f(&p["issuances_per_sec"]),
            f(&p["p50_ms"]),
            f(&p["p99_ms"]),
            n(&p["errors"]),
            f(&p["client_cpu_cores"]),
            f(&q["issuances_per_sec"]),
            f(&q["p50_ms"]),
            f(&q["p99_ms"]),
            n(&q["errors"]),
            f(&q["client_cpu_cores"]),
            f(&i["ratio"])
        );
    }
    out += "(client: the wallets' own CPU, in cores, beside the server's in the JSON)\n";
    out
}
