//! The credential endpoint end to end: both formats, verified here with an
//! independent JOSE library against the keys notary publishes; key proofs
//! and tokens of every bad kind; exactly-once issuance; notifications; the
//! authorization-server-only mode.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header, jwk::Jwk};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::app::{self, GRANT, TestApp, code_of};
use crate::wallet::{WalletKey, now};

pub const SD_JWT: &str = "UniversityDegree_sd_jwt";
pub const W3C: &str = "UniversityDegree_jwt";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Claims with values easy to find in logs, the database and the audit log.
pub fn degree_claims(tag: &str) -> Value {
    json!({
        SD_JWT: {"given_name": format!("Given-{tag}"), "family_name": format!("Family-{tag}"),
                 "degree": format!("Degree-{tag}"), "graduation_year": 2024},
        W3C: {"given_name": format!("Given-{tag}"), "degree": format!("Degree-{tag}")},
    })
}

/// An offer for both configurations (no PIN), redeemed: (offer, token body).
pub async fn redeemed(app: &TestApp, tag: &str, dpop: Option<&WalletKey>) -> (Value, Value) {
    let offer = app
        .create_offer(json!({"credentials": [SD_JWT, W3C], "transactionCode": false, "claims": degree_claims(tag)}))
        .await;
    let mut request = app.http().post(app.url("/oid4vci/token")).form(&[
        ("grant_type", GRANT),
        ("pre-authorized_code", code_of(&offer).as_str()),
    ]);
    if let Some(key) = dpop {
        request = request.header("DPoP", key.dpop(&app.url("/oid4vci/token"), json!({})));
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), 200);
    (offer, r.json().await.unwrap())
}

