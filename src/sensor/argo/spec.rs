//! The serde shape of an Argo Events `Sensor` document, as far as tripline
//! reads it. Parsed tolerantly (see [`super::compile`]): fields not listed
//! here are warnings, not errors.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::filter::FiltersSpec;
use super::params::ParamSpec;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ArgoSensor {
    #[serde(default, rename = "apiVersion")]
    pub(super) _api_version: Option<Value>,
    #[serde(default, rename = "kind")]
    pub(super) _kind: Option<Value>,
    pub(super) metadata: Metadata,
    pub(super) spec: Spec,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Metadata {
    #[serde(default)]
    pub(super) name: String,
    #[serde(default)]
    pub(super) namespace: Option<String>,
    #[serde(default)]
    pub(super) annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub(super) _rest: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Spec {
    #[serde(default)]
    pub(super) dependencies: Vec<Dep>,
    #[serde(default)]
    pub(super) triggers: Vec<TriggerWrap>,
    // Kubernetes and deployment concerns with no meaning in tripline.
    #[serde(default)]
    pub(super) template: Option<Value>,
    #[serde(default)]
    pub(super) event_bus_name: Option<Value>,
    #[serde(default)]
    pub(super) revision_history_limit: Option<Value>,
    #[serde(default)]
    pub(super) logging_fields: Option<Value>,
    #[serde(default)]
    pub(super) replicas: Option<Value>,
    #[serde(default)]
    pub(super) error_on_failed_round: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Dep {
    #[serde(default)]
    pub(super) name: String,
    #[serde(default)]
    pub(super) event_source_name: String,
    #[serde(default)]
    pub(super) event_name: String,
    #[serde(default)]
    pub(super) filters: Option<FiltersSpec>,
    #[serde(default)]
    pub(super) filters_logical_operator: Option<String>,
    #[serde(default)]
    pub(super) transform: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TriggerWrap {
    pub(super) template: Option<Template>,
    #[serde(default)]
    pub(super) parameters: Vec<Value>,
    #[serde(default)]
    pub(super) retry_strategy: Option<RetryStrategy>,
    #[serde(default)]
    pub(super) rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub(super) policy: Option<Value>,
    #[serde(default)]
    pub(super) at_least_once: Option<Value>,
    #[serde(default)]
    pub(super) dlq_trigger: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Template {
    #[serde(default)]
    pub(super) name: String,
    #[serde(default)]
    pub(super) conditions: Option<String>,
    #[serde(default)]
    pub(super) conditions_reset: Option<Value>,
    #[serde(default)]
    pub(super) k8s: Option<ResourceTrigger>,
    #[serde(default)]
    pub(super) argo_workflow: Option<ResourceTrigger>,
    #[serde(default)]
    pub(super) log: Option<Value>,
    /// Every other trigger kind upstream has.
    #[serde(flatten)]
    pub(super) other: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ResourceTrigger {
    #[serde(default)]
    pub(super) operation: Option<String>,
    #[serde(default)]
    pub(super) source: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub(super) parameters: Vec<ParamSpec>,
    #[serde(default)]
    pub(super) args: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RetryStrategy {
    #[serde(default)]
    pub(super) steps: Option<u32>,
    #[serde(default)]
    pub(super) duration: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RateLimit {
    #[serde(default)]
    pub(super) unit: Option<String>,
    #[serde(default)]
    pub(super) requests_per_unit: Option<u32>,
}

/// Trigger kinds upstream has and tripline does not run.
pub(super) const OTHER_KINDS: [&str; 14] = [
    "http",
    "awsLambda",
    "kafka",
    "nats",
    "slack",
    "openWhisk",
    "azureEventHubs",
    "pulsar",
    "custom",
    "email",
    "azureServiceBus",
    "sns",
    "sqs",
    "apacheOpenWhisk",
];
