//! Reading and compiling sensor files. Everything a sensor can get wrong is
//! found here, at load, and reported with file, document index and field.
//!
//! Longer than most files: about 240 of its lines are unit tests, one per
//! kind of mistake a sensor file can hold; the rest is one pass per level
//! (file → document → dependency → trigger → manifest), each a function,
//! so that every error carries the same `file`/`doc`/field context.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::catalog::SourceCatalog;
use super::condition::Condition;
use super::filter::Filter;
use super::render::{self, Templates};
use super::spec::{DependencySpec, SensorDoc, TriggerSpec, WorkflowSpec, API_VERSION, KIND};
use super::{Dependency, Param, Sensor, SensorSet, Trigger};
use crate::event::ROOTS;

pub const DEFAULT_WINDOW: Duration = Duration::from_secs(600);

/// One problem in one sensor document.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: document {doc}: {field}: {message}", file.display())]
pub struct LoadError {
    pub file: PathBuf,
    /// 1-based index of the YAML document in the file.
    pub doc: usize,
    /// Where in the document (`spec.triggers[0].when`), or `-` for the file.
    pub field: String,
    pub message: String,
}

/// Every problem found (loading does not stop at the first).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

/// Sensor files under `path`: the file itself, or every `*.yaml`/`*.yml`
/// directly in the directory, sorted by name.
pub fn sensor_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Loads and compiles every sensor in `paths` (files or directories).
/// `sources` are the sources declared in `tripline.yaml` (an open catalog
/// accepts any name: `tripline test` on a lone sensor file).
pub fn load(paths: &[PathBuf], sources: &SourceCatalog) -> Result<SensorSet, LoadErrors> {
    let mut errors = Vec::new();
    let mut templates = Templates::default();
    let mut sensors: Vec<Sensor> = Vec::new();
    let mut seen_names: HashSet<String> = HashSet::new();
    let mut warnings: Vec<String> = Vec::new();
    for path in paths {
        let files = match sensor_files(path) {
            Ok(f) => f,
            Err(e) => {
                errors.push(file_error(path, format!("cannot read: {e}")));
                continue;
            }
        };
        for file in files {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(file_error(&file, format!("cannot read: {e}")));
                    continue;
                }
            };
            for (i, de) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
                let doc = i + 1;
                let mut ctx = DocCtx {
                    file: &file,
                    doc,
                    errors: &mut errors,
                    warnings: &mut warnings,
                };
                let value = match Value::deserialize(de) {
                    Ok(Value::Null) => continue, // empty document (`---` at the end)
                    Ok(v) => v,
                    Err(e) => {
                        ctx.err("-", e.to_string());
                        // A YAML syntax error ends the stream.
                        break;
                    }
                };
                if let Some(kind) = super::argo::argo_kind(&value) {
                    let at = |field: &str| format!("{}: document {doc}: {field}", file.display());
                    if kind != "Sensor" {
                        ctx.warnings.push(at(&format!(
                            "{kind} ignored here; run 'tripline import' to turn it into tripline.yaml sources"
                        )));
                        continue;
                    }
                    let compiled = super::argo::compile::compile(&value, &file, sources);
                    for (field, message) in compiled.warnings {
                        ctx.warnings.push(format!("{}: {message}", at(&field)));
                    }
                    for (field, message) in compiled.errors {
                        ctx.err(&field, message);
                    }
                    if let Some(s) = compiled.sensor {
                        if !seen_names.insert(s.name.clone()) {
                            ctx.err(
                                "metadata.name",
                                format!("sensor `{}` is defined twice", s.name),
                            );
                        } else {
                            sensors.push(s);
                        }
                    }
                    continue;
                }
                let parsed: Result<SensorDoc, _> = serde_path_to_error::deserialize(&value);
                let sensor_doc = match parsed {
                    Ok(d) => d,
                    Err(e) => {
                        let field = e.path().to_string();
                        ctx.err(
                            if field == "." { "-" } else { &field },
                            e.into_inner().to_string(),
                        );
                        continue;
                    }
                };
                if let Some(s) = compile(&sensor_doc, &mut ctx, &mut templates, sources) {
                    if !seen_names.insert(s.name.clone()) {
                        ctx.err(
                            "metadata.name",
                            format!("sensor `{}` is defined twice", s.name),
                        );
                    } else {
                        sensors.push(s);
                    }
                }
            }
        }
    }
    if errors.is_empty() {
        let mut set = SensorSet::new(sensors, templates);
        set.warnings = warnings;
        Ok(set)
    } else {
        Err(LoadErrors(errors))
    }
}

