//! What of an event the filters read, and parsing only that of a JSON body.
//!
//! [`EventReads`] says it for a whole event: the body's paths
//! ([`BodyReads`]) and whether `headers`, `meta` or `time` are read at all —
//! a broker's envelope need not copy headers, fill `meta` or format a time
//! to find that nothing wants a message.
//!
//! A source's filters usually read a few paths of an event's body
//! (`body.ref`, `body.repository.full_name`), and most events on a busy
//! source match none of them. To tell so, only those paths need building:
//! [`BodyReads::parse`] goes through the whole document, checking it
//! exactly as building it would (the same errors at the same line and
//! column: strings are checked to be UTF-8, numbers to be in range, nesting
//! to be within the limit), but builds only what the paths reach. What it
//! builds is the whole value *pruned*: an object on a path's way keeps only
//! the keys the paths name there; the value at a path's end, and an array
//! or a scalar met on the way, is kept whole. A filter reading only those
//! paths sees the same values — and so decides and explains the same — in
//! the pruned body as in the whole one.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// What the filters on a source read of an event: paths of its body, and
/// whether they read its `headers`, its `meta` or its `time` at all. The
/// envelope's other fields (`id`, `source`, `type`, `subject`) are always
/// built. An event built with only this much (see each source's envelope)
/// is matched and explained as the whole one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventReads {
    pub body: BodyReads,
    pub headers: bool,
    pub meta: bool,
    pub time: bool,
}

impl EventReads {
    /// Notes that `path` (from the envelope's top: `body.ref`, `meta`) is
    /// read. `false` when that is the whole body (or the whole envelope):
    /// then no `EventReads` can say so.
    pub fn add<S: AsRef<str>>(&mut self, path: &[S]) -> bool {
        match path.split_first() {
            None => false,
            Some((root, under)) => self.add_root(root.as_ref(), under),
        }
    }

    /// Notes that `under` is read of the envelope's `root` (all of it when
    /// empty); `false` when that is the whole body.
    pub fn add_root<S: AsRef<str>>(&mut self, root: &str, under: &[S]) -> bool {
        match root {
            "body" => return self.body.add(under),
            "headers" => self.headers = true,
            "meta" => self.meta = true,
            "time" => self.time = true,
            _ => {}
        }
        true
    }

    /// Whether an event built with `self` holds everything `other` reads.
    pub fn covers(&self, other: &EventReads) -> bool {
        self.body.covers(&other.body)
            && (self.headers || !other.headers)
            && (self.meta || !other.meta)
            && (self.time || !other.time)
    }
}

/// A set of paths into a JSON body (each one the keys from its top), with
/// none under another (`a` covers `a.b`). Empty: nothing is built; the
/// document is only checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyReads {
    /// Key → what is kept under it: `None` all of it, else these paths.
    fields: BTreeMap<String, Option<BodyReads>>,
}

impl BodyReads {
    /// Adds `path` (keys from the top of the body). `false` for the empty
    /// path, the body itself: then the whole body is read and no
    /// `BodyReads` can say so.
    pub fn add<S: AsRef<str>>(&mut self, path: &[S]) -> bool {
        let Some((first, rest)) = path.split_first() else {
            return false;
        };
        let slot = self
            .fields
            .entry(first.as_ref().to_string())
            .or_insert_with(|| Some(BodyReads::default()));
        match slot {
            // Already kept whole.
            None => {}
            Some(_) if rest.is_empty() => *slot = None,
            Some(under) => {
                under.add(rest);
            }
        }
        true
    }

    /// Whether parsing with `self` keeps everything `other` reads.
    pub fn covers(&self, other: &BodyReads) -> bool {
        other
            .fields
            .iter()
            .all(|(key, theirs)| match self.fields.get(key) {
                None => false,
                Some(None) => true,
                Some(Some(mine)) => theirs.as_ref().is_some_and(|t| mine.covers(t)),
            })
    }

    /// Parses `raw` as JSON, building only these paths (see the module
    /// doc). Fails exactly when `serde_json::from_slice::<Value>` fails,
    /// with the same error.
    pub fn parse(&self, raw: &[u8]) -> serde_json::Result<Value> {
        fn run<'de, R: serde_json::de::Read<'de>>(
            reads: &BodyReads,
            mut de: serde_json::Deserializer<R>,
        ) -> serde_json::Result<Value> {
            let value = Kept(reads).deserialize(&mut de)?;
            de.end()?;
            Ok(value)
        }
        // Checked as UTF-8 at once (fast), its strings need no check one by
        // one; the errors are those of the same bytes read as a slice.
        match std::str::from_utf8(raw) {
            Ok(text) => run(self, serde_json::Deserializer::from_str(text)),
            Err(_) => run(self, serde_json::Deserializer::from_slice(raw)),
        }
    }
}

