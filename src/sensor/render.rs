//! Parameters and the object a trigger submits.
//!
//! Parameter values are handlebars templates, compiled once at load into one
//! shared registry, rendered in strict mode (a missing field is an error
//! unless the parameter has a `default`). The rendered strings are
//! **inserted** as values at JSON paths of the manifest; the manifest itself is
//! never a template, so Argo's own `{{inputs.parameters.x}}` survives and event
//! data cannot inject structure.
//!
//! [`finalize`] gives every object its deterministic name
//! (`<trigger>-<hash of sensor, trigger, event ids>`), labels and annotation.
//!
//! Longer than most files: about 200 of its lines are unit tests of
//! rendering, paths and naming.

use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderError as HbError,
    RenderErrorReason,
};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::event::Event;

pub const LABEL_SENSOR: &str = "tripline.dev/sensor";
pub const LABEL_TRIGGER: &str = "tripline.dev/trigger";
pub use crate::event::{ANNOTATION_EVENT_ID, ANNOTATION_EVENT_KEY};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template: {0}")]
    Template(String),
    #[error("parameter `{param}`: {reason}")]
    Param { param: String, reason: String },
    #[error("dest `{dest}`: {reason}")]
    Dest { dest: String, reason: String },
    #[error("namespace `{namespace}` is not one of allowedNamespaces ({allowed})")]
    NamespaceNotAllowed { namespace: String, allowed: String },
}

/// All parameter templates of all sensors, compiled once.
pub struct Templates {
    hb: Handlebars<'static>,
    /// Per template: the paths it reads (`None`: it may read anything).
    reads: std::collections::HashMap<String, Option<Vec<Vec<String>>>>,
}

/// The event paths a set of templates reads (see [`Templates::reads`]).
pub type Reads = Option<Vec<Vec<String>>>;

impl Default for Templates {
    fn default() -> Self {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        hb.register_helper("default", Box::new(helper_default));
        hb.register_helper("lower", Box::new(helper_lower));
        hb.register_helper("upper", Box::new(helper_upper));
        hb.register_helper("trunc", Box::new(helper_trunc));
        hb.register_helper("json", Box::new(helper_json));
        hb.register_helper("replace", Box::new(helper_replace));
        Templates {
            hb,
            reads: Default::default(),
        }
    }
}

impl Templates {
    /// Compiles `src` under `key`. Errors carry the handlebars position.
    pub fn add(&mut self, key: &str, src: &str) -> Result<(), RenderError> {
        self.hb
            .register_template_string(key, src)
            .map_err(|e| RenderError::Template(e.to_string()))?;
        let template = self.hb.get_template(key).expect("just registered");
        template
            .elements
            .iter()
            .try_for_each(check_helpers)
            .map_err(RenderError::Template)?;
        let mut paths = Vec::new();
        let reads = template
            .elements
            .iter()
            .try_for_each(|e| element_paths(e, &mut paths))
            .map(|()| paths);
        self.reads.insert(key.to_string(), reads);
        Ok(())
    }

    /// The paths the templates under `keys` read, together, without paths
    /// under another one (`body` covers `body.after`); `None` when one of
    /// them may read anything (`each`, `with`, `lookup`, `this`, `../`…) or
    /// is unknown.
    pub fn reads<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Reads {
        let mut all: Vec<Vec<String>> = Vec::new();
        for key in keys {
            all.extend(self.reads.get(key)?.as_ref()?.iter().cloned());
        }
        Some(crate::event::outermost(all))
    }

    /// Renders `key` against `ctx`.
    pub fn render(&self, key: &str, ctx: &Context) -> Result<String, String> {
        self.hb
            .render_with_context(key, ctx)
            .map_err(|e| match e.reason() {
                RenderErrorReason::MissingVariable(Some(path)) => {
                    format!("the event has no field `{path}`")
                }
                _ => e.to_string(),
            })
    }
}

/// Our helpers and handlebars' built-in ones.
const HELPERS: &[&str] = &[
    "default", "lower", "upper", "trunc", "json", "replace", "if", "unless", "each", "with",
    "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte", "and", "or", "not", "len",
];

