//! Idiomatic native filters for `tripline import` (ARGO-COMPAT §9.3): an
//! Argo dependency's `filters` → a native filter, only where the verdict is
//! the same for every event; `None` keeps the `argo:` escape hatch.
//!
//! What the native filter sees is tripline's envelope, what the Argo filter
//! sees is upstream's data built from it ([`super::data`]); they agree only
//! on some paths and some operators, whatever the source's Argo type
//! (unknown at import: the catalog has no types):
//!
//! * **Paths.** `body.K1.K2[.K…]` (plain keys `[A-Za-z0-9_-]`, at least two
//!   under `body`): the Argo body is the envelope body except that a webhook
//!   form post wraps each top-level string in a list (`K1` = `["v"]`, so `K2`
//!   must not be an array index) and GitHub adds the keys `X-GitHub-Event`
//!   and `X-GitHub-Delivery` (excluded as `K1`). With `jsonBody: false` (a
//!   NATS/Kafka source's `argo:` block) the Argo body is base64 text: no body
//!   path is translated. A path whose first key is in no Argo data (`bucket`:
//!   not `header(s)`, `body`, `subject`, `topic`, `key`, `partition`,
//!   `timestamp`, `metadata`) is never found: `{any: []}`.
//! * **`type: string`**: Argo matches the regex against gjson's text of the
//!   value (objects and arrays as JSON, null as `""`, numbers as gjson prints
//!   them), native `matches` against strings, numbers (as serde prints them)
//!   and bools only. The same regex is exact when it provably never matches
//!   the text of a number, null, object or array: anchored at the start (`^`)
//!   with every match beginning with a byte other than `{`, `[`, `-` or a
//!   digit, or anchored at the end (`$`) with every match ending with a byte
//!   other than `}`, `]` or a digit. Comparator `=` → `matches`, `!=` →
//!   `exists` and `not: {matches}`.
//! * **`type: number`**: Argo reads gjson `Float()` (numbers; numeric strings,
//!   trimmed; `true` 1; anything else 0), native `gt`/… read numbers and
//!   numeric strings (trimmed) the same and fail on anything else. Exact when
//!   the comparison comes out for 0 and 1 as the native one does on a
//!   non-number (false; true for `!=`). `=` → `gte`+`lte` (native `equals`
//!   compares a numeric string as text), `!=` → `exists` and `not` of that.
//! * **`type: bool`** is not translated: gjson `Bool()` is true for `"1"`,
//!   `"t"`, non-zero numbers…, native `equals: true` only for `true`/`"true"`.
//! * **`time`** → `timeOfDay` (the same window over the same instant, see
//!   [`crate::sensor::window`]); **`context`** folds to a constant, the
//!   dependency's context being constant (but `type`, kept `argo:`).
//! * An Argo dependency refuses bodies that are not JSON. A translated data
//!   filter does too (its paths are then absent); where nothing else does,
//!   [`argo_visible`] is put beside the translation.
//! * **`exprs`** whose fields read a path in no Argo data (upstream's
//!   `filter-with-expressions` reads `a`, not `body.a`) fold to never (under
//!   `and` one such expr is enough, under `or` all must be). Other `exprs`
//!   stay `argo:`: govaluate and CEL differ on errors (an error left of
//!   `||` fails the whole govaluate expression, CEL's `||` absorbs it), on
//!   `10 == "10"` and on ordering mismatched types, so no translation is
//!   exact without a type guard per operand.
//! * Not translated (`argo:` stays): `script`, `transform`, data
//!   `template`, empty lists.

use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Hir, Look};
use serde_json::{json, Value};

use super::filter::{DataSpec, FiltersSpec};
use super::path::Path;

/// Top-level keys of upstream's event data, over every Argo type (§3.2).
const DATA_ROOTS: [&str; 9] = [
    "header",
    "headers",
    "body",
    "subject",
    "topic",
    "key",
    "partition",
    "timestamp",
    "metadata",
];

/// A native filter standing for an Argo dependency's filters.
#[derive(Debug, Clone, PartialEq)]
pub struct Native {
    /// The native filter (JSON of a `FilterSpec`).
    pub filter: Value,
    /// `(path under the dependency, what to tell the reader)`: filters that
    /// were folded to a constant (a path no event has, a context that never
    /// or always holds) and the guard for events Argo cannot see.
    pub notes: Vec<(String, String)>,
}

/// The Argo context types of the sources tripline builds Argo events for.
const ARGO_TYPES: [&str; 5] = ["webhook", "github", "gitlab", "nats", "kafka"];

/// True exactly for the events an Argo dependency can see at all (a JSON
/// body; [`super::data`] refuses text and binary bodies): needed when no
/// translated filter refuses them by itself.
pub fn argo_visible() -> Value {
    json!({"all": [
        {"not": {"path": "meta.bodyEncoding", "exists": true}},
        {"any": [
            {"path": "meta.contentType", "suffix": "json"},
            {"expr": "type(body) != string"},
        ]},
    ]})
}

