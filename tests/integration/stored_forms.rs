//! How codes and PINs are stored: since 2026-12-05 an offer keeps the
//! SHA-256 of its code's keyed hash (the code key) and a PIN verifier keyed
//! by the code key; offers stored before kept the code key itself and an
//! HSM-made PIN hash: their lookup key is converted, and they must still
//! redeem, exactly as before.

use serde_json::{Value, json};

use crate::app::{self, GRANT, TestApp};

const CHILD: &str = "NOTARY_TEST_STORED_FORMS_CHILD";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A byte-string literal in the test's database dialect.
fn blob(hex: &str) -> String {
    if app::on_postgres() {
        format!("'\\x{hex}'::bytea")
    } else {
        format!("X'{hex}'")
    }
}

/// The forms an offer stored before 2026-12-05 would have (its lookup key
/// and PIN hash, hex), and today's lookup key, made in the app's HSM by a
/// child process.
fn legacy_forms(app: &TestApp, offer_id: &str, code: &str, pin: &str) -> (String, String, String) {
    let out = app.home.join(format!("legacy-{offer_id}.json"));
    let task = json!({"home": app.home, "id": offer_id, "code": code, "pin": pin, "out": out});
    app::run_child_test(app, "stored_forms::child", CHILD, task.to_string().as_ref());
    let forms: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let s = |k: &str| forms[k].as_str().unwrap().to_owned();
    (s("code_hash"), s("pin_hash"), s("lookup"))
}

/// The child's half: does nothing unless started by `legacy_forms`.
#[tokio::test]
#[ignore = "run by legacy_forms in a process of its own"]
async fn child() {
    use notary::issuance::hashing;
    use notary::secret::{PreAuthorizedCode, TxCode};
    let Ok(task) = std::env::var(CHILD) else {
        return;
    };
    let task: Value = serde_json::from_str(&task).unwrap();
    let s = |k: &str| task[k].as_str().unwrap().to_owned();
    let home = std::path::PathBuf::from(s("home"));
    let hsm = tokio::task::spawn_blocking(move || app::open_hsm(&home, None))
        .await
        .unwrap();
    let key = hashing::code_key(&hsm, &PreAuthorizedCode::new(s("code")))
        .await
        .unwrap();
    let pin_hash = hsm
        .keyed_hash(hashing::pin_message(&s("id"), &TxCode::new(s("pin"))))
        .await
        .unwrap();
    let forms = json!({"code_hash": hex(key.stored_before_v2().as_slice()), "pin_hash": hex(&pin_hash),
                       "lookup": hex(&key.lookup())});
    std::fs::write(s("out"), forms.to_string()).unwrap();
}

async fn redeem(app: &TestApp, code: &str, pin: &str) -> (u16, Value) {
    app.redeem_form(&[
        ("grant_type", GRANT),
        ("pre-authorized_code", code),
        ("tx_code", pin),
    ])
    .await
}

fn wrong(pin: &str) -> String {
    pin.chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect()
}

/// The offer's stored code hash and PIN hash (hex) and stored form.
async fn stored(app: &TestApp, id: &str) -> String {
    app::db_text(
        &app.config_path(),
        &format!(
            "SELECT {} FROM offers WHERE id = '{id}'",
            if app::on_postgres() {
                "encode(code_hash, 'hex') || ' ' || encode(pin_hash, 'hex') || ' ' || CAST(stored_form AS TEXT)"
            } else {
                "lower(hex(code_hash)) || ' ' || lower(hex(pin_hash)) || ' ' || CAST(stored_form AS TEXT)"
            }
        ),
    )
    .await
}

#[tokio::test]
async fn an_offer_stored_in_the_earlier_form_is_converted_and_still_redeems() {
    let app = app::builder().start().await;
    let (offer, code, pin) = app.offer_with_pin().await;
    let id = offer["id"].as_str().unwrap();
    let (code_key, pin_hash, lookup) = legacy_forms(&app, id, &code, &pin);
    // What notary stores: the SHA-256 form of the code key, not the code
    // key, and a 33-byte verifier, not the HSM's PIN hash.
    let now = stored(&app, id).await;
    let fields: Vec<&str> = now.split(' ').collect();
    assert_eq!(fields[0], lookup);
    assert_ne!(fields[1], pin_hash);
    assert_eq!(fields[1].len(), 66, "{now}");
    assert_eq!(fields[2], "3");

    // Rewritten to the earlier form, as a database from before holds it.
    app.sql(&[&format!(
        "UPDATE offers SET code_hash = {}, pin_hash = {}, stored_form = 1 WHERE id = '{id}'",
        blob(&code_key),
        blob(&pin_hash)
    )])
    .await;
    // Not found until converted: the code key is never looked up.
    let (status, body) = redeem(&app, &code, &pin).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // Any command that opens the store converts it (here `migrate`).
    let out = app.cli(&["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stored(&app, id).await, format!("{lookup} {pin_hash} 2"));

    let (status, body) = redeem(&app, &code, &wrong(&pin)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(app.offer_view(&offer).await["attempts"], 1);
    let (status, body) = redeem(&app, &code, &pin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.offer_view(&offer).await["state"], "redeemed");
    // And once only.
    let (status, _) = redeem(&app, &code, &pin).await;
    assert_eq!(status, 400);
}
