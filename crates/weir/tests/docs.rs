//! The documentation tells the truth about what the code has: every `WEIR_*` variable the
//! sources read and every error `type` Weir answers with is listed in
//! docs/configuration.md (and the variables in the README), and every script the docs
//! and the README name exists.

// Integration tests: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap()
}

/// Every `.rs` file under `crates/*/src`.
fn sources() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path().join("src"))
        .collect();
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

/// The quoted words of `text` that start with `prefix` (`"WEIR_LOG"` → `WEIR_LOG`).
fn quoted(text: &str, prefix: &str) -> BTreeSet<String> {
    text.split('"')
        .skip(1)
        .step_by(2)
        .filter(|w| w.starts_with(prefix) && w.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_environment_variable_is_documented() {
    let vars: BTreeSet<String> = sources()
        .iter()
        .flat_map(|p| quoted(&std::fs::read_to_string(p).unwrap(), "WEIR_"))
        .collect();
    assert!(vars.len() > 10, "{vars:?}");
    let (config, readme) = (read("docs/configuration.md"), read("README.md"));
    let missing: Vec<&String> = vars
        .iter()
        .filter(|v| !config.contains(&format!("`{v}`")) || !readme.contains(&format!("`{v}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "not in docs/configuration.md and the README: {missing:?}"
    );
}

#[test]
fn every_error_type_is_documented() {
    let src = read("crates/weir-core/src/error.rs");
    let body = src
        .split("pub fn kind(&self)")
        .nth(1)
        .unwrap()
        .split("\n    }\n")
        .next()
        .unwrap();
    let kinds: Vec<&str> = body
        .split("=> \"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap())
        .collect();
    assert!(kinds.len() > 15, "{kinds:?}");
    let config = read("docs/configuration.md");
    let table = config.split("## Errors").nth(1).unwrap();
    let missing: Vec<&&str> = kinds
        .iter()
        .filter(|k| !table.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "error types not in the Errors table: {missing:?}"
    );
}

#[test]
fn every_script_the_docs_name_exists() {
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    docs.push(read("README.md"));
    let mut named = BTreeSet::new();
    for text in &docs {
        for (i, _) in text.match_indices("scripts/") {
            // Not part of a longer path (`../shared/bench/…` is outside the repository).
            if i > 0
                && !text[..i].ends_with([' ', '`', '(', '\n', '$'])
                && !text[..i].ends_with("PWD/")
            {
                continue;
            }
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "/._-".contains(*c))
                .collect();
            named.insert(name.trim_end_matches(['.', '/']).to_owned());
        }
    }
    assert!(named.len() > 3, "{named:?}");
    let missing: Vec<&String> = named.iter().filter(|n| !root().join(n).exists()).collect();
    assert!(
        missing.is_empty(),
        "scripts the docs name but the repository lacks: {missing:?}"
    );
}
