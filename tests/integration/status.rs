//! Credential status: every credential carries a status reference, the
//! served lists are signed by the credential key and decoded here by code of
//! the test's own (the independent libraries are in tests/interop), changes
//! reach the lists within the interval, revocation is final, concurrent
//! changes end consistent, and a crash before the next signature loses
//! nothing.

use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header, jwk::Jwk};
use serde_json::{Value, json};

use crate::app::{self, TestApp};
use crate::credentials::{SD_JWT, W3C, fresh_nonce, proof, redeemed, request};
use crate::wallet::WalletKey;

fn payload_of(jws: &str) -> Value {
    let part = jws.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Issues one credential of `configuration`; returns (its JWT or SD-JWT
/// issuer part, the offer id).
async fn issue(app: &TestApp, tag: &str, configuration: &str) -> (String, String) {
    let (offer, token) = redeemed(app, tag, None).await;
    let nonce = fresh_nonce(app).await;
    let body = json!({"credential_configuration_id": configuration,
                      "proofs": {"jwt": [proof(app, &WalletKey::p256(), &nonce, json!({}), json!({}))]}});
    let (status, answer, _) = request(app, token["access_token"].as_str().unwrap(), &body).await;
    assert_eq!(status, 200, "{answer}");
    let credential = answer["credentials"][0]["credential"].as_str().unwrap();
    (
        credential.split('~').next().unwrap().to_owned(),
        offer["id"].as_str().unwrap().to_owned(),
    )
}

/// The credential ids of an offer, through the admin API.
async fn credential_ids(app: &TestApp, offer: &str) -> Vec<Value> {
    let r = app
        .http()
        .get(app.url(&format!("/v1/credentials?offer={offer}")))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["credentials"]
        .as_array()
        .unwrap()
        .clone()
}

async fn act(app: &TestApp, key: &str, id: &str, action: &str) -> (u16, Value) {
    let r = app
        .http()
        .post(app.url(&format!("/v1/credentials/{id}/{action}")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Fetches a list and verifies its signature with `jsonwebtoken` against
/// the key notary publishes for it; returns (content type, payload).
async fn fetch_list(app: &TestApp, uri: &str) -> Option<(String, Value)> {
    let r = app.http().get(uri).send().await.unwrap();
    if r.status() == 404 {
        return None;
    }
    assert_eq!(r.status(), 200);
    let media = r.headers()["content-type"].to_str().unwrap().to_owned();
    let cache = r.headers()["cache-control"].to_str().unwrap().to_owned();
    assert!(cache.starts_with("public, max-age="), "{cache}");
    let jwt = r.text().await.unwrap();
    let header = decode_header(&jwt).unwrap();
    let kid = header.kid.unwrap();
    let jwk = if media == "application/statuslist+jwt" {
        assert_eq!(header.typ.as_deref(), Some("statuslist+jwt"));
        let meta = app.get_json("/.well-known/jwt-vc-issuer").await;
        meta["jwks"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .unwrap()
            .clone()
    } else {
        let doc = app.get_json("/.well-known/did.json").await;
        doc["verificationMethod"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == kid.as_str())
            .unwrap()["publicKeyJwk"]
            .clone()
    };
    let jwk: Jwk = serde_json::from_value(jwk).unwrap();
    let mut validation = Validation::new(header.alg);
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = decode::<Value>(&jwt, &DecodingKey::from_jwk(&jwk).unwrap(), &validation)
        .expect("the list verifies")
        .claims;
    Some((media, claims))
}

/// The status at `idx` of a Token Status List payload, decoded by the
/// draft's rules: zlib, `bits` per entry, least significant bits first.
fn token_status(payload: &Value, idx: usize) -> u8 {
    let bits = payload["status_list"]["bits"].as_u64().unwrap() as usize;
    let lst = URL_SAFE_NO_PAD
        .decode(payload["status_list"]["lst"].as_str().unwrap())
        .unwrap();
    let mut bytes = Vec::new();
    flate2::read::ZlibDecoder::new(&lst[..])
        .read_to_end(&mut bytes)
        .unwrap();
    let per_byte = 8 / bits;
    let byte = bytes[idx / per_byte];
    (byte >> ((idx % per_byte) * bits)) & ((1u16 << bits) - 1) as u8
}

/// The bit at `idx` of a Bitstring Status List credential, by the W3C
/// algorithm: multibase `u`, base64url, GZIP, bit 0 the most significant.
fn bitstring_status(payload: &Value, idx: usize) -> u8 {
    let subject = &payload["vc"]["credentialSubject"];
    let encoded = subject["encodedList"].as_str().unwrap();
    let gz = URL_SAFE_NO_PAD
        .decode(encoded.strip_prefix('u').unwrap())
        .unwrap();
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut bytes)
        .unwrap();
    assert!(bytes.len() * 8 >= 131_072);
    (bytes[idx / 8] >> (7 - idx % 8)) & 1
}

/// Polls `check` until it holds, for at most 10 s.
async fn eventually<F: AsyncFn() -> bool>(what: &str, check: F) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 10 s");
}

#[tokio::test]
async fn a_revocation_and_a_suspension_reach_the_served_lists() {
    let app = app::builder()
        .set("status", "sign_interval_secs", 1)
        .start()
        .await;
    let (sd_jwt, sd_offer) = issue(&app, "Status1", SD_JWT).await;
    let (w3c, w3c_offer) = issue(&app, "Status2", W3C).await;

    let reference = &payload_of(&sd_jwt)["status"]["status_list"];
    let sd_uri = reference["uri"].as_str().unwrap().to_owned();
    let sd_idx = reference["idx"].as_u64().unwrap() as usize;
    assert!(sd_uri.starts_with(&app.url("/status/")), "{sd_uri}");
    let entries = payload_of(&w3c)["vc"]["credentialStatus"].clone();
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let entry = |purpose: &str| {
        entries
            .iter()
            .find(|e| e["statusPurpose"] == purpose)
            .unwrap()
            .clone()
    };
    let (revocation, suspension) = (entry("revocation"), entry("suspension"));
    assert_eq!(revocation["type"], "BitstringStatusListEntry");
    let w3c_idx: usize = revocation["statusListIndex"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(suspension["statusListIndex"], revocation["statusListIndex"]);
    let revocation_uri = revocation["statusListCredential"]
        .as_str()
        .unwrap()
        .to_owned();
    let suspension_uri = suspension["statusListCredential"]
        .as_str()
        .unwrap()
        .to_owned();

    // Both lists are served and say "valid" at first.
    eventually("the first signature of the lists", async || {
        fetch_list(&app, &sd_uri).await.is_some()
            && fetch_list(&app, &revocation_uri).await.is_some()
            && fetch_list(&app, &suspension_uri).await.is_some()
    })
    .await;
    let (media, list) = fetch_list(&app, &sd_uri).await.unwrap();
    assert_eq!(media, "application/statuslist+jwt");
    assert_eq!(list["sub"], sd_uri);
    assert!(
        list["ttl"].as_i64().unwrap() > 0
            && list["exp"].as_i64().unwrap() > list["iat"].as_i64().unwrap()
    );
    assert_eq!(token_status(&list, sd_idx), 0);
    let (media, list) = fetch_list(&app, &revocation_uri).await.unwrap();
    assert_eq!(media, "application/vc+jwt");
    assert_eq!(
        list["vc"]["credentialSubject"]["statusPurpose"],
        "revocation"
    );
    assert_eq!(bitstring_status(&list, w3c_idx), 0);

    // Revoke the SD-JWT VC, suspend the W3C one.
    let sd_id = credential_ids(&app, &sd_offer).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let w3c_id = credential_ids(&app, &w3c_offer).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let auditor = app.new_api_key("auditor");
    assert_eq!(act(&app, &auditor, &sd_id, "revoke").await.0, 403);
    let (status, body) = act(&app, &app.admin_key, &sd_id, "revoke").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("revoked")),
        "{body}"
    );
    let (status, body) = act(&app, &app.admin_key, &w3c_id, "suspend").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("suspended")),
        "{body}"
    );
    eventually("the changes in the served lists", async || {
        let sd = fetch_list(&app, &sd_uri).await.unwrap().1;
        let s = fetch_list(&app, &suspension_uri).await.unwrap().1;
        token_status(&sd, sd_idx) == 1 && bitstring_status(&s, w3c_idx) == 1
    })
    .await;
    let r = fetch_list(&app, &revocation_uri).await.unwrap().1;
    assert_eq!(bitstring_status(&r, w3c_idx), 0, "suspended is not revoked");

    // Reinstating lifts the suspension; revocation is final.
    let (status, _) = act(&app, &app.admin_key, &w3c_id, "reinstate").await;
    assert_eq!(status, 200);
    eventually("the reinstatement in the served list", async || {
        let s = fetch_list(&app, &suspension_uri).await.unwrap().1;
        bitstring_status(&s, w3c_idx) == 0
    })
    .await;
    for action in ["reinstate", "suspend"] {
        let (status, body) = act(&app, &app.admin_key, &sd_id, action).await;
        assert_eq!(status, 409, "{action}: {body}");
    }
    let (status, body) = act(&app, &app.admin_key, &sd_id, "revoke").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("revoked")));

    // The auditor reads the history; every change is in the audit log.
    let r = app
        .http()
        .get(app.url(&format!("/v1/credentials/{w3c_id}")))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    let history: Value = r.json().await.unwrap();
    let steps: Vec<&str> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["to"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["suspended", "valid"], "{history}");
    let out = app.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_revocations_and_suspensions_end_in_one_state() {
    let app = Arc::new(
        app::builder()
            .set("status", "sign_interval_secs", 1)
            .set("server", "max_connections_per_address", 128)
            .start()
            .await,
    );
    let (sd_jwt, offer) = issue(&app, "Race1", SD_JWT).await;
    let id = credential_ids(&app, &offer).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let barrier = Arc::new(tokio::sync::Barrier::new(32));
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (app, barrier, id) = (app.clone(), barrier.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let action = ["suspend", "revoke", "reinstate"][i % 3];
            act(&app, &app.admin_key, &id, action).await
        }));
    }
    for t in tasks {
        let (status, _) = t.await.unwrap();
        assert!(status == 200 || status == 409, "{status}");
    }
    let record = credential_ids(&app, &offer).await[0].clone();
    assert_eq!(record["status"], "revoked", "revocation is final: {record}");
    let reference = &payload_of(&sd_jwt)["status"]["status_list"];
    let (uri, idx) = (
        reference["uri"].as_str().unwrap().to_owned(),
        reference["idx"].as_u64().unwrap() as usize,
    );
    eventually("the revocation in the served list", async || {
        fetch_list(&app, &uri)
            .await
            .is_some_and(|(_, l)| token_status(&l, idx) == 1)
    })
    .await;
}