/// A call to a helper that does not exist would fail at every event
/// (strict mode): refuse it at load instead.
fn check_helpers(element: &handlebars::template::TemplateElement) -> Result<(), String> {
    use handlebars::template::{Parameter, TemplateElement as E};
    let (E::Expression(h) | E::HtmlExpression(h) | E::HelperBlock(h)) = element else {
        return Ok(());
    };
    let is_call = h.block || !h.params.is_empty() || !h.hash.is_empty();
    if let Some(name) = h.name.as_name().filter(|_| is_call) {
        if !HELPERS.contains(&name) {
            return Err(format!(
                "unknown helper `{name}` (helpers: {})",
                HELPERS.join(", ")
            ));
        }
    }
    for p in h.params.iter().chain(h.hash.values()) {
        if let Parameter::Subexpression(sub) = p {
            check_helpers(sub.as_element())?;
        }
    }
    for t in h.template.iter().chain(h.inverse.iter()) {
        t.elements.iter().try_for_each(check_helpers)?;
    }
    Ok(())
}

/// Helpers that neither change the context nor read it by computed keys:
/// a template using only these reads just the paths it names.
const PRUNABLE: &[&str] = &[
    "default", "lower", "upper", "trunc", "json", "replace", "if", "unless", "eq", "ne", "gt",
    "gte", "lt", "lte", "and", "or", "not", "len",
];

/// Collects the paths `element` reads; `None` when it may read anything.
fn element_paths(
    element: &handlebars::template::TemplateElement,
    out: &mut Vec<Vec<String>>,
) -> Option<()> {
    use handlebars::template::TemplateElement as E;
    let (E::Expression(h) | E::HtmlExpression(h) | E::HelperBlock(h)) = element else {
        return matches!(element, E::RawString(_) | E::Comment(_)).then_some(());
    };
    let is_call = h.block || !h.params.is_empty() || !h.hash.is_empty();
    if is_call {
        if !PRUNABLE.contains(&h.name.as_name()?) {
            return None;
        }
    } else {
        param_paths(&h.name, out)?;
    }
    if h.block_param.is_some() {
        return None;
    }
    for p in h.params.iter().chain(h.hash.values()) {
        param_paths(p, out)?;
    }
    for t in h.template.iter().chain(h.inverse.iter()) {
        for e in &t.elements {
            element_paths(e, out)?;
        }
    }
    Some(())
}

