//! Behaving as a systemd service: readiness, watchdog and stop
//! notifications, graceful shutdown, and TLS reload on SIGHUP.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixDatagram;

use crate::app::{self, GRANT, raw_tls};

/// Collects every notification, as systemd would, until `until` arrives.
async fn messages(socket: &UnixDatagram, until: &str, within: Duration) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = vec![0u8; 4096];
    while !seen.iter().any(|m: &String| m.contains(until)) {
        match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => seen.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            _ => break,
        }
    }
    seen
}

#[tokio::test]
async fn notifies_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut app = app::builder()
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .env("WATCHDOG_USEC", "400000")
        .start()
        .await;
    let seen = messages(&socket, "READY=1", Duration::from_secs(5)).await;
    assert!(
        seen.iter()
            .any(|m| m.contains("READY=1") && m.contains("STATUS=serving on")),
        "{seen:?}"
    );
    let watchdog = messages(&socket, "WATCHDOG=1", Duration::from_secs(3)).await;
    assert!(
        watchdog.iter().any(|m| m.contains("WATCHDOG=1")),
        "{watchdog:?}"
    );
    // Keep reading while the server stops, as systemd does.
    let reader =
        tokio::spawn(async move { messages(&socket, "STOPPING=1", Duration::from_secs(20)).await });
    app.stop();
    let stopping = reader.await.unwrap();
    assert!(
        stopping.iter().any(|m| m.contains("STOPPING=1")),
        "{stopping:?}"
    );
}

#[tokio::test]
async fn never_ready_when_the_hsm_login_fails() {
    let app = app::builder().start().await;
    std::fs::write(app.home.join("hsm/user-pin"), "wrong\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let out = std::process::Command::new(app::BIN)
        .args(["serve", "--config", app.config_path().to_str().unwrap()])
        .env("NOTIFY_SOCKET", &path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let seen = messages(&socket, "READY=1", Duration::from_millis(300)).await;
    assert!(seen.iter().all(|m| !m.contains("READY=1")), "{seen:?}");
}

#[tokio::test]
async fn a_redemption_in_flight_at_sigterm_completes() {
    let mut app = app::builder().start().await;
    let (_, code, pin) = app.offer_with_pin().await;
    let body = format!("grant_type={GRANT}&pre-authorized_code={code}&tx_code={pin}");
    let (first, rest) = body.split_at(20);
    let mut stream = raw_tls(&app).await;
    let head = format!(
        "POST /oid4vci/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{first}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(rest.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"access_token\""));
    app.stop();
    // New connections are refused once it stopped.
    assert!(app.http().get(app.url("/healthz")).send().await.is_err());
}

fn write_cert(app: &app::TestApp) -> reqwest::Certificate {
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(
        app.home.join("tls/key.pem"),
        pair.signing_key.serialize_pem(),
    )
    .unwrap();
    std::fs::write(app.home.join("tls/cert.pem"), pair.cert.pem()).unwrap();
    reqwest::Certificate::from_pem(pair.cert.pem().as_bytes()).unwrap()
}

fn client(cert: &reqwest::Certificate) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([cert.clone()])
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let app = app::builder().start().await;
    let old_cert =
        reqwest::Certificate::from_pem(&std::fs::read(app.home.join("tls/cert.pem")).unwrap())
            .unwrap();
    let open = client(&old_cert);
    assert_eq!(
        open.get(app.url("/healthz")).send().await.unwrap().status(),
        200
    );

    let new_cert = write_cert(&app);
    app.signal("HUP");
    let mut switched = false;
    for _ in 0..50 {
        if client(&new_cert)
            .get(app.url("/healthz"))
            .send()
            .await
            .is_ok()
        {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        switched,
        "new connections get the new certificate: {}",
        app.log()
    );
    assert!(
        client(&old_cert)
            .get(app.url("/healthz"))
            .send()
            .await
            .is_err()
    );
    // The connection opened before the reload still works.
    let r = open.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok");

    // A broken pair is refused and the current one stays.
    std::fs::write(app.home.join("tls/cert.pem"), "not a certificate").unwrap();
    app.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        app.log()
            .contains("TLS reload failed; keeping the current certificate")
    );
    assert_eq!(
        client(&new_cert)
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn metrics_count_outcomes_on_a_loopback_listener() {
    // A budget of two failures: the wrong PIN spends one, the issued token
    // spends none, the first unknown code the other, the second is limited.
    let app = app::builder().set("flood", "max_failures", 2).start().await;
    let (_, code, pin) = app.offer_with_pin().await;
    let wrong = if pin == "000000" { "111111" } else { "000000" };
    app.redeem_form(&[
        ("grant_type", GRANT),
        ("pre-authorized_code", &code),
        ("tx_code", wrong),
    ])
    .await;
    app.redeem_form(&[
        ("grant_type", GRANT),
        ("pre-authorized_code", &code),
        ("tx_code", &pin),
    ])
    .await;
    app.redeem_form(&[("grant_type", GRANT), ("pre-authorized_code", "nope")])
        .await;
    app.redeem_form(&[("grant_type", GRANT), ("pre-authorized_code", "nope")])
        .await;
    let r = reqwest::get(&app.metrics_url).await.unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    for line in [
        "notary_token_requests_total{outcome=\"issued\"} 1",
        "notary_token_requests_total{outcome=\"wrong_tx_code\"} 1",
        "notary_token_requests_total{outcome=\"invalid_grant\"} 1",
        "notary_token_requests_total{outcome=\"flood_limited\"} 1",
        "notary_offers_created_total 1",
        "notary_build_info{version=\"",
        "notary_hsm_operation_seconds_bucket{operation=\"signing a token\"",
        "notary_db_operation_seconds_bucket{operation=\"consume_offer\"",
        "notary_http_requests_in_flight",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // A request id on every line of a request, and in the response.
    let r = app
        .http()
        .get(app.url("/readyz"))
        .header("x-request-id", "probe-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "probe-42");
}

#[tokio::test]
async fn json_logs_carry_the_request_id() {
    let app = app::builder().set("log", "format", "json").start().await;
    app.http()
        .post(app.url("/oid4vci/token"))
        .header("x-request-id", "trace-me-7")
        .form(&[("grant_type", GRANT), ("pre-authorized_code", "unknown")])
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = app.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let traced: Vec<&Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "token request")
        .collect();
    assert_eq!(traced.len(), 1, "{log}");
    assert_eq!(traced[0]["span"]["id"], "trace-me-7");
    assert_eq!(traced[0]["fields"]["outcome"], "invalid_grant");
}
