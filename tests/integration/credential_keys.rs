//! Credential keys: made by `init` under the custody rule, rotated and
//! retired apart from the Notary keys, never picked by the token ring, a
//! CSR signed in the HSM that OpenSSL verifies, and the CA's chain attached
//! (and refused for another key), on both database backends.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::app::{self, GRANT, TestApp};

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The one-line error of a command that must fail (`serve` logs before it).
fn refused(out: std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8(out.stderr).unwrap();
    let errors: Vec<&str> = err.lines().filter(|l| !l.contains(" INFO ")).collect();
    assert_eq!(errors.len(), 1, "one line: {err}");
    assert!(errors[0].starts_with("notary: "), "{err}");
    errors[0].to_owned()
}

/// `keys list` as rows of fields: kid, label, alg, state, purpose, ...
fn keys(app: &TestApp) -> Vec<Vec<String>> {
    ok(app.cli(&["keys", "list"]))
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

fn row<'a>(rows: &'a [Vec<String>], kid: &str) -> &'a [String] {
    rows.iter().find(|r| r[0] == kid).unwrap()
}

/// The kid of the active key of `purpose`.
fn active(app: &TestApp, purpose: &str) -> String {
    let rows = keys(app);
    let mut found = rows.iter().filter(|r| r[3] == "active" && r[4] == purpose);
    let kid = found.next().unwrap()[0].clone();
    assert!(found.next().is_none(), "one active {purpose} key: {rows:?}");
    kid
}

fn custody(app: &TestApp) -> Value {
    serde_json::from_str(&ok(app.cli(&["keys", "custody-report", "--json"]))).unwrap()
}

fn evidence(report: &Value, kid: &str) -> Value {
    report["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .cloned()
        .unwrap()
}

async fn jwks_kids(app: &TestApp) -> Vec<String> {
    app.jwks().await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Redeems an offer; returns the access token's `kid`.
async fn token_kid(app: &TestApp) -> String {
    let offer = app
        .create_offer(json!({"credentials": ["UniversityDegree_jwt"], "transactionCode": false}))
        .await;
    let (status, body) = app
        .redeem_form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &app::code_of(&offer)),
        ])
        .await;
    assert_eq!(status, 200);
    let token = body["access_token"].as_str().unwrap();
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

async fn wait_for_log(app: &TestApp, what: &str) {
    for _ in 0..100 {
        if app.log().contains(what) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server never logged {what:?}: {}", app.log());
}

/// Runs a shell script in `dir`; fails the test if it fails. Returns stdout.
fn sh(dir: &Path, script: &str) -> Vec<u8> {
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test]
async fn init_makes_an_active_credential_key_under_the_custody_rule() {
    let app = app::builder().start().await;
    let credential = active(&app, "credential");
    let token = active(&app, "token");
    let rows = keys(&app);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        row(&rows, &credential)[1..5],
        ["notary-credential-1", "ES256", "active", "credential"]
    );

    let report = custody(&app);
    let key = evidence(&report, &credential);
    assert_eq!(key["role"], "credential");
    assert_eq!(key["algorithm"], "ES256");
    assert_eq!(key["state"], "active");
    assert_eq!(key["signatures"], 0);
    assert_eq!(key["custody"]["label"], "notary-credential-1");
    assert_eq!(key["custody"]["key"], "P-256");
    assert_eq!(key["custody"]["key_gen_mechanism"], "CKM_EC_KEY_PAIR_GEN");
    assert_eq!(key["custody"]["id"].as_str().unwrap().len(), 16);
    assert!(key.get("certificate").is_none());
    let attributes: std::collections::HashMap<&str, &Value> = key["custody"]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), &a["value"]))
        .collect();
    for (name, want) in [
        ("CKA_LOCAL", true),
        ("CKA_NEVER_EXTRACTABLE", true),
        ("CKA_ALWAYS_SENSITIVE", true),
        ("CKA_EXTRACTABLE", false),
        ("CKA_SENSITIVE", true),
        ("CKA_PRIVATE", true),
        ("CKA_DERIVE", false),
        ("CKA_DECRYPT", false),
        ("CKA_UNWRAP", false),
        ("CKA_MODIFIABLE", false),
    ] {
        assert_eq!(attributes[name], &json!(want), "{name}");
    }
    let text = ok(app.cli(&["keys", "custody-report"]));
    assert!(
        text.contains("key \"notary-credential-1\" (Credential, ES256)"),
        "{text}"
    );

    // Signatures: tokens for the Notary key, `credential.issued` entries
    // (written by the credential endpoint, kid in the details) for this one.
    assert_eq!(
        token_kid(&app).await,
        token,
        "the token ring signs with the token key"
    );
    let store = notary::store::Store::connect(&app::database_url(&app.config_path()), 1)
        .await
        .unwrap();
    for n in 0..2 {
        let event = notary::audit::AuditEvent::new(
            "credential.issued",
            format!("offer-{n}"),
            json!({ "kid": credential, "format": "dc+sd-jwt" }),
        );
        store.audit(event, notary::issuance::now()).await.unwrap();
    }
    store.close().await;
    let report = custody(&app);
    assert_eq!(evidence(&report, &credential)["signatures"], 2);
    assert_eq!(evidence(&report, &token)["signatures"], 1);
    ok(app.cli(&["audit", "verify"]));

    // The JWKS (access tokens) never publishes the credential key.
    assert_eq!(jwks_kids(&app).await, vec![token]);
}

