//! Dependency filters: path operators, `all`/`any`/`not`, and CEL `expr`.
//!
//! A [`FilterSpec`] is what the user writes; [`Filter::compile`] turns it into
//! a [`Filter`] once, at load (regexes and CEL programs compiled, paths split).
//! [`Filter::test`] is the allocation-free hot path; [`Filter::explain`] gives
//! the per-filter story (`matched`, the value seen, why not) that
//! `tripline test` and the `/explain` endpoint print.
//!
//! Longer than most files: about 220 of its lines are the table tests of
//! every operator, kept beside the code they pin down.

use std::cell::OnceCell;
use std::sync::Arc;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cel_reads::Reads;
pub use super::trace::Trace;
use super::window::TimeOfDay;
use crate::event::reads::{prune, prune_map};
use crate::event::{Event, EventReads, ROOTS};

/// A filter as written in a sensor file. Exactly one of: a combinator
/// (`all`, `any`, `not`), a CEL `expr`, or a `path` with one operator.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<FilterSpec>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<FilterSpec>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<FilterSpec>>,
    /// CEL expression over `id, source, type, subject, time, headers, body, meta`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expr: Option<String>,
    /// Passes while the event's `time` is in a daily window.
    #[serde(rename = "timeOfDay", skip_serializing_if = "Option::is_none")]
    pub time_of_day: Option<TimeOfDaySpec>,
    /// Dotted path into the envelope: `body.ref`, `headers.X-GitHub-Event`, `body.commits.0.id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    #[serde(rename = "in", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contains: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
}

/// `timeOfDay: {start: "09:00:00", stop: "17:00:00", timezone: Europe/Berlin}`:
/// `start ≤ time < stop` on the event's day in the zone (UTC when none);
/// `stop` before `start` wraps midnight.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimeOfDaySpec {
    pub start: String,
    pub stop: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FilterError {
    #[error("{at}: a filter needs one of all, any, not, expr, timeOfDay or path")]
    Empty { at: String },
    #[error("{at}: a filter holds exactly one of all, any, not, expr, timeOfDay or path+operator; found {found} (nest them under `all:` to combine)")]
    Ambiguous { at: String, found: String },
    #[error("{at}: `path: {path}` needs exactly one operator (equals, in, matches, prefix, suffix, contains, exists, gt, gte, lt, lte); found {found}")]
    Operator {
        at: String,
        path: String,
        found: String,
    },
    #[error("{at}: an operator without a `path`")]
    NoPath { at: String },
    #[error("{at}: bad path `{path}`: {reason}")]
    BadPath {
        at: String,
        path: String,
        reason: String,
    },
    #[error("{at}: bad regex: {reason}")]
    BadRegex { at: String, reason: String },
    #[error("{at}: bad CEL expression: {reason}")]
    BadCel { at: String, reason: String },
    #[error("{at}: {reason}")]
    BadWindow { at: String, reason: String },
}

/// A compiled filter.
#[derive(Debug)]
pub enum Filter {
    /// An Argo dependency's filters, over upstream's event shape.
    Argo(Arc<super::argo::filter::DependencyFilter>),
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Not(Box<Filter>),
    Expr {
        source: String,
        program: cel::Program,
        /// What it reads of the envelope (found at load).
        reads: Vec<(&'static str, Reads)>,
    },
    TimeOfDay(TimeOfDay),
    Path {
        path: String,
        segments: Vec<String>,
        op: Op,
    },
}

#[derive(Debug)]
pub enum Op {
    Equals(Value),
    In(Vec<Value>),
    Matches(Regex),
    Prefix(String),
    Suffix(String),
    Contains(Value),
    Exists(bool),
    Cmp(Cmp, f64),
}

#[derive(Debug, Clone, Copy)]
pub enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// Why a leaf did or did not match, without allocating.
#[derive(Debug, PartialEq)]
enum Verdict {
    Match,
    NoMatch,
    Absent,
    WrongType(&'static str),
}

/// Per-event evaluation state shared by every filter on that event: an
/// envelope variable a CEL program reads whole is converted to a CEL value
/// once, on first use, for all sensors; one it reads paths of gets just
/// those, per program (see [`super::cel_reads`]).
pub struct EvalCtx<'e> {
    pub event: &'e Event,
    whole: [OnceCell<cel::Value>; ROOTS.len()],
}

impl<'e> EvalCtx<'e> {
    pub fn new(event: &'e Event) -> Self {
        EvalCtx {
            event,
            whole: Default::default(),
        }
    }

    /// Envelope variable `root` (one of [`ROOTS`]) as a CEL value, whole.
    fn whole(&self, root: &str) -> cel::Value {
        let i = ROOTS.iter().position(|r| *r == root).unwrap_or(0);
        self.whole[i]
            .get_or_init(|| {
                let e = self.event;
                // Converted straight from the event, without copying it
                // first: the body may be a megabyte.
                let v = match root {
                    "id" => cel::to_value(&e.id),
                    "source" => cel::to_value(&e.source),
                    "type" => cel::to_value(&e.kind),
                    "subject" => cel::to_value(&e.subject),
                    "time" => cel::to_value(&e.time),
                    "headers" => cel::to_value(e.headers.to_json()),
                    "body" => cel::to_value(&e.body),
                    _ => cel::to_value(&e.meta),
                };
                // serde_json values always convert; fall back to null defensively.
                v.unwrap_or(cel::Value::Null)
            })
            .clone()
    }

