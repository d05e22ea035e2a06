//! Exactly once under attack: concurrent redemptions of one code, and
//! concurrent wrong PINs against one offer.

use std::sync::Arc;

use serde_json::Value;

use crate::app::{self, GRANT, TestApp};

/// An app that lets these bursts' wallets, all on 127.0.0.1, open more
/// connections and fail more often than one address may by default.
async fn many_wallets() -> TestApp {
    app::builder()
        .set("server", "max_connections_per_address", 128)
        .set("flood", "max_failures", 1_000_000)
        .start()
        .await
}

/// Sends every (code, PIN) at once, each on its own connection; returns
/// (status, body) per request.
async fn burst(app: &Arc<TestApp>, requests: Vec<(String, String)>) -> Vec<(u16, Value)> {
    let barrier = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let mut tasks = Vec::new();
    for (code, pin) in requests {
        let (app, barrier) = (app.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
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
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    results
}

fn wrong_pin(pin: &str) -> String {
    if pin == "000000" {
        "111111".into()
    } else {
        "000000".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_redemptions_give_exactly_one_token() {
    let app = Arc::new(many_wallets().await);
    let (offer, code, pin) = app.offer_with_pin().await;
    let results = burst(&app, vec![(code, pin); 64]).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let refused = results
        .iter()
        .filter(|(s, b)| *s == 400 && b["error"] == "invalid_grant")
        .count();
    assert_eq!((ok, refused), (1, 63), "{results:?}");
    assert_eq!(app.offer_view(&offer).await["state"], "redeemed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_wrong_pins_never_pass_the_limit() {
    let app = Arc::new(many_wallets().await);
    let (offer, code, pin) = app.offer_with_pin().await;
    let results = burst(&app, vec![(code.clone(), wrong_pin(&pin)); 50]).await;
    let counted = results
        .iter()
        .filter(|(s, b)| *s == 400 && b["error"] == "invalid_grant")
        .count();
    let slowed = results
        .iter()
        .filter(|(s, b)| *s == 429 && b["error"] == "slow_down")
        .count();
    assert_eq!((counted, slowed), (5, 45), "{results:?}");
    let state = app.offer_view(&offer).await;
    assert_eq!(
        (
            state["state"].as_str().unwrap(),
            state["attempts"].as_u64().unwrap()
        ),
        ("locked", 5)
    );
    // Locked for good: the right PIN no longer wins.
    let late = burst(&app, vec![(code, pin)]).await;
    assert_eq!(late[0].0, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_right_pin_in_a_burst_of_wrong_ones_cannot_win_after_the_lock() {
    let app = Arc::new(many_wallets().await);
    for _ in 0..3 {
        let (offer, code, pin) = app.offer_with_pin().await;
        let mut requests = vec![(code.clone(), wrong_pin(&pin)); 49];
        requests.insert(25, (code.clone(), pin.clone()));
        let results = burst(&app, requests).await;
        let wins = results.iter().filter(|(s, _)| *s == 200).count();
        let state = app.offer_view(&offer).await;
        let attempts = state["attempts"].as_u64().unwrap();
        assert!(attempts <= 5, "attempts passed the limit: {attempts}");
        match state["state"].as_str().unwrap() {
            // The right PIN was consumed before the fifth wrong one.
            "redeemed" => assert!(wins == 1 && attempts < 5, "{state} {wins}"),
            // Locked first: then nothing may have won.
            "locked" => assert!(wins == 0 && attempts == 5, "{state} {wins}"),
            other => panic!("unexpected state {other}"),
        }
    }
}