#[tokio::test]
async fn a_crash_before_the_next_signature_loses_no_change() {
    let mut app = app::builder()
        .set("status", "sign_interval_secs", 3600)
        .start()
        .await;
    let (sd_jwt, offer) = issue(&app, "Crash1", SD_JWT).await;
    let reference = payload_of(&sd_jwt)["status"]["status_list"].clone();
    let (uri, idx) = (
        reference["uri"].as_str().unwrap().to_owned(),
        reference["idx"].as_u64().unwrap() as usize,
    );
    // A new list is signed at once, whatever the interval.
    eventually("the new list's first signature", async || {
        fetch_list(&app, &uri).await.is_some()
    })
    .await;
    let id = credential_ids(&app, &offer).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(act(&app, &app.admin_key, &id, "revoke").await.0, 200);
    // Not re-signed yet: the interval is an hour.
    let (_, list) = fetch_list(&app, &uri).await.unwrap();
    assert_eq!(token_status(&list, idx), 0);
    app.kill_and_restart().await;
    // The restarted signer finds the list behind its version.
    eventually("the revocation after the crash", async || {
        fetch_list(&app, &uri)
            .await
            .is_some_and(|(_, l)| token_status(&l, idx) == 1)
    })
    .await;
}

#[tokio::test]
async fn indexes_are_spread_over_the_list_and_never_repeat() {
    let app = app::builder().start().await;
    let mut indexes = Vec::new();
    for i in 0..8 {
        let (sd_jwt, _) = issue(&app, &format!("Spread{i}"), SD_JWT).await;
        indexes.push(
            payload_of(&sd_jwt)["status"]["status_list"]["idx"]
                .as_u64()
                .unwrap(),
        );
    }
    let mut sorted = indexes.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), indexes.len(), "{indexes:?}");
    assert!(indexes.iter().all(|i| *i < 131_072));
    // Issue order is not index order.
    assert_ne!(indexes, sorted, "{indexes:?}");
    let out = app.cli(&["credentials", "list", "--user-id", "nobody"]);
    assert!(out.status.success());
}

#[tokio::test]
async fn the_cli_lists_and_changes_status_and_revocation_stays_final() {
    let app = app::builder().start().await;
    let (_, offer) = issue(&app, "Cli1", W3C).await;
    let run = |args: &[&str]| {
        let out = app.cli(args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, listed, err) = run(&["credentials", "list", "--offer", &offer]);
    assert!(ok, "{err}");
    let id = listed.split_whitespace().next().unwrap().to_owned();
    assert!(
        listed.contains("valid") && listed.contains("jwt_vc_json"),
        "{listed}"
    );
    let (ok, out, _) = run(&["credentials", "suspend", &id]);
    assert!(ok && out.contains("suspended"), "{out}");
    let (ok, out, _) = run(&["credentials", "reinstate", &id]);
    assert!(ok && out.contains(" valid "), "{out}");
    let (ok, out, _) = run(&["credentials", "revoke", "--offer", &offer]);
    assert!(ok && out.contains("revoked 1 credentials"), "{out}");
    let (ok, _, err) = run(&["credentials", "suspend", &id]);
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("revocation is final"), "{err}");
    let audit = app::audit_rows(&app.config_path()).await;
    assert_eq!(
        audit.matches("credential.status_changed").count(),
        3,
        "{audit}"
    );
}