/// `value` with only `paths` in it (each the keys from its top): what
/// [`BodyReads::parse`] builds of the same document, and what a CEL
/// program that reads those paths is given. Along each path an object is copied
/// key by key; where the path cannot go on (a key that is absent, or a
/// value that is not an object) what is there is kept as it is, so that
/// selecting the next field fails with the same error as on the whole.
/// A value that is not an object is returned whole.
pub fn prune(value: &Value, paths: &[Vec<String>]) -> Value {
    match value {
        Value::Object(whole) => prune_map(whole, paths),
        other => other.clone(),
    }
}

/// [`prune`] of an object.
pub fn prune_map(whole: &Map<String, Value>, paths: &[Vec<String>]) -> Value {
    let mut out = Map::new();
    for path in paths {
        let (mut src, mut dst) = (whole, &mut out);
        for (i, seg) in path.iter().enumerate() {
            let Some(next) = src.get(seg) else { break };
            let last = i + 1 == path.len();
            match next {
                Value::Object(inner) if !last => {
                    let slot = dst
                        .entry(seg.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    let Value::Object(slot) = slot else { break };
                    (src, dst) = (inner, slot);
                }
                other => {
                    dst.insert(seg.clone(), other.clone());
                    break;
                }
            }
        }
    }
    Value::Object(out)
}

/// Builds the parts of a value that `.0` names.
struct Kept<'r>(&'r BodyReads);

impl<'de> DeserializeSeed<'de> for Kept<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Kept<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(Key)? {
            match self.0.fields.get(key.as_ref()) {
                None => {
                    map.next_value::<Checked>()?;
                }
                Some(None) => {
                    out.insert(key.into_owned(), map.next_value::<Value>()?);
                }
                Some(Some(under)) => {
                    out.insert(key.into_owned(), map.next_value_seed(Kept(under))?);
                }
            }
        }
        Ok(Value::Object(out))
    }

    // Anything but an object is kept whole, as pruning would.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element::<Value>()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// A value read the way building it would read it — every string checked
/// to be UTF-8, every number parsed — and dropped. (serde's `IgnoredAny`
/// skips those checks: it would let through a body that building refuses.)
struct Checked;

