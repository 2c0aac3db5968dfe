//! A small YAML writer for `serde_json::Value` documents.
//!
//! Why not serde_yaml_ng: it writes strings such as `no`, `on` or `1.30`
//! unquoted, which YAML 1.1 readers (kubeadm's sigs.k8s.io/yaml, etcd) turn
//! into booleans or numbers. Here every string is double-quoted (JSON string
//! syntax is valid YAML) unless it spans lines, when it becomes a literal
//! block. Map keys are sorted, except `apiVersion` and `kind`, which lead, so
//! output never depends on serde_json's map ordering features.

use serde_json::Value;

/// Writes several documents separated by `---`.
pub fn documents(docs: &[Value]) -> String {
    docs.iter().map(to_yaml).collect::<Vec<_>>().join("---\n")
}

/// One YAML document (block style, two-space indent, trailing newline).
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => emit_map(&mut out, v, 0),
        Value::Array(a) if !a.is_empty() => emit_seq(&mut out, a, 0),
        other => {
            out.push_str(&scalar(other, 0));
            out.push('\n');
        }
    }
    out
}

fn sorted_entries(v: &Value) -> Vec<(&String, &Value)> {
    let Value::Object(m) = v else {
        return Vec::new();
    };
    let rank = |k: &str| match k {
        "apiVersion" => 0,
        "kind" => 1,
        _ => 2,
    };
    let mut entries: Vec<_> = m.iter().collect();
    entries.sort_by(|a, b| (rank(a.0), a.0).cmp(&(rank(b.0), b.0)));
    entries
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn emit_map(out: &mut String, v: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    for (k, val) in sorted_entries(v) {
        out.push_str(&pad);
        out.push_str(&key(k));
        out.push(':');
        match val {
            Value::Object(_) if is_block(val) => {
                out.push('\n');
                emit_map(out, val, indent + 2);
            }
            Value::Array(a) if is_block(val) => {
                out.push('\n');
                emit_seq(out, a, indent);
            }
            _ => {
                out.push(' ');
                out.push_str(&scalar(val, indent + 2));
                out.push('\n');
            }
        }
    }
}

fn emit_seq(out: &mut String, items: &[Value], indent: usize) {
    let pad = " ".repeat(indent);
    for item in items {
        if is_block(item) {
            // Render the item one level deeper, then turn the first line's
            // indentation into the `- ` marker.
            let mut sub = String::new();
            match item {
                Value::Object(_) => emit_map(&mut sub, item, indent + 2),
                Value::Array(a) => emit_seq(&mut sub, a, indent + 2),
                _ => unreachable!("is_block holds only for maps and sequences"),
            }
            out.push_str(&pad);
            out.push_str("- ");
            out.push_str(&sub[indent + 2..]);
        } else {
            out.push_str(&pad);
            out.push_str("- ");
            out.push_str(&scalar(item, indent + 2));
            out.push('\n');
        }
    }
}

fn key(k: &str) -> String {
    let plain = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && !is_ambiguous_word(k);
    if plain {
        k.to_string()
    } else {
        json_string(k)
    }
}

/// Words YAML 1.1 reads as booleans or null.
fn is_ambiguous_word(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null" | "~"
    )
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serialises")
}

fn scalar(v: &Value, indent: usize) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s, indent),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// A multi-line string becomes a literal block when that is lossless;
/// everything else is a double-quoted JSON string.
fn string(s: &str, indent: usize) -> String {
    let blockable = s.contains('\n')
        && !s.contains('\r')
        && !s.starts_with([' ', '\t', '\n'])
        && !s.ends_with("\n\n")
        && s.lines().all(|l| l == l.trim_end());
    if !blockable {
        return json_string(s);
    }
    let (header, body) = match s.strip_suffix('\n') {
        Some(body) => ("|", body),
        None => ("|-", s),
    };
    let pad = " ".repeat(indent);
    let mut out = header.to_string();
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roundtrip(v: &Value) -> Value {
        let text = to_yaml(v);
        let back: Value = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        back
    }

    #[test]
    fn ambiguous_strings_stay_strings() {
        let v = json!({"a": "no", "b": "on", "c": "1.30", "d": "0755", "e": "", "f": "~",
                       "g": "key: value", "h": "- x", "yes": true, "n": 3});
        assert_eq!(roundtrip(&v), v);
        let text = to_yaml(&v);
        assert!(text.contains("a: \"no\"\n"), "{text}");
        assert!(text.contains("\"yes\": true\n"), "{text}");
    }

    #[test]
    fn nested_maps_sequences_and_blocks_roundtrip() {
        let v = json!({
            "kind": "X", "apiVersion": "v1",
            "list": [{"name": "a", "value": "b"}, {"name": "c", "sub": [1, 2, {"k": "v"}]}, [1, [2]]],
            "empty": {}, "none": [], "nil": null,
            "text": "line 1\n  indented\n\nlast\n",
            "text2": "no newline\nat end",
            "trailing": "spaces  \nhere",
        });
        assert_eq!(roundtrip(&v), v);
        let text = to_yaml(&v);
        assert!(
            text.starts_with("apiVersion: \"v1\"\nkind: \"X\"\n"),
            "{text}"
        );
        assert!(
            text.contains("text: |\n  line 1\n    indented\n\n  last\n"),
            "{text}"
        );
    }

    #[test]
    fn documents_are_separated() {
        let text = documents(&[json!({"a": 1}), json!({"b": 2})]);
        assert_eq!(text, "a: 1\n---\nb: 2\n");
    }
}