pub async fn fresh_nonce(app: &TestApp) -> String {
    let r = app
        .http()
        .post(app.url("/oid4vci/nonce"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    r.json::<Value>().await.unwrap()["c_nonce"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A key proof by `key` for `nonce`, with `header`/`claims` overrides.
pub fn proof(app: &TestApp, key: &WalletKey, nonce: &str, header: Value, claims: Value) -> String {
    let mut h = json!({"typ": "openid4vci-proof+jwt", "jwk": key.jwk});
    for (k, v) in header.as_object().unwrap() {
        if v.is_null() {
            h.as_object_mut().unwrap().remove(k);
        } else {
            h[k] = v.clone();
        }
    }
    let mut c = json!({"aud": app.base, "iat": now(), "nonce": nonce});
    for (k, v) in claims.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    key.sign(h, &c)
}

/// POSTs a credential request with a Bearer token: (status, body, headers).
pub async fn request(
    app: &TestApp,
    token: &str,
    body: &Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = app
        .http()
        .post(app.url("/oid4vci/credential"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        headers,
    )
}

fn access_token(token_body: &Value) -> String {
    token_body["access_token"].as_str().unwrap().to_owned()
}

/// Verifies a compact JWS with `jsonwebtoken` against `jwk`; returns claims.
fn verify_jws(jws: &str, jwk: &Value) -> Value {
    let header = decode_header(jws).unwrap();
    let jwk: Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let key = DecodingKey::from_jwk(&jwk).unwrap();
    let mut validation = Validation::new(header.alg);
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    decode::<Value>(jws, &key, &validation)
        .expect("the credential verifies")
        .claims
}

#[tokio::test]
async fn an_sd_jwt_vc_is_bound_to_the_proven_key_discloses_selectively_and_verifies() {
    let app = app::builder().start().await;
    let (offer, token) = redeemed(&app, "Sd1", None).await;
    let wallet = WalletKey::p256();
    let nonce = fresh_nonce(&app).await;
    let body = json!({"credential_configuration_id": SD_JWT,
                      "proofs": {"jwt": [proof(&app, &wallet, &nonce, json!({}), json!({}))]}});
    let (status, answer, headers) = request(&app, &access_token(&token), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(headers["cache-control"], "no-store");
    let sd_jwt = answer["credentials"][0]["credential"].as_str().unwrap();
    let notification_id = answer["notification_id"].as_str().unwrap();

    // Issuer-signed JWT, then disclosures, then the empty key-binding slot.
    let parts: Vec<&str> = sd_jwt.split('~').collect();
    assert_eq!(parts.last(), Some(&""), "ends with ~");
    let jws = parts[0];
    let header = decode_part(jws.split('.').next().unwrap());
    assert_eq!(header["typ"], "dc+sd-jwt");
    assert_eq!(header["alg"], "ES256");
    let issuer_meta = app.get_json("/.well-known/jwt-vc-issuer").await;
    assert_eq!(issuer_meta["issuer"], app.base);
    let jwk = issuer_meta["jwks"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the header's kid is published at /.well-known/jwt-vc-issuer")
        .clone();
    let payload = verify_jws(jws, &jwk);
    assert_eq!(payload["iss"], app.base);
    assert_eq!(payload["vct"], app.url("/credentials/university-degree"));
    assert_eq!(payload["cnf"]["jwk"], wallet.jwk);
    assert_eq!(payload["_sd_alg"], "sha-256");
    assert!(payload["exp"].as_i64().unwrap() > payload["iat"].as_i64().unwrap());
    // graduation_year is configured sd = "never": in the clear.
    assert_eq!(payload["graduation_year"], 2024);
    assert!(payload.get("given_name").is_none(), "{payload}");
    assert!(!payload.to_string().contains("Given-Sd1"));

    let digests: Vec<&str> = payload["_sd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    let mut disclosed = serde_json::Map::new();
    for disclosure in &parts[1..parts.len() - 1] {
        let digest = b64(&sha2::Sha256::digest(disclosure.as_bytes()));
        assert!(digests.contains(&digest.as_str()), "digest of {disclosure}");
        let array = decode_part(disclosure);
        assert_eq!(array.as_array().unwrap().len(), 3);
        disclosed.insert(array[1].as_str().unwrap().to_owned(), array[2].clone());
    }
    assert_eq!(disclosed["given_name"], "Given-Sd1");
    assert_eq!(disclosed["family_name"], "Family-Sd1");
    assert_eq!(disclosed["degree"], "Degree-Sd1");

    // A claim the format sets itself is refused when the offer is made.
    let r = app
        .http()
        .post(app.url("/v1/openid/offers/pre-authorized"))
        .bearer_auth(&app.admin_key)
        .json(&json!({"credentials": [SD_JWT], "claims": {SD_JWT: {
            "given_name": "A", "family_name": "B", "vct": "https://evil.example/other"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let refusal: Value = r.json().await.unwrap();
    assert!(
        refusal["error_description"]
            .as_str()
            .unwrap()
            .contains("\"vct\""),
        "{refusal}"
    );

    // The same token cannot have the same credential again.
    let nonce = fresh_nonce(&app).await;
    let body = json!({"credential_configuration_id": SD_JWT,
                      "proofs": {"jwt": [proof(&app, &WalletKey::p256(), &nonce, json!({}), json!({}))]}});
    let (status, again, _) = request(&app, &access_token(&token), &body).await;
    assert_eq!(
        (status, again["error"].as_str()),
        (400, Some("credential_request_denied"))
    );

    // The notification is recorded; the audit log names the credential by
    // its hash and never holds a claim value.
    let r = app
        .http()
        .post(app.url("/oid4vci/notification"))
        .bearer_auth(access_token(&token))
        .json(&json!({"notification_id": notification_id, "event": "credential_accepted"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Notifications are bounded per issuance (each is an audit entry), and
    // only the token the credential went to may send them.
    let notify = |token: String, event: &'static str| {
        app.http()
            .post(app.url("/oid4vci/notification"))
            .bearer_auth(token)
            .json(&json!({"notification_id": notification_id, "event": event,
                          "event_description": "stored nowhere"}))
            .send()
    };
    for _ in 0..4 {
        let r = notify(access_token(&token), "credential_deleted")
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let r = notify(access_token(&token), "credential_deleted")
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "invalid_notification_request"
    );
    let (_, other) = redeemed(&app, "Sd1other", None).await;
    let r = notify(access_token(&other), "credential_accepted")
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "invalid_notification_id"
    );
    let r = notify(access_token(&token), "credential_exploded")
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "invalid_notification_request"
    );
    let audit = app::audit_rows(&app.config_path()).await;
    let sha: String = sha2::Sha256::digest(sd_jwt.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        audit.contains("credential.issued") && audit.contains(&sha),
        "{audit}"
    );
    assert!(audit.contains("credential.notification") && audit.contains("credential_accepted"));
    assert!(
        !audit.contains("stored nowhere"),
        "the wallet's description is not kept"
    );
    assert!(
        !audit.contains("Sd1"),
        "a claim value reached the audit log"
    );
    // Only the other configuration's claims are still sealed.
    let sealed = app::db_text(
        &app.config_path(),
        &format!(
            "SELECT claims_sealed FROM offers WHERE id = '{}'",
            offer["id"].as_str().unwrap()
        ),
    )
    .await;
    assert!(sealed.contains(W3C) && !sealed.contains(SD_JWT), "{sealed}");
    assert!(!app.log().contains("Sd1"), "a claim value reached the log");
}

#[tokio::test]
async fn a_jwt_vc_json_credential_names_the_did_web_issuer_and_the_did_jwk_holder() {
    let app = app::builder().start().await;
    let (_, token) = redeemed(&app, "W3c1", None).await;
    let wallet = WalletKey::ed25519();
    let did_jwk = format!("did:jwk:{}", b64(wallet.jwk.to_string().as_bytes()));
    // The holder key named by a did:jwk kid, as dataspace wallets send it.
    let nonce = token["c_nonce"].as_str().unwrap().to_owned();
    let p = proof(
        &app,
        &wallet,
        &nonce,
        json!({"jwk": null, "kid": format!("{did_jwk}#0")}),
        json!({}),
    );
    let body = json!({"credential_identifier": W3C, "proof": {"proof_type": "jwt", "jwt": p}});
    let (status, answer, _) = request(&app, &access_token(&token), &body).await;
    assert_eq!(status, 200, "{answer}");
    // A single `proof` (earlier drafts) also gets the single `credential`.
    assert_eq!(answer["credential"], answer["credentials"][0]["credential"]);
    let jwt = answer["credential"].as_str().unwrap();
    let header = decode_part(jwt.split('.').next().unwrap());
    let port = app.base.rsplit(':').next().unwrap();
    let did_web = format!("did:web:localhost%3A{port}");
    let kid = header["kid"].as_str().unwrap();
    assert!(kid.starts_with(&format!("{did_web}#")), "{kid}");

    let doc = app.get_json("/.well-known/did.json").await;
    assert_eq!(doc["id"], did_web);
    let method = doc["verificationMethod"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == kid)
        .expect("the kid resolves in the did:web document")
        .clone();
    assert!(
        doc["assertionMethod"]
            .as_array()
            .unwrap()
            .contains(&json!(kid))
    );
    let claims = verify_jws(jwt, &method["publicKeyJwk"]);
    assert_eq!(claims["iss"], did_web);
    assert_eq!(claims["sub"].as_str().unwrap(), did_jwk);
    let vc = &claims["vc"];
    assert_eq!(
        vc["type"],
        json!(["VerifiableCredential", "UniversityDegreeCredential"])
    );
    assert_eq!(vc["issuer"], did_web);
    assert_eq!(vc["credentialSubject"]["id"].as_str().unwrap(), did_jwk);
    assert_eq!(vc["credentialSubject"]["degree"], "Degree-W3c1");
    assert!(vc["issuanceDate"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn a_batch_gets_one_credential_per_proven_key_up_to_the_batch_size() {
    let app = app::builder()
        .set("issuance", "batch_size", 2)
        .start()
        .await;
    let meta = app.get_json("/.well-known/openid-credential-issuer").await;
    assert_eq!(meta["batch_credential_issuance"]["batch_size"], 2);
    let (_, token) = redeemed(&app, "Batch1", None).await;
    let nonce = fresh_nonce(&app).await;
    let keys = [WalletKey::p256(), WalletKey::p256(), WalletKey::p256()];
    let proofs: Vec<String> = keys
        .iter()
        .map(|k| proof(&app, k, &nonce, json!({}), json!({})))
        .collect();
    let body = json!({"credential_configuration_id": SD_JWT, "proofs": {"jwt": proofs}});
    let (status, answer, _) = request(&app, &access_token(&token), &body).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_credential_request"))
    );
    let body = json!({"credential_configuration_id": SD_JWT, "proofs": {"jwt": proofs[..2]}});
    let (status, answer, _) = request(&app, &access_token(&token), &body).await;
    assert_eq!(status, 200, "{answer}");
    let bound: Vec<Value> = answer["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let jws = c["credential"].as_str().unwrap().split('~').next().unwrap();
            decode_part(jws.split('.').nth(1).unwrap())["cnf"]["jwk"].clone()
        })
        .collect();
    assert_eq!(bound, vec![keys[0].jwk.clone(), keys[1].jwk.clone()]);
}

#[tokio::test]
async fn bad_key_proofs_get_the_right_error_and_consume_nothing() {
    let app = app::builder()
        .set("flood", "max_failures", 1_000)
        .start()
        .await;
    let (_, token) = redeemed(&app, "Bad1", None).await;
    let at = access_token(&token);
    let wallet = WalletKey::p256();
    let nonce = fresh_nonce(&app).await;
    let send = |p: String| json!({"credential_configuration_id": SD_JWT, "proofs": {"jwt": [p]}});
    let mut private = wallet.jwk.clone();
    private["d"] = json!(b64(&[7u8; 32]));
    let unsigned_none = format!(
        "{}.{}.",
        b64(
            json!({"typ": "openid4vci-proof+jwt", "alg": "none", "jwk": wallet.jwk})
                .to_string()
                .as_bytes()
        ),
        b64(json!({"aud": app.base, "iat": now(), "nonce": nonce})
            .to_string()
            .as_bytes())
    );
    let mut forged = URL_SAFE_NO_PAD.decode(&nonce).unwrap();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let cases: Vec<(&str, String, &str)> = vec![
        ("wrong typ", proof(&app, &wallet, &nonce, json!({"typ": "JWT"}), json!({})), "invalid_proof"),
        ("alg none", unsigned_none, "invalid_proof"),
        ("HMAC", format!(
            "{}.{}.AAAA",
            b64(json!({"typ": "openid4vci-proof+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": "AAAA"}}).to_string().as_bytes()),
            b64(b"{}")
        ), "invalid_proof"),
        ("private key in jwk", proof(&app, &wallet, &nonce, json!({"jwk": private}), json!({})), "invalid_proof"),
        ("stale iat", proof(&app, &wallet, &nonce, json!({}), json!({"iat": now() - 3600})), "invalid_proof"),
        ("wrong aud", proof(&app, &wallet, &nonce, json!({}), json!({"aud": "https://elsewhere.example"})), "invalid_proof"),
        ("no nonce", proof(&app, &wallet, &nonce, json!({}), json!({"nonce": null})), "invalid_nonce"),
        ("forged nonce", proof(&app, &wallet, &b64(&forged), json!({}), json!({})), "invalid_nonce"),
        ("random nonce", proof(&app, &wallet, "bm90LWEtbm9uY2U", json!({}), json!({})), "invalid_nonce"),
    ];
    for (case, p, error) in cases {
        let (status, answer, _) = request(&app, &at, &send(p)).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some(error)),
            "{case}: {answer}"
        );
        if error == "invalid_nonce" {
            assert!(
                answer["c_nonce"].is_string(),
                "{case}: a fresh nonce comes with the error"
            );
        }
    }
    // The same key twice in one batch.
    let twice = json!({"credential_configuration_id": SD_JWT, "proofs": {"jwt": [
        proof(&app, &wallet, &nonce, json!({}), json!({})),
        proof(&app, &wallet, &nonce, json!({}), json!({})),
    ]}});
    let (status, answer, _) = request(&app, &at, &twice).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_proof")),
        "{answer}"
    );
    // Unknown configuration, or one the offer does not have.
    let p = proof(&app, &wallet, &nonce, json!({}), json!({}));
    let (_, answer, _) = request(
        &app,
        &at,
        &json!({"credential_configuration_id": "Nope", "proofs": {"jwt": [p.clone()]}}),
    )
    .await;
    assert_eq!(answer["error"], "unknown_credential_configuration");
    let (_, answer, _) = request(
        &app,
        &at,
        &json!({"credential_identifier": "Nope", "proofs": {"jwt": [p]}}),
    )
    .await;
    assert_eq!(answer["error"], "unknown_credential_identifier");

    // Nothing was consumed: the nonce and the credential are still there.
    let (status, answer, _) = request(
        &app,
        &at,
        &send(proof(&app, &wallet, &nonce, json!({}), json!({}))),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    // Now the nonce is spent: refused again and again, each time before
    // any HSM work (a refusal records nothing, so nothing else stops it).
    const SIGNATURES: &str =
        "notary_hsm_operation_seconds_count{operation=\"signing with a credential key\"}";
    let before = app::metric(&app, SIGNATURES).await;
    assert!(before >= 1.0, "the credential issued above was signed");
    for _ in 0..3 {
        let (status, answer, _) = request(
            &app,
            &at,
            &json!({"credential_configuration_id": W3C,
            "proofs": {"jwt": [proof(&app, &WalletKey::p256(), &nonce, json!({}), json!({}))]}}),
        )
        .await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("invalid_nonce")),
            "{answer}"
        );
    }
    assert_eq!(app::metric(&app, SIGNATURES).await, before);
}

#[tokio::test]
async fn only_live_tokens_of_this_server_are_accepted_and_dpop_tokens_only_with_their_proof() {
    let app = app::builder()
        .set("flood", "max_failures", 1_000)
        .start()
        .await;
    let wallet = WalletKey::p256();
    let nonce = fresh_nonce(&app).await;
    let body = json!({"credential_configuration_id": SD_JWT,
                      "proofs": {"jwt": [proof(&app, &wallet, &nonce, json!({}), json!({}))]}});
    // No token, a foreign token, a malformed header.
    let r = app
        .http()
        .post(app.url("/oid4vci/credential"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let foreign = wallet.sign(
        json!({"typ": "at+jwt", "kid": "x"}),
        &json!({"iss": app.base, "aud": app.base, "exp": now() + 60, "jti": "j"}),
    );
    let (status, answer, headers) = request(&app, &foreign, &body).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("invalid_token"))
    );
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    // A DPoP-bound token: refused as Bearer and without a proof carrying
    // its hash; accepted with one.
    let holder = WalletKey::p256();
    let (_, token) = redeemed(&app, "Dpop1", Some(&holder)).await;
    assert_eq!(token["token_type"], "DPoP");
    let at = access_token(&token);
    let (status, answer, _) = request(&app, &at, &body).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("invalid_token")),
        "{answer}"
    );
    let credential_url = app.url("/oid4vci/credential");
    let send = |proof: String| {
        app.http()
            .post(&credential_url)
            .header("Authorization", format!("DPoP {at}"))
            .header("DPoP", proof)
            .json(&body)
            .send()
    };
    let r = send(holder.dpop(&credential_url, json!({}))).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("DPoP")
    );
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "invalid_dpop_proof"
    );
    let ath = b64(&sha2::Sha256::digest(at.as_bytes()));
    let other = WalletKey::p256();
    let r = send(other.dpop(&credential_url, json!({"ath": ath})))
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a proof by another key");
    let r = send(holder.dpop(&credential_url, json!({"ath": ath})))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // A token whose code was replayed is revoked: refused from then on.
    let (offer, token) = redeemed(&app, "Revoked1", None).await;
    let (status, _) = app
        .redeem_form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &code_of(&offer)),
        ])
        .await;
    assert_eq!(status, 400);
    let mut revoked = false;
    for _ in 0..50 {
        let nonce = fresh_nonce(&app).await;
        let body = json!({"credential_configuration_id": SD_JWT,
                          "proofs": {"jwt": [proof(&app, &WalletKey::p256(), &nonce, json!({}), json!({}))]}});
        let (status, _, _) = request(&app, &access_token(&token), &body).await;
        if status == 401 {
            revoked = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(revoked, "the revoked token was still accepted");
}

/// Of 64 concurrent requests with one token for one configuration, each
/// with its own key and nonce, exactly one gets credentials.
pub async fn sixty_four_requests_issue_once(app: &Arc<TestApp>, bases: &[String]) {
    let (offer, token) = redeemed(app, "Once1", None).await;
    let at = access_token(&token);
    let mut bodies = Vec::new();
    for i in 0..64 {
        let base = &bases[i % bases.len()];
        let nonce = app
            .http()
            .post(format!("{base}/oid4vci/nonce"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["c_nonce"]
            .as_str()
            .unwrap()
            .to_owned();
        // A nonce made by one instance is checked by another.
        let target = bases[(i + 1) % bases.len()].clone();
        let p = proof(app, &WalletKey::p256(), &nonce, json!({}), json!({}));
        bodies.push((
            target,
            json!({"credential_configuration_id": SD_JWT, "proofs": {"jwt": [p]}}),
        ));
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(bodies.len()));
    let mut tasks = Vec::new();
    for (target, body) in bodies {
        let (app, barrier, at) = (app.clone(), barrier.clone(), at.clone());
        tasks.push(tokio::spawn(async move {
            let client = app.client_from(None);
            barrier.wait().await;
            let r = client
                .post(format!("{target}/oid4vci/credential"))
                .bearer_auth(at)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let denied = results
        .iter()
        .filter(|(s, b)| *s == 400 && b["error"] == "credential_request_denied")
        .count();
    assert_eq!((ok, denied), (1, 63), "{results:?}");
    let issued = app::db_text(
        &app.config_path(),
        &format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM credentials WHERE offer_id = '{}' AND configuration_id = '{SD_JWT}'",
            offer["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(issued.trim(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_credential_requests_issue_exactly_once() {
    let app = Arc::new(
        app::builder()
            .set("server", "max_connections_per_address", 128)
            // Requests in flight hold a unit of the address's failure
            // budget until their token is accepted; all 64 share one address.
            .set("flood", "max_failures", 1_000_000)
            .start()
            .await,
    );
    let bases = vec![app.base.clone()];
    sixty_four_requests_issue_once(&app, &bases).await;
}

#[tokio::test]
async fn as_the_authorization_server_alone_notary_serves_and_advertises_no_credential_issuance() {
    let app = app::builder()
        .set(
            "credential_issuer",
            "credential_endpoint",
            "https://issuer.example/credential",
        )
        .start()
        .await;
    for path in [
        "/oid4vci/credential",
        "/oid4vci/nonce",
        "/oid4vci/notification",
    ] {
        let r = app
            .http()
            .post(app.url(path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    for path in ["/.well-known/jwt-vc-issuer", "/.well-known/did.json"] {
        let r = app.http().get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    let meta = app.get_json("/.well-known/openid-credential-issuer").await;
    assert_eq!(
        meta["credential_endpoint"],
        "https://issuer.example/credential"
    );
    for absent in [
        "nonce_endpoint",
        "notification_endpoint",
        "batch_credential_issuance",
    ] {
        assert!(meta.get(absent).is_none(), "{absent}: {meta}");
    }
    // Claims would never be read here: refused rather than kept.
    let r = app
        .http()
        .post(app.url("/v1/openid/offers/pre-authorized"))
        .bearer_auth(&app.admin_key)
        .json(&json!({"credentials": [W3C], "claims": {W3C: {"degree": "BSc"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (_, code, pin) = app.offer_with_pin().await;
    let (status, token) = app
        .redeem_form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &code),
            ("tx_code", &pin),
        ])
        .await;
    assert_eq!(status, 200);
    assert!(token.get("c_nonce").is_none(), "{token}");
    // The other host's credential endpoint checks the token against the
    // JWKS with any JOSE library (here jsonwebtoken), as docs/integration.md
    // shows.
    let claims = crate::token::verify(
        &app,
        token["access_token"].as_str().unwrap(),
        jsonwebtoken::Algorithm::EdDSA,
    )
    .await;
    assert_eq!(claims["credential_configuration_ids"], json!([W3C]));
}

/// `kill -9` while credentials are being issued, then restart: a credential
/// a wallet received is always recorded, no configuration of an offer is
/// ever issued twice, and one not recorded can still be issued, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_during_issuance_never_issues_twice_nor_loses_an_issuance() {
    use std::collections::HashMap;
    use std::sync::Mutex;
    let mut app = app::builder()
        .set("flood", "max_failures", 1_000_000)
        .start()
        .await;
    for round in 0..2 {
        let mut tokens = Vec::new();
        for i in 0..32 {
            let (offer, token) = redeemed(&app, &format!("Crash{round}x{i}"), None).await;
            tokens.push((
                offer["id"].as_str().unwrap().to_owned(),
                access_token(&token),
            ));
        }
        // offer id -> SHA-256 of the credential the wallet received.
        let received: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let mut workers = Vec::new();
        for chunk in tokens.chunks(4) {
            let (client, base, chunk, received) = (
                app.client_from(None),
                app.base.clone(),
                chunk.to_vec(),
                received.clone(),
            );
            workers.push(tokio::spawn(async move {
                for (offer_id, at) in chunk {
                    let Ok(r) = client.post(format!("{base}/oid4vci/nonce")).send().await else {
                        return;
                    };
                    let Ok(nonce) = r.json::<Value>().await else {
                        return;
                    };
                    let key = WalletKey::p256();
                    let p = key.sign(
                        json!({"typ": "openid4vci-proof+jwt", "jwk": key.jwk}),
                        &json!({"aud": base, "iat": now(), "nonce": nonce["c_nonce"]}),
                    );
                    let Ok(r) = client
                        .post(format!("{base}/oid4vci/credential"))
                        .bearer_auth(&at)
                        .json(
                            &json!({"credential_configuration_id": SD_JWT, "proofs": {"jwt": [p]}}),
                        )
                        .send()
                        .await
                    else {
                        return;
                    };
                    if r.status() != 200 {
                        continue;
                    }
                    let Ok(body) = r.json::<Value>().await else {
                        return;
                    };
                    let credential = body["credentials"][0]["credential"].as_str().unwrap();
                    let sha: String = sha2::Sha256::digest(credential.as_bytes())
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    received.lock().unwrap().insert(offer_id, sha);
                }
            }));
        }
        // Crash while issuance is under way: once a few credentials are out.
        let crash_after = 6 + 10 * round;
        for _ in 0..1000 {
            if received.lock().unwrap().len() >= crash_after {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        app.kill_and_restart().await;
        for w in workers {
            let _ = w.await;
        }
        let received = received.lock().unwrap().clone();
        let mut recorded = 0;
        for (offer_id, at) in &tokens {
            let rows = app::db_text(
                &app.config_path(),
                &format!(
                    "SELECT COALESCE(MAX(sha256), '') || ':' || CAST(COUNT(*) AS TEXT) FROM credentials \
                     WHERE offer_id = '{offer_id}' AND configuration_id = '{SD_JWT}'"
                ),
            )
            .await;
            let (sha, count) = rows.rsplit_once(':').unwrap();
            assert!(
                count == "0" || count == "1",
                "{offer_id}: {count} issuances"
            );
            if let Some(seen) = received.get(offer_id) {
                assert_eq!(sha, seen, "a credential the wallet received is recorded");
            }
            // Asking again: refused if recorded, issued (once) if not.
            let nonce = fresh_nonce(&app).await;
            let body = json!({"credential_configuration_id": SD_JWT,
                              "proofs": {"jwt": [proof(&app, &WalletKey::p256(), &nonce, json!({}), json!({}))]}});
            let (status, answer, _) = request(&app, at, &body).await;
            if count == "1" {
                recorded += 1;
                assert_eq!(answer["error"], "credential_request_denied", "{offer_id}");
            } else {
                assert_eq!(status, 200, "{offer_id}: {answer}");
            }
        }
        eprintln!(
            "round {round}: {} of 32 received before the crash, {recorded} recorded",
            received.len()
        );
    }
    let out = app.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn an_expired_access_token_is_refused_with_a_challenge() {
    let app = app::builder()
        .set("issuance", "access_token_ttl_secs", 1)
        .start()
        .await;
    let (_, token) = redeemed(&app, "Expired1", None).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let nonce = fresh_nonce(&app).await;
    let body = json!({"credential_configuration_id": SD_JWT,
                      "proofs": {"jwt": [proof(&app, &WalletKey::p256(), &nonce, json!({}), json!({}))]}});
    let (status, answer, headers) = request(&app, &access_token(&token), &body).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("invalid_token")),
        "{answer}"
    );
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\""),
        "{headers:?}"
    );
    assert!(
        answer["error_description"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
}
