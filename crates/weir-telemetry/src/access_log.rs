//! The access log: one JSON line per request, formatted on the request path and written by
//! a dedicated thread through a bounded queue, so a slow disk never stalls traffic (lines
//! beyond the queue are dropped and counted).

use std::fmt::Write as _;
use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const QUEUE: usize = 16 * 1024;

/// Where lines go. Cloning shares the one writer thread.
#[derive(Clone, Debug)]
pub struct AccessLog {
    tx: Option<SyncSender<String>>,
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
    pub client: &'a str,
    pub error: &'a str,
}

impl AccessLog {
    pub fn off() -> Self {
        Self { tx: None }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Starts the writer thread for `sink`.
    pub fn start(sink: Box<dyn Write + Send>) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("weir-access-log".into())
            .spawn(move || writer(rx, sink))?;
        Ok(Self { tx: Some(tx) })
    }

    pub fn log(&self, r: &Record<'_>) {
        let Some(tx) = &self.tx else { return };
        let line = format_line(r);
        if let Err(TrySendError::Full(_)) = tx.try_send(line) {
            metrics::counter!(crate::metrics::ACCESS_LOG_DROPPED).increment(1);
        }
    }
}

fn writer(rx: Receiver<String>, sink: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, sink);
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let _ = out.write_all(line.as_bytes());
                // Drain what is queued before flushing: one write per burst, not per line.
                while let Ok(line) = rx.try_recv() {
                    let _ = out.write_all(line.as_bytes());
                }
                let _ = out.flush();
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        }
    }
}

pub fn format_line(r: &Record<'_>) -> String {
    let mut s = String::with_capacity(320);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    s.push_str("{\"time\":\"");
    push_rfc3339(&mut s, now);
    s.push_str("\",\"request_id\":");
    push_json_str(&mut s, r.request_id);
    s.push_str(",\"route\":");
    push_json_str(&mut s, r.route);
    s.push_str(",\"method\":");
    push_json_str(&mut s, r.method);
    s.push_str(",\"path\":");
    push_json_str(&mut s, r.path);
    let _ = write!(s, ",\"status\":{}", r.status);
    s.push_str(",\"upstream\":");
    push_json_str(&mut s, r.upstream);
    s.push_str(",\"endpoint\":");
    push_json_str(&mut s, r.endpoint);
    match r.upstream_ms {
        Some(ms) => {
            let _ = write!(s, ",\"upstream_ms\":{ms:.3}");
        }
        None => s.push_str(",\"upstream_ms\":null"),
    }
    let _ = write!(
        s,
        ",\"total_ms\":{:.3},\"bytes_in\":{},\"bytes_out\":{}",
        r.total_ms, r.bytes_in, r.bytes_out
    );
    s.push_str(",\"client\":");
    push_json_str(&mut s, r.client);
    if !r.error.is_empty() {
        s.push_str(",\"error\":");
        push_json_str(&mut s, r.error);
    }
    s.push_str("}\n");
    s
}

fn push_json_str(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

/// RFC 3339 UTC with milliseconds, from a Unix duration.
fn push_rfc3339(s: &mut String, d: Duration) {
    let _ = weir_core::time::write_rfc3339(s, d.as_millis() as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

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
            client: "127.0.0.1",
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

    #[test]
    fn rfc3339_of_known_instants() {
        let mut s = String::new();
        push_rfc3339(&mut s, Duration::from_millis(1_700_000_000_123));
        assert_eq!(s, "2023-11-14T22:13:20.123Z");
    }
}
