//! Every YAML shipped in `sensors/`, `examples/` and `deploy/` is loaded:
//! configs and sensors through `tripline validate`, Argo objects through the
//! Kubernetes API double's schema validation, everything else parsed.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::support::kube_api::KubeApi;
use crate::support::tripline::repo;

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// Env vars the shipped configs reference as secrets.
const SECRETS: [(&str, &str); 1] = [("GITHUB_WEBHOOK_SECRET", "test")];

fn validate(config: &Path) {
    let mut cmd = std::process::Command::new(crate::support::tripline::BIN);
    cmd.args(["validate", "--config"]).arg(config).envs(SECRETS);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{} does not validate:\n{}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn every_shipped_yaml_loads() {
    let api = KubeApi::start().await;
    let client = reqwest::Client::new();
    let mut files = Vec::new();
    for dir in ["sensors", "examples", "deploy"] {
        yaml_files(&repo(dir), &mut files);
    }
    files.push(repo("tripline.yaml"));
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        if name == "tripline.yaml" {
            validate(file);
            *seen.entry("config".into()).or_default() += 1;
            continue;
        }
        for doc in documents(file) {
            // A kustomize JSON 6902 patch (the overlay's `patches/`).
            if let Some(ops) = doc.as_array() {
                for op in ops {
                    assert!(
                        op["op"].is_string() && op["path"].is_string(),
                        "{}: not a JSON patch operation: {op}",
                        file.display()
                    );
                }
                *seen.entry("json-patch".into()).or_default() += 1;
                continue;
            }
            let kind = doc["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: a document without kind", file.display()))
                .to_string();
            assert!(
                doc["apiVersion"].is_string(),
                "{}: no apiVersion",
                file.display()
            );
            match kind.as_str() {
                "Sensor" => {
                    // Loaded against the config that serves it (the sensors' own dir's parent).
                    let config = file
                        .parent()
                        .unwrap()
                        .parent()
                        .unwrap()
                        .join("tripline.yaml");
                    assert!(
                        config.exists(),
                        "{}: no tripline.yaml serves this sensor",
                        file.display()
                    );
                    let sensors = file.parent().unwrap();
                    validate_with_env(&config, sensors);
                }
                "Workflow" | "WorkflowTemplate" | "CronWorkflow" => {
                    let plural = format!("{}s", kind.to_lowercase());
                    let r = client
                        .post(format!(
                            "{}/apis/argoproj.io/v1alpha1/namespaces/default/{plural}",
                            api.url()
                        ))
                        .json(&doc)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(
                        r.status().as_u16(),
                        201,
                        "{}: {}",
                        file.display(),
                        r.text().await.unwrap()
                    );
                }
                "ConfigMap" if doc["data"]["tripline.yaml"].is_string() => {
                    validate_configmap(&doc, &files)
                }
                _ => {}
            }
            *seen.entry(kind).or_default() += 1;
        }
    }
    // The shipped set is what the README promises.
    for kind in [
        "config",
        "Sensor",
        "WorkflowTemplate",
        "StatefulSet",
        "ConfigMap",
        "Role",
    ] {
        assert!(seen.contains_key(kind), "no {kind} shipped: {seen:?}");
    }
}

