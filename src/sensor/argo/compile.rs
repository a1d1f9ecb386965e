//! An Argo Events `Sensor` document → tripline's compiled [`Sensor`], so that
//! Argo sensors go through the same matching, correlation, rendering,
//! submission, replies and metrics as native ones (ARGO-COMPAT §1, §5, §6).
//! Parsing is tolerant like Go's `encoding/json`: an unknown field is a
//! warning naming its path, not an error. What is out of scope is a load
//! error naming the path and what is supported.

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::cron::{Cron, ResetSpec};
use super::fetch::{finish, valid_object_name, Fetch, FetchTrigger};
use super::filter::DependencyFilter;
use super::params::Param as ArgoParamSpec;
use super::spec::{fold_case, ArgoSensor, ResourceTrigger, TriggerWrap, OTHER_KINDS};
use crate::backoff::RetryPolicy;
use crate::sensor::catalog::SourceCatalog;
use crate::sensor::condition::Condition;
use crate::sensor::filter::Filter;
use crate::sensor::spec::RateLimitSpec;
use crate::sensor::{Action, ArgoParam, Dependency, Param, Sensor, Trigger};

/// How the warning for a dependency bound to an undeclared source starts.
pub const UNDECLARED: &str = "no source";

/// What compiling one document found.
pub struct Compiled {
    pub sensor: Option<Sensor>,
    /// `(field path, message)`.
    pub errors: Vec<(String, String)>,
    pub warnings: Vec<(String, String)>,
}

/// Compiles an Argo Sensor document. `sources`: the sources of
/// `tripline.yaml`, which dependencies bind to (ARGO-COMPAT §2.1).
pub fn compile(doc: &Value, file: &Path, sources: &SourceCatalog) -> Compiled {
    let mut errors = Vec::new();
    let mut doc = doc.clone();
    let mut warnings = fold_case(&mut doc);
    let parsed: Result<ArgoSensor, _> = serde_ignored::deserialize(&doc, |path| {
        let path = path.to_string();
        let hint = if path.ends_with("template.policy") || path.ends_with("template.atLeastOnce") {
            " (it belongs on the trigger, next to `template`; Argo ignores it here too)"
        } else {
            ""
        };
        warnings.push((path, format!("unknown field, ignored{hint}")));
    });
    let argo = match parsed {
        Ok(a) => a,
        Err(e) => {
            errors.push(("-".into(), e.to_string()));
            return Compiled {
                sensor: None,
                errors,
                warnings,
            };
        }
    };
    let mut err = |field: String, message: String| errors.push((field, message));
    let sensor_name = argo.metadata.name.clone();
    if sensor_name.is_empty() {
        err("metadata.name".into(), "required".into());
    }
    let spec = &argo.spec;
    if spec.replicas.is_some() {
        warnings.push((
            "spec.replicas".into(),
            "tripline scales via broker consumer groups; ignored".into(),
        ));
    }
    if spec.error_on_failed_round.is_some() {
        warnings.push((
            "spec.errorOnFailedRound".into(),
            "no sensor-level error state in tripline; ignored".into(),
        ));
    }
    let _ = (
        &spec.template,
        &spec.event_bus_name,
        &spec.revision_history_limit,
        &spec.logging_fields,
    );
    if spec.dependencies.is_empty() {
        err("spec.dependencies".into(), "at least one dependency".into());
    }
    if spec.triggers.is_empty() {
        err("spec.triggers".into(), "at least one trigger".into());
    }

    // Dependencies, bound to the source whose `argo:` block names them, else
    // to the one named `<eventSourceName>-<eventName>`.
    let mut dependencies = Vec::new();
    let mut filters: BTreeMap<String, Arc<DependencyFilter>> = BTreeMap::new();
    for (i, d) in spec.dependencies.iter().enumerate() {
        let at = format!("spec.dependencies[{i}]");
        if d.name.is_empty() || d.event_source_name.is_empty() || d.event_name.is_empty() {
            err(
                at.clone(),
                "`name`, `eventSourceName` and `eventName` are required".into(),
            );
            continue;
        }
        let Some(source) = sources.bind(&d.event_source_name, &d.event_name) else {
            let (e, n) = (&d.event_source_name, &d.event_name);
            err(
                at.clone(),
                format!(
                    "no tripline source for Argo event '{e}/{n}': declare a source named '{e}-{n}' (or with argo: {{eventSourceName: {e}, eventName: {n}}}); 'tripline import <eventsource.yaml>' writes them"
                ),
            );
            continue;
        };
        if !sources.declares(&source) {
            warnings.push((
                at.clone(),
                format!("{UNDECLARED} `{source}` declared: taken as a plain `type: http` source of that name"),
            ));
        }
        match DependencyFilter::compile(
            &d.event_source_name,
            &d.event_name,
            d.filters.as_ref(),
            d.filters_logical_operator.as_deref(),
        )
        .and_then(|f| match &d.transform {
            Some(t) => f.with_transform(t),
            None => Ok(f),
        }) {
            Ok(f) => {
                let f = Arc::new(f.with_source(sources.argo(&source)));
                filters.insert(d.name.clone(), f.clone());
                dependencies.push(Dependency {
                    name: d.name.clone(),
                    source,
                    filter: Some(Filter::Argo(f)),
                    key: None,
                });
            }
            Err((field, message)) => err(format!("{at}.{field}"), message),
        }
    }

    // Argo treats `-` and `_` in dependency names as the same character.
    let norm = |s: &str| s.replace('_', "-");
    let dep_names: Vec<String> = dependencies.iter().map(|d| norm(&d.name)).collect();
    let dep_refs: Vec<&str> = dep_names.iter().map(String::as_str).collect();
    let mut triggers = Vec::new();
    let mut trigger_names = HashSet::new();
    for (i, w) in spec.triggers.iter().enumerate() {
        let cx = TriggerCx {
            i,
            argo: &argo,
            sensor_name: &sensor_name,
            file,
            dep_names: &dep_names,
            dep_refs: &dep_refs,
            filters: &filters,
        };
        if let Some(t) = compile_trigger(w, &cx, &mut trigger_names, &mut errors, &mut warnings) {
            triggers.push(t);
        }
    }

    // Argo sensors keep correlation state until fired (no window), unless
    // the annotation says otherwise.
    let window = match argo
        .metadata
        .annotations
        .get("tripline.dev/correlation-window")
    {
        Some(w) => match humantime::parse_duration(w) {
            Ok(d) => d,
            Err(e) => {
                errors.push((
                    "metadata.annotations.tripline.dev/correlation-window".into(),
                    e.to_string(),
                ));
                Duration::from_secs(0)
            }
        },
        None => Duration::from_secs(100 * 365 * 24 * 3600),
    };
    let sensor = errors.is_empty().then(|| Sensor {
        name: sensor_name,
        file: file.to_path_buf(),
        dependencies,
        triggers,
        window,
    });
    Compiled {
        sensor,
        errors,
        warnings,
    }
}

