//! notary on a module behind a link: p11-kit's client module, talking over a
//! unix socket to a p11-kit server in front of SoftHSM2, the way a network
//! HSM's client library talks to its appliance. The link hides Ed25519,
//! AES-GCM and AES-CBC, so everything signs with ES256 and claims are sealed
//! with AES-CTR (made from AES-ECB) and HMAC. Under load the server side is stopped and started
//! again: requests in the gap fail fast with 500, `/readyz` says 503, no
//! offer is consumed twice or lost, and notary recovers without a restart.

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::app::{self, GRANT, TestApp, code_of};

const CLIENT_MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so";
const SERVER: &str = "/usr/libexec/p11-kit/p11-kit-server";
const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "link-test-pin-4711";

/// A SoftHSM2 token served by `p11-kit-server` on a unix socket.
struct Link {
    dir: TempDir,
    server: Option<Child>,
}

impl Link {
    /// Initialises an empty token "notary" (keys are made by `notary init`
    /// through the link) and starts serving it.
    fn new() -> Link {
        for (path, package) in [
            (CLIENT_MODULE, "p11-kit-modules"),
            (SERVER, "p11-kit"),
            (SOFTHSM, "softhsm2"),
        ] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: apt-get install {package} (scripts/test installs it)"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", dir.path().join("softhsm2.conf"))
            .args(["--init-token", "--free", "--label", "notary"])
            .args(["--pin", PIN, "--so-pin", "link-test-so-pin"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let pin_file = dir.path().join("user-pin");
        std::fs::write(&pin_file, PIN).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut link = Link { dir, server: None };
        link.start();
        link
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("p11-kit.sock")
    }

    fn pin_file(&self) -> PathBuf {
        self.dir.path().join("user-pin")
    }

    fn start(&mut self) {
        assert!(self.server.is_none());
        let child = Command::new(SERVER)
            .env("SOFTHSM2_CONF", self.dir.path().join("softhsm2.conf"))
            .args(["--foreground", "--provider", SOFTHSM, "--name"])
            .arg(self.socket())
            .arg("pkcs11:token=notary")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // The server forks a process per connection: a group of its
            // own lets `stop` end them all, as a crash of the host would.
            .process_group(0)
            .spawn()
            .unwrap();
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.socket().exists() {
            assert!(Instant::now() < deadline, "p11-kit-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server and every connection it serves, as a crash or a
    /// cut link would: no goodbye.
    fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn start_on(link: &Link) -> TestApp {
    let address = format!(
        "P11_KIT_SERVER_ADDRESS=unix:path={}",
        link.socket().display()
    );
    let pin_file = link.pin_file();
    app::builder()
        .alg("ES256")
        .init_args(&[
            "--audit-alg",
            "ES256",
            "--token",
            "notary",
            "--module",
            CLIENT_MODULE,
            "--pin-file",
            pin_file.to_str().unwrap(),
            "--module-env",
            &address,
            "--claims-mac-key",
            "notary-claims-mac-1",
            "--claims-cipher",
            "ctr",
        ])
        // Every wallet here shares one address, and failures in the gap
        // count against an address's budget (docs/operations.md).
        .set("flood", "max_failures", 100_000)
        .start()
        .await
}

fn stdout_of(app: &TestApp, args: &[&str]) -> String {
    let out = app.cli(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn set_up_through_the_link_uses_only_what_the_link_offers() {
    let link = Link::new();
    let app = start_on(&link).await;
    let check = stdout_of(&app, &["check"]);
    for line in [
        "access tokens: ES256",
        "audit checkpoints: ES256",
        "keyed hash: CKM_SHA256_HMAC",
        "claims encryption: AES-CTR from CKM_AES_ECB + CKM_SHA256_HMAC",
    ] {
        assert!(check.contains(line), "`{line}` not in:\n{check}");
    }
    // Every key was generated on the token through the link, none adopted.
    let generated: Vec<Value> = stdout_of(&app, &["audit", "export"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "key.generated")
        .collect();
    assert_eq!(generated.len(), 6, "{generated:?}");
    // A credential with sealed claims goes through end to end.
    app::probe_sd_jwt(&app);
}

/// What the load saw, per offer and in total.
#[derive(Default)]
struct Outcomes {
    /// 200 answers per offer index.
    tokens: BTreeMap<usize, usize>,
    /// Latency of every 500 answer.
    failures: Vec<Duration>,
    /// Any other status, with its body.
    unexpected: Vec<(u16, String)>,
}

#[tokio::test]
async fn the_link_drops_under_load_and_notary_recovers_without_a_restart() {
    const OFFERS: usize = 240;
    const WALLETS: usize = 8;
    let mut link = Link::new();
    let app = Arc::new(start_on(&link).await);
    let mut offers = Vec::with_capacity(OFFERS);
    for _ in 0..OFFERS {
        let offer = app
            .create_offer(json!({"credentials": ["UniversityDegree_jwt"], "transactionCode": true}))
            .await;
        offers.push((
            code_of(&offer),
            offer["transactionCode"].as_str().unwrap().to_owned(),
        ));
    }
    let offers = Arc::new(offers);
    let queue = Arc::new(Mutex::new((0..OFFERS).collect::<VecDeque<_>>()));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));

    let wallets: Vec<_> = (0..WALLETS)
        .map(|_| {
            let (app, offers, queue, outcomes) =
                (app.clone(), offers.clone(), queue.clone(), outcomes.clone());
            tokio::spawn(async move {
                let client = app.http();
                let deadline = Instant::now() + Duration::from_secs(90);
                while Instant::now() < deadline {
                    let Some(index) = queue.lock().unwrap().pop_front() else {
                        return;
                    };
                    let (code, pin) = &offers[index];
                    let sent = Instant::now();
                    let response = client
                        .post(app.url("/oid4vci/token"))
                        .form(&[
                            ("grant_type", GRANT),
                            ("pre-authorized_code", code),
                            ("tx_code", pin),
                        ])
                        .timeout(Duration::from_secs(20))
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    let body = response.text().await.unwrap();
                    {
                        let mut seen = outcomes.lock().unwrap();
                        match status {
                            200 => *seen.tokens.entry(index).or_default() += 1,
                            500 => seen.failures.push(sent.elapsed()),
                            _ => seen.unexpected.push((status, body)),
                        }
                    }
                    if status == 500 {
                        // Tried again later, as a wallet would.
                        queue.lock().unwrap().push_back(index);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();

    // Let the load run, then cut the link in the middle of it.
    let served = || outcomes.lock().unwrap().tokens.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while served() < OFFERS / 4 {
        assert!(Instant::now() < deadline, "no load got through the link");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    link.stop();
    let cut = Instant::now();
    let mut not_ready = None;
    while cut.elapsed() < Duration::from_secs(3) {
        let r = app.http().get(app.url("/readyz")).send().await.unwrap();
        if r.status() == 503 {
            not_ready = Some((cut.elapsed(), r.json::<Value>().await.unwrap()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (not_ready_after, readiness) = not_ready.expect("/readyz stayed 200 with the link down");
    assert_eq!(readiness["hsm"], "unavailable");
    // Requests signed just before the cut may still be answering; after a
    // second none can be, and none may be issued while the gap stays open.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let served_in_gap = served();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        served(),
        served_in_gap,
        "tokens were issued with the link down"
    );
    link.start();
    assert!(
        app.became_ready(&app.base, Duration::from_secs(10)).await,
        "notary did not recover: {}",
        app.log()
    );
    for wallet in wallets {
        wallet.await.unwrap();
    }

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    assert!(outcomes.unexpected.is_empty(), "{:?}", outcomes.unexpected);
    assert!(
        !outcomes.failures.is_empty(),
        "the load saw no failure: the gap was not under load"
    );
    let slowest = outcomes.failures.iter().max().unwrap();
    assert!(
        // The configured operation timeout is 5 s: a request that waited
        // for a dead link would take that long.
        *slowest < Duration::from_secs(3),
        "a request in the gap took {slowest:?}: failing is not fast"
    );
    // Every offer got exactly one token, and the database agrees.
    assert_eq!(outcomes.tokens.len(), OFFERS, "offers never redeemed");
    assert!(outcomes.tokens.values().all(|n| *n == 1));
    let redeemed = app::db_text(
        &app.config_path(),
        "SELECT CAST(COUNT(*) AS TEXT) FROM offers WHERE state = 'redeemed'",
    )
    .await;
    assert_eq!(redeemed, OFFERS.to_string());
    // A spent code stays spent after the recovery.
    let (code, pin) = &offers[0];
    let (status, body) = app
        .redeem_form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", code),
            ("tx_code", pin),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    let mut app = Arc::into_inner(app).expect("the wallets are done");
    assert!(
        app.child.try_wait().unwrap().is_none(),
        "notary exited: it must recover in place"
    );
    let log = app.log();
    assert!(log.contains("HSM session recovered"), "{log}");
    eprintln!(
        "link test: {} failures in the gap (slowest {slowest:?}), /readyz 503 after {not_ready_after:?}",
        outcomes.failures.len()
    );
    // The audit chain is whole.
    let verify = stdout_of(&app, &["audit", "verify"]);
    assert!(verify.starts_with("ok"), "{verify}");
}
