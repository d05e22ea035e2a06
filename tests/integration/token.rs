//! The token endpoint: happy paths verified with an independent JOSE library,
//! and every error case with its exact status and `error`.

use jsonwebtoken::{DecodingKey, Validation, decode, decode_header, jwk::JwkSet};
use serde_json::{Value, json};

use crate::app::{self, GRANT, TestApp};

/// Verifies `token` against the server's JWKS with `jsonwebtoken` (not
/// notary's code) and returns its claims.
pub async fn verify(app: &TestApp, token: &str, alg: jsonwebtoken::Algorithm) -> Value {
    let header = decode_header(token).unwrap();
    assert_eq!(header.alg, alg);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let jwks: JwkSet = serde_json::from_value(app.jwks().await).unwrap();
    let kid = header.kid.expect("kid in header");
    let jwk = jwks.find(&kid).expect("kid is in the JWKS");
    let mut validation = Validation::new(alg);
    validation.set_audience(&[app.base.as_str()]);
    validation.set_issuer(&[app.base.as_str()]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .expect("token verifies against the JWKS")
        .claims
}

fn assert_token_response(body: &Value) {
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert!(body["c_nonce"].as_str().is_some_and(|n| n.len() >= 16));
    assert_eq!(body["c_nonce_expires_in"], 300);
}

#[tokio::test]
async fn eddsa_form_body_redeems_and_the_token_verifies() {
    let app = app::builder().alg("EdDSA").start().await;
    let (offer, code, pin) = app.offer_with_pin().await;
    assert_eq!(pin.len(), 6);
    let r = app
        .http()
        .post(app.url("/oid4vci/token"))
        .form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &code),
            ("tx_code", &pin),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(
        r.version(),
        reqwest::Version::HTTP_2,
        "ALPN negotiates HTTP/2"
    );
    let body: Value = r.json().await.unwrap();
    assert_token_response(&body);
    let token = body["access_token"].as_str().unwrap();
    let claims = verify(&app, token, jsonwebtoken::Algorithm::EdDSA).await;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        claims["credential_configuration_ids"],
        json!(["UniversityDegree_jwt"])
    );
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
    // Nothing derived from the code or PIN travels in the token.
    let payload = token.split('.').nth(1).unwrap();
    assert!(!token.contains(&code) && !payload.contains(&pin));
    assert!(!claims.to_string().contains(&code));
    assert_eq!(offer["userId"], "alice");
}

