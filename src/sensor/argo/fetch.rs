//! Argo trigger sources read at fire time (ARGO-COMPAT §6.2, §6.4): a
//! `file` (read on every firing, as upstream does in the sensor pod), a
//! `configmap` key, a `url`, and the CronWorkflow of `submit-from`. What to read is
//! decided at load; the reading is the engine's (I/O at the edges); what the
//! read text becomes — the resource, finished as the compiled one would be —
//! is here, pure.

use std::path::PathBuf;

use serde_json::{json, Value};

/// What a trigger reads when it fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetch {
    /// A YAML/JSON file (relative paths were resolved against the sensor
    /// file at load).
    File(PathBuf),
    /// `key` of ConfigMap `name` (namespace: the trigger's, else the
    /// submit target's).
    ConfigMap { name: String, key: String },
    /// `submit-from` a CronWorkflow: its `spec.workflowSpec` is submitted.
    CronWorkflow { name: String },
    /// An HTTP(S) GET (200 required, YAML or JSON); `verify_cert: false`
    /// skips TLS certificate verification, as upstream's `verifyCert`.
    Url { url: String, verify_cert: bool },
}

/// How the fetched resource is finished: the trigger kind, and the labels
/// upstream adds.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchTrigger {
    pub fetch: Fetch,
    /// `k8s` or `argoWorkflow`.
    pub kind: &'static str,
    pub sensor: String,
    pub trigger: String,
}

impl FetchTrigger {
    /// What the fetched text or object becomes: the resource the trigger's
    /// parameters then apply to. `fetched` is the file's or the ConfigMap
    /// key's text, or the CronWorkflow object.
    pub fn resource(&self, fetched: Fetched) -> Result<Value, String> {
        let manifest = match (&self.fetch, fetched) {
            (Fetch::CronWorkflow { name }, Fetched::Object(cron)) => {
                let spec = cron["spec"]["workflowSpec"].clone();
                if !spec.is_object() {
                    return Err(format!("CronWorkflow `{name}` has no spec.workflowSpec"));
                }
                // argo-workflows `workflow/common/convert.go`.
                json!({
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "Workflow",
                    "metadata": {
                        "generateName": format!("{name}-"),
                        "labels": {"workflows.argoproj.io/cron-workflow": name},
                    },
                    "spec": spec,
                })
            }
            (_, Fetched::Text(text)) => serde_yaml_ng::from_str::<Value>(&text)
                .map_err(|e| format!("{}: not YAML or JSON: {e}", self.describe()))?,
            (_, Fetched::Object(o)) => o,
        };
        finish(manifest, self.kind, &self.sensor, &self.trigger)
            .map_err(|(_, m)| format!("{}: {m}", self.describe()))
    }

    /// For errors and logs: `file /workflows/x.yaml`, `configmap a/key`…
    pub fn describe(&self) -> String {
        match &self.fetch {
            Fetch::File(p) => format!("file {}", p.display()),
            Fetch::ConfigMap { name, key } => format!("configmap {name}/{key}"),
            Fetch::CronWorkflow { name } => format!("CronWorkflow {name}"),
            Fetch::Url { url, .. } => format!("url {url}"),
        }
    }
}

/// Whether `name` is a Kubernetes object name (a DNS subdomain): it goes
/// into a URL path when the object is read.
pub fn valid_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.'])
}

/// What the engine read.
pub enum Fetched {
    Text(String),
    Object(Value),
}

/// A trigger resource as tripline submits it: an object; a Workflow for
/// `argoWorkflow`; `name` or `generateName` (k8s: `<trigger>-` when
/// neither); the `events.argoproj.io/sensor` and `…/trigger` labels.
/// Errors are `(field under the resource, message)`.
pub fn finish(
    mut manifest: Value,
    kind: &str,
    sensor: &str,
    trigger: &str,
) -> Result<Value, (String, String)> {
    if !manifest.is_object() {
        return Err(("".into(), "not an object".into()));
    }
    if kind == "argoWorkflow" && manifest["kind"] != "Workflow" {
        return Err(("kind".into(), "argoWorkflow submit takes a Workflow".into()));
    }
    if manifest["metadata"]["name"].as_str().is_none()
        && manifest["metadata"]["generateName"].as_str().is_none()
    {
        if kind == "argoWorkflow" {
            return Err((
                "metadata".into(),
                "a Workflow needs `name` or `generateName`".into(),
            ));
        }
        manifest["metadata"]["generateName"] = json!(format!("{trigger}-"));
    }
    let labels = &mut manifest["metadata"]["labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    labels["events.argoproj.io/sensor"] = json!(sensor);
    labels["events.argoproj.io/trigger"] = json!(trigger);
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(fetch: Fetch, kind: &'static str) -> FetchTrigger {
        FetchTrigger {
            fetch,
            kind,
            sensor: "s".into(),
            trigger: "t".into(),
        }
    }

    #[test]
    fn a_cron_workflow_becomes_a_workflow_of_its_spec() {
        let t = trigger(
            Fetch::CronWorkflow {
                name: "nightly".into(),
            },
            "argoWorkflow",
        );
        let cron = json!({"kind": "CronWorkflow", "metadata": {"name": "nightly"},
            "spec": {"schedule": "0 1 * * *", "workflowSpec": {"entrypoint": "main"}}});
        let wf = t.resource(Fetched::Object(cron)).unwrap();
        assert_eq!(wf["kind"], "Workflow");
        assert_eq!(wf["metadata"]["generateName"], "nightly-");
        assert_eq!(
            wf["metadata"]["labels"]["workflows.argoproj.io/cron-workflow"],
            "nightly"
        );
        assert_eq!(wf["metadata"]["labels"]["events.argoproj.io/trigger"], "t");
        assert_eq!(wf["spec"], json!({"entrypoint": "main"}));
        let broken = json!({"kind": "CronWorkflow", "spec": {}});
        assert!(t
            .resource(Fetched::Object(broken))
            .unwrap_err()
            .contains("no spec.workflowSpec"));
    }

    #[test]
    fn object_names_that_would_escape_a_url_are_refused() {
        assert!(valid_object_name("workflow-cm.v1"));
        for bad in ["", "../x", "a/b", "A", "-a", "a."] {
            assert!(!valid_object_name(bad), "{bad}");
        }
    }

    #[test]
    fn fetched_text_is_parsed_and_finished() {
        let t = trigger(Fetch::File("/w/x.yaml".into()), "k8s");
        let pod = t
            .resource(Fetched::Text("apiVersion: v1\nkind: Pod\n".into()))
            .unwrap();
        assert_eq!(pod["metadata"]["generateName"], "t-");
        assert_eq!(pod["metadata"]["labels"]["events.argoproj.io/sensor"], "s");
        let e = t.resource(Fetched::Text("[1, 2".into())).unwrap_err();
        assert!(e.starts_with("file /w/x.yaml: not YAML or JSON"), "{e}");
        let wf = trigger(Fetch::File("/w/x.yaml".into()), "argoWorkflow");
        let e = wf
            .resource(Fetched::Text("{apiVersion: v1, kind: Pod}".into()))
            .unwrap_err();
        assert!(e.contains("takes a Workflow"), "{e}");
    }
}
