//! Argo dependency filters (ARGO-COMPAT §4) over the Argo event: `data`
//! (gjson path, string regex unanchored / number / bool, value lists,
//! comparators), `context`, `time`, combined by the logical operators.
//! `test` and the explanation share one evaluation, so what `tripline test`
//! prints is what decides. Not supported yet (load error): `exprs`
//! (govaluate), `script` (Lua), `transform`.

use chrono::{NaiveTime, TimeZone, Timelike};
use regex::Regex;
use serde::Deserialize;
use serde_json::{json, Value};

use super::data::{argo_event, ArgoEvent};
use super::gotmpl::Template;
use super::path::{self, Path};
use crate::event::Event;
use crate::sensor::filter::Trace;

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
    pub exprs: Option<Vec<Value>>,
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
struct TimeFilter {
    start: NaiveTime,
    stop: NaiveTime,
    tz: chrono_tz::Tz,
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
    filters: Logic,
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
            filters,
        };
        let Some(spec) = spec else { return Ok(out) };
        let unsupported = |field: &str, what: &str| {
            Err((
                format!("filters.{field}"),
                format!("{what} filters are not supported by tripline yet (supported: data, context, time)"),
            ))
        };
        if spec.exprs.as_ref().is_some_and(|e| !e.is_empty()) {
            return unsupported("exprs", "expression (govaluate)");
        }
        if spec.script.is_some() {
            return unsupported("script", "Lua script");
        }
        logic(
            spec.expr_logical_operator.as_deref(),
            "filters.exprLogicalOperator",
        )?;
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
            let parse = |s: &str, f: &str| {
                NaiveTime::parse_from_str(s, "%H:%M:%S")
                    .map_err(|_| (format!("filters.time.{f}"), format!("`{s}` is not H:MM:SS")))
            };
            let (start, stop) = (parse(&t.start, "start")?, parse(&t.stop, "stop")?);
            if start == stop {
                return Err(("filters.time".into(), "start and stop are the same".into()));
            }
            let tz: chrono_tz::Tz = match t.timezone.as_deref() {
                None | Some("") => chrono_tz::UTC,
                Some(name) => name.parse().map_err(|_| {
                    (
                        "filters.time.timezone".to_string(),
                        format!("`{name}` is not an IANA time zone"),
                    )
                })?,
            };
            out.time = Some(TimeFilter {
                start,
                stop,
                tz,
                text: format!("time {}–{} {}", t.start, t.stop, tz),
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

    /// Whether the event satisfies the dependency.
    pub fn test(&self, event: &Event) -> bool {
        self.explain(event).matched
    }

    /// The verdict, filter by filter.
    pub fn explain(&self, event: &Event) -> Trace {
        let argo = match argo_event(event, &self.event_source, &self.event_name) {
            Ok(a) => a,
            Err(why) => return leaf("argo event", false, None, Some(why)),
        };
        let mut kinds = Vec::new();
        if let Some(c) = &self.context {
            kinds.push(context_trace(c, &argo));
        }
        if let Some(t) = &self.time {
            kinds.push(time_trace(t, &argo));
        }
        if let Some((list, op)) = &self.data {
            let children: Vec<Trace> = list.iter().map(|d| data_trace(d, &argo.data)).collect();
            let matched = match op {
                Logic::And => children.iter().all(|c| c.matched),
                Logic::Or => children.iter().any(|c| c.matched),
            };
            kinds.push(Trace {
                filter: format!("data ({})", if *op == Logic::And { "and" } else { "or" }),
                matched,
                seen: None,
                reason: None,
                children,
            });
        }
        let matched = match self.filters {
            Logic::And => kinds.iter().all(|k| k.matched),
            Logic::Or => kinds.is_empty() || kinds.iter().any(|k| k.matched),
        };
        Trace {
            filter: format!(
                "argo {}/{} ({})",
                self.event_source,
                self.event_name,
                if self.filters == Logic::And {
                    "and"
                } else {
                    "or"
                }
            ),
            matched,
            seen: None,
            reason: None,
            children: kinds,
        }
    }

    /// The Argo event of `event` for this dependency (for parameters).
    pub fn argo_event(&self, event: &Event) -> Option<ArgoEvent> {
        argo_event(event, &self.event_source, &self.event_name).ok()
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
    for (field, want) in checks {
        if let Some(want) = want {
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
    let Ok(instant) = chrono::DateTime::parse_from_rfc3339(at) else {
        return leaf(
            &t.text,
            false,
            Some(json!(at)),
            Some("the event time is not RFC 3339".into()),
        );
    };
    let local = t.tz.from_utc_datetime(&instant.naive_utc()).time();
    let local =
        NaiveTime::from_hms_opt(local.hour(), local.minute(), local.second()).unwrap_or(local);
    let matched = if t.start < t.stop {
        t.start <= local && local < t.stop
    } else {
        local >= t.start || local < t.stop
    };
    leaf(
        &t.text,
        matched,
        Some(json!(local.to_string())),
        (!matched).then(|| "outside the time window".to_string()),
    )
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
        let keys: Vec<String> = data
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        return leaf(
            &d.text,
            false,
            None,
            Some(format!(
                "path '{}' does not exist in the event data (keys: {})",
                d.path,
                keys.join(", ")
            )),
        );
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
    fn unsupported_kinds_are_load_errors() {
        let spec: FiltersSpec =
            serde_yaml_ng::from_str("{exprs: [{expr: a == b, fields: []}]}").unwrap();
        let e = DependencyFilter::compile("w", "e", Some(&spec), None).unwrap_err();
        assert!(e.1.contains("not supported"), "{e:?}");
        let spec: FiltersSpec =
            serde_yaml_ng::from_str("{data: [{path: a, type: int, value: ['1']}]}").unwrap();
        assert!(DependencyFilter::compile("w", "e", Some(&spec), None).is_err());
    }
}
