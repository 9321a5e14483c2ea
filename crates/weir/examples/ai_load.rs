//! An open-loop load generator for the AI gateway benchmark: sends a chat completion at a
//! fixed rate (not waiting for answers, so a slow server cannot slow the load down) to
//! each target in turn, and prints latency percentiles of each, side by side.
//!
//!   cargo run --release -p weir --example ai_load -- RATE SECONDS ROUNDS NAME=URL[|KEY] ...
//!
//! Rounds alternate between the targets so the machine's noise falls on all of them.
//! With `AI_STREAM=1` the requests ask for a stream and the time measured is to the first
//! piece of the answer's body (time to first token), not to its end.

// A benchmark tool: a failed setup is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;

const BODY: &str = r#"{"model":"bench","max_tokens":16,"messages":[{"role":"user","content":"Say hello in five words."}]}"#;
const STREAM_BODY: &str = r#"{"model":"bench","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"Say hello in five words."}]}"#;

struct Target {
    name: String,
    url: String,
    key: Option<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: ai_load RATE SECONDS ROUNDS NAME=URL[|KEY] ...");
        std::process::exit(2);
    }
    let rate: u64 = args[0].parse().unwrap();
    let secs: u64 = args[1].parse().unwrap();
    let rounds: usize = args[2].parse().unwrap();
    let targets: Vec<Target> = args[3..]
        .iter()
        .map(|a| {
            let (name, rest) = a.split_once('=').unwrap();
            let (url, key) = match rest.split_once('|') {
                Some((u, k)) => (u.to_owned(), Some(k.to_owned())),
                None => (rest.to_owned(), None),
            };
            Target {
                name: name.to_owned(),
                url,
                key,
            }
        })
        .collect();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build_http();
    let mut all: Vec<Vec<u64>> = vec![Vec::new(); targets.len()];
    let mut errors = vec![0u64; targets.len()];
    // Warm-up: connections open, caches filled.
    for t in &targets {
        run(&client, t, rate, 1).await;
    }
    for round in 0..rounds {
        for (i, t) in targets.iter().enumerate() {
            let (lat, errs) = run(&client, t, rate, secs).await;
            let mut sorted = lat.clone();
            sorted.sort_unstable();
            eprintln!(
                "round {}: {} p50 {:.3} ms p99 {:.3} ms ({} requests, {errs} errors)",
                round + 1,
                t.name,
                pct(&sorted, 0.50),
                pct(&sorted, 0.99),
                sorted.len()
            );
            all[i].extend(lat);
            errors[i] += errs;
        }
    }
    println!("target\trequests\terrors\tp50_ms\tp90_ms\tp99_ms\tp99.9_ms");
    for (i, t) in targets.iter().enumerate() {
        let v = &mut all[i];
        v.sort_unstable();
        println!(
            "{}\t{}\t{}\t{:.3}\t{:.3}\t{:.3}\t{:.3}",
            t.name,
            v.len(),
            errors[i],
            pct(v, 0.50),
            pct(v, 0.90),
            pct(v, 0.99),
            pct(v, 0.999)
        );
    }
}

/// The `p` quantile of sorted microseconds, in milliseconds.
fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// Sends `rate` requests a second for `secs` seconds on a fixed schedule (not waiting for
/// answers); the latency of each (microseconds from its send) and the errors.
async fn run(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    t: &Target,
    rate: u64,
    secs: u64,
) -> (Vec<u64>, u64) {
    let lat = Arc::new(Mutex::new(Vec::with_capacity((rate * secs) as usize)));
    let errs = Arc::new(Mutex::new(0u64));
    let stream = std::env::var("AI_STREAM").is_ok_and(|v| v == "1");
    let body = if stream { STREAM_BODY } else { BODY };
    let start = Instant::now();
    let gap = Duration::from_nanos(1_000_000_000 / rate);
    let mut tasks = Vec::with_capacity((rate * secs) as usize);
    for n in 0..rate * secs {
        let due = start + gap * n as u32;
        tokio::time::sleep_until(due.into()).await;
        let mut req = http::Request::post(&t.url).header("content-type", "application/json");
        if let Some(k) = &t.key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let req = req
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let (client, lat, errs) = (client.clone(), Arc::clone(&lat), Arc::clone(&errs));
        // Timed from the send: the timer's millisecond granularity would otherwise add up
        // to a millisecond of the generator's own lateness to every sample.
        let sent = Instant::now();
        tasks.push(tokio::spawn(async move {
            let mut us = 0;
            let ok = match client.request(req).await {
                Ok(rsp) => {
                    let status = rsp.status();
                    let mut body = rsp.into_body();
                    let mut whole = true;
                    while let Some(frame) = body.frame().await {
                        match frame {
                            Ok(f) => {
                                if stream && us == 0 && f.data_ref().is_some_and(|d| !d.is_empty())
                                {
                                    us = sent.elapsed().as_micros() as u64;
                                }
                            }
                            Err(_) => {
                                whole = false;
                                break;
                            }
                        }
                    }
                    whole && status.is_success()
                }
                Err(_) => false,
            };
            if !stream || us == 0 {
                us = sent.elapsed().as_micros() as u64;
            }
            if ok {
                lat.lock().push(us);
            } else {
                *errs.lock() += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let v = std::mem::take(&mut *lat.lock());
    let e = *errs.lock();
    (v, e)
}
