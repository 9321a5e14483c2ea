//! weir-load: an open-loop HTTP/1.1 load generator for the benchmark scripts — requests
//! leave on a fixed schedule whatever the answers do, and each latency is counted from the
//! moment its request was due, so a stalled server shows as latency instead of hiding as a
//! lower rate (the "coordinated omission" a closed-loop tool like wrk has). A request sent
//! late only because the generator's timer woke late counts from when it was sent.
//!
//!   weir-load --target 127.0.0.1:8080 --rate 20000 --connections 64 --seconds 10 \
//!             --path /bad/x --header 'x-api-key: nope' [--method POST --body '{}'] [--json]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const USAGE: &str = "usage: weir-load --target HOST:PORT --rate REQ_PER_S [--connections N=32] \
[--seconds S=10] [--method GET] [--path /] [--header 'name: value']... [--body TEXT] [--json]";

struct Args {
    target: String,
    rate: f64,
    connections: usize,
    seconds: f64,
    request: Vec<u8>,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut target, mut rate, mut connections, mut seconds) = (None, None, 32usize, 10.0);
    let (mut method, mut path, mut headers, mut body, mut json) = (
        "GET".to_string(),
        "/".to_string(),
        Vec::new(),
        None::<String>,
        false,
    );
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--target" => target = Some(value()?),
            "--rate" => rate = Some(value()?.parse().map_err(|e| format!("--rate: {e}"))?),
            "--connections" => {
                connections = value()?
                    .parse()
                    .map_err(|e| format!("--connections: {e}"))?
            }
            "--seconds" => seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--method" => method = value()?,
            "--path" => path = value()?,
            "--header" => headers.push(value()?),
            "--body" => body = Some(value()?),
            "--json" => json = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let target = target.ok_or("--target is required")?;
    let rate: f64 = rate.ok_or("--rate is required")?;
    if rate <= 0.0 || connections == 0 || seconds <= 0.0 {
        return Err("--rate, --connections and --seconds must be positive".into());
    }
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: {target}\r\n");
    for h in &headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    if let Some(b) = &body {
        request.push_str(&format!("content-length: {}\r\n", b.len()));
    }
    request.push_str("\r\n");
    request.push_str(body.as_deref().unwrap_or(""));
    Ok(Args {
        target,
        rate,
        connections,
        seconds,
        request: request.into_bytes(),
        json,
    })
}

/// What one connection saw: latencies in microseconds, answers by status, and failures.
#[derive(Default)]
struct Tally {
    micros: Vec<u32>,
    statuses: std::collections::BTreeMap<u16, u64>,
    errors: u64,
}

/// One answer read off the connection: its status and whether the server will close.
struct Answer {
    status: u16,
    close: bool,
}

async fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Answer> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(s, buf).await?;
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("head is not UTF-8"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let (mut length, mut chunked, mut close) = (0usize, false, false);
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().map_err(|_| bad("bad content-length"))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let end = if chunked {
        chunked_end(s, buf, head_end).await?
    } else {
        while buf.len() < head_end + length {
            fill(s, buf).await?;
        }
        head_end + length
    };
    buf.drain(..end);
    Ok(Answer { status, close })
}

