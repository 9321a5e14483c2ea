//! `weir config import-openapi`: routes made from an OpenAPI 3 document, one per operation,
//! all to one upstream, written through the admin API.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::cli::Target;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// A route derived from one operation.
#[derive(Debug, PartialEq)]
pub struct Planned {
    pub name: String,
    pub body: Value,
}

/// The routes for every operation of `spec` (OpenAPI 3.x, JSON or YAML), to `upstream`,
/// with paths under `prefix` (e.g. `/api`, or empty).
pub fn plan(spec: &Value, upstream: &str, prefix: &str) -> Result<Vec<Planned>, String> {
    let version = spec["openapi"].as_str().unwrap_or("");
    if !version.starts_with("3.") {
        return Err(format!(
            "not an OpenAPI 3 document (openapi: {:?}); Swagger 2 documents need converting first",
            spec["openapi"]
        ));
    }
    let Some(paths) = spec["paths"].as_object() else {
        return Err("the document has no paths".to_owned());
    };
    let prefix = prefix.trim_end_matches('/');
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (path, item) in paths {
        if !path.starts_with('/') {
            return Err(format!("path {path:?} does not start with '/'"));
        }
        let full = format!("{prefix}{path}");
        let matcher = path_matcher(&full)?;
        for method in METHODS {
            let Some(op) = item.get(method) else {
                continue;
            };
            let base = op["operationId"]
                .as_str()
                .map(sanitize)
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| sanitize(&format!("{method}{full}")));
            let mut name = base.clone();
            let mut n = 2;
            while !names.insert(name.clone()) {
                name = format!("{base}-{n}");
                n += 1;
            }
            out.push(Planned {
                body: json!({
                    "name": name,
                    "upstream": upstream,
                    "match": { "paths": [matcher], "methods": [method.to_uppercase()] },
                }),
                name,
            });
        }
    }
    Ok(out)
}

/// `/pets` → exact; `/pets/{id}` → `~^/pets/[^/]+$` (one segment per parameter).
fn path_matcher(path: &str) -> Result<String, String> {
    if !path.contains('{') {
        return Ok(path.to_owned());
    }
    let mut re = String::from("~^");
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            re.push('/');
        }
        let mut rest = seg;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .map(|c| open + c)
                .ok_or_else(|| format!("path {path:?} has an unclosed '{{'"))?;
            re.push_str(&escape(&rest[..open]));
            re.push_str("[^/]+");
            rest = &rest[close + 1..];
        }
        re.push_str(&escape(rest));
    }
    re.push('$');
    Ok(re)
}

fn escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

/// A route name from an operation id: letters, digits, '-', '_', '.'; at most 100.
fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    out.trim_matches(['-', '.']).chars().take(100).collect()
}

pub async fn import(
    target: &Target,
    spec_path: &Path,
    upstream: &str,
    prefix: &str,
    dry_run: bool,
) -> ExitCode {
    let text = match std::fs::read_to_string(spec_path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("weir: cannot read {}: {e}", spec_path.display());
            return ExitCode::FAILURE;
        }
    };
    let spec: Value = match serde_saphyr::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("weir: {} is not JSON or YAML: {e}", spec_path.display());
            return ExitCode::FAILURE;
        }
    };
    let routes = match plan(&spec, upstream, prefix) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("weir: {e}");
            return ExitCode::FAILURE;
        }
    };
    if routes.is_empty() {
        eprintln!("weir: the document has no operations");
        return ExitCode::FAILURE;
    }
    let mut failed = 0;
    for r in &routes {
        let m = &r.body["match"];
        let line = format!(
            "{} {} {} → {upstream}",
            r.name,
            m["methods"][0].as_str().unwrap_or(""),
            m["paths"][0].as_str().unwrap_or("")
        );
        if dry_run {
            println!("+ routes/{line}");
            continue;
        }
        match target
            .call(
                Method::PUT,
                &format!("/api/v1/routes/{}", r.name),
                Some(&r.body),
            )
            .await
        {
            Ok((StatusCode::OK, _)) => println!("+ routes/{line}"),
            Ok((status, body)) => {
                failed += 1;
                eprintln!(
                    "! routes/{}: {} ({status})",
                    r.name,
                    body["error"]["message"].as_str().unwrap_or("refused")
                );
                for e in body["error"]["errors"].as_array().into_iter().flatten() {
                    eprintln!("    {}", e.as_str().unwrap_or(""));
                }
            }
            Err(e) => {
                eprintln!("weir: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if dry_run {
        println!("{} routes would be written (dry run)", routes.len());
    } else {
        println!("{} routes written, {failed} refused", routes.len() - failed);
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_become_routes_with_templated_paths() {
        let spec = json!({
            "openapi": "3.0.3",
            "paths": {
                "/pets": { "get": { "operationId": "listPets" }, "post": { "operationId": "createPets" } },
                "/pets/{petId}": { "get": { "operationId": "showPetById" }, "parameters": [] },
                "/pets/{petId}/photos/{file}.png": { "delete": {} },
                "/a.b": { "get": { "operationId": "listPets" } }
            }
        });
        let routes = plan(&spec, "pets", "/v1/").unwrap();
        let got: Vec<(String, String, String)> = routes
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    r.body["match"]["methods"][0].as_str().unwrap().to_owned(),
                    r.body["match"]["paths"][0].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        // Two operations share an id: the second gets a suffix.
        let list: Vec<&(String, String, String)> =
            got.iter().filter(|g| g.0.starts_with("listPets")).collect();
        assert_eq!(list.len(), 2);
        assert_ne!(list[0].0, list[1].0);
        assert!(list.iter().any(|g| g.2 == "/v1/pets") && list.iter().any(|g| g.2 == "/v1/a.b"));
        assert!(got.contains(&("createPets".into(), "POST".into(), "/v1/pets".into())));
        assert!(got.contains(&(
            "showPetById".into(),
            "GET".into(),
            "~^/v1/pets/[^/]+$".into()
        )));
        assert!(
            got.contains(&(
                "delete-v1-pets-petId-photos-file-.png".into(),
                "DELETE".into(),
                "~^/v1/pets/[^/]+/photos/[^/]+\\.png$".into()
            )),
            "{got:?}"
        );
        assert!(plan(&json!({ "swagger": "2.0", "paths": {} }), "u", "").is_err());
    }
}
