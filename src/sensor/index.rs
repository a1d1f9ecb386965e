//! Which dependencies an event must be checked against.
//!
//! Dependencies are grouped by source, so sensors on other sources cost
//! nothing. Within a source, a dependency whose filter requires
//! `path equals "<string>"` (at the top, or inside `all:`) is filed under
//! that value: an event is only checked against the dependencies filed under
//! its own value at that path, plus those with no such filter. The full
//! filter still decides; the index only skips dependencies that cannot match.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::Sensor;
use crate::event::Event;

/// `(sensor index, dependency index)`.
pub type Candidate = (usize, usize);

type ByValue = HashMap<String, Vec<Candidate>>;

#[derive(Default)]
pub struct SourceIndex {
    /// Every dependency on this source, in order.
    pub all: Vec<Candidate>,
    /// Per indexed path: value → the dependencies requiring it.
    keyed: Vec<(Vec<String>, ByValue)>,
    rest: Vec<Candidate>,
    /// Whether the headers alone decide that an event matches nothing here,
    /// and why: see [`SourceIndex::headers_decide`].
    headers_decide: bool,
}

impl SourceIndex {
    pub fn build(sensors: &[Sensor], all: Vec<Candidate>) -> Self {
        let equalities = |c: &Candidate| {
            sensors[c.0].dependencies[c.1]
                .filter
                .as_ref()
                .map(|f| f.string_equalities())
                .unwrap_or_default()
        };
        // The most selective path is the one with the most distinct values.
        let mut distinct: HashMap<&[String], HashSet<&str>> = HashMap::new();
        for c in &all {
            for (path, v) in equalities(c) {
                distinct.entry(path).or_default().insert(v);
            }
        }
        let mut keyed: HashMap<Vec<String>, ByValue> = HashMap::new();
        let mut rest = Vec::new();
        let mut headers_decide = true;
        let on_headers = |p: &[String]| p.first().is_some_and(|r| r == "headers");
        for c in &all {
            match equalities(c)
                .into_iter()
                // On a tie, a header path: then the headers may decide.
                .max_by_key(|(p, _)| (distinct[p].len(), on_headers(p)))
            {
                Some((path, v)) => {
                    let leading = sensors[c.0].dependencies[c.1]
                        .filter
                        .as_ref()
                        .and_then(|f| f.leading_equality());
                    headers_decide &= on_headers(path) && leading == Some((path, v));
                    keyed
                        .entry(path.to_vec())
                        .or_default()
                        .entry(v.to_string())
                        .or_default()
                        .push(*c)
                }
                None => rest.push(*c),
            }
        }
        SourceIndex {
            all,
            keyed: keyed.into_iter().collect(),
            headers_decide: headers_decide && rest.is_empty(),
            rest,
        }
    }

    /// Whether an event's headers alone tell that it matches nothing here,
    /// and why: every dependency is filed under a header equality (so the
    /// candidates depend on the headers only) that is its filter's first
    /// clause (so when it fails, it is the first failure the why-not
    /// reports, whatever the body holds). Then an event with no body yet
    /// gets the same candidates and, if there are none, the same why-not as
    /// the whole event would.
    pub fn headers_decide(&self) -> bool {
        self.headers_decide
    }

