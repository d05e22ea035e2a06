//! Crash consistency: load on the offer and token endpoints, `kill -9` at a
//! random moment, restart, and check that nothing confirmed was lost and no
//! code was redeemed twice. Five rounds per run, on whichever backend the
//! suite runs on (SQLite, and PostgreSQL in the second pass).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::app::{self, GRANT, TestApp, code_of};

const ROUNDS: usize = 5;
const WORKERS: usize = 8;

/// What the clients saw confirmed before the crash.
#[derive(Default)]
struct Seen {
    /// Offers whose creation returned 201: (id, code, PIN).
    created: Vec<(String, String, String)>,
    /// Codes and how many 200s each got.
    tokens: HashMap<String, usize>,
}

/// A random-ish delay from the clock (no RNG crate needed in the tests).
fn jitter(round: usize) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    Duration::from_millis(200 + (nanos / 1000 + round as u64 * 137) % 900)
}

async fn load(app: &TestApp, seen: Arc<Mutex<Seen>>, stop: Arc<std::sync::atomic::AtomicBool>) {
    let mut tasks = Vec::new();
    for worker in 0..WORKERS {
        let (client, base, key) = (
            app.client_from(None),
            app.base.clone(),
            app.admin_key.clone(),
        );
        let (seen, stop) = (seen.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Create an offer; remember it only once the server said 201.
                let Ok(r) = client
                    .post(format!("{base}/v1/openid/offers/pre-authorized"))
                    .bearer_auth(&key)
                    .json(&json!({"credentials": ["UniversityDegree_jwt"]}))
                    .send()
                    .await
                else {
                    break;
                };
                if r.status() != 201 {
                    continue;
                }
                let Ok(offer) = r.json::<Value>().await else {
                    break;
                };
                let (id, code) = (offer["id"].as_str().unwrap().to_owned(), code_of(&offer));
                let pin = offer["transactionCode"].as_str().unwrap().to_owned();
                seen.lock()
                    .unwrap()
                    .created
                    .push((id, code.clone(), pin.clone()));
                // Half the workers race two redemptions of each code.
                let attempts = if worker % 2 == 0 { 2 } else { 1 };
                let mut redemptions = Vec::new();
                for _ in 0..attempts {
                    let (client, base, code, pin) =
                        (client.clone(), base.clone(), code.clone(), pin.clone());
                    redemptions.push(tokio::spawn(async move {
                        client
                            .post(format!("{base}/oid4vci/token"))
                            .form(&[
                                ("grant_type", GRANT),
                                ("pre-authorized_code", &code),
                                ("tx_code", &pin),
                            ])
                            .send()
                            .await
                            .map(|r| r.status().as_u16())
                    }));
                }
                for r in redemptions {
                    if let Ok(Ok(200)) = r.await {
                        *seen.lock().unwrap().tokens.entry(code.clone()).or_default() += 1;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_nothing_and_redeems_nothing_twice() {
    // Load from one address, replays included: no failure budget in the way.
    let mut app = app::builder()
        .log_level("warn")
        .set("flood", "max_failures", 1_000_000)
        .start()
        .await;
    let mut totals = (0usize, 0usize);
    for round in 0..ROUNDS {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let running = {
            let (seen, stop) = (seen.clone(), stop.clone());
            let app_ref: &TestApp = &app;
            // The load runs until the server dies under it.
            let load = load(app_ref, seen, stop);
            tokio::time::timeout(jitter(round) + Duration::from_secs(30), async {
                tokio::join!(load, async {
                    tokio::time::sleep(jitter(round)).await;
                    // kill -9 by pid while clients are mid-request.
                    std::process::Command::new("kill")
                        .args(["-KILL", &app_ref.child.id().to_string()])
                        .status()
                        .unwrap();
                })
            })
            .await
        };
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(running.is_ok(), "load did not stop after the kill");
        app.kill_and_restart().await;

        let seen = std::mem::take(&mut *seen.lock().unwrap());
        assert!(
            !seen.created.is_empty(),
            "round {round}: no offer was created before the kill"
        );
        for (code, count) in &seen.tokens {
            assert_eq!(*count, 1, "round {round}: a code returned {count} tokens");
            let (status, body) = app
                .redeem_form(&[
                    ("grant_type", GRANT),
                    ("pre-authorized_code", code),
                    ("tx_code", "000000"),
                ])
                .await;
            assert_eq!(
                (status, body["error"].as_str()),
                (400, Some("invalid_grant")),
                "round {round}: a redeemed code came back"
            );
        }
        for (id, code, _) in &seen.created {
            let view = app.offer_view(&json!({"id": id})).await;
            assert_eq!(
                view["id"],
                id.as_str(),
                "round {round}: offer {id} was lost: {view}"
            );
            if seen.tokens.contains_key(code) {
                assert_eq!(view["state"], "redeemed", "round {round}: {view}");
            }
        }
        let out = app.cli(&["audit", "verify"]);
        assert!(
            out.status.success(),
            "round {round}: audit verify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !app::on_postgres() {
            let check = app::db_text(&app.config_path(), "PRAGMA integrity_check").await;
            assert_eq!(check, "ok", "round {round}");
        }
        totals.0 += seen.created.len();
        totals.1 += seen.tokens.len();
    }
    eprintln!(
        "crash rounds: {ROUNDS} on {}, {} confirmed offers and {} confirmed redemptions checked",
        if app::on_postgres() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        totals.0,
        totals.1
    );
}