/// What one trigger needs from the rest of its sensor.
struct TriggerCx<'a> {
    i: usize,
    argo: &'a ArgoSensor,
    sensor_name: &'a str,
    file: &'a Path,
    dep_names: &'a [String],
    dep_refs: &'a [&'a str],
    filters: &'a BTreeMap<String, Arc<DependencyFilter>>,
}

/// Compiles `spec.triggers[i]`; `None` when it has errors (pushed to `errors`).
fn compile_trigger(
    w: &TriggerWrap,
    cx: &TriggerCx<'_>,
    trigger_names: &mut HashSet<String>,
    errors: &mut Vec<(String, String)>,
    warnings: &mut Vec<(String, String)>,
) -> Option<Trigger> {
    let TriggerCx {
        i,
        argo,
        sensor_name,
        file,
        dep_names,
        dep_refs,
        filters,
    } = *cx;
    let mut err = |field: String, message: String| errors.push((field, message));
    let at = format!("spec.triggers[{i}]");
    let Some(t) = &w.template else {
        err(format!("{at}.template"), "required".into());
        return None;
    };
    if t.name.is_empty() || !trigger_names.insert(t.name.clone()) {
        err(
            format!("{at}.template.name"),
            "required and unique within the sensor".into(),
        );
        return None;
    }
    if w.dlq_trigger.is_some() {
        err(
            format!("{at}.dlqTrigger"),
            "not supported: tripline's dead-letter log records failures".into(),
        );
    }
    if w.policy.is_some() {
        warnings.push((
            format!("{at}.policy"),
            "ignored: tripline does not watch created objects".into(),
        ));
    }
    if w.at_least_once.is_some() {
        warnings.push((
            format!("{at}.atLeastOnce"),
            "tripline is always at-least-once with idempotent names".into(),
        ));
    }
    let mut resets = Vec::new();
    if let Some(r) = &t.conditions_reset {
        match serde_json::from_value::<Vec<ResetSpec>>(r.clone()) {
            Ok(list) => {
                for (j, spec) in list.iter().enumerate() {
                    let Some(by_time) = &spec.by_time else {
                        err(
                            format!("{at}.template.conditionsReset[{j}]"),
                            "byTime is required".into(),
                        );
                        return None;
                    };
                    match Cron::parse(by_time) {
                        Ok(c) => resets.push(Arc::new(c)),
                        Err(e) => err(format!("{at}.template.conditionsReset[{j}].byTime"), e),
                    }
                }
            }
            Err(e) => err(format!("{at}.template.conditionsReset"), e.to_string()),
        }
    }
    for k in t.other.keys() {
        if OTHER_KINDS.contains(&k.as_str()) {
            err(
                format!("{at}.template.{k}"),
                format!("trigger kind '{k}' is not supported (supported: k8s, argoWorkflow)"),
            );
        } else {
            warnings.push((
                format!("{at}.template.{k}"),
                "unknown field, ignored".into(),
            ));
        }
    }
    let when = t
        .conditions
        .as_deref()
        .filter(|c| !c.trim().is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| dep_names.join(" && "));
    let condition = match Condition::parse(&when.replace('_', "-"), dep_refs) {
        Ok(c) => c,
        Err(e) => {
            err(format!("{at}.template.conditions"), e.to_string());
            return None;
        }
    };
    let deps = condition.deps();
    let definition = format!("argo:{}:{}", when, dep_names.join(","));
    if let Some(log) = &t.log {
        if t.k8s.is_some() || t.argo_workflow.is_some() {
            err(
                format!("{at}.template"),
                "one trigger kind per template".into(),
            );
            return None;
        }
        let interval = log["intervalSeconds"].as_u64().unwrap_or(0);
        return Some(Trigger {
            name: t.name.clone(),
            when,
            condition,
            deps,
            manifest: Value::Null,
            parameters: Vec::new(),
            namespace: None,
            allowed_namespaces: Vec::new(),
            retry: RetryPolicy::default(),
            rate_limit: None,
            definition,
            resets,
            action: Action::Log {
                interval: Duration::from_secs(interval),
            },
            uses_dependency_names: false,
            reads: None,
        });
    }
    let (kind, rt) = match (&t.k8s, &t.argo_workflow) {
        (Some(k), None) => ("k8s", k),
        (None, Some(a)) => ("argoWorkflow", a),
        (Some(_), Some(_)) => {
            err(
                format!("{at}.template"),
                "one trigger kind per template (k8s and argoWorkflow both given)".into(),
            );
            return None;
        }
        (None, None) => {
            if t.other.keys().all(|k| !OTHER_KINDS.contains(&k.as_str())) {
                err(
                    format!("{at}.template"),
                    "no trigger kind (supported: k8s, argoWorkflow)".into(),
                );
            }
            return None;
        }
    };
    let tat = format!("{at}.template.{kind}");
    let (action, manifest) = trigger_resource(
        kind,
        rt,
        &tat,
        (sensor_name, &t.name),
        file,
        errors,
        warnings,
    )?;
    let mut err = |field: String, message: String| errors.push((field, message));

    // Template-level parameters first (upstream applies them to the trigger
    // template, then the resource-level ones to the resource), each moved
    // onto the resource it ends up changing.
    let mut moved = Vec::new();
    for (j, p) in w.parameters.iter().enumerate() {
        let pat = format!("{at}.parameters[{j}]");
        let dest = p.dest.as_str();
        match template_param_dest(kind, dest) {
            Ok(Some(d)) => {
                let mut p = p.clone();
                p.dest = d;
                moved.push((pat, p));
            }
            Ok(None) => warnings.push((
                format!("{pat}.dest"),
                format!("`{dest}` changes a trigger source tripline does not fetch; ignored"),
            )),
            Err(message) => err(format!("{pat}.dest"), message),
        }
    }
    let resource_params = rt
        .parameters
        .iter()
        .enumerate()
        .map(|(j, p)| (format!("{tat}.parameters[{j}]"), p.clone()));
    let mut parameters = Vec::new();
    for (j, (pat, p)) in moved.into_iter().chain(resource_params).enumerate() {
        match ArgoParamSpec::compile(&p) {
            Ok(param) => {
                if let Some((field, message)) = &param.warning {
                    warnings.push((format!("{pat}.{field}"), message.clone()));
                }
                let Some(dependency) = filters.get(&param.dependency).cloned() else {
                    err(
                        format!("{pat}.src.dependencyName"),
                        format!("no dependency named `{}`", param.dependency),
                    );
                    return None;
                };
                parameters.push(Param {
                    name: format!("{j}"),
                    template: String::new(),
                    default: None,
                    dest: None,
                    argo: Some(ArgoParam {
                        param: Arc::new(param),
                        dependency,
                    }),
                });
            }
            Err((field, message)) => err(format!("{pat}.{field}"), message),
        }
    }

    let retry = match &w.retry_strategy {
        None => RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        },
        Some(r) => RetryPolicy {
            attempts: match r.steps {
                None | Some(0) => 5,
                Some(n) => n,
            },
            backoff: r
                .duration
                .as_ref()
                .and_then(go_duration)
                .unwrap_or(Duration::from_secs(1)),
            ..RetryPolicy::default()
        },
    };
    let rate_limit = match &w.rate_limit {
        None => None,
        Some(r) => {
            let n = r.requests_per_unit.unwrap_or(1).max(1);
            match r.unit.as_deref().unwrap_or("Second") {
                "Second" => Some(RateLimitSpec {
                    per_minute: n.saturating_mul(60),
                    burst: None,
                }),
                "Minute" => Some(RateLimitSpec {
                    per_minute: n,
                    burst: None,
                }),
                "Hour" => {
                    warnings.push((
                        format!("{at}.rateLimit"),
                        "per Hour is rounded up to one per minute".into(),
                    ));
                    Some(RateLimitSpec {
                        per_minute: n.div_ceil(60).max(1),
                        burst: None,
                    })
                }
                other => {
                    err(
                        format!("{at}.rateLimit.unit"),
                        format!("`{other}` (use Second, Minute, Hour)"),
                    );
                    return None;
                }
            }
        }
    };
    let namespace = manifest["metadata"]["namespace"]
        .as_str()
        .map(str::to_string)
        .or_else(|| argo.metadata.namespace.clone());
    Some(Trigger {
        name: t.name.clone(),
        when,
        condition,
        deps,
        manifest,
        parameters,
        namespace,
        allowed_namespaces: Vec::new(),
        retry,
        rate_limit,
        definition,
        resets,
        action,
        uses_dependency_names: false,
        reads: None,
    })
}

