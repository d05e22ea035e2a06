//! The token disappears under a running server and comes back: requests
//! fail cleanly meanwhile, nothing is consumed, and the server recovers
//! without a restart.

use std::time::Duration;

use serde_json::Value;

use crate::app::{self, GRANT};

#[tokio::test]
async fn the_server_survives_the_token_going_away_and_coming_back() {
    let app = app::builder().start().await;
    let (offer, code, pin) = app.offer_with_pin().await;
    let tokens = app.home.join("tokens");
    let away = app.home.join("tokens.away");
    std::fs::rename(&tokens, &away).unwrap();

    let form = [
        ("grant_type", GRANT),
        ("pre-authorized_code", code.as_str()),
        ("tx_code", pin.as_str()),
    ];
    let r = app
        .http()
        .post(app.url("/oid4vci/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "server_error");
    // Readiness verdicts are reused for up to a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let r = loop {
        let r = app.http().get(app.url("/readyz")).send().await.unwrap();
        if r.status() == 503 || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.unwrap()["hsm"], "unavailable");
    let r = app.http().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "alive, just not ready");

    std::fs::rename(&away, &tokens).unwrap();
    assert!(
        app.became_ready(&app.base, Duration::from_secs(5)).await,
        "the server recovered without a restart: {}",
        app.log()
    );
    // Nothing was consumed while no token could be signed (the admin API
    // needs the HSM too, so this is read after the recovery).
    let state = app.offer_view(&offer).await;
    assert_eq!(
        (
            state["state"].as_str().unwrap(),
            state["attempts"].as_u64().unwrap()
        ),
        ("pending", 0)
    );

    let r = app
        .http()
        .post(app.url("/oid4vci/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the same offer redeems after the recovery");
    assert!(app.log().contains("HSM session recovered"));
}