    /// The activation for a program that reads `reads`.
    fn activation(&self, reads: &[(&'static str, Reads)]) -> cel::Context<'static, 'static> {
        let mut ctx = cel::Context::with_env(CEL_ENV.with(Arc::clone));
        for (root, r) in reads {
            let value = match (r, *root) {
                (Reads::Paths(paths), "body") => {
                    cel::to_value(prune(&self.event.body, paths)).unwrap_or(cel::Value::Null)
                }
                (Reads::Paths(paths), "meta") => {
                    cel::to_value(prune_map(&self.event.meta, paths)).unwrap_or(cel::Value::Null)
                }
                _ => self.whole(root),
            };
            ctx.add_variable_from_value(*root, value);
        }
        ctx
    }
}

/// The functions of CEL's standard library as the evaluation context
/// provides them (each one exercised by a unit test). A call to anything
/// else would fail at every event, so it is a load error.
const CEL_FUNCTIONS: &[&str] = &[
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "bool",
    "dyn",
    "type",
    "duration",
    "timestamp",
    "getDate",
    "getDayOfMonth",
    "getDayOfWeek",
    "getDayOfYear",
    "getFullYear",
    "getHours",
    "getMilliseconds",
    "getMinutes",
    "getMonth",
    "getSeconds",
    "has",
    "all",
    "exists",
    "exists_one",
    "map",
    "filter",
];

/// Operators (`_>_`, `!_`, `@in`, …) and [`CEL_FUNCTIONS`] pass.
fn check_cel_functions(program: &cel::Program) -> Result<(), String> {
    for f in program.references().functions() {
        let operator = f.starts_with(['_', '@']) || f == "!_" || f == "-_";
        if operator || CEL_FUNCTIONS.contains(&f) {
            continue;
        }
        let hint = CEL_FUNCTIONS
            .iter()
            .find(|k| k.eq_ignore_ascii_case(f))
            .map(|k| format!(" (did you mean `{k}`?)"))
            .unwrap_or_default();
        return Err(format!(
            "unknown function `{f}`{hint}; CEL here has: {}",
            CEL_FUNCTIONS.join(", ")
        ));
    }
    Ok(())
}

thread_local! {
    /// CEL's standard environment, built once per thread instead of once
    /// per event.
    static CEL_ENV: Arc<cel::Env> = Arc::new(cel::Env::stdlib());
}

/// Splits and checks a dotted path. The first segment must be an envelope field.
pub fn parse_path(path: &str) -> Result<Vec<String>, String> {
    let segments: Vec<String> = path.split('.').map(str::to_string).collect();
    if segments.iter().any(String::is_empty) {
        return Err("empty segment (two dots, or a leading/trailing dot)".into());
    }
    let root = segments[0].as_str();
    if !ROOTS.contains(&root) {
        return Err(format!("must start with one of {}", ROOTS.join(", ")));
    }
    if matches!(root, "id" | "source" | "type" | "subject" | "time") && segments.len() > 1 {
        return Err(format!("`{root}` is a string; it has no fields"));
    }
    if root == "headers" && segments.len() > 2 {
        return Err("headers are `headers.<Name>`".into());
    }
    Ok(segments)
}

impl Filter {
    /// Compiles a spec; `at` names where it sits (for error messages).
    pub fn compile(spec: &FilterSpec, at: &str) -> Result<Filter, FilterError> {
        let mut kinds = Vec::new();
        if spec.all.is_some() {
            kinds.push("all");
        }
        if spec.any.is_some() {
            kinds.push("any");
        }
        if spec.not.is_some() {
            kinds.push("not");
        }
        if spec.expr.is_some() {
            kinds.push("expr");
        }
        if spec.time_of_day.is_some() {
            kinds.push("timeOfDay");
        }
        if spec.path.is_some() {
            kinds.push("path");
        }
        let ops = operators(spec);
        if kinds.len() > 1
            || (kinds.first() != Some(&"path") && !kinds.is_empty() && !ops.is_empty())
        {
            let mut found = kinds.clone();
            found.extend(ops.iter().map(|(n, _)| *n));
            return Err(FilterError::Ambiguous {
                at: at.into(),
                found: found.join(", "),
            });
        }
        let compile_list = |list: &[FilterSpec], name: &str| {
            list.iter()
                .enumerate()
                .map(|(i, f)| Filter::compile(f, &format!("{at}.{name}[{i}]")))
                .collect::<Result<Vec<_>, _>>()
        };
        if let Some(list) = &spec.all {
            return Ok(Filter::All(compile_list(list, "all")?));
        }
        if let Some(list) = &spec.any {
            return Ok(Filter::Any(compile_list(list, "any")?));
        }
        if let Some(inner) = &spec.not {
            return Ok(Filter::Not(Box::new(Filter::compile(
                inner,
                &format!("{at}.not"),
            )?)));
        }
        if let Some(expr) = &spec.expr {
            let bad = |reason: String| FilterError::BadCel {
                at: format!("{at}.expr"),
                reason,
            };
            let program = cel::Program::compile(expr).map_err(|e| bad(e.to_string()))?;
            check_cel_functions(&program).map_err(bad)?;
            return Ok(Filter::Expr {
                source: expr.clone(),
                reads: super::cel_reads::of(&program).into_iter().collect(),
                program,
            });
        }
        if let Some(w) = &spec.time_of_day {
            let window = TimeOfDay::parse(&w.start, &w.stop, w.timezone.as_deref()).map_err(
                |(field, reason)| FilterError::BadWindow {
                    at: format!("{at}.timeOfDay.{field}"),
                    reason,
                },
            )?;
            return Ok(Filter::TimeOfDay(window));
        }
        let Some(path) = &spec.path else {
            return Err(if ops.is_empty() {
                FilterError::Empty { at: at.into() }
            } else {
                FilterError::NoPath { at: at.into() }
            });
        };
        let segments = parse_path(path).map_err(|reason| FilterError::BadPath {
            at: format!("{at}.path"),
            path: path.clone(),
            reason,
        })?;
        if ops.len() != 1 {
            return Err(FilterError::Operator {
                at: at.into(),
                path: path.clone(),
                found: if ops.is_empty() {
                    "none".into()
                } else {
                    ops.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                },
            });
        }
        let op = match ops.into_iter().next().map(|(_, op)| op) {
            Some(OpSpec::Ready(op)) => op,
            Some(OpSpec::Regex(re)) => {
                Op::Matches(Regex::new(re).map_err(|e| FilterError::BadRegex {
                    at: format!("{at}.matches"),
                    reason: e.to_string(),
                })?)
            }
            None => unreachable!("checked above"),
        };
        Ok(Filter::Path {
            path: path.clone(),
            segments,
            op,
        })
    }

    /// The Argo binding of a dependency: an `argo:` block alone, or first
    /// beside native filters.
    pub fn argo(&self) -> Option<&Arc<super::argo::filter::DependencyFilter>> {
        match self {
            Filter::Argo(f) => Some(f),
            Filter::All(list) => match list.first() {
                Some(Filter::Argo(f)) => Some(f),
                _ => None,
            },
            _ => None,
        }
    }

    /// `(path, value)` of every `equals "<string>"` this filter requires
    /// (itself, or inside `all:`): what [`super::index`] files it under.
    pub fn string_equalities(&self) -> Vec<(&[String], &str)> {
        match self {
            Filter::Path {
                segments,
                op: Op::Equals(Value::String(s)),
                ..
            } => vec![(segments.as_slice(), s.as_str())],
            Filter::All(list) => list.iter().flat_map(Filter::string_equalities).collect(),
            _ => Vec::new(),
        }
    }

    /// Adds what this filter reads of an event to `reads` (see
    /// [`EventReads`]); `false` when it reads the body whole — a `body` path
    /// itself, a CEL program using `body` other than by field chains, or an
    /// Argo dependency's filters (data paths, scripts, transforms: they are
    /// given the whole event).
    pub fn reads(&self, reads: &mut EventReads) -> bool {
        const WHOLE: &[&str] = &[];
        match self {
            Filter::Argo(_) => false,
            Filter::All(list) | Filter::Any(list) => list.iter().all(|f| f.reads(reads)),
            Filter::Not(f) => f.reads(reads),
            Filter::TimeOfDay(_) => reads.add_root("time", WHOLE),
            Filter::Expr { reads: read, .. } => read.iter().all(|(root, r)| match r {
                Reads::Whole => reads.add_root(root, WHOLE),
                Reads::Paths(paths) => paths.iter().all(|p| reads.add_root(root, p)),
            }),
            Filter::Path { segments, .. } => reads.add(segments),
        }
    }

    /// Fast yes/no.
    pub fn test(&self, ctx: &EvalCtx) -> bool {
        match self {
            Filter::Argo(f) => f.test(ctx.event),
            Filter::All(list) => list.iter().all(|f| f.test(ctx)),
            Filter::Any(list) => list.iter().any(|f| f.test(ctx)),
            Filter::Not(inner) => !inner.test(ctx),
            Filter::Expr { program, reads, .. } => {
                matches!(
                    program.execute(&ctx.activation(reads)),
                    Ok(cel::Value::Bool(true))
                )
            }
            Filter::TimeOfDay(w) => w.check(&ctx.event.time).is_ok_and(|(inside, _)| inside),
            Filter::Path { segments, op, .. } => {
                let seen = ctx.event.lookup(segments);
                apply(op, seen.as_deref()) == Verdict::Match
            }
        }
    }

    /// The full story: every sub-filter, the value it saw, and why it failed.
    pub fn explain(&self, ctx: &EvalCtx) -> Trace {
        match self {
            Filter::Argo(f) => f.explain(ctx.event),
            Filter::All(list) | Filter::Any(list) => {
                let children: Vec<Trace> = list.iter().map(|f| f.explain(ctx)).collect();
                let is_all = matches!(self, Filter::All(_));
                let matched = if is_all {
                    children.iter().all(|c| c.matched)
                } else {
                    children.iter().any(|c| c.matched)
                };
                let failed = children.iter().filter(|c| !c.matched).count();
                Trace {
                    filter: if is_all { "all" } else { "any" }.into(),
                    matched,
                    seen: None,
                    reason: (!matched).then(|| {
                        if is_all {
                            format!("{failed} of {} did not match", children.len())
                        } else {
                            format!("none of {} matched", children.len())
                        }
                    }),
                    children,
                }
            }
            Filter::Not(inner) => {
                let child = inner.explain(ctx);
                let matched = !child.matched;
                Trace {
                    filter: "not".into(),
                    matched,
                    seen: None,
                    reason: (!matched).then(|| "the negated filter matched".into()),
                    children: vec![child],
                }
            }
            Filter::Expr {
                source,
                program,
                reads,
            } => {
                let (matched, seen, reason) = match program.execute(&ctx.activation(reads)) {
                    Ok(cel::Value::Bool(b)) => (
                        b,
                        Some(Value::Bool(b)),
                        (!b).then(|| "expression is false".to_string()),
                    ),
                    Ok(other) => (
                        false,
                        None,
                        Some(format!("expression gave {other:?}, not a bool")),
                    ),
                    Err(e) => (false, None, Some(format!("evaluation error: {e}"))),
                };
                Trace {
                    filter: format!("expr: {source}"),
                    matched,
                    seen,
                    reason,
                    children: vec![],
                }
            }
            Filter::TimeOfDay(w) => {
                let (matched, seen, reason) = match w.check(&ctx.event.time) {
                    Ok((inside, local)) => (
                        inside,
                        Value::String(local.to_string()),
                        (!inside).then(|| "outside the time window".to_string()),
                    ),
                    Err(e) => (false, Value::String(ctx.event.time.clone()), Some(e)),
                };
                Trace {
                    filter: format!("timeOfDay {}", w.describe()),
                    matched,
                    seen: Some(seen),
                    reason,
                    children: vec![],
                }
            }
            Filter::Path { path, segments, op } => {
                let seen = ctx.event.lookup(segments);
                let verdict = apply(op, seen.as_deref());
                let reason = match verdict {
                    Verdict::Match => None,
                    Verdict::NoMatch => Some("value does not satisfy the operator".to_string()),
                    Verdict::Absent => Some(format!("`{path}` is absent from the event")),
                    Verdict::WrongType(want) => Some(format!(
                        "expected {want}, saw {}",
                        type_name(seen.as_deref().unwrap_or(&Value::Null))
                    )),
                };
                Trace {
                    filter: format!("{path} {}", describe(op)),
                    matched: verdict == Verdict::Match,
                    seen: seen.map(|v| truncate_value(v.into_owned())),
                    reason,
                    children: vec![],
                }
            }
        }
    }
}

enum OpSpec<'a> {
    Ready(Op),
    Regex(&'a str),
}

fn operators(spec: &FilterSpec) -> Vec<(&'static str, OpSpec<'_>)> {
    let mut ops = Vec::new();
    if let Some(v) = &spec.equals {
        ops.push(("equals", OpSpec::Ready(Op::Equals(v.clone()))));
    }
    if let Some(v) = &spec.one_of {
        ops.push(("in", OpSpec::Ready(Op::In(v.clone()))));
    }
    if let Some(v) = &spec.matches {
        ops.push(("matches", OpSpec::Regex(v)));
    }
    if let Some(v) = &spec.prefix {
        ops.push(("prefix", OpSpec::Ready(Op::Prefix(v.clone()))));
    }
    if let Some(v) = &spec.suffix {
        ops.push(("suffix", OpSpec::Ready(Op::Suffix(v.clone()))));
    }
    if let Some(v) = &spec.contains {
        ops.push(("contains", OpSpec::Ready(Op::Contains(v.clone()))));
    }
    if let Some(v) = spec.exists {
        ops.push(("exists", OpSpec::Ready(Op::Exists(v))));
    }
    for (name, v, cmp) in [
        ("gt", spec.gt, Cmp::Gt),
        ("gte", spec.gte, Cmp::Gte),
        ("lt", spec.lt, Cmp::Lt),
        ("lte", spec.lte, Cmp::Lte),
    ] {
        if let Some(v) = v {
            ops.push((name, OpSpec::Ready(Op::Cmp(cmp, v))));
        }
    }
    ops
}

fn apply(op: &Op, seen: Option<&Value>) -> Verdict {
    let Some(seen) = seen else {
        return match op {
            Op::Exists(false) => Verdict::Match,
            _ => Verdict::Absent,
        };
    };
    let yes = |b: bool| if b { Verdict::Match } else { Verdict::NoMatch };
    match op {
        Op::Exists(want) => yes(*want),
        Op::Equals(expected) => yes(loose_eq(expected, seen)),
        Op::In(list) => yes(list.iter().any(|e| loose_eq(e, seen))),
        Op::Matches(re) => match scalar_str(seen) {
            Some(s) => yes(re.is_match(&s)),
            None => Verdict::WrongType("a string"),
        },
        Op::Prefix(p) => match seen {
            Value::String(s) => yes(s.starts_with(p.as_str())),
            _ => Verdict::WrongType("a string"),
        },
        Op::Suffix(p) => match seen {
            Value::String(s) => yes(s.ends_with(p.as_str())),
            _ => Verdict::WrongType("a string"),
        },
        Op::Contains(needle) => match (seen, needle) {
            (Value::String(s), Value::String(n)) => yes(s.contains(n.as_str())),
            (Value::Array(items), n) => yes(items.iter().any(|i| loose_eq(n, i))),
            (Value::Object(m), Value::String(k)) => yes(m.contains_key(k)),
            _ => Verdict::WrongType("a string, an array or an object"),
        },
        Op::Cmp(cmp, limit) => match as_number(seen) {
            Some(n) => yes(match cmp {
                Cmp::Gt => n > *limit,
                Cmp::Gte => n >= *limit,
                Cmp::Lt => n < *limit,
                Cmp::Lte => n <= *limit,
            }),
            None => Verdict::WrongType("a number"),
        },
    }
}

/// Equality that forgives representation: `5` equals `5.0`, and a string
/// header `"5"` equals the number `5` written in YAML.
fn loose_eq(expected: &Value, seen: &Value) -> bool {
    match (expected, seen) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::String(_), Value::String(_)) => expected == seen,
        (Value::Number(_) | Value::Bool(_), Value::String(s)) => {
            scalar_str(expected).is_some_and(|e| e == s.as_str())
        }
        (Value::String(s), Value::Number(_) | Value::Bool(_)) => {
            scalar_str(seen).is_some_and(|v| v == s.as_str())
        }
        _ => expected == seen,
    }
}

fn scalar_str(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::String(s) => Some(s.as_str().into()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string().into()),
        _ => None,
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn describe(op: &Op) -> String {
    match op {
        Op::Equals(v) => format!("equals {v}"),
        Op::In(v) => format!("in {}", Value::Array(v.clone())),
        Op::Matches(re) => format!("matches /{}/", re.as_str()),
        Op::Prefix(p) => format!("prefix {p:?}"),
        Op::Suffix(p) => format!("suffix {p:?}"),
        Op::Contains(v) => format!("contains {v}"),
        Op::Exists(b) => format!("exists {b}"),
        Op::Cmp(c, n) => format!("{} {n}", format!("{c:?}").to_lowercase()),
    }
}

/// Keeps explanations readable: long strings and big objects are cut.
fn truncate_value(v: Value) -> Value {
    const MAX: usize = 200;
    match v {
        Value::String(s) if s.len() > MAX => {
            let cut = (0..=MAX)
                .rev()
                .find(|i| s.is_char_boundary(*i))
                .unwrap_or(0);
            Value::String(format!("{}… ({} bytes)", &s[..cut], s.len()))
        }
        Value::Array(_) | Value::Object(_) => {
            let text = v.to_string();
            if text.len() > MAX {
                let cut = (0..=MAX)
                    .rev()
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(0);
                Value::String(format!("{}… ({} bytes of JSON)", &text[..cut], text.len()))
            } else {
                v
            }
        }
        v => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Event {
        let mut e = Event::new(
            "github",
            b"x",
            json!({
                "ref": "refs/heads/main",
                "size": 3,
                "ratio": "0.5",
                "tags": ["a", "b"],
                "commits": [{"id": "c1", "modified": ["models/x.py", "README.md"]}],
                "repo": {"name": "ml"},
                "draft": false
            }),
        );
        e.headers.insert("X-GitHub-Event", "push");
        e.headers.insert("X-Count", "12");
        e
    }

    fn spec(yaml: &str) -> FilterSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn run(yaml: &str) -> (bool, Trace) {
        let f = Filter::compile(&spec(yaml), "filters").unwrap();
        let e = event();
        let ctx = EvalCtx::new(&e);
        let fast = f.test(&ctx);
        let trace = f.explain(&ctx);
        assert_eq!(
            fast, trace.matched,
            "test() and explain() disagree for {yaml}"
        );
        (fast, trace)
    }

    fn yes(yaml: &str) {
        assert!(run(yaml).0, "expected match: {yaml}");
    }

    fn no(yaml: &str) -> Trace {
        let (m, t) = run(yaml);
        assert!(!m, "expected no match: {yaml}");
        t
    }

    #[test]
    fn equals() {
        yes("{path: body.ref, equals: refs/heads/main}");
        yes("{path: headers.x-github-event, equals: push}");
        yes("{path: body.size, equals: 3}");
        yes("{path: body.size, equals: 3.0}");
        yes("{path: headers.X-Count, equals: 12}");
        yes("{path: body.draft, equals: false}");
        no("{path: body.ref, equals: refs/heads/dev}");
        let t = no("{path: body.nope, equals: x}");
        assert_eq!(
            t.reason.as_deref(),
            Some("`body.nope` is absent from the event")
        );
        assert_eq!(t.seen, None);
        no("{path: body.repo, equals: ml}");
    }

    #[test]
    fn in_list() {
        yes("{path: headers.X-GitHub-Event, in: [push, tag_push]}");
        no("{path: headers.X-GitHub-Event, in: [pull_request]}");
        no("{path: body.absent, in: [a]}");
    }

    #[test]
    fn matches_regex() {
        yes("{path: body.ref, matches: '^refs/heads/(main|master)$'}");
        yes("{path: body.size, matches: '^\\d+$'}");
        no("{path: body.ref, matches: '^refs/tags/'}");
        let t = no("{path: body.repo, matches: x}");
        assert_eq!(
            t.reason.as_deref(),
            Some("expected a string, saw an object")
        );
        no("{path: body.missing, matches: x}");
    }

    #[test]
    fn prefix_suffix() {
        yes("{path: body.ref, prefix: refs/heads/}");
        yes("{path: body.ref, suffix: /main}");
        no("{path: body.ref, prefix: refs/tags/}");
        no("{path: body.ref, suffix: /dev}");
        let t = no("{path: body.size, prefix: '3'}");
        assert_eq!(t.reason.as_deref(), Some("expected a string, saw a number"));
        no("{path: body.nope, suffix: x}");
    }

    #[test]
    fn contains() {
        yes("{path: body.ref, contains: heads}");
        yes("{path: body.tags, contains: b}");
        yes("{path: body.commits.0.modified, contains: models/x.py}");
        yes("{path: body.repo, contains: name}");
        no("{path: body.tags, contains: z}");
        no("{path: body.ref, contains: tags}");
        no("{path: body.size, contains: 3}");
        no("{path: body.nope, contains: 3}");
    }

    #[test]
    fn exists() {
        yes("{path: body.commits.0.id, exists: true}");
        yes("{path: body.commits.5.id, exists: false}");
        yes("{path: headers.X-GitHub-Event, exists: true}");
        no("{path: headers.X-Missing, exists: true}");
        no("{path: body.ref, exists: false}");
    }

    #[test]
    fn numeric_comparisons() {
        yes("{path: body.size, gt: 2}");
        yes("{path: body.size, gte: 3}");
        yes("{path: body.size, lt: 4}");
        yes("{path: body.size, lte: 3}");
        yes("{path: body.ratio, lt: 1}");
        yes("{path: headers.X-Count, gte: 12}");
        no("{path: body.size, gt: 3}");
        no("{path: body.size, lt: 3}");
        let t = no("{path: body.ref, gt: 1}");
        assert_eq!(t.reason.as_deref(), Some("expected a number, saw a string"));
        assert_eq!(t.seen, Some(json!("refs/heads/main")));
        no("{path: body.none, gt: 1}");
    }

    #[test]
    fn combinators() {
        yes("{all: [{path: body.ref, prefix: refs/}, {path: body.size, gt: 1}]}");
        let t = no("{all: [{path: body.ref, prefix: refs/}, {path: body.size, gt: 10}]}");
        assert_eq!(t.reason.as_deref(), Some("1 of 2 did not match"));
        assert!(t.children[0].matched && !t.children[1].matched);
        yes("{any: [{path: body.ref, prefix: x}, {path: body.size, gt: 1}]}");
        no("{any: [{path: body.ref, prefix: x}, {path: body.size, gt: 10}]}");
        yes("{not: {path: body.ref, prefix: refs/tags/}}");
        no("{not: {path: body.ref, prefix: refs/heads/}}");
        yes("{all: []}");
        no("{any: []}");
    }

    #[test]
    fn cel_expressions() {
        yes("{expr: \"body.commits.exists(c, c.modified.exists(f, f.startsWith('models/')))\"}");
        yes("{expr: \"headers['x-github-event'] == 'push' && body.size > 2\"}");
        yes("{expr: \"source == 'github'\"}");
        no("{expr: \"body.size > 5\"}");
        let t = no("{expr: \"body.ref\"}");
        assert!(t.reason.unwrap().contains("not a bool"));
        let t = no("{expr: \"body.nope.deeper == 1\"}");
        assert!(t.reason.unwrap().starts_with("evaluation error"));
    }

    #[test]
    fn time_of_day_windows_read_the_event_time() {
        let f = Filter::compile(
            &spec("{timeOfDay: {start: '09:00:00', stop: '17:00:00', timezone: Europe/Berlin}}"),
            "filters",
        )
        .unwrap();
        let mut e = event();
        let verdict = |e: &Event| {
            let ctx = EvalCtx::new(e);
            let trace = f.explain(&ctx);
            assert_eq!(f.test(&ctx), trace.matched);
            trace
        };
        e.time = "2026-11-30T08:30:00.000Z".into(); // 09:30 in Berlin
        let t = verdict(&e);
        assert!(t.matched);
        assert_eq!(t.filter, "timeOfDay 09:00:00–17:00:00 Europe/Berlin");
        assert_eq!(t.seen, Some(json!("09:30:00")));
        e.time = "2026-11-30T16:00:00.000Z".into(); // 17:00 in Berlin: stop is exclusive
        let t = verdict(&e);
        assert!(!t.matched);
        assert_eq!(t.reason.as_deref(), Some("outside the time window"));
        e.time = "not a time".into();
        assert!(verdict(&e).reason.unwrap().contains("not RFC 3339"));
        // Combined like any other filter; a bad window is a load error naming the field.
        let night = Filter::compile(
            &spec("{all: [{path: body.size, equals: 3}, {not: {timeOfDay: {start: '23:00:00', stop: '01:00:00'}}}]}"),
            "filters",
        )
        .unwrap();
        e.time = "2026-11-30T23:59:59.999Z".into();
        assert!(!night.test(&EvalCtx::new(&e)));
        e.time = "2026-11-30T01:00:00.000Z".into();
        assert!(night.test(&EvalCtx::new(&e)));
        let err = Filter::compile(
            &spec("{timeOfDay: {start: '9am', stop: '17:00:00'}}"),
            "spec.dependencies[0].filters",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.dependencies[0].filters.timeOfDay.start: `9am` is not H:MM:SS"
        );
        assert!(matches!(
            Filter::compile(&spec("{timeOfDay: {start: '01:00:00', stop: '02:00:00'}, path: body.a, exists: true}"), "f"),
            Err(FilterError::Ambiguous { .. })
        ));
        assert!(serde_yaml_ng::from_str::<FilterSpec>(
            "{timeOfDay: {start: '01:00:00', stop: '02:00:00', zone: UTC}}"
        )
        .is_err());
    }

    /// A CEL program given only the paths it reads gives what it gives on
    /// the whole envelope: the same value, or the same error.
    #[test]
    fn cel_programs_see_the_same_with_only_what_they_read() {
        let programs = [
            "body.ref == 'refs/heads/main'",
            "body.commits.exists(c, c.modified.exists(f, f.startsWith('models/')))",
            "has(body.pull_request) && body.pull_request.merged",
            "has(body.repo.name)",
            "!has(body.repo.owner)",
            "has(body.nope.x)",
            "body.repo.name.startsWith('m') || body.missing == 1",
            "body.missing == 1 || body.size > 2",
            "body.nope.deeper == 1",
            "body.ref.deeper == 1",
            "body.tags.x == 1",
            "size(body) > 2",
            "body.commits[0].id == 'c1'",
            "type(body.size) == int && body.ratio == '0.5'",
            "headers['x-github-event'] == 'push' && meta.path == '/h'",
            "has(meta.topic) || meta.path.endsWith('h')",
            "[1].exists(body, body > 0)",
            "body.repo.name + '/' + id + '/' + type",
            "body == {'x': 1}",
            "body.draft",
        ];
        let mut events = vec![event()];
        for body in [
            json!("a text body"),
            json!([1, 2]),
            json!({"repo": {"name": "ml", "owner": null}, "pull_request": {"merged": true}}),
            json!({"x": 1}),
        ] {
            let mut e = event();
            e.body = body;
            events.push(e);
        }
        events[0].meta.insert("path".into(), json!("/h"));
        let (mut trues, mut errors) = (0, 0);
        for src in programs {
            let f = Filter::compile(&spec(&format!("{{expr: {src:?}}}")), "f").unwrap();
            let Filter::Expr { program, reads, .. } = &f else {
                unreachable!()
            };
            let everything: Vec<(&'static str, Reads)> =
                ROOTS.iter().map(|r| (*r, Reads::Whole)).collect();
            for e in &events {
                let ctx = EvalCtx::new(e);
                let whole = program.execute(&ctx.activation(&everything));
                let part = program.execute(&ctx.activation(reads));
                assert_eq!(
                    format!("{whole:?}"),
                    format!("{part:?}"),
                    "{src} on {} (reads {reads:?})",
                    e.body
                );
                trues += usize::from(matches!(part, Ok(cel::Value::Bool(true))));
                errors += usize::from(part.is_err());
            }
        }
        // Both kinds of outcome are compared, not only one.
        assert!(trues >= 10 && errors >= 10, "{trues} true, {errors} errors");
    }

    #[test]
    fn compile_errors_name_the_place() {
        let err =
            |yaml: &str| Filter::compile(&spec(yaml), "spec.dependencies[0].filters").unwrap_err();
        assert!(matches!(err("{}"), FilterError::Empty { .. }));
        assert!(matches!(
            err("{path: body.a, equals: 1, prefix: x}"),
            FilterError::Operator { .. }
        ));
        assert!(matches!(
            err("{path: body.a}"),
            FilterError::Operator { .. }
        ));
        assert!(matches!(err("{equals: 1}"), FilterError::NoPath { .. }));
        assert!(matches!(
            err("{expr: 'true', path: body.a}"),
            FilterError::Ambiguous { .. }
        ));
        assert!(matches!(
            err("{all: [], equals: 1}"),
            FilterError::Ambiguous { .. }
        ));
        let e = err("{path: bdy.a, equals: 1}");
        assert!(
            e.to_string()
                .starts_with("spec.dependencies[0].filters.path: bad path `bdy.a`"),
            "{e}"
        );
        assert!(matches!(
            err("{path: body..a, equals: 1}"),
            FilterError::BadPath { .. }
        ));
        assert!(matches!(
            err("{path: id.x, equals: 1}"),
            FilterError::BadPath { .. }
        ));
        let e = err("{all: [{path: body.a, matches: '('}]}");
        assert!(
            matches!(&e, FilterError::BadRegex { at, .. } if at == "spec.dependencies[0].filters.all[0].matches")
        );
        assert!(matches!(
            err("{expr: 'body.a &&'}"),
            FilterError::BadCel { .. }
        ));
        // Unknown fields are rejected by serde before compile.
        assert!(serde_yaml_ng::from_str::<FilterSpec>("{path: body.a, equal: 1}").is_err());
    }

    #[test]
    fn long_values_are_truncated_in_explanations() {
        let mut e = event();
        e.body = json!({"big": "x".repeat(1000)});
        let f = Filter::compile(&spec("{path: body.big, equals: y}"), "f").unwrap();
        let t = f.explain(&EvalCtx::new(&e));
        let seen = t.seen.unwrap();
        assert!(seen.as_str().unwrap().ends_with("… (1000 bytes)"));
    }

    #[test]
    fn every_listed_cel_function_works_and_others_are_load_errors() {
        let cases: &[(&str, &str)] = &[
            ("size", "size('ab') == 2"),
            ("contains", "'ab'.contains('a')"),
            ("startsWith", "'ab'.startsWith('a')"),
            ("endsWith", "'ab'.endsWith('b')"),
            ("matches", "'ab'.matches('^a')"),
            ("int", "int('1') == 1"),
            ("uint", "uint(1) == 1u"),
            ("double", "double(1) == 1.0"),
            ("string", "string(1) == '1'"),
            ("bytes", "bytes('a') == b'a'"),
            ("bool", "bool('true')"),
            ("dyn", "dyn(1) == 1"),
            ("type", "type(1) == int"),
            ("duration", "duration('1s') == duration('1000ms')"),
            (
                "timestamp",
                "timestamp('2026-03-04T05:06:07.008Z') > timestamp('2026-01-01T00:00:00Z')",
            ),
            (
                "getDate",
                "timestamp('2026-03-04T05:06:07.008Z').getDate() == 4",
            ),
            (
                "getDayOfMonth",
                "timestamp('2026-03-04T05:06:07.008Z').getDayOfMonth() == 3",
            ),
            (
                "getDayOfWeek",
                "timestamp('2026-03-04T05:06:07.008Z').getDayOfWeek() == 3",
            ),
            (
                "getDayOfYear",
                "timestamp('2026-03-04T05:06:07.008Z').getDayOfYear() == 62",
            ),
            (
                "getFullYear",
                "timestamp('2026-03-04T05:06:07.008Z').getFullYear() == 2026",
            ),
            (
                "getHours",
                "timestamp('2026-03-04T05:06:07.008Z').getHours() == 5",
            ),
            (
                "getMilliseconds",
                "timestamp('2026-03-04T05:06:07.008Z').getMilliseconds() == 8",
            ),
            (
                "getMinutes",
                "timestamp('2026-03-04T05:06:07.008Z').getMinutes() == 6",
            ),
            (
                "getMonth",
                "timestamp('2026-03-04T05:06:07.008Z').getMonth() == 2",
            ),
            (
                "getSeconds",
                "timestamp('2026-03-04T05:06:07.008Z').getSeconds() == 7",
            ),
            ("has", "has({'a': 1}.a)"),
            ("all", "[1, 2].all(x, x > 0)"),
            ("exists", "[1, 2].exists(x, x > 1)"),
            ("exists_one", "[1, 2].exists_one(x, x > 1)"),
            ("map", "[1].map(x, x * 2) == [2]"),
            ("filter", "[1, 2].filter(x, x > 1) == [2]"),
        ];
        assert_eq!(
            cases.iter().map(|c| c.0).collect::<Vec<_>>(),
            CEL_FUNCTIONS,
            "one case per listed function"
        );
        for (name, expr) in cases {
            let f = Filter::compile(&spec(&format!("{{expr: \"{expr}\"}}")), "f")
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(f.test(&EvalCtx::new(&event())), "{name}: {expr}");
        }
        // A misspelt function fails at load with a hint, not at every event.
        let e =
            Filter::compile(&spec("{expr: 'body.ref.startswith(\"refs/\")'}"), "f").unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("unknown function `startswith` (did you mean `startsWith`?)"),
            "{e}"
        );
        let e = Filter::compile(&spec("{expr: 'lowerAscii(body.a) == \"x\"'}"), "f").unwrap_err();
        assert!(
            e.to_string().contains("unknown function `lowerAscii`"),
            "{e}"
        );
    }
}
