//! Output in Serf's shapes: `columnize`d tables, Go's `json.MarshalIndent`, and Go's `%q`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Go's `columnize.SimpleFormat`: `|`-separated fields, trimmed, padded to the widest entry of
/// each column and joined by two spaces; the last column of each line is not padded.
pub fn columnize(lines: &[String]) -> String {
    let rows: Vec<Vec<&str>> = lines
        .iter()
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    let mut widths: Vec<usize> = Vec::new();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            let w = cell.chars().count();
            match widths.get_mut(i) {
                Some(max) => *max = (*max).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push('\n');
    }
    out.pop();
    out
}

/// A JSON value rendered exactly as Go's `encoding/json` renders it.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Int(i64),
    Str(String),
    Array(Vec<Json>),
    /// Go structs keep their field order; Go maps come sorted (use [`Json::map`]).
    Object(Vec<(String, Json)>),
}

impl Json {
    pub fn str(s: &str) -> Json {
        Json::Str(s.to_owned())
    }

    /// A Go map: keys sorted.
    pub fn map<V>(m: &BTreeMap<String, V>, f: impl Fn(&V) -> Json) -> Json {
        Json::Object(m.iter().map(|(k, v)| (k.clone(), f(v))).collect())
    }

    /// `json.MarshalIndent(v, "", "  ")`.
    pub fn pretty(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        let indent = |out: &mut String, d: usize| {
            out.push('\n');
            out.push_str(&"  ".repeat(d));
        };
        match self {
            Json::Null => out.push_str("null"),
            Json::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Json::Str(s) => quote_json(out, s),
            Json::Array(items) if items.is_empty() => out.push_str("[]"),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    indent(out, depth + 1);
                    item.write(out, depth + 1);
                }
                indent(out, depth);
                out.push(']');
            }
            Json::Object(items) if items.is_empty() => out.push_str("{}"),
            Json::Object(items) => {
                out.push('{');
                for (i, (k, v)) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    indent(out, depth + 1);
                    quote_json(out, k);
                    out.push_str(": ");
                    v.write(out, depth + 1);
                }
                indent(out, depth);
                out.push('}');
            }
        }
    }
}

/// Go's JSON string escaping: `<`, `>`, `&`, U+2028 and U+2029 as `\u` escapes too.
fn quote_json(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Go's `%q` for a string: double-quoted with Go escapes, non-printable characters escaped.
pub fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if c.is_control() => {
                let n = c as u32;
                if n < 0x80 {
                    let _ = write!(out, "\\x{n:02x}");
                } else if n <= 0xffff {
                    let _ = write!(out, "\\u{n:04x}");
                } else {
                    let _ = write!(out, "\\U{n:08x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_pad_all_but_the_last() {
        let lines = vec![
            "a|127.0.0.1:7946|alive|".to_string(),
            "long-name|127.0.0.10:7946|failed|role=web".to_string(),
        ];
        assert_eq!(
            columnize(&lines),
            "a          127.0.0.1:7946   alive   \n\
             long-name  127.0.0.10:7946  failed  role=web"
        );
    }

    #[test]
    fn json_matches_gos_marshal_indent() {
        let v = Json::Object(vec![
            ("members".into(), Json::Null),
            (
                "a".into(),
                Json::Array(vec![Json::Int(1), Json::str("<x>")]),
            ),
            ("e".into(), Json::Object(vec![])),
        ]);
        assert_eq!(
            v.pretty(),
            "{\n  \"members\": null,\n  \"a\": [\n    1,\n    \"\\u003cx\\u003e\"\n  ],\n  \"e\": {}\n}"
        );
    }

    #[test]
    fn go_quote_escapes_like_percent_q() {
        assert_eq!(go_quote("n1"), "\"n1\"");
        assert_eq!(go_quote("a\"b\n"), "\"a\\\"b\\n\"");
    }
}
