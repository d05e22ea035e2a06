//! The audit log is tamper-evident: `notary audit verify` checks the chain
//! and the signed checkpoints using only the audit public key, and detects
//! every kind of edit to a copy of the database or to an export.

use serde_json::json;
use std::path::{Path, PathBuf};

use crate::app::{self, GRANT, TestApp};

fn verify(config: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["audit", "verify", "--config", config.to_str().unwrap()];
    args.extend(extra);
    let out = app::run_cli(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Some history: offers, a redemption, a lockout, then a graceful stop
/// (which signs a checkpoint).
async fn history() -> TestApp {
    let mut app = app::builder()
        .set("issuance", "max_tx_code_attempts", 2)
        .set("audit", "checkpoint_file", "checkpoints.log")
        .start()
        .await;
    let (_, code, pin) = app.offer_with_pin().await;
    assert_eq!(
        app.redeem_form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &code),
            ("tx_code", &pin)
        ])
        .await
        .0,
        200
    );
    let (_, code, pin) = app.offer_with_pin().await;
    let wrong = if pin == "000000" { "111111" } else { "000000" };
    for _ in 0..2 {
        app.redeem_form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &code),
            ("tx_code", wrong),
        ])
        .await;
    }
    app.create_offer(json!({"credentials": ["UniversityDegree_jwt"]}))
        .await;
    app.stop();
    app
}

/// A copy of the set-up (and of its database) that a test may edit.
fn copy_of(app: &TestApp, name: &str) -> PathBuf {
    let dir = app.home.parent().unwrap().join(name);
    let status = std::process::Command::new("cp")
        .args(["-a", app.home.to_str().unwrap(), dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let url = app::database_url(&app.config_path());
    if !url.starts_with("sqlite:") {
        let copy = app::copy_postgres_database(&url);
        let config = dir.join("notary.toml");
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace(&url, &copy);
        std::fs::write(&config, text).unwrap();
    }
    dir
}

async fn sql(dir: &Path, statements: &[&str]) {
    app::db_exec(&dir.join("notary.toml"), statements).await
}

#[tokio::test]
async fn every_kind_of_tampering_is_detected() {
    let app = history().await;
    let (ok, text) = verify(&app.config_path(), &[]);
    assert!(ok, "{text}");
    assert!(
        text.contains("1 checkpoint(s)"),
        "the graceful stop signed a checkpoint: {text}"
    );
    // The same checkpoint was shipped to the file sink.
    let shipped = std::fs::read_to_string(app.home.join("checkpoints.log")).unwrap();
    assert!(
        shipped.contains("/notary-audit\n") && shipped.contains("\u{2014} "),
        "{shipped}"
    );
    let size: i64 = text
        .split("..")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(size >= 10, "{text}");

    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "changed",
            vec!["UPDATE audit_log SET details = '{\"attempts\":0}' WHERE seq = 5".into()],
            "audit entry 5: its content does not match its hash",
        ),
        (
            "deleted",
            vec!["DELETE FROM audit_log WHERE seq = 4".into()],
            "audit entry 5: expected entry 4",
        ),
        (
            "reordered",
            vec![
                "UPDATE audit_log SET seq = -3 WHERE seq = 3".into(),
                "UPDATE audit_log SET seq = 3 WHERE seq = 4".into(),
                "UPDATE audit_log SET seq = 4 WHERE seq = -3".into(),
            ],
            "audit entry 3",
        ),
        (
            "truncated",
            vec![format!("DELETE FROM audit_log WHERE seq > {}", size - 2)],
            "entries were removed",
        ),
        (
            "head cut off",
            vec!["DELETE FROM audit_log WHERE seq <= 2".into()],
            "audit entry 3: the chain does not start at entry 1",
        ),
    ];
    for (name, statements, expected) in cases {
        let dir = copy_of(&app, name);
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        sql(&dir, &statements).await;
        let (ok, text) = verify(&dir.join("notary.toml"), &[]);
        assert!(!ok, "{name} was not detected: {text}");
        assert!(text.contains(expected), "{name}: {text}");
    }

    // The tail removed together with its checkpoint row: the database alone
    // looks consistent, the checkpoint shipped off the host does not.
    let dir = copy_of(&app, "tail-and-checkpoint");
    sql(
        &dir,
        &[
            &format!("DELETE FROM audit_log WHERE seq > {}", size - 2),
            "DELETE FROM audit_checkpoints",
        ],
    )
    .await;
    let (ok, text) = verify(&dir.join("notary.toml"), &[]);
    assert!(
        ok,
        "without the shipped checkpoints this edit is invisible: {text}"
    );
    let shipped = app.home.join("checkpoints.log");
    let (ok, text) = verify(
        &dir.join("notary.toml"),
        &["--checkpoints", shipped.to_str().unwrap()],
    );
    assert!(!ok && text.contains("entries were removed"), "{text}");

    // A checkpoint signed by another key over the same head.
    let dir = copy_of(&app, "forged");
    let note = app::db_text(
        &dir.join("notary.toml"),
        "SELECT note FROM audit_checkpoints",
    )
    .await;
    let forged = resign_with_new_key(&note);
    sql(
        &dir,
        &[&format!("UPDATE audit_checkpoints SET note = '{forged}'")],
    )
    .await;
    let (ok, text) = verify(&dir.join("notary.toml"), &[]);
    assert!(
        !ok && text.contains("no valid signature by the audit key"),
        "{text}"
    );
}

