//! Hostile input: oversized and malformed headers, oversized and deeply
//! nested bodies, Unicode tricks in codes and PINs. Each gets its 4xx, and
//! a well-behaved wallet redeeming at the same time is not affected.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::app::{self, GRANT, TestApp, raw_tls};

/// Sends raw bytes over TLS (HTTP/1.1) and returns the status line.
async fn raw_status(app: &TestApp, request: &[u8]) -> String {
    let mut stream = raw_tls(app).await;
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// A good redemption, to show other clients are unaffected.
async fn good_wallet_redeems(app: &TestApp) {
    let (_, code, pin) = app.offer_with_pin().await;
    let (status, body) = app
        .redeem_form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &code),
            ("tx_code", &pin),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn oversized_and_malformed_heads_get_4xx() {
    let app = app::builder().start().await;
    let big = "a".repeat(64 * 1024);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a 64 KiB header",
            format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\n\r\n").into_bytes(),
            "431",
        ),
        (
            "200 header fields",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
                (0..200).map(|i| format!("X-{i}: v\r\n")).collect::<String>()
            )
            .into_bytes(),
            "431",
        ),
        (
            "a header name with a space",
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nBad Name: v\r\n\r\n".to_vec(),
            "400",
        ),
        (
            "a NUL in a header value",
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-A: a\x00b\r\n\r\n".to_vec(),
            "400",
        ),
        (
            "not HTTP at all",
            b"\x16\x03\x01garbage\r\n\r\n".to_vec(),
            "400",
        ),
        (
            "a 1 MiB declared body",
            b"POST /oid4vci/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\nConnection: close\r\n\r\n{".to_vec(),
            "413",
        ),
        (
            "two Content-Length headers that disagree",
            b"POST /oid4vci/token HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}".to_vec(),
            "400",
        ),
    ];
    for (what, request, status) in cases {
        let line = raw_status(&app, &request).await;
        assert!(
            line.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: {line:?}"
        );
        good_wallet_redeems(&app).await;
    }
}

#[tokio::test]
async fn deep_json_and_unicode_tricks_are_refused_without_effect() {
    let app = app::builder().start().await;
    let (offer, code, pin) = app.offer_with_pin().await;
    let token_url = app.url("/oid4vci/token");
    // JSON nested far deeper than any parser should follow (and within 4 KiB).
    let deep = format!("{}{}", "[".repeat(2000), "]".repeat(2000));
    let r = app
        .http()
        .post(&token_url)
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");

    // Codes that look like the real one but are not byte-for-byte equal:
    // a zero-width space, full-width letters, a NUL, a right-to-left mark.
    let fullwidth: String = code
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                char::from_u32(c as u32 + 0xFEE0).unwrap()
            } else {
                c
            }
        })
        .collect();
    for lookalike in [
        format!("{code}\u{200B}"),
        fullwidth,
        format!("{code}\u{0000}"),
        format!("\u{200F}{code}"),
        code.to_uppercase(),
    ] {
        let (status, body) = app
            .redeem_form(&[
                ("grant_type", GRANT),
                ("pre-authorized_code", &lookalike),
                ("tx_code", &pin),
            ])
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{body}"
        );
    }
    // A PIN in full-width digits is a wrong PIN (counted), never the PIN.
    let fullwidth_pin: String = pin
        .chars()
        .map(|c| char::from_u32(c as u32 + 0xFEE0).unwrap())
        .collect();
    let (status, body) = app
        .redeem_form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &code),
            ("tx_code", &fullwidth_pin),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("4 attempt"),
        "{body}"
    );
    // Invalid UTF-8 in a form body: refused as malformed, not matched.
    let r = app
        .http()
        .post(&token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type={GRANT}&pre-authorized_code=%FF%FE&tx_code={pin}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The offer is still redeemable with the real code and PIN.
    assert_eq!(app.offer_view(&offer).await["state"], "pending");
    let (status, _) = app
        .redeem_form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &code),
            ("tx_code", &pin),
        ])
        .await;
    assert_eq!(status, 200);
}