/// A Go duration: `"1s"` or integer nanoseconds.
fn go_duration(v: &Value) -> Option<Duration> {
    match v {
        Value::Number(n) => n.as_u64().map(Duration::from_nanos),
        Value::String(s) => humantime::parse_duration(s).ok(),
        _ => None,
    }
}

/// Where a template-level parameter's `dest` (a path into the trigger
/// template, Argo's field names) lands on the resource: `name` is the
/// trigger name, seen on objects as the `events.argoproj.io/trigger` label;
/// `<kind>.source.resource.X` is `X`. `Ok(None)`: a path into a trigger
/// source tripline does not fetch (`s3`, `git`, `url`, `configmap`).
pub(super) fn template_param_dest(kind: &str, dest: &str) -> Result<Option<String>, String> {
    if dest == "name" {
        return Ok(Some(r"metadata.labels.events\.argoproj\.io/trigger".into()));
    }
    let source = format!("{kind}.source.");
    if let Some(rest) = dest.strip_prefix(&format!("{source}resource.")) {
        return Ok(Some(rest.to_string()));
    }
    if let Some(rest) = dest.strip_prefix(&source) {
        if ["s3.", "git.", "url.", "configmap."]
            .iter()
            .any(|k| rest.starts_with(k))
        {
            return Ok(None);
        }
    }
    Err(format!(
        "`{dest}`: template-level parameters may set `name` or `{kind}.source.resource.…` (tripline compiles the rest of the trigger at load)"
    ))
}

