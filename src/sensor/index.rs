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
        for c in &all {
            match equalities(c)
                .into_iter()
                .max_by_key(|(p, _)| distinct[p].len())
            {
                Some((path, v)) => keyed
                    .entry(path.to_vec())
                    .or_default()
                    .entry(v.to_string())
                    .or_default()
                    .push(*c),
                None => rest.push(*c),
            }
        }
        SourceIndex {
            all,
            keyed: keyed.into_iter().collect(),
            rest,
        }
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
        let filters = [
            "{path: headers.X-Kind, equals: push}",
            "{all: [{path: headers.x-kind, equals: push}, {path: body.n, equals: '5'}]}",
            "{all: [{path: body.n, equals: '7'}, {path: body.flag, equals: 'true'}]}",
            "{any: [{path: body.n, equals: '5'}, {path: body.n, equals: '6'}]}",
            "{not: {path: body.n, equals: '5'}}",
            "{path: body.n, gt: 4}",
            "{path: body.name, equals: alpha}",
            "{all: [{path: body.name, equals: beta}, {path: headers.X-Kind, equals: tag}]}",
        ];
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
