//! One code, many concurrent redemptions: exactly one token.

use std::sync::Arc;

use serde_json::Value;

use crate::app::{self, GRANT};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_redemptions_give_exactly_one_token() {
    let app = Arc::new(app::builder().start().await);
    let (offer, code, pin) = app.offer_with_pin().await;
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (app, code, pin, barrier) = (app.clone(), code.clone(), pin.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            // Each request on its own connection, released together.
            let client = app.client_from(None);
            barrier.wait().await;
            let r = client
                .post(app.url("/oid4vci/token"))
                .form(&[
                    ("grant_type", GRANT),
                    ("pre-authorized_code", &code),
                    ("tx_code", &pin),
                ])
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            200 => ok += 1,
            400 if body["error"] == "invalid_grant" => refused += 1,
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((ok, refused), (1, 49));
    let view: Value = app
        .http()
        .get(app.url(&format!(
            "/v1/openid/offers/{}",
            offer["id"].as_str().unwrap()
        )))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["state"], "redeemed");
}
