//! The abuse soak's short version (`scripts/abuse-soak.sh --ci`, about two minutes at low
//! rates) against this build's binary: legitimate proxy, event and AI traffic mixed with bad
//! keys, idle connections, slowloris heads and bodies, oversized and nested JSON, header
//! floods and HTTP/2 rapid resets. It fails when Weir dies, passes its memory ceiling,
//! loses an acknowledged event, fails a legitimate request, or answers an abusive one in a
//! way that is not documented. The ten-minute run (`scripts/abuse-soak.sh`) also holds the
//! legitimate p99 within 2x of the baseline; its figures are in docs/benchmarks.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn the_short_abuse_soak_holds() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/abuse-soak.sh"))
        .arg("--ci")
        .env("WEIR_BIN", env!("CARGO_BIN_EXE_weir"))
        .output()
        .expect("bash runs the soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the soak failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("result: PASSED"), "{stdout}");
    println!("{stdout}");
}
