//! No code, PIN, access token, admin key or HSM PIN in the logs (at TRACE),
//! the audit records, or any error body.

use serde_json::{Value, json};

use crate::app::{self, GRANT};

#[tokio::test]
async fn no_secret_reaches_logs_audit_or_error_bodies() {
    let app = app::builder()
        .log_level("trace")
        .set("issuance", "max_tx_code_attempts", 3)
        .start()
        .await;
    let c = app.http();
    let mut secrets = vec![app.admin_key.clone()];
    for pin_file in ["hsm/user-pin", "hsm/so-pin"] {
        secrets.push(
            std::fs::read_to_string(app.home.join(pin_file))
                .unwrap()
                .trim()
                .to_owned(),
        );
    }
    let mut bodies: Vec<String> = Vec::new();
    let send = |form: Vec<(&'static str, String)>| {
        let c = c.clone();
        let url = app.url("/oid4vci/token");
        async move {
            let r = c.post(url).form(&form).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };

    // A second admin key, created on the host and used over HTTP.
    let issuer_key = app.new_api_key("issuer");
    secrets.push(issuer_key.clone());

    // Redeemed offer: code, PIN and the access token. A text PIN of 8
    // characters: a 6-digit one turns up by chance among the digits of a
    // TRACE log (timings, timestamps) often enough to make this test flaky.
    let offer = app
        .create_offer(json!({
            "credentials": ["UniversityDegree_jwt"],
            "transactionCode": {"length": 8, "input_mode": "text"}
        }))
        .await;
    let code = app::code_of(&offer);
    let pin = offer["transactionCode"].as_str().unwrap().to_owned();
    let (status, body) = send(vec![
        ("grant_type", GRANT.into()),
        ("pre-authorized_code", code.clone()),
        ("tx_code", pin.clone()),
    ])
    .await;
    assert_eq!(status, 200);
    let token: Value = serde_json::from_str(&body).unwrap();
    secrets.extend([
        code.clone(),
        pin.clone(),
        token["access_token"].as_str().unwrap().to_owned(),
    ]);
    // Replay of the spent code.
    bodies.push(
        send(vec![
            ("grant_type", GRANT.into()),
            ("pre-authorized_code", code),
            ("tx_code", pin),
        ])
        .await
        .1,
    );

    // Offer created by the issuer key, then locked by wrong PINs.
    let offer: Value = c
        .post(app.url("/v1/openid/offers/pre-authorized"))
        .bearer_auth(&issuer_key)
        .json(&json!({"credentials": ["UniversityDegree_jwt"], "transactionCode": {"length": 8}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let code = app::code_of(&offer);
    let pin = offer["transactionCode"].as_str().unwrap().to_owned();
    secrets.extend([code.clone(), pin.clone()]);
    for wrong in ["00000000", "11111111", "22222222"] {
        let wrong = if wrong == pin { "33333333" } else { wrong };
        bodies.push(
            send(vec![
                ("grant_type", GRANT.into()),
                ("pre-authorized_code", code.clone()),
                ("tx_code", wrong.into()),
            ])
            .await
            .1,
        );
    }
    let (status, locked) = send(vec![
        ("grant_type", GRANT.into()),
        ("pre-authorized_code", code.clone()),
        ("tx_code", pin.clone()),
    ])
    .await;
    assert_eq!(status, 429);
    bodies.push(locked);
    // Malformed requests that carry secrets.
    bodies.push(
        send(vec![
            ("grant_type", "nope".into()),
            ("pre-authorized_code", code.clone()),
        ])
        .await
        .1,
    );
    bodies.push(
        send(vec![
            ("grant_type", GRANT.into()),
            ("pre-authorized_code", code.clone()),
            ("tx_code", pin.clone()),
            ("user_pin", "x".into()),
        ])
        .await
        .1,
    );
    let r = c
        .post(app.url("/oid4vci/token"))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"grant_type":"{GRANT}","pre-authorized_code":{{"x":"{code}"}},"tx_code":"{pin}"}}"#
        ))
        .send()
        .await
        .unwrap();
    bodies.push(r.text().await.unwrap());
    // Wrong admin keys.
    for key in [format!("{issuer_key}x"), "notary_guess".to_owned()] {
        let r = c
            .get(app.url("/v1/openid/offers"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        bodies.push(r.text().await.unwrap());
    }

    let metrics = app::metrics_text(&app).await;
    assert!(
        metrics.contains("notary_token_requests_total{outcome=\"issued\"} 1"),
        "{metrics}"
    );
    drop(c);
    let log = app.log();
    assert!(log.contains("TRACE"), "the server logged at TRACE");
    let audit = app::audit_rows(&app.config_path()).await;
    assert!(
        audit.contains("offer.locked") && audit.contains("token.issued"),
        "{audit}"
    );
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a secret reached the log");
        assert!(
            !audit.contains(secret.as_str()),
            "a secret reached the audit log"
        );
        for body in &bodies {
            assert!(
                !body.contains(secret.as_str()),
                "a secret reached an error body: {body}"
            );
        }
    }
}

/// A code or PIN sent as the wrong JSON type (a negative or fractional
/// number, a boolean, an array, an object), or a body that is not an
/// object, gets a 400 naming the field and the type wanted, but neither the
/// body nor the log quotes the digits sent.
#[tokio::test]
async fn a_mistyped_secret_is_never_echoed() {
    // Dozens of refused requests from one address: no failure budget in the way.
    let app = app::builder()
        .log_level("trace")
        .set("flood", "max_failures", 1_000_000)
        .start()
        .await;
    let (offer, code, _pin) = app.offer_with_pin().await;
    let c = app.http();
    let send = |body: String| {
        let c = c.clone();
        let url = app.url("/oid4vci/token");
        async move {
            let r = c
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let digits = "4935170286";
    let wrong = [
        format!("-{digits}"),
        format!("{digits}.0"),
        format!("{digits}e0"),
        "true".to_owned(),
        format!("[{digits}]"),
        format!(r#"{{"value":"{digits}"}}"#),
    ];
    for field in ["pre-authorized_code", "tx_code", "user_pin"] {
        for value in &wrong {
            let body = if field == "pre-authorized_code" {
                format!(r#"{{"grant_type":"{GRANT}","pre-authorized_code":{value}}}"#)
            } else {
                format!(
                    r#"{{"grant_type":"{GRANT}","pre-authorized_code":"{code}","{field}":{value}}}"#
                )
            };
            let (status, text) = send(body.clone()).await;
            assert_eq!(status, 400, "{body}: {text}");
            assert!(!text.contains(digits), "{body} echoed: {text}");
            let answer: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(answer["error"], "invalid_request");
            let description = answer["error_description"].as_str().unwrap();
            assert!(
                description.contains(&format!(
                    "{field} must be a string or a non-negative integer"
                )),
                "{body}: {description}"
            );
        }
    }
    for body in [
        digits.to_owned(),
        format!("-{digits}"),
        format!(r#""{digits}""#),
        format!("[{digits}]"),
    ] {
        let (status, text) = send(body.clone()).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(!text.contains(digits), "{body} echoed: {text}");
        assert!(text.contains("the body must be a JSON object"), "{text}");
    }
    // A form body with the PIN as a bare, repeated name.
    let form = format!("grant_type={GRANT}&pre-authorized_code={code}&{digits}&{digits}");
    let r = c
        .post(app.url("/oid4vci/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("repeated") && !text.contains(digits),
        "{text}"
    );
    // The offer is untouched: none of this counted as a PIN attempt.
    let view = app.offer_view(&offer).await;
    assert_eq!(view["state"], "pending", "{view}");
    assert!(!app.log().contains(digits), "the digits reached the log");
}
