//! How list commands print: a table for a person at a terminal, JSON or YAML for scripts
//! (`-o table|json|yaml`; without it, a table on a terminal and JSON otherwise).

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

impl Format {
    /// `-o` when given, else a table for a terminal and JSON for a pipe or a file.
    pub fn or_default(chosen: Option<Self>) -> Self {
        chosen.unwrap_or_else(|| {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                Self::Table
            } else {
                Self::Json
            }
        })
    }
}

/// Renders `v` (a list of objects, or one object) as `format`; `columns` are the fields a
/// table shows (dotted for nested ones, e.g. `last_error.detail`).
pub fn render(v: &Value, columns: &[&str], format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()) + "\n",
        Format::Yaml => serde_saphyr::to_string(v).unwrap_or_else(|_| v.to_string()),
        Format::Table => table(v, columns),
    }
}

fn table(v: &Value, columns: &[&str]) -> String {
    let rows: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    if rows.is_empty() {
        return "(none)\n".to_owned();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(field(r, c))).collect())
        .collect();
    let header: Vec<String> = columns
        .iter()
        .map(|c| c.replace(['.', '_'], " ").to_uppercase())
        .collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(cells.iter()) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn field<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| &v[k])
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.replace(['\n', '\r', '\t'], " "),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns_and_show_absent_fields_as_a_dash() {
        let v = json!([
            { "name": "orders", "pending": 12, "last_error": { "detail": "timeout" } },
            { "name": "b", "pending": 0, "last_error": null, "models": ["a", "b"] }
        ]);
        let t = render(
            &v,
            &["name", "pending", "last_error.detail", "models"],
            Format::Table,
        );
        assert_eq!(
            t,
            "NAME    PENDING  LAST ERROR DETAIL  MODELS\norders  12       timeout            -\nb       0        -                  a,b\n"
        );
        assert_eq!(render(&json!([]), &["name"], Format::Table), "(none)\n");
        let y = render(&v, &[], Format::Yaml);
        assert!(y.contains("name: orders"), "{y}");
        let j: Value = serde_json::from_str(&render(&v, &[], Format::Json)).unwrap();
        assert_eq!(j, v);
    }
}
