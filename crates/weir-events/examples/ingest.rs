//! Measures durable ingest into the embedded queue: N concurrent publishers of small
//! events, each waiting for its fsynced commit, as ingest routes will.
//!   cargo run --release -p weir-events --example ingest [EVENTS] [PUBLISHERS]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use weir_events::{Embedded, NewEvent, Queue, new_event_id};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let publishers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let dir = std::env::temp_dir().join(format!("weir-ingest-{}", std::process::id()));
    let q = Arc::new(Embedded::open(&dir).await?);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let q = Arc::clone(&q);
        let n = events / publishers + usize::from(p < events % publishers);
        tasks.push(tokio::spawn(async move {
            for i in 0..n {
                let e = NewEvent {
                    id: new_event_id(),
                    topic: "bench".to_owned(),
                    key: None,
                    headers: vec![("content-type".to_owned(), "application/json".to_owned())],
                    body: Bytes::from(format!("{{\"publisher\":{p},\"n\":{i}}}")),
                };
                q.publish(vec![e]).await?;
            }
            Ok::<_, weir_events::QueueError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{events} events from {publishers} publishers, each acknowledged after an fsynced commit: {:.0} events/s ({secs:.2} s)",
        events as f64 / secs
    );
    q.close().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
