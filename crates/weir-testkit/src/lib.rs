//! Test doubles for Weir's tests: in-process mock upstreams that record what reaches them,
//! an HTTP client, a raw-socket client for malformed requests, and test certificates.

// Test doubles: a failed setup step is a failed test, so panicking is the right answer, and
// test bodies are small and bounded by the test itself.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::disallowed_methods)]

pub mod certs;
pub mod client;
pub mod fake_anthropic;
pub mod fake_gemini;
pub mod fake_llm;
pub mod fuzz;
pub mod upstream;

pub use client::{HttpClient, Reply, raw_request};
pub use fake_anthropic::FakeAnthropic;
pub use fake_llm::FakeOpenAi;
pub use upstream::{Behavior, MockUpstream, Recorded};

/// Allocates a free loopback port (bind to 0, read it, release it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Resident set size of this process in KiB (Linux), for memory assertions.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}
