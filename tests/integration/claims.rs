//! Offer claims: checked against the credential configuration, stored only
//! sealed by the claims key in the HSM (bound to their offer), deleted when
//! the offer ends, and never shown, logged or audited.

use std::time::Duration;

use serde_json::{Value, json};

use crate::app::{self, GRANT, TestApp};
use crate::secrets_at_rest::{contains, database_bytes};

/// Configurations as notary.toml gives them: one that declares claims
/// (OID4VCI 1.0 form), one that declares none.
const CONFIGURATIONS: &str = r#"
[UniversityDegree_jwt]
format = "jwt_vc_json"
credential_definition = { type = ["VerifiableCredential", "UniversityDegreeCredential"] }
claims = [
    { path = ["given_name"], mandatory = true },
    { path = ["degree"] },
    { path = ["address", "street"] },
]

[Membership_jwt]
format = "jwt_vc_json"
credential_definition = { type = ["VerifiableCredential", "MembershipCredential"] }
"#;

fn builder() -> app::Builder {
    let configurations: toml::Table = CONFIGURATIONS.parse().unwrap();
    app::builder().set(
        "credential_issuer",
        "credential_configurations_supported",
        toml::Value::Table(configurations),
    )
}

/// Claims whose values are easy to find in a byte scan.
fn claims_of(i: usize) -> (Value, Vec<String>) {
    let given = format!("Given-Qx7-{i}-Alice");
    let degree = format!("Degree-Qx7-{i}-BSc");
    let street = format!("Street-Qx7-{i}-Main");
    let member = format!("Member-Qx7-{i}-Gold");
    let claims = json!({
        "UniversityDegree_jwt": {"given_name": given, "degree": degree,
                                 "address": {"street": street}},
        "Membership_jwt": {"level": member},
    });
    (claims, vec![given, degree, street, member])
}

