//! The access log: one JSON line per request, formatted on the worker that served it into a
//! buffer of that worker's own and written by one background thread in batches, so a line
//! costs no system call, no wake-up and no allocation on the request path, and a slow disk
//! never stalls traffic (past a bounded buffer, lines are dropped and counted).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// Buffers, one per worker thread (threads past this many share them).
const SHARDS: usize = 16;
/// A buffer this full asks the writer to come now rather than at its next tick.
const NUDGE_AT: usize = 64 * 1024;
/// A buffer this full drops further lines until the writer empties it: the bound on the
/// memory a stalled disk can take (per buffer in use).
const CAP: usize = 4 * 1024 * 1024;
/// The writer's tick: lines reach the sink at most this late.
const TICK: Duration = Duration::from_millis(200);

/// Where lines go. Cloning shares the one writer thread; when the last clone goes, the
/// writer writes what is buffered and ends.
#[derive(Clone, Debug)]
pub struct AccessLog {
    inner: Option<Arc<Handle>>,
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    shards: Vec<Mutex<String>>,
    /// Set when a buffer asked for the writer; cleared by the writer when it comes, so a
    /// burst wakes it once, not once per line.
    nudged: AtomicBool,
    closed: AtomicBool,
}

/// One request, as logged.
pub struct Record<'a> {
    pub request_id: &'a str,
    pub route: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub upstream: &'a str,
    pub endpoint: &'a str,
    pub upstream_ms: Option<f64>,
    pub total_ms: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub client: std::net::IpAddr,
    pub error: &'a str,
}

impl AccessLog {
    pub fn off() -> Self {
        Self { inner: None }
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Starts the writer thread for `sink`.
    pub fn start(sink: Box<dyn Write + Send>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            shards: (0..SHARDS).map(|_| Mutex::new(String::new())).collect(),
            nudged: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        let for_writer = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("weir-access-log".into())
            .spawn(move || writer(&for_writer, sink))?;
        Ok(Self {
            inner: Some(Arc::new(Handle {
                shared,
                writer: Mutex::new(Some(writer)),
            })),
        })
    }

    pub fn log(&self, r: &Record<'_>) {
        let Some(h) = &self.inner else { return };
        let shared = &h.shared;
        let mut buf = shared.shards[shard()].lock();
        if buf.len() >= CAP {
            drop(buf);
            metrics::counter!(crate::metrics::ACCESS_LOG_DROPPED).increment(1);
            return;
        }
        write_line(&mut buf, r);
        let nudge = buf.len() >= NUDGE_AT;
        drop(buf);
        if nudge && !shared.nudged.swap(true, Ordering::AcqRel) {
            h.unpark();
        }
    }

    /// Writes every buffered line and stops the writer, waiting for it: the last step of a
    /// clean stop, so no line is lost or torn. Lines logged after it are dropped.
    pub fn close(&self) {
        let Some(h) = &self.inner else { return };
        h.shared.closed.store(true, Ordering::Release);
        let writer = h.writer.lock().take();
        if let Some(w) = writer {
            w.thread().unpark();
            let _ = w.join();
        }
    }
}

impl Handle {
    fn unpark(&self) {
        if let Some(w) = self.writer.lock().as_ref() {
            w.thread().unpark();
        }
    }
}

impl Drop for Handle {
    /// The last clone is gone (a reload replaced the configuration): the writer writes
    /// what is left and ends on its own; nobody waits for it here.
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.unpark();
    }
}

/// This thread's buffer: threads are numbered as they first log, so each worker keeps
/// one buffer to itself (up to SHARDS workers).
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SLOT.with(|s| *s)
}

fn writer(shared: &Shared, sink: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, sink);
    // Swapped with each buffer in turn, so the steady state allocates nothing.
    let mut spare = String::new();
    loop {
        std::thread::park_timeout(TICK);
        // Read before draining: a line logged before close() is in a buffer by now.
        let closing = shared.closed.load(Ordering::Acquire);
        shared.nudged.store(false, Ordering::Release);
        for shard in &shared.shards {
            {
                let mut buf = shard.lock();
                // An empty buffer keeps its room: swapping it would hand the capacity to
                // a shard no worker uses and make the busy one grow again from nothing.
                if buf.is_empty() {
                    continue;
                }
                std::mem::swap(&mut *buf, &mut spare);
            }
            let _ = out.write_all(spare.as_bytes());
            spare.clear();
        }
        let _ = out.flush();
        if closing {
            return;
        }
    }
}

fn write_line(s: &mut String, r: &Record<'_>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    s.push_str("{\"time\":\"");
    weir_core::time::push_rfc3339(s, now.as_millis() as i64);
    s.push_str("\",\"request_id\":");
    weir_core::json::push_str(s, r.request_id);
    s.push_str(",\"route\":");
    weir_core::json::push_str(s, r.route);
    s.push_str(",\"method\":");
    weir_core::json::push_str(s, r.method);
    s.push_str(",\"path\":");
    weir_core::json::push_str(s, r.path);
    s.push_str(",\"status\":");
    weir_core::json::push_u64(s, u64::from(r.status), 1);
    s.push_str(",\"upstream\":");
    weir_core::json::push_str(s, r.upstream);
    s.push_str(",\"endpoint\":");
    weir_core::json::push_str(s, r.endpoint);
    match r.upstream_ms {
        Some(ms) => {
            s.push_str(",\"upstream_ms\":");
            push_ms(s, ms);
        }
        None => s.push_str(",\"upstream_ms\":null"),
    }
    s.push_str(",\"total_ms\":");
    push_ms(s, r.total_ms);
    s.push_str(",\"bytes_in\":");
    weir_core::json::push_u64(s, r.bytes_in, 1);
    s.push_str(",\"bytes_out\":");
    weir_core::json::push_u64(s, r.bytes_out, 1);
    s.push_str(",\"client\":\"");
    weir_core::json::push_ip(s, r.client);
    s.push('"');
    if !r.error.is_empty() {
        s.push_str(",\"error\":");
        weir_core::json::push_str(s, r.error);
    }
    s.push_str("}\n");
}

