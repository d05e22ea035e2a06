//! No code or PIN is left in the server's memory once the connections that
//! carried them have closed and the workers are idle.
//!
//! The test reads the live server's memory (`/proc/PID/mem` over the
//! readable ranges of `/proc/PID/maps`; root is needed, as in CI) and looks
//! for every code and PIN, whole or as any 12-character piece. Two controls
//! keep it honest: a canary on a connection that is still open must be found
//! (the scanner works), and the same flow against `notary-unwiped`, the
//! binary with wiping switched off, must leave secrets behind (the wiping is
//! what removes them).

use std::collections::HashSet;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::app::{self, GRANT, TestApp};

/// Length of the pieces looked for; PINs in this test have exactly this length.
const PIECE: usize = 12;

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Every readable mapping of `pid`, concatenated with a separator.
fn read_memory(pid: u32) -> Vec<u8> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.contains("[vvar") || line.contains("[vsyscall]") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut buf = vec![0u8; (end - start) as usize];
        if mem.read_exact_at(&mut buf, start).is_ok() {
            out.extend_from_slice(&buf);
            out.push(0);
        }
    }
    out
}

/// How many of `secrets` occur in `memory`, whole or as a `PIECE`-long piece.
/// Only runs of base64url characters can hold one, so only those are checked.
fn count_found(memory: &[u8], secrets: &[String]) -> usize {
    let mut owner: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
    for (i, s) in secrets.iter().enumerate() {
        for piece in s.as_bytes().windows(PIECE) {
            owner.insert(piece, i);
        }
    }
    let mut found = HashSet::new();
    let mut run_start = None;
    for (i, &b) in memory.iter().chain(std::iter::once(&0)).enumerate() {
        match (is_token_byte(b), run_start) {
            (true, None) => run_start = Some(i),
            (false, Some(start)) => {
                if i - start >= PIECE {
                    for piece in memory[start..i].windows(PIECE) {
                        if let Some(&who) = owner.get(piece) {
                            found.insert(who);
                        }
                    }
                }
                run_start = None;
            }
            _ => {}
        }
    }
    found.len()
}

/// Creates and redeems 50 offers with PINs and claims, and takes the
/// credential of every fifth, each on its own connection that is closed
/// afterwards; returns every code, PIN and claim value.
async fn redeem_fifty(app: &TestApp) -> Vec<String> {
    let mut secrets = Vec::new();
    for i in 0..50 {
        // A claim value as unique as a code, the same raw and in JSON.
        let claim = format!("claim{}{}", crate::wallet::jti(), crate::wallet::jti())
            .replace(['-', '_'], "x");
        let admin = app.client_from(None);
        let offer: serde_json::Value = admin
            .post(app.url("/v1/openid/offers/pre-authorized"))
            .bearer_auth(&app.admin_key)
            .json(&json!({"credentials": ["UniversityDegree_jwt"],
                          "transactionCode": {"length": PIECE, "input_mode": "text"},
                          "claims": {"UniversityDegree_jwt": {"given_name": claim}}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        drop(admin);
        let code = app::code_of(&offer);
        let pin = offer["transactionCode"].as_str().unwrap().to_owned();
        // These secrets read the same raw, URL-encoded and as JSON strings,
        // so the raw search covers every encoding they travelled in.
        for s in [&code, &pin] {
            assert_eq!(
                form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>(),
                *s
            );
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""));
        }
        let wallet = app.client_from(None);
        let request = wallet.post(app.url("/oid4vci/token"));
        let request = if i % 2 == 0 {
            request.form(&[
                ("grant_type", GRANT),
                ("pre-authorized_code", &code),
                ("tx_code", &pin),
            ])
        } else {
            request.json(&json!({"grant_type": GRANT, "pre-authorized_code": code, "tx_code": pin}))
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let token: serde_json::Value = response.json().await.unwrap();
        drop(wallet);
        if i % 5 == 0 {
            take_credential(app, &token).await;
        }
        secrets.push(code);
        secrets.push(pin);
        secrets.push(claim);
    }
    secrets
}

/// Fetches the credential a token grants, on a connection of its own.
async fn take_credential(app: &TestApp, token: &serde_json::Value) {
    let wallet = app.client_from(None);
    let key = crate::wallet::WalletKey::p256();
    let nonce = token["c_nonce"].as_str().unwrap();
    let proof = crate::credentials::proof(app, &key, nonce, json!({}), json!({}));
    let r = wallet
        .post(app.url("/oid4vci/credential"))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .json(
            &json!({"credential_configuration_id": "UniversityDegree_jwt",
                      "proofs": {"jwt": [proof]}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await.unwrap();
}

/// Holds a request open on a TLS connection: its bytes stay in the server's
/// buffers, so the scanner must find the canary.
fn open_canary_connection(app: &TestApp, canary: &str) -> std::process::Child {
    let port = app.base.rsplit(':').next().unwrap();
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let partial = format!(
        "POST /oid4vci/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 4000\r\n\r\ngrant_type={GRANT}&pre-authorized_code={canary}"
    );
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(partial.as_bytes())
        .unwrap();
    child.stdin.as_mut().unwrap().flush().unwrap();
    child
}

/// The `Environment=` settings of the packaged systemd unit but the log
/// level (the allocator's tunables among them): the promise is about the
/// server as it is shipped.
fn unit_environment() -> Vec<(String, String)> {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/notary.service"),
    )
    .unwrap();
    unit.lines()
        .filter_map(|line| line.strip_prefix("Environment="))
        .filter_map(|setting| setting.split_once('='))
        .filter(|(key, _)| *key != "NOTARY_LOG")
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

async fn run_experiment(binary: Option<PathBuf>) -> (usize, usize, bool) {
    let mut builder = app::builder();
    for (key, value) in &unit_environment() {
        builder = builder.env(key, value);
    }
    if let Some(binary) = binary {
        builder = builder.binary(binary);
    }
    let app = builder.start().await;
    let secrets = redeem_fifty(&app).await;
    let canary = format!("canary{}", app::code_of(&app.offer_with_pin().await.0));
    let mut held = open_canary_connection(&app, &canary);
    // Let the server finish closing connections and its workers go idle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let memory = read_memory(app.child.id());
    let _ = held.kill();
    let _ = held.wait();
    let canary_found = count_found(&memory, &[canary]) == 1;
    (count_found(&memory, &secrets), secrets.len(), canary_found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_code_or_pin_survives_in_server_memory() {
    let (found, total, canary) = run_experiment(None).await;
    assert!(
        canary,
        "control: a request on an open connection must be found"
    );
    assert_eq!(
        found, 0,
        "{found} of {total} codes and PINs found in the server's memory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_wiping_the_same_flow_leaves_secrets_behind() {
    let unwiped = PathBuf::from(app::BIN)
        .parent()
        .unwrap()
        .join("examples/notary-unwiped");
    assert!(
        unwiped.exists(),
        "cargo test builds examples/notary-unwiped"
    );
    let (found, total, canary) = run_experiment(Some(unwiped)).await;
    assert!(canary);
    assert!(
        found > 0,
        "control: without wiping, secrets must be found (found {found} of {total})"
    );
    eprintln!("unwiped control: {found} of {total} codes and PINs found");
}

#[tokio::test]
async fn the_server_cannot_dump_core() {
    let app = app::builder().start().await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", app.child.id())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
}