/// The resource of a `k8s`/`argoWorkflow` trigger template (`rt`, at path
/// `tat`): the object to submit, or what to read when the trigger fires.
/// Also compiles the `workflow: {argo: …}` of native sensors (import's
/// escape hatch for sources and `submit-from`).
fn trigger_resource(
    kind: &str,
    rt: &ResourceTrigger,
    tat: &str,
    (sensor_name, trigger_name): (&str, &str),
    file: &Path,
    errors: &mut Vec<(String, String)>,
    warnings: &mut Vec<(String, String)>,
) -> Option<(Action, Value)> {
    let mut err = |field: String, message: String| errors.push((field, message));
    let op = rt.operation.as_deref().unwrap_or("");
    let op_ok = match kind {
        "k8s" => matches!(op, "" | "create"),
        _ => matches!(op, "submit" | "submit-from"),
    };
    if !op_ok {
        let hint = if kind == "argoWorkflow" && op.is_empty() {
            "required: set `operation: submit`".to_string()
        } else {
            format!(
                "`{op}` is not supported (supported: {})",
                if kind == "k8s" {
                    "create"
                } else {
                    "submit, submit-from"
                }
            )
        };
        err(format!("{tat}.operation"), hint);
        return None;
    }
    for (j, a) in rt.args.iter().enumerate() {
        warnings.push((
            format!("{tat}.args[{j}]"),
            format!("`{a}` ignored: tripline creates the Workflow through the API"),
        ));
    }
    let Some(source) = &rt.source else {
        err(format!("{tat}.source"), "required".into());
        return None;
    };
    let mut action = Action::Submit;
    let fetch_at_fire = |fetch: Fetch| {
        Action::Fetch(Arc::new(FetchTrigger {
            fetch,
            kind: if kind == "k8s" { "k8s" } else { "argoWorkflow" },
            sensor: sensor_name.to_string(),
            trigger: trigger_name.to_string(),
        }))
    };
    let mut manifest = if let Some(r) = source.get("resource").filter(|r| r.is_object()) {
        r.clone()
    } else if let Some(text) = source.get("inline").and_then(Value::as_str) {
        match serde_yaml_ng::from_str::<Value>(text) {
            Ok(v) if v.is_object() => v,
            _ => {
                err(
                    format!("{tat}.source.inline"),
                    "not a YAML or JSON object".into(),
                );
                return None;
            }
        }
    } else if let Some(p) = source.get("file").and_then(|f| f["path"].as_str()) {
        // Read on every firing, as upstream (relative paths follow the
        // sensor file); a file missing now is worth a warning, since
        // Argo's paths are paths in the sensor pod.
        let path = file.parent().unwrap_or(Path::new(".")).join(p);
        if !path.is_file() {
            warnings.push((
                format!("{tat}.source.file.path"),
                format!(
                    "{} does not exist (yet): it is read when the trigger fires (Argo's paths are sensor-pod paths; mount the file there)",
                    path.display()
                ),
            ));
        }
        action = fetch_at_fire(Fetch::File(path));
        Value::Null
    } else if let Some(cm) = source.get("configmap").filter(|c| c.is_object()) {
        let (name, key) = (cm["name"].as_str(), cm["key"].as_str());
        let (Some(name), Some(key)) = (name, key) else {
            err(
                format!("{tat}.source.configmap"),
                "`name` and `key` are required".into(),
            );
            return None;
        };
        if !valid_object_name(name) {
            err(
                format!("{tat}.source.configmap.name"),
                format!("`{name}` is not a Kubernetes object name"),
            );
            return None;
        }
        warnings.push((
            format!("{tat}.source.configmap"),
            "read from the cluster on every firing (with the outbox as the target: every firing is dead-lettered)".into(),
        ));
        action = fetch_at_fire(Fetch::ConfigMap {
            name: name.to_string(),
            key: key.to_string(),
        });
        Value::Null
    } else if let Some(u) = source.get("url").filter(|u| u.is_object()) {
        let Some(url) = u["path"].as_str().filter(|p| !p.is_empty()) else {
            err(format!("{tat}.source.url.path"), "required".into());
            return None;
        };
        match url::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
            _ => {
                err(
                    format!("{tat}.source.url.path"),
                    format!("`{url}` is not an http(s) URL"),
                );
                return None;
            }
        }
        let verify_cert = u["verifyCert"].as_bool().unwrap_or(true);
        if !verify_cert {
            warnings.push((
                format!("{tat}.source.url.verifyCert"),
                "false: the TLS certificate of this URL is not verified (anyone on the path can supply the resource)".into(),
            ));
        }
        action = fetch_at_fire(Fetch::Url {
            url: url.to_string(),
            verify_cert,
        });
        Value::Null
    } else if let Some(k) = ["git", "s3"].into_iter().find(|k| source.contains_key(*k)) {
        warnings.push((
            format!("{tat}.source.{k}"),
            "fetched at fire time upstream; not fetched by tripline yet: every firing of this trigger is dead-lettered".into(),
        ));
        action = Action::Unavailable(format!(
            "trigger source `{k}` is not fetched by tripline yet"
        ));
        let placeholder = if kind == "argoWorkflow" {
            ("argoproj.io/v1alpha1", "Workflow")
        } else {
            ("v1", "ConfigMap")
        };
        json!({"apiVersion": placeholder.0, "kind": placeholder.1, "metadata": {"generateName": format!("{trigger_name}-")}})
    } else {
        let kinds: Vec<&str> = source.keys().map(String::as_str).collect();
        err(
            format!("{tat}.source"),
            format!(
                "source {kinds:?} is not supported (supported: resource, inline, file, configmap)"
            ),
        );
        return None;
    };
    if op == "submit-from" {
        let k = manifest["kind"].as_str().unwrap_or_default().to_string();
        let name = manifest["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if name.is_empty() || !matches!(k.as_str(), "WorkflowTemplate" | "CronWorkflow") {
            err(
                format!("{tat}.source.resource"),
                "submit-from takes a WorkflowTemplate or CronWorkflow stub with a name".into(),
            );
            return None;
        }
        if k == "CronWorkflow" && !valid_object_name(&name) {
            err(
                format!("{tat}.source.resource.metadata.name"),
                format!("`{name}` is not a Kubernetes object name"),
            );
            return None;
        }
        if k == "CronWorkflow" {
            warnings.push((
                format!("{tat}.source.resource"),
                "the CronWorkflow is read from the cluster on every firing (with the outbox as the target: every firing is dead-lettered)".into(),
            ));
            action = fetch_at_fire(Fetch::CronWorkflow { name });
            manifest = Value::Null;
        } else {
            manifest = json!({
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Workflow",
                "metadata": {"generateName": format!("{name}-"), "labels": {"workflows.argoproj.io/workflow-template": name}},
                "spec": {"workflowTemplateRef": {"name": name}},
            });
        }
    }
    if !manifest.is_null() {
        manifest = match finish(manifest, kind, sensor_name, trigger_name) {
            Ok(m) => m,
            Err((field, message)) => {
                let field = if field.is_empty() {
                    format!("{tat}.source.resource")
                } else {
                    format!("{tat}.source.resource.{field}")
                };
                err(field, message);
                return None;
            }
        };
    }

    Some((action, manifest))
}