fn param_paths(p: &handlebars::template::Parameter, out: &mut Vec<Vec<String>>) -> Option<()> {
    use handlebars::template::Parameter as P;
    use handlebars::{Path, PathSeg};
    match p {
        P::Literal(_) => {}
        P::Name(n) if HELPERS.contains(&n.as_str()) => return None,
        P::Name(n) => out.push(vec![n.clone()]),
        P::Path(Path::Relative((segments, _))) => {
            let path = segments
                .iter()
                .map(|s| match s {
                    PathSeg::Named(n) if n != "this" => Some(n.clone()),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            if path.is_empty() {
                return None;
            }
            out.push(path);
        }
        P::Path(Path::Local(_)) => return None,
        P::Subexpression(sub) => element_paths(sub.as_element(), out)?,
        _ => return None,
    }
    Some(())
}

/// [`context`] holding only `reads` (from [`Templates::reads`]), copied from
/// the events as [`Event::to_json`] shows them: the same data for templates
/// that read only those paths, without serialising the whole event.
pub fn context_reading(
    primary: &Event,
    by_dependency: &[(&str, &Event)],
    reads: &Reads,
) -> Context {
    let Some(paths) = reads else {
        return context(primary, by_dependency);
    };
    let mut top = Map::new();
    for path in paths {
        let found = match by_dependency.iter().find(|(name, _)| *name == path[0]) {
            Some((_, event)) => envelope_value(event, &path[1..]),
            None => envelope_value(primary, path),
        };
        if let Some(value) = found {
            place(&mut top, path, value);
        }
    }
    Context::from(Value::Object(top))
}

/// The value at `path` of `event.to_json()`, copied, without building it.
fn envelope_value(event: &Event, path: &[String]) -> Option<Value> {
    let Some((root, rest)) = path.split_first() else {
        return Some(event.to_json());
    };
    let scalar = |s: &str| rest.is_empty().then(|| Value::String(s.to_string()));
    match root.as_str() {
        "id" => scalar(&event.id),
        "source" => scalar(&event.source),
        "type" => scalar(&event.kind),
        "subject" => scalar(&event.subject),
        "time" => scalar(&event.time),
        "headers" => crate::event::walk(&event.headers.to_json(), rest).cloned(),
        "body" => crate::event::walk(&event.body, rest).cloned(),
        "meta" => match rest.split_first() {
            None => Some(Value::Object(event.meta.clone())),
            Some((k, more)) => crate::event::walk(event.meta.get(k)?, more).cloned(),
        },
        _ => None,
    }
}

/// Puts `value` at `path` in `top`, creating objects on the way (an array
/// index becomes an object key, which handlebars looks up the same way).
fn place(top: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = top;
    for seg in parents {
        let next = node
            .entry(seg.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(map) = next else { return };
        node = map;
    }
    node.insert(last.clone(), value);
}

/// The data templates see: the envelope of the event that completed the
/// trigger at the top level (`{{body.after}}`), and every dependency's event
/// under its name (`{{push.body.after}}`).
pub fn context(primary: &Event, by_dependency: &[(&str, &Event)]) -> Context {
    let mut top = match primary.to_json() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for (name, event) in by_dependency {
        top.insert((*name).to_string(), event.to_json());
    }
    Context::from(Value::Object(top))
}

/// Splits a `dest` path (`spec.arguments.parameters.0.value`).
pub fn parse_dest(dest: &str) -> Result<Vec<String>, String> {
    let segs: Vec<String> = dest.split('.').map(str::to_string).collect();
    if segs.iter().any(String::is_empty) {
        return Err("empty segment".into());
    }
    if segs[0] == "metadata"
        && segs
            .get(1)
            .is_some_and(|s| s == "name" || s == "generateName")
    {
        return Err(
            "the object name is tripline's (deterministic names make redelivery safe)".into(),
        );
    }
    Ok(segs)
}

/// Inserts `value` at `path`, creating objects on the way. Arrays are indexed
/// by number; index == length appends. Never changes the type of an existing
/// node: walking through a string is an error.
pub fn insert(doc: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty path")?;
    let mut cur = doc;
    for (i, seg) in parents.iter().enumerate() {
        let at = path[..=i].join(".");
        // A node created on the way is a list when the next step is an index.
        let fresh = || match path[i + 1].parse::<usize>() {
            Ok(_) => Value::Array(Vec::new()),
            Err(_) => Value::Object(Map::new()),
        };
        cur = match cur {
            Value::Object(m) => m.entry(seg.clone()).or_insert_with(fresh),
            Value::Array(a) => {
                let idx: usize = seg
                    .parse()
                    .map_err(|_| format!("`{at}`: `{seg}` is not an array index"))?;
                if idx == a.len() {
                    a.push(fresh());
                }
                let len = a.len();
                a.get_mut(idx)
                    .ok_or(format!("`{at}`: index {idx} is past the end ({len} items)"))?
            }
            other => return Err(format!("`{at}` goes through a {}", kind(other))),
        };
    }
    match cur {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let idx: usize = last
                .parse()
                .map_err(|_| format!("`{last}` is not an array index"))?;
            match idx.cmp(&a.len()) {
                std::cmp::Ordering::Less => a[idx] = value,
                std::cmp::Ordering::Equal => a.push(value),
                std::cmp::Ordering::Greater => {
                    return Err(format!("index {idx} is past the end ({} items)", a.len()))
                }
            }
            Ok(())
        }
        other => Err(format!("`{}` is a {}", parents.join("."), kind(other))),
    }
}

/// Sets an Argo `spec.arguments.parameters[name=...]` value, adding the
/// parameter when absent.
pub fn set_argument(doc: &mut Value, name: &str, value: &str) -> Result<(), String> {
    let path = ["spec", "arguments", "parameters"].map(String::from);
    if crate::event::walk(doc, &path).is_none() {
        insert(doc, &path, json!([]))?;
    }
    let Some(Value::Array(params)) = doc.pointer_mut("/spec/arguments/parameters") else {
        return Err("`spec.arguments.parameters` is not a list".into());
    };
    match params
        .iter_mut()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
    {
        Some(p) => {
            p["value"] = Value::String(value.into());
        }
        None => params.push(json!({"name": name, "value": value})),
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

/// How many hex characters of the hash a name carries: 80 bits, so that
/// even millions of kept objects per trigger make a collision vanishingly
/// rare (and a collision is still detected: see [`ANNOTATION_EVENT_KEY`]).
pub const NAME_HASH_HEX: usize = 20;

/// The full hash of what fired a trigger: the sensor, the trigger and the
/// identities ([`Event::identity`]) of the events, in dependency order.
pub fn event_key(sensor: &str, trigger: &str, identities: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(sensor.as_bytes());
    h.update([0]);
    h.update(trigger.as_bytes());
    for id in identities {
        h.update([0]);
        h.update(id.as_bytes());
    }
    hex::encode(h.finalize())
}

/// `<prefix>-<20 hex chars of key>`, a valid DNS-1123 label of at most 63
/// characters: a redelivered event maps to the same name.
pub fn object_name(prefix: &str, key: &str) -> String {
    let hash = &key[..NAME_HASH_HEX.min(key.len())];
    let mut p = dns_label(prefix, 63 - 1 - hash.len());
    if p.is_empty() {
        p = "tripline".into();
    }
    format!("{p}-{hash}")
}

/// Lower-cases, replaces anything but `[a-z0-9-]` with `-`, squeezes and
/// trims dashes, and cuts to `max` characters.
pub fn dns_label(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    out.truncate(max);
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// Names, labels and annotates the rendered object in place; returns its name.
/// A fixed `metadata.name` is kept (a second event then reads `existing`);
/// otherwise the name is deterministic, with `generateName` as its prefix.
pub fn finalize(
    obj: &mut Value,
    sensor: &str,
    trigger: &str,
    events: &[&Event],
    namespace: Option<&str>,
) -> String {
    let identities: Vec<String> = events.iter().map(|e| e.identity()).collect();
    let event_ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let key = event_key(sensor, trigger, &identities);
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object");
    let generated = meta
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    let name = match meta.get("name").and_then(Value::as_str) {
        Some(fixed) if !fixed.is_empty() => fixed.to_string(),
        _ => {
            let prefix = meta
                .remove("generateName")
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| trigger.to_string());
            let name = object_name(&prefix, &key);
            meta.insert("name".into(), Value::String(name.clone()));
            name
        }
    };
    if let Some(ns) = namespace {
        meta.entry("namespace")
            .or_insert_with(|| Value::String(ns.into()));
    }
    let labels = meta.entry("labels").or_insert_with(|| json!({}));
    if let Some(labels) = labels.as_object_mut() {
        labels.insert(LABEL_SENSOR.into(), Value::String(dns_label(sensor, 63)));
        labels.insert(LABEL_TRIGGER.into(), Value::String(dns_label(trigger, 63)));
    }
    let ann = meta.entry("annotations").or_insert_with(|| json!({}));
    if let Some(ann) = ann.as_object_mut() {
        ann.insert(
            ANNOTATION_EVENT_ID.into(),
            Value::String(event_ids.join(",")),
        );
        if generated {
            ann.insert(ANNOTATION_EVENT_KEY.into(), Value::String(key));
        }
    }
    name
}

// ---- helpers -------------------------------------------------------------

/// Argument `i` of helper `name`; a missing field is an error (strict mode
/// applies inside helpers too), except where the helper says otherwise.
fn arg<'a>(h: &'a Helper, i: usize, name: &'static str) -> Result<&'a Value, HbError> {
    let p = h
        .param(i)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex(name, i))?;
    if p.is_value_missing() {
        return Err(RenderErrorReason::MissingVariable(p.relative_path().cloned()).into());
    }
    Ok(p.value())
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `{{default body.x "fallback"}}`: the value, or the fallback when the
/// field is missing, null or empty.
fn helper_default(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let v = h
        .param(0)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex("default", 0))?;
    let fallback = arg(h, 1, "default")?;
    let use_fallback =
        v.is_value_missing() || matches!(v.value(), Value::Null) || v.value() == &json!("");
    out.write(&text(if use_fallback { fallback } else { v.value() }))?;
    Ok(())
}

fn helper_lower(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    out.write(&text(arg(h, 0, "lower")?).to_lowercase())?;
    Ok(())
}

fn helper_upper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    out.write(&text(arg(h, 0, "upper")?).to_uppercase())?;
    Ok(())
}

/// `{{trunc body.after 7}}`: the first N characters.
fn helper_trunc(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let s = text(arg(h, 0, "trunc")?);
    let n = arg(h, 1, "trunc")?
        .as_u64()
        .ok_or(RenderErrorReason::InvalidParamType(
            "trunc: the length must be a number",
        ))?;
    out.write(&s.chars().take(n as usize).collect::<String>())?;
    Ok(())
}

/// `{{json body.commits}}`: the value as compact JSON text.
fn helper_json(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    out.write(&arg(h, 0, "json")?.to_string())?;
    Ok(())
}

/// `{{replace body.ref "refs/heads/" ""}}`.
fn helper_replace(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let s = text(arg(h, 0, "replace")?);
    let from = text(arg(h, 1, "replace")?);
    let to = text(arg(h, 2, "replace")?);
    out.write(&s.replace(&from, &to))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        let mut e = Event::new(
            "github",
            b"x",
            json!({"after": "0123456789abcdef", "ref": "refs/heads/Main", "n": 3,
                   "evil": "x\n  injected: true\n\"}{", "commits": [{"id": "a"}]}),
        );
        e.id = "delivery-1".into();
        e.headers.insert("X-GitHub-Event", "push");
        e
    }

    fn render(src: &str) -> Result<String, String> {
        let mut t = Templates::default();
        t.add("k", src).map_err(|e| e.to_string())?;
        let e = event();
        t.render("k", &context(&e, &[("push", &e)]))
    }

    /// Rendering against the pruned context gives what the whole event
    /// gives — the same text or the same error — for every template that is
    /// pruned, and the unprunable ones fall back to the whole event.
    #[test]
    fn templates_see_the_same_data_with_only_the_paths_they_read() {
        let sources = [
            "{{body.after}}",
            "{{after}}",
            "{{push.body.after}}",
            "{{json push}}",
            "{{default body.missing \"none\"}}",
            "{{default body.n.deeper \"none\"}}",
            "{{lower body.ref}}-{{upper (lower headers.x-github-event)}}",
            "{{body.commits.0.id}} {{body.commits.1.id}}",
            "{{json body.commits}} {{body.commits.0.id}}",
            "{{len body.commits}} {{trunc body.after 7}}",
            "{{#if body.n}}{{body.n}}{{else}}{{body.ref}}{{/if}}",
            "{{#unless (eq body.n 3)}}no{{/unless}}{{replace body.ref \"refs/\" \"\"}}",
            "{{headers.X-GitHub-Event}}",
            "{{body.missing}}",
            "{{body.ref.deeper}}",
            "{{id}}/{{type}}/{{source}}/{{time}}/{{meta.path}}/{{meta}}",
            "{{json body}}",
            "{{json headers}}",
            "{{#each body.commits}}{{id}}{{/each}}",
            "{{#with body}}{{after}}{{/with}}",
            "{{lookup body \"after\"}}",
            "{{json this}}",
        ];
        let mut e = event();
        e.meta.insert("path".into(), json!("/hooks"));
        let mut other = event();
        other.body = json!({"after": "fedcba", "commits": [{"id": "b"}, {"id": "c"}]});
        let mut t = Templates::default();
        let mut pruned = 0;
        for (i, src) in sources.iter().enumerate() {
            let key = format!("k{i}");
            t.add(&key, src).unwrap();
            let reads = t.reads([key.as_str()]);
            pruned += usize::from(reads.is_some());
            for deps in [vec![], vec![("push", &other)]] {
                let whole = t.render(&key, &context(&e, &deps));
                let part = t.render(&key, &context_reading(&e, &deps, &reads));
                assert_eq!(whole, part, "{src} with {:?}", reads);
            }
        }
        // Only the last four read the context by computed paths.
        assert_eq!(pruned, sources.len() - 4);
        assert_eq!(
            t.reads(["k0", "k8"]),
            Some(vec![
                vec!["body".to_string(), "after".to_string()],
                vec!["body".to_string(), "commits".to_string()],
            ])
        );
        assert_eq!(t.reads(["k0", "k19"]), None);
        assert_eq!(t.reads(["k0", "unknown"]), None);
    }

    #[test]
    fn renders_event_fields_and_dependency_events() {
        assert_eq!(render("{{body.after}}").unwrap(), "0123456789abcdef");
        assert_eq!(render("{{push.body.ref}}").unwrap(), "refs/heads/Main");
        assert_eq!(render("{{headers.x-github-event}}").unwrap(), "push");
        assert_eq!(render("{{id}}/{{source}}").unwrap(), "delivery-1/github");
        assert_eq!(render("{{body.commits.0.id}}").unwrap(), "a");
        // Not HTML-escaped.
        assert_eq!(
            render("{{body.evil}}").unwrap(),
            "x\n  injected: true\n\"}{"
        );
    }

    #[test]
    fn strict_missing_field_is_an_error() {
        let err = render("{{body.nope}}").unwrap_err();
        assert!(err.contains("body.nope"), "{err}");
        assert!(render("{{lower body.nope}}").is_err());
    }

    #[test]
    fn helpers() {
        assert_eq!(render("{{default body.nope \"dflt\"}}").unwrap(), "dflt");
        assert_eq!(render("{{default body.n \"dflt\"}}").unwrap(), "3");
        assert_eq!(render("{{lower body.ref}}").unwrap(), "refs/heads/main");
        assert_eq!(render("{{upper headers.x-github-event}}").unwrap(), "PUSH");
        assert_eq!(render("{{trunc body.after 7}}").unwrap(), "0123456");
        assert_eq!(render("{{json body.commits}}").unwrap(), r#"[{"id":"a"}]"#);
        assert_eq!(
            render("{{replace body.ref \"refs/heads/\" \"\"}}").unwrap(),
            "Main"
        );
        assert!(render("{{trunc body.after \"x\"}}").is_err());
    }

    #[test]
    fn bad_template_syntax_is_rejected_at_compile() {
        let mut t = Templates::default();
        assert!(t.add("k", "{{body.after").is_err());
        assert!(t.add("k", "{{#if x}}no end").is_err());
    }

    #[test]
    fn insert_creates_objects_and_indexes_arrays() {
        let mut doc =
            json!({"spec": {"arguments": {"parameters": [{"name": "a", "value": "old"}]}}});
        let p = |s: &str| parse_dest(s).unwrap();
        insert(
            &mut doc,
            &p("spec.arguments.parameters.0.value"),
            json!("new"),
        )
        .unwrap();
        insert(
            &mut doc,
            &p("spec.arguments.parameters.1"),
            json!({"name": "b"}),
        )
        .unwrap();
        insert(&mut doc, &p("metadata.labels.x"), json!("y")).unwrap();
        assert_eq!(doc["spec"]["arguments"]["parameters"][0]["value"], "new");
        assert_eq!(doc["spec"]["arguments"]["parameters"][1]["name"], "b");
        assert_eq!(doc["metadata"]["labels"]["x"], "y");
        insert(&mut doc, &p("spec.env.0.name"), json!("A")).unwrap();
        assert_eq!(doc["spec"]["env"], json!([{"name": "A"}]));
        assert!(insert(&mut doc, &p("spec.arguments.parameters.5.value"), json!(1)).is_err());
        assert!(insert(&mut doc, &p("metadata.labels.x.y"), json!(1)).is_err());
        assert!(insert(&mut doc, &p("spec.arguments.parameters.x"), json!(1)).is_err());
        assert!(parse_dest("metadata.name").is_err());
        assert!(parse_dest("a..b").is_err());
    }

    #[test]
    fn argo_braces_survive_and_injection_stays_a_string() {
        // The manifest is data, not a template: Argo's syntax is untouched.
        let mut wf = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
            "spec": {"entrypoint": "main", "templates": [{"name": "main",
              "container": {"image": "alpine", "args": ["{{inputs.parameters.msg}}"]}}]}});
        let e = event();
        let mut t = Templates::default();
        t.add("k", "{{body.evil}}").unwrap();
        let v = t.render("k", &context(&e, &[])).unwrap();
        set_argument(&mut wf, "msg", &v).unwrap();
        assert_eq!(
            wf["spec"]["templates"][0]["container"]["args"][0],
            "{{inputs.parameters.msg}}"
        );
        // The hostile value is one string; no `injected` key appeared anywhere.
        assert_eq!(
            wf["spec"]["arguments"]["parameters"][0]["value"],
            "x\n  injected: true\n\"}{"
        );
        let yaml = serde_yaml_ng::to_string(&wf).unwrap();
        let back: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(back, wf);
        assert!(back.pointer("/spec/arguments/injected").is_none());
        // set_argument replaces an existing value rather than duplicating it.
        set_argument(&mut wf, "msg", "second").unwrap();
        assert_eq!(
            wf["spec"]["arguments"]["parameters"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    fn key(sensor: &str, trigger: &str, ids: &[&str]) -> String {
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        event_key(sensor, trigger, &ids)
    }

    #[test]
    fn names_are_deterministic_and_dns_valid() {
        let a = object_name("retrain", &key("s", "retrain", &["d1"]));
        assert_eq!(a, object_name("retrain", &key("s", "retrain", &["d1"])));
        assert_ne!(a, object_name("retrain", &key("s", "retrain", &["d2"])));
        assert_ne!(a, object_name("retrain", &key("s2", "retrain", &["d1"])));
        assert_ne!(a, object_name("retrain", &key("s", "other", &["d1"])));
        // Separator matters: ("ab","c") and ("a","bc") differ.
        assert_ne!(key("ab", "c", &[]), key("a", "bc", &[]));
        assert_eq!(
            a.len() - "retrain-".len(),
            NAME_HASH_HEX,
            "80 bits of hash in the name"
        );
        let dns = regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap();
        for prefix in [
            "retrain",
            "Retrain_Model!!",
            "x".repeat(100).as_str(),
            "---",
            "ÜBER-model-",
            "",
        ] {
            let n = object_name(prefix, &key("s", "t", &["id"]));
            assert!(n.len() <= 63, "{n}");
            assert!(dns.is_match(&n), "{n} is not DNS-1123");
        }
        assert!(object_name("Retrain_Model", &key("s", "t", &[])).starts_with("retrain-model-"));
    }

    #[test]
    fn finalize_names_labels_and_annotates() {
        let mut obj = json!({"kind": "Workflow", "metadata": {"generateName": "train-"}});
        let mut d1 = Event::new("gh", b"", json!({}));
        d1.id = "d1".into();
        let name = finalize(&mut obj, "retrain-on-push", "retrain", &[&d1], Some("ml"));
        assert!(name.starts_with("train-"));
        assert_eq!(obj["metadata"]["name"], name);
        assert!(obj["metadata"].get("generateName").is_none());
        assert_eq!(obj["metadata"]["namespace"], "ml");
        assert_eq!(obj["metadata"]["labels"][LABEL_SENSOR], "retrain-on-push");
        assert_eq!(obj["metadata"]["annotations"][ANNOTATION_EVENT_ID], "d1");
        let key = obj["metadata"]["annotations"][ANNOTATION_EVENT_KEY]
            .as_str()
            .unwrap();
        assert_eq!(key.len(), 64);
        assert!(name.ends_with(&key[..NAME_HASH_HEX]));
        // The same id from another source is another event.
        let mut other = d1.clone();
        other.source = "gl".into();
        let mut obj2 = json!({"kind": "Workflow", "metadata": {"generateName": "train-"}});
        assert_ne!(
            finalize(
                &mut obj2,
                "retrain-on-push",
                "retrain",
                &[&other],
                Some("ml")
            ),
            name
        );
        let mut fixed = json!({"metadata": {"name": "fixed", "namespace": "x"}});
        assert_eq!(finalize(&mut fixed, "s", "t", &[&d1], Some("ml")), "fixed");
        assert!(
            fixed["metadata"]["annotations"]
                .get(ANNOTATION_EVENT_KEY)
                .is_none(),
            "a fixed name is a singleton: a second event finds it `existing`"
        );
        assert_eq!(fixed["metadata"]["namespace"], "x");
    }

    #[test]
    fn unknown_helpers_are_load_errors_wherever_they_hide() {
        let add = |src: &str| Templates::default().add("k", src);
        for ok in [
            "{{body.ref}}",
            "{{trunc body.ref 3}}",
            "{{default body.x \"d\"}}",
            "{{#if body.a}}{{lower body.b}}{{else}}{{upper body.c}}{{/if}}",
            "{{upper (replace body.a \"-\" \"_\")}}",
        ] {
            assert!(add(ok).is_ok(), "{ok}");
        }
        for bad in [
            "{{truncate body.ref 3}}",
            "{{upper (truncate body.ref 3)}}",
            "{{#each body.l}}{{truncate this 2}}{{/each}}",
            "{{#if body.a}}x{{else}}{{truncate body.b 1}}{{/if}}",
        ] {
            let e = add(bad).unwrap_err().to_string();
            assert!(e.contains("unknown helper `truncate`"), "{bad}: {e}");
        }
    }
}
