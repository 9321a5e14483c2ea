//! Every parse and type error of a file at once, each with its object path, its line, a
//! did-you-mean for a misspelled field, and what a mistyped field expects.
//!
//! Serde stops at the first error. When a file does not deserialize, the file is read as
//! a plain YAML tree, and deserialized again and again with the failing node removed from
//! the tree each time (a path-tracking wrapper names it), until it deserializes or the
//! errors stop being new. Lines come from the original text, so they stay right however
//! the tree was cut.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::Config;

/// At most this many errors are reported for one file.
const MOST: usize = 50;

/// Every parse or type error of `text` (a file that is YAML but not a valid [`Config`]),
/// as `path: message (line N)`. Empty when it deserializes after all.
pub fn errors(text: &str) -> Vec<String> {
    let Ok(tree) = serde_saphyr::from_str::<Value>(text) else {
        return Vec::new();
    };
    let lines = lines_of(text);
    let mut tree = tree;
    let mut removed: Vec<(String, usize)> = Vec::new();
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while out.len() < MOST {
        let Ok(yaml) = serde_saphyr::to_string(&tree) else {
            break;
        };
        let Some((path, message)) = first_error(&yaml) else {
            break;
        };
        let (at, field, mut message) = explain(&path, &message);
        if field.is_none()
            && !message.contains("got ")
            && !message.contains("invalid type")
            && let Some(v) = node(&mut tree, &segments(&at))
                .filter(|v| !v.is_object() && !v.is_array())
                .filter(|v| !message.contains(&v.to_string()))
        {
            message.push_str(&format!(", got {v}"));
        }
        if !seen.insert((at.clone(), field.clone())) {
            break;
        }
        let shown = shown_path(&at, &removed);
        let full = match &field {
            Some(f) if shown.is_empty() => f.clone(),
            Some(f) => format!("{shown}.{f}"),
            None if shown.is_empty() => "(top level)".to_owned(),
            None => shown.clone(),
        };
        let line = lines.get(&full).or_else(|| lines.get(&shown));
        out.push((
            line.copied().unwrap_or(0),
            match line {
                Some(l) => format!("{full}: {message} (line {l})"),
                None => format!("{full}: {message}"),
            },
        ));
        if !prune(&mut tree, &at, field.as_deref(), &mut removed) {
            break;
        }
    }
    // The tree is read back in key order: report in the file's order.
    out.sort_by_key(|(line, _)| *line);
    out.into_iter().map(|(_, e)| e).collect()
}

/// The first error and where it is, or `None` when `yaml` deserializes.
fn first_error(yaml: &str) -> Option<(String, String)> {
    let mut path = String::new();
    let result = serde_saphyr::with_deserializer_from_str(yaml, |de| {
        serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    });
    match result {
        Ok(_) => None,
        Err(e) => {
            let path = if path == "." { String::new() } else { path };
            Some((path, plain(&e.to_string())))
        }
    }
}

/// The message without the location and source excerpt the YAML reader adds (lines here
/// are those of the re-read tree, not of the file).
fn plain(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message);
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first.find(": ") {
        Some(i) if first.starts_with("line ") => first[i + 2..].to_owned(),
        _ => first.to_owned(),
    }
}

/// Splits an unknown-field error into the field's name and a did-you-mean; rewrites what
/// a mistyped field expects in words.
fn explain(path: &str, message: &str) -> (String, Option<String>, String) {
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((field, expected)) = rest.split_once('`')
    {
        let candidates: Vec<&str> = expected
            .split([',', ' ', '`'])
            .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .filter(|w| !["expected", "one", "of", "or"].contains(w))
            .collect();
        let hint = crate::did_you_mean(field, candidates.iter().copied())
            .map(|c| format!(" (did you mean {c:?}?)"))
            .unwrap_or_default();
        // The path ends at the unknown field; what holds it is the mapping above.
        let parent = path
            .strip_suffix(field)
            .map_or(path, |p| p.strip_suffix('.').unwrap_or(p));
        return (
            parent.to_owned(),
            Some(field.to_owned()),
            format!("unknown field{hint}"),
        );
    }
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some((field, _)) = rest.split_once('`')
    {
        return (path.to_owned(), None, format!("missing field {field:?}"));
    }
    (path.to_owned(), None, in_words(message))
}