fn validate_with_env(config: &Path, sensors: &Path) {
    let out = std::process::Command::new(crate::support::tripline::BIN)
        .args(["validate", "--config"])
        .arg(config)
        .arg("--sensors")
        .arg(sensors)
        .envs(SECRETS)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        sensors.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// deploy/configmap.yaml: its tripline.yaml with the sensors of the
/// `tripline-sensors` ConfigMap, paths moved into a temp dir.
fn validate_configmap(doc: &Value, files: &[PathBuf]) {
    let dir = tempfile::tempdir().unwrap();
    let sensors_cm = files
        .iter()
        .flat_map(|f| documents(f))
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "tripline-sensors")
        .expect("deploy ships a tripline-sensors ConfigMap");
    std::fs::create_dir(dir.path().join("sensors")).unwrap();
    for (name, text) in sensors_cm["data"].as_object().unwrap() {
        std::fs::write(
            dir.path().join("sensors").join(name),
            text.as_str().unwrap(),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("github"), "secret").unwrap();
    let config = doc["data"]["tripline.yaml"]
        .as_str()
        .unwrap()
        .replace(
            "/etc/tripline/sensors/",
            &dir.path().join("sensors").display().to_string(),
        )
        .replace(
            "/var/run/secrets/tripline/github",
            &dir.path().join("github").display().to_string(),
        );
    std::fs::write(dir.path().join("tripline.yaml"), config).unwrap();
    validate(&dir.path().join("tripline.yaml"));
}

/// `kubectl apply -k deploy/` installs everything in `deploy/`, each object
/// in its namespace, least privilege, passing Pod Security "restricted";
/// the overlay example moves the target namespace consistently.
#[test]
fn deploy_is_a_kustomize_base_that_passes_pod_security_restricted() {
    let base = documents(&repo("deploy/kustomization.yaml")).remove(0);
    let listed: std::collections::BTreeSet<String> = base["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let mut on_disk = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(repo("deploy")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            on_disk.insert(name);
        }
    }
    assert_eq!(
        listed, on_disk,
        "kustomization.yaml lists every file of deploy/"
    );
    assert!(
        base.get("namespace").is_none(),
        "a namespace: would move the target RBAC too"
    );

    let docs: Vec<Value> = listed
        .iter()
        .flat_map(|f| documents(&repo(&format!("deploy/{f}"))))
        .collect();
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    for d in &docs {
        if d["kind"] != "Namespace" {
            assert!(
                d["metadata"]["namespace"].is_string(),
                "no namespace on {}",
                d["metadata"]["name"]
            );
        }
    }
    let ns = find("Namespace", "tripline");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );

    // Pod Security "restricted", field by field.
    let sts = find("StatefulSet", "tripline");
    assert_eq!(sts["metadata"]["namespace"], "tripline");
    let pod = &sts["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v.get("hostPath").is_none()));
    for c in pod["containers"].as_array().unwrap() {
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert!(sc["capabilities"].get("add").is_none());
        assert_eq!(sc["runAsNonRoot"], true);
    }

    // RBAC: the submit Role sits where tripline submits, bound to its account.
    let config: Value = serde_yaml_ng::from_str(
        find("ConfigMap", "tripline-config")["data"]["tripline.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let target = config["submit"]["namespace"].as_str().unwrap();
    let sa = find("ServiceAccount", "tripline");
    assert_eq!(
        find("Role", "tripline-submit")["metadata"]["namespace"],
        target
    );
    let binding = find("RoleBinding", "tripline-submit");
    assert_eq!(binding["metadata"]["namespace"], target);
    assert_eq!(
        binding["subjects"][0]["namespace"],
        sa["metadata"]["namespace"]
    );
    for rule in find("Role", "tripline-submit")["rules"].as_array().unwrap() {
        assert_eq!(
            rule["verbs"],
            serde_json::json!(["create", "get"]),
            "least privilege"
        );
    }
    find("Namespace", target);
    let executor = find("Role", "argo-executor");
    assert_eq!(executor["metadata"]["namespace"], target);
    assert_eq!(
        executor["rules"][0]["resources"],
        serde_json::json!(["workflowtaskresults"])
    );

    // The overlay: everything that named `ml` names `data`, and its
    // tripline.yaml (a patch) validates and submits to `data`.
    let overlay = documents(&repo("examples/deploy-other-target/kustomization.yaml")).remove(0);
    assert_eq!(overlay["bases"], serde_json::json!(["../../deploy"]));
    let patches = overlay["patchesJson6902"].as_array().unwrap();
    let ops: Vec<Value> = patches
        .iter()
        .flat_map(|p| {
            let file = repo("examples/deploy-other-target").join(p["path"].as_str().unwrap());
            documents(&file).remove(0).as_array().unwrap().clone()
        })
        .collect();
    assert!(patches.iter().any(|p| p["target"]["namespace"] == target));
    let text = ops
        .iter()
        .find(|o| o["path"] == "/data/tripline.yaml")
        .expect("the overlay patches tripline.yaml")["value"]
        .as_str()
        .unwrap();
    let patched: Value = serde_yaml_ng::from_str(text).unwrap();
    assert_eq!(patched["submit"]["namespace"], "data");
    let mut cm = find("ConfigMap", "tripline-config").clone();
    cm["data"]["tripline.yaml"] = Value::String(text.to_string());
    let files: Vec<PathBuf> = listed
        .iter()
        .map(|f| repo(&format!("deploy/{f}")))
        .collect();
    validate_configmap(&cm, &files);

    // The extras point at what the base really has: the Ingress at the
    // public Service's port and a webhook path, the ServiceMonitor at an
    // admin Service whose target port the container declares.
    let extras = |f: &str| documents(&repo(&format!("examples/cluster-extras/{f}")));
    let ingress = extras("ingress.yaml").remove(0);
    let backend = &ingress["spec"]["rules"][0]["http"]["paths"][0];
    let service = find("Service", "tripline");
    assert_eq!(
        backend["backend"]["service"]["name"],
        service["metadata"]["name"]
    );
    assert_eq!(
        backend["backend"]["service"]["port"]["name"],
        service["spec"]["ports"][0]["name"]
    );
    let webhook_path = config["sources"][0]["path"].as_str().unwrap();
    assert!(
        webhook_path.starts_with(backend["path"].as_str().unwrap()),
        "{webhook_path}"
    );
    let monitoring = extras("monitoring.yaml");
    let (admin, monitor) = (&monitoring[0], &monitoring[1]);
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &admin["metadata"]["labels"][k], v,
            "ServiceMonitor selects the admin Service"
        );
    }
    let port = admin["spec"]["ports"][0]["targetPort"].as_str().unwrap();
    let ports = &sts["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert!(ports
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == port && p["containerPort"] == 9090));
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        admin["spec"]["ports"][0]["name"]
    );
}

