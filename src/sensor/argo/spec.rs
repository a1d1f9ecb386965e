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
    pub(super) parameters: Vec<ParamSpec>,
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

/// Go's `encoding/json` matches keys case-insensitively (an exact match
/// first). Renames every mis-cased key of the Argo schema to its real name
/// and says so, `(path, message)` per key (ARGO-COMPAT R1.5). Manifests
/// (`resource`, `inline`), labels, annotations and the pod template are the
/// user's own data and are left alone.
pub(super) fn fold_case(doc: &mut Value) -> Vec<(String, String)> {
    let known = known_keys();
    let mut warnings = Vec::new();
    fold(doc, "", &known, &mut warnings);
    warnings
}

fn fold(v: &mut Value, at: &str, known: &[&'static str], warnings: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if known.contains(&k.as_str()) {
                    continue;
                }
                let mut matches = known.iter().filter(|n| n.eq_ignore_ascii_case(&k));
                if let (Some(real), None) = (matches.next(), matches.next()) {
                    if !map.contains_key(*real) {
                        let val = map.remove(&k).expect("key listed");
                        map.insert(real.to_string(), val);
                        warnings.push((
                            join(at, &k),
                            format!("matched '{real}' case-insensitively, as Go does"),
                        ));
                    }
                }
            }
            for (k, child) in map.iter_mut() {
                let path = join(at, k);
                let users_data = matches!(
                    k.as_str(),
                    "resource" | "inline" | "labels" | "annotations" | "metadata"
                ) || path == "spec.template";
                if !users_data {
                    fold(child, &path, known, warnings);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                fold(item, &format!("{at}[{i}]"), known, warnings);
            }
        }
        _ => {}
    }
}

fn join(at: &str, k: &str) -> String {
    if at.is_empty() {
        k.to_string()
    } else {
        format!("{at}.{k}")
    }
}

/// The key names of the Argo schema tripline reads: the fields serde knows
/// for each struct, and those of the parts kept as raw JSON.
fn known_keys() -> Vec<&'static str> {
    use super::cron::{ByTime, ResetSpec};
    use super::filter::{ContextSpec, DataSpec, ExprSpec, FieldSpec, TimeSpec};
    use super::params::SourceSpec;
    let mut keys: Vec<&'static str> = [
        fields_of::<ArgoSensor>(),
        fields_of::<Spec>(),
        fields_of::<Dep>(),
        fields_of::<TriggerWrap>(),
        fields_of::<ResourceTrigger>(),
        fields_of::<RetryStrategy>(),
        fields_of::<RateLimit>(),
        fields_of::<FiltersSpec>(),
        fields_of::<ContextSpec>(),
        fields_of::<TimeSpec>(),
        fields_of::<ExprSpec>(),
        fields_of::<FieldSpec>(),
        fields_of::<DataSpec>(),
        fields_of::<ParamSpec>(),
        fields_of::<SourceSpec>(),
        fields_of::<ResetSpec>(),
        fields_of::<ByTime>(),
    ]
    .concat();
    // `Template` (flattened: serde lists no fields), trigger sources and
    // the log trigger, read as raw JSON.
    keys.extend([
        "name",
        "conditions",
        "conditionsReset",
        "k8s",
        "argoWorkflow",
        "log",
        "intervalSeconds",
        "resource",
        "inline",
        "file",
        "url",
        "configmap",
        "git",
        "s3",
        "path",
        "verifyCert",
        "namespace",
        "key",
    ]);
    keys.extend(OTHER_KINDS);
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The field names a derived `Deserialize` passes to `deserialize_struct`.
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};
    struct Grab<'a>(&'a mut &'static [&'static str]);
    impl<'de> de::Deserializer<'de> for Grab<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("only structs"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Grab(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mis_cased_keys_are_matched_as_go_does_and_manifests_are_left_alone() {
        assert!(fields_of::<Spec>().contains(&"dependencies"));
        let mut doc = json!({
            "metadata": {"name": "s", "Labels": {"A": "b"}},
            "spec": {
                "Dependencies": [{"name": "d", "eventSourceName": "w", "EventName": "e",
                    "filters": {"DATA": [{"path": "a", "type": "string", "value": ["x"]}]}}],
                "triggers": [{"template": {"name": "t", "k8s": {"operation": "create", "source": {
                    "url": {"path": "http://x", "verifycert": false},
                    "resource": {"apiVersion": "v1", "Kind": "ConfigMap", "Data": {"Path": "p"}}}}}}],
                "template": {"ServiceAccountName": "x"},
            }
        });
        let warnings = fold_case(&mut doc);
        let paths: Vec<&str> = warnings.iter().map(|w| w.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.Dependencies",
                "spec.dependencies[0].EventName",
                "spec.dependencies[0].filters.DATA",
                "spec.triggers[0].template.k8s.source.url.verifycert",
            ]
        );
        assert!(warnings[3].1.contains("'verifyCert'"));
        let d = &doc["spec"]["dependencies"][0];
        assert_eq!(d["eventName"], "e");
        assert_eq!(d["filters"]["data"][0]["path"], "a");
        assert_eq!(
            doc["spec"]["triggers"][0]["template"]["k8s"]["source"]["url"]["verifyCert"],
            false
        );
        // The user's manifest, labels and pod template keep their keys.
        let r = &doc["spec"]["triggers"][0]["template"]["k8s"]["source"]["resource"];
        assert_eq!(r["Kind"], "ConfigMap");
        assert_eq!(r["Data"]["Path"], "p");
        assert_eq!(doc["metadata"]["Labels"]["A"], "b");
        assert_eq!(doc["spec"]["template"]["ServiceAccountName"], "x");
        // An exact key wins: a mis-cased duplicate is left as an unknown field.
        let mut both = json!({"spec": {"dependencies": [], "Dependencies": [1]}});
        assert!(fold_case(&mut both).is_empty());
        assert_eq!(both["spec"]["dependencies"], json!([]));
    }
}
