//! Key lifecycle: rotation picked up by a running server, retirement rules,
//! custody evidence from the token, and the audit trail of it all.

use std::time::Duration;

use jsonwebtoken::{DecodingKey, Validation, decode, decode_header, jwk::JwkSet};
use serde_json::{Value, json};

use crate::app::{self, GRANT, TestApp};

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn token(app: &TestApp) -> String {
    let offer = app
        .create_offer(json!({"credentials": ["UniversityDegree_jwt"], "transactionCode": false}))
        .await;
    let (status, body) = app
        .redeem_form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &app::code_of(&offer)),
        ])
        .await;
    assert_eq!(status, 200);
    body["access_token"].as_str().unwrap().to_owned()
}

async fn kids(app: &TestApp) -> Vec<String> {
    let jwks = app.jwks().await;
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Verifies with `jsonwebtoken` against the JWKS as served now.
async fn verifies(app: &TestApp, token: &str) -> bool {
    let header = decode_header(token).unwrap();
    let jwks: JwkSet = serde_json::from_value(app.jwks().await).unwrap();
    let Some(jwk) = jwks.find(header.kid.as_deref().unwrap()) else {
        return false;
    };
    let mut v = Validation::new(header.alg);
    v.set_audience(&[app.base.as_str()]);
    decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &v).is_ok()
}