/// What compiling a native `workflow: {argo: …}` found.
pub struct NativeWorkflow {
    pub resource: Option<(Action, Value)>,
    /// `(field path under argo, message)`.
    pub errors: Vec<(String, String)>,
    pub warnings: Vec<(String, String)>,
}

/// A native sensor's `workflow: {argo: {k8s: …} | {argoWorkflow: …}}`:
/// the Argo trigger template's resource with Argo's rules (sources read at
/// fire time, `submit-from`, `args`), for native `trigger` of `sensor`.
/// Its parameters are the native trigger's (`argo:` parameter sources).
pub fn native_workflow(argo: &Value, sensor: &str, trigger: &str, file: &Path) -> NativeWorkflow {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Kinds {
        #[serde(default)]
        k8s: Option<ResourceTrigger>,
        #[serde(default)]
        argo_workflow: Option<ResourceTrigger>,
    }
    let mut argo = argo.clone();
    let mut warnings = fold_case(&mut argo);
    let mut errors = Vec::new();
    let parsed: Result<Kinds, _> = serde_ignored::deserialize(&argo, |path| {
        warnings.push((path.to_string(), "unknown field, ignored".into()));
    });
    let resource = match parsed {
        Err(e) => {
            errors.push(("-".into(), e.to_string()));
            None
        }
        Ok(Kinds {
            k8s: Some(_),
            argo_workflow: Some(_),
        })
        | Ok(Kinds {
            k8s: None,
            argo_workflow: None,
        }) => {
            errors.push(("-".into(), "give one of `k8s`, `argoWorkflow`".into()));
            None
        }
        Ok(Kinds { k8s, argo_workflow }) => {
            let (kind, rt) = match (&k8s, &argo_workflow) {
                (Some(k), _) => ("k8s", k),
                (_, Some(a)) => ("argoWorkflow", a),
                _ => unreachable!("one is given"),
            };
            if !rt.parameters.is_empty() {
                errors.push((
                    format!("{kind}.parameters"),
                    "give parameters on the trigger (`argo:` parameter sources)".into(),
                ));
                None
            } else {
                trigger_resource(
                    kind,
                    rt,
                    kind,
                    (sensor, trigger),
                    file,
                    &mut errors,
                    &mut warnings,
                )
            }
        }
    };
    NativeWorkflow {
        resource,
        errors,
        warnings,
    }
}
