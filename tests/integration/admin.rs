//! The admin offer API: authentication, roles, state, listing and revocation.

use serde_json::{Value, json};

use crate::app::{self, GRANT};

fn offer_body() -> Value {
    json!({"credentials": ["UniversityDegree_jwt"], "userId": "bob"})
}

#[tokio::test]
async fn keys_and_roles_are_enforced() {
    let app = app::builder().start().await;
    let c = app.http();
    let create = app.url("/v1/openid/offers/pre-authorized");

    let r = c.post(&create).json(&offer_body()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");

    let r = c
        .post(&create)
        .bearer_auth("notary_wrong")
        .json(&offer_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(&create)
        .header("authorization", "Basic abc")
        .json(&offer_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let config = app.config_path();
    let auditor = app.new_api_key("auditor");
    let issuer = app.new_api_key("issuer");

    let r = c
        .post(&create)
        .bearer_auth(&auditor)
        .json(&offer_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "insufficient_scope"
    );

    let r = c
        .post(&create)
        .bearer_auth(&issuer)
        .json(&offer_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let offer: Value = r.json().await.unwrap();
    let id = offer["id"].as_str().unwrap();

    let r = c
        .get(app.url(&format!("/v1/openid/offers/{id}")))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .delete(app.url(&format!("/v1/openid/offers/{id}")))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // A revoked key stops working at once.
    let out = app::run_cli(&["admin-keys", "list", "--config", config.to_str().unwrap()]);
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(!listing.contains(&issuer), "list never shows secrets");
    let issuer_id = listing
        .lines()
        .find(|l| l.contains("\tissuer\t"))
        .and_then(|l| l.split('\t').next())
        .unwrap()
        .to_owned();
    let out = app::run_cli(&[
        "admin-keys",
        "revoke",
        &issuer_id,
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let r = c
        .post(&create)
        .bearer_auth(&issuer)
        .json(&offer_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn offers_are_valid_oid4vci_and_their_state_is_tracked() {
    let app = app::builder().start().await;
    let c = app.http();
    let offer = app.create_offer(offer_body()).await;
    assert_eq!(offer["userId"], "bob");
    let pin = offer["transactionCode"].as_str().unwrap();
    assert!(
        pin.len() == 6 && pin.bytes().all(|b| b.is_ascii_digit()),
        "PIN is a digit string"
    );
    assert!(offer["expiresAt"].as_str().unwrap().ends_with('Z'));
    let credential_offer = app::offer_json(&offer);
    assert_eq!(credential_offer["credential_issuer"], app.base);
    assert_eq!(
        credential_offer["credential_configuration_ids"],
        json!(["UniversityDegree_jwt"])
    );
    let grant = &credential_offer["grants"][GRANT];
    assert!(
        grant["pre-authorized_code"].as_str().unwrap().len() >= 22,
        ">= 128 bits"
    );
    assert_eq!(
        grant["tx_code"],
        json!({"length": 6, "input_mode": "numeric"})
    );

    let id = offer["id"].as_str().unwrap();
    let get = |id: String| {
        let c = c.clone();
        let url = app.url(&format!("/v1/openid/offers/{id}"));
        let key = app.admin_key.clone();
        async move { c.get(url).bearer_auth(key).send().await.unwrap() }
    };
    let r = get(id.to_owned()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["state"], "pending");
    assert_eq!(view["transactionCodeRequired"], true);
    let text = view.to_string();
    assert!(!text.contains(pin) && !text.contains(grant["pre-authorized_code"].as_str().unwrap()));

    assert_eq!(get("nope".to_owned()).await.status(), 404);

    let (status, _) = app
        .redeem_form(&[
            ("grant_type", GRANT),
            (
                "pre-authorized_code",
                grant["pre-authorized_code"].as_str().unwrap(),
            ),
            ("tx_code", pin),
        ])
        .await;
    assert_eq!(status, 200);
    let view: Value = get(id.to_owned()).await.json().await.unwrap();
    assert_eq!(view["state"], "redeemed");
    assert!(view["redeemedAt"].is_string());

    // Revoking a redeemed offer conflicts; revoking a pending one works.
    let r = c
        .delete(app.url(&format!("/v1/openid/offers/{id}")))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let other = app.create_offer(offer_body()).await;
    let other_id = other["id"].as_str().unwrap();
    let r = c
        .delete(app.url(&format!("/v1/openid/offers/{other_id}")))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "revoked");

    // Listing by state, paged.
    for _ in 0..3 {
        app.create_offer(offer_body()).await;
    }
    let list = |query: &'static str| {
        let c = c.clone();
        let url = app.url(&format!("/v1/openid/offers?{query}"));
        let key = app.admin_key.clone();
        async move {
            let r = c.get(url).bearer_auth(key).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (_, pending) = list("state=pending").await;
    assert_eq!(pending["offers"].as_array().unwrap().len(), 3);
    let (_, redeemed) = list("state=redeemed").await;
    assert_eq!(redeemed["offers"][0]["id"], id);
    let (_, revoked) = list("state=revoked").await;
    assert_eq!(revoked["offers"][0]["id"], other_id);
    let (_, page) = list("limit=2").await;
    assert_eq!(page["offers"].as_array().unwrap().len(), 2);
    let cursor = page["nextCursor"].as_str().unwrap().to_owned();
    let r = c
        .get(app.url("/v1/openid/offers"))
        .query(&[("limit", "10"), ("cursor", cursor.as_str())])
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    let rest: Value = r.json().await.unwrap();
    assert_eq!(
        rest["offers"].as_array().unwrap().len(),
        3,
        "5 offers in all"
    );
    assert!(rest["nextCursor"].is_null());
    let (status, body) = list("state=bogus").await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "invalid_request")
    );
}

#[tokio::test]
async fn bad_offer_requests_are_refused_with_a_reason() {
    let app = app::builder().start().await;
    let c = app.http();
    for (body, needle) in [
        (json!({"credentials": []}), "at least one"),
        (
            json!({"credentials": ["NoSuchCredential"]}),
            "unknown credential configuration",
        ),
        (
            json!({"credentials": ["UniversityDegree_jwt"], "expiresIn": 0}),
            "expiresIn",
        ),
        (
            json!({"credentials": ["UniversityDegree_jwt"], "transactionCode": {"length": 2}}),
            "length",
        ),
        (
            json!({"credentials": ["UniversityDegree_jwt"], "colour": "red"}),
            "unknown field",
        ),
        (
            json!({"credentials": ["UniversityDegree_jwt"], "byReference": "yes"}),
            "expected a boolean",
        ),
    ] {
        let r = c
            .post(app.url("/v1/openid/offers/pre-authorized"))
            .bearer_auth(&app.admin_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"], "invalid_request");
        assert!(
            e["error_description"].as_str().unwrap().contains(needle),
            "{e}"
        );
    }
}

#[tokio::test]
async fn bad_cursors_and_wrong_methods_get_the_envelope() {
    let app = app::builder().start().await;
    let c = app.http();
    let r = c
        .get(app.url("/v1/openid/offers?cursor=garbage"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    let r = c.get(app.url("/oid4vci/token")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
}

#[tokio::test]
async fn the_sweeper_records_expiry_once_and_deletes_finished_offers_after_retention() {
    let app = app::builder()
        .set("retention", "sweep_interval_secs", 1)
        .set("retention", "offers_secs", 1)
        // Retention may not be shorter than a token's lifetime.
        .set("issuance", "access_token_ttl_secs", 1)
        .start()
        .await;
    let offer = app
        .create_offer(json!({"credentials": ["UniversityDegree_jwt"], "transactionCode": false, "expiresIn": 1}))
        .await;
    let id = offer["id"].as_str().unwrap().to_owned();
    let mut gone = false;
    for _ in 0..60 {
        let r = app
            .http()
            .get(app.url(&format!("/v1/openid/offers/{id}")))
            .bearer_auth(&app.admin_key)
            .send()
            .await
            .unwrap();
        if r.status() == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        gone,
        "the expired offer was deleted after the retention period"
    );
    let rows = app::audit_rows(&app.config_path()).await;
    assert_eq!(
        rows.lines()
            .filter(|l| l.contains("offer.expired") && l.contains(&id))
            .count(),
        1,
        "{rows}"
    );
    assert!(rows.contains("offers.purged"), "{rows}");
    assert!(
        rows.contains("offer.created"),
        "audit entries stay after the purge"
    );
}
