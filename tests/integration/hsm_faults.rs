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

/// Runs `script` with `SOFTHSM2_CONF` set to the set-up in `home`.
fn softhsm(home: &std::path::Path, script: &str) {
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .env("SOFTHSM2_CONF", home.join("softhsm2.conf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn readyz(app: &app::TestApp) -> Option<u16> {
    let r = app.http().get(app.url("/readyz")).send().await.ok()?;
    Some(r.status().as_u16())
}

/// After the module is re-initialised, the slot may hold another token with
/// the same label, even with keys of the same labels made the same way and
/// the same PIN. notary checks the token's serial before it logs in again
/// and stays unready (503) rather than serve with other keys; when its own
/// token is back, it recovers.
#[tokio::test]
async fn another_token_with_the_same_label_keys_and_pin_is_not_used() {
    let app = app::builder().start().await;
    let other = app.home.parent().unwrap().join("other");
    let out = app::run_cli(&["init", "--dir", other.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pin = std::fs::read_to_string(app.home.join("hsm/user-pin")).unwrap();
    let so_pin = std::fs::read_to_string(other.join("hsm/so-pin")).unwrap();
    softhsm(
        &other,
        &format!(
            "pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so --token-label notary \
               --login --login-type so --so-pin '{}' --init-pin --new-pin '{}' >/dev/null",
            so_pin.trim(),
            pin.trim()
        ),
    );

    let tokens = app.home.join("tokens");
    let away = app.home.join("tokens.away");
    std::fs::rename(&tokens, &away).unwrap();
    std::fs::rename(other.join("tokens"), &tokens).unwrap();
    // A readiness verdict from before the swap may be reused for a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..30 {
        assert_ne!(
            readyz(&app).await,
            Some(200),
            "served with another token's keys: {}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        app.log()
            .contains("the slot holds another token than the one notary started with"),
        "{}",
        app.log()
    );

    std::fs::rename(&tokens, other.join("tokens")).unwrap();
    std::fs::rename(&away, &tokens).unwrap();
    assert!(
        app.became_ready(&app.base, Duration::from_secs(10)).await,
        "its own token is served again: {}",
        app.log()
    );
}

/// The PIN is changed on the token while notary serves, then the token goes
/// away and comes back: the recovery's login is refused. notary presents
/// the PIN no more (whatever path recovers next), stops, and exits with
/// status 78, which the unit's `RestartPreventExitStatus=` keeps systemd
/// from restarting into another refused login.
#[tokio::test]
async fn a_pin_refused_while_serving_is_presented_once_and_stops_the_server() {
    let mut app = app::builder().start().await;
    let pin = std::fs::read_to_string(app.home.join("hsm/user-pin")).unwrap();
    softhsm(
        &app.home,
        &format!(
            "pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so --token-label notary \
               --login --pin '{}' --change-pin --new-pin 'changed-elsewhere' >/dev/null",
            pin.trim()
        ),
    );
    let tokens = app.home.join("tokens");
    let away = app.home.join("tokens.away");
    std::fs::rename(&tokens, &away).unwrap();
    // Readiness verdicts are reused for up to a second.
    let mut ready = readyz(&app).await;
    for _ in 0..30 {
        if ready == Some(503) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready = readyz(&app).await;
    }
    assert_eq!(ready, Some(503));
    std::fs::rename(&away, &tokens).unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = app.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running after the PIN was refused: {}",
            app.log()
        );
        let _ = readyz(&app).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = app.log();
    assert_eq!(status.code(), Some(78), "{log}");
    let (_, after_refusal) = log
        .split_once("the token refused the PIN")
        .unwrap_or_else(|| panic!("no refusal logged: {log}"));
    assert!(
        !after_refusal.contains("logging in to the HSM token")
            && !after_refusal.contains("the token refused the PIN;"),
        "the PIN was presented again after the refusal: {log}"
    );
    assert!(!log.contains("changed-elsewhere") && !log.contains(pin.trim()));
}