/// The dependency's `filters` (with `filtersLogicalOperator` and
/// `transform`, as written) → a native filter when exact. `json_body`: the
/// bound source's `argo: {jsonBody}` (true when none). `bound`: an `argo:`
/// binding stays beside the filter (parameters read the dependency), which
/// refuses what Argo cannot see: no guard then.
///
/// Each kind translates on its own (`data` per [`data_filter`], `time` →
/// `timeOfDay`, `context` folded: the dependency's context is constant but
/// for `type`), and `filtersLogicalOperator` becomes `all`/`any` (a
/// translated kind is false where Argo's errs). A kind that is true on text
/// bodies (`time`, a folded `context`) needs [`argo_visible`] beside it,
/// unless an `and` holds a `data` kind, which refuses them already.
pub fn dependency(dep: &Value, json_body: bool, bound: bool) -> Option<Native> {
    if !dep["transform"].is_null() {
        return None;
    }
    let spec: FiltersSpec = serde_json::from_value(dep["filters"].clone()).ok()?;
    if spec.script.as_deref().is_some_and(|s| !s.is_empty()) {
        return None;
    }
    let or = match dep["filtersLogicalOperator"].as_str().unwrap_or("") {
        "" | "and" => false,
        "or" => true,
        _ => return None,
    };
    let mut notes = Vec::new();
    // (native filter, whether it is false on every event Argo cannot see)
    let mut kinds: Vec<(Value, bool)> = Vec::new();
    if let Some(c) = &spec.context {
        if !json_body {
            return None;
        }
        let holds = context_holds(c, dep)?;
        notes.push((
            "filters.context".to_string(),
            format!(
                "the dependency's context is constant: {} (folded)",
                if holds { "always true" } else { "never true" }
            ),
        ));
        kinds.push((
            if holds {
                json!({"all": []})
            } else {
                json!({"any": []})
            },
            !holds,
        ));
    }
    if let Some(t) = &spec.time {
        if !json_body {
            return None;
        }
        let mut w = json!({"start": t.start, "stop": t.stop});
        if let Some(tz) = t.timezone.as_deref().filter(|z| !z.is_empty()) {
            w["timezone"] = json!(tz);
        }
        kinds.push((json!({ "timeOfDay": w }), false));
    }
    if let Some(exprs) = &spec.exprs {
        let and = match spec.expr_logical_operator.as_deref().unwrap_or("") {
            "" | "and" => true,
            "or" => false,
            _ => return None,
        };
        let unbound: Vec<bool> = exprs.iter().map(reads_no_argo_data).collect();
        let never = !unbound.is_empty()
            && if and {
                unbound.iter().any(|u| *u)
            } else {
                unbound.iter().all(|u| *u)
            };
        if !never {
            return None;
        }
        notes.push((
            "filters.exprs".to_string(),
            "reads a path that is in no Argo event's data (an error upstream): never true (`any: []`)"
                .to_string(),
        ));
        kinds.push((json!({"any": []}), true));
    }
    if let Some(data) = &spec.data {
        if data.is_empty() {
            return None;
        }
        let combine = match spec.data_logical_operator.as_deref().unwrap_or("") {
            "" | "and" => "all",
            "or" => "any",
            _ => return None,
        };
        let mut leaves = Vec::new();
        for (i, d) in data.iter().enumerate() {
            let leaf = data_filter(d, json_body)?;
            if leaf == json!({"any": []}) {
                notes.push((
                    format!("filters.data[{i}]"),
                    format!(
                        "`{}` is in no Argo event's data: never true (`any: []`)",
                        d.path
                    ),
                ));
            }
            leaves.push(leaf);
        }
        let filter = match leaves.len() {
            1 => leaves.remove(0),
            _ => json!({ combine: leaves }),
        };
        kinds.push((filter, true));
    }
    if kinds.is_empty() {
        return None;
    }
    let refuses_unseen = if or {
        kinds.iter().all(|(_, r)| *r)
    } else {
        kinds.iter().any(|(_, r)| *r)
    };
    let mut filters: Vec<Value> = kinds.into_iter().map(|(f, _)| f).collect();
    let mut filter = match filters.len() {
        1 => filters.remove(0),
        _ => json!({ if or { "any" } else { "all" }: filters }),
    };
    if !refuses_unseen && !bound {
        notes.push((
            "filters".to_string(),
            "Argo sees only events with a JSON body: the first filter of `all` says so".to_string(),
        ));
        filter = json!({"all": [argo_visible(), filter]});
    }
    Some(Native { filter, notes })
}

/// Whether an expr binds a field whose path starts with a key no Argo
/// event's data has (upstream: the binding fails, the expr is an error).
fn reads_no_argo_data(e: &super::filter::ExprSpec) -> bool {
    e.fields.iter().flatten().any(|f| {
        Path::parse(&f.path).is_ok_and(|p| {
            p.segments()
                .first()
                .is_some_and(|root| !DATA_ROOTS.contains(&root.as_str()))
        })
    })
}