/// `expected u32` → `expected a whole number`, and the like.
fn in_words(message: &str) -> String {
    let words = [
        ("expected usize", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected u8", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected a mapping (key: value)"),
        ("invalid u64", "expected a whole number"),
        ("invalid u32", "expected a whole number"),
        ("invalid u16", "expected a whole number"),
        ("invalid u8", "expected a whole number"),
        ("invalid usize", "expected a whole number"),
        ("invalid i64", "expected a whole number"),
        ("invalid i32", "expected a whole number"),
        ("invalid f64", "expected a number"),
    ];
    let mut m = message.to_owned();
    for (from, to) in words {
        if let Some(i) = m.find(from)
            && !m[i + from.len()..].starts_with(|c: char| c.is_ascii_alphanumeric())
        {
            m.replace_range(i..i + from.len(), to);
        }
    }
    m
}

/// Removes what failed: an unknown field from its mapping, else the node at `path` (a
/// list element is removed and remembered, so later positions are reported as written).
/// Returns whether anything was removed.
fn prune(
    tree: &mut Value,
    path: &str,
    field: Option<&str>,
    removed: &mut Vec<(String, usize)>,
) -> bool {
    let segments = segments(path);
    if let Some(f) = field {
        return node(tree, &segments)
            .and_then(Value::as_object_mut)
            .is_some_and(|m| m.remove(f).is_some());
    }
    let Some((last, parent)) = segments.split_last() else {
        return false;
    };
    match (node(tree, parent), last) {
        (Some(Value::Object(m)), Seg::Key(k)) => m.remove(k).is_some(),
        (Some(Value::Array(a)), Seg::Index(i)) if *i < a.len() => {
            a.remove(*i);
            removed.push((join(parent), *i));
            true
        }
        _ => false,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `routes[0].match.paths[1]` → its segments. Enum variants (a policy's kind) are keys of
/// one-key mappings, as the file writes them.
fn segments(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            if i > 0 {
                out.push(Seg::Key(rest[..i].to_owned()));
            }
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                if let Ok(n) = rest[1..end].parse() {
                    out.push(Seg::Index(n));
                }
                rest = &rest[end + 1..];
            }
        } else {
            out.push(Seg::Key(rest.to_owned()));
        }
    }
    out
}

