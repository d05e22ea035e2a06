//! Load benchmark: creates offers through the admin API, then redeems them
//! at the token endpoint, and prints throughput and latency percentiles.
//!
//! Usage: bench URL CA_PEM ADMIN_KEY [OFFERS] [CONCURRENCY]
//! `scripts/bench` runs it against the real binary and the unwiped control
//! to measure what memory wiping costs.

// A measuring tool, not the product: any failure should stop it loudly.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;

const GRANT: &str = "urn:ietf:params:oauth:grant-type:pre-authorized_code";

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn report(phase: &str, elapsed: Duration, mut latencies: Vec<Duration>) {
    latencies.sort();
    println!(
        "{phase:<10} {:>6} requests  {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    );
}

/// Runs `jobs` with at most `concurrency` at once; returns per-job latencies.
async fn run<T, F, Fut>(
    items: Vec<T>,
    concurrency: usize,
    job: F,
) -> (Duration, Vec<Duration>, Vec<Value>)
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Value> + Send,
{
    let job = Arc::new(job);
    let limit = Arc::new(Semaphore::new(concurrency));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for item in items {
        let (job, limit) = (job.clone(), limit.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore open");
            let t = Instant::now();
            let out = job(item).await;
            (t.elapsed(), out)
        }));
    }
    let mut latencies = Vec::new();
    let mut outputs = Vec::new();
    for t in tasks {
        let (latency, out) = t.await.expect("task");
        latencies.push(latency);
        outputs.push(out);
    }
    (start.elapsed(), latencies, outputs)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: bench URL CA_PEM ADMIN_KEY [OFFERS] [CONCURRENCY]");
        std::process::exit(2);
    }
    let base = args[1].clone();
    let ca = std::fs::read(&args[2]).expect("read CA");
    let admin_key = args[3].clone();
    let n: usize = args.get(4).map_or(2000, |s| s.parse().expect("OFFERS"));
    let concurrency: usize = args.get(5).map_or(16, |s| s.parse().expect("CONCURRENCY"));
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("CA PEM")])
        .build()
        .expect("client");

    let (c, b, k) = (client.clone(), base.clone(), admin_key.clone());
    let (elapsed, latencies, offers) = run(vec![(); n], concurrency, move |()| {
        let (c, b, k) = (c.clone(), b.clone(), k.clone());
        async move {
            c.post(format!("{b}/v1/openid/offers/pre-authorized"))
                .bearer_auth(k)
                .json(&json!({"credentials": ["UniversityDegree_jwt"]}))
                .send()
                .await
                .expect("create offer")
                .json::<Value>()
                .await
                .expect("offer JSON")
        }
    })
    .await;
    report("create", elapsed, latencies);

    let pairs: Vec<(String, String)> = offers
        .iter()
        .map(|o| {
            let uri = o["uri"].as_str().expect("uri");
            let query = uri.split_once('?').expect("query").1;
            let (_, offer) = form_urlencoded::parse(query.as_bytes())
                .next()
                .expect("offer");
            let offer: Value = serde_json::from_str(&offer).expect("offer json");
            let code = offer["grants"][GRANT]["pre-authorized_code"]
                .as_str()
                .expect("code")
                .to_owned();
            (code, o["transactionCode"].as_str().expect("pin").to_owned())
        })
        .collect();
    let (c, b) = (client.clone(), base.clone());
    let (elapsed, latencies, results) = run(pairs, concurrency, move |(code, pin)| {
        let (c, b) = (c.clone(), b.clone());
        async move {
            let r = c
                .post(format!("{b}/oid4vci/token"))
                .form(&[
                    ("grant_type", GRANT),
                    ("pre-authorized_code", &code),
                    ("tx_code", &pin),
                ])
                .send()
                .await
                .expect("redeem");
            json!(r.status().as_u16())
        }
    })
    .await;
    let ok = results.iter().filter(|s| **s == json!(200)).count();
    assert_eq!(ok, n, "every redemption must succeed");
    report("redeem", elapsed, latencies);
}