/// Signs the same checkpoint body with a fresh Ed25519 key under the same name.
fn resign_with_new_key(note: &str) -> String {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
    use base64::Engine as _;
    use sha2::Digest as _;
    let (body, sigs) = note.split_once("\n\n").unwrap();
    let body = format!("{body}\n");
    let name = sigs
        .trim_start_matches('\u{2014}')
        .trim()
        .split(' ')
        .next()
        .unwrap();
    let pair = Ed25519KeyPair::generate().unwrap();
    let mut h = sha2::Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n\x01");
    h.update(pair.public_key().as_ref());
    let mut sig = h.finalize()[..4].to_vec();
    sig.extend_from_slice(pair.sign(body.as_bytes()).as_ref());
    format!(
        "{body}\n\u{2014} {name} {}\n",
        base64::engine::general_purpose::STANDARD.encode(sig)
    )
}

#[tokio::test]
async fn exports_verify_offline_and_edits_to_them_are_detected() {
    let app = history().await;
    let export = app.home.join("export.jsonl");
    let out = app.cli(&["audit", "export", "--output", export.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&export).unwrap();
    assert!(
        text.lines()
            .last()
            .unwrap()
            .contains("\"type\":\"checkpoint\"")
    );
    assert!(!text.contains("transactionCode"));

    // Offline: only the export and the verifier key file.
    let verifier = app.home.join("audit-key.pub");
    let (ok, out) = verify(
        &app.config_path(),
        &[
            "--export",
            export.to_str().unwrap(),
            "--verifier-key",
            verifier.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");

    let edited = app.home.join("edited.jsonl");
    std::fs::write(&edited, text.replacen("offer.locked", "offer.revoked", 1)).unwrap();
    let (ok, out) = verify(&app.config_path(), &["--export", edited.to_str().unwrap()]);
    assert!(!ok && out.contains("does not match its hash"), "{out}");
}

/// Someone with write access to the database rewrites an entry that a
/// signed checkpoint covers and recomputes every hash after it, so the
/// chain itself is consistent again. The server must not sign a checkpoint
/// over the rewritten history: it refuses, logs an alert and counts it; so
/// does `notary audit checkpoint`.
#[tokio::test]
async fn a_rewritten_history_is_never_signed() {
    let app = app::builder()
        .set("audit", "checkpoint_interval_secs", 1)
        .start()
        .await;
    app.create_offer(json!({"credentials": ["UniversityDegree_jwt"]}))
        .await;
    let count = || async {
        app::db_text(
            &app.config_path(),
            "SELECT CAST(COUNT(*) AS TEXT) FROM audit_checkpoints",
        )
        .await
    };
    let mut signed = String::new();
    for _ in 0..50 {
        signed = count().await;
        if signed != "0" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_ne!(signed, "0", "a checkpoint was signed: {}", app.log());

    rewrite_entry(&app, 2).await;
    app.create_offer(json!({"credentials": ["UniversityDegree_jwt"]}))
        .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(count().await, signed, "no checkpoint over the rewrite");
    let log = app.log();
    assert!(
        log.contains("ALERT: the audit log no longer extends its last signed checkpoint"),
        "{log}"
    );
    let metrics = app::metrics_text(&app).await;
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("notary_audit_checkpoints_refused_total "))
        .unwrap_or_else(|| panic!("no refusal metric: {metrics}"));
    assert!(refused.parse::<f64>().unwrap() >= 1.0, "{refused}");

    let out = app.cli(&["audit", "checkpoint"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("refusing to sign an audit checkpoint")
            && err.contains("no longer reproduces the hash signed"),
        "{err}"
    );
    assert_eq!(count().await, signed);
}

/// Changes entry `seq`'s details and recomputes the hash chain from it.
async fn rewrite_entry(app: &TestApp, seq: i64) {
    let out = app.cli(&["audit", "export"]);
    assert!(out.status.success());
    let postgres = !app::database_url(&app.config_path()).starts_with("sqlite:");
    let blob = |bytes: &[u8]| {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        if postgres {
            format!("decode('{hex}', 'hex')")
        } else {
            format!("X'{hex}'")
        }
    };
    let mut prev: Option<Vec<u8>> = None;
    let mut statements = Vec::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        if e["type"] != "entry" || e["seq"].as_i64().unwrap() < seq {
            continue;
        }
        let n = e["seq"].as_i64().unwrap();
        let details = if n == seq {
            "{\"rewritten\":true}".to_owned()
        } else {
            e["details"].as_str().unwrap().to_owned()
        };
        let prev_hash = prev.clone().unwrap_or_else(|| {
            let hex = e["prev_hash"].as_str().unwrap();
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect()
        });
        let hash = notary::audit::chain_hash(
            &prev_hash,
            n,
            e["at"].as_i64().unwrap(),
            e["event"].as_str().unwrap(),
            e["subject"].as_str(),
            &details,
        );
        statements.push(format!(
            "UPDATE audit_log SET details = '{}', prev_hash = {}, hash = {} WHERE seq = {n}",
            details.replace('\'', "''"),
            blob(&prev_hash),
            blob(&hash)
        ));
        prev = Some(hash.to_vec());
    }
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    app.sql(&statements).await;
}