fn join(segments: &[Seg]) -> String {
    let mut s = String::new();
    for seg in segments {
        match seg {
            Seg::Key(k) if s.is_empty() => s.push_str(k),
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn node<'a>(tree: &'a mut Value, segments: &[Seg]) -> Option<&'a mut Value> {
    segments.iter().try_fold(tree, |v, seg| match (v, seg) {
        (Value::Object(m), Seg::Key(k)) => m.get_mut(k),
        (Value::Array(a), Seg::Index(i)) => a.get_mut(*i),
        _ => None,
    })
}

/// A path in the cut tree as the file has it: list positions shifted back past the
/// elements removed before them.
fn shown_path(path: &str, removed: &[(String, usize)]) -> String {
    let mut segs = segments(path);
    for k in 0..segs.len() {
        if let Seg::Index(i) = segs[k] {
            let list = join(&segs[..k]);
            let mut at = i;
            // Later removals were made in the already-cut list: undo them last first.
            for (l, r) in removed.iter().rev() {
                if *l == list && *r <= at {
                    at += 1;
                }
            }
            segs[k] = Seg::Index(at);
        }
    }
    join(&segs)
}

/// `errors` (`path: message`, from validating a file's configuration) with the line of
/// each path in `text` added, as parse errors have theirs.
pub fn with_lines(text: &str, errors: Vec<String>) -> Vec<String> {
    let lines = lines_of(text);
    errors
        .into_iter()
        .map(|e| {
            let path = e.split(": ").next().unwrap_or("");
            // The nearest node the file has: a path may end below what it wrote.
            let mut p = path;
            loop {
                if let Some(l) = lines.get(p) {
                    return format!("{e} (line {l})");
                }
                match p.rfind(['.', '[']) {
                    Some(i) => p = &p[..i],
                    None => return e,
                }
            }
        })
        .collect()
}

/// The line of every node of the file, by path.
fn lines_of(text: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    if let Ok(root) = serde_saphyr::from_str::<serde_saphyr::Spanned<Tree>>(text) {
        walk(&root, &mut Vec::new(), &mut out);
    }
    out
}

fn walk(node: &serde_saphyr::Spanned<Tree>, at: &mut Vec<Seg>, out: &mut BTreeMap<String, usize>) {
    if !at.is_empty() {
        out.insert(join(at), node.referenced.line() as usize);
    }
    match &node.value {
        Tree::Map(entries) => {
            for (k, v) in entries {
                at.push(Seg::Key(k.clone()));
                walk(v, at, out);
                at.pop();
            }
        }
        Tree::Seq(items) => {
            for (i, v) in items.iter().enumerate() {
                at.push(Seg::Index(i));
                walk(v, at, out);
                at.pop();
            }
        }
        Tree::Leaf => {}
    }
}

/// A YAML document's shape with the place of each node.
enum Tree {
    Map(Vec<(String, serde_saphyr::Spanned<Tree>)>),
    Seq(Vec<serde_saphyr::Spanned<Tree>>),
    Leaf,
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tree;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Tree, A::Error> {
                let mut entries = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    entries.push((k, m.next_value()?));
                }
                Ok(Tree::Map(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Tree, A::Error> {
                let mut items = Vec::new();
                while let Some(v) = s.next_element()? {
                    items.push(v);
                }
                Ok(Tree::Seq(items))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_none<E: de::Error>(self) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_with_its_path_line_and_a_hint() {
        let text = "upstreams:
  u: { targets: [ { address: \"127.0.0.1:1\" } ] }
routes:
  - name: a
    upstream: u
    stirp_prefix: true
  - name: b
    upstream: u
    priority: high
  - name: c
    upstrem: u
limits:
  max_body_size: lots
workers: many
";
        let e = errors(text);
        assert!(
            e.contains(
                &"routes[0].stirp_prefix: unknown field (did you mean \"strip_prefix\"?) (line 6)"
                    .to_owned()
            ),
            "{e:#?}"
        );
        assert!(
            e.iter().any(|m| m.starts_with("routes[1].priority: ")
                && m.contains("expected a whole number")
                && m.ends_with("(line 9)")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|m| m
                    .starts_with("routes[2].upstrem: unknown field (did you mean \"upstream\"?)")),
            "{e:#?}"
        );
        assert!(
            e.iter().any(|m| m.starts_with("limits.max_body_size: ")
                && m.contains("1MiB")
                && m.ends_with("(line 13)")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("workers: ") && m.contains("whole number")),
            "{e:#?}"
        );
        assert_eq!(e.len(), 5, "{e:#?}");
    }

    #[test]
    fn positions_after_a_removed_list_element_are_as_written() {
        let text =
            "routes:\n  - { upstream: u }\n  - { name: b, upstream: u, stirp_prefix: true }\n";
        let e = errors(text);
        assert!(
            e[0].starts_with("routes[0]: missing field \"name\""),
            "{e:#?}"
        );
        assert!(
            e[1].starts_with("routes[1].stirp_prefix: unknown field"),
            "{e:#?}"
        );
    }
}
