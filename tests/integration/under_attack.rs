//! Holding under attack: no PIN guess is answered before it is counted,
//! failing requests spend a per-address budget before they cost HSM or
//! database work, and other wallets are served meanwhile.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection as _;

use crate::app::{self, GRANT, TestApp, code_of, metric};
use crate::wallet::{WalletKey, now};

const KEYED_HASHES: &str =
    "notary_hsm_operation_seconds_count{operation=\"computing a keyed hash\"}";
const TOKEN_SIGNATURES: &str = "notary_hsm_operation_seconds_count{operation=\"signing a token\"}";
const HSM_PROBES: &str = "notary_hsm_operation_seconds_count{operation=\"probing the token\"}";

fn other_address() -> Option<IpAddr> {
    Some("127.0.0.2".parse().unwrap())
}

fn wrong(pin: &str) -> String {
    if pin == "000000" { "111111" } else { "000000" }.to_owned()
}

/// A lock that stops notary's writes to `offers` but not its reads, held
/// from another connection: SQLite's write lock (`BEGIN IMMEDIATE`; notary
/// gives up after its 5 s busy timeout), or on PostgreSQL a SHARE lock on
/// the table, which every write to it waits for, and notary's writer lock,
/// which its rarer writers and its audit chainer wait for.
enum WriterLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriterLock {
    async fn hold(app: &TestApp) -> Self {
        let url = app::database_url(&app.config_path());
        if url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .unwrap();
            WriterLock::Sqlite(conn)
        } else {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
            // The advisory lock of notary's rarer writers and audit chainer
            // (0x6e6f_7461_7279, "notary").
            sqlx::query("SELECT pg_advisory_xact_lock(121424972968569)")
                .execute(&mut conn)
                .await
                .unwrap();
            sqlx::query("LOCK TABLE offers IN SHARE MODE")
                .execute(&mut conn)
                .await
                .unwrap();
            WriterLock::Postgres(conn)
        }
    }

    async fn release(self) {
        match self {
            WriterLock::Sqlite(mut c) => {
                sqlx::query("COMMIT").execute(&mut c).await.unwrap();
            }
            WriterLock::Postgres(mut c) => {
                sqlx::query("COMMIT").execute(&mut c).await.unwrap();
            }
        }
    }
}

