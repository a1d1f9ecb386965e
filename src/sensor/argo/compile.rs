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
use super::filter::DependencyFilter;
use super::params::Param as ArgoParamSpec;
use super::spec::{fold_case, ArgoSensor, TriggerWrap, OTHER_KINDS};
use crate::backoff::RetryPolicy;
use crate::sensor::condition::Condition;
use crate::sensor::filter::Filter;
use crate::sensor::spec::RateLimitSpec;
use crate::sensor::{Action, ArgoParam, Dependency, Param, Sensor, Trigger};

/// What compiling one document found.
pub struct Compiled {
    pub sensor: Option<Sensor>,
    /// `(field path, message)`.
    pub errors: Vec<(String, String)>,
    pub warnings: Vec<(String, String)>,
}

/// Compiles an Argo Sensor document. `sources`: the source names of
/// `tripline.yaml` (`None`: any name binds, as for `tripline test`).
pub fn compile(doc: &Value, file: &Path, sources: Option<&HashSet<String>>) -> Compiled {
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

    // Dependencies, bound to tripline sources named `<eventSourceName>-<eventName>`.
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
        let source = format!("{}-{}", d.event_source_name, d.event_name);
        if let Some(known) = sources {
            if !known.contains(&source) {
                err(
                    at.clone(),
                    format!(
                        "no tripline source for Argo event '{}/{}': declare a source named '{source}' in tripline.yaml",
                        d.event_source_name, d.event_name
                    ),
                );
                continue;
            }
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
                let f = Arc::new(f);
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
    if !w.parameters.is_empty() {
        err(
            format!("{at}.parameters"),
            "template-level parameters are not supported by tripline yet (resource parameters are)"
                .into(),
        );
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
        // Read at load (relative paths follow the sensor file).
        let path = file.parent().unwrap_or(Path::new(".")).join(p);
        let read = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_yaml_ng::from_str::<Value>(&t).map_err(|e| e.to_string()));
        match read {
            Ok(v) if v.is_object() => v,
            Ok(_) => {
                err(
                    format!("{tat}.source.file.path"),
                    format!("{}: not an object", path.display()),
                );
                return None;
            }
            Err(e) => {
                err(
                    format!("{tat}.source.file.path"),
                    format!(
                        "{}: {e} (Argo's paths are pod paths; give one tripline can read)",
                        path.display()
                    ),
                );
                return None;
            }
        }
    } else if let Some(k) = ["url", "configmap", "git", "s3"]
        .into_iter()
        .find(|k| source.contains_key(*k))
    {
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
        json!({"apiVersion": placeholder.0, "kind": placeholder.1, "metadata": {"generateName": format!("{}-", t.name)}})
    } else {
        let kinds: Vec<&str> = source.keys().map(String::as_str).collect();
        err(
            format!("{tat}.source"),
            format!("source {kinds:?} is not supported (supported: resource, inline, file)"),
        );
        return None;
    };
    if op == "submit-from" {
        let k = manifest["kind"].as_str().unwrap_or_default().to_string();
        let name = manifest["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if k != "WorkflowTemplate" || name.is_empty() {
            err(format!("{tat}.source.resource"), "submit-from takes a WorkflowTemplate stub with a name (CronWorkflow: not supported yet)".into());
            return None;
        }
        manifest = json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Workflow",
            "metadata": {"generateName": format!("{name}-"), "labels": {"workflows.argoproj.io/workflow-template": name}},
            "spec": {"workflowTemplateRef": {"name": name}},
        });
    } else if kind == "argoWorkflow" && manifest["kind"] != "Workflow" {
        err(
            format!("{tat}.source.resource.kind"),
            "argoWorkflow submit takes a Workflow".into(),
        );
        return None;
    }
    if manifest["metadata"]["name"].as_str().is_none()
        && manifest["metadata"]["generateName"].as_str().is_none()
    {
        if kind == "argoWorkflow" {
            err(
                format!("{tat}.source.resource.metadata"),
                "a Workflow needs `name` or `generateName`".into(),
            );
            return None;
        }
        manifest["metadata"]["generateName"] = json!(format!("{}-", t.name));
    }
    let labels = &mut manifest["metadata"]["labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    labels["events.argoproj.io/sensor"] = json!(sensor_name);
    labels["events.argoproj.io/trigger"] = json!(t.name);

    let mut parameters = Vec::new();
    for (j, p) in rt.parameters.iter().enumerate() {
        let pat = format!("{tat}.parameters[{j}]");
        match ArgoParamSpec::compile(p) {
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
