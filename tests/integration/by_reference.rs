//! Offers by reference: the `credential_offer_uri` gives wallets the offer
//! JSON and browsers an offer page whose QR code, read back from a
//! screenshot by an independent decoder, is the offer's deep link.

use std::process::Command;

use serde_json::{Value, json};

use crate::app::{self, GRANT, TestApp};

/// The https URL inside a by-reference deep link.
fn offer_url(deep_link: &str) -> String {
    let query = deep_link
        .strip_prefix("openid-credential-offer://?")
        .unwrap();
    let (name, value) = form_urlencoded::parse(query.as_bytes()).next().unwrap();
    assert_eq!(name, "credential_offer_uri");
    value.into_owned()
}

async fn fetch(app: &TestApp, url: &str, accept: &str) -> reqwest::Response {
    app.http()
        .get(url)
        .header("Accept", accept)
        .send()
        .await
        .unwrap()
}

/// Fetches the offer as a wallet does and redeems it; returns the status.
async fn redeem_by_reference(app: &TestApp, deep_link: &str, pin: Option<&str>) -> u16 {
    let r = fetch(app, &offer_url(deep_link), "application/json").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let offer: Value = r.json().await.unwrap();
    assert_eq!(offer["credential_issuer"], app.base);
    assert_eq!(
        offer["credential_configuration_ids"],
        json!(["UniversityDegree_jwt"])
    );
    let grant = &offer["grants"][GRANT];
    let code = grant["pre-authorized_code"].as_str().unwrap();
    let mut form = vec![("grant_type", GRANT), ("pre-authorized_code", code)];
    if let Some(pin) = pin {
        assert_eq!(grant["tx_code"]["length"], 6);
        form.push(("tx_code", pin));
    } else {
        assert!(grant.get("tx_code").is_none());
    }
    app.redeem_form(&form).await.0
}

#[tokio::test]
async fn wallets_fetch_and_redeem_offers_by_reference_once() {
    let app = app::builder().start().await;
    for with_pin in [true, false] {
        let offer = app
            .create_offer(json!({"credentials": ["UniversityDegree_jwt"], "byReference": true, "transactionCode": with_pin}))
            .await;
        let link = offer["uri"].as_str().unwrap();
        assert!(
            link.starts_with("openid-credential-offer://?credential_offer_uri="),
            "{link}"
        );
        let pin = offer["transactionCode"].as_str();
        assert_eq!(redeem_by_reference(&app, link, pin).await, 200);
        // Redeemed: the reference is gone for wallets and browsers alike.
        for accept in ["application/json", "text/html"] {
            let r = fetch(&app, &offer_url(link), accept).await;
            assert_eq!(r.status(), 404);
            let e: Value = r.json().await.unwrap();
            assert_eq!(e["error"], "not_found");
        }
    }
    // Revoked, expired and made-up references: 404 too.
    let revoked = app
        .create_offer(json!({"credentials": ["UniversityDegree_jwt"], "byReference": true}))
        .await;
    let r = app
        .http()
        .delete(app.url(&format!(
            "/v1/openid/offers/{}",
            revoked["id"].as_str().unwrap()
        )))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let expired = app
        .create_offer(
            json!({"credentials": ["UniversityDegree_jwt"], "byReference": true, "expiresIn": 1}),
        )
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    for link in [&revoked["uri"], &expired["uri"]] {
        let r = fetch(&app, &offer_url(link.as_str().unwrap()), "application/json").await;
        assert_eq!(r.status(), 404);
    }
    let made_up = app.url("/oid4vci/credential-offer/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(
        fetch(&app, &made_up, "application/json").await.status(),
        404
    );
}

#[tokio::test]
async fn the_offer_page_carries_the_qr_code_and_never_the_pin() {
    let app = app::builder().start().await;
    let offer = app
        .create_offer(json!({
            "credentials": ["UniversityDegree_jwt"],
            "byReference": true,
            "transactionCode": {"length": 6, "description": "Sent to you by <e-mail>"}
        }))
        .await;
    let link = offer["uri"].as_str().unwrap();
    let pin = offer["transactionCode"].as_str().unwrap();
    let url = offer_url(link);

    let r = fetch(&app, &url, "text/html,application/xhtml+xml,*/*;q=0.8").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let html = r.text().await.unwrap();
    assert!(html.contains("<svg"), "the page carries the QR code as SVG");
    assert!(html.contains("lang=\"en\"") && html.contains("aria-label="));
    assert!(
        html.contains("Sent to you by &lt;e-mail&gt;"),
        "description shown, escaped"
    );
    assert!(html.contains(&offer["expiresAt"].as_str().unwrap()[..19]));
    assert!(!html.contains(pin), "the page never shows the PIN");
}

/// A real browser renders the offer page; an independent decoder reads the
/// QR code. Needs `chromium` and `zbarimg`: scripts/test installs them, and
/// skips this test loudly (by name) on Ubuntu, where Chromium is a snap.
#[tokio::test]
async fn the_offer_page_qr_code_scans_in_a_real_browser() {
    let app = app::builder().start().await;
    let offer = app
        .create_offer(json!({
            "credentials": ["UniversityDegree_jwt"],
            "byReference": true,
            "transactionCode": {"length": 6, "description": "Sent to you by <e-mail>"}
        }))
        .await;
    let link = offer["uri"].as_str().unwrap();
    let pin = offer["transactionCode"].as_str().unwrap();
    let url = offer_url(link);

    let shots = tempfile::tempdir().unwrap();
    let shot = shots.path().join("offer.png");
    let profile = shots.path().join("profile");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--ignore-certificate-errors",
            "--window-size=800,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .expect("chromium is installed (scripts/test installs it)");
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(&shot)
        .output()
        .expect("zbarimg is installed (zbar-tools; scripts/test installs it)");
    let decoded = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        decoded.trim_end(),
        link,
        "the QR code is the offer's deep link"
    );

    // The page view did not spend the offer; the scanned link redeems.
    assert_eq!(
        redeem_by_reference(&app, decoded.trim_end(), Some(pin)).await,
        200
    );
}

#[tokio::test]
async fn references_stay_out_of_logs_and_guessing_them_is_flood_limited() {
    let app = app::builder()
        .log_level("trace")
        .set("flood", "max_failures", 3)
        .start()
        .await;
    let offer = app
        .create_offer(json!({"credentials": ["UniversityDegree_jwt"], "byReference": true}))
        .await;
    let url = offer_url(offer["uri"].as_str().unwrap());
    let reference = url.rsplit('/').next().unwrap().to_owned();
    assert_eq!(fetch(&app, &url, "application/json").await.status(), 200);
    let log = app.log();
    assert!(
        log.contains("credential-offer/[REDACTED]"),
        "the request is logged, redacted"
    );
    assert!(
        !log.contains(&reference),
        "the reference must not reach the log"
    );

    // Guessed references count like unknown codes, per address.
    let mut statuses = Vec::new();
    for i in 0..5 {
        let guess = app.url(&format!(
            "/oid4vci/credential-offer/{}{i:03}",
            "A".repeat(40)
        ));
        statuses.push(
            fetch(&app, &guess, "application/json")
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [404, 404, 404, 429, 429]);
}
