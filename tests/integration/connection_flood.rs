//! One address cannot take the server's connections: idle TCP connections
//! and stalled TLS handshakes from 127.0.0.2 do not stop a wallet on
//! 127.0.0.1.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use crate::app::{self, GRANT};

/// Idle connections from the attacker: more than `max_connections` (1,024).
const IDLE: usize = 1_100;
/// Connections that start a TLS handshake and stall in it.
const STALLED: usize = 20;
/// What the wallet gets for creating and redeeming an offer. Shorter than
/// the 10 s handshake timeout of old, after which a flood's slots came free.
const WALLET_DEADLINE: Duration = Duration::from_secs(4);
/// The default `handshake_timeout_secs`, and slack for a busy machine.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const SLACK: Duration = Duration::from_secs(3);

/// The start of a ClientHello: a handshake record announcing 512 bytes, of
/// which only the first few follow.
const PARTIAL_CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, // record: handshake, TLS 1.0, 512 bytes
    0x01, 0x00, 0x01, 0xfc, // ClientHello, 508 bytes
    0x03, 0x03, // TLS 1.2
];

/// Raises this process's open-file limit (inherited by the server it
/// starts) to at least `needed`, as far as the hard limit allows.
fn raise_fd_limit(needed: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if limit.current.is_some_and(|soft| soft < needed) {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(needed.min(hard)),
                maximum: limit.maximum,
            },
        )
        .unwrap();
    }
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    assert!(
        now >= needed,
        "open-file limit {now} is below the {needed} this test needs (ulimit -n)"
    );
}

/// A connection from 127.0.0.2, or `None` when the server reset it before
/// the connect completed here (it was turned away at once).
async fn connect_from_127_0_0_2(server: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    match socket.connect(server).await {
        Ok(stream) => Some(stream),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Err(e) => panic!("connecting from 127.0.0.2: {e}"),
    }
}

/// True once the server has closed `stream` (end of file or reset).
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    loop {
        match tokio::time::timeout(within, stream.read(&mut byte)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A TLS alert before the close.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_stalled_handshakes_from_one_address_do_not_stop_a_wallet() {
    // Each connection is two descriptors here: the client's and the server's.
    raise_fd_limit(2 * (IDLE + STALLED) as u64 + 512);
    let app = app::builder().start().await;
    let port: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();
    let server: SocketAddr = ([127, 0, 0, 1], port).into();

    let flood_started = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let mut stream = connect_from_127_0_0_2(server)
            .await
            .expect("the first connections are under the cap");
        stream.write_all(PARTIAL_CLIENT_HELLO).await.unwrap();
        stalled.push((stream, Instant::now()));
    }
    let mut idle = Vec::new();
    for _ in 0..IDLE {
        idle.extend(connect_from_127_0_0_2(server).await);
    }
    eprintln!(
        "flood: {STALLED} stalled handshakes and {IDLE} idle connections from 127.0.0.2 in {:?} \
         ({} reset before their connect completed)",
        flood_started.elapsed(),
        IDLE - idle.len()
    );

    // A wallet's whole visit, on fresh connections opened during the flood.
    let wallet = app.client_from(None);
    let started = Instant::now();
    let visit = async {
        let r = wallet
            .post(app.url("/v1/openid/offers/pre-authorized"))
            .bearer_auth(&app.admin_key)
            .json(&json!({"credentials": ["UniversityDegree_jwt"], "transactionCode": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let offer: serde_json::Value = r.json().await.unwrap();
        let created = started.elapsed();
        let code = app::code_of(&offer);
        let pin = offer["transactionCode"].as_str().unwrap().to_owned();
        let r = wallet
            .post(app.url("/oid4vci/token"))
            .form(&[
                ("grant_type", GRANT),
                ("pre-authorized_code", &code),
                ("tx_code", &pin),
            ])
            .send()
            .await
            .unwrap();
        (created, r.status())
    };
    let outcome = tokio::time::timeout(WALLET_DEADLINE, visit).await;
    let latency = started.elapsed();
    eprintln!("wallet during the flood: offer created and redeemed in {latency:?}");
    let (created, status) = outcome.unwrap_or_else(|_| {
        panic!("the wallet got no answer within {WALLET_DEADLINE:?} during the flood")
    });
    eprintln!("wallet during the flood: offer created in {created:?}");
    assert_eq!(status, 200);

    // Connections beyond the address's cap were closed at once: the server
    // holds no more than its default cap of 32 from 127.0.0.2.
    let mut open = 0;
    for stream in &mut idle {
        if !closed_by_server(stream, Duration::from_millis(1)).await {
            open += 1;
        }
    }
    eprintln!("idle connections the server still holds: {open}");
    assert!(
        STALLED + open <= 32,
        "{open} idle connections from one address are still open"
    );
    // A stalled handshake is closed after the handshake timeout.
    let (first, opened) = stalled.first_mut().unwrap();
    let left = (*opened + HANDSHAKE_TIMEOUT + SLACK).saturating_duration_since(Instant::now());
    assert!(
        closed_by_server(first, left).await,
        "a stalled TLS handshake outlived the handshake timeout"
    );
    eprintln!(
        "stalled handshake closed {:?} after it was opened",
        opened.elapsed()
    );
    drop((idle, stalled));
}