impl<'de> de::Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Checked, D::Error> {
        d.deserialize_any(Checked)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_none<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reads(paths: &[&str]) -> BodyReads {
        let mut r = BodyReads::default();
        for p in paths {
            assert!(r.add(&p.split('.').collect::<Vec<_>>()));
        }
        r
    }

    /// The reference: the whole value, pruned to `paths`.
    fn pruned(whole: &Value, paths: &[&str]) -> Value {
        let paths: Vec<Vec<String>> = (paths.iter())
            .map(|p| p.split('.').map(str::to_string).collect())
            .collect();
        prune(whole, &paths)
    }

    fn both(raw: &[u8], paths: &[&str]) -> (Result<Value, String>, Result<Value, String>) {
        let whole = serde_json::from_slice::<Value>(raw)
            .map(|v| pruned(&v, paths))
            .map_err(|e| e.to_string());
        let kept = reads(paths).parse(raw).map_err(|e| e.to_string());
        (whole, kept)
    }

    const PATH_SETS: &[&[&str]] = &[
        &[],
        &["ref"],
        &["ref", "repository.full_name"],
        &["repository.owner.login", "repository"],
        &["commits", "head_commit.id", "n"],
        &["commits.0.id", "x.y.z", "s"],
        &["a.b", "a.c.d", "esc\"aped"],
    ];

    const DOCS: &[&str] = &[
        r#"{"ref":"refs/heads/main","repository":{"full_name":"o/r","owner":{"login":"o"},"size":3},"commits":[{"id":"a","modified":["m/x"]}],"head_commit":{"id":"a","msg":"é\n"},"n":1.5e3,"s":null}"#,
        r#"{"a":{"b":[1,2,{"c":3}],"c":{"d":true,"e":false}},"a":{"b":"again"},"x":{"y":"not an object"},"esc\"aped":"\u00e9\ud83d\ude00"}"#,
        r#"[{"ref":"in an array"}]"#,
        r#""just a string""#,
        r#"  {"ref" : 18446744073709551615, "repository": -9223372036854775808 , "commits": 1e-400}  "#,
        r#"{"x":{"y":{"z":[[[]]],"w":{}}},"z":{}}"#,
    ];

    #[test]
    fn keeps_what_pruning_the_whole_value_keeps() {
        for doc in DOCS {
            for paths in PATH_SETS {
                let (whole, kept) = both(doc.as_bytes(), paths);
                assert!(whole.is_ok(), "{doc}: {whole:?}");
                assert_eq!(kept, whole, "{doc} with {paths:?}");
            }
        }
        // The kept part is small: here just the one string.
        assert_eq!(
            reads(&["repository.full_name"])
                .parse(DOCS[0].as_bytes())
                .unwrap(),
            json!({"repository": {"full_name": "o/r"}})
        );
    }

    /// Refuses exactly what building refuses, with the same message (line
    /// and column), at every cut and for bytes no JSON may hold — invalid
    /// UTF-8 in a string, out-of-range numbers, nesting past the limit —
    /// wherever they are, in a kept part or not.
    #[test]
    fn refuses_what_building_refuses_with_the_same_error() {
        let mut bad: Vec<Vec<u8>> = Vec::new();
        for doc in DOCS {
            let b = doc.as_bytes();
            for cut in 0..b.len() {
                bad.push(b[..cut].to_vec());
                for junk in [b'\xff', b'}', b',', b'"', b'\\', 0x01] {
                    let mut m = b.to_vec();
                    m[cut] = junk;
                    bad.push(m);
                }
            }
        }
        bad.push(br#"{"skip":"\xc3\x28","ref":"x"}"#.to_vec());
        bad.push(br#"{"skip":1e400,"ref":"x"}"#.to_vec());
        bad.push(br#"{"skip":"\ud800","ref":"x"}"#.to_vec());
        bad.push(br#"{"ref":"x"} trailing"#.to_vec());
        bad.push(format!(r#"{{"skip":{}{}}}"#, "[".repeat(200), "]".repeat(200)).into_bytes());
        let mut refused = 0;
        for raw in &bad {
            for paths in PATH_SETS {
                let (whole, kept) = both(raw, paths);
                refused += usize::from(whole.is_err());
                assert_eq!(
                    kept,
                    whole,
                    "{:?} with {paths:?}",
                    String::from_utf8_lossy(raw)
                );
            }
        }
        // Most of those are malformed; each of the five made by hand is.
        assert!(refused > bad.len() * PATH_SETS.len() / 2, "{refused}");
        for raw in &bad[bad.len() - 5..] {
            assert!(
                reads(&[]).parse(raw).is_err(),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn paths_merge_and_cover() {
        let mut r = reads(&["a.b.c", "a.b.d"]);
        assert!(r.covers(&reads(&["a.b.c"])));
        assert!(
            !r.covers(&reads(&["a.b"])),
            "a.b whole is more than two of its keys"
        );
        assert!(r.add(&["a", "b"]));
        assert_eq!(r, reads(&["a.b"]));
        assert!(r.covers(&reads(&["a.b.c", "a.b.x.y"])));
        assert!(!r.covers(&reads(&["a"])));
        assert!(!r.covers(&reads(&["q"])));
        assert!(r.covers(&BodyReads::default()));
        // A path under one already kept whole changes nothing.
        let before = r.clone();
        assert!(r.add(&["a", "b", "z"]));
        assert_eq!(r, before);
        assert!(!r.add::<&str>(&[]), "the body itself cannot be a path");
    }

    #[test]
    fn pruning_keeps_the_paths_and_what_makes_them_fail() {
        let body = json!({"a": {"b": 1, "c": 2}, "s": "text", "list": [1], "big": {"x": 1}});
        let p = |list: &[&str]| -> Vec<Vec<String>> {
            list.iter()
                .map(|p| p.split('.').map(str::to_string).collect())
                .collect()
        };
        assert_eq!(prune(&body, &p(&["a.b"])), json!({"a": {"b": 1}}));
        assert_eq!(prune(&body, &p(&["a"])), json!({"a": {"b": 1, "c": 2}}));
        // Absent: the object on the way exists, the key does not.
        assert_eq!(prune(&body, &p(&["a.zz.y"])), json!({"a": {}}));
        assert_eq!(prune(&body, &p(&["nope.y"])), json!({}));
        // Not an object on the way: kept as it is (the same type error).
        assert_eq!(
            prune(&body, &p(&["s.y", "list.y"])),
            json!({"s": "text", "list": [1]})
        );
        // A body that is not an object is whole.
        assert_eq!(prune(&json!("text"), &p(&["a"])), json!("text"));
    }
}
