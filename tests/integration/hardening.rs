//! Request hardening: slow headers, slow bodies and too many connections.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::app::{self, GRANT, raw_tls};

/// Reads until the server closes the connection; returns what it sent.
async fn read_until_closed(stream: &mut TlsStream<TcpStream>, within: Duration) -> String {
    let mut out = Vec::new();
    let result = tokio::time::timeout(within, stream.read_to_end(&mut out)).await;
    assert!(result.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let app = app::builder()
        .set("server", "header_read_timeout_secs", 2)
        .start()
        .await;
    let mut stream = raw_tls(&app).await;
    stream
        .write_all(b"POST /oid4vci/token HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    read_until_closed(&mut stream, Duration::from_secs(8)).await;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "closed too early: {waited:?}"
    );
}

#[tokio::test]
async fn slow_bodies_get_408() {
    let app = app::builder()
        .set("server", "body_read_timeout_secs", 2)
        .start()
        .await;
    let mut stream = raw_tls(&app).await;
    let head = "POST /oid4vci/token HTTP/1.1\r\nHost: localhost\r\n\
                Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 300\r\n\
                Connection: close\r\n\r\ngrant_type=";
    stream.write_all(head.as_bytes()).await.unwrap();
    let response = read_until_closed(&mut stream, Duration::from_secs(8)).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        response.contains("\"error\":\"invalid_request\""),
        "{response}"
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let app = app::builder()
        .set("server", "max_connections", 2)
        .start()
        .await;
    let admin = app.client_from(None);
    let offer: serde_json::Value = admin
        .post(app.url("/v1/openid/offers/pre-authorized"))
        .bearer_auth(&app.admin_key)
        .json(&serde_json::json!({"credentials": ["UniversityDegree_jwt"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    drop(admin);
    let (code, pin) = (
        app::code_of(&offer),
        offer["transactionCode"].as_str().unwrap().to_owned(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = [raw_tls(&app).await, raw_tls(&app).await];
    let form = [
        ("grant_type", GRANT),
        ("pre-authorized_code", code.as_str()),
        ("tx_code", pin.as_str()),
    ];
    let quick = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(
            &std::fs::read(app.home.join("tls/cert.pem")).unwrap(),
        )
        .unwrap()])
        .timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    let blocked = quick
        .post(app.url("/oid4vci/token"))
        .form(&form)
        .send()
        .await;
    assert!(
        blocked.is_err(),
        "a third connection must wait while two are open"
    );
    drop(held);
    let r = app
        .client_from(None)
        .post(app.url("/oid4vci/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "served once a slot is free");
}

#[tokio::test]
async fn idle_http2_connections_are_closed() {
    let app = app::builder()
        .set("server", "max_connections", 1)
        .set("server", "header_read_timeout_secs", 2)
        .start()
        .await;
    let cert =
        reqwest::Certificate::from_pem(&std::fs::read(app.home.join("tls/cert.pem")).unwrap())
            .unwrap();
    let client = |timeout_ms| {
        reqwest::Client::builder()
            .tls_certs_only([cert.clone()])
            .timeout(Duration::from_millis(timeout_ms))
            .build()
            .unwrap()
    };
    // Let the readiness probe's connection close first.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let first = client(5000);
    let r = first.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    // `first` keeps its HTTP/2 connection open and idle: it holds the only slot.
    assert!(client(1000).get(app.url("/healthz")).send().await.is_err());
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let r = client(5000).get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "the idle connection was closed and its slot freed"
    );
    drop(first);
}