fn file_error(file: &Path, message: String) -> LoadError {
    LoadError {
        file: file.to_path_buf(),
        doc: 0,
        field: "-".into(),
        message,
    }
}

struct DocCtx<'a> {
    file: &'a Path,
    doc: usize,
    errors: &'a mut Vec<LoadError>,
    warnings: &'a mut Vec<String>,
}

impl DocCtx<'_> {
    fn err(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(LoadError {
            file: self.file.to_path_buf(),
            doc: self.doc,
            field: field.to_string(),
            message: message.into(),
        });
    }
}

/// A native `filters:` compiled, or its error recorded (the error text
/// starts with its own location).
fn native(spec: &super::filter::FilterSpec, at: &str, ctx: &mut DocCtx) -> Option<Filter> {
    match Filter::compile(spec, &format!("{at}.filters")) {
        Ok(f) => Some(f),
        Err(e) => {
            let text = e.to_string();
            let (field, msg) = text.split_once(": ").unwrap_or((at, &text));
            ctx.err(field, msg.to_string());
            None
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn compile(
    doc: &SensorDoc,
    ctx: &mut DocCtx,
    templates: &mut Templates,
    sources: &SourceCatalog,
) -> Option<Sensor> {
    let before = ctx.errors.len();
    if doc.api_version != API_VERSION {
        ctx.err(
            "apiVersion",
            format!("expected `{API_VERSION}`, got `{}`", doc.api_version),
        );
    }
    if doc.kind != KIND {
        ctx.err("kind", format!("expected `{KIND}`, got `{}`", doc.kind));
    }
    let name = doc.metadata.name.clone();
    if !valid_name(&name) {
        ctx.err(
            "metadata.name",
            format!("`{name}` must be a DNS label: lowercase letters, digits and `-`, at most 63"),
        );
    }
    let spec = &doc.spec;
    if spec.dependencies.is_empty() {
        ctx.err(
            "spec.dependencies",
            "a sensor needs at least one dependency",
        );
    }
    if spec.triggers.is_empty() {
        ctx.err("spec.triggers", "a sensor needs at least one trigger");
    }

    let mut dependencies = Vec::new();
    let mut dep_names: Vec<&str> = Vec::new();
    for (i, d) in spec.dependencies.iter().enumerate() {
        let at = format!("spec.dependencies[{i}]");
        if d.name.is_empty()
            || !d
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            ctx.err(
                &format!("{at}.name"),
                format!("`{}` must be letters, digits, `_` or `-`", d.name),
            );
        } else if ROOTS.contains(&d.name.as_str()) {
            ctx.err(
                &format!("{at}.name"),
                format!(
                    "`{}` is reserved (templates use it for the event's own field)",
                    d.name
                ),
            );
        } else if dep_names.contains(&d.name.as_str()) {
            ctx.err(
                &format!("{at}.name"),
                format!("dependency `{}` is defined twice", d.name),
            );
        }
        dep_names.push(&d.name);
        if !sources.accepts(&d.source) {
            let list: Vec<&str> = sources.names().collect();
            ctx.err(
                &format!("{at}.source"),
                format!(
                    "unknown source `{}` (tripline.yaml declares: {})",
                    d.source,
                    list.join(", ")
                ),
            );
        }
        let filter = match (&d.filters, &d.argo) {
            (Some(_), Some(a)) if a.filters.is_some() || a.filters_logical_operator.is_some() => {
                ctx.err(
                    &format!("{at}.argo.filters"),
                    "give native `filters` or `argo.filters`, not both (an `argo:` block without filters may stand beside native `filters`: it shapes the event Argo parameters read)",
                );
                None
            }
            (_, Some(a)) => {
                let spec = match &a.filters {
                    None => Ok(None),
                    Some(v) => {
                        serde_json::from_value::<super::argo::filter::FiltersSpec>(v.clone())
                            .map(Some)
                    }
                };
                match spec {
                    Ok(spec) => match super::argo::filter::DependencyFilter::compile(
                        &a.event_source_name,
                        &a.event_name,
                        spec.as_ref(),
                        a.filters_logical_operator.as_deref(),
                    )
                    .and_then(|f| match &a.transform {
                        Some(t) => f.with_transform(t),
                        None => Ok(f),
                    }) {
                        Ok(f) => {
                            let argo = Filter::Argo(std::sync::Arc::new(
                                f.with_source(sources.argo(&d.source)),
                            ));
                            // Native filters beside the binding: both must pass.
                            match d.filters.as_ref().map(|f| native(f, &at, ctx)) {
                                None => Some(argo),
                                Some(Some(native)) => Some(Filter::All(vec![argo, native])),
                                Some(None) => None,
                            }
                        }
                        Err((field, message)) => {
                            ctx.err(&format!("{at}.argo.{field}"), message);
                            None
                        }
                    },
                    Err(e) => {
                        ctx.err(&format!("{at}.argo.filters"), e.to_string());
                        None
                    }
                }
            }
            (None, None) => None,
            (Some(f), None) => native(f, &at, ctx),
        };
        let key = d.key.as_ref().map(|src| {
            let key = format!("{name}\u{0}dependency\u{0}{}\u{0}key", d.name);
            if let Err(e) = templates.add(&key, src) {
                ctx.err(&format!("{at}.key"), e.to_string());
            }
            key
        });
        dependencies.push(Dependency {
            name: d.name.clone(),
            source: d.source.clone(),
            filter,
            key,
        });
    }

    let mut triggers = Vec::new();
    let mut trigger_names: Vec<&str> = Vec::new();
    for (i, t) in spec.triggers.iter().enumerate() {
        let at = format!("spec.triggers[{i}]");
        if !valid_name(&t.name) {
            ctx.err(
                &format!("{at}.name"),
                format!(
                    "`{}` must be a DNS label: lowercase letters, digits and `-`",
                    t.name
                ),
            );
        } else if trigger_names.contains(&t.name.as_str()) {
            ctx.err(
                &format!("{at}.name"),
                format!("trigger `{}` is defined twice", t.name),
            );
        }
        trigger_names.push(&t.name);
        if let Some(tr) = compile_trigger(
            &name,
            t,
            &at,
            (&spec.dependencies, &dependencies),
            &dep_names,
            ctx,
            templates,
        ) {
            triggers.push(tr);
        }
    }

    (ctx.errors.len() == before).then(|| Sensor {
        name,
        file: ctx.file.to_path_buf(),
        dependencies,
        triggers,
        window: spec.correlation_window.unwrap_or(DEFAULT_WINDOW),
    })
}

fn compile_trigger(
    sensor: &str,
    t: &TriggerSpec,
    at: &str,
    (dep_specs, compiled_deps): (&[DependencySpec], &[Dependency]),
    dep_names: &[&str],
    ctx: &mut DocCtx,
    templates: &mut Templates,
) -> Option<Trigger> {
    let before = ctx.errors.len();
    let (when, condition) = match &t.when {
        Some(w) => match Condition::parse(w, dep_names) {
            Ok(c) => (w.clone(), c),
            Err(e) => {
                ctx.err(&format!("{at}.when"), e.to_string());
                (w.clone(), Condition::all_of(1))
            }
        },
        None => (
            dep_names.join(" && "),
            Condition::all_of(dep_names.len().max(1)),
        ),
    };
    let workflow_given = t.workflow.manifest.is_some()
        || t.workflow.file.is_some()
        || t.workflow.workflow_template_ref.is_some()
        || t.workflow.argo.is_some();
    let mut fetch = None;
    let manifest = match (&t.log, &t.workflow.argo) {
        (Some(_), _) if workflow_given => {
            ctx.err(&format!("{at}.log"), "give `workflow` or `log`, not both");
            None
        }
        (Some(_), _) => Some(Value::Null),
        (None, Some(argo)) if workflow_given_once(&t.workflow) => {
            let out = super::argo::compile::native_workflow(argo, sensor, &t.name, ctx.file);
            for (field, message) in out.warnings {
                let w = format!(
                    "{}: document {}: {at}.workflow.argo.{field}: {message}",
                    ctx.file.display(),
                    ctx.doc
                );
                ctx.warnings.push(w);
            }
            for (field, message) in out.errors {
                ctx.err(&format!("{at}.workflow.argo.{field}"), message);
            }
            out.resource.map(|(action, manifest)| {
                fetch = Some(action);
                manifest
            })
        }
        (None, _) => build_manifest(&t.workflow, &format!("{at}.workflow"), ctx),
    };
    let is_workflow = manifest.as_ref().is_some_and(|m| {
        m["kind"] == "Workflow"
            && m["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("argoproj.io/"))
    });

    let mut parameters = Vec::new();
    let mut param_names: Vec<&str> = Vec::new();
    for (j, p) in t.parameters.iter().enumerate() {
        let pat = format!("{at}.parameters[{j}]");
        if p.name.is_empty() {
            ctx.err(&format!("{pat}.name"), "a parameter needs a name");
        } else if param_names.contains(&p.name.as_str()) {
            ctx.err(
                &format!("{pat}.name"),
                format!("parameter `{}` is defined twice", p.name),
            );
        }
        param_names.push(&p.name);
        if let Some(src) = &p.argo {
            if !p.value.is_empty() || p.default.is_some() {
                ctx.err(
                    &format!("{pat}.argo"),
                    "give `value` or `argo`, not both (an Argo source has its own `value` default)",
                );
                continue;
            }
            let Some(dest) = &p.dest else {
                ctx.err(&format!("{pat}.dest"), "required with `argo`");
                continue;
            };
            let spec = serde_json::from_value::<super::argo::params::ParamSpec>(
                json!({"src": src, "dest": dest, "operation": p.operation}),
            );
            let param = match spec {
                // Native sensors are strict: a template that cannot parse is an
                // error here, not upstream's silent fallback.
                Ok(spec) => super::argo::params::Param::compile(&spec).and_then(|p| match &p.warning {
                    Some((field, message)) => Err((field.clone(), message.replace("ignored: the key or the default is used, as upstream does", "remove it (upstream would fall back to the key or the default at every event)"))),
                    None => Ok(p),
                }),
                Err(e) => Err(("argo".to_string(), e.to_string())),
            };
            match param {
                Ok(param) => {
                    let dependency = compiled_deps
                        .iter()
                        .find(|d| d.name == param.dependency)
                        .and_then(|d| d.filter.as_ref()?.argo().cloned());
                    match dependency {
                        Some(dependency) => parameters.push(Param {
                            name: p.name.clone(),
                            template: String::new(),
                            default: None,
                            dest: None,
                            argo: Some(super::ArgoParam {
                                param: std::sync::Arc::new(param),
                                dependency,
                            }),
                        }),
                        None => ctx.err(
                            &format!("{pat}.argo.dependencyName"),
                            format!("`{}` must be a dependency with an `argo:` block (its event is read the Argo way)", param.dependency),
                        ),
                    }
                }
                Err((field, message)) => ctx.err(
                    &format!(
                        "{pat}.{}",
                        if field == "argo" {
                            "argo".to_string()
                        } else {
                            format!("argo.{field}")
                        }
                    ),
                    message,
                ),
            }
            continue;
        }
        if p.operation.is_some() {
            ctx.err(&format!("{pat}.operation"), "goes with `argo`");
        }
        if p.value.is_empty() {
            ctx.err(
                &format!("{pat}.value"),
                "required (a template, or `argo:` for an Argo parameter source)",
            );
        }
        let key = format!("{sensor}/{}/{}", t.name, j);
        if let Err(e) = templates.add(&key, &p.value) {
            ctx.err(&format!("{pat}.value"), e.to_string());
        }
        let dest = match &p.dest {
            Some(d) => match render::parse_dest(d) {
                Ok(segs) => {
                    // Dry run against the manifest: a dest that cannot be placed is a load error.
                    if let Some(m) = &manifest {
                        if let Err(reason) = render::insert(&mut m.clone(), &segs, json!("")) {
                            ctx.err(&format!("{pat}.dest"), reason);
                        }
                    }
                    Some(segs)
                }
                Err(reason) => {
                    ctx.err(&format!("{pat}.dest"), format!("bad path `{d}`: {reason}"));
                    None
                }
            },
            None => {
                if manifest.is_some() && !is_workflow {
                    ctx.err(&format!("{pat}.dest"), "required: the object is not an Argo Workflow, so there is no argument to set by name");
                }
                None
            }
        };
        parameters.push(Param {
            argo: None,
            name: p.name.clone(),
            template: key,
            default: p.default.clone(),
            dest,
        });
    }

    let retry = t.retry.clone().unwrap_or_default();
    if retry.attempts == 0 {
        ctx.err(&format!("{at}.retry.attempts"), "must be at least 1");
    }
    if let Some(rl) = &t.rate_limit {
        if rl.per_minute == 0 {
            ctx.err(&format!("{at}.rateLimit.perMinute"), "must be at least 1");
        }
        if rl.burst == Some(0) {
            ctx.err(&format!("{at}.rateLimit.burst"), "must be at least 1");
        }
    }
    if let Some(ns) = &t.namespace {
        if !valid_name(ns) {
            ctx.err(
                &format!("{at}.namespace"),
                format!("`{ns}` is not a valid namespace name"),
            );
        } else if !t.allowed_namespaces.is_empty() && !t.allowed_namespaces.contains(ns) {
            ctx.err(
                &format!("{at}.namespace"),
                format!("`{ns}` is not in `allowedNamespaces`"),
            );
        }
    }
    for (i, ns) in t.allowed_namespaces.iter().enumerate() {
        if !valid_name(ns) {
            ctx.err(
                &format!("{at}.allowedNamespaces[{i}]"),
                format!("`{ns}` is not a valid namespace name"),
            );
        }
    }
    let deps = condition.deps();
    if deps.len() > 1 {
        let keyed = deps
            .iter()
            .filter(|d| dep_specs.get(**d).is_some_and(|s| s.key.is_some()))
            .count();
        if keyed != 0 && keyed != deps.len() {
            ctx.err(
                &format!("{at}.when"),
                format!(
                    "`{when}` correlates dependencies of which only some have a `key`: give every one a key (events pair when their keys are equal), or none"
                ),
            );
        }
    }
    if ctx.errors.len() != before {
        return None;
    }
    let mut resets = Vec::new();
    if let Some(a) = &t.argo {
        for (j, r) in a.conditions_reset.iter().enumerate() {
            let parsed = serde_json::from_value::<super::argo::cron::ResetSpec>(r.clone())
                .map_err(|e| e.to_string())
                .and_then(|spec| spec.by_time.ok_or_else(|| "byTime is required".to_string()))
                .and_then(|by_time| super::argo::cron::Cron::parse(&by_time));
            match parsed {
                Ok(c) => resets.push(std::sync::Arc::new(c)),
                Err(e) => ctx.err(&format!("{at}.argo.conditionsReset[{j}]"), e),
            }
        }
    }
    let definition = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(when.as_bytes());
        for d in &deps {
            if let Some(spec) = dep_specs.get(*d) {
                h.update([0]);
                h.update(spec.name.as_bytes());
                h.update([0]);
                h.update(spec.source.as_bytes());
                h.update([0]);
                h.update(spec.key.as_deref().unwrap_or("").as_bytes());
            }
        }
        hex::encode(&h.finalize()[..8])
    };
    Some(Trigger {
        name: t.name.clone(),
        when,
        condition,
        deps,
        manifest: manifest?,
        parameters,
        namespace: t.namespace.clone(),
        allowed_namespaces: t.allowed_namespaces.clone(),
        retry,
        rate_limit: t.rate_limit.clone(),
        definition,
        resets,
        action: match (&t.log, fetch) {
            (Some(l), _) => crate::sensor::Action::Log {
                interval: Duration::from_secs(l.interval_seconds),
            },
            (None, Some(action)) => action,
            (None, None) => crate::sensor::Action::Submit,
        },
        uses_dependency_names: t
            .parameters
            .iter()
            .any(|p| dep_names.iter().any(|d| p.value.contains(&format!("{d}.")))),
        reads: None,
    })
}

fn workflow_given_once(w: &WorkflowSpec) -> bool {
    [
        w.manifest.is_some(),
        w.file.is_some(),
        w.workflow_template_ref.is_some(),
        w.argo.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count()
        == 1
}

/// Turns `workflow:` into the base object.
fn build_manifest(w: &WorkflowSpec, at: &str, ctx: &mut DocCtx) -> Option<Value> {
    let given: Vec<&str> = [
        ("manifest", w.manifest.is_some()),
        ("file", w.file.is_some()),
        ("workflowTemplateRef", w.workflow_template_ref.is_some()),
        ("argo", w.argo.is_some()),
    ]
    .into_iter()
    .filter_map(|(n, set)| set.then_some(n))
    .collect();
    if given.len() != 1 {
        ctx.err(
            at,
            format!(
                "needs exactly one of manifest, file, workflowTemplateRef, argo; found {}",
                if given.is_empty() {
                    "none".into()
                } else {
                    given.join(", ")
                }
            ),
        );
        return None;
    }
    if w.workflow_template_ref.is_none() && (w.entrypoint.is_some() || w.cluster_scope) {
        ctx.err(
            at,
            "`entrypoint` and `clusterScope` go with `workflowTemplateRef`",
        );
        return None;
    }
    let manifest = if let Some(name) = &w.workflow_template_ref {
        let mut spec = json!({"workflowTemplateRef": {"name": name}});
        if w.cluster_scope {
            spec["workflowTemplateRef"]["clusterScope"] = json!(true);
        }
        if let Some(ep) = &w.entrypoint {
            spec["entrypoint"] = json!(ep);
        }
        json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Workflow",
            "metadata": {"generateName": format!("{name}-")},
            "spec": spec,
        })
    } else if let Some(m) = &w.manifest {
        m.clone()
    } else {
        let rel = w.file.as_deref().unwrap_or_default();
        let path = ctx.file.parent().unwrap_or(Path::new(".")).join(rel);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                ctx.err(
                    &format!("{at}.file"),
                    format!("cannot read {}: {e}", path.display()),
                );
                return None;
            }
        };
        match serde_yaml_ng::from_str::<Value>(&text) {
            Ok(v) => v,
            Err(e) => {
                ctx.err(&format!("{at}.file"), format!("{}: {e}", path.display()));
                return None;
            }
        }
    };
    let field = if w.file.is_some() {
        format!("{at}.file")
    } else {
        format!("{at}.manifest")
    };
    if !manifest.is_object() {
        ctx.err(&field, "the object must be a YAML map");
        return None;
    }
    for key in ["apiVersion", "kind"] {
        if manifest[key].as_str().is_none_or(str::is_empty) {
            ctx.err(&field, format!("the object has no `{key}`"));
            return None;
        }
    }
    Some(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        p
    }

    fn sources() -> SourceCatalog {
        ["github", "events"].into_iter().collect()
    }

    const GOOD: &str = r#"
apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {name: retrain}
spec:
  dependencies:
    - name: push
      source: github
      filters:
        all:
          - {path: headers.X-GitHub-Event, equals: push}
  triggers:
    - name: train
      workflow: {workflowTemplateRef: train-model}
      parameters:
        - {name: revision, value: "{{body.after}}"}
"#;

    fn errors_of(text: &str) -> Vec<LoadError> {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "s.yaml", text);
        match load(&[f], &sources()) {
            Ok(_) => vec![],
            Err(e) => e.0,
        }
    }

    fn one_error(text: &str) -> LoadError {
        let errs = errors_of(text);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        errs.into_iter().next().unwrap()
    }

    #[test]
    fn a_good_sensor_loads_and_builds_a_template_ref_workflow() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", GOOD);
        write(dir.path(), "notes.txt", "ignored");
        let set = load(&[dir.path().to_path_buf()], &sources()).unwrap();
        assert_eq!(set.sensors.len(), 1);
        let t = &set.sensors[0].triggers[0];
        assert_eq!(
            t.manifest["spec"]["workflowTemplateRef"]["name"],
            "train-model"
        );
        assert_eq!(t.when, "push");
        assert_eq!(set.listeners("github"), 1);
        assert_eq!(set.listeners("events"), 0);
    }

    #[test]
    fn multi_document_files_and_error_positions() {
        let text = format!(
            "{GOOD}---\n{}",
            GOOD.replace("name: retrain}", "name: other}")
                .replace("source: github", "source: nope")
        );
        let e = one_error(&text);
        assert_eq!(e.doc, 2);
        assert_eq!(e.field, "spec.dependencies[0].source");
        assert!(e.message.contains("unknown source `nope`"), "{}", e.message);
        assert!(e
            .to_string()
            .contains("s.yaml: document 2: spec.dependencies[0].source: unknown source"));
    }

    #[test]
    fn each_kind_of_mistake_is_named() {
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "unknown field",
                "metadata: {name: retrain}",
                "metadata: {name: retrain, nme: x}",
                "metadata.nme",
            ),
            (
                "unknown spec field",
                "  triggers:",
                "  trigers: []\n  triggers:",
                "spec.trigers",
            ),
            (
                "wrong apiVersion",
                "tripline.dev/v1alpha1",
                "v1",
                "apiVersion",
            ),
            (
                "bad name",
                "name: retrain}",
                "name: Retrain_X}",
                "metadata.name",
            ),
            (
                "native filters beside Argo filters",
                "      filters:\n        all:",
                "      argo: {eventSourceName: e, eventName: n, filters: {data: []}}\n      filters:\n        all:",
                "spec.dependencies[0].argo.filters",
            ),
            (
                "a bad native filter beside an Argo binding",
                "      filters:\n        all:\n          - {path: headers.X-GitHub-Event, equals: push}",
                "      argo: {eventSourceName: e, eventName: n}\n      filters:\n        all:\n          - {path: headers.X-GitHub-Event, equals: push, prefix: p}",
                "spec.dependencies[0].filters.all[0]",
            ),
            (
                "bad path",
                "headers.X-GitHub-Event",
                "header.X",
                "spec.dependencies[0].filters.all[0].path",
            ),
            (
                "bad filter op",
                "equals: push}",
                "equal: push}",
                "spec.dependencies[0].filters.all[0].equal",
            ),
            (
                "bad regex",
                "equals: push}",
                "matches: '('}",
                "spec.dependencies[0].filters.all[0].matches",
            ),
            (
                "bad CEL",
                "- {path: headers.X-GitHub-Event, equals: push}",
                "- {expr: 'body.a &&'}",
                "spec.dependencies[0].filters.all[0].expr",
            ),
            (
                "bad condition",
                "      workflow:",
                "      when: push &&\n      workflow:",
                "spec.triggers[0].when",
            ),
            (
                "unknown dep in condition",
                "      workflow:",
                "      when: push && data\n      workflow:",
                "spec.triggers[0].when",
            ),
            (
                "bad template",
                "{{body.after}}",
                "{{body.after",
                "spec.triggers[0].parameters[0].value",
            ),
            (
                "two targets",
                "{workflowTemplateRef: train-model}",
                "{workflowTemplateRef: x, file: y.yaml}",
                "spec.triggers[0].workflow",
            ),
            (
                "missing file",
                "{workflowTemplateRef: train-model}",
                "{file: nope.yaml}",
                "spec.triggers[0].workflow.file",
            ),
            (
                "manifest without kind",
                "{workflowTemplateRef: train-model}",
                "{manifest: {apiVersion: v1}}",
                "spec.triggers[0].workflow.manifest",
            ),
            (
                "dest required for non-workflows",
                "{workflowTemplateRef: train-model}",
                "{manifest: {apiVersion: batch/v1, kind: Job}}",
                "spec.triggers[0].parameters[0].dest",
            ),
            (
                "dest through a string",
                "value: \"{{body.after}}\"}",
                "value: \"{{body.after}}\", dest: spec.workflowTemplateRef.name.x}",
                "spec.triggers[0].parameters[0].dest",
            ),
            (
                "dest on the name",
                "value: \"{{body.after}}\"}",
                "value: \"{{body.after}}\", dest: metadata.name}",
                "spec.triggers[0].parameters[0].dest",
            ),
            (
                "reserved dep name",
                "- name: push\n",
                "- name: body\n",
                "spec.dependencies[0].name",
            ),
            (
                "zero attempts",
                "      parameters:",
                "      retry: {attempts: 0}\n      parameters:",
                "spec.triggers[0].retry.attempts",
            ),
        ];
        for (what, from, to, field) in cases {
            assert!(GOOD.contains(from), "{what}: fixture lacks {from}");
            let errs = errors_of(&GOOD.replacen(from, to, 1));
            assert!(
                errs.iter().any(|e| e.field == *field),
                "{what}: expected an error at {field}, got {errs:#?}"
            );
        }
    }

    #[test]
    fn yaml_syntax_errors_and_duplicates() {
        let e = one_error("apiVersion: [unclosed\n");
        assert_eq!(e.field, "-");
        assert!(e.message.contains("line"), "{}", e.message);
        let errs = errors_of(&format!("{GOOD}---\n{GOOD}"));
        assert!(errs
            .iter()
            .any(|e| e.doc == 2 && e.message.contains("defined twice")));
    }

    #[test]
    fn file_manifests_are_relative_to_the_sensor() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "job.yaml", "apiVersion: batch/v1\nkind: Job\nspec: {template: {spec: {containers: [{name: c, image: busybox}]}}}\n");
        let text = GOOD
            .replace("{workflowTemplateRef: train-model}", "{file: job.yaml}")
            .replace(
                "value: \"{{body.after}}\"}",
                "value: \"{{body.after}}\", dest: spec.template.spec.containers.0.args.0}",
            );
        let f = write(dir.path(), "s.yaml", &text);
        let set = load(&[f], &sources()).unwrap();
        assert_eq!(set.sensors[0].triggers[0].manifest["kind"], "Job");
    }
}
