//! Several instances on one PostgreSQL database and one HSM token: every
//! single-host guarantee still holds. They run when NOTARY_TEST_POSTGRES_URL
//! is set (the test command and .ci/run set it) and say they were skipped
//! otherwise.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::app::{self, GRANT, Instance, TestApp};

async fn two_instances() -> Option<(Arc<TestApp>, Arc<Instance>)> {
    if app::postgres_base().is_none() {
        eprintln!(
            "skipped: NOTARY_TEST_POSTGRES_URL is not set (e.g. postgres://postgres@127.0.0.1:5432)"
        );
        return None;
    }
    // The bursts' wallets all connect from 127.0.0.1.
    let a = app::builder()
        .postgres()
        .set("server", "max_connections_per_address", 128)
        .set("keys", "refresh_secs", 1)
        .set("status", "sign_interval_secs", 1)
        .set("retention", "sweep_interval_secs", 1)
        // Every request comes from one address on purpose.
        .set("flood", "max_failures", 1_000_000)
        .start()
        .await;
    let b = a.another_instance().await;
    Some((Arc::new(a), Arc::new(b)))
}

/// Sends every (code, PIN) at once, alternating between the instances.
async fn burst(
    a: &Arc<TestApp>,
    bases: &[String],
    requests: Vec<(String, String)>,
) -> Vec<(u16, Value)> {
    let barrier = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let mut tasks = Vec::new();
    for (i, (code, pin)) in requests.into_iter().enumerate() {
        let (a, barrier, base) = (a.clone(), barrier.clone(), bases[i % bases.len()].clone());
        tasks.push(tokio::spawn(async move {
            let client = a.client_from(None);
            barrier.wait().await;
            let r = client
                .post(format!("{base}/oid4vci/token"))
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
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_and_lockout_hold_across_instances() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let bases = vec![a.base.clone(), b.base.clone()];

    let (offer, code, pin) = a.offer_with_pin().await;
    let results = burst(&a, &bases, vec![(code, pin); 64]).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let refused = results
        .iter()
        .filter(|(s, b)| *s == 400 && b["error"] == "invalid_grant")
        .count();
    assert_eq!((ok, refused), (1, 63), "{results:?}");

    let (locked, code, pin) = a.offer_with_pin().await;
    let wrong = if pin == "000000" {
        "111111".to_owned()
    } else {
        "000000".to_owned()
    };
    let results = burst(&a, &bases, vec![(code.clone(), wrong); 40]).await;
    let counted = results
        .iter()
        .filter(|(s, b)| *s == 400 && b["error"] == "invalid_grant")
        .count();
    assert_eq!(
        counted, 5,
        "exactly max_tx_code_attempts counted: {results:?}"
    );
    for base in &bases {
        let r = a
            .http()
            .post(format!("{base}/oid4vci/token"))
            .form(&[
                ("grant_type", GRANT),
                ("pre-authorized_code", &code),
                ("tx_code", &pin),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429, "locked everywhere");
    }
    for (id, state) in [(&offer, "redeemed"), (&locked, "locked")] {
        let view: Value = a
            .http()
            .get(format!(
                "{}/v1/openid/offers/{}",
                b.base,
                id["id"].as_str().unwrap()
            ))
            .bearer_auth(&a.admin_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(view["state"], state);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_from_all_instances_leave_one_valid_chain() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (a, base) = (
            a.clone(),
            if i % 2 == 0 {
                a.base.clone()
            } else {
                b.base.clone()
            },
        );
        tasks.push(tokio::spawn(async move {
            let r = a
                .client_from(None)
                .post(format!("{base}/v1/openid/offers/pre-authorized"))
                .bearer_auth(&a.admin_key)
                .json(&json!({"credentials": ["UniversityDegree_jwt"], "transactionCode": false}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let offer: Value = r.json().await.unwrap();
            let r = a
                .client_from(None)
                .post(format!("{base}/oid4vci/token"))
                .form(&[
                    ("grant_type", GRANT),
                    ("pre-authorized_code", &app::code_of(&offer)),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let out = a.cli(&["audit", "verify"]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let rows = app::audit_rows(&a.config_path()).await;
    for (event, n) in [
        (" offer.created ", 40),
        (" offer.redeemed ", 40),
        (" token.issued ", 40),
    ] {
        assert_eq!(rows.matches(event).count(), n, "no lost entry for{event}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_reaches_every_instance_and_expiry_is_recorded_once() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let out = a.cli(&["keys", "rotate", "--alg", "ES256"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kid = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    let offer = a
        .create_offer(json!({"credentials": ["UniversityDegree_jwt"], "transactionCode": false, "expiresIn": 1}))
        .await;
    for base in [&a.base, &b.base] {
        let mut seen = false;
        for _ in 0..50 {
            let jwks: Value = a
                .http()
                .get(format!("{base}/.well-known/jwks.json"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if jwks.to_string().contains(&kid) {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            seen,
            "{base} picked up the rotation within the refresh interval"
        );
    }
    // Both instances sweep every second; the expiry is recorded once.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let rows = app::audit_rows(&a.config_path()).await;
    let id = offer["id"].as_str().unwrap();
    assert_eq!(
        rows.lines()
            .filter(|l| l.contains("offer.expired") && l.contains(id))
            .count(),
        1,
        "{rows}"
    );
}

#[tokio::test]
async fn losing_the_database_fails_cleanly_and_recovers() {
    let Some((a, _b)) = two_instances().await else {
        return;
    };
    let (_, code, pin) = a.offer_with_pin().await;
    let url = app::database_url(&a.config_path());
    let name = url.rsplit('/').next().unwrap().to_owned();
    // Cut this test's database off (other tests share the server).
    app::psql_exec(&format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';"
    ));
    let form = [
        ("grant_type", GRANT),
        ("pre-authorized_code", code.as_str()),
        ("tx_code", pin.as_str()),
    ];
    let r = a
        .http()
        .post(a.url("/oid4vci/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "server_error");
    // Readiness verdicts are reused for up to a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let r = loop {
        let r = a.http().get(a.url("/readyz")).send().await.unwrap();
        if r.status() == 503 || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.unwrap()["database"], "unavailable");

    app::psql_exec(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"));
    assert!(
        a.became_ready(&a.base, Duration::from_secs(10)).await,
        "recovered without a restart"
    );
    let r = a
        .http()
        .post(a.url("/oid4vci/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "nothing was half-written: the offer redeems now"
    );
    let out = a.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A DPoP proof used at one instance is refused at the other (the replay
/// cache is the shared database), and a server nonce from one instance is
/// good at the other (nonces are HMACs made with the shared HSM key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_replay_is_refused_across_instances_and_nonces_are_shared() {
    if app::postgres_base().is_none() {
        eprintln!("skipped: NOTARY_TEST_POSTGRES_URL is not set");
        return;
    }
    let a = app::builder()
        .postgres()
        .set("issuance", "require_dpop_nonce", true)
        .start()
        .await;
    let b = a.another_instance().await;
    let key = crate::wallet::WalletKey::p256();
    let htu = a.url("/oid4vci/token");
    let send = |base: String, code: String, pin: String, proof: String| {
        let client = a.client_from(None);
        async move {
            let r = client
                .post(format!("{base}/oid4vci/token"))
                .header("DPoP", proof)
                .form(&[
                    ("grant_type", GRANT),
                    ("pre-authorized_code", &code),
                    ("tx_code", &pin),
                ])
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let nonce = r
                .headers()
                .get("dpop-nonce")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, nonce, r.json::<Value>().await.unwrap())
        }
    };
    let (_, code1, pin1) = a.offer_with_pin().await;
    let (_, code2, pin2) = a.offer_with_pin().await;
    // Ask instance A for a nonce, use it at instance B.
    let (status, nonce, body) = send(
        a.base.clone(),
        code1.clone(),
        pin1.clone(),
        key.dpop(&htu, json!({})),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("use_dpop_nonce"))
    );
    let proof = key.dpop(&htu, json!({"nonce": nonce.unwrap()}));
    let (status, _, body) = send(b.base.clone(), code1, pin1, proof.clone()).await;
    assert_eq!(status, 200, "a nonce from A is good at B: {body}");
    // The same proof replayed at instance A, for another code: refused.
    let (status, _, body) = send(a.base.clone(), code2.clone(), pin2.clone(), proof).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("replay")
    );
    eprintln!("DPoP jti used at B and replayed at A: refused; nonce minted by A accepted by B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_credential_requests_across_two_instances_issue_exactly_once() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let bases = vec![a.base.clone(), b.base.clone()];
    crate::credentials::sixty_four_requests_issue_once(&a, &bases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_status_change_through_one_instance_is_served_by_the_other() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let (offer, token) = crate::credentials::redeemed(&a, "Multi1", None).await;
    let nonce = crate::credentials::fresh_nonce(&a).await;
    let body = json!({"credential_configuration_id": crate::credentials::SD_JWT,
        "proofs": {"jwt": [crate::credentials::proof(&a, &crate::wallet::WalletKey::p256(), &nonce, json!({}), json!({}))]}});
    let (status, answer, _) =
        crate::credentials::request(&a, token["access_token"].as_str().unwrap(), &body).await;
    assert_eq!(status, 200, "{answer}");
    let jws = answer["credentials"][0]["credential"].as_str().unwrap();
    let payload: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            jws.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let reference = &payload["status"]["status_list"];
    let idx = reference["idx"].as_u64().unwrap() as usize;
    let path = reference["uri"].as_str().unwrap().replace(&a.base, "");
    let list = a
        .http()
        .get(a.url(&format!(
            "/v1/credentials?offer={}",
            offer["id"].as_str().unwrap()
        )))
        .bearer_auth(&a.admin_key)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let id = list["credentials"][0]["id"].as_str().unwrap().to_owned();
    let r = a
        .http()
        .post(a.url(&format!("/v1/credentials/{id}/revoke")))
        .bearer_auth(&a.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Instance B serves the revoked list within the interval.
    let mut seen = false;
    for _ in 0..100 {
        let r = a
            .http()
            .get(format!("{}{path}", b.base))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let jwt = r.text().await.unwrap();
            let claims: Value = serde_json::from_slice(
                &base64::Engine::decode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    jwt.split('.').nth(1).unwrap(),
                )
                .unwrap(),
            )
            .unwrap();
            let bits =
                notary::formats::status_list::token_status_list::decode(&claims["status_list"])
                    .unwrap();
            if bits.get(idx) == Some(1) {
                seen = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "instance B never served the revocation");
}

/// Status places are handed out by both instances at once, without the
/// writer lock: every credential must still get a place of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_places_taken_on_two_instances_at_once_never_repeat() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    const WALLETS: usize = 24;
    let mut requests = Vec::new();
    for i in 0..WALLETS {
        let (_, token) = crate::credentials::redeemed(&a, &format!("Place{i}"), None).await;
        let nonce = crate::credentials::fresh_nonce(&a).await;
        let body = json!({"credential_configuration_id": crate::credentials::SD_JWT,
            "proofs": {"jwt": [crate::credentials::proof(&a, &crate::wallet::WalletKey::p256(), &nonce, json!({}), json!({}))]}});
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        requests.push((
            format!("{base}/oid4vci/credential"),
            token["access_token"].as_str().unwrap().to_owned(),
            body,
        ));
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(WALLETS));
    let mut tasks = Vec::new();
    for (url, token, body) in requests {
        let (client, barrier) = (a.http(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let r = client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let places = app::db_text(
        &a.config_path(),
        "SELECT CAST(COUNT(*) AS TEXT) || ' ' || CAST(COUNT(DISTINCT (status_list, status_index)) AS TEXT) \
         FROM credentials WHERE status_list IS NOT NULL",
    )
    .await;
    assert_eq!(
        places,
        format!("{WALLETS} {WALLETS}"),
        "credentials, distinct places"
    );
}

/// A migrated store of its own, on a new PostgreSQL database, for the tests
/// of the store alone (`app::drop_database` removes it); `None` when no
/// PostgreSQL is configured.
async fn scratch_store(connections: u32) -> Option<(String, notary::store::Store)> {
    if app::postgres_base().is_none() {
        eprintln!("skipped: NOTARY_TEST_POSTGRES_URL is not set");
        return None;
    }
    let url = app::new_postgres_database();
    let store = notary::store::Store::connect(&url, connections)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    Some((url, store))
}

/// The redemptions' offer lookups on PostgreSQL are sent together when
/// they arrive together (`store/pg_reads.rs`): each lookup still gets the
/// offer of its own code, two lookups of one code both get it, and an
/// unknown code gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lookups_sent_together_each_find_their_own_offer() {
    let Some((url, store)) = scratch_store(4).await else {
        return;
    };
    let store = Arc::new(store);
    let offers = 200u32;
    let hash = |i: u32| {
        let mut h = [0u8; 32];
        h[..4].copy_from_slice(&i.to_be_bytes());
        h[31] = 0xa5;
        h
    };
    for i in 0..offers {
        let offer = notary::store::NewOffer {
            id: format!("offer-{i}"),
            code_hash: hash(i),
            pin_hash: None,
            tx_code: None,
            subject: Some(format!("subject-{i}")),
            credential_ids: "[]".to_owned(),
            claims_sealed: None,
            max_attempts: 5,
            created_at: 1_000,
            expires_at: i64::MAX / 2,
            created_by: None,
            ref_hash: None,
        };
        let event = notary::audit::AuditEvent::new("offer.created", offer.id.clone(), json!({}));
        store.insert_offer(&offer, event).await.unwrap();
    }
    // Every offer looked up twice and 50 unknown codes, all at once.
    let wanted: Vec<u32> = (0..offers)
        .chain(0..offers)
        .chain(offers..offers + 50)
        .collect();
    let lookups = wanted.iter().map(|&i| {
        let store = Arc::clone(&store);
        tokio::spawn(async move { (i, store.find_offer_by_code_hash(&hash(i)).await) })
    });
    for lookup in lookups.collect::<Vec<_>>() {
        let (i, found) = lookup.await.unwrap();
        let found = found.unwrap();
        if i < offers {
            let offer = found.unwrap_or_else(|| panic!("offer {i} not found"));
            assert_eq!(offer.id, format!("offer-{i}"));
            assert_eq!(offer.subject, Some(format!("subject-{i}")));
        } else {
            assert!(found.is_none(), "unknown code {i} found an offer");
        }
    }
    store.close().await;
    app::drop_database(&url);
}

/// A shared lookup held up on the database (here by a lock on `offers`)
/// gives up after its timeout, failing only the lookups it carried, and
/// the lookups after the lock is gone are answered: a query that cannot
/// finish does not hold the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_held_up_by_a_lock_gives_up_and_the_next_ones_are_answered() {
    let Some((url, store)) = scratch_store(2).await else {
        return;
    };
    let code_hash = [7u8; 32];
    assert!(
        store
            .find_offer_by_code_hash(&code_hash)
            .await
            .unwrap()
            .is_none()
    );

    // Another session holds `offers` locked for 8 s.
    let mut locker = std::process::Command::new("psql")
        .args([
            url.as_str(),
            "-qc",
            "BEGIN; LOCK TABLE offers IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(8); COMMIT;",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let name = url.rsplit('/').next().unwrap().to_owned();
    let locked = format!(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
         WHERE d.datname = '{name}' AND l.mode = 'AccessExclusiveLock' AND l.granted"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let out = std::process::Command::new("psql")
            .args([url.as_str(), "-tAc", &locked])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).trim() != "0" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was not taken"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let asked = std::time::Instant::now();
    let held_up = store.find_offer_by_code_hash(&code_hash).await;
    let waited = asked.elapsed();
    assert!(
        held_up.is_err(),
        "a lookup behind the lock answered: {held_up:?}"
    );
    assert!(
        waited < Duration::from_secs(7),
        "the lookup waited {waited:?}, past its timeout"
    );

    assert!(locker.wait().unwrap().success());
    assert!(
        store
            .find_offer_by_code_hash(&code_hash)
            .await
            .unwrap()
            .is_none()
    );
    store.close().await;
    app::drop_database(&url);
}