/// Reads a chunked body through its last chunk; returns where the answer ends in `buf`.
async fn chunked_end(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut at: usize,
) -> std::io::Result<usize> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk");
    loop {
        let line_end = loop {
            if let Some(i) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                break at + i;
            }
            fill(s, buf).await?;
        };
        let size_text = std::str::from_utf8(&buf[at..line_end]).map_err(|_| bad())?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad())?;
        // The chunk, its CRLF; the last (empty) chunk ends with an empty trailer line.
        let need = line_end + 2 + size + 2;
        while buf.len() < need {
            fill(s, buf).await?;
        }
        at = need;
        if size == 0 {
            return Ok(at);
        }
    }
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let n = s.read(&mut chunk).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// One connection's share of the schedule: a request every `interval` from `first` until
/// `end`, each waited for before the next leaves (no pipelining); reconnects when the
/// server closes or fails.
async fn connection(
    target: String,
    request: Vec<u8>,
    first: Instant,
    interval: Duration,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut due = first;
    // When the previous answer came back: a connection still busy at a request's due time
    // is the server's delay, counted from `due`; one free but woken late by the timer
    // (tokio's is millisecond-grained) is the generator's, so that request counts from
    // when it was sent.
    let mut free_at = first;
    while due < end {
        tokio::time::sleep_until(due.into()).await;
        if conn.is_none() {
            conn = TcpStream::connect(&target).await.ok();
            if let Some(c) = &conn {
                let _ = c.set_nodelay(true);
            }
            buf.clear();
        }
        let sent = Instant::now();
        let from = if free_at > due { due } else { sent };
        let result = match conn.as_mut() {
            Some(c) => match c.write_all(&request).await {
                Ok(()) => read_answer(c, &mut buf).await,
                Err(e) => Err(e),
            },
            None => Err(std::io::ErrorKind::ConnectionRefused.into()),
        };
        match result {
            Ok(answer) => {
                free_at = Instant::now();
                let waited = from.elapsed().as_micros();
                tally.micros.push(u32::try_from(waited).unwrap_or(u32::MAX));
                *tally.statuses.entry(answer.status).or_default() += 1;
                if answer.close {
                    conn = None;
                }
            }
            Err(_) => {
                free_at = Instant::now();
                tally.errors += 1;
                conn = None;
            }
        }
        due += interval;
    }
    tally
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[i]) / 1000.0
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("weir-load: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("weir-load: cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    let (total, elapsed) = runtime.block_on(run(&args));
    report(&args, total, elapsed);
}

async fn run(args: &Args) -> (Tally, f64) {
    let interval = Duration::from_secs_f64(args.connections as f64 / args.rate);
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + Duration::from_secs_f64(args.seconds);
    let tasks: Vec<_> = (0..args.connections)
        .map(|i| {
            // Connections take turns, so the requests leave evenly spread over time.
            let first = start + interval.mul_f64(i as f64 / args.connections as f64);
            tokio::spawn(connection(
                args.target.clone(),
                args.request.clone(),
                first,
                interval,
                end,
            ))
        })
        .collect();
    let mut total = Tally::default();
    for t in tasks {
        if let Ok(tally) = t.await {
            total.micros.extend(tally.micros);
            total.errors += tally.errors;
            for (status, n) in tally.statuses {
                *total.statuses.entry(status).or_default() += n;
            }
        }
    }
    (total, start.elapsed().as_secs_f64())
}

fn report(args: &Args, mut total: Tally, elapsed: f64) {
    total.micros.sort_unstable();
    let done = total.micros.len();
    let (p50, p99, p999) = (
        percentile(&total.micros, 0.50),
        percentile(&total.micros, 0.99),
        percentile(&total.micros, 0.999),
    );
    let max = total
        .micros
        .last()
        .map_or(f64::NAN, |m| f64::from(*m) / 1000.0);
    let statuses: Vec<String> = total
        .statuses
        .iter()
        .map(|(s, n)| format!("\"{s}\":{n}"))
        .collect();
    if args.json {
        println!(
            "{{\"rate\":{},\"answered\":{done},\"errors\":{},\"achieved\":{:.1},\"p50_ms\":{p50:.3},\
\"p99_ms\":{p99:.3},\"p999_ms\":{p999:.3},\"max_ms\":{max:.3},\"statuses\":{{{}}}}}",
            args.rate,
            total.errors,
            done as f64 / elapsed,
            statuses.join(",")
        );
    } else {
        println!(
            "weir-load: {done} answered ({:.0}/s of {:.0}/s asked), {} errors; latency ms \
p50 {p50:.3} p99 {p99:.3} p99.9 {p999:.3} max {max:.3}; statuses {{{}}}",
            done as f64 / elapsed,
            args.rate,
            total.errors,
            statuses.join(",")
        );
    }
}
