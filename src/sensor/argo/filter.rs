//! Argo dependency filters (ARGO-COMPAT §4) over the Argo event: `data`
//! (gjson path, string regex unanchored / number / bool, value lists,
//! comparators), `exprs` (govaluate expressions over named gjson paths, see
//! [`super::expr`]), `context`, `time`, `script` (sandboxed Lua, see
//! [`super::lua`]), combined by the logical operators; the dependency's
//! `transform` ([`super::transform`]) runs first and is what the filters and
//! the trigger parameters see. `test` and the explanation share one
//! evaluation, so what `tripline test` prints is what decides.
//!
//! Longer than most files: about 880 of its lines are unit tests, upstream's
//! `filter_test`/`filter_data_test` tables ported case by case, kept beside
//! the code they pin down.

use std::collections::HashMap;
use std::sync::Arc;

use regex::Regex;
use serde::Deserialize;
use serde_json::{json, Value};

use super::data::{argo_event, ArgoEvent};
use super::expr::Expr;
use super::gotmpl::Template;
use super::lua::Script;
use super::path::{self, Path};
use super::transform::Transform;
use crate::event::Event;
use crate::sensor::catalog::ArgoSource;
use crate::sensor::trace::Trace;
use crate::sensor::window::TimeOfDay;

/// `filters:` of an Argo dependency, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FiltersSpec {
    #[serde(default)]
    pub context: Option<ContextSpec>,
    #[serde(default)]
    pub time: Option<TimeSpec>,
    #[serde(default)]
    pub data: Option<Vec<DataSpec>>,
    #[serde(default)]
    pub exprs: Option<Vec<ExprSpec>>,
    #[serde(default)]
    pub script: Option<String>,
    #[serde(default)]
    pub data_logical_operator: Option<String>,
    #[serde(default)]
    pub expr_logical_operator: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ContextSpec {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub datacontenttype: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TimeSpec {
    pub start: String,
    pub stop: String,
    #[serde(default)]
    pub timezone: Option<String>,
}

/// One `filters.exprs[]` entry: a govaluate expression over named paths.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExprSpec {
    #[serde(default)]
    pub expr: String,
    #[serde(default)]
    pub fields: Option<Vec<FieldSpec>>,
}

/// `name` bound to the gjson value at `path` in the event data.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FieldSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub path: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DataSpec {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub value: Vec<String>,
    #[serde(default)]
    pub comparator: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Logic {
    And,
    Or,
}

