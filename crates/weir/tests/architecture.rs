//! Keeps the crate map true: each crate may depend only on the Weir crates its row in the
//! README's crate map (and docs/adr) allows, and the test kit is a dev-dependency only.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

const ALLOWED: &[(&str, &[&str])] = &[
    ("weir-core", &[]),
    ("weir-config", &["weir-core"]),
    ("weir-telemetry", &["weir-core"]),
    ("weir-router", &["weir-core", "weir-config"]),
    (
        "weir-upstream",
        &["weir-core", "weir-config", "weir-telemetry"],
    ),
    (
        "weir-proxy",
        &[
            "weir-core",
            "weir-config",
            "weir-telemetry",
            "weir-router",
            "weir-upstream",
            "weir-policy",
            "weir-events",
            "weir-ai",
        ],
    ),
    (
        "weir-ai",
        &["weir-core", "weir-config", "weir-policy", "weir-upstream"],
    ),
    (
        "weir-policy",
        &["weir-core", "weir-config", "weir-telemetry"],
    ),
    (
        "weir",
        &[
            "weir-core",
            "weir-config",
            "weir-telemetry",
            "weir-proxy",
            "weir-policy",
            "weir-store",
            "weir-control",
            "weir-events",
            "weir-ai",
        ],
    ),
    ("weir-store", &["weir-core", "weir-config"]),
    (
        "weir-events",
        &["weir-core", "weir-config", "weir-upstream"],
    ),
    ("weir-control", &["weir-core", "weir-config", "weir-store"]),
    ("weir-testkit", &[]),
];

/// Weir crates named in the `[dependencies]` section of a manifest.
fn weir_deps(manifest: &str) -> Vec<String> {
    let mut in_deps = false;
    let mut out = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && line.starts_with("weir") {
            let name = line.split(['.', ' ', '=']).next().unwrap_or("").to_owned();
            out.push(name);
        }
    }
    out
}

#[test]
fn crate_dependencies_follow_the_crate_map() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut seen = 0;
    for entry in std::fs::read_dir(crates).unwrap() {
        let dir = entry.unwrap().path();
        let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let Some(ok) = allowed.get(name.as_str()) else {
            panic!("crate {name} is not in the crate map; add it to the README and to this test");
        };
        for dep in weir_deps(&manifest) {
            assert!(
                ok.contains(&dep.as_str()),
                "{name} must not depend on {dep} (see the crate map)"
            );
        }
        seen += 1;
    }
    assert_eq!(seen, ALLOWED.len());
}