/// Milliseconds with three decimals, through integer formatting (a float's `{:.3}` costs
/// several times more, once per line).
fn push_ms(s: &mut String, ms: f64) {
    let us = (ms.max(0.0) * 1000.0).round() as u64;
    weir_core::json::push_u64(s, us / 1000, 1);
    s.push('.');
    weir_core::json::push_u64(s, us % 1000, 3);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format_line(r: &Record<'_>) -> String {
        let mut s = String::new();
        write_line(&mut s, r);
        s
    }

    #[test]
    fn lines_are_valid_json_with_every_field() {
        let line = format_line(&Record {
            request_id: "abc",
            route: "r\"1",
            method: "GET",
            path: "/a\\b",
            status: 200,
            upstream: "u",
            endpoint: "127.0.0.1:1",
            upstream_ms: Some(1.5),
            total_ms: 2.0,
            bytes_in: 3,
            bytes_out: 4,
            client: std::net::IpAddr::from([127, 0, 0, 1]),
            error: "",
        });
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        for k in [
            "time",
            "request_id",
            "route",
            "method",
            "path",
            "status",
            "upstream",
            "endpoint",
            "upstream_ms",
            "total_ms",
            "bytes_in",
            "bytes_out",
        ] {
            assert!(v.get(k).is_some(), "missing {k} in {line}");
        }
        assert_eq!(v["route"], "r\"1");
    }

    /// A sink the test reads back, which can be made to stall like a full disk.
    #[derive(Clone, Default)]
    struct Sink {
        out: Arc<Mutex<Vec<u8>>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let _pass = self.gate.lock();
            self.out.lock().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn record(id: &str) -> Record<'_> {
        Record {
            request_id: id,
            route: "r",
            method: "GET",
            path: "/p\u{1}\"q",
            status: 200,
            upstream: "u",
            endpoint: "",
            upstream_ms: None,
            total_ms: 0.5,
            bytes_in: 0,
            bytes_out: 2,
            client: std::net::IpAddr::from([127, 0, 0, 1]),
            error: "",
        }
    }

    #[test]
    fn every_line_from_every_thread_is_written_whole_by_close() {
        let sink = Sink::default();
        let log = AccessLog::start(Box::new(sink.clone())).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        log.log(&record(&format!("{t}-{i}")));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        log.close();
        let out = String::from_utf8(sink.out.lock().clone()).unwrap();
        let mut ids = std::collections::HashSet::new();
        for line in out.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["path"], "/p\u{1}\"q");
            ids.insert(v["request_id"].as_str().unwrap().to_owned());
        }
        assert_eq!(ids.len(), 20_000);
        assert_eq!(out.lines().count(), 20_000);
    }

    #[test]
    fn lines_reach_the_sink_within_a_tick_and_the_writer_ends_with_its_last_handle() {
        let sink = Sink::default();
        let log = AccessLog::start(Box::new(sink.clone())).unwrap();
        log.log(&record("a"));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.out.lock().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(sink.out.lock().iter().filter(|b| **b == b'\n').count(), 1);
        log.log(&record("b"));
        let shared = Arc::clone(&log.inner.as_ref().unwrap().shared);
        drop(log);
        // The writer holds the last reference to the buffers; it goes when the writer ends.
        while Arc::strong_count(&shared) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(Arc::strong_count(&shared), 1, "the writer did not end");
        assert_eq!(sink.out.lock().iter().filter(|b| **b == b'\n').count(), 2);
    }

    #[test]
    fn a_stalled_sink_never_blocks_logging_and_bounds_the_buffer() {
        let sink = Sink::default();
        let stall = sink.gate.lock();
        let log = AccessLog::start(Box::new(sink.clone())).unwrap();
        // Far more than the buffer holds, from one thread, while the sink is stuck.
        let n = CAP / 200 * 3;
        let started = std::time::Instant::now();
        for i in 0..n {
            log.log(&record(&i.to_string()));
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "logging blocked"
        );
        let held: usize = log
            .inner
            .as_ref()
            .unwrap()
            .shared
            .shards
            .iter()
            .map(|s| s.lock().len())
            .sum();
        assert!(held <= CAP + 1024, "buffered {held} bytes past the cap");
        drop(stall);
        log.close();
        let written = sink.out.lock().iter().filter(|b| **b == b'\n').count();
        assert!(written > 0 && written < n, "{written} of {n} lines written");
    }

    #[test]
    fn milliseconds_keep_three_decimals() {
        for (ms, text) in [
            (0.0, "0.000"),
            (1.5, "1.500"),
            (0.0004, "0.000"),
            (12.3456, "12.346"),
            (-1.0, "0.000"),
        ] {
            let mut s = String::new();
            push_ms(&mut s, ms);
            assert_eq!(s, text);
        }
    }

    #[test]
    fn rfc3339_of_known_instants() {
        let mut s = String::new();
        weir_core::time::push_rfc3339(&mut s, 1_700_000_000_123);
        assert_eq!(s, "2023-11-14T22:13:20.123Z");
    }
}