#[tokio::test]
async fn rotating_one_purpose_leaves_the_other_alone() {
    let app = app::builder().set("keys", "refresh_secs", 1).start().await;
    let t0 = active(&app, "token");
    let c0 = active(&app, "credential");

    let out = ok(app.cli(&["keys", "rotate", "--purpose", "credential"]));
    let c1 = out.split_whitespace().nth(1).unwrap().to_owned();
    assert!(out.contains(&format!("retiring: {c0}")), "{out}");
    wait_for_log(&app, &format!("credential_kid={c1}")).await;
    let rows = keys(&app);
    assert_eq!(
        row(&rows, &c1)[1..5],
        ["notary-credential-2", "ES256", "active", "credential"]
    );
    assert_eq!(row(&rows, &c0)[3], "retiring");
    assert!(
        !row(&rows, &c0)
            .iter()
            .any(|f| f.starts_with("verifies until")),
        "a credential key stays published without an end: {rows:?}"
    );
    assert_eq!(row(&rows, &t0)[3], "active", "the token key is untouched");
    assert_eq!(jwks_kids(&app).await, vec![t0.clone()]);
    assert_eq!(token_kid(&app).await, t0);

    let out = ok(app.cli(&["keys", "rotate"]));
    let t1 = out.split_whitespace().nth(1).unwrap().to_owned();
    let rows = keys(&app);
    assert_eq!(row(&rows, &t1)[4], "token");
    assert_eq!(row(&rows, &t0)[3], "retiring");
    assert!(row(&rows, &t0)[6].starts_with("verifies until"), "{rows:?}");
    assert_eq!(
        row(&rows, &c1)[3],
        "active",
        "the credential key is untouched"
    );
    assert_eq!(row(&rows, &c0)[3], "retiring");
    let mut published = jwks_kids(&app).await;
    for _ in 0..100 {
        if published.contains(&t1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        published = jwks_kids(&app).await;
    }
    published.sort();
    let mut tokens = vec![t0.clone(), t1.clone()];
    tokens.sort();
    assert_eq!(published, tokens, "only token keys are ever in the JWKS");

    // A retiring credential key is retired only on purpose.
    let err = refused(app.cli(&["keys", "retire", &c0]));
    assert!(
        err.contains(&format!("credentials signed by {c0} will no longer verify"))
            && err.contains("--force"),
        "{err}"
    );
    ok(app.cli(&["keys", "retire", &c0, "--force"]));
    assert_eq!(row(&keys(&app), &c0)[3], "retired");

    // A pending key is rotated to with its own purpose only.
    let out = ok(app.cli(&[
        "keys",
        "generate",
        "--purpose",
        "credential",
        "--alg",
        "EdDSA",
    ]));
    let pending = out.split_whitespace().nth(1).unwrap().to_owned();
    let err = refused(app.cli(&["keys", "rotate", "--kid", &pending]));
    assert!(
        err.contains("is a credential key: rotate it with --purpose credential"),
        "{err}"
    );
    assert_eq!(active(&app, "token"), t1);
    ok(app.cli(&[
        "keys",
        "rotate",
        "--kid",
        &pending,
        "--purpose",
        "credential",
    ]));
    assert_eq!(active(&app, "credential"), pending);
    assert_eq!(row(&keys(&app), &pending)[2], "EdDSA");
    assert_eq!(active(&app, "token"), t1);

    let audit = app::audit_rows(&app.config_path()).await;
    assert!(audit.contains("\"purpose\":\"credential\""), "{audit}");
    assert!(audit.contains("key.retired"), "{audit}");
}

#[tokio::test]
async fn a_csr_signed_in_the_hsm_verifies_and_the_cas_chain_is_attached() {
    let app = app::builder().set("keys", "refresh_secs", 1).start().await;
    let kid = active(&app, "credential");
    let token = active(&app, "token");
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let csr = dir.join("csr.pem");
    let subject = "CN=Example Issuer,O=Example University,C=NL";
    let out = ok(app.cli(&[
        "keys",
        "csr",
        "--kid",
        &kid,
        "--subject",
        subject,
        "--out",
        csr.to_str().unwrap(),
    ]));
    assert!(out.contains("wrote the certificate request"), "{out}");

    // OpenSSL checks the self-signature; the subject and key are the key's.
    sh(
        dir,
        "openssl req -verify -noout -in csr.pem 2>&1 | grep -q 'verify OK'",
    );
    let subject_line =
        String::from_utf8(sh(dir, "openssl req -in csr.pem -noout -subject")).unwrap();
    assert!(
        subject_line.contains("C = NL, O = Example University, CN = Example Issuer"),
        "{subject_line}"
    );
    let text = String::from_utf8(sh(dir, "openssl req -in csr.pem -noout -text")).unwrap();
    assert!(
        text.contains("ecdsa-with-SHA256") && text.contains("Digital Signature"),
        "{text}"
    );
    let spki = sh(
        dir,
        "openssl req -in csr.pem -noout -pubkey | openssl pkey -pubin -outform DER",
    );
    let jwk: Value = serde_json::from_str(
        &app::db_text(
            &app.config_path(),
            &format!("SELECT public_jwk FROM signing_keys WHERE kid = '{kid}'"),
        )
        .await,
    )
    .unwrap();
    let mut point = vec![0x04];
    for c in ["x", "y"] {
        point.extend(URL_SAFE_NO_PAD.decode(jwk[c].as_str().unwrap()).unwrap());
    }
    assert!(spki.ends_with(&point), "the CSR's key is the JWK's");
    // Without --out the request goes to standard output.
    let printed = ok(app.cli(&["keys", "csr", "--kid", &kid, "--subject", "CN=x"]));
    assert!(
        printed.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{printed}"
    );

    // A throwaway CA issues the certificate; its chain is attached.
    sh(
        dir,
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
           -out ca.pem -subj '/CN=Test Issuing CA' -days 2 2>/dev/null
         openssl x509 -req -in csr.pem -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem \
           -days 1 2>/dev/null
         cat leaf.pem ca.pem > chain.pem
         openssl x509 -in leaf.pem -outform DER -out leaf.der
         # A certificate for another key, from the same CA.
         openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout other.key \
           -out other.csr -subj '/CN=Example Issuer' 2>/dev/null
         openssl x509 -req -in other.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out other.pem \
           -days 1 2>/dev/null
         cat other.pem ca.pem > other-chain.pem
         cat ca.pem leaf.pem > reversed.pem",
    );
    let chain = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let err = refused(app.cli(&[
        "keys",
        "certificate",
        "--kid",
        &kid,
        "--chain",
        &chain("other-chain.pem"),
    ]));
    assert!(
        err.contains("the certificate is for another public key"),
        "{err}"
    );
    let err = refused(app.cli(&[
        "keys",
        "certificate",
        "--kid",
        &kid,
        "--chain",
        &chain("reversed.pem"),
    ]));
    assert!(err.contains("another public key"), "{err}");
    let err = refused(app.cli(&[
        "keys",
        "certificate",
        "--kid",
        &token,
        "--chain",
        &chain("chain.pem"),
    ]));
    assert!(err.contains("signs access tokens"), "{err}");
    let err = refused(app.cli(&["keys", "csr", "--kid", &token, "--subject", subject]));
    assert!(err.contains("signs access tokens"), "{err}");
    let err = refused(app.cli(&[
        "keys",
        "csr",
        "--kid",
        &kid,
        "--subject",
        "CN=a,C=Netherlands",
    ]));
    assert!(err.contains("two-letter country code"), "{err}");
    assert!(
        !keys(&app)
            .iter()
            .any(|r| r.iter().any(|f| f.starts_with("certificate")))
    );

    let out = ok(app.cli(&[
        "keys",
        "certificate",
        "--kid",
        &kid,
        "--chain",
        &chain("chain.pem"),
    ]));
    assert!(
        out.contains("C=NL, O=Example University, CN=Example Issuer"),
        "{out}"
    );
    let rows = keys(&app);
    assert!(
        row(&rows, &kid)
            .last()
            .unwrap()
            .starts_with("certificate C=NL, O=Example University, CN=Example Issuer until "),
        "{rows:?}"
    );
    let x5c: Vec<String> = serde_json::from_str(
        &app::db_text(
            &app.config_path(),
            &format!("SELECT x5c FROM signing_keys WHERE kid = '{kid}'"),
        )
        .await,
    )
    .unwrap();
    let leaf = std::fs::read(dir.join("leaf.der")).unwrap();
    assert_eq!(x5c.len(), 2);
    assert_eq!(
        STANDARD.decode(&x5c[0]).unwrap(),
        leaf,
        "leaf first, standard base64 of the DER"
    );
    let leaf_sha256: String = Sha256::digest(&leaf)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let certificate = &evidence(&custody(&app), &kid)["certificate"];
    assert_eq!(certificate["sha256"], leaf_sha256.as_str());
    assert_eq!(certificate["issuer"], "CN=Test Issuing CA");
    let audit = app::audit_rows(&app.config_path()).await;
    assert!(audit.contains("key.csr_signed"), "{audit}");
    let attached = audit
        .lines()
        .find(|l| l.contains("key.certificate_attached"))
        .unwrap();
    assert!(
        attached.contains(&leaf_sha256) && attached.contains("CN=Example Issuer"),
        "{attached}"
    );
    // Running servers pick the chain up with the next key refresh.
    wait_for_log(&app, "credential_certificate=true").await;
    ok(app.cli(&["audit", "verify"]));

    // From then on credentials carry the chain as x5c, and the issuer
    // metadata publishes it with the key.
    let (_, token_body) = crate::credentials::redeemed(&app, "X5c1", None).await;
    let nonce = crate::credentials::fresh_nonce(&app).await;
    let holder = crate::wallet::WalletKey::p256();
    let body = json!({"credential_configuration_id": crate::credentials::SD_JWT,
        "proofs": {"jwt": [crate::credentials::proof(&app, &holder, &nonce, json!({}), json!({}))]}});
    let (status, answer, _) =
        crate::credentials::request(&app, token_body["access_token"].as_str().unwrap(), &body)
            .await;
    assert_eq!(status, 200, "{answer}");
    let jws = answer["credentials"][0]["credential"].as_str().unwrap();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jws.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], kid.as_str());
    assert_eq!(header["x5c"], json!(x5c));
    let published = app.get_json("/.well-known/jwt-vc-issuer").await;
    assert!(
        published["jwks"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid.as_str() && k["x5c"] == json!(x5c)),
        "{published}"
    );

    // An EdDSA credential key: its request verifies too.
    let out = ok(app.cli(&[
        "keys",
        "rotate",
        "--purpose",
        "credential",
        "--alg",
        "EdDSA",
    ]));
    let ed = out.split_whitespace().nth(1).unwrap().to_owned();
    ok(app.cli(&[
        "keys",
        "csr",
        "--kid",
        &ed,
        "--subject",
        subject,
        "--out",
        dir.join("ed.pem").to_str().unwrap(),
    ]));
    sh(
        dir,
        "openssl req -verify -noout -in ed.pem 2>&1 | grep -q 'verify OK'",
    );
    let spki = sh(
        dir,
        "openssl req -in ed.pem -noout -pubkey | openssl pkey -pubin -outform DER",
    );
    let jwk: Value = serde_json::from_str(
        &app::db_text(
            &app.config_path(),
            &format!("SELECT public_jwk FROM signing_keys WHERE kid = '{ed}'"),
        )
        .await,
    )
    .unwrap();
    assert!(spki.ends_with(&URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap()));
    // The chain made for the P-256 key is not the EdDSA key's.
    let err = refused(app.cli(&[
        "keys",
        "certificate",
        "--kid",
        &ed,
        "--chain",
        &chain("chain.pem"),
    ]));
    assert!(err.contains("another public key"), "{err}");
}

