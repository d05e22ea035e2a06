//! The status phase: revocations through the admin API (rate), the size on
//! the wire of a 131,072-entry list with 1 % revoked, and the time from a
//! revocation to the list served with it (p50/p99).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use notary::formats::status_list::token_status_list;

/// The subjects the full-flow offers are spread over (a listing returns at
/// most 1,000 credentials).
pub const SUBJECTS: usize = 8;

/// The SD-JWT VC credentials the full-flow phase issued: (id, list, index).
async fn issued(c: &reqwest::Client, base: &str, key: &str) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    for s in 0..SUBJECTS {
        let page: Value = c
            .get(format!("{base}/v1/credentials?userId=bench-{s}&limit=1000"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for cred in page["credentials"].as_array().unwrap() {
            if let (Some(list), Some(idx)) =
                (cred["status_list"].as_str(), cred["status_index"].as_u64())
            {
                if list.starts_with('t') {
                    out.push((
                        cred["id"].as_str().unwrap().to_owned(),
                        list.to_owned(),
                        idx,
                    ));
                }
            }
        }
    }
    out
}

async fn list_status(c: &reqwest::Client, base: &str, list: &str, idx: u64) -> (Option<u8>, usize) {
    let Ok(r) = c.get(format!("{base}/status/{list}")).send().await else {
        return (None, 0);
    };
    let Ok(jwt) = r.text().await else {
        return (None, 0);
    };
    let Some(payload) = jwt.split('.').nth(1) else {
        return (None, 0);
    };
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap_or_default())
            .unwrap_or_default();
    let bits = token_status_list::decode(&claims["status_list"]).ok();
    (
        bits.and_then(|b| b.get(usize::try_from(idx).unwrap_or(0))),
        jwt.len(),
    )
}

/// Revokes `fraction` of a list's size, then measures `samples` single
/// revocations until served.
pub async fn run(ca: &[u8], base: &str, key: &str, list_size: usize, samples: usize) -> Value {
    let c = super::client(ca);
    let credentials = issued(&c, base, key).await;
    let wanted = list_size / 100;
    if credentials.len() < wanted + samples {
        return json!({"skipped": format!("{} credentials issued; {} needed", credentials.len(), wanted + samples)});
    }
    // (1) 1 % of the list revoked through the admin API, 16 connections.
    let batch = Arc::new(credentials[..wanted].to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (c, base, key, batch, next) = (
                super::client(ca),
                base.to_owned(),
                key.to_owned(),
                batch.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                let mut failed = 0usize;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((id, _, _)) = batch.get(i) else {
                        break;
                    };
                    let ok = c
                        .post(format!("{base}/v1/credentials/{id}/revoke"))
                        .bearer_auth(&key)
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    failed += usize::from(!ok);
                }
                failed
            })
        })
        .collect();
    let mut failed = 0;
    for t in tasks {
        failed += t.await.unwrap();
    }
    let revocations_per_sec = wanted as f64 / started.elapsed().as_secs_f64();
    // (2) The list with all of them, on the wire.
    let (_, list, last_idx) = credentials[wanted - 1].clone();
    let mut wire_bytes = 0;
    for _ in 0..600 {
        let (status, len) = list_status(&c, base, &list, last_idx).await;
        if status == Some(1) {
            wire_bytes = len;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // (3) Single revocations until served.
    let mut latencies = Vec::new();
    for (id, list, idx) in &credentials[wanted..wanted + samples] {
        let t = Instant::now();
        c.post(format!("{base}/v1/credentials/{id}/revoke"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        loop {
            if list_status(&c, base, list, *idx).await.0 == Some(1)
                || t.elapsed() > Duration::from_secs(120)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        latencies.push(t.elapsed());
    }
    let ms = super::percentile_ms(&mut latencies);
    json!({
        "list_entries": list_size,
        "revoked_through_admin_api": wanted,
        "revocations_per_sec_16_connections": revocations_per_sec,
        "revocations_failed": failed,
        "list_bytes_on_the_wire_with_1_percent_revoked": wire_bytes,
        "revocation_to_served_list_p50_ms": ms(0.5),
        "revocation_to_served_list_p99_ms": ms(0.99),
        "samples": samples,
    })
}
