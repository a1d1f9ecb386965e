//! `tripline import` (ARGO-COMPAT §9): an Argo `Sensor` → a native sensor
//! document, an `EventSource` → `tripline.yaml` sources. The native sensor
//! behaves exactly like the Argo one: dependency filters become native where
//! that is exact ([`super::idiom`]), else they and the parameters keep Argo
//! semantics through the native `argo:` blocks (same code as running the Argo
//! sensor directly), the rest is native (`when`, `workflow.manifest` with the
//! labels upstream adds, `retry`, `rateLimit`, `log`). What cannot be
//! converted is an error naming the path; what is approximated or dropped is
//! a note (`# import:` comments in the output).

use super::compile::UNDECLARED;
use crate::sensor::SourceCatalog;
use serde_json::{json, Map, Value};

use super::compile::compile;
use super::fetch::finish;
use crate::sensor::render::dns_label;

/// One converted document: the YAML value and the notes about it.
pub struct Imported {
    pub doc: Value,
    pub notes: Vec<String>,
}

/// An Argo Sensor document → a native one. Errors are `(path, message)`.
/// `sources`: what dependencies bind to (an open catalog binds `E-N`).
pub fn sensor(doc: &Value, sources: &SourceCatalog) -> Result<Imported, Vec<(String, String)>> {
    // Everything the Argo sensor needs must compile as it is.
    let compiled = compile(doc, std::path::Path::new("import.yaml"), sources);
    if !compiled.errors.is_empty() {
        return Err(compiled.errors);
    }
    // (Whether a source is declared is for the loader of the output.)
    let mut notes: Vec<String> = compiled
        .warnings
        .iter()
        .filter(|(_, message)| !message.starts_with(UNDECLARED))
        .map(|(path, message)| format!("{path}: {message}"))
        .collect();
    let spec = &doc["spec"];
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    let mut deps = Vec::new();
    let mut dep_names = Vec::new();
    // Dependencies whose events Argo parameters read keep their `argo:`
    // block (a native `argo:` parameter needs one).
    let mut read_by_parameters = Vec::new();
    dependency_names(&spec["triggers"], &mut read_by_parameters);
    for (i, d) in spec["dependencies"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let (e, n) = (
            d["eventSourceName"].as_str().unwrap_or_default(),
            d["eventName"].as_str().unwrap_or_default(),
        );
        let dep_name = d["name"].as_str().unwrap_or_default();
        let source = sources.bind(e, n).unwrap_or_else(|| format!("{e}-{n}"));
        let json_body = sources.argo(&source).is_none_or(|a| a.json_body);
        let read = read_by_parameters.iter().any(|r| r == dep_name);
        let mut argo = json!({"eventSourceName": e, "eventName": n});
        if let Some(native) = super::idiom::dependency(d, json_body, read) {
            for (path, note) in &native.notes {
                notes.push(format!("spec.dependencies[{i}].{path}: {note}"));
            }
            dep_names.push(dep_name.to_string());
            let mut out = json!({"name": dep_name, "source": source, "filters": native.filter});
            // An `argo:` parameter reads the dependency's Argo event: the
            // binding (no filters) stays beside the native filters.
            if read {
                out["argo"] = argo;
            }
            deps.push(out);
            continue;
        }
        if !d["filters"].is_null() {
            argo["filters"] = d["filters"].clone();
        }
        if let Some(op) = d["filtersLogicalOperator"].as_str() {
            argo["filtersLogicalOperator"] = json!(op);
        }
        if !d["transform"].is_null() {
            argo["transform"] = d["transform"].clone();
        }
        dep_names.push(dep_name.to_string());
        deps.push(json!({"name": dep_name, "source": source, "argo": argo}));
    }
    let sensor_ns = doc["metadata"]["namespace"].as_str();
    let mut triggers = Vec::new();
    for (i, w) in spec["triggers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let t = &w["template"];
        let argo_name = t["name"].as_str().unwrap_or_default();
        let native_name = dns_label(argo_name, 63);
        if native_name != argo_name {
            notes.push(format!(
                "spec.triggers[{i}]: trigger `{argo_name}` is named `{native_name}` (a DNS label); object names derived from it change"
            ));
        }
        let mut out = Map::new();
        out.insert("name".into(), json!(native_name));
        let when = t["conditions"]
            .as_str()
            .filter(|c| !c.trim().is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| dep_names.join(" && "));
        out.insert("when".into(), json!(when.replace('_', "-")));
        if !t["log"].is_null() {
            out.insert(
                "log".into(),
                json!({"intervalSeconds": t["log"]["intervalSeconds"].as_u64().unwrap_or(0)}),
            );
        } else {
            let (kind, rt) = if t["k8s"].is_object() {
                ("k8s", &t["k8s"])
            } else {
                ("argoWorkflow", &t["argoWorkflow"])
            };
            let source = &rt["source"];
            let mut manifest = if source["resource"].is_object() {
                source["resource"].clone()
            } else if let Some(text) = source["inline"].as_str() {
                serde_yaml_ng::from_str(text).unwrap_or(Value::Null)
            } else {
                Value::Null
            };
            // Read at fire time (file, configmap, url, git, s3; a CronWorkflow),
            // or `args`: the Argo trigger template itself, which the native
            // `workflow: {argo: …}` compiles with Argo's rules.
            let from_cron = rt["operation"] == "submit-from" && manifest["kind"] == "CronWorkflow";
            let fetched = manifest.is_null();
            let has_args = rt["args"].as_array().is_some_and(|a| !a.is_empty());
            if from_cron || fetched || has_args {
                let mut template = rt.clone();
                if let Some(m) = template.as_object_mut() {
                    m.remove("parameters");
                }
                notes.push(format!(
                    "spec.triggers[{i}]: kept as an Argo trigger template (`workflow: {{argo: …}}`): its resource is read when it fires, or it has `args`"
                ));
                out.insert("workflow".into(), json!({"argo": {kind: template}}));
                manifest = Value::Null;
            } else if rt["operation"] == "submit-from" {
                let wt = manifest["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                manifest = json!({
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "Workflow",
                    "metadata": {"generateName": format!("{wt}-"), "labels": {"workflows.argoproj.io/workflow-template": wt}},
                    "spec": {"workflowTemplateRef": {"name": wt}},
                });
            }
            if !out.contains_key("workflow") {
                // Finished exactly as the Argo sensor's compilation does
                // (default generateName, the events.argoproj.io labels).
                let manifest =
                    finish(manifest.clone(), kind, name, argo_name).map_err(|(f, m)| {
                        vec![(
                            format!("spec.triggers[{i}].template.{kind}.source.resource.{f}"),
                            m,
                        )]
                    })?;
                out.insert("workflow".into(), json!({"manifest": manifest}));
            }
            // Template-level parameters first, moved onto the resource as
            // the Argo sensor's compilation does.
            let template_level = w["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let dest = p["dest"].as_str().unwrap_or_default();
                    let mut p = p.clone();
                    p["dest"] = json!(super::compile::template_param_dest(kind, dest).ok()??);
                    Some(p)
                });
            let resource_level = rt["parameters"].as_array().into_iter().flatten().cloned();
            let params: Vec<Value> = template_level
                .chain(resource_level)
                .enumerate()
                .map(|(j, p)| {
                    let mut native =
                        json!({"name": format!("p{j}"), "argo": p["src"], "dest": p["dest"]});
                    if let Some(op) = p["operation"].as_str() {
                        native["operation"] = json!(op);
                    }
                    native
                })
                .collect();
            if !params.is_empty() {
                out.insert("parameters".into(), Value::Array(params));
            }
            if let Some(ns) = manifest["metadata"]["namespace"].as_str().or(sensor_ns) {
                out.insert("namespace".into(), json!(ns));
            }
        }
        match &w["retryStrategy"] {
            Value::Null => {
                out.insert("retry".into(), json!({"attempts": 1}));
            }
            r => {
                let steps = r["steps"].as_u64().filter(|s| *s > 0).unwrap_or(5);
                let backoff = match &r["duration"] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => format!("{}ns", n),
                    _ => "1s".into(),
                };
                out.insert(
                    "retry".into(),
                    json!({"attempts": steps, "backoff": backoff}),
                );
            }
        }
        if let Some(rl) = w["rateLimit"].as_object() {
            let n = rl
                .get("requestsPerUnit")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .max(1);
            let per_minute = match rl.get("unit").and_then(Value::as_str).unwrap_or("Second") {
                "Minute" => n,
                "Hour" => n.div_ceil(60),
                _ => n * 60,
            };
            out.insert("rateLimit".into(), json!({"perMinute": per_minute}));
        }
        if let Some(r) = t["conditionsReset"].as_array() {
            out.insert("argo".into(), json!({"conditionsReset": r}));
        }
        triggers.push(Value::Object(out));
    }
    let window = doc["metadata"]["annotations"]["tripline.dev/correlation-window"]
        .as_str()
        .unwrap_or("876000h");
    if window == "876000h" && dep_names.len() > 1 {
        notes.push("spec.correlationWindow: Argo keeps events until the trigger fires (no window): 876000h".into());
    }
    let mut metadata = json!({"name": name});
    if let Some(ns) = sensor_ns {
        metadata["namespace"] = json!(ns);
    }
    Ok(Imported {
        doc: json!({
            "apiVersion": "tripline.dev/v1alpha1",
            "kind": "Sensor",
            "metadata": metadata,
            "spec": {"correlationWindow": window, "dependencies": deps, "triggers": triggers},
        }),
        notes,
    })
}

