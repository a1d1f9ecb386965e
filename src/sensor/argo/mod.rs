//! Argo Events `Sensor` manifests, run unchanged (ARGO-COMPAT.md): an Argo
//! sensor is compiled into tripline's own [`Sensor`](super::Sensor) — its
//! dependencies bound to tripline sources named `<eventSourceName>-<eventName>`,
//! its filters and parameters evaluated over upstream's event shape — so it
//! goes through the same intake, acknowledgement, naming, replies and
//! `/explain` as a native sensor.
//!
//! * [`compile`] — the document → a compiled sensor, warnings, errors.
//! * [`data`] — upstream's `{context, data}` built from the envelope.
//! * [`filter`] — data, expression, context and time filters with their
//!   logical operators; [`expr`] — the govaluate expression language.
//! * [`lua`] — sandboxed Lua 5.1 for script filters and Lua transforms.
//! * [`transform`] — dependency transforms (`jq` via jaq, `script` via [`lua`]).
//! * [`params`] — `dataKey`/`dataTemplate`/`contextKey`/… and sjson `dest`.
//! * [`fetch`] — trigger sources read at fire time (file, ConfigMap,
//!   CronWorkflow).
//! * [`path`] — the gjson path subset; [`gotmpl`] — the Go template subset.
//! * [`idiom`] — native filters `tripline import` writes where they are exact.

pub mod compile;
pub mod cron;
pub mod data;
pub mod expr;
pub mod fetch;
pub mod filter;
pub mod gotmpl;
pub mod idiom;
pub mod import;
pub mod lua;
pub mod params;
pub mod path;
mod spec;
pub mod transform;

/// Whether a YAML document is an Argo Events document, and which kind.
pub fn argo_kind(doc: &serde_json::Value) -> Option<&str> {
    (doc["apiVersion"] == "argoproj.io/v1alpha1")
        .then(|| doc["kind"].as_str())
        .flatten()
}
