//! What an event would submit: every trigger it reaches, rendered as if the
//! trigger's condition held with this event alone. Submits nothing.

use serde::Serialize;
use serde_json::Value;

use super::SensorSet;
use crate::event::Event;

/// A rendered object (or the reason it could not be rendered).
#[derive(Debug, Clone, Serialize)]
pub struct Rendered {
    pub sensor: String,
    pub trigger: String,
    /// Whether the trigger's condition holds with only the dependencies this
    /// event satisfies (whatever rendering gave).
    pub fires: bool,
    /// When it does not: the dependencies it still waits for.
    #[serde(rename = "waitsFor", skip_serializing_if = "Vec::is_empty")]
    pub waits_for: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For multi-dependency triggers: which dependencies this event alone
    /// satisfies and what the trigger waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl SensorSet {
    /// Renders every trigger reached by `event` as if its condition held with
    /// this event alone (no correlation state involved). Pure: `tripline test`,
    /// `/explain` and the benchmarks use it.
    pub fn preview(&self, event: &Event, namespace: Option<&str>) -> Vec<Rendered> {
        let sensors = self;
        let mut out = Vec::new();
        for m in sensors.match_event(event) {
            let sensor = &sensors.sensors[m.sensor];
            for t in &sensor.triggers {
                if !t.deps.iter().any(|d| m.deps.contains(d)) {
                    continue;
                }
                let mut sat = vec![false; sensor.dependencies.len()];
                m.deps.iter().for_each(|d| sat[*d] = true);
                let key = match sensor.correlation_key(&sensors.templates, t, &m.deps, event) {
                    Ok(k) if !k.is_empty() => format!(" with key `{k}`"),
                    Ok(_) => String::new(),
                    Err(e) => format!(" (its correlation key cannot be rendered: {e})"),
                };
                let fires = t.condition.eval(&sat);
                let missing: Vec<&str> = t
                    .deps
                    .iter()
                    .filter(|d| !sat[**d])
                    .map(|d| sensor.dependencies[*d].name.as_str())
                    .collect();
                let waits_for: Vec<String> = if fires {
                    Vec::new()
                } else {
                    missing.iter().map(|m| m.to_string()).collect()
                };
                let note = (!fires).then(|| {
                    format!(
                        "waits for `{}`{key}: this event alone leaves {} missing; rendered with this event standing in for every dependency",
                        t.when,
                        missing.join(", ")
                    )
                });
                let events: Vec<(&str, &Event)> = t
                    .deps
                    .iter()
                    .map(|d| (sensor.dependencies[*d].name.as_str(), event))
                    .collect();
                let (object, error) = match &t.action {
                    super::Action::Log { .. } => (None, None),
                    super::Action::Unavailable(reason) => (None, Some(reason.clone())),
                    // A file is read as the firing would; the cluster is
                    // never asked by a preview.
                    super::Action::Fetch(f) => match &f.fetch {
                        super::argo::fetch::Fetch::File(path) => {
                            let read = std::fs::read_to_string(path)
                                .map_err(|e| format!("{}: {e}", f.describe()))
                                .and_then(|text| {
                                    f.resource(super::argo::fetch::Fetched::Text(text))
                                });
                            match read.and_then(|r| {
                                t.render_resource(
                                    &r,
                                    &sensors.templates,
                                    &sensor.name,
                                    event,
                                    &events,
                                    namespace,
                                )
                                .map_err(|e| e.to_string())
                            }) {
                                Ok((_, obj)) => (Some(obj), None),
                                Err(e) => (None, Some(e)),
                            }
                        }
                        _ => (
                            None,
                            Some(format!(
                                "{} is read when the trigger fires; tripline test does not fetch it",
                                f.describe()
                            )),
                        ),
                    },
                    super::Action::Submit => {
                        match t.render(&sensors.templates, &sensor.name, event, &events, namespace)
                        {
                            Ok((_, obj)) => (Some(obj), None),
                            Err(e) => (None, Some(e.to_string())),
                        }
                    }
                };
                let note = match (&t.action, note) {
                    (super::Action::Log { .. }, None) => {
                        Some("log trigger: logs the events, submits nothing".to_string())
                    }
                    (_, note) => note,
                };
                out.push(Rendered {
                    sensor: sensor.name.clone(),
                    trigger: t.name.clone(),
                    fires,
                    waits_for,
                    object,
                    error,
                    note,
                });
            }
        }
        out
    }
}
