//! Which dependencies an event must be checked against.
//!
//! Dependencies are grouped by source, so sensors on other sources cost
//! nothing. Within a source, a dependency whose filter requires
//! `path equals "<string>"` (at the top, or inside `all:`) is filed under
//! that value: an event is only checked against the dependencies filed under
//! its own value at that path, plus those with no such filter. The full
//! filter still decides; the index only skips dependencies that cannot match.
//!
//! It also knows what the filters on a source read of a body
//! ([`SourceIndex::reads`]), so that a source can build only that
//! much of an event to find that nothing wants it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::Sensor;
use crate::event::{Event, EventReads};

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
    /// What the filters here read of an event; `None`: all of its body.
    reads: Option<Arc<EventReads>>,
}

impl SourceIndex {
    pub fn build(sensors: &[Sensor], all: Vec<Candidate>) -> Self {
        let filter = |c: &Candidate| sensors[c.0].dependencies[c.1].filter.as_ref();
        let equalities =
            |c: &Candidate| filter(c).map(|f| f.string_equalities()).unwrap_or_default();
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
        let mut reads = EventReads::default();
        let partial = all.iter().filter_map(filter).all(|f| f.reads(&mut reads));
        SourceIndex {
            all,
            keyed: keyed.into_iter().collect(),
            rest,
            reads: partial.then(|| Arc::new(reads)),
        }
    }

    /// What the filters on this source read of an event, `None` when some
    /// read all of its body. An event holding at least that (its body
    /// parsed with [`crate::event::BodyReads::parse`]) is matched and
    /// explained as the whole event.
    pub fn reads(&self) -> Option<&Arc<EventReads>> {
        self.reads.as_ref()
    }