/// Every `dependencyName` under `v` (the triggers' parameters).
fn dependency_names(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("dependencyName", Value::String(s)) => out.push(s.clone()),
                    _ => dependency_names(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| dependency_names(x, out)),
        _ => {}
    }
}

/// A Kubernetes Secret reference → where to mount it.
fn secret_file(r: &Value) -> Option<Value> {
    let (name, key) = (r["name"].as_str()?, r["key"].as_str()?);
    Some(json!({"file": format!("/etc/tripline/secrets/{name}/{key}")}))
}

/// An Argo EventSource document → `tripline.yaml` sources, one per event.
/// `taken`: webhook paths already given to sources (by earlier documents of
/// the same import), so that they end up in one `tripline.yaml` side by side.
pub fn event_source(
    doc: &Value,
    taken: &mut Vec<String>,
) -> Result<Imported, Vec<(String, String)>> {
    let e = doc["metadata"]["name"].as_str().unwrap_or_default();
    let spec = &doc["spec"];
    let mut sources = Vec::new();
    let mut notes = Vec::new();
    let mut errors = Vec::new();
    let before = taken.len();
    let mut path_for = |n: &str, endpoint: &str, notes: &mut Vec<String>| {
        let paths = &mut *taken;
        let mut p = if endpoint.starts_with('/') {
            endpoint.to_string()
        } else {
            format!("/{endpoint}")
        };
        if paths.contains(&p) {
            let moved = format!("/{n}{p}");
            notes.push(format!("{e}-{n}: {p} is taken by another event (Argo served it on another port): served at {moved}"));
            p = moved;
        }
        paths.push(p.clone());
        p
    };
    for (kind, events) in spec.as_object().into_iter().flatten() {
        let Some(events) = events.as_object() else {
            continue;
        };
        for (n, ev) in events {
            let name = format!("{e}-{n}");
            let source = match kind.as_str() {
                "webhook" => {
                    let path = path_for(n, ev["endpoint"].as_str().unwrap_or("/"), &mut notes);
                    match secret_file(&ev["authSecret"]) {
                        Some(s) => {
                            json!({"type": "generic", "name": name, "path": path, "bearer": s})
                        }
                        None => json!({"type": "http", "name": name, "path": path}),
                    }
                }
                "github" => {
                    let path = path_for(
                        n,
                        ev["webhook"]["endpoint"].as_str().unwrap_or("/"),
                        &mut notes,
                    );
                    let secret = secret_file(&ev["webhookSecret"]).unwrap_or_else(|| {
                        let var = format!("GITHUB_{}_WEBHOOK_SECRET", n.to_uppercase().replace('-', "_"));
                        notes.push(format!("{name}: Argo accepted unsigned deliveries (no webhookSecret); tripline requires one: set ${var}"));
                        json!({"env": var})
                    });
                    notes.push(format!("{name}: hook registration fields dropped (repositories, events, apiToken, …); `events` was never an intake filter"));
                    json!({"type": "github", "name": name, "path": path, "secret": secret})
                }
                "gitlab" => {
                    let path = path_for(
                        n,
                        ev["webhook"]["endpoint"].as_str().unwrap_or("/"),
                        &mut notes,
                    );
                    let token = secret_file(&ev["secretToken"]).unwrap_or_else(|| {
                        let var = format!("GITLAB_{}_TOKEN", n.to_uppercase().replace('-', "_"));
                        notes.push(format!(
                            "{name}: Argo did not check a token; tripline requires one: set ${var}"
                        ));
                        json!({"env": var})
                    });
                    json!({"type": "gitlab", "name": name, "path": path, "token": token})
                }
                "nats" => {
                    let mut s = json!({"type": "nats", "name": name, "urls": [ev["url"]], "subjects": [ev["subject"]]});
                    if let Some(q) = ev["queue"].as_str() {
                        s["queueGroup"] = json!(q);
                    }
                    notes.push(format!(
                        "{name}: core NATS is at most once (as upstream); consider `jetstream:`"
                    ));
                    s
                }
                "kafka" => {
                    let brokers: Vec<String> = ev["url"]
                        .as_str()
                        .unwrap_or_default()
                        .split(',')
                        .map(|b| b.trim().to_string())
                        .collect();
                    let group = ev["consumerGroup"]["groupName"].as_str().map(str::to_string).unwrap_or_else(|| {
                        notes.push(format!("{name}: Argo read only partition {} without a group; tripline consumes every partition in group tripline-{name}", ev["partition"]));
                        format!("tripline-{name}")
                    });
                    let reset = if ev["consumerGroup"]["oldest"] == true {
                        "earliest"
                    } else {
                        "latest"
                    };
                    json!({"type": "kafka", "name": name, "brokers": brokers, "topics": [ev["topic"]], "groupId": group, "autoOffsetReset": reset})
                }
                "service" | "template" | "eventBusName" | "replicas" => continue,
                other => {
                    errors.push((format!("spec.{other}.{n}"), format!("EventSource type '{other}' has no tripline source (webhook, github, gitlab, nats, kafka)")));
                    continue;
                }
            };
            let mut source = source;
            let mut argo = serde_json::Map::new();
            // Upstream's `jsonBody` is a Go bool (default false: the body is
            // the payload's base64); tripline's default is true.
            if matches!(kind.as_str(), "nats" | "kafka") && ev["jsonBody"] != true {
                argo.insert("jsonBody".into(), json!(false));
            }
            if ev["metadata"].as_object().is_some_and(|m| !m.is_empty()) {
                argo.insert("metadata".into(), ev["metadata"].clone());
            }
            if !argo.is_empty() {
                source["argo"] = Value::Object(argo);
            }
            sources.push(source);
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if taken.len() > before {
        notes.push(
            "tripline serves every webhook on `listen`; the EventSource's ports do not apply"
                .into(),
        );
    }
    Ok(Imported {
        doc: json!({"sources": sources}),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::sensor::filter::Filter;

    /// Exact filters become native; a dependency a parameter reads keeps a
    /// filterless `argo:` binding beside them; one bound to a source whose
    /// Argo body is base64 (`jsonBody: false`) keeps its `argo:` filters.
    #[test]
    fn native_filters_where_exact_argo_where_read_or_raw() {
        let doc = |params: &str| -> Value {
            serde_yaml_ng::from_str(&format!(
                r#"
apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {{name: s}}
spec:
  dependencies:
    - name: d
      eventSourceName: kafka
      eventName: jobs
      filters:
        data: [{{path: body.job.size, type: number, comparator: ">", value: ["10"]}}]
  triggers:
    - template:
        name: t
        k8s:
          operation: create
          source:
            resource: {{apiVersion: v1, kind: ConfigMap, metadata: {{generateName: x-}}}}
          parameters: {params}
"#
            ))
            .unwrap()
        };
        let open = SourceCatalog::open();
        let native = sensor(&doc("[]"), &open).unwrap_or_else(|e| panic!("{e:?}"));
        let dep = &native.doc["spec"]["dependencies"][0];
        assert_eq!(dep["filters"], json!({"path": "body.job.size", "gt": 10.0}));
        assert!(dep.get("argo").is_none());
        let read = doc("[{src: {dependencyName: d, dataKey: body.job.size}, dest: data.size}]");
        let kept = sensor(&read, &open).unwrap_or_else(|e| panic!("{e:?}"));
        let dep = &kept.doc["spec"]["dependencies"][0];
        assert_eq!(dep["filters"], json!({"path": "body.job.size", "gt": 10.0}));
        assert_eq!(
            dep["argo"],
            json!({"eventSourceName": "kafka", "eventName": "jobs"})
        );
        let mut raw = SourceCatalog::open();
        raw.insert(
            "kafka-jobs",
            Some(crate::sensor::catalog::ArgoSource {
                json_body: false,
                ..Default::default()
            }),
        );
        let kept = sensor(&doc("[]"), &raw).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(kept.doc["spec"]["dependencies"][0]["argo"].is_object());
    }

    /// Upstream `examples/sensors/transform.yaml` (its two dependencies):
    /// the transforms travel in the native `argo:` block and act the same
    /// after loading the imported document.
    #[test]
    fn transforms_are_carried_into_the_native_argo_block() {
        let argo: Value = serde_yaml_ng::from_str(
            r#"
apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: transform}
spec:
  dependencies:
    - name: test-dep
      eventSourceName: webhook
      eventName: example
      transform:
        script: |-
          event.body.message='updated'
          return event
    - name: test-dep-foo
      eventSourceName: webhook
      eventName: example-foo
      transform:
        jq: ".body.message *= 2"
  triggers:
    - template:
        name: t
        conditions: "test-dep || test-dep-foo"
        k8s:
          operation: create
          source:
            resource: {apiVersion: v1, kind: ConfigMap, metadata: {generateName: x-}}
"#,
        )
        .unwrap();
        let imported = sensor(&argo, &SourceCatalog::open()).unwrap_or_else(|e| panic!("{e:?}"));
        let deps = &imported.doc["spec"]["dependencies"];
        assert_eq!(
            deps[0]["argo"]["transform"]["script"],
            "event.body.message='updated'\nreturn event"
        );
        assert_eq!(deps[1]["argo"]["transform"]["jq"], ".body.message *= 2");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("imported.yaml");
        std::fs::write(&file, serde_yaml_ng::to_string(&imported.doc).unwrap()).unwrap();
        let set = crate::sensor::load::load(&[file], &SourceCatalog::open())
            .unwrap_or_else(|e| panic!("{e:?}"));
        let deps = &set.sensors[0].dependencies;
        let mut event = Event::new("webhook-example", b"{}", json!({"message": "hello"}));
        event.headers.insert("content-type", "application/json");
        event
            .meta
            .insert("contentType".into(), json!("application/json"));
        let data = |i: usize| match deps[i].filter.as_ref().and_then(Filter::argo) {
            Some(f) => f.argo_event(&event).map(|a| a.data["body"].clone()),
            None => panic!("{:?}", deps[i].filter),
        };
        assert_eq!(data(0), Some(json!({"message": "updated"})));
        assert_eq!(data(1), Some(json!({"message": "hellohello"})));
    }
}