/// A database of schema version 5 (before credential keys) with its Notary
/// key: the migration makes it a token key, and the set-up keeps working
/// without a credential key until one is rotated in.
#[tokio::test]
async fn a_set_up_from_before_credential_keys_keeps_working() {
    let mut app = app::builder().start().await;
    let config = app.config_path();
    let token = active(&app, "token");
    let field = |column: &'static str| {
        let config = config.clone();
        let token = token.clone();
        async move {
            app::db_text(
                &config,
                &format!("SELECT CAST({column} AS TEXT) FROM signing_keys WHERE kid = '{token}'"),
            )
            .await
        }
    };
    let (label, jwk, created) = (
        field("label").await,
        field("public_jwk").await,
        field("created_at").await,
    );
    app.stop();

    // Schema version 5, from this tree's own migration files.
    let url = app::database_url(&config);
    let backend = if app::on_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    let v5 = tempfile::tempdir().unwrap();
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    for entry in std::fs::read_dir(&migrations).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        if name.to_str().unwrap() < "0006" {
            std::fs::copy(&path, v5.path().join(name)).unwrap();
        }
    }
    let migrator = sqlx::migrate::Migrator::new(v5.path()).await.unwrap();
    let insert = format!(
        "INSERT INTO signing_keys (kid, label, alg, public_jwk, state, created_at, activated_at) \
         VALUES ('{token}', '{label}', 'EdDSA', '{jwk}', 'active', {created}, {created})"
    );
    if app::on_postgres() {
        let name = url.rsplit('/').next().unwrap();
        app::psql_exec(&format!("DROP DATABASE {name} WITH (FORCE)"));
        app::psql_exec(&format!("CREATE DATABASE {name}"));
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        migrator.run(&pool).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(insert))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    } else {
        for name in ["notary.db", "notary.db-wal", "notary.db-shm"] {
            let _ = std::fs::remove_file(app.home.join(name));
        }
        let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
            .await
            .unwrap();
        migrator.run(&pool).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(insert))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let err = refused(app.cli(&["check"]));
    assert!(err.contains("run `notary migrate`"), "{err}");
    ok(app.cli(&["migrate"]));

    let rows = keys(&app);
    assert_eq!(rows.len(), 1);
    assert_eq!(row(&rows, &token)[3..5], ["active", "token"]);
    let out = ok(app.cli(&["check"]));
    assert!(
        out.contains("warn no credential key: run `notary keys rotate --purpose credential`"),
        "{out}"
    );
    assert!(!out.contains("ok   credential key"), "{out}");
    app.kill_and_restart().await;
    wait_for_log(
        &app,
        "no credential key: run notary keys rotate --purpose credential",
    )
    .await;
    assert_eq!(jwks_kids(&app).await, vec![token.clone()]);

    // The old label is still on the token: the first credential key gets the next one.
    let out = ok(app.cli(&["keys", "rotate", "--purpose", "credential"]));
    assert!(out.contains("notary-credential-2"), "{out}");
    assert!(
        !out.contains("retiring"),
        "there was no previous credential key: {out}"
    );
    let out = ok(app.cli(&["check"]));
    assert!(
        out.contains("ok   credential key \"notary-credential-2\" (active): ES256"),
        "{out}"
    );
    assert!(!out.contains("warn"), "{out}");
}

/// The token ring never takes a credential key, even when it is the only
/// active key: no Notary key means no tokens, whatever else is on the token.
#[tokio::test]
async fn the_token_ring_never_picks_a_credential_key() {
    let mut app = app::builder().start().await;
    app.stop();
    app.sql(&["DELETE FROM signing_keys WHERE purpose = 'token'"])
        .await;
    for command in ["check", "serve"] {
        let err = refused(app.cli(&[command]));
        assert!(
            err.contains("no active signing key: run `notary keys rotate`"),
            "{command}: {err}"
        );
    }
    let out = ok(app.cli(&["keys", "rotate", "--purpose", "credential"]));
    assert!(out.contains("retiring: "), "{out}");
    let err = refused(app.cli(&["check"]));
    assert!(err.contains("no active signing key"), "{err}");
    ok(app.cli(&["keys", "rotate"]));
    ok(app.cli(&["check"]));
}