#[tokio::test]
async fn es256_json_body_redeems_and_the_token_verifies() {
    let app = app::builder().alg("ES256").start().await;
    let offer = app
        .create_offer(
            json!({"credentials": ["UniversityDegree_jwt"], "transactionCode": false,
                             "claims": {"UniversityDegree_jwt": {"degree": "BSc"}}}),
        )
        .await;
    assert!(offer.get("transactionCode").is_none());
    let code = app::code_of(&offer);
    let r = app
        .http()
        .post(app.url("/oid4vci/token"))
        .json(&json!({"grant_type": GRANT, "pre-authorized_code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_token_response(&body);
    let claims = verify(
        &app,
        body["access_token"].as_str().unwrap(),
        jsonwebtoken::Algorithm::ES256,
    )
    .await;
    assert_eq!(
        claims["sub"], offer["id"],
        "without userId the subject is the offer id"
    );
    // The offer's claims stay sealed in the database, out of the token.
    assert!(claims.get("claims").is_none(), "{claims}");
    assert!(!claims.to_string().contains("BSc"), "{claims}");
}

#[tokio::test]
async fn user_pin_alias_and_numeric_json_pin_are_accepted() {
    let app = app::builder().start().await;
    let (_, code, pin) = app.offer_with_pin().await;
    let (status, body) = app
        .redeem_form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &code),
            ("user_pin", &pin),
        ])
        .await;
    assert_eq!(status, 200, "{body}");

    // A JSON number is taken as its digits (a PIN without a leading zero).
    let offer = app
        .create_offer(json!({"credentials": ["UniversityDegree_jwt"],
                             "transactionCode": {"length": 6, "input_mode": "numeric", "description": "see e-mail"}}))
        .await;
    let offer_json = app::offer_json(&offer);
    assert_eq!(
        offer_json["grants"][GRANT]["tx_code"]["description"],
        "see e-mail"
    );
    let pin = offer["transactionCode"].as_str().unwrap().to_owned();
    let code = app::code_of(&offer);
    let pin_value: Value = if pin.starts_with('0') {
        json!(pin)
    } else {
        serde_json::from_str(&pin).unwrap()
    };
    let r = app
        .http()
        .post(app.url("/oid4vci/token"))
        .json(&json!({"grant_type": GRANT, "pre-authorized_code": code, "tx_code": pin_value}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn expect_error(app: &TestApp, r: reqwest::Response, status: u16, error: &str) -> Value {
    assert_eq!(r.status().as_u16(), status, "status");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], error, "body: {body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    let _ = app;
    body
}

#[tokio::test]
async fn malformed_requests_get_invalid_request_or_unsupported_grant_type() {
    let app = app::builder().start().await;
    let (_, code, pin) = app.offer_with_pin().await;
    let token_url = app.url("/oid4vci/token");
    let c = app.http();

    let r = c
        .post(&token_url)
        .form(&[("grant_type", "authorization_code"), ("code", "x")])
        .send()
        .await
        .unwrap();
    expect_error(&app, r, 400, "unsupported_grant_type").await;

    let r = c
        .post(&token_url)
        .form(&[("pre-authorized_code", code.as_str())])
        .send()
        .await
        .unwrap();
    expect_error(&app, r, 400, "invalid_request").await;

    let r = c
        .post(&token_url)
        .form(&[("grant_type", GRANT)])
        .send()
        .await
        .unwrap();
    expect_error(&app, r, 400, "invalid_request").await;

    let r = c
        .post(&token_url)
        .header("content-type", "text/plain")
        .body(format!("grant_type={GRANT}&pre-authorized_code={code}"))
        .send()
        .await
        .unwrap();
    expect_error(&app, r, 400, "invalid_request").await;

    let r = c
        .post(&token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type={GRANT}&pre-authorized_code={code}&pre-authorized_code={code}"
        ))
        .send()
        .await
        .unwrap();
    expect_error(&app, r, 400, "invalid_request").await;

    let r = c
        .post(format!("{token_url}?pre-authorized_code={code}"))
        .form(&[("grant_type", GRANT), ("tx_code", pin.as_str())])
        .send()
        .await
        .unwrap();
    expect_error(&app, r, 400, "invalid_request").await;

    let r = c
        .post(&token_url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_error(&app, r, 400, "invalid_request").await;

    let r = c
        .post(&token_url)
        .form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &code),
            ("tx_code", &pin),
            ("user_pin", "999999"),
        ])
        .send()
        .await
        .unwrap();
    expect_error(&app, r, 400, "invalid_request").await;

    // PIN required but missing.
    let r = c
        .post(&token_url)
        .form(&[("grant_type", GRANT), ("pre-authorized_code", &code)])
        .send()
        .await
        .unwrap();
    expect_error(&app, r, 400, "invalid_request").await;

    // A PIN for an offer that has none.
    let offer = app
        .create_offer(json!({"credentials": ["UniversityDegree_jwt"], "transactionCode": false}))
        .await;
    let no_pin_code = app::code_of(&offer);
    let r = c
        .post(&token_url)
        .form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &no_pin_code),
            ("tx_code", "123456"),
        ])
        .send()
        .await
        .unwrap();
    expect_error(&app, r, 400, "invalid_request").await;

    let huge = "a".repeat(8 * 1024);
    let r = c
        .post(&token_url)
        .form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", huge.as_str()),
        ])
        .send()
        .await
        .unwrap();
    expect_error(&app, r, 413, "invalid_request").await;

    // None of the refusals above consumed the offer.
    let (status, _) = app
        .redeem_form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &code),
            ("tx_code", &pin),
        ])
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn unknown_used_expired_and_revoked_codes_get_the_same_invalid_grant() {
    let app = app::builder().start().await;
    let c = app.http();
    let token_url = app.url("/oid4vci/token");
    let mut descriptions = Vec::new();

    let r = c
        .post(&token_url)
        .form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", "no-such-code"),
        ])
        .send()
        .await
        .unwrap();
    descriptions.push(expect_error(&app, r, 400, "invalid_grant").await);

    let (_, code, pin) = app.offer_with_pin().await;
    let form = [
        ("grant_type", GRANT),
        ("pre-authorized_code", code.as_str()),
        ("tx_code", pin.as_str()),
    ];
    assert_eq!(app.redeem_form(&form).await.0, 200);
    let r = c.post(&token_url).form(&form).send().await.unwrap();
    descriptions.push(expect_error(&app, r, 400, "invalid_grant").await);

    let expiring = app
        .create_offer(json!({"credentials": ["UniversityDegree_jwt"], "transactionCode": false, "expiresIn": 1}))
        .await;
    let revoked = app
        .create_offer(json!({"credentials": ["UniversityDegree_jwt"], "transactionCode": false}))
        .await;
    let r = c
        .delete(app.url(&format!(
            "/v1/openid/offers/{}",
            revoked["id"].as_str().unwrap()
        )))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    for offer in [&expiring, &revoked] {
        let code = app::code_of(offer);
        let r = c
            .post(&token_url)
            .form(&[
                ("grant_type", GRANT),
                ("pre-authorized_code", code.as_str()),
            ])
            .send()
            .await
            .unwrap();
        descriptions.push(expect_error(&app, r, 400, "invalid_grant").await);
    }
    let first = &descriptions[0];
    assert!(descriptions.iter().all(|d| d == first), "{descriptions:?}");
}

