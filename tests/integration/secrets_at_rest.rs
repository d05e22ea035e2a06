//! The database holds no code, PIN or API key in any readable form.

use serde_json::json;

use crate::app::{self, GRANT};

/// Every byte the database holds: the SQLite files (WAL included), or a
/// full `pg_dump` of the PostgreSQL database.
pub fn database_bytes(app: &app::TestApp) -> Vec<u8> {
    let url = app::database_url(&app.config_path());
    let mut all = Vec::new();
    if url.starts_with("sqlite:") {
        for name in ["notary.db", "notary.db-wal", "notary.db-shm"] {
            if let Ok(bytes) = std::fs::read(app.home.join(name)) {
                all.extend(bytes);
            }
        }
    } else {
        let out = std::process::Command::new("pg_dump")
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        all = out.stdout;
    }
    assert!(all.len() > 4096, "the database was read");
    all
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn no_plaintext_code_pin_or_admin_key_in_the_database() {
    let app = app::builder().start().await;
    let mut secrets = vec![app.admin_key.clone()];
    for i in 0..10 {
        let offer = app
            .create_offer(
                json!({"credentials": ["UniversityDegree_jwt"], "userId": format!("user-{i}"),
                                 "transactionCode": {"length": 8}}),
            )
            .await;
        let code = app::code_of(&offer);
        let pin = offer["transactionCode"].as_str().unwrap().to_owned();
        if i % 2 == 0 {
            let (status, _) = app
                .redeem_form(&[
                    ("grant_type", GRANT),
                    ("pre-authorized_code", &code),
                    ("tx_code", &pin),
                ])
                .await;
            assert_eq!(status, 200);
        }
        secrets.push(code);
        secrets.push(pin);
    }
    let bytes = database_bytes(&app);
    // The scanner works: a value we know is stored is found.
    assert!(contains(&bytes, "user-3"), "control value must be found");
    for secret in &secrets {
        assert!(
            !contains(&bytes, secret),
            "a secret was found in the database"
        );
    }
}
