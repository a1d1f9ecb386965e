//! A subset of gjson paths over Argo event data, and gjson's text forms of
//! values. Supported: dotted keys, array indices as keys (`commits.0.id`),
//! `\.` to escape a dot in a key (`metadata.labels.app\.kubernetes\.io/name`),
//! and `#` for an array's length. Not supported yet (a load error says so):
//! wildcards (`*`, `?`), queries (`#(…)`), modifiers (`@…`), multipaths.

use serde_json::Value;

/// A compiled path.
#[derive(Debug, Clone, PartialEq)]
pub struct Path(Vec<String>);

impl Path {
    /// Splits `path`; `Err` names what this subset does not support.
    pub fn parse(path: &str) -> Result<Path, String> {
        if path.is_empty() {
            return Err("an empty path".into());
        }
        let mut segments = Vec::new();
        let mut current = String::new();
        let mut chars = path.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(n) => current.push(n),
                    None => return Err("a path cannot end with `\\`".into()),
                },
                '.' => segments.push(std::mem::take(&mut current)),
                '*' | '?' | '@' | '|' | '[' | ']' | '{' | '}' => {
                    return Err(format!(
                        "`{c}` in `{path}`: gjson wildcards, queries, modifiers and multipaths are not supported by tripline yet"
                    ))
                }
                '#' if chars.peek() == Some(&'(') => {
                    return Err(format!("`#(` in `{path}`: gjson queries are not supported by tripline yet"))
                }
                c => current.push(c),
            }
        }
        segments.push(current);
        Ok(Path(segments))
    }

    /// The value at the path, if any. `#` on an array is its length.
    pub fn get<'a>(&self, root: &'a Value) -> Option<std::borrow::Cow<'a, Value>> {
        let mut cur = root;
        for (i, seg) in self.0.iter().enumerate() {
            cur = match cur {
                Value::Object(m) => m.get(seg)?,
                Value::Array(a) if seg == "#" && i + 1 == self.0.len() => {
                    return Some(std::borrow::Cow::Owned(Value::from(a.len())))
                }
                Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(std::borrow::Cow::Borrowed(cur))
    }

    pub fn segments(&self) -> &[String] {
        &self.0
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let escaped: Vec<String> = self.0.iter().map(|s| s.replace('.', "\\.")).collect();
        f.write_str(&escaped.join("."))
    }
}

/// gjson `String()`: a string as is, a number as written (integers
/// verbatim, others shortest float form), booleans `true`/`false`, null
/// empty, objects and arrays as compact JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => number_text(n),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn number_text(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// gjson `Float()`: numbers; numeric strings parsed; `true` is 1; anything
/// else 0.
pub fn float(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::String(s) => s.trim().parse::<f64>().unwrap_or(0.0),
        Value::Bool(true) => 1.0,
        _ => 0.0,
    }
}

/// gjson `Bool()`: `true`; strings `true`/`1`/`t` (any case); non-zero numbers.
pub fn boolean(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "true" | "1" | "t"),
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_over_data() {
        let data = json!({"body": {"commits": [{"id": "a"}, {"id": "b"}], "a.b": 1, "n": 10.0, "x": 1.5},
                          "header": {"X-Foo": ["bar"]}});
        let get = |p: &str| Path::parse(p).unwrap().get(&data).map(|v| v.into_owned());
        assert_eq!(get("body.commits.1.id"), Some(json!("b")));
        assert_eq!(get("body.commits.#"), Some(json!(2)));
        assert_eq!(get("body.a\\.b"), Some(json!(1)));
        assert_eq!(get("header.X-Foo.0"), Some(json!("bar")));
        assert_eq!(get("bucket"), None);
        assert_eq!(text(&get("body.n").unwrap()), "10");
        assert_eq!(text(&get("body.x").unwrap()), "1.5");
        assert_eq!(text(&get("header.X-Foo").unwrap()), "[\"bar\"]");
        assert!(Path::parse("body.*.id")
            .unwrap_err()
            .contains("not supported"));
        assert!(Path::parse("body.#(id==\"a\")").is_err());
        assert_eq!(float(&json!("50")), 50.0);
        assert_eq!(float(&json!("x")), 0.0);
        assert!(boolean(&json!("T")) && !boolean(&json!("false")) && boolean(&json!(2)));
    }
}