async fn redeem(client: &reqwest::Client, app: &TestApp, code: &str, pin: &str) -> (u16, Value) {
    let r = client
        .post(app.url("/oid4vci/token"))
        .form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", code),
            ("tx_code", pin),
        ])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_pin_verdict_is_answered_unless_its_attempt_was_counted() {
    let app = Arc::new(
        app::builder()
            .set("flood", "max_failures", 1000)
            .start()
            .await,
    );
    let (offer, code, pin) = app.offer_with_pin().await;
    let hashes_before = metric(&app, KEYED_HASHES).await;
    let signatures_before = metric(&app, TOKEN_SIGNATURES).await;

    let lock = WriterLock::hold(&app).await;
    let guesses: Vec<_> = (0..3)
        .map(|_| {
            let (app, code, pin) = (app.clone(), code.clone(), wrong(&pin));
            tokio::spawn(async move { redeem(&app.http(), &app, &code, &pin).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(6)).await;
    lock.release().await;
    let mut answers = Vec::new();
    for guess in guesses {
        answers.push(guess.await.unwrap());
    }

    // A verdict is a 400 (wrong tx_code); a guess whose attempt could not
    // be written is a bare 500, and counts nothing.
    let judged = answers.iter().filter(|(status, _)| *status == 400).count();
    let failed = answers.iter().filter(|(status, _)| *status == 500).count();
    assert_eq!(judged + failed, 3, "{answers:?}");
    // Every code was hashed in the HSM (the PIN verifier is keyed by the
    // code's hash, so a PIN costs no HSM operation), and every guess was
    // signed for before its PIN was compared: up to the counting write, a
    // wrong PIN takes the steps a right one does. (Read before the admin
    // API's key is hashed below.)
    assert_eq!(metric(&app, KEYED_HASHES).await - hashes_before, 3.0);
    assert_eq!(
        metric(&app, TOKEN_SIGNATURES).await - signatures_before,
        3.0
    );
    let view = app.offer_view(&offer).await;
    assert_eq!(view["attempts"], judged as u64, "{answers:?} {view}");

    // Released: the right PIN redeems, with the attempts left to it, and
    // gives its own attempt back in the write that counts it.
    let (status, body) = redeem(&app.http(), &app, &code, &pin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.offer_view(&offer).await["attempts"], judged as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_right_and_a_wrong_pin_whose_attempts_cannot_be_counted_get_one_answer() {
    if app::on_postgres() {
        // PostgreSQL waits for the lock instead of failing; the first test
        // covers it.
        return;
    }
    let app = Arc::new(app::builder().start().await);
    let (offer, code, pin) = app.offer_with_pin().await;
    let signatures_before = metric(&app, TOKEN_SIGNATURES).await;
    let lock = WriterLock::hold(&app).await;
    let (client, wrong_pin) = (app.http(), wrong(&pin));
    let (right, wrong) = tokio::join!(
        redeem(&client, &app, &code, &pin),
        redeem(&client, &app, &code, &wrong_pin)
    );
    lock.release().await;
    assert_eq!(right.0, 500, "{right:?}");
    assert_eq!(right, wrong);
    // Both took the same steps: each was signed for, then compared.
    assert_eq!(
        metric(&app, TOKEN_SIGNATURES).await - signatures_before,
        2.0
    );
    let view = app.offer_view(&offer).await;
    assert_eq!(view["state"], "pending", "{view}");
    assert_eq!(view["attempts"], 0, "{view}");
    let (status, body) = redeem(&app.http(), &app, &code, &pin).await;
    assert_eq!(status, 200, "{body}");
}

/// Makes every audit write fail (SQLite: the chain; PostgreSQL: the
/// entries staged for it), or stops doing so.
async fn refuse_audit_writes(app: &TestApp, refuse: bool) {
    let statements: &[&str] = match (app::on_postgres(), refuse) {
        (false, true) => &["CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log \
             BEGIN SELECT RAISE(ABORT, 'audit writes refused by the test'); END"],
        (false, false) => &["DROP TRIGGER refuse_audit"],
        (true, true) => &[
            "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'audit writes refused by the test'; END $$",
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_pending \
             FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
        ],
        (true, false) => &[
            "DROP TRIGGER refuse_audit ON audit_pending",
            "DROP FUNCTION refuse_audit()",
        ],
    };
    app::db_exec(&app.config_path(), statements).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_only_audit_writes_fail_a_right_and_a_wrong_pin_still_get_one_answer() {
    // A right PIN is counted by the write that redeems, a wrong one by the
    // write that records it; both carry audit entries, so a fault in one
    // kind of row fails both alike, and neither is counted.
    let app = Arc::new(app::builder().start().await);
    let (offer, code, pin) = app.offer_with_pin().await;
    refuse_audit_writes(&app, true).await;
    let right = redeem(&app.http(), &app, &code, &pin).await;
    let wrong = redeem(&app.http(), &app, &code, &wrong(&pin)).await;
    refuse_audit_writes(&app, false).await;
    assert_eq!(right.0, 500, "{right:?}");
    assert_eq!(right, wrong);
    let view = app.offer_view(&offer).await;
    assert_eq!(
        (view["state"].as_str(), view["attempts"].as_u64()),
        (Some("pending"), Some(0)),
        "{view}"
    );
    let (status, body) = redeem(&app.http(), &app, &code, &pin).await;
    assert_eq!(status, 200, "{body}");
}

/// Redeems `count` fresh offers one after another from this test's own
/// address; returns each latency. Panics on anything but 200.
async fn wallet_latencies(app: &TestApp, count: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let (_, code, pin) = app.offer_with_pin().await;
        let start = Instant::now();
        let (status, body) = redeem(&app.http(), app, &code, &pin).await;
        latencies.push(start.elapsed());
        assert_eq!(status, 200, "{body}");
    }
    latencies.sort();
    latencies
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replays_with_fresh_proofs_spend_the_budget_while_other_wallets_are_served() {
    const BUDGET: usize = 20;
    const REPLAYS: usize = 2000;
    let app = Arc::new(
        app::builder()
            .set("flood", "max_failures", BUDGET as i64)
            .start()
            .await,
    );
    let quiet = wallet_latencies(&app, 50).await;

    let (offer, code, pin) = app.offer_with_pin().await;
    assert_eq!(redeem(&app.http(), &app, &code, &pin).await.0, 200);
    let proofs_before: i64 = app::db_text(
        &app.config_path(),
        "SELECT CAST(COUNT(*) AS TEXT) FROM proof_jtis",
    )
    .await
    .parse()
    .unwrap();

    let started = Instant::now();
    let attacker = {
        let app = app.clone();
        tokio::spawn(async move {
            let client = app.client_from(other_address());
            let key = Arc::new(WalletKey::p256());
            let url = app.url("/oid4vci/token");
            let mut statuses = Vec::with_capacity(REPLAYS);
            for _ in 0..REPLAYS / 8 {
                let mut sends = Vec::new();
                for _ in 0..8 {
                    let request = client
                        .post(&url)
                        .header("DPoP", key.dpop(&url, json!({})))
                        .form(&[
                            ("grant_type", GRANT),
                            ("pre-authorized_code", code.as_str()),
                            ("tx_code", pin.as_str()),
                        ]);
                    sends.push(tokio::spawn(request.send()));
                }
                for send in sends {
                    statuses.push(send.await.unwrap().unwrap().status().as_u16());
                }
            }
            statuses
        })
    };
    let attacked = wallet_latencies(&app, 50).await;
    let statuses = attacker.await.unwrap();
    let took = started.elapsed();

    let refused = statuses.iter().filter(|s| **s == 400).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(refused + limited, REPLAYS, "other statuses: {statuses:?}");
    assert!(refused <= BUDGET, "{refused} replays got past the budget");
    assert!(took < Duration::from_secs(60), "the replays took {took:?}");
    let proofs_after: i64 = app::db_text(
        &app.config_path(),
        "SELECT CAST(COUNT(*) AS TEXT) FROM proof_jtis",
    )
    .await
    .parse()
    .unwrap();
    // Each wallet redemption above sent no DPoP proof: every new row is a
    // replay's, and only replays within the budget got that far.
    assert!(
        proofs_after - proofs_before <= BUDGET as i64,
        "{} proofs recorded",
        proofs_after - proofs_before
    );
    let id = offer["id"].as_str().unwrap();
    let revocations = app::db_text(
        &app.config_path(),
        &format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM audit_log WHERE event = 'token.revoked' AND subject = '{id}'"
        ),
    )
    .await;
    assert_eq!(revocations, "1", "a replayed code revokes its token once");
    eprintln!(
        "wallet p99 without attack {:?}, during {REPLAYS} replays from 127.0.0.2 {:?} \
         (replays: {refused} refused, {limited} limited, in {took:?})",
        p99(&quiet),
        p99(&attacked)
    );
}

#[tokio::test]
async fn wrong_admin_keys_spend_the_budget_before_any_hsm_work() {
    let app = app::builder().set("flood", "max_failures", 5).start().await;
    let stranger = app.client_from(other_address());
    let hashes_before = metric(&app, KEYED_HASHES).await;
    let mut statuses = Vec::new();
    for i in 0..12 {
        let r = stranger
            .get(app.url("/v1/openid/offers"))
            .bearer_auth(format!("notary_guess{i}"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses[..5], [401; 5], "{statuses:?}");
    assert_eq!(statuses[5..], [429; 7], "{statuses:?}");
    assert_eq!(metric(&app, KEYED_HASHES).await - hashes_before, 5.0);
    // The right key from another address still works, however often.
    for _ in 0..10 {
        app.create_offer(json!({"credentials": ["UniversityDegree_jwt"]}))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_probes_cost_at_most_one_hsm_call_a_second() {
    let app = Arc::new(app::builder().start().await);
    let probes_before = metric(&app, HSM_PROBES).await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let client = app.client_from(other_address());
                for _ in 0..100 {
                    let r = client.get(app.url("/readyz")).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    let probes = metric(&app, HSM_PROBES).await - probes_before;
    // One per second of the run, give or take the boundary, plus whatever
    // the watchdog does.
    assert!(
        probes <= seconds.ceil() + 2.0,
        "{probes} HSM probes for 400 readiness requests in {seconds:.1} s"
    );
}

#[tokio::test]
async fn wrong_dpop_nonces_cost_no_hsm_call_and_spend_the_budget() {
    let app = app::builder()
        .set("issuance", "require_dpop", true)
        .set("issuance", "require_dpop_nonce", true)
        .set("flood", "max_failures", 5)
        .start()
        .await;
    let url = app.url("/oid4vci/token");
    let key = WalletKey::p256();
    let (_, code, pin) = app.offer_with_pin().await;
    let send = |client: reqwest::Client, proof: String| {
        let (url, code, pin) = (url.clone(), code.clone(), pin.clone());
        async move {
            let r = client
                .post(&url)
                .header("DPoP", proof)
                .form(&[
                    ("grant_type", GRANT),
                    ("pre-authorized_code", code.as_str()),
                    ("tx_code", pin.as_str()),
                ])
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    };
    // A wallet's first contact (no nonce yet) is part of the protocol: it
    // spends nothing, however many wallets behind one address do it.
    for _ in 0..10 {
        assert_eq!(
            send(app.http(), key.dpop(&url, json!({}))).await,
            400,
            "first contact"
        );
    }
    let hashes_before = metric(&app, KEYED_HASHES).await;
    let stranger = app.client_from(other_address());
    let mut statuses = Vec::new();
    for i in 0..12 {
        let proof = key.dpop(&url, json!({"nonce": format!("made-up-{i}")}));
        statuses.push(send(stranger.clone(), proof).await);
    }
    assert_eq!(statuses[..5], [400; 5], "{statuses:?}");
    assert_eq!(statuses[5..], [429; 7], "{statuses:?}");
    // At most the previous window's nonce, computed once (twice if the
    // window turned during the test); on its own, nothing per request.
    assert!(metric(&app, KEYED_HASHES).await - hashes_before <= 2.0);
}

#[tokio::test]
async fn without_a_pin_a_live_offer_and_a_spent_one_answer_alike() {
    let app = app::builder().start().await;
    let (_, code, pin) = app.offer_with_pin().await;
    let form = [
        ("grant_type", GRANT),
        ("pre-authorized_code", code.as_str()),
    ];
    let live = app.redeem_form(&form).await;
    assert_eq!(redeem(&app.http(), &app, &code, &pin).await.0, 200);
    let spent = app.redeem_form(&form).await;
    assert_eq!(live, spent);
    assert_eq!(live.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offer_that_expires_while_its_redemption_waits_is_not_redeemed() {
    let app = Arc::new(app::builder().start().await);
    let offer = app
        .create_offer(json!({"credentials": ["UniversityDegree_jwt"], "transactionCode": false}))
        .await;
    let code = code_of(&offer);
    let id = offer["id"].as_str().unwrap();
    let expires_at = now() + 2;
    app.sql(&[&format!(
        "UPDATE offers SET expires_at = {expires_at} WHERE id = '{id}'"
    )])
    .await;
    // The redemption starts before the expiry and reaches its write after it.
    let lock = WriterLock::hold(&app).await;
    let redemption = {
        let app = app.clone();
        tokio::spawn(async move {
            app.redeem_form(&[("grant_type", GRANT), ("pre-authorized_code", &code)])
                .await
        })
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    lock.release().await;
    let (status, body) = redemption.await.unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert_ne!(app.offer_view(&offer).await["state"], "redeemed");
}