async fn post_offer(app: &TestApp, body: &Value) -> (u16, Value) {
    let r = app
        .http()
        .post(app.url("/v1/openid/offers/pre-authorized"))
        .bearer_auth(&app.admin_key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// The stored sealed claims of offer `id`, or "deleted".
async fn sealed(app: &TestApp, id: &str) -> String {
    app::db_text(
        &app.config_path(),
        &format!("SELECT COALESCE(claims_sealed, 'deleted') FROM offers WHERE id = '{id}'"),
    )
    .await
}

#[tokio::test]
async fn claims_are_stored_only_sealed_and_never_shown_logged_or_audited() {
    let app = builder().start().await;
    let mut values = Vec::new();
    let mut ids = Vec::new();
    for i in 0..6 {
        let (claims, mut v) = claims_of(i);
        let offer = app
            .create_offer(json!({
                "credentials": ["UniversityDegree_jwt", "Membership_jwt"],
                "userId": format!("subject-{i}"),
                "transactionCode": false,
                "claims": claims,
            }))
            .await;
        ids.push(offer["id"].as_str().unwrap().to_owned());
        values.append(&mut v);
        if i % 2 == 0 {
            // Redeemed offers keep their claims (for the credential endpoint).
            let code = app::code_of(&offer);
            let (status, _) = app
                .redeem_form(&[("grant_type", GRANT), ("pre-authorized_code", &code)])
                .await;
            assert_eq!(status, 200);
        }
    }

    // The admin API says which configurations have claims, never the claims.
    let view = app.offer_view(&json!({"id": ids[0]})).await;
    assert_eq!(
        view["claims"],
        json!(["Membership_jwt", "UniversityDegree_jwt"]),
        "{view}"
    );
    let list = app.get_json("/v1/openid/offers?limit=50").await;
    let shown = format!("{view} {list}");

    let bytes = database_bytes(&app);
    assert!(
        contains(&bytes, "subject-3"),
        "the scanner finds a stored value"
    );
    let sealed_text = sealed(&app, &ids[1]).await;
    assert!(
        sealed_text.contains("UniversityDegree_jwt"),
        "{sealed_text}"
    );
    let audit = app::audit_rows(&app.config_path()).await;
    let metrics = app
        .http()
        .get(&app.metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let log = app.log();
    for value in &values {
        assert!(!contains(&bytes, value), "a claim value is in the database");
        assert!(!shown.contains(value.as_str()), "a claim value is shown");
        assert!(!audit.contains(value.as_str()), "a claim value is audited");
        assert!(
            !metrics.contains(value.as_str()),
            "a claim value is a metric"
        );
        assert!(!log.contains(value.as_str()), "a claim value is logged");
        assert!(!sealed_text.contains(value.as_str()));
    }
}

#[tokio::test]
async fn claims_are_checked_against_the_configuration_and_errors_name_no_value() {
    let app = builder().start().await;
    let offered = json!(["UniversityDegree_jwt"]);
    let cases = [
        (
            json!({"UniversityDegree_jwt": {"degree": "Secret-Qx7-1"}}),
            "\"given_name\"",
        ),
        (
            json!({"UniversityDegree_jwt": {"given_name": "Secret-Qx7-2", "iban": "Secret-Qx7-3"}}),
            "\"iban\"",
        ),
        (
            json!({"Membership_jwt": {"level": "Secret-Qx7-4"}}),
            "\"Membership_jwt\"",
        ),
        (
            json!({"UniversityDegree_jwt": "Secret-Qx7-5"}),
            "UniversityDegree_jwt",
        ),
        (json!("Secret-Qx7-6"), "expected"),
    ];
    for (claims, named) in cases {
        let (status, body) = post_offer(
            &app,
            &json!({"credentials": offered, "transactionCode": false, "claims": claims}),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "invalid_request", "{body}");
        let description = body["error_description"].as_str().unwrap_or_default();
        assert!(description.contains(named), "{description}");
        assert!(!body.to_string().contains("Secret-Qx7"), "{body}");
    }
    // Nothing was stored for the refused requests.
    let count = app::db_text(
        &app.config_path(),
        "SELECT CAST(COUNT(*) AS TEXT) FROM offers",
    )
    .await;
    assert_eq!(count, "0");
    assert!(!app.log().contains("Secret-Qx7"));

    // A configuration that declares no claims takes any.
    let (status, body) = post_offer(
        &app,
        &json!({"credentials": ["Membership_jwt"], "transactionCode": false,
                "claims": {"Membership_jwt": {"anything": "goes"}}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // notary issues the credentials here, so one with mandatory claims
    // cannot be offered without its claims: it could never be issued.
    let (status, body) = post_offer(
        &app,
        &json!({"credentials": ["UniversityDegree_jwt", "Membership_jwt"],
                "transactionCode": false,
                "claims": {"Membership_jwt": {"anything": "goes"}}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("lacks the mandatory claim \"given_name\""),
        "{body}"
    );
    // Nor with a claim its format sets itself.
    let (status, body) = post_offer(
        &app,
        &json!({"credentials": ["Membership_jwt"], "transactionCode": false,
                "claims": {"Membership_jwt": {"id": "did:example:someone-else"}}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("\"id\""),
        "{body}"
    );
}

#[tokio::test]
async fn revoking_expiring_or_locking_an_offer_deletes_its_claims() {
    let app = builder()
        .set("retention", "sweep_interval_secs", 1)
        .start()
        .await;
    let (claims, _) = claims_of(0);
    let create = |expires_in: u64, pin: bool| {
        json!({"credentials": ["UniversityDegree_jwt", "Membership_jwt"],
               "transactionCode": pin, "expiresIn": expires_in, "claims": claims})
    };
    let revoked = app.create_offer(create(600, false)).await;
    let expiring = app.create_offer(create(1, false)).await;
    let locked = app.create_offer(create(600, true)).await;
    let redeemed = app.create_offer(create(600, false)).await;
    let pending = app.create_offer(create(600, false)).await;
    let id = |o: &Value| o["id"].as_str().unwrap().to_owned();
    for offer in [&revoked, &expiring, &locked, &redeemed, &pending] {
        assert_ne!(sealed(&app, &id(offer)).await, "deleted");
    }

    let r = app
        .http()
        .delete(app.url(&format!("/v1/openid/offers/{}", id(&revoked))))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sealed(&app, &id(&revoked)).await, "deleted");

    let code = app::code_of(&locked);
    let pin = locked["transactionCode"].as_str().unwrap();
    let wrong = if pin.starts_with('0') { "1" } else { "0" }.repeat(pin.len());
    for _ in 0..5 {
        let (status, _) = app
            .redeem_form(&[
                ("grant_type", GRANT),
                ("pre-authorized_code", &code),
                ("tx_code", &wrong),
            ])
            .await;
        assert!(status == 400 || status == 429, "{status}");
    }
    assert_eq!(app.offer_view(&locked).await["state"], "locked");
    assert_eq!(sealed(&app, &id(&locked)).await, "deleted");

    let code = app::code_of(&redeemed);
    let (status, _) = app
        .redeem_form(&[("grant_type", GRANT), ("pre-authorized_code", &code)])
        .await;
    assert_eq!(status, 200);

    // The sweeper records the expiry and deletes the claims with it.
    let mut swept = false;
    for _ in 0..100 {
        if sealed(&app, &id(&expiring)).await == "deleted" {
            swept = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(swept, "the sweeper deleted the expired offer's claims");
    let view = app.offer_view(&expiring).await;
    assert_eq!(view["state"], "expired");
    assert_eq!(view["claims"], json!([]));

    // Claims stay for the redeemed offer until its credentials are issued,
    // and for the pending one.
    assert_ne!(sealed(&app, &id(&redeemed)).await, "deleted");
    assert_ne!(sealed(&app, &id(&pending)).await, "deleted");
}

/// Environment of the child process that opens sealed claims through the
/// library, with `SOFTHSM2_CONF` set for it.
const CHILD: &str = "NOTARY_TEST_CLAIMS_CHILD";

/// Runs `claims::child` in a process of its own with `task` (JSON).
fn run_child(app: &TestApp, task: Value) {
    app::run_child_test(app, "claims::child", CHILD, task.to_string().as_ref());
}

/// The child's half of the tests below; does nothing unless started by
/// `run_child`.
#[tokio::test]
#[ignore = "run by run_child in a process of its own"]
async fn child() {
    use notary::issuance::claims::{OpenError, open};
    let Ok(task) = std::env::var(CHILD) else {
        return;
    };
    let task: Value = serde_json::from_str(&task).unwrap();
    let s = |k: &str| task[k].as_str().unwrap().to_owned();
    match task["do"].as_str().unwrap() {
        "open" => {
            let home = std::path::PathBuf::from(s("home"));
            let hsm = tokio::task::spawn_blocking(move || app::open_hsm(&home, None))
                .await
                .unwrap();
            let (a, b, stored_a, stored_b) = (s("a"), s("b"), s("stored_a"), s("stored_b"));
            // Its own offer's claims open, in the HSM.
            let plain = open(&hsm, &a, &stored_a, "UniversityDegree_jwt")
                .await
                .unwrap();
            let plain: Value = serde_json::from_slice(&plain).unwrap();
            assert_eq!(plain["given_name"], s("given_name"));
            // Copied to offer B's row, they do not open as B's.
            assert!(matches!(
                open(&hsm, &b, &stored_b, "UniversityDegree_jwt").await,
                Err(OpenError::Unreadable)
            ));
            // Nor under another configuration of the same offer.
            let swapped = stored_a.replace("UniversityDegree_jwt", "Other");
            assert!(matches!(
                open(&hsm, &a, &swapped, "Other").await,
                Err(OpenError::Unreadable)
            ));
            assert!(matches!(
                open(&hsm, &a, &stored_a, "Other").await,
                Err(OpenError::Absent)
            ));
            hsm.close();
        }
        "make-signing-aes-key" => {
            use cryptoki::mechanism::Mechanism;
            use cryptoki::object::{Attribute, KeyType, ObjectClass};
            let pkcs11 = notary::hsm::load_module(std::path::Path::new(&s("module"))).unwrap();
            let slot = notary::hsm::find_token(&pkcs11, "notary").unwrap();
            let session = pkcs11.open_rw_session(slot).unwrap();
            let pin = notary::secret::HsmPin::new(s("pin"));
            session
                .login(
                    cryptoki::session::UserType::User,
                    Some(&notary::hsm::auth_pin(&pin)),
                )
                .unwrap();
            // Everything the claims key should be, except that it may sign.
            let template = [
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Derive(false),
                Attribute::Unwrap(false),
                Attribute::Wrap(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Sign(true),
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Label(b"signing-aes".to_vec()),
            ];
            session
                .generate_key(&Mechanism::AesKeyGen, &template)
                .unwrap();
            session.logout().unwrap();
            drop(session);
            pkcs11.finalize().unwrap();
        }
        other => panic!("unknown task {other}"),
    }
}

#[tokio::test]
async fn sealed_claims_open_only_in_the_hsm_and_only_for_their_offer() {
    let app = builder().start().await;
    let (claims, values) = claims_of(7);
    let body = json!({"credentials": ["UniversityDegree_jwt"], "transactionCode": false,
                      "claims": {"UniversityDegree_jwt": claims["UniversityDegree_jwt"]}});
    let a = app.create_offer(body.clone()).await;
    let b = app.create_offer(body).await;
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let stored_a = sealed(&app, a).await;
    // The same claims, sealed for two offers, differ (fresh IV, other AAD).
    assert_ne!(stored_a, sealed(&app, b).await);
    // Offer A's sealed claims copied into offer B's row.
    app.sql(&[&format!(
        "UPDATE offers SET claims_sealed = (SELECT claims_sealed FROM offers WHERE id = '{a}') \
         WHERE id = '{b}'"
    )])
    .await;
    let stored_b = sealed(&app, b).await;
    assert_eq!(stored_a, stored_b);
    run_child(
        &app,
        json!({"do": "open", "home": app.home, "a": a, "b": b, "stored_a": stored_a,
               "stored_b": stored_b, "given_name": values[0]}),
    );
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn the_claims_key_is_in_the_custody_report_and_a_broad_one_is_refused() {
    let mut app = app::builder().start().await;
    let out = app.cli(&["keys", "custody-report", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = report["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["role"] == "claims")
        .cloned()
        .unwrap_or_default();
    assert_eq!(key["custody"]["label"], "notary-claims-1", "{report}");
    assert_eq!(key["custody"]["key"], "AES-256", "{report}");
    assert_eq!(key["algorithm"], "AES-256-GCM", "{report}");
    let attributes = key["custody"]["attributes"].to_string();
    for attribute in [
        "CKA_NEVER_EXTRACTABLE",
        "CKA_SENSITIVE",
        "CKA_SIGN",
        "CKA_DECRYPT",
    ] {
        assert!(attributes.contains(attribute), "{attributes}");
    }
    let text = app.cli(&["keys", "custody-report"]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains("key \"notary-claims-1\" (Claims, AES-256-GCM)"),
        "{text}"
    );
    app.stop();

    // An extractable AES key, and one that may also sign.
    let out = std::process::Command::new("bash")
        .args([
            "-euo",
            "pipefail",
            "-c",
            "pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so --token-label notary --login \
               --pin \"$(cat \"$PIN_FILE\")\" --keygen --key-type AES:32 --label broad-aes \
               --id 79 --extractable --private --sensitive >/dev/null",
        ])
        .env("SOFTHSM2_CONF", app.home.join("softhsm2.conf"))
        .env("PIN_FILE", app.home.join("hsm/user-pin"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let module = std::fs::read_to_string(app.config_path()).unwrap();
    let module: toml::Table = module.parse().unwrap();
    let pin = std::fs::read_to_string(app.home.join("hsm/user-pin")).unwrap();
    run_child(
        &app,
        json!({"do": "make-signing-aes-key", "home": app.home,
               "module": module["hsm"]["module"], "pin": pin.trim()}),
    );

    let config = std::fs::read_to_string(app.config_path()).unwrap();
    for (label, refusal) in [
        ("broad-aes", "\"broad-aes\": CKA_NEVER_EXTRACTABLE is false"),
        (
            "signing-aes",
            "\"signing-aes\": CKA_SIGN is true but must be false",
        ),
    ] {
        let edited = app.home.join(format!("{label}.toml"));
        std::fs::write(
            &edited,
            config.replace(
                "claims_key = \"notary-claims-1\"",
                &format!("claims_key = \"{label}\""),
            ),
        )
        .unwrap();
        let out = app::run_cli(&["check", "--config", edited.to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(refusal), "{}", stderr(&out));
    }
}

#[tokio::test]
async fn a_token_without_the_claims_key_is_refused_until_the_operator_makes_it() {
    let mut app = app::builder().start().await;
    app.stop();
    // A set-up from before the claims key: the token lacks it.
    let out = std::process::Command::new("bash")
        .args([
            "-euo",
            "pipefail",
            "-c",
            "pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so --token-label notary --login \
               --pin \"$(cat \"$PIN_FILE\")\" --delete-object --type secrkey \
               --label notary-claims-1 >/dev/null",
        ])
        .env("SOFTHSM2_CONF", app.home.join("softhsm2.conf"))
        .env("PIN_FILE", app.home.join("hsm/user-pin"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let config = app.config_path();
    let config = config.to_str().unwrap();
    let out = std::process::Command::new("timeout")
        .args(["60", app::BIN, "serve", "--config", config])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let refusal = stderr(&out);
    assert!(
        refusal.contains("no claims key \"notary-claims-1\"")
            && refusal.contains("notary keys generate-claims-key"),
        "{refusal}"
    );

    let out = app.cli(&["keys", "generate-claims-key"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = app.cli(&["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Once only.
    let out = app.cli(&["keys", "generate-claims-key"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already holds a claims key"),
        "{}",
        stderr(&out)
    );
}

/// An offer stored in clear by an older notary (schema version 4) loses its
/// claims in the migration, and the bytes are overwritten in the file.
#[tokio::test]
async fn migrating_drops_the_plaintext_claims_of_older_offers() {
    if app::on_postgres() {
        return; // the file scan is SQLite's; the PostgreSQL migration is the same SQL.
    }
    let mut app = app::builder().start().await;
    app.stop();
    for name in ["notary.db", "notary.db-wal", "notary.db-shm"] {
        let _ = std::fs::remove_file(app.home.join(name));
    }
    // Schema version 4, from this tree's own migration files.
    let v4 = tempfile::tempdir().unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        if name.to_str().unwrap() < "0005" {
            std::fs::copy(&path, v4.path().join(name)).unwrap();
        }
    }
    let url = format!("sqlite:{}?mode=rwc", app.home.join("notary.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::migrate::Migrator::new(v4.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO offers (id, code_hash, credential_ids, claims, state, max_attempts, \
         created_at, expires_at) VALUES ('old', x'00', '[\"UniversityDegree_jwt\"]', \
         '{\"degree\":\"Plain-Qx7-Old\"}', 'pending', 5, 0, 4000000000)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert!(contains(&database_bytes(&app), "Plain-Qx7-Old"), "control");

    let out = app.cli(&["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!contains(&database_bytes(&app), "Plain-Qx7-Old"));
    assert_eq!(sealed(&app, "old").await, "deleted");
}