    /// The dependencies `event` may match, sorted (grouped by sensor).
    pub fn candidates(&self, event: &Event) -> Vec<Candidate> {
        let mut out = self.rest.clone();
        for (path, by_value) in &self.keyed {
            let Some(v) = event.lookup(path) else {
                continue;
            };
            // A string is looked up as it is (no copy per event).
            let found = match v.as_ref() {
                Value::String(s) => by_value.get(s.as_str()),
                Value::Number(_) | Value::Bool(_) => by_value.get(&v.to_string()),
                _ => None,
            };
            if let Some(found) = found {
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

    /// An event holding only what the filters on its source read (its body
    /// parsed with [`crate::event::BodyReads`]; headers, `meta` and `time`
    /// left out when no filter reads them) matches the same sensors and
    /// gets the same why-not as the whole event, whatever the body.
    #[test]
    fn an_event_with_only_the_read_body_matches_and_explains_as_the_whole() {
        let sets: &[&[&str]] = &[
            &[
                "{path: headers.X-Kind, equals: push}",
                "{all: [{path: headers.x-kind, equals: tag}, {path: body.n, equals: '5'}]}",
                "{all: [{path: headers.X-Kind, equals: release}, {any: [{path: body.n, gt: 4}, {not: {path: body.name, equals: alpha}}]}]}",
            ],
            &[
                "{all: [{path: body.ref, equals: refs/heads/main}, {path: body.repo.name, prefix: ml-}]}",
                "{path: body.commits.0.id, exists: true}",
                "{expr: \"body.repo.owner.login == 'o' && has(body.pull.merged) && body.pull.merged\"}",
                "{any: [{path: body.repo, contains: x}, {path: body.n, in: [1, 2]}]}",
            ],
            &["{path: body.n, exists: false}"],
            &[
                "{all: [{path: meta.topic, equals: jobs}, {path: body.n, gt: 3}]}",
                "{expr: \"meta.partition == 3 || time.startsWith('2025')\"}",
                "{all: [{timeOfDay: {start: '00:00:00', stop: '12:00:00'}}, {path: body.name, exists: true}]}",
            ],
        ];
        let bodies = [
            r#"{}"#,
            r#"{"n": 5, "other": [1, 2], "deep": {"x": {"y": 1}}}"#,
            r#"{"n": 9, "name": "alpha", "ref": "refs/heads/main", "repo": {"name": "ml-a", "owner": {"login": "o"}, "x": 1}}"#,
            r#"{"n": 1, "name": "beta", "ref": "refs/heads/dev", "repo": "x y", "commits": [{"id": "c"}]}"#,
            r#"{"ref": "refs/heads/main", "repo": {"name": "web", "owner": {"login": "o"}}, "pull": {"merged": true}}"#,
            r#"{"pull": {"merged": "yes"}, "repo": {"owner": 3}, "commits": []}"#,
            r#"null"#,
            r#""text""#,
            r#"[1, 2]"#,
        ];
        let mut pruned = 0;
        let mut matched = 0;
        for filters in sets {
            let (_d, set) = set_of(filters);
            let reads = set.reads("src").expect("these filters read paths");
            for kind in [
                None,
                Some("push"),
                Some("tag"),
                Some("release"),
                Some("other"),
            ] {
                for raw in bodies {
                    let mut whole = Event::new("src", b"", serde_json::from_str(raw).unwrap());
                    if let Some(k) = kind {
                        whole.headers.insert("x-kind", k);
                        whole
                            .meta
                            .insert("topic".into(), json!(k.replace("push", "jobs")));
                        whole.meta.insert("partition".into(), json!(k.len()));
                        whole.time = format!("202{}-01-01T0{}:00:00Z", k.len(), k.len());
                    }
                    let mut part = whole.clone();
                    part.body = reads.body.parse(raw.as_bytes()).unwrap();
                    pruned += usize::from(part.body != whole.body);
                    if !reads.headers {
                        part.headers = Default::default();
                    }
                    if !reads.meta {
                        part.meta.clear();
                    }
                    if !reads.time {
                        part.time.clear();
                    }
                    assert!(set.reads_within("src", &reads));
                    let sensors = |e: &Event| -> Vec<usize> {
                        set.match_event(e).iter().map(|m| m.sensor).collect()
                    };
                    assert_eq!(
                        sensors(&part),
                        sensors(&whole),
                        "{filters:?} {kind:?} {raw}"
                    );
                    matched += sensors(&whole).len();
                    let reasons = |e: &Event| -> Vec<String> {
                        set.why_not(e, 10).into_iter().map(|m| m.reason).collect()
                    };
                    assert_eq!(
                        reasons(&part),
                        reasons(&whole),
                        "{filters:?} {kind:?} {raw}"
                    );
                }
            }
        }
        assert!(
            pruned > 40 && matched > 20,
            "{pruned} pruned, {matched} matched"
        );

        // Filters that read the body whole (or the way Argo's do) say so;
        // a source no sensor uses reads nothing of it.
        for filters in [
            &["{path: body, exists: true}"][..],
            &["{path: body.n, exists: true}", "{expr: 'size(body) > 2'}"],
            &["{expr: \"body['n'] == 1\"}"],
        ] {
            let (_d, set) = set_of(filters);
            assert!(set.reads("src").is_none(), "{filters:?}");
        }
        let (_d, set) =
            set_of(&["{all: [{path: body.a.b, exists: true}, {expr: 'body.a.c > 1'}]}"]);
        let mut expected = crate::event::EventReads::default();
        expected.add(&["body", "a", "b"]);
        expected.add(&["body", "a", "c"]);
        assert_eq!(set.reads("src").as_deref(), Some(&expected));
        // What is read of the rest of the envelope, root by root.
        let roots = |filters: &[&str]| {
            let (_d, set) = set_of(filters);
            let r = set.reads("src").expect("paths");
            (r.headers, r.meta, r.time)
        };
        for (filters, read) in [
            (sets[0], (true, false, false)),
            (sets[1], (false, false, false)),
            (&["{expr: 'meta.partition > 1'}"][..], (false, true, false)),
            (&["{expr: 'size(headers) > 1'}"], (true, false, false)),
            (&["{path: time, prefix: '2026'}"], (false, false, true)),
            (
                &["{timeOfDay: {start: '09:00:00', stop: '17:00:00'}}"],
                (false, false, true),
            ),
        ] {
            assert_eq!(roots(filters), read, "{filters:?}");
        }
        assert_eq!(set.reads("elsewhere").as_deref(), Some(&Default::default()));
        // Parsed for fewer paths than the filters read (the sensors were
        // reloaded meanwhile): not to be settled from it.
        let mut less = crate::event::EventReads::default();
        less.add(&["body", "a", "b"]);
        assert!(!set.reads_within("src", &less));
        assert!(set.reads_within("src", &expected));
        assert!(set.reads_within("elsewhere", &less));
        let (_d, set) = set_of(&["{path: meta.topic, equals: jobs}"]);
        assert!(
            !set.reads_within("src", &Default::default()),
            "meta is read"
        );
        let mut with_meta = crate::event::EventReads::default();
        with_meta.add(&["meta"]);
        assert!(set.reads_within("src", &with_meta));
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