    /// The dependencies `event` may match, sorted (grouped by sensor).
    pub fn candidates(&self, event: &Event) -> Vec<Candidate> {
        let mut out = self.rest.clone();
        for (path, by_value) in &self.keyed {
            let key = event.lookup(path).and_then(|v| match v.as_ref() {
                Value::String(s) => Some(s.clone()),
                Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
                _ => None,
            });
            if let Some(found) = key.and_then(|k| by_value.get(&k)) {
                out.extend_from_slice(found);
            }
        }
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::event::Event;
    use crate::sensor::{load, SensorSet};
    use serde_json::json;

    fn set() -> (tempfile::TempDir, SensorSet) {
        set_of(&[
            "{path: headers.X-Kind, equals: push}",
            "{all: [{path: headers.x-kind, equals: push}, {path: body.n, equals: '5'}]}",
            "{all: [{path: body.n, equals: '7'}, {path: body.flag, equals: 'true'}]}",
            "{any: [{path: body.n, equals: '5'}, {path: body.n, equals: '6'}]}",
            "{not: {path: body.n, equals: '5'}}",
            "{path: body.n, gt: 4}",
            "{path: body.name, equals: alpha}",
            "{all: [{path: body.name, equals: beta}, {path: headers.X-Kind, equals: tag}]}",
        ])
    }

    /// One sensor per filter, each with one dependency on source `src`.
    fn set_of(filters: &[&str]) -> (tempfile::TempDir, SensorSet) {
        let mut text = String::new();
        for (i, f) in filters.iter().enumerate() {
            text.push_str(&format!(
                "---\napiVersion: tripline.dev/v1alpha1\nkind: Sensor\nmetadata: {{name: s{i}}}\nspec:\n  dependencies:\n    - {{name: d, source: src, filters: {f}}}\n  triggers:\n    - {{name: t, workflow: {{workflowTemplateRef: x}}}}\n"
            ));
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.yaml");
        std::fs::write(&file, text).unwrap();
        let sources: crate::sensor::SourceCatalog = ["src"].into_iter().collect();
        let set = load(&[file], &sources).unwrap();
        (dir, set)
    }

    /// Where the headers decide, an event without its body gets the same
    /// candidates and, when none, the same why-not as the whole event —
    /// whatever the body would have said to the other clauses.
    #[test]
    fn where_headers_decide_the_body_changes_neither_match_nor_why_not() {
        let (_d, set) = set_of(&[
            "{path: headers.X-Kind, equals: push}",
            "{all: [{path: headers.x-kind, equals: tag}, {path: body.n, equals: '5'}]}",
            "{all: [{path: headers.X-Kind, equals: release}, {any: [{path: body.n, gt: 4}, {not: {path: body.name, equals: alpha}}]}]}",
        ]);
        let elsewhere = Event::new("a source no sensor uses", b"", json!(null));
        assert!(set.unmatched_by_headers(&elsewhere));
        let bodies = [
            json!({}),
            json!({"n": 5}),
            json!({"n": 9, "name": "alpha"}),
            json!({"n": 1, "name": "beta"}),
            json!(null),
            json!("text"),
        ];
        let mut decided = 0;
        for kind in [
            None,
            Some("push"),
            Some("tag"),
            Some("release"),
            Some("other"),
        ] {
            for body in &bodies {
                let mut whole = Event::new("src", b"", body.clone());
                if let Some(k) = kind {
                    whole.headers.insert("x-kind", k);
                }
                let mut bare = whole.clone();
                bare.body = serde_json::Value::Null;
                if !set.unmatched_by_headers(&bare) {
                    continue;
                }
                decided += 1;
                assert!(set.match_event(&whole).is_empty(), "{kind:?} {body}");
                let reasons = |e: &Event| -> Vec<String> {
                    set.why_not(e, 10).into_iter().map(|m| m.reason).collect()
                };
                assert_eq!(reasons(&bare), reasons(&whole), "{kind:?} {body}");
                assert_eq!(reasons(&whole).len(), 3);
            }
        }
        assert_eq!(decided, 2 * bodies.len(), "no kind header, and `other`");

        // Not decided: a body clause first, an equality on the body, no
        // filter at all, a header equality that is not the first clause.
        for filters in [
            &["{all: [{path: body.n, equals: '5'}, {path: headers.X-Kind, equals: push}]}"][..],
            &[
                "{path: headers.X-Kind, equals: push}",
                "{path: body.name, equals: alpha}",
            ],
            &[
                "{path: headers.X-Kind, equals: push}",
                "{path: body.n, gt: 4}",
            ],
            &["{all: [{path: body.n, gt: 4}, {path: headers.X-Kind, equals: push}]}"],
        ] {
            let (_d, set) = set_of(filters);
            let mut other = Event::new("src", b"", json!(null));
            other.headers.insert("x-kind", "other");
            assert!(!set.unmatched_by_headers(&other), "{filters:?}");
        }
    }

    /// The index never changes the answer: compare with checking every
    /// dependency (what `explain` does).
    #[test]
    fn indexed_matching_equals_brute_force() {
        let (_d, set) = set();
        let kinds = [None, Some("push"), Some("PUSH"), Some("tag")];
        let bodies = [
            json!({}),
            json!({"n": 5}),
            json!({"n": "5"}),
            json!({"n": 5.0}),
            json!({"n": 6, "name": "alpha"}),
            json!({"n": 7, "flag": true, "name": "beta"}),
            json!({"n": [5], "name": null}),
        ];
        let mut checked = 0;
        for kind in kinds {
            for body in &bodies {
                let mut e = Event::new("src", b"", body.clone());
                if let Some(k) = kind {
                    e.headers.insert("X-KIND", k);
                }
                let fast: Vec<usize> = set.match_event(&e).iter().map(|m| m.sensor).collect();
                let slow: Vec<usize> = set
                    .explain(&e)
                    .sensors
                    .iter()
                    .filter(|s| s.dependencies.iter().any(|d| d.matched))
                    .map(|s| s.sensor[1..].parse().unwrap())
                    .collect();
                assert_eq!(fast, slow, "kind {kind:?}, body {body}");
                checked += fast.len();
            }
        }
        assert!(
            checked > 20,
            "the cases must exercise matches too ({checked})"
        );
    }
}