async fn wait_for<F: AsyncFn() -> bool>(what: &str, condition: F) {
    for _ in 0..100 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn rotation_reaches_the_running_server_and_retirement_waits_for_live_tokens() {
    let app = app::builder().set("keys", "refresh_secs", 1).start().await;
    let old_token = token(&app).await;
    let old_kid = decode_header(&old_token).unwrap().kid.unwrap();
    assert_eq!(kids(&app).await, vec![old_kid.clone()]);

    // A generated key is pending: not published, not signing.
    let out = ok(app.cli(&["keys", "generate", "--alg", "ES256", "--label", "spare-1"]));
    assert!(out.contains("pending"), "{out}");

    let out = ok(app.cli(&["keys", "rotate", "--alg", "ES256"]));
    let new_kid = out
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    wait_for("the new key in the JWKS", async || {
        kids(&app).await.contains(&new_kid)
    })
    .await;
    let published = kids(&app).await;
    assert_eq!(
        published.len(),
        2,
        "active + retiring, not the pending one: {published:?}"
    );
    assert!(published.contains(&old_kid));

    let new_token = token(&app).await;
    let header = decode_header(&new_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(new_kid.as_str()));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert!(verifies(&app, &new_token).await);
    assert!(
        verifies(&app, &old_token).await,
        "the old key still verifies its live tokens"
    );

    // Retiring is refused while tokens it signed may be live; forced, it leaves the JWKS.
    let refused = app.cli(&["keys", "retire", &old_kid]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("may be live until"));
    let active = app.cli(&["keys", "retire", &new_kid]);
    let why = String::from_utf8_lossy(&active.stderr);
    assert!(why.contains("rotate first"), "{why}");
    ok(app.cli(&["keys", "retire", &old_kid, "--force"]));
    wait_for("the retired key to leave the JWKS", async || {
        !kids(&app).await.contains(&old_kid)
    })
    .await;
    assert!(!verifies(&app, &old_token).await);

    let list = ok(app.cli(&["keys", "list"]));
    assert!(
        list.contains(&format!("{old_kid}\tnotary-signing-1\tEdDSA\tretired")),
        "{list}"
    );
    assert!(list.contains("spare-1\tES256\tpending"), "{list}");

    let events: Vec<String> = audit_events(&app).await;
    for e in [
        "key.generated",
        "key.rotated",
        "key.retired",
        "token.issued",
    ] {
        assert!(events.iter().any(|x| x == e), "{e} missing from {events:?}");
    }
}

async fn audit_events(app: &TestApp) -> Vec<String> {
    let body: Value = app
        .http()
        .get(app.url("/v1/audit?limit=1000"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn custody_report_reads_the_token_and_counts_signatures() {
    let app = app::builder().start().await;
    for _ in 0..3 {
        token(&app).await;
    }
    let report: Value =
        serde_json::from_str(&ok(app.cli(&["keys", "custody-report", "--json"]))).unwrap();
    assert_eq!(report["token"]["manufacturer"], "SoftHSM project");
    assert!(!report["token"]["serial"].as_str().unwrap().is_empty());
    let keys = report["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 5, "signing, credential, audit, hashing, claims");
    let signing = &keys[0];
    assert_eq!(signing["role"], "signing");
    assert_eq!(signing["signatures"], 3);
    assert_eq!(
        signing["custody"]["key_gen_mechanism"],
        "CKM_EC_EDWARDS_KEY_PAIR_GEN"
    );
    assert_eq!(signing["public_key_sha256"].as_str().unwrap().len(), 64);
    for key in keys {
        let attrs: std::collections::HashMap<String, Value> = key["custody"]["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["name"].as_str().unwrap().to_owned(), a["value"].clone()))
            .collect();
        for (name, want) in [
            ("CKA_LOCAL", true),
            ("CKA_NEVER_EXTRACTABLE", true),
            ("CKA_ALWAYS_SENSITIVE", true),
            ("CKA_EXTRACTABLE", false),
            ("CKA_SENSITIVE", true),
            ("CKA_MODIFIABLE", false),
        ] {
            assert_eq!(
                attrs[name],
                json!(want),
                "{name} of {}",
                key["custody"]["label"]
            );
        }
        assert!(
            key["custody"]["id"]
                .as_str()
                .is_some_and(|id| id.len() == 16)
        );
    }
    // The auditor role reads the same over HTTP; issuers may not.
    let auditor = app.new_api_key("auditor");
    let r = app
        .http()
        .get(app.url("/v1/custody"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let served: Value = r.json().await.unwrap();
    assert_eq!(served["keys"][0]["kid"], signing["kid"]);
    let issuer = app.new_api_key("issuer");
    let r = app
        .http()
        .get(app.url("/v1/custody"))
        .bearer_auth(&issuer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = app
        .http()
        .get(app.url("/v1/audit?event=token.issued"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["entries"].as_array().unwrap().len(), 3);
    let text = body.to_string();
    assert!(!text.contains("access_token"));
}

#[tokio::test]
async fn retiring_keys_leave_the_jwks_when_their_tokens_have_expired() {
    let app = app::builder()
        .set("keys", "refresh_secs", 1)
        .set("issuance", "access_token_ttl_secs", 1)
        .start()
        .await;
    let old_kid = kids(&app).await.remove(0);
    // Activate a key generated earlier (pending) rather than a fresh one.
    let out = ok(app.cli(&["keys", "generate", "--alg", "ES256"]));
    let pending = out.split_whitespace().nth(1).unwrap().to_owned();
    ok(app.cli(&["keys", "rotate", "--kid", &pending]));
    wait_for("the activated key", async || {
        kids(&app).await.contains(&pending)
    })
    .await;
    let meta: Value = app
        .http()
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["access_token_signing_alg_values_supported"],
        json!(["ES256", "EdDSA"])
    );
    // ttl 1 s + refresh 1 s + 1 s: then the old key can verify nothing live.
    wait_for("the old key to drop out", async || {
        !kids(&app).await.contains(&old_kid)
    })
    .await;
    ok(app.cli(&["keys", "retire", &old_kid]));
}

/// A set-up whose key table is empty (a token prepared by a key ceremony)
/// gets its first key from `keys rotate`.
#[tokio::test]
async fn the_first_key_can_be_recorded_with_rotate() {
    let app = app::builder().start().await;
    app.sql(&["DELETE FROM signing_keys"]).await;
    let out = app.cli(&["check"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no active signing key: run `notary keys rotate`")
    );
    let out = ok(app.cli(&["keys", "rotate"]));
    assert!(out.starts_with("active: "), "{out}");
    assert!(
        !out.contains("retiring"),
        "there was no previous key: {out}"
    );
    ok(app.cli(&["check"]));
}

/// A kid is base64url and may start with '-'; the CLI must not read it as a flag.
#[tokio::test]
async fn kids_starting_with_a_hyphen_are_taken_as_kids() {
    let app = app::builder().start().await;
    for args in [
        &["keys", "retire", "-3xyz"][..],
        &["keys", "rotate", "--kid", "-3xyz"][..],
    ] {
        let out = app.cli(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("kid -3xyz"), "{args:?}: {err}");
    }
}

/// Runs a shell script against the app's token (`SOFTHSM2_CONF` set, the
/// user PIN in `$PIN_FILE`) in a scratch directory; fails the test if it fails.
fn on_token(app: &TestApp, script: &str) {
    let work = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(work.path())
        .env("SOFTHSM2_CONF", app.home.join("softhsm2.conf"))
        .env("PIN_FILE", app.home.join("hsm/user-pin"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Anyone who can reach the token may create public objects on it without
/// logging in. Objects planted with the labels of the signing, hashing and
/// audit keys (a public key of another key pair, a public AES key, a data
/// object) must not stop a start-up, a key reload or a checkpoint: keys are
/// found by class, key type, label and `CKA_PRIVATE=true`, and a public key
/// shared by a label is the one that verifies the private key's signature.
#[tokio::test]
async fn objects_planted_without_login_stop_neither_start_up_nor_reload() {
    let mut app = app::builder().set("keys", "refresh_secs", 1).start().await;
    let before = token(&app).await;
    on_token(
        &app,
        "m=/usr/lib/softhsm/libsofthsm2.so
         openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out k.pem 2>/dev/null
         openssl pkey -in k.pem -pubout -outform DER -out pub.der
         head -c 32 /dev/urandom > secret.bin
         for label in notary-signing-1 notary-hmac-1 notary-audit-1 notary-claims-1; do
           pkcs11-tool --module $m --token-label notary --write-object pub.der --type pubkey \
             --label $label >/dev/null
           pkcs11-tool --module $m --token-label notary --write-object secret.bin --type secrkey \
             --key-type AES:32 --label $label >/dev/null
           pkcs11-tool --module $m --token-label notary --write-object secret.bin --type data \
             --label $label >/dev/null
         done
         test $(pkcs11-tool --module $m --token-label notary --list-objects 2>/dev/null \
           | grep -c 'label: *notary-signing-1') -ge 3",
    );

    // Start-up: `check`, and the server itself after a restart.
    ok(app.cli(&["check"]));
    app.kill_and_restart().await;
    let after = token(&app).await;
    assert!(verifies(&app, &before).await && verifies(&app, &after).await);
    assert_eq!(
        decode_header(&before).unwrap().kid,
        decode_header(&after).unwrap().kid,
        "still the real key"
    );

    // A reload: the ring is rebuilt, the planted twin of the retiring key included.
    let out = ok(app.cli(&["keys", "rotate", "--alg", "ES256"]));
    let new_kid = out.split_whitespace().nth(1).unwrap().to_owned();
    wait_for("the rotated key in the JWKS", async || {
        kids(&app).await.contains(&new_kid)
    })
    .await;
    assert!(
        verifies(&app, &before).await,
        "the old key is still published"
    );
    assert!(!app.log().contains("could not reload signing keys"));

    // A checkpoint reads the audit public key.
    let out = ok(app.cli(&["audit", "checkpoint"]));
    assert!(out.contains("checkpoint signed"), "{out}");
}