/// A `context` filter over the dependency's constant context (§3.1:
/// `source`/`subject` = its event source and event name, content type
/// JSON): `Some(verdict)`, or `None` when it names an Argo `type`, which
/// tripline reads off each event.
fn context_holds(c: &super::filter::ContextSpec, dep: &Value) -> Option<bool> {
    let set = |f: &Option<String>| f.clone().filter(|v| !v.is_empty());
    let mut holds = true;
    if let Some(kind) = set(&c.kind) {
        if ARGO_TYPES.contains(&kind.as_str()) {
            return None;
        }
        holds = false;
    }
    for (want, actual) in [
        (
            set(&c.source),
            dep["eventSourceName"].as_str().unwrap_or_default(),
        ),
        (
            set(&c.subject),
            dep["eventName"].as_str().unwrap_or_default(),
        ),
        (set(&c.datacontenttype), "application/json"),
    ] {
        if want.is_some_and(|w| w != actual) {
            holds = false;
        }
    }
    Some(holds)
}

/// One `filters.data[]` entry → its native filter (errors count as false
/// on both sides, so `and`/`or` become `all`/`any`).
pub fn data_filter(d: &DataSpec, json_body: bool) -> Option<Value> {
    if d.template.is_some() || d.value.is_empty() || d.value.iter().any(String::is_empty) {
        return None;
    }
    let parsed = Path::parse(&d.path).ok()?;
    let root = parsed.segments().first()?;
    if !DATA_ROOTS.contains(&root.as_str()) {
        return Some(json!({"any": []}));
    }
    if !json_body || !body_path(&d.path) {
        return None;
    }
    let path = d.path.as_str();
    let cmp = d.comparator.as_deref().unwrap_or("");
    let leaves = match d.kind.as_str() {
        "string" => {
            if !d.value.iter().all(|v| text_safe(v)) {
                return None;
            }
            match cmp {
                "" | "=" => d
                    .value
                    .iter()
                    .map(|v| json!({"path": path, "matches": v}))
                    .collect::<Vec<_>>(),
                "!=" => d
                    .value
                    .iter()
                    .map(|v| {
                        json!({"all": [
                            {"path": path, "exists": true},
                            {"not": {"path": path, "matches": v}},
                        ]})
                    })
                    .collect(),
                _ => return None,
            }
        }
        "number" => {
            let mut leaves = Vec::new();
            for v in &d.value {
                let w = v.trim().parse::<f64>().ok().filter(|w| w.is_finite())?;
                leaves.push(number_leaf(path, cmp, w)?);
            }
            leaves
        }
        _ => return None,
    };
    Some(one_or_any(leaves))
}

fn one_or_any(mut leaves: Vec<Value>) -> Value {
    if leaves.len() == 1 {
        leaves.remove(0)
    } else {
        json!({ "any": leaves })
    }
}

/// Argo's comparison of the event's number `got` with the value `w`.
fn argo_compare(cmp: &str, got: f64, w: f64) -> Option<bool> {
    Some(match cmp {
        "" | "=" => got == w,
        "!=" => got != w,
        "<" => got < w,
        "<=" => got <= w,
        ">" => got > w,
        ">=" => got >= w,
        _ => return None,
    })
}

/// `cmp w` as a native filter, when it treats what gjson reads as 0 or 1
/// (`true`, null, `false`, objects, arrays, non-numeric strings) as the
/// native operators treat a non-number.
fn number_leaf(path: &str, cmp: &str, w: f64) -> Option<Value> {
    let equal = json!({"all": [{"path": path, "gte": w}, {"path": path, "lte": w}]});
    let (native, on_non_number) = match cmp {
        "" | "=" => (equal, false),
        "!=" => (
            json!({"all": [{"path": path, "exists": true}, {"not": equal}]}),
            true,
        ),
        "<" => (json!({"path": path, "lt": w}), false),
        "<=" => (json!({"path": path, "lte": w}), false),
        ">" => (json!({"path": path, "gt": w}), false),
        ">=" => (json!({"path": path, "gte": w}), false),
        _ => return None,
    };
    let same =
        argo_compare(cmp, 0.0, w)? == on_non_number && argo_compare(cmp, 1.0, w)? == on_non_number;
    same.then_some(native)
}

/// `body.K1.K2[.K…]`: plain keys, `K1` not one GitHub adds, `K2` not an
/// array index (a form post's `K1` is `["v"]` upstream, `"v"` natively).
fn body_path(path: &str) -> bool {
    let segments: Vec<&str> = path.split('.').collect();
    let plain = |s: &&str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    segments.len() >= 3
        && segments.iter().all(plain)
        && segments[0] == "body"
        && !matches!(segments[1], "X-GitHub-Event" | "X-GitHub-Delivery")
        && !segments[2].bytes().all(|b| b.is_ascii_digit())
}