/// Every metric the shipped Grafana dashboard queries is one a running
/// tripline serves on `/metrics`.
#[tokio::test]
async fn the_dashboard_queries_only_metrics_tripline_serves() {
    let dashboard: Value = serde_json::from_slice(
        &std::fs::read(repo("examples/cluster-extras/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for prefix in ["tripline_", "process_"] {
                let mut rest = expr;
                while let Some(i) = rest.find(prefix) {
                    let name: String = rest[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    rest = &rest[i + name.len()..];
                    queried.insert(name);
                }
            }
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    // A labelled family is served once it has a sample: one event that
    // waits for a partner (correlation), one refused delivery (rejection).
    let t = crate::support::tripline::Tripline::start(
        "sensors: sensors/\nsubmit: {type: outbox, dir: outbox/}\nlimits: {maxBodyBytes: 1024}\nsources: [{type: http, name: events, path: /events}]\n",
        &[(
            "pair.yaml",
            "apiVersion: tripline.dev/v1alpha1\nkind: Sensor\nmetadata: {name: pair}\nspec:\n  dependencies:\n    - {name: a, source: events, filters: {path: body.a, exists: true}}\n    - {name: b, source: events, filters: {path: body.b, exists: true}}\n  triggers:\n    - {name: t, workflow: {workflowTemplateRef: x}}\n",
        )],
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    for body in [r#"{"a": 1}"#.to_string(), "x".repeat(4096)] {
        client
            .post(t.url("/events"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
    }
    let served = reqwest::get(t.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // OpenMetrics names the family; samples add `_total` (counters) or
    // `_bucket`/`_sum`/`_count` (histograms).
    for name in &queried {
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        assert!(
            served.contains(&format!("# TYPE {family} ")),
            "{name} ({family}) is not served:\n{served}"
        );
    }
}

/// `kubectl kustomize` renders the base and the overlay (the same with
/// Debian's kubectl 1.20 and a current one: the overlay uses only what
/// both understand), and `kubernetes-validate --strict` accepts every
/// object, while it rejects a misspelt field — the check is real.
#[test]
fn deploy_renders_with_kustomize_and_every_object_validates_strictly() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let validate = |file: &std::path::Path| {
        Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
            .arg(file)
            .output()
            .expect("python3 -m kubernetes_validate (scripts/install-deps.sh installs it)")
    };
    let mut rendered = Vec::new();
    for (name, path) in [
        ("base", "deploy"),
        ("overlay", "examples/deploy-other-target"),
    ] {
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(repo(path))
            .output()
            .expect("kubectl (scripts/install-deps.sh installs Debian's kubernetes-client)");
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &out.stdout).unwrap();
        let v = validate(&file);
        assert!(
            v.status.success(),
            "{path}: {}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
        let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_slice(&out.stdout)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        rendered.push(docs);
    }
    let (base, overlay) = (&rendered[0], &rendered[1]);
    assert_eq!(base.len(), 11, "{base:#?}");
    assert_eq!(overlay.len(), base.len());
    let namespaces = |docs: &Vec<Value>| -> Vec<String> {
        let mut n: Vec<String> = docs
            .iter()
            .filter_map(|d| d["metadata"]["namespace"].as_str().map(String::from))
            .chain(
                docs.iter()
                    .filter(|d| d["kind"] == "Namespace")
                    .map(|d| d["metadata"]["name"].as_str().unwrap().to_string()),
            )
            .collect();
        n.sort();
        n.dedup();
        n
    };
    assert_eq!(namespaces(base), ["ml", "tripline"]);
    assert_eq!(
        namespaces(overlay),
        ["data", "tripline"],
        "nothing left in ml"
    );
    let config = overlay
        .iter()
        .find(|d| d["metadata"]["name"] == "tripline-config")
        .unwrap();
    assert!(config["data"]["tripline.yaml"]
        .as_str()
        .unwrap()
        .contains("namespace: data"));
    let executor = overlay
        .iter()
        .find(|d| d["kind"] == "RoleBinding" && d["metadata"]["name"] == "argo-executor")
        .unwrap();
    assert_eq!(executor["subjects"][0]["namespace"], "data");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndatta: {a: b}\n",
    )
    .unwrap();
    assert!(
        !validate(&bad).status.success(),
        "strict validation rejects unknown fields"
    );
}
