//! What a user writes in `sensors/*.yaml`: serde types, strict (unknown
//! fields are errors). Compiled into [`super::Sensor`] by [`super::load()`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::filter::FilterSpec;
pub use crate::backoff::RetryPolicy;

pub const API_VERSION: &str = "tripline.dev/v1alpha1";
pub const KIND: &str = "Sensor";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SensorDoc {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: SensorSpec,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SensorSpec {
    pub dependencies: Vec<DependencySpec>,
    pub triggers: Vec<TriggerSpec>,
    /// How long a dependency's event waits for the others of a multi-dependency
    /// trigger (default 10m).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub correlation_window: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DependencySpec {
    pub name: String,
    /// Name of a source declared in `tripline.yaml`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<FilterSpec>,
    /// Correlation key (a template over the event, `"{{body.sha}}"`): a
    /// multi-dependency trigger pairs only events with equal keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Argo Events semantics for this dependency (what `tripline import`
    /// writes when a native filter would not be exact): the filters see
    /// upstream's event shape. Replaces `filters`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argo: Option<ArgoDependencySpec>,
}

/// `argo:` of a dependency.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArgoDependencySpec {
    pub event_source_name: String,
    pub event_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters_logical_operator: Option<String>,
    /// Argo's `transform: {jq}` or `{script}` (Lua), applied to the data
    /// before the filters and the parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TriggerSpec {
    pub name: String,
    /// Boolean over dependency names; default: all dependencies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// What to submit (required unless `log` is given).
    #[serde(default)]
    pub workflow: WorkflowSpec,
    /// Instead of `workflow`: log the events, submit nothing (at most one
    /// line per `intervalSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogSpec>,
    /// Argo Events extras: `conditionsReset` (cron schedules clearing the
    /// stored events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argo: Option<ArgoTriggerSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<ParameterSpec>,
    /// Namespace to create the object in (default: the submit target's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The only namespaces this trigger may create objects in, whatever a
    /// parameter (`dest: metadata.namespace`) puts there; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
}

/// What to submit: exactly one of `manifest`, `file`, `workflowTemplateRef`, `argo`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkflowSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Value>,
    /// Path of a YAML manifest, relative to the sensor file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Name of an Argo `WorkflowTemplate`; becomes a `Workflow` with
    /// `spec.workflowTemplateRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_template_ref: Option<String>,
    /// With `workflowTemplateRef`: reference a `ClusterWorkflowTemplate`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster_scope: bool,
    /// With `workflowTemplateRef`: override the template's entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    /// An Argo trigger template `{k8s: …}` or `{argoWorkflow: …}` (its
    /// `operation`, `source`, `args`): what `tripline import` writes for
    /// trigger sources read at fire time and `submit-from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argo: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterSpec {
    pub name: String,
    /// Handlebars template over the event: `"{{body.after}}"`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Instead of `value`: an Argo parameter source (`dependencyName`,
    /// `dataKey`, `dataTemplate`, …), resolved with Argo's rules over the
    /// dependency's `argo:` event; `dest` is then required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argo: Option<Value>,
    /// With `argo:`: `overwrite` (default), `append` or `prepend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Used when the template refers to a field the event lacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// JSON path in the manifest to insert the value at. Without it, the
    /// value becomes the Argo Workflow argument `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Sustained submissions per minute; excess submissions wait (never dropped).
    pub per_minute: u32,
    /// Submissions allowed at once before the rate applies (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LogSpec {
    #[serde(default)]
    pub interval_seconds: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArgoTriggerSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions_reset: Vec<Value>,
}