/// Whether the regex can only match strings and bools — never gjson's or
/// serde's text of a number, nor `""` (null), nor JSON objects or arrays —
/// so that Argo's and native matching agree on every value.
pub fn text_safe(re: &str) -> bool {
    let Ok(hir) = regex_syntax::parse(re) else {
        return false;
    };
    let props = hir.properties();
    let start = props.look_set_prefix().contains(Look::Start)
        && every_literal(&hir, ExtractKind::Prefix, |l| {
            l.first()
                .is_some_and(|b| !matches!(b, b'{' | b'[' | b'-' | b'0'..=b'9'))
        });
    let end = props.look_set_suffix().contains(Look::End)
        && every_literal(&hir, ExtractKind::Suffix, |l| {
            l.last()
                .is_some_and(|b| !matches!(b, b'}' | b']' | b'0'..=b'9'))
        });
    start || end
}

/// Every match begins (`Prefix`) or ends (`Suffix`) with one of a finite,
/// non-empty set of literals, each satisfying `ok`.
fn every_literal(hir: &Hir, kind: ExtractKind, ok: impl Fn(&[u8]) -> bool) -> bool {
    let seq = Extractor::new().kind(kind).extract(hir);
    match seq.literals() {
        Some(lits) if !lits.is_empty() => lits.iter().all(|l| ok(l.as_bytes())),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::sensor::argo::filter::DependencyFilter;
    use crate::sensor::filter::{EvalCtx, Filter, FilterSpec};

    /// Events over which the Argo and the native filter must agree: absent
    /// paths, numbers vs strings, objects, null, form posts, GitHub's added
    /// keys, text bodies, Kafka and NATS, unicode.
    fn events() -> Vec<(String, Event)> {
        let bodies = [
            json!({}),
            json!({"a": {"b": "main"}}),
            json!({"a": {"b": "refs/heads/main"}}),
            json!({"a": {"b": "mainline"}}),
            json!({"a": {"b": "xmain"}}),
            json!({"a": {"b": "Main"}}),
            json!({"a": {"b": ""}}),
            json!({"a": {"b": null}}),
            json!({"a": {"b": true}}),
            json!({"a": {"b": false}}),
            json!({"a": {"b": "true"}}),
            json!({"a": {"b": "t"}}),
            json!({"a": {"b": 0}}),
            json!({"a": {"b": 1}}),
            json!({"a": {"b": 50}}),
            json!({"a": {"b": 50.0}}),
            json!({"a": {"b": 51}}),
            json!({"a": {"b": 51.5}}),
            json!({"a": {"b": -3}}),
            json!({"a": {"b": 1e21}}),
            json!({"a": {"b": "50"}}),
            json!({"a": {"b": "50.0"}}),
            json!({"a": {"b": " 60 "}}),
            json!({"a": {"b": "NaN"}}),
            json!({"a": {"b": "x"}}),
            json!({"a": {"b": {"c": "main"}}}),
            json!({"a": {"b": ["main"]}}),
            json!({"a": {"b": [50]}}),
            json!({"a": {"b": {"main": 1}}}),
            json!({"a": {"b": "ünïcödé main ✓"}}),
            json!({"a": {"b": "main\n"}}),
            json!({"a": "main"}),
            json!({"a": ["main"]}),
            json!({"a": [{"b": "main"}]}),
            json!({"a": 5}),
            json!({"X-GitHub-Event": {"b": "main"}, "a": {"b": "main"}}),
            json!("a string body"),
            json!([1, 2]),
            json!(null),
        ];
        let mut out = Vec::new();
        for body in bodies {
            let label = body.to_string();
            // A JSON webhook post.
            let mut e = Event::new("webhook-example", b"{}", body.clone());
            e.meta
                .insert("contentType".into(), json!("application/json"));
            e.meta.insert("path".into(), json!("/example"));
            out.push((format!("webhook {label}"), e.clone()));
            // The same as a GitHub delivery.
            let mut g = e.clone();
            g.headers.insert("X-GitHub-Event", "push");
            g.headers.insert("X-GitHub-Delivery", "d-1");
            out.push((format!("github {label}"), g));
            // Kafka and NATS (jsonBody: true).
            let mut k = Event::new("kafka-example", b"{}", body.clone());
            k.meta.insert("topic".into(), json!("t"));
            k.meta.insert("partition".into(), json!(0));
            k.meta
                .insert("contentType".into(), json!("application/json"));
            out.push((format!("kafka {label}"), k));
            let mut n = Event::new("nats-example", b"{}", body.clone());
            n.meta.insert("subject".into(), json!("s"));
            n.meta
                .insert("contentType".into(), json!("application/json"));
            out.push((format!("nats {label}"), n));
            // Text (not JSON) and binary bodies.
            let mut t = e.clone();
            t.meta.insert("contentType".into(), json!("text/plain"));
            out.push((format!("text {label}"), t));
        }
        // Form posts: every top-level string is a list upstream.
        for fields in [
            json!({"a": "main"}),
            json!({"a": "50"}),
            json!({"a": {"b": "main"}}),
            json!({"a": {"b": 60}}),
        ] {
            let mut f = Event::new("webhook-example", b"a=main", fields.clone());
            f.meta.insert(
                "contentType".into(),
                json!("application/x-www-form-urlencoded"),
            );
            f.meta.insert("path".into(), json!("/example"));
            out.push((format!("form {fields}"), f));
        }
        let mut bin = Event::new("webhook-example", b"\xff", json!("/w=="));
        bin.meta.insert("bodyEncoding".into(), json!("base64"));
        bin.meta
            .insert("contentType".into(), json!("application/octet-stream"));
        out.push(("binary".into(), bin));
        // Each at times around the windows the tests use, in and out of
        // daylight saving time, one with an offset.
        let times = [
            "2026-11-30T02:29:59.999Z",
            "2026-11-30T02:30:00.000Z",
            "2026-11-30T04:29:59.000Z",
            "2026-11-30T04:30:00.000Z",
            "2026-11-30T23:50:00.000Z",
            "2026-11-30T00:10:00.000Z",
            "2026-11-30T00:30:00.000Z",
            "2026-06-30T01:30:00.000Z",
            "2026-11-30T08:00:00+05:30",
        ];
        out.into_iter()
            .flat_map(|(label, e)| {
                times.iter().map(move |t| {
                    let mut e = e.clone();
                    e.time = t.to_string();
                    (format!("{label} at {t}"), e)
                })
            })
            .collect()
    }

    /// Translates `filters` and checks, event by event, that the Argo
    /// dependency and the native filter agree. Returns the native filter.
    fn agree(filters: Value) -> Option<Value> {
        agree_under(filters, "")
    }

    /// [`agree`] with a `filtersLogicalOperator`, for a dependency on
    /// `webhook`/`example`.
    fn agree_under(filters: Value, op: &str) -> Option<Value> {
        let dep = json!({"eventSourceName": "webhook", "eventName": "example",
            "filters": filters, "filtersLogicalOperator": op});
        let native = dependency(&dep, true, false)?;
        let spec: FiltersSpec = serde_json::from_value(filters.clone()).unwrap();
        let argo = DependencyFilter::compile("webhook", "example", Some(&spec), Some(op))
            .unwrap_or_else(|e| panic!("{e:?}"));
        let native_spec: FilterSpec = serde_json::from_value(native.filter.clone()).unwrap();
        let compiled = Filter::compile(&native_spec, "filters")
            .unwrap_or_else(|e| panic!("{}: {e}", native.filter));
        let (mut passed, mut failed) = (0, 0);
        for (label, event) in events() {
            let want = argo.test(&event);
            let got = compiled.test(&EvalCtx::new(&event));
            assert_eq!(
                want, got,
                "{filters} → {}: on {label}: argo {want}, native {got}",
                native.filter
            );
            if want {
                passed += 1;
            } else {
                failed += 1;
            }
        }
        assert!(passed + failed > 0);
        Some(native.filter)
    }

    /// Whether some event of the table tells the Argo filters and a native
    /// filter apart.
    fn differ(filters: Value, native: Value) -> bool {
        let spec: FiltersSpec = serde_json::from_value(filters).unwrap();
        let argo = DependencyFilter::compile("webhook", "example", Some(&spec), None).unwrap();
        let native = Filter::compile(&serde_json::from_value(native).unwrap(), "f").unwrap();
        events()
            .iter()
            .any(|(_, e)| argo.test(e) != native.test(&EvalCtx::new(e)))
    }

    /// The table has teeth: each naive translation the rules refuse is
    /// caught by some event.
    #[test]
    fn the_event_table_catches_every_refused_translation() {
        let m = |path: &str, re: &str| json!({"path": path, "matches": re});
        let cases = [
            // Unanchored: Argo matches the JSON text of `{"c":"main"}`.
            (
                data("body.a.b", "string", "", &["main"]),
                m("body.a.b", "main"),
            ),
            // Matches "" (null upstream).
            (data("body.a.b", "string", "", &["^$"]), m("body.a.b", "^$")),
            // A number's text: gjson `50`, serde `50.0`.
            (
                data("body.a.b", "string", "", &["^50$"]),
                m("body.a.b", "^50$"),
            ),
            // A form post's top-level field is a list upstream.
            (
                data("body.a", "string", "", &["^main$"]),
                m("body.a", "^main$"),
            ),
            (
                data("body.a.0", "string", "", &["^main$"]),
                m("body.a.0", "^main$"),
            ),
            // GitHub's added key.
            (
                data("body.X-GitHub-Event.b", "string", "", &["^main$"]),
                m("body.X-GitHub-Event.b", "^main$"),
            ),
            // `!=` without `exists`: absent is false upstream.
            (
                data("body.a.b", "string", "!=", &["^main$"]),
                json!({"not": m("body.a.b", "^main$")}),
            ),
            // gjson Bool(): "t" is true.
            (
                data("body.a.b", "bool", "", &["true"]),
                json!({"path": "body.a.b", "equals": true}),
            ),
            // gjson Float(): null, objects… are 0.
            (
                data("body.a.b", "number", "<", &["10"]),
                json!({"path": "body.a.b", "lt": 10}),
            ),
            // Native `equals` compares "50.0" as text.
            (
                data("body.a.b", "number", "", &["50"]),
                json!({"path": "body.a.b", "equals": 50}),
            ),
            // No data filter: Argo still refuses a text body.
            (json!({"data": []}), json!({"all": []})),
        ];
        for (argo, native) in cases {
            assert!(differ(argo.clone(), native.clone()), "{argo} vs {native}");
        }
    }

    fn data(path: &str, kind: &str, cmp: &str, values: &[&str]) -> Value {
        json!({"data": [{"path": path, "type": kind, "comparator": cmp, "value": values}]})
    }

    #[test]
    fn anchored_string_filters_become_matches_and_agree() {
        let f = agree(data("body.a.b", "string", "", &["^main$"])).unwrap();
        assert_eq!(f, json!({"path": "body.a.b", "matches": "^main$"}));
        let f = agree(data("body.a.b", "string", "=", &["^ma", "^refs/heads/"])).unwrap();
        assert_eq!(
            f,
            json!({"any": [{"path": "body.a.b", "matches": "^ma"}, {"path": "body.a.b", "matches": "^refs/heads/"}]})
        );
        for re in [
            "main$",
            "(?i)^MAIN",
            "^(main|master)$",
            "^[a-c]",
            "^t",
            "^true$",
            "^ü",
            "^x?main",
        ] {
            assert!(
                agree(data("body.a.b", "string", "", &[re])).is_some(),
                "{re}"
            );
        }
        // `!=`: present and not matching.
        let f = agree(data("body.a.b", "string", "!=", &["^main$"])).unwrap();
        assert_eq!(
            f,
            json!({"all": [{"path": "body.a.b", "exists": true}, {"not": {"path": "body.a.b", "matches": "^main$"}}]})
        );
        agree(data("body.a.b", "string", "!=", &["^main$", "^x"])).unwrap();
    }

    #[test]
    fn string_filters_that_could_match_json_text_stay_argo() {
        // Unanchored: Argo matches `{"c":"main"}` and `["main"]`.
        for re in [
            "main",
            "^",
            "$",
            "^.*",
            "^.",
            "^[0-9]",
            "^-",
            "^\\{",
            "^\\[",
            "1$",
            "\\}$",
            "^a|b",
            "(?m)^main",
            "^x*",
            "^\\w",
            "",
        ] {
            assert_eq!(
                agree(data("body.a.b", "string", "", &[re])),
                None,
                "{re} must stay argo"
            );
        }
        // One unsafe value keeps the whole filter.
        assert_eq!(
            agree(data("body.a.b", "string", "", &["^main$", "hey"])),
            None
        );
        // Comparators strings do not have upstream.
        assert_eq!(agree(data("body.a.b", "string", "<", &["^main$"])), None);
    }

    #[test]
    fn number_filters_become_comparisons_and_agree() {
        let f = agree(data("body.a.b", "number", ">", &["50.0"])).unwrap();
        assert_eq!(f, json!({"path": "body.a.b", "gt": 50.0}));
        let f = agree(data("body.a.b", "number", "", &["50"])).unwrap();
        assert_eq!(
            f,
            json!({"all": [{"path": "body.a.b", "gte": 50.0}, {"path": "body.a.b", "lte": 50.0}]})
        );
        for (cmp, v) in [
            ("=", "51.5"),
            ("=", "-3"),
            (">=", "2"),
            (">", "1"),
            ("<", "0"),
            ("<", "-1"),
            ("<=", "-0.5"),
            ("!=", "50"),
            ("!=", "-3"),
        ] {
            assert!(
                agree(data("body.a.b", "number", cmp, &[v])).is_some(),
                "{cmp} {v}"
            );
        }
        agree(data("body.a.b", "number", ">", &["50", "2"])).unwrap();
    }

    #[test]
    fn number_filters_true_for_zero_or_one_stay_argo() {
        // gjson reads null, objects, `true`… as 0 or 1; native fails them.
        for (cmp, v) in [
            ("=", "0"),
            ("=", "1"),
            ("<", "10"),
            ("<=", "0"),
            (">", "0.5"),
            (">=", "1"),
            ("!=", "0"),
            ("!=", "1"),
        ] {
            assert_eq!(
                agree(data("body.a.b", "number", cmp, &[v])),
                None,
                "{cmp} {v}"
            );
        }
        assert_eq!(agree(data("body.a.b", "number", ">", &["50", "0"])), None);
    }

    #[test]
    fn bool_filters_stay_argo() {
        // gjson `Bool()`: `"t"`, `"1"`, 5 are true; native `equals: true` is not.
        assert_eq!(agree(data("body.a.b", "bool", "", &["true"])), None);
        assert_eq!(agree(data("body.a.b", "bool", "", &["false"])), None);
    }

    #[test]
    fn only_paths_that_mean_the_same_everywhere() {
        for path in [
            "body.a",                // a form post makes it ["v"] upstream
            "body.a.0",              // …and indexes into that list
            "body.X-GitHub-Event.b", // GitHub sets it upstream
            "body",
            "body.a\\.b.c",
            "body.a.#",
            "headers.X-Github-Event",
            "header.Content-Type.0",
            "subject",
            "metadata.a.b",
        ] {
            assert_eq!(agree(data(path, "string", "", &["^main$"])), None, "{path}");
        }
        // Nested keys and array indices below the second key are fine.
        agree(data("body.a.b.0", "string", "", &["^main$"])).unwrap();
        agree(data("body.a_1.b-2", "number", ">", &["5"])).unwrap();
    }

    #[test]
    fn paths_in_no_argo_data_never_match() {
        // Upstream's filter-with-data-simple-2: `bucket` on any source.
        let f = agree(data("bucket", "string", "", &["argo-workflow-input"])).unwrap();
        assert_eq!(f, json!({"any": []}));
        // filter-with-data-advanced, whatever the types: never.
        let filters = json!({"data": [
            {"path": "a", "type": "bool", "value": ["true"]},
            {"path": "b.c", "type": "number", "value": ["3.14"]},
            {"path": "b.d", "type": "string", "value": ["hello, world"]},
        ]});
        let native = dependency(&json!({"filters": filters}), true, false).unwrap();
        assert_eq!(
            native
                .notes
                .iter()
                .map(|(p, _)| p.as_str())
                .collect::<Vec<_>>(),
            ["filters.data[0]", "filters.data[1]", "filters.data[2]"]
        );
        assert_eq!(
            agree(filters).unwrap(),
            json!({"all": [{"any": []}, {"any": []}, {"any": []}]})
        );
    }

    #[test]
    fn logical_operators_and_mixed_lists() {
        let filters = json!({"dataLogicalOperator": "or", "data": [
            {"path": "body.a.b", "type": "number", "comparator": ">", "value": ["50"]},
            {"path": "body.a.b", "type": "string", "value": ["^main"]},
            {"path": "bucket", "type": "string", "value": ["x"]},
        ]});
        let f = agree(filters).unwrap();
        assert_eq!(f["any"].as_array().unwrap().len(), 3);
        let filters = json!({"data": [
            {"path": "body.a.b", "type": "number", "comparator": "!=", "value": ["50"]},
            {"path": "body.a.b", "type": "string", "comparator": "!=", "value": ["^x"]},
        ]});
        assert!(agree(filters).unwrap()["all"].is_array());
        // Anything untranslatable keeps the whole dependency.
        let filters = json!({"data": [
            {"path": "body.a.b", "type": "number", "comparator": ">", "value": ["50"]},
            {"path": "body.a.b", "type": "string", "value": ["main"]},
        ]});
        assert_eq!(agree(filters), None);
    }

    #[test]
    fn time_becomes_time_of_day_guarded_when_alone() {
        let alone = agree(json!({"time": {"start": "02:30:00", "stop": "04:30:00"}})).unwrap();
        assert_eq!(
            alone,
            json!({"all": [argo_visible(), {"timeOfDay": {"start": "02:30:00", "stop": "04:30:00"}}]})
        );
        // Midnight wrapping, a zone; and beside a data filter (`and`) the
        // data filter refuses text bodies already.
        let with_data = agree(json!({
            "time": {"start": "23:34:05", "stop": "00:24:05", "timezone": "Asia/Kolkata"},
            "data": [{"path": "body.a.b", "type": "string", "value": ["^main$"]}],
        }))
        .unwrap();
        assert_eq!(
            with_data,
            json!({"all": [
                {"timeOfDay": {"start": "23:34:05", "stop": "00:24:05", "timezone": "Asia/Kolkata"}},
                {"path": "body.a.b", "matches": "^main$"},
            ]})
        );
        // Under `or` the time alone can pass a text body: guarded.
        let or = agree_under(
            json!({
                "time": {"start": "02:30:00", "stop": "04:30:00"},
                "data": [{"path": "body.a.b", "type": "number", "comparator": ">", "value": ["50"]}],
            }),
            "or",
        )
        .unwrap();
        assert_eq!(or["all"][0], argo_visible());
        // The guard is needed: without it a text body at 03:00 differs.
        assert!(differ(
            json!({"time": {"start": "02:30:00", "stop": "04:30:00"}}),
            json!({"timeOfDay": {"start": "02:30:00", "stop": "04:30:00"}}),
        ));
    }

    #[test]
    fn exprs_reading_no_argo_data_fold_to_never() {
        let expr = |e: &str, fields: &[(&str, &str)]| json!({"expr": e, "fields": fields.iter().map(|(n, p)| json!({"name": n, "path": p})).collect::<Vec<_>>()});
        // Upstream's filter-with-expressions: `a`, not `body.a`.
        let upstream = json!({"exprs": [
            expr("a == \"b\" || c == 10", &[("a", "a"), ("c", "a-longer-name")]),
            expr("e == false", &[("e", "nested.path.can-get.longer")]),
        ]});
        assert_eq!(agree(upstream).unwrap(), json!({"any": []}));
        // `and`: one such expr is enough; `or`: all must be.
        let mixed = |op: &str| {
            json!({"exprLogicalOperator": op, "exprs": [
                expr("a == \"main\"", &[("a", "body.a.b")]),
                expr("x == 1", &[("x", "bucket")]),
            ]})
        };
        assert_eq!(agree(mixed("and")).unwrap(), json!({"any": []}));
        assert_eq!(agree(mixed("or")), None);
        let all_unbound = json!({"exprLogicalOperator": "or", "exprs": [
            expr("x == 1", &[("x", "bucket")]),
            expr("y == 1", &[("y", "key2")]),
        ]});
        assert_eq!(agree(all_unbound).unwrap(), json!({"any": []}));
        // Beside data under `or`, the data still decides.
        agree_under(
            json!({"exprs": [expr("x == 1", &[("x", "bucket")])],
                   "data": [{"path": "body.a.b", "type": "number", "comparator": ">", "value": ["50"]}]}),
            "or",
        )
        .unwrap();
    }

    #[test]
    fn context_filters_fold_to_constants() {
        // context-filter-webhook: always true (but Argo's refusal of text bodies).
        let f = agree(
            json!({"context": {"source": "webhook", "subject": "example",
            "datacontenttype": "application/json"}}),
        )
        .unwrap();
        assert_eq!(f, json!({"all": [argo_visible(), {"all": []}]}));
        // filter-with-context: never.
        let f = agree(json!({"context": {"source": "custom-webhook"}})).unwrap();
        assert_eq!(f, json!({"any": []}));
        // Empty fields are unset; a type no source has never holds.
        agree(json!({"context": {"source": "", "subject": "example"}})).unwrap();
        assert_eq!(
            agree(json!({"context": {"type": "sqs"}})).unwrap(),
            json!({"any": []})
        );
        // Folded beside data filters, under either operator.
        let data = json!([{"path": "body.a.b", "type": "string", "value": ["^main$"]}]);
        for op in ["and", "or"] {
            agree_under(json!({"context": {"source": "nope"}, "data": data}), op).unwrap();
            agree_under(json!({"context": {"source": "webhook"}, "data": data}), op).unwrap();
        }
    }

    #[test]
    fn other_kinds_transforms_templates_and_raw_bodies_stay_argo() {
        let base = data("body.a.b", "number", ">", &["50"]);
        let with = |key: &str, v: Value| {
            let mut f = base.clone();
            f[key] = v;
            json!({"filters": f})
        };
        assert!(dependency(&json!({"filters": base}), true, false).is_some());
        assert_eq!(dependency(&json!({"filters": base}), false, false), None);
        assert_eq!(dependency(&with("exprs", json!([])), true, false), None);
        // Exprs over body paths: kept.
        assert_eq!(
            dependency(
                &with(
                    "exprs",
                    json!([{"expr": "a == \"b\"", "fields": [{"name": "a", "path": "body.a"}]}])
                ),
                true,
                false
            ),
            None
        );
        // A context naming an Argo type, read off each event: kept.
        assert_eq!(
            dependency(&with("context", json!({"type": "webhook"})), true, false),
            None
        );
        // Time and context with a raw (jsonBody: false) source: kept.
        assert_eq!(
            dependency(
                &with("time", json!({"start": "01:00:00", "stop": "02:00:00"})),
                false,
                false
            ),
            None
        );
        assert_eq!(
            dependency(&with("script", json!("return true")), true, false),
            None
        );
        let mut t = json!({"filters": base});
        t["transform"] = json!({"jq": "."});
        assert_eq!(dependency(&t, true, false), None);
        let mut tpl = base.clone();
        tpl["data"][0]["template"] = json!("{{ .Input }}");
        assert_eq!(dependency(&json!({"filters": tpl}), true, false), None);
        // No filters, or an empty data list: Argo still refuses non-JSON bodies.
        assert_eq!(dependency(&json!({}), true, false), None);
        assert_eq!(
            dependency(&json!({"filters": {"data": []}}), true, false),
            None
        );
        // `bucket` never matches, jsonBody or not.
        assert!(dependency(
            &json!({"filters": data("bucket", "string", "", &["x"])}),
            false,
            false
        )
        .is_some());
    }
}