#[tokio::test]
async fn wrong_pins_lock_the_offer_after_five() {
    let app = app::builder().start().await;
    let (offer, code, pin) = app.offer_with_pin().await;
    let wrong = if pin == "000000" { "111111" } else { "000000" };
    for left in (0..5).rev() {
        let (status, body) = app
            .redeem_form(&[
                ("grant_type", GRANT),
                ("pre-authorized_code", &code),
                ("tx_code", wrong),
            ])
            .await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_grant");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains(&format!("{left} attempt")),
            "{body}"
        );
    }
    // Locked for good: even the right PIN gets 429 slow_down.
    let r = app
        .http()
        .post(app.url("/oid4vci/token"))
        .form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &code),
            ("tx_code", &pin),
        ])
        .send()
        .await
        .unwrap();
    expect_error(&app, r, 429, "slow_down").await;
    let state = app.offer_view(&offer).await;
    assert_eq!(state["state"], "locked");
    assert_eq!(state["attempts"], 5);
}

#[tokio::test]
async fn error_dialects_follow_the_config() {
    let app = app::builder()
        .set("issuance", "wrong_pin_error", "invalid_tx_code")
        .set("issuance", "locked_response", "invalid_grant")
        .set("issuance", "max_tx_code_attempts", 2)
        .start()
        .await;
    let (_, code, pin) = app.offer_with_pin().await;
    let wrong = if pin == "000000" { "111111" } else { "000000" };
    for _ in 0..2 {
        let (status, body) = app
            .redeem_form(&[
                ("grant_type", GRANT),
                ("pre-authorized_code", &code),
                ("tx_code", wrong),
            ])
            .await;
        assert_eq!(
            (status, body["error"].as_str().unwrap()),
            (400, "invalid_tx_code")
        );
    }
    let (status, body) = app
        .redeem_form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &code),
            ("tx_code", &pin),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "invalid_grant")
    );
}

#[tokio::test]
async fn flood_of_unknown_codes_is_limited_per_address() {
    let app = app::builder()
        .set("flood", "max_failures", 3)
        .set("flood", "window_secs", 60)
        .start()
        .await;
    let (_, code, pin) = app.offer_with_pin().await;
    for i in 0..3 {
        let (status, _) = app
            .redeem_form(&[
                ("grant_type", GRANT),
                ("pre-authorized_code", &format!("guess-{i}")),
            ])
            .await;
        assert_eq!(status, 400);
    }
    let r = app
        .http()
        .post(app.url("/oid4vci/token"))
        .form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &code),
            ("tx_code", &pin),
        ])
        .send()
        .await
        .unwrap();
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    expect_error(&app, r, 429, "slow_down").await;

    // Another address is unaffected and redeems the same offer.
    let other = app.client_from(Some("127.0.0.2".parse().unwrap()));
    let r = other
        .post(app.url("/oid4vci/token"))
        .form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &code),
            ("tx_code", &pin),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn disabled_flow_answers_404_and_is_not_advertised() {
    let app = app::builder()
        .set("issuance", "pre_authorized_code_enabled", false)
        .start()
        .await;
    let (status, body) = app
        .redeem_form(&[("grant_type", GRANT), ("pre-authorized_code", "x")])
        .await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string());
    let meta: Value = app
        .http()
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["grant_types_supported"], json!([]));
}

#[tokio::test]
async fn database_failure_is_a_bare_server_error() {
    let app = app::builder().start().await;
    let (_, code, pin) = app.offer_with_pin().await;
    // Break the schema under the running server.
    app.sql(&["ALTER TABLE offers RENAME TO offers_gone"]).await;
    let r = app
        .http()
        .post(app.url("/oid4vci/token"))
        .form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &code),
            ("tx_code", &pin),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "server_error", "error_description": "the request could not be completed"})
    );
    let log = app.log();
    assert!(
        log.contains("no such table") || log.contains("relation \"offers\" does not exist"),
        "the detail goes to the log: {log}"
    );
}

#[tokio::test]
async fn authorization_details_are_checked_against_the_offer_and_echoed() {
    let app = app::builder().start().await;
    let (_, code, pin) = app.offer_with_pin().await;
    let wrong = r#"[{"type":"openid_credential","credential_configuration_id":"SomethingElse"}]"#;
    let (status, body) = app
        .redeem_form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &code),
            ("tx_code", &pin),
            ("authorization_details", wrong),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_authorization_details")),
        "{body}"
    );
    let (status, body) = app
        .redeem_form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &code),
            ("tx_code", &pin),
            ("authorization_details", "not json"),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    // Neither attempt spent the code; a matching request gets identifiers.
    let r = app
        .http()
        .post(app.url("/oid4vci/token"))
        .json(&json!({
            "grant_type": GRANT,
            "pre-authorized_code": code,
            "tx_code": pin,
            "authorization_details": [{"type": "openid_credential", "credential_configuration_id": "UniversityDegree_jwt"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let granted = json!([{
        "type": "openid_credential",
        "credential_configuration_id": "UniversityDegree_jwt",
        "credential_identifiers": ["UniversityDegree_jwt"],
    }]);
    assert_eq!(body["authorization_details"], granted);
    let claims = verify(
        &app,
        body["access_token"].as_str().unwrap(),
        jsonwebtoken::Algorithm::EdDSA,
    )
    .await;
    assert_eq!(claims["authorization_details"], granted);
}