fn logic(op: Option<&str>, field: &str) -> Result<Logic, (String, String)> {
    match op.unwrap_or("") {
        "" | "and" => Ok(Logic::And),
        "or" => Ok(Logic::Or),
        other => Err((
            field.into(),
            format!("`{other}` is not a logical operator (and, or; lower case)"),
        )),
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Str(Vec<Regex>),
    Num(Vec<f64>),
    Bool(Vec<bool>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone)]
struct DataFilter {
    path: Path,
    kind: Kind,
    cmp: Cmp,
    template: Option<Template>,
    /// As written, for explanations.
    text: String,
}

#[derive(Debug, Clone)]
struct ExprFilter {
    expr: Expr,
    /// `(name, path)`, in order.
    fields: Vec<(String, Path)>,
}

#[derive(Debug, Clone)]
struct TimeFilter {
    window: TimeOfDay,
    text: String,
}

/// The compiled filters of one Argo dependency, with its binding.
#[derive(Debug, Clone)]
pub struct DependencyFilter {
    pub event_source: String,
    pub event_name: String,
    context: Option<ContextSpec>,
    time: Option<TimeFilter>,
    data: Option<(Vec<DataFilter>, Logic)>,
    exprs: Option<(Vec<ExprFilter>, Logic)>,
    /// `filters.script`, when not empty.
    script: Option<Script>,
    filters: Logic,
    /// The dependency's `transform`, applied to `data` before the filters.
    transform: Option<Arc<Transform>>,
    /// Whether the dependency has a `filters:` block at all: an empty one
    /// under `or` never passes upstream, no block always does.
    has_filters: bool,
    /// The bound source's `argo:` block (`jsonBody`, `metadata`).
    source: ArgoSource,
}

impl DependencyFilter {
    /// Compiles `spec` (errors are `(field under filters, message)`).
    pub fn compile(
        event_source: &str,
        event_name: &str,
        spec: Option<&FiltersSpec>,
        filters_logical_operator: Option<&str>,
    ) -> Result<DependencyFilter, (String, String)> {
        let filters = logic(filters_logical_operator, "filtersLogicalOperator")?;
        let mut out = DependencyFilter {
            event_source: event_source.to_string(),
            event_name: event_name.to_string(),
            context: None,
            time: None,
            data: None,
            exprs: None,
            script: None,
            filters,
            transform: None,
            has_filters: false,
            source: ArgoSource::default(),
        };
        let Some(spec) = spec else { return Ok(out) };
        out.has_filters = true;
        if let Some(src) = spec.script.as_deref().filter(|s| !s.is_empty()) {
            let script = Script::compile(src, "filters.script")
                .map_err(|e| ("filters.script".to_string(), e.to_string()))?;
            out.script = Some(script);
        }
        let expr_op = logic(
            spec.expr_logical_operator.as_deref(),
            "filters.exprLogicalOperator",
        )?;
        if let Some(exprs) = &spec.exprs {
            out.exprs = Some((compile_exprs(exprs)?, expr_op));
        }
        if let Some(c) = &spec.context {
            if c.kind.is_none()
                && c.subject.is_none()
                && c.source.is_none()
                && c.datacontenttype.is_none()
            {
                return Err((
                    "filters.context".into(),
                    "give at least one of type, subject, source, datacontenttype".into(),
                ));
            }
            out.context = Some(c.clone());
        }
        if let Some(t) = &spec.time {
            let window = TimeOfDay::parse(&t.start, &t.stop, t.timezone.as_deref())
                .map_err(|(field, reason)| (format!("filters.time.{field}"), reason))?;
            out.time = Some(TimeFilter {
                text: format!("time {}", window.describe()),
                window,
            });
        }
        if let Some(data) = &spec.data {
            let op = logic(
                spec.data_logical_operator.as_deref(),
                "filters.dataLogicalOperator",
            )?;
            let mut list = Vec::new();
            for (i, d) in data.iter().enumerate() {
                let at = |f: &str| format!("filters.data[{i}].{f}");
                let path = Path::parse(&d.path).map_err(|e| (at("path"), e))?;
                if d.value.is_empty() || d.value.iter().any(String::is_empty) {
                    return Err((at("value"), "a non-empty list of non-empty values".into()));
                }
                let cmp = match d.comparator.as_deref().unwrap_or("") {
                    "" | "=" => Cmp::Eq,
                    "!=" => Cmp::Ne,
                    "<" => Cmp::Lt,
                    "<=" => Cmp::Le,
                    ">" => Cmp::Gt,
                    ">=" => Cmp::Ge,
                    other => {
                        return Err((
                            at("comparator"),
                            format!("`{other}` (use =, !=, <, <=, >, >=)"),
                        ))
                    }
                };
                let kind = match d.kind.as_str() {
                    "string" => Kind::Str(
                        d.value
                            .iter()
                            .map(|v| {
                                Regex::new(v).map_err(|e| (at("value"), format!("`{v}`: {e}")))
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    "number" => Kind::Num(
                        d.value
                            .iter()
                            .map(|v| {
                                v.trim()
                                    .parse::<f64>()
                                    .map_err(|_| (at("value"), format!("`{v}` is not a number")))
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    "bool" => Kind::Bool(
                        d.value
                            .iter()
                            .map(|v| {
                                go_parse_bool(v)
                                    .ok_or_else(|| (at("value"), format!("`{v}` is not a bool")))
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    other => {
                        return Err((at("type"), format!("`{other}` (use string, number, bool)")))
                    }
                };
                let template = d
                    .template
                    .as_deref()
                    .map(Template::parse)
                    .transpose()
                    .map_err(|e| (at("template"), e))?;
                let text = format!(
                    "data {} {} {} {:?}",
                    d.path,
                    d.kind,
                    d.comparator.as_deref().unwrap_or("="),
                    d.value
                );
                list.push(DataFilter {
                    path,
                    kind,
                    cmp,
                    template,
                    text,
                });
            }
            out.data = Some((list, op));
        }
        Ok(out)
    }

    /// Adds the dependency's `transform` (`{jq}` or `{script}`), compiled
    /// now; errors are `(field under the dependency, message)`.
    pub fn with_transform(mut self, spec: &Value) -> Result<Self, (String, String)> {
        self.transform = Transform::compile(spec)?.map(Arc::new);
        Ok(self)
    }

    /// Whether the event satisfies the dependency.
    pub fn test(&self, event: &Event) -> bool {
        self.explain(event).matched
    }

    /// The verdict, filter by filter (the transform first, when there is one).
    pub fn explain(&self, event: &Event) -> Trace {
        let argo = match argo_event(event, &self.event_source, &self.event_name, &self.source) {
            Ok(argo) => argo,
            Err(why) => return leaf("argo event", false, None, Some(why)),
        };
        match self.transformed(argo) {
            Ok((argo, None)) => self.explain_argo(&argo),
            Ok((argo, Some(step))) => {
                let mut trace = self.explain_argo(&argo);
                trace.children.insert(0, step);
                trace
            }
            Err(step) => Trace {
                filter: self.title(),
                matched: false,
                seen: None,
                reason: Some(
                    "the transform failed: the event does not satisfy the dependency".into(),
                ),
                children: vec![step],
            },
        }
    }

    /// `argo` with the transform applied, and the transform's step for the
    /// explanation; the failed step when it fails.
    fn transformed(&self, mut argo: ArgoEvent) -> Result<(ArgoEvent, Option<Trace>), Trace> {
        let Some(t) = &self.transform else {
            return Ok((argo, None));
        };
        let label = format!("transform ({})", t.kind());
        match t.apply(&argo.data) {
            Ok(data) => {
                argo.data = data;
                Ok((argo, Some(leaf(&label, true, None, None))))
            }
            Err(e) => Err(leaf(&label, false, None, Some(e.to_string()))),
        }
    }

    fn title(&self) -> String {
        format!(
            "argo {}/{} ({})",
            self.event_source,
            self.event_name,
            op_name(self.filters)
        )
    }

    /// The verdict over upstream's event shape (upstream's `filterEvent`).
    pub fn explain_argo(&self, argo: &ArgoEvent) -> Trace {
        let mut kinds = Vec::new();
        if let Some(c) = &self.context {
            kinds.push(context_trace(c, argo));
        }
        if let Some(t) = &self.time {
            kinds.push(time_trace(t, argo));
        }
        if let Some((list, op)) = &self.exprs {
            kinds.push(exprs_trace(list, *op, &argo.data));
        }
        if let Some((list, op)) = &self.data {
            kinds.push(data_kind_trace(list, *op, &argo.data));
        }
        let mut script_error = false;
        if let Some(s) = &self.script {
            let (trace, failed) = script_trace(s, &argo.data);
            script_error = failed;
            kinds.push(trace);
        }
        let matched = match self.filters {
            // Upstream's `filterScript` error returns false whatever the operator.
            _ if script_error => false,
            Logic::And => kinds.iter().all(|k| k.matched),
            Logic::Or => (kinds.is_empty() && !self.has_filters) || kinds.iter().any(|k| k.matched),
        };
        Trace {
            filter: self.title(),
            matched,
            seen: None,
            reason: script_error.then(|| {
                "the script failed: the dependency fails whatever the logical operator (as upstream)"
                    .to_string()
            }),
            children: kinds,
        }
    }

    /// The Argo event of `event` for this dependency, transformed (for
    /// parameters); `None` when there is none or the transform fails.
    pub fn argo_event(&self, event: &Event) -> Option<ArgoEvent> {
        let argo = argo_event(event, &self.event_source, &self.event_name, &self.source).ok()?;
        self.transformed(argo).ok().map(|(argo, _)| argo)
    }

    /// Applies the bound source's `argo:` block (none: Argo's defaults).
    pub fn with_source(mut self, source: Option<&ArgoSource>) -> Self {
        self.source = source.cloned().unwrap_or_default();
        self
    }
}

/// `filters.exprs` → compiled filters, with upstream's validation
/// (`validateEventExprFilter`) and parse errors as load errors.
fn compile_exprs(exprs: &[ExprSpec]) -> Result<Vec<ExprFilter>, (String, String)> {
    let mut list = Vec::new();
    for (i, e) in exprs.iter().enumerate() {
        let at = |f: &str| format!("filters.exprs[{i}]{f}");
        if e.expr.is_empty() {
            return Err((at(".expr"), "required: a govaluate expression".into()));
        }
        let fields = e.fields.as_deref().unwrap_or_default();
        if fields.is_empty() {
            return Err((
                at(".fields"),
                "at least one {name, path} field (Argo's validation rejects an expr without fields)"
                    .into(),
            ));
        }
        let mut bound = Vec::new();
        for (j, f) in fields.iter().enumerate() {
            let at = |s: &str| at(&format!(".fields[{j}]{s}"));
            if f.name.is_empty() || f.path.is_empty() {
                return Err((at(""), "both `name` and `path` are required".into()));
            }
            let path = Path::parse(&f.path).map_err(|e| (at(".path"), e))?;
            bound.push((f.name.clone(), path));
        }
        let expr = Expr::parse(&e.expr).map_err(|m| (at(".expr"), format!("`{}`: {m}", e.expr)))?;
        list.push(ExprFilter {
            expr,
            fields: bound,
        });
    }
    Ok(list)
}

fn op_name(op: Logic) -> &'static str {
    match op {
        Logic::And => "and",
        Logic::Or => "or",
    }
}

/// Upstream's `filterData` over the data: `and` needs every filter, `or`
/// one; no filters (`data: []`) pass either way.
fn data_kind_trace(list: &[DataFilter], op: Logic, data: &Value) -> Trace {
    let children: Vec<Trace> = list.iter().map(|d| data_trace(d, data)).collect();
    let matched = match op {
        _ if children.is_empty() => true,
        Logic::And => children.iter().all(|c| c.matched),
        Logic::Or => children.iter().any(|c| c.matched),
    };
    Trace {
        filter: format!("data ({})", op_name(op)),
        matched,
        seen: None,
        reason: None,
        children,
    }
}

/// How one expr came out.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    True,
    /// `false`, or any result other than the boolean `true`.
    False,
    /// A path that does not exist, or an evaluation error.
    Error,
    /// No fields bound: upstream skips the expr.
    Skipped,
}

/// Upstream's `filterExpr`: `and` stops at the first expr that is not true
/// (false or error; a skipped expr passes), `or` at the first true one (a
/// skipped one does not count); `exprs: []` passes under `and`, not under
/// `or`. Data that is null passes.
fn exprs_trace(list: &[ExprFilter], op: Logic, data: &Value) -> Trace {
    let title = format!("exprs ({})", op_name(op));
    if data.is_null() {
        return leaf(
            &title,
            true,
            None,
            Some("no data: passes, as upstream".into()),
        );
    }
    let mut children = Vec::new();
    let mut matched = op == Logic::And;
    for (i, e) in list.iter().enumerate() {
        let (mut trace, outcome) = expr_trace(i, e, data);
        let decided = match (op, outcome) {
            (Logic::And, Outcome::False | Outcome::Error) => {
                matched = false;
                true
            }
            (Logic::Or, Outcome::True) => {
                matched = true;
                true
            }
            _ => false,
        };
        if outcome == Outcome::Skipped {
            trace.matched = op == Logic::And;
        }
        children.push(trace);
        if decided {
            break;
        }
    }
    let reason = if children.len() < list.len() {
        Some(format!(
            "exprs[{}] decided ({}); the rest are not evaluated, as upstream",
            children.len() - 1,
            if op == Logic::And {
                "and: the first false or error"
            } else {
                "or: the first true"
            }
        ))
    } else if !matched && op == Logic::Or {
        Some("no expr is true".into())
    } else {
        None
    };
    Trace {
        filter: title,
        matched,
        seen: None,
        reason,
        children,
    }
}

fn expr_trace(i: usize, e: &ExprFilter, data: &Value) -> (Trace, Outcome) {
    let label = format!("exprs[{i}] {}", e.expr);
    let mut vars = HashMap::new();
    let mut seen = serde_json::Map::new();
    for (name, path) in &e.fields {
        let Some(found) = path.get(data) else {
            let why = missing_path(path, data);
            let seen = (!seen.is_empty()).then_some(Value::Object(seen));
            return (leaf(&label, false, seen, Some(why)), Outcome::Error);
        };
        let found = found.into_owned();
        seen.insert(name.clone(), found.clone());
        vars.insert(name.clone(), found);
    }
    if vars.is_empty() {
        let why = "no fields: skipped, as upstream";
        return (leaf(&label, true, None, Some(why.into())), Outcome::Skipped);
    }
    let seen = Some(Value::Object(seen));
    match e.expr.truth(&vars) {
        Ok((true, _)) => (leaf(&label, true, seen, None), Outcome::True),
        Ok((false, result)) => {
            let why = if result == "false" {
                "the expression is false".to_string()
            } else {
                format!("the result is {result}, not true")
            };
            (leaf(&label, false, seen, Some(why)), Outcome::False)
        }
        Err(err) => (leaf(&label, false, seen, Some(err)), Outcome::Error),
    }
}

/// Why a path finds nothing, with the data's top-level keys.
fn missing_path(path: &Path, data: &Value) -> String {
    let keys: Vec<String> = data
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    format!(
        "path '{path}' does not exist in the event data (keys: {})",
        keys.join(", ")
    )
}

/// Upstream's `filterScript`: passes iff the chunk returns `true`; the
/// second value says it failed (a runtime error, a limit, data that is not
/// an object), which fails the dependency under any operator.
fn script_trace(s: &Script, data: &Value) -> (Trace, bool) {
    match s.filter(data) {
        Ok(true) => (leaf("script", true, None, None), false),
        Ok(false) => (
            leaf(
                "script",
                false,
                None,
                Some("the script did not return true".into()),
            ),
            false,
        ),
        Err(e) => (leaf("script", false, None, Some(e.to_string())), true),
    }
}

fn leaf(filter: &str, matched: bool, seen: Option<Value>, reason: Option<String>) -> Trace {
    Trace {
        filter: filter.to_string(),
        matched,
        seen,
        reason,
        children: Vec::new(),
    }
}

/// Go's `strconv.ParseBool`.
fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn context_trace(c: &ContextSpec, argo: &ArgoEvent) -> Trace {
    let checks = [
        ("type", &c.kind),
        ("subject", &c.subject),
        ("source", &c.source),
        ("datacontenttype", &c.datacontenttype),
    ];
    // An empty field is unset (Go's zero value), as upstream reads it.
    for (field, want) in checks {
        if let Some(want) = want.as_deref().filter(|w| !w.is_empty()) {
            let seen = argo.context[field].as_str().unwrap_or_default();
            if seen != want {
                return leaf(
                    &format!("context.{field} {want:?}"),
                    false,
                    Some(json!(seen)),
                    Some(format!("context.{field} is {seen:?}, not {want:?}")),
                );
            }
        }
    }
    leaf("context", true, None, None)
}

fn time_trace(t: &TimeFilter, argo: &ArgoEvent) -> Trace {
    let at = argo.context["time"].as_str().unwrap_or_default();
    match t.window.check(at) {
        Ok((matched, local)) => leaf(
            &t.text,
            matched,
            Some(json!(local.to_string())),
            (!matched).then(|| "outside the time window".to_string()),
        ),
        Err(reason) => leaf(&t.text, false, Some(json!(at)), Some(reason)),
    }
}

fn data_trace(d: &DataFilter, data: &Value) -> Trace {
    if data.is_null() {
        return leaf(
            &d.text,
            true,
            None,
            Some("no data: passes, as upstream".into()),
        );
    }
    let Some(found) = d.path.get(data) else {
        return leaf(&d.text, false, None, Some(missing_path(&d.path, data)));
    };
    let mut text = path::text(&found);
    if let Some(t) = &d.template {
        match t.execute(&Value::String(text.clone())) {
            Ok(out) if !out.is_empty() && out != "<no value>" => text = out,
            Ok(_) => {
                return leaf(
                    &d.text,
                    false,
                    Some(json!(text)),
                    Some("the template rendered nothing".into()),
                )
            }
            Err(e) => {
                return leaf(
                    &d.text,
                    false,
                    Some(json!(text)),
                    Some(format!("template: {e}")),
                )
            }
        }
    }
    let value = if d.template.is_some() {
        Value::String(text.clone())
    } else {
        found.into_owned()
    };
    let matched = match &d.kind {
        Kind::Str(res) => match d.cmp {
            Cmp::Eq => res.iter().any(|r| r.is_match(&text)),
            Cmp::Ne => res.iter().any(|r| !r.is_match(&text)),
            _ => false,
        },
        Kind::Num(want) => {
            let got = if d.template.is_some() {
                text.trim().parse().unwrap_or(0.0)
            } else {
                path::float(&value)
            };
            want.iter().any(|w| match d.cmp {
                Cmp::Eq => got == *w,
                Cmp::Ne => got != *w,
                Cmp::Lt => got < *w,
                Cmp::Le => got <= *w,
                Cmp::Gt => got > *w,
                Cmp::Ge => got >= *w,
            })
        }
        Kind::Bool(want) => {
            let got = path::boolean(&value);
            want.contains(&got)
        }
    };
    leaf(
        &d.text,
        matched,
        Some(json!(text)),
        (!matched).then(|| "no value matches".to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(body: Value) -> Event {
        let mut e = Event::new("webhook-example", b"{}", body);
        e.headers.insert("content-type", "application/json");
        e.meta
            .insert("contentType".into(), json!("application/json"));
        e.meta.insert("path".into(), json!("/example"));
        e
    }

    fn filter(yaml: &str, op: Option<&str>) -> DependencyFilter {
        let spec: FiltersSpec = serde_yaml_ng::from_str(yaml).unwrap();
        DependencyFilter::compile("webhook", "example", Some(&spec), op).unwrap()
    }

    #[test]
    fn upstream_data_filter_semantics() {
        // String values are unanchored regexes, any of them.
        let f = filter(
            "{data: [{path: body.message, type: string, value: [hello, hey]}]}",
            None,
        );
        assert!(f.test(&webhook(json!({"message": "othello"}))));
        assert!(!f.test(&webhook(json!({"message": "bye"}))));
        // Numbers coerce; comparators.
        let f = filter(
            "{data: [{path: body.value, type: number, comparator: '>', value: ['50.0']}]}",
            None,
        );
        assert!(f.test(&webhook(json!({"value": 51}))));
        assert!(f.test(&webhook(json!({"value": "51"}))));
        assert!(!f.test(&webhook(json!({"value": 50}))));
        // Bools, Go's ParseBool.
        let f = filter(
            "{data: [{path: body.ok, type: bool, value: ['false']}]}",
            None,
        );
        assert!(f.test(&webhook(json!({"ok": false}))));
        // A missing path fails; a path at the data root of a webhook never exists.
        let f = filter("{data: [{path: bucket, type: string, value: [x]}]}", None);
        let t = f.explain(&webhook(json!({"bucket": "x"})));
        assert!(!t.matched);
        assert!(t.children[0].children[0]
            .reason
            .as_ref()
            .unwrap()
            .contains("keys: body, header"));
        // Arrays match as their JSON text (`push` in `["push"]`).
        let f = filter(
            "{data: [{path: header.Content-Type, type: string, value: [json]}]}",
            None,
        );
        assert!(f.test(&webhook(json!({}))));
        // or
        let f = filter(
            "{dataLogicalOperator: or, data: [{path: body.a, type: string, value: [x]}, {path: body.b, type: number, value: ['1']}]}",
            None,
        );
        assert!(f.test(&webhook(json!({"b": 1}))));
        // != with a string
        let f = filter(
            "{data: [{path: body.ref, type: string, comparator: '!=', value: [main]}]}",
            None,
        );
        assert!(!f.test(&webhook(json!({"ref": "main"}))));
    }

    #[test]
    fn context_and_time_filters() {
        let f = filter("{context: {source: custom-webhook}}", None);
        assert!(
            !f.test(&webhook(json!({}))),
            "can never match a webhook/example dependency"
        );
        let f = filter(
            "{context: {source: webhook, subject: example, datacontenttype: application/json}}",
            None,
        );
        assert!(f.test(&webhook(json!({}))));
        let mut e = webhook(json!({}));
        e.time = "2026-11-30T23:50:00.000Z".into();
        let f = filter("{time: {start: '23:34:05', stop: '00:24:05'}}", None);
        assert!(f.test(&e));
        e.time = "2026-11-30T00:30:00.000Z".into();
        assert!(!f.test(&e));
        // filtersLogicalOperator: or — one kind passing is enough.
        let f = filter(
            "{context: {source: nope}, data: [{path: body.a, type: string, value: [x]}]}",
            Some("or"),
        );
        assert!(f.test(&webhook(json!({"a": "x"}))));
    }

    #[test]
    fn bad_kinds_are_load_errors() {
        // A script compiles now; one that does not parse is a load error
        // naming the field.
        let spec: FiltersSpec = serde_yaml_ng::from_str("{script: 'return true'}").unwrap();
        assert!(DependencyFilter::compile("w", "e", Some(&spec), None).is_ok());
        let spec: FiltersSpec =
            serde_yaml_ng::from_str("{script: 'if event.a == 1 return true end'}").unwrap();
        let e = DependencyFilter::compile("w", "e", Some(&spec), None).unwrap_err();
        assert_eq!(e.0, "filters.script");
        assert!(e.1.contains("syntax error"), "{e:?}");
        let spec: FiltersSpec =
            serde_yaml_ng::from_str("{data: [{path: a, type: int, value: ['1']}]}").unwrap();
        assert!(DependencyFilter::compile("w", "e", Some(&spec), None).is_err());
    }

    // ------------------------------------------------------------ script

    /// Upstream `examples/sensors/filter-script.yaml` through a webhook
    /// event (`event.body…`).
    #[test]
    fn script_filter_over_the_webhook_data() {
        let f = filter(
            "{script: 'if event.body.a == \"b\" and event.body.d.e == \"z\" then return true else return false end'}",
            None,
        );
        assert!(f.test(&webhook(json!({"a": "b", "c": 10, "d": {"e": "z"}}))));
        let t = f.explain(&webhook(json!({"a": "b", "c": 10, "d": {"e": "y"}})));
        assert!(!t.matched);
        assert_eq!(t.children[0].filter, "script");
        assert_eq!(
            t.children[0].reason.as_deref(),
            Some("the script did not return true")
        );
        // Headers are there too, as Go-canonical lists.
        let f = filter(
            "{script: 'return event.header[\"Content-Type\"][1] == \"application/json\"'}",
            None,
        );
        assert!(f.test(&webhook(json!({}))));
    }

    /// Upstream `filterEvent`: a script is one more kind; under `or` a
    /// script that is false does not block, one that errors does.
    #[test]
    fn script_combines_with_other_kinds() {
        let data = "data: [{path: body.a, type: string, value: [x]}]";
        let yes = "script: 'return true'";
        let no = "script: 'return false'";
        let boom = "script: 'return event.body.nope.deeper'";
        let cases = [
            (format!("{{{data}, {yes}}}"), None, json!({"a": "x"}), true),
            (format!("{{{data}, {no}}}"), None, json!({"a": "x"}), false),
            (
                format!("{{{data}, {no}}}"),
                Some("or"),
                json!({"a": "x"}),
                true,
            ),
            (
                format!("{{{data}, {yes}}}"),
                Some("or"),
                json!({"a": "y"}),
                true,
            ),
            (
                format!("{{{data}, {no}}}"),
                Some("or"),
                json!({"a": "y"}),
                false,
            ),
            // A runtime error fails the dependency even under `or`.
            (
                format!("{{{data}, {boom}}}"),
                Some("or"),
                json!({"a": "x"}),
                false,
            ),
            (
                format!("{{{data}, {boom}}}"),
                None,
                json!({"a": "x"}),
                false,
            ),
            // Only the script: its verdict.
            (format!("{{{yes}}}"), Some("or"), json!({}), true),
            (format!("{{{no}}}"), Some("or"), json!({}), false),
            // An empty script is no script (upstream `Script != ""`).
            ("{script: ''}".to_string(), None, json!({}), true),
            ("{script: ''}".to_string(), Some("or"), json!({}), false),
        ];
        for (yaml, op, body, want) in cases {
            let t = filter(&yaml, op).explain(&webhook(body.clone()));
            assert_eq!(t.matched, want, "{yaml} {op:?} {body}: {t:?}");
        }
        let t =
            filter(&format!("{{{data}, {boom}}}"), Some("or")).explain(&webhook(json!({"a": "x"})));
        assert!(
            t.reason
                .as_deref()
                .unwrap_or_default()
                .contains("script failed"),
            "{t:?}"
        );
        assert!(
            t.children[1]
                .reason
                .as_deref()
                .unwrap_or_default()
                .contains("nope"),
            "{t:?}"
        );
    }

    // ------------------------------------------------------------ transform

    fn transformed(filters: Option<&str>, transform: Value) -> DependencyFilter {
        let spec: Option<FiltersSpec> = filters.map(|y| serde_yaml_ng::from_str(y).unwrap());
        DependencyFilter::compile("webhook", "example", spec.as_ref(), None)
            .unwrap()
            .with_transform(&transform)
            .unwrap()
    }

    /// Upstream `examples/sensors/transform.yaml`: the filters and the
    /// trigger parameters see the transformed data.
    #[test]
    fn transforms_run_before_filters_and_parameters() {
        let event = webhook(json!({"message": "hello"}));
        // script
        let f = transformed(
            Some("{data: [{path: body.message, type: string, value: ['^updated$']}]}"),
            json!({"script": "event.body.message='updated'\nreturn event"}),
        );
        let t = f.explain(&event);
        assert!(t.matched, "{t:?}");
        assert_eq!(t.children[0].filter, "transform (script)");
        let argo = f.argo_event(&event).unwrap();
        assert_eq!(argo.data["body"], json!({"message": "updated"}));
        assert_eq!(
            argo.data["header"]["Content-Type"],
            json!(["application/json"])
        );
        // jq, with string repetition
        let f = transformed(None, json!({"jq": ".body.message *= 2"}));
        assert!(f.test(&event));
        let argo = f.argo_event(&event).unwrap();
        assert_eq!(argo.data["body"]["message"], "hellohello");
        // A script filter sees the transformed data too.
        let f = transformed(
            Some("{script: 'return event.body.message == \"hellohello\"'}"),
            json!({"jq": ".body.message *= 2"}),
        );
        assert!(f.test(&event));
    }

    #[test]
    fn a_failing_transform_fails_the_dependency() {
        let event = webhook(json!({"message": "hello"}));
        for spec in [
            json!({"jq": ".body.message"}),
            json!({"jq": ".body.message + 1"}),
            json!({"script": "return 'x'"}),
            json!({"script": "error('no')"}),
        ] {
            let f = transformed(None, spec.clone());
            let t = f.explain(&event);
            assert!(!t.matched, "{spec}");
            assert!(!t.children[0].matched, "{spec}: {t:?}");
            assert!(t.children[0].filter.starts_with("transform"), "{t:?}");
            assert!(f.argo_event(&event).is_none(), "{spec}");
        }
        // No transform given: unchanged.
        let f = transformed(None, json!({}));
        assert_eq!(
            f.argo_event(&event).unwrap().data["body"],
            json!({"message": "hello"})
        );
        // Load errors name the field.
        let f = DependencyFilter::compile("w", "e", None, None).unwrap();
        assert_eq!(
            f.clone().with_transform(&json!({"jq": "{"})).unwrap_err().0,
            "transform.jq"
        );
        assert_eq!(
            f.with_transform(&json!({"script": "return {"}))
                .unwrap_err()
                .0,
            "transform.script"
        );
    }

    #[test]
    fn dependency_filters_stay_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<DependencyFilter>();
    }

    // ------------------------------------------------------------ exprs

    /// Upstream's event with `data` as given: upstream's unit tests call the
    /// filter functions on raw payloads, not on a webhook's `{header, body}`.
    fn over(f: &DependencyFilter, data: Value) -> Trace {
        f.explain_argo(&ArgoEvent {
            context: json!({}),
            data,
        })
    }

    type ExprList<'a> = &'a [(&'a str, &'a [(&'a str, &'a str)])];

    fn expr_specs(list: ExprList) -> Vec<ExprSpec> {
        list.iter()
            .map(|(expr, fields)| ExprSpec {
                expr: expr.to_string(),
                fields: Some(
                    fields
                        .iter()
                        .map(|(name, path)| FieldSpec {
                            name: name.to_string(),
                            path: path.to_string(),
                        })
                        .collect(),
                ),
            })
            .collect()
    }

    fn exprs(op: &str, list: ExprList) -> DependencyFilter {
        let spec = FiltersSpec {
            exprs: Some(expr_specs(list)),
            expr_logical_operator: Some(op.to_string()),
            ..Default::default()
        };
        DependencyFilter::compile("webhook", "example", Some(&spec), None).unwrap()
    }

    fn d(path: &str, kind: &str, value: &[&str], cmp: &str, template: &str) -> DataSpec {
        DataSpec {
            path: path.to_string(),
            kind: kind.to_string(),
            value: value.iter().map(|v| v.to_string()).collect(),
            comparator: (!cmp.is_empty()).then(|| cmp.to_string()),
            template: (!template.is_empty()).then(|| template.to_string()),
        }
    }

    fn data(op: &str, list: Vec<DataSpec>) -> Result<DependencyFilter, (String, String)> {
        let spec = FiltersSpec {
            data: Some(list),
            data_logical_operator: Some(op.to_string()),
            ..Default::default()
        };
        DependencyFilter::compile("webhook", "example", Some(&spec), None)
    }

    /// Every reason in the tree, for asserting on errors.
    fn reasons(t: &Trace) -> String {
        let mut out = t.reason.clone().unwrap_or_default();
        for c in &t.children {
            out.push_str(" | ");
            out.push_str(&reasons(c));
        }
        out
    }

    /// Upstream `pkg/sensors/dependencies/filter_expr_test.go`
    /// (`TestFilterExpr`) at the pinned commit, every case, by name.
    #[test]
    fn upstream_filter_expr_test() {
        // "nil event": not ported — tripline always has an event.
        // "unsupported content type" (data `a`, not JSON): such a body never
        // reaches Argo filters in tripline (ARGO-COMPAT §3); no match.
        let f = exprs("", &[(r#"a == "b""#, &[("a", "a")])]);
        let text = Event::new("webhook-example", b"a", json!("a"));
        let t = f.explain(&text);
        assert!(!t.matched && t.reason.as_deref().unwrap().contains("not JSON"));
        // "empty data": no data passes.
        assert!(over(&f, Value::Null).matched);
        // "nil filters"
        let none =
            DependencyFilter::compile("webhook", "example", Some(&FiltersSpec::default()), None)
                .unwrap();
        assert!(over(&none, Value::Null).matched);

        type Case<'a> = (&'a str, &'a str, ExprList<'a>, Value, bool, Option<&'a str>);
        let ab = json!({"a": {"b": "x", "d": "y"}});
        let abde = json!({"a": {"b": "x", "d": {"e": true}}});
        let cases: &[Case] = &[
            ("simple string equal", "", &[(r#"a == "b""#, &[("a", "a")])], json!({"a": "b"}), true, None),
            ("simple string different than", "", &[(r#"a != "b""#, &[("a", "a")])], json!({"a": "c"}), true, None),
            ("nested string equal", "", &[(r#"b == "b""#, &[("b", "a.b")])], json!({"a": {"b": "c"}}), false, None),
            ("number equal", "", &[("b == 2", &[("b", "a.b")])], json!({"a": {"b": 2}}), true, None),
            ("number less than", "", &[("b < 1", &[("b", "a.b")])], json!({"a": {"b": 2}}), false, None),
            ("string contains", "", &[(r#"b =~ "start""#, &[("b", "a.b")])], json!({"a": {"b": "start long string"}}), true, None),
            ("string does not contain", "", &[(r#"b !~ "start""#, &[("b", "a.b")])], json!({"a": {"b": "long string"}}), true, None),
            (
                "multiple filters, EMPTY operator",
                "",
                &[(r#"b == "x""#, &[("b", "a.b")]), (r#"d == "y""#, &[("d", "a.d")])],
                ab.clone(),
                true,
                None,
            ),
            (
                "multiple filters, AND operator",
                "and",
                &[(r#"b == "x""#, &[("b", "a.b")]), (r#"d == "d""#, &[("d", "a.d")])],
                ab.clone(),
                false,
                None,
            ),
            (
                "multiple filters, OR operator",
                "or",
                &[(r#"b == "x""#, &[("b", "a.b")]), (r#"d == "d""#, &[("d", "a.d")])],
                ab.clone(),
                true,
                None,
            ),
            (
                "multiple filters, OR operator, one field not existing",
                "or",
                &[(r#"b == "b""#, &[("b", "a.b")]), (r#"c == "c""#, &[("c", "a.c")])],
                ab.clone(),
                false,
                Some("path 'a.c' does not exist"),
            ),
            // The name says "first filter is false", but `b == "x"` is true:
            // `or` stops there, so `a.c` is never looked up.
            (
                "multiple filters, OR operator, one field not existing but not reached because first filter is false",
                "or",
                &[
                    (r#"b == "x""#, &[("b", "a.b")]),
                    (r#"c == "c""#, &[("c", "a.c")]),
                    ("e == true", &[("e", "a.d.e")]),
                ],
                abde.clone(),
                true,
                None,
            ),
            (
                "multiple filters, EMPTY operator, one field not existing but not reached because first filter is false",
                "",
                &[(r#"b == "b""#, &[("b", "a.b")]), (r#"c == "c""#, &[("c", "a.c")])],
                ab.clone(),
                false,
                None,
            ),
            (
                "multiple filters, EMPTY operator, one field not existing",
                "",
                &[(r#"b == "x""#, &[("b", "a.b")]), (r#"c == "c""#, &[("c", "a.c")])],
                ab.clone(),
                false,
                Some("path 'a.c' does not exist"),
            ),
            (
                "multiple filters, AND operator, one field not existing",
                "and",
                &[
                    (r#"b == "x""#, &[("b", "a.b")]),
                    (r#"c == "c""#, &[("c", "a.c")]),
                    ("e == true", &[("e", "a.d.e")]),
                ],
                abde.clone(),
                false,
                Some("path 'a.c' does not exist"),
            ),
            (
                "AND comparator inside expr (different than expr logical operator), one field not existing",
                "",
                &[(r#"b != "b" && d == true"#, &[("b", "a.b"), ("d", "a.d")])],
                json!({"a": {"b": "x", "c": {"d": true}}}),
                false,
                Some("path 'a.d' does not exist"),
            ),
            (
                "AND comparator inside expr (different than expr logical operator)",
                "or",
                &[(r#"b != "b" && d == true"#, &[("b", "a.b"), ("d", "a.c.d")])],
                json!({"a": {"b": "x", "c": {"d": true}}}),
                true,
                None,
            ),
            (
                "OR comparator inside expr (different than expr logical operator)",
                "",
                &[(r#"b == "b" || d == true"#, &[("b", "a.b"), ("d", "a.c.d")])],
                json!({"a": {"b": "b", "c": {"d": false}}}),
                true,
                None,
            ),
            // `e` is never bound: govaluate's `||` short-circuits before it.
            (
                "multiple comparators inside expr (different than expr logical operator)",
                "",
                &[(r#"b == "b" || (d == true && e == 2)"#, &[("b", "a.b"), ("d", "a.c.d")])],
                json!({"a": {"b": "b", "c": {"d": false}, "e": 2}}),
                true,
                None,
            ),
        ];
        for (name, op, list, payload, want, err) in cases {
            let t = over(&exprs(op, list), payload.clone());
            assert_eq!(t.matched, *want, "{name}: {t:#?}");
            let why = reasons(&t);
            match err {
                Some(e) => assert!(why.contains(e), "{name}: {why}"),
                None => assert!(
                    !why.contains("does not exist") && !why.contains("no parameter"),
                    "{name}: {why}"
                ),
            }
        }
    }

    /// Upstream `pkg/sensors/dependencies/filter_data_test.go`
    /// (`TestFilterData`) at the pinned commit, every case, by name.
    #[test]
    #[allow(clippy::approx_constant)] // upstream's payload has 3.14
    fn upstream_filter_data_test() {
        let f = data("", vec![d("k", "string", &["v"], "", "")]).unwrap();
        // "nil event": not ported — tripline always has an event.
        // "unsupported content type" (data `a`): see the exprs table; no match.
        let text = Event::new("webhook-example", b"a", json!("a"));
        assert!(!f.explain(&text).matched);
        // "empty data"
        assert!(over(&f, Value::Null).matched);
        // "nil filters, JSON data"
        let none =
            DependencyFilter::compile("webhook", "example", Some(&FiltersSpec::default()), None)
                .unwrap();
        assert!(over(&none, json!({"k": "v"})).matched);
        // "invalid filter path, JSON data", "invalid filter type, JSON data",
        // "invalid filter values, JSON data": upstream fails each event
        // (false + error); tripline refuses them at load (ARGO-COMPAT §1.3).
        assert!(data("", vec![d("", "string", &["v"], "", "")]).is_err());
        assert!(data("", vec![d("k", "", &["v"], "", "")]).is_err());
        assert!(data("", vec![d("k", "string", &[], "", "")]).is_err());

        let nested = json!({"k": true, "k1": {"k": 3.14, "k2": "hello, world"}});
        let cases: Vec<(&str, &str, Vec<DataSpec>, Value, bool)> = vec![
            ("string filter, JSON data", "", vec![d("k", "string", &["v"], "", "")], json!({"k": "v"}), true),
            ("string filter EqualTo, JSON data", "", vec![d("k", "string", &["v"], "=", "")], json!({"k": "v"}), true),
            ("string filter NotEqualTo, JSON data", "", vec![d("k", "string", &["b"], "!=", "")], json!({"k": "v"}), true),
            ("number filter (data: string, filter: number), JSON data", "", vec![d("k", "number", &["1.0"], "", "")], json!({"k": "1.0"}), true),
            ("comparator filter GreaterThan return true (data: string, filter: number), JSON data", "", vec![d("k", "number", &["1.0"], ">", "")], json!({"k": "2.0"}), true),
            ("comparator filter LessThanOrEqualTo return false (data: string, filter: number), JSON data", "", vec![d("k", "number", &["1.0"], "<=", "")], json!({"k": "2.0"}), false),
            ("comparator filter NotEqualTo (data: string, filter: number), JSON data", "", vec![d("k", "number", &["1.0"], "!=", "")], json!({"k": "1.0"}), false),
            ("comparator filter EqualTo (data: string, filter: number), JSON data", "", vec![d("k", "number", &["5.0"], "=", "")], json!({"k": "5.0"}), true),
            ("comparator filter empty (data: string, filter: number), JSON data", "", vec![d("k", "number", &["10.0"], "", "")], json!({"k": "10.0"}), true),
            ("number filter (data: number, filter: number), JSON data", "", vec![d("k", "number", &["1.0"], "", "")], json!({"k": 1.0}), true),
            ("comparator filter GreaterThan return true (data: number, filter: number), JSON data", "", vec![d("k", "number", &["1.0"], ">", "")], json!({"k": 2.0}), true),
            ("comparator filter LessThanOrEqualTo return false (data: number, filter: number), JSON data", "", vec![d("k", "number", &["1.0"], "<=", "")], json!({"k": 2.0}), false),
            ("comparator filter NotEqualTo (data: number, filter: number), JSON data", "", vec![d("k", "number", &["1.0"], "!=", "")], json!({"k": 1.0}), false),
            ("comparator filter EqualTo (data: number, filter: number), JSON data", "", vec![d("k", "number", &["5.0"], "=", "")], json!({"k": 5.0}), true),
            ("comparator filter empty (data: number, filter: number), JSON data", "", vec![d("k", "number", &["10.0"], "", "")], json!({"k": 10.0}), true),
            (
                "multiple filters return false, nested JSON data, EMPTY operator",
                "",
                vec![
                    d("k", "string", &["v"], "", ""),
                    d("k1.k", "number", &["2.14"], "", ""),
                    d("k1.k2", "string", &["hello,world", "hello there"], "", ""),
                ],
                nested.clone(),
                false,
            ),
            (
                "multiple filters return false, nested JSON data, AND operator",
                "and",
                vec![
                    d("k", "bool", &["true"], "", ""),
                    d("k1.k", "number", &["3.14"], "", ""),
                    d("k1.k2", "string", &["hello,world", "hello, world", "hello there"], "", ""),
                ],
                nested.clone(),
                true,
            ),
            (
                "multiple filters return true, nested JSON data, OR operator",
                "or",
                vec![
                    d("k", "bool", &["false"], "", ""),
                    d("k1.k", "number", &["3.14"], "", ""),
                    d("k1.k2", "string", &["hello,world", "hello there"], "", ""),
                ],
                nested.clone(),
                true,
            ),
            // "string filter Regex, JSON data" (path `[k,k1.a.#(k2=="v2").k2]`)
            // and "string filter Regex2, JSON data": not ported — gjson
            // multipaths and queries are outside tripline's path subset (a
            // load error says so).
            (
                "string filter base64, uppercase template",
                "",
                vec![d("k", "string", &["HELLO WORLD"], "", "{{ b64dec .Input | upper }}")],
                json!({"k": "aGVsbG8gd29ybGQ="}),
                true,
            ),
            (
                "string filter base64 template",
                "",
                vec![d("k", "number", &["3.13"], ">", "{{ b64dec .Input }}")],
                json!({"k": "My4xNA=="}),
                true,
            ),
            // Bad base64: sprig's b64dec renders Go's error text, which does
            // not match `hello world`, so `!=` holds.
            (
                "string filter base64 template, comparator not equal",
                "",
                vec![d("k", "string", &["hello world"], "!=", "{{ b64dec .Input }}")],
                json!({"k": "aGVsbG8gd29ybGQ"}),
                true,
            ),
            (
                "string filter base64 template, regex",
                "",
                vec![d("k", "string", &["world$"], "", "{{ b64dec .Input }}")],
                json!({"k": "aGVsbG8gd29ybGQ="}),
                true,
            ),
            // Not ported as upstream wrote them: the four "NotEqualTo with
            // multiple values" cases come from commit 9590fe5e8 ("make !=
            // comparator work as NOT IN"), which is not in the pinned master;
            // the pinned code (and ARGO-COMPAT §4.1, issue 3215) passes when
            // any value differs, so "value IN array" is true here, not false.
            (
                "string filter NotEqualTo with multiple values - value IN array (pinned code)",
                "",
                vec![d("k", "string", &["id1", "id2", "id3"], "!=", "")],
                json!({"k": "id1"}),
                true,
            ),
            (
                "string filter NotEqualTo with multiple values - value NOT IN array (should PASS)",
                "",
                vec![d("k", "string", &["id1", "id2", "id3"], "!=", "")],
                json!({"k": "id_other"}),
                true,
            ),
            (
                "number filter NotEqualTo with multiple values - value IN array (pinned code)",
                "",
                vec![d("k", "number", &["1.0", "2.0", "3.0"], "!=", "")],
                json!({"k": 2.0}),
                true,
            ),
            (
                "number filter NotEqualTo with multiple values - value NOT IN array (should PASS)",
                "",
                vec![d("k", "number", &["1.0", "2.0", "3.0"], "!=", "")],
                json!({"k": 5.0}),
                true,
            ),
        ];
        for (name, op, list, payload, want) in cases {
            let t = over(&data(op, list).unwrap(), payload);
            assert_eq!(t.matched, want, "{name}: {t:#?}");
        }
    }

    /// The cases of upstream `filter_test.go` (`TestFilter`, i.e.
    /// `filterEvent`) that combine exprs with data.
    #[test]
    fn upstream_filter_test_exprs_with_data() {
        let payload = json!({"a": "x", "b": 10, "c": {"d": "hello world", "e": false}});
        let both = |data_op: &str,
                    data: Vec<DataSpec>,
                    expr_op: &str,
                    list: ExprList,
                    filters_op: &str| {
            let spec = FiltersSpec {
                data: Some(data),
                data_logical_operator: Some(data_op.to_string()),
                exprs: Some(expr_specs(list)),
                expr_logical_operator: Some(expr_op.to_string()),
                ..Default::default()
            };
            DependencyFilter::compile("webhook", "example", Some(&spec), Some(filters_op))
        };
        let hello: ExprList = &[
            (r#"d == "hello world""#, &[("d", "c.d")]),
            ("e == false", &[("e", "c.e")]),
        ];
        // "test advanced logic: (A && B) && (C && D)"
        let f = both(
            "",
            vec![
                d("a", "string", &["x"], "", ""),
                d("b", "number", &["10"], "", ""),
            ],
            "",
            hello,
            "",
        )
        .unwrap();
        assert!(over(&f, payload.clone()).matched);
        // "test advanced logic: (A && B) && (C && D) with error": the second
        // expr (`e == false"`) does not parse — upstream fails every event
        // (false + error), tripline refuses it at load.
        let e = both(
            "",
            vec![
                d("z", "string", &["x"], "", ""),
                d("b", "number", &["10"], "", ""),
            ],
            "",
            &[
                (r#"d == "hello world""#, &[("d", "c.d")]),
                (r#"e == false""#, &[("e", "c.e")]),
            ],
            "",
        )
        .unwrap_err();
        assert_eq!(e.0, "filters.exprs[1].expr", "{e:?}");
        assert!(e.1.contains("unclosed string literal"), "{e:?}");
        // "test advanced logic: (A && B) || (C && D)"
        let f = both(
            "and",
            vec![
                d("a", "string", &["x"], "", ""),
                d("b", "number", &["10"], "", ""),
            ],
            "and",
            &[
                (r#"d == "hello world""#, &[("d", "c.d")]),
                ("e == true", &[("e", "c.e")]),
            ],
            "or",
        )
        .unwrap();
        assert!(over(&f, payload.clone()).matched);
        // "test advanced logic: (A || B) && (C || D)"
        let f = both(
            "or",
            vec![
                d("a", "string", &["x"], "", ""),
                d("b", "number", &["11"], "", ""),
            ],
            "or",
            &[
                (r#"d == "hello world""#, &[("d", "c.d")]),
                ("e == true", &[("e", "c.e")]),
            ],
            "and",
        )
        .unwrap();
        assert!(over(&f, payload.clone()).matched);
        // "filtersLogicalOperator == 'or' with only a subset of filters specified"
        let f = both(
            "",
            vec![
                d("a.d.e.f", "string", &["not-valid"], "", ""),
                d("a.h.i", "string", &["not-valid", "not-valid-2"], "", ""),
            ],
            "",
            &[(r#"A == "not-valid""#, &[("A", "a.b")])],
            "or",
        )
        .unwrap();
        let subset = json!({"a": {"b": "c", "d": {"e": {"f": "g"}}, "h": {"i": "j"}}});
        assert!(!over(&f, subset).matched);
        // "test advanced logic: (A || B) || (C || D)"
        let f = both(
            "or",
            vec![
                d("a", "string", &["y"], "", ""),
                d("b", "number", &["11"], "", ""),
            ],
            "or",
            hello,
            "or",
        )
        .unwrap();
        assert!(over(&f, payload.clone()).matched);
        let everybody: ExprList = &[
            (r#"d == "hello everybody""#, &[("d", "c.d")]),
            ("e == true", &[("e", "c.e")]),
        ];
        // "test advanced logic: (A && B) || (C || D)"
        let f = both(
            "and",
            vec![
                d("a", "string", &["x"], "", ""),
                d("b", "number", &["10"], "", ""),
            ],
            "or",
            everybody,
            "or",
        )
        .unwrap();
        assert!(over(&f, payload.clone()).matched);
        // "test advanced logic: (A || B) || (C && D)"
        let f = both(
            "or",
            vec![
                d("a", "string", &["x"], "", ""),
                d("b", "number", &["11"], "", ""),
            ],
            "and",
            &[
                (r#"d == "hello everybody""#, &[("d", "c.d")]),
                ("e == false", &[("e", "c.e")]),
            ],
            "or",
        )
        .unwrap();
        assert!(over(&f, payload.clone()).matched);
        // "test advanced logic: (A && B) && (C || D)"
        let f = both(
            "and",
            vec![
                d("a", "string", &["x"], "", ""),
                d("b", "number", &["11"], "", ""),
            ],
            "or",
            everybody,
            "and",
        )
        .unwrap();
        assert!(!over(&f, payload.clone()).matched);
        // "test advanced logic: (A || B) && (C && D)": `c.f` does not exist.
        let f = both(
            "or",
            vec![
                d("a", "string", &["x"], "", ""),
                d("b", "number", &["10"], "", ""),
            ],
            "and",
            &[
                (r#"f == "hello world""#, &[("f", "c.f")]),
                ("e == false", &[("e", "c.e")]),
            ],
            "and",
        )
        .unwrap();
        let t = over(&f, payload);
        assert!(!t.matched);
        assert!(reasons(&t).contains("path 'c.f' does not exist"));
    }

    /// ARGO-COMPAT §0 oracles 11, 13–16 (upstream `examples/sensors/`), their
    /// filters verbatim, over the payloads their comments assume.
    #[test]
    fn upstream_expr_examples() {
        // filter-with-expressions.yaml: every expr true ⇒ pass.
        let f = filter(
            r#"
exprs:
  - expr: a == "b" || c == 10
    fields:
      - name: a
        path: a
      - name: c
        path: a-longer-name
  - expr: e == false
    fields:
      - name: e
        path: nested.path.can-get.longer
"#,
            None,
        );
        let payload = json!({"a": "b", "a-longer-name": 10,
                             "nested": {"path": {"can-get": {"longer": false}}}});
        assert!(over(&f, payload).matched);
        // filter-with-multiple-expr-filters-in-or.yaml: the first expr is
        // annotated `# FALSE` but is true with a = "b" (ARGO-COMPAT §12.1).
        let f = filter(
            r#"
exprLogicalOperator: "or"
exprs:
  - expr: a == "b" || c != 10
    fields:
      - {name: a, path: a}
      - {name: c, path: a-longer-name}
  - expr: e == false
    fields:
      - {name: e, path: nested.path.can-get.longer}
"#,
            None,
        );
        let t = over(&f, json!({"a": "b", "a-longer-name": 10}));
        assert!(t.matched);
        assert!(t.children[0].children[0].matched, "{t:#?}");
        assert_eq!(t.children[0].children.len(), 1, "or: the first true wins");

        let multi = |exprs_op: &str, data_op: &str| {
            format!(
                r#"
exprLogicalOperator: "{exprs_op}"
exprs:
  - expr: a == "b" || c == 10
    fields:
      - {{name: a, path: a}}
      - {{name: c, path: c}}
  - expr: e == false
    fields:
      - {{name: e, path: d.e}}
dataLogicalOperator: "{data_op}"
data:
  - {{path: "a", type: "string", value: ["b"]}}
  - {{path: "c", type: "number", comparator: ">", value: ["20"]}}
  - {{path: "d.e", type: "bool", value: ["false"]}}
"#
            )
        };
        let payload = json!({"a": "b", "c": 10, "d": {"e": false}});
        // filter-with-multiple-filters-in-or.yaml: everything `or`.
        let t = over(&filter(&multi("or", "or"), Some("or")), payload.clone());
        assert!(t.matched);
        // filter-with-multiple-filters-mixed.yaml: kinds `and`, filters `or`:
        // exprs pass, data fails on `c > 20`, the event passes.
        let t = over(&filter(&multi("", ""), Some("or")), payload.clone());
        assert!(t.matched);
        assert!(t.children[0].matched && t.children[0].filter == "exprs (and)");
        assert!(!t.children[1].matched && t.children[1].filter == "data (and)");
        // filter-with-multiple-filters.yaml: all `and`, data `c = 10`.
        let all_and =
            multi("", "").replace(r#"comparator: ">", value: ["20"]"#, r#"value: ["10"]"#);
        assert!(over(&filter(&all_and, None), payload.clone()).matched);
        assert!(!over(&filter(&multi("", ""), None), payload).matched);
    }

    #[test]
    fn exprs_over_a_webhook_event_explain_themselves() {
        let f = filter(
            r#"{exprs: [{expr: 'a == "b" || c == 10', fields: [{name: a, path: body.a}, {name: c, path: body.c}]},
                        {expr: 'n > 1', fields: [{name: n, path: body.n}]}]}"#,
            None,
        );
        let t = f.explain(&webhook(json!({"a": "x", "c": 10, "n": "2"})));
        assert!(!t.matched);
        let exprs = &t.children[0];
        assert_eq!(exprs.filter, "exprs (and)");
        assert_eq!(exprs.children[0].filter, r#"exprs[0] a == "b" || c == 10"#);
        assert!(exprs.children[0].matched);
        assert_eq!(exprs.children[0].seen, Some(json!({"a": "x", "c": 10})));
        assert!(!exprs.children[1].matched);
        assert!(
            exprs.children[1]
                .reason
                .as_deref()
                .unwrap()
                .contains("two numbers or two strings"),
            "{t:#?}"
        );
        assert!(f.test(&webhook(json!({"a": "b", "c": 0, "n": 2}))));
        let t = f.explain(&webhook(json!({"a": "b", "c": 0, "n": 1})));
        assert_eq!(
            t.children[0].children[1].reason.as_deref(),
            Some("the expression is false")
        );
        // A path at the data root never exists on a webhook event.
        let f = filter(
            "{exprs: [{expr: 'a == 1', fields: [{name: a, path: a}]}]}",
            None,
        );
        let t = f.explain(&webhook(json!({"a": 1})));
        assert!(!t.matched);
        assert!(
            reasons(&t).contains("path 'a' does not exist in the event data (keys: body, header)")
        );
        // A result other than the boolean `true` does not pass.
        let f = filter(
            "{exprs: [{expr: 'n', fields: [{name: n, path: body.n}]}]}",
            None,
        );
        let t = f.explain(&webhook(json!({"n": "true"})));
        assert!(!t.matched);
        assert!(
            reasons(&t).contains("the result is true, not true")
                || reasons(&t).contains("not true")
        );
        assert!(f.test(&webhook(json!({"n": true}))));
    }

    #[test]
    fn expr_logic_as_upstream() {
        // Evaluation stops at the first false (and) / first true (or).
        let f = exprs(
            "and",
            &[("a == 2", &[("a", "a")]), ("b == 1", &[("b", "missing")])],
        );
        let t = over(&f, json!({"a": 1}));
        assert!(!t.matched);
        assert_eq!(t.children[0].children.len(), 1);
        assert!(t.children[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("not evaluated"));
        // or: errors and falses are passed over.
        let f = exprs(
            "or",
            &[
                ("b == 1", &[("b", "missing")]),
                ("a == 2", &[("a", "a")]),
                ("a == 1", &[("a", "a")]),
            ],
        );
        assert!(over(&f, json!({"a": 1})).matched);
        assert!(!over(&f, json!({"a": 3})).matched);
        // No fields bound (unreachable from a manifest: rejected at load):
        // skipped — a pass under `and`, nothing under `or`.
        let skipped = [ExprFilter {
            expr: Expr::parse("x == 1").unwrap(),
            fields: Vec::new(),
        }];
        assert!(exprs_trace(&skipped, Logic::And, &json!({})).matched);
        assert!(!exprs_trace(&skipped, Logic::Or, &json!({})).matched);
        // `exprs: []` is present: true under `and`, false under `or`.
        assert!(over(&exprs("and", &[]), json!({})).matched);
        let t = over(&exprs("or", &[]), json!({}));
        assert!(!t.matched);
        // ... and a present kind counts under filtersLogicalOperator `or`.
        let f = filter(
            "{exprs: [], exprLogicalOperator: or, context: {source: nope}}",
            Some("or"),
        );
        assert!(!f.test(&webhook(json!({}))));
        // `data: []` passes under either operator (upstream `filterData`).
        assert!(over(&data("or", vec![]).unwrap(), json!({})).matched);
        // Numbers are float64, `==` by value; null data passes.
        let f = exprs("", &[("c == 10", &[("c", "c")])]);
        assert!(over(&f, json!({"c": 10.0})).matched);
        assert!(over(&f, Value::Null).matched);
        // A field can bind an object or an array.
        let f = exprs(
            "",
            &[("o == p && 2 in l", &[("o", "x"), ("p", "y"), ("l", "l")])],
        );
        assert!(over(&f, json!({"x": {"k": [1]}, "y": {"k": [1.0]}, "l": [1, 2]})).matched);
        // gjson `#`: an array's length.
        let f = exprs("", &[("n >= 2", &[("n", "body.commits.#")])]);
        assert!(over(&f, json!({"body": {"commits": [1, 2]}})).matched);
    }

    #[test]
    fn expr_load_errors() {
        let err = |yaml: &str| {
            let spec: FiltersSpec = serde_yaml_ng::from_str(yaml).unwrap();
            DependencyFilter::compile("w", "e", Some(&spec), None).unwrap_err()
        };
        let e = err("{exprs: [{expr: '', fields: [{name: a, path: a}]}]}");
        assert_eq!(e.0, "filters.exprs[0].expr");
        let e = err("{exprs: [{expr: 'a == 1'}]}");
        assert_eq!(e.0, "filters.exprs[0].fields");
        let e = err("{exprs: [{expr: 'a == 1', fields: []}]}");
        assert_eq!(e.0, "filters.exprs[0].fields");
        let e = err("{exprs: [{expr: 'a == 1', fields: [{path: a}]}]}");
        assert_eq!(e.0, "filters.exprs[0].fields[0]");
        let e = err("{exprs: [{expr: 'a == 1', fields: [{name: a}]}]}");
        assert_eq!(e.0, "filters.exprs[0].fields[0]");
        let e = err("{exprs: [{expr: 'a == 1', fields: [{name: a, path: 'body.*'}]}]}");
        assert_eq!(e.0, "filters.exprs[0].fields[0].path");
        assert!(e.1.contains("not supported"), "{e:?}");
        let e = err("{exprs: [{expr: 'a == = 1', fields: [{name: a, path: a}]}]}");
        assert_eq!(e.0, "filters.exprs[0].expr");
        assert!(e.1.contains("a == = 1"), "{e:?}");
        let e = err("{exprs: [{expr: 'a =~ \"[x\"', fields: [{name: a, path: a}]}]}");
        assert!(e.1.contains("regexp"), "{e:?}");
        let e = err("{exprs: [{expr: 'body.a == 1', fields: [{name: body.a, path: body.a}]}]}");
        assert!(e.1.contains("[body.a]"), "{e:?}");
        let e =
            err("{exprLogicalOperator: OR, exprs: [{expr: 'a', fields: [{name: a, path: a}]}]}");
        assert_eq!(e.0, "filters.exprLogicalOperator");
    }
}
