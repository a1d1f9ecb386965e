//! The engine (event → matches → firings → rendered objects → submissions)
//! and `serve`, which wires sources to it and handles shutdown.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::join_all;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn, Instrument};

use crate::event::Event;
use crate::sensor::correlate::{Correlator, Firing, Step};
use crate::sensor::{Explanation, SensorSet};
use crate::submit::{submit_with_retry, DeadLetter, SubmitError, Submitted, Submitter};

/// What happened to one trigger an event reached.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TriggerOutcome {
    pub sensor: String,
    pub trigger: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Existing,
    /// Stored for correlation; the trigger waits for other dependencies.
    Waiting,
    /// Rendering failed or the API rejected the object: dead-lettered.
    Invalid,
    /// The API could not be reached within the retry budget.
    Unavailable,
}

/// Everything that happened to one event.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub event_id: String,
    pub matched: Vec<TriggerOutcome>,
}

/// What a source should do with the event it delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Every trigger has a final outcome: ack / commit / 200.
    Done,
    /// Some trigger could not be submitted yet: nak / do not commit / 503.
    Retry,
    /// Some object was rejected as invalid (and dead-lettered), the rest
    /// is final: ack (a poison event must not block) / 422.
    Rejected,
}

impl Outcome {
    pub fn disposition(&self) -> Disposition {
        if self.matched.iter().any(|t| t.status == Status::Unavailable) {
            Disposition::Retry
        } else if self.matched.iter().any(|t| t.status == Status::Invalid) {
            Disposition::Rejected
        } else {
            Disposition::Done
        }
    }
}

/// Counters served at `/metrics`.
#[derive(Default)]
pub struct Stats {
    pub events: AtomicU64,
    pub unmatched: AtomicU64,
    pub created: AtomicU64,
    pub existing: AtomicU64,
    pub invalid: AtomicU64,
    pub unavailable: AtomicU64,
}

impl Stats {
    fn count(&self, s: Status) {
        let c = match s {
            Status::Created => &self.created,
            Status::Existing => &self.existing,
            Status::Invalid => &self.invalid,
            Status::Unavailable => &self.unavailable,
            Status::Waiting => return,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, v) in [
            ("tripline_events_total", "Events received.", &self.events),
            (
                "tripline_events_unmatched_total",
                "Events that matched no sensor.",
                &self.unmatched,
            ),
            (
                "tripline_objects_created_total",
                "Objects created.",
                &self.created,
            ),
            (
                "tripline_objects_existing_total",
                "Submissions that found the object already there.",
                &self.existing,
            ),
            (
                "tripline_objects_invalid_total",
                "Objects rejected (dead-lettered).",
                &self.invalid,
            ),
            (
                "tripline_submit_unavailable_total",
                "Submissions that ran out of retries.",
                &self.unavailable,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// Readiness of each source (connected to its broker, listening…).
#[derive(Default)]
pub struct Readiness(Mutex<HashMap<String, (bool, String)>>);

impl Readiness {
    pub fn set(&self, source: &str, ready: bool, detail: impl Into<String>) {
        self.0
            .lock()
            .expect("readiness lock")
            .insert(source.to_string(), (ready, detail.into()));
    }

    /// `(all ready, per-source detail)`.
    pub fn report(&self) -> (bool, Value) {
        let map = self.0.lock().expect("readiness lock");
        let all = map.values().all(|(r, _)| *r);
        let detail = map
            .iter()
            .map(|(k, (r, d))| (k.clone(), serde_json::json!({"ready": r, "detail": d})))
            .collect::<serde_json::Map<_, _>>();
        (all, Value::Object(detail))
    }
}

pub struct Engine {
    pub sensors: SensorSet,
    correlator: Correlator,
    pub submitter: Arc<dyn Submitter>,
    pub dead_letter: DeadLetter,
    limiters: HashMap<(usize, usize), DefaultDirectRateLimiter>,
    pub stats: Stats,
    pub readiness: Readiness,
}

impl Engine {
    pub fn new(sensors: SensorSet, submitter: Arc<dyn Submitter>, dead_letter: DeadLetter) -> Self {
        let mut limiters = HashMap::new();
        for (si, s) in sensors.sensors.iter().enumerate() {
            for (ti, t) in s.triggers.iter().enumerate() {
                if let Some(rl) = &t.rate_limit {
                    let per_minute = NonZeroU32::new(rl.per_minute).unwrap_or(NonZeroU32::MIN);
                    let burst = NonZeroU32::new(rl.burst.unwrap_or(1)).unwrap_or(NonZeroU32::MIN);
                    limiters.insert(
                        (si, ti),
                        RateLimiter::direct(Quota::per_minute(per_minute).allow_burst(burst)),
                    );
                }
            }
        }
        Engine {
            sensors,
            correlator: Correlator::default(),
            submitter,
            dead_letter,
            limiters,
            stats: Stats::default(),
            readiness: Readiness::default(),
        }
    }

    /// Matches, correlates, renders and submits. Returns once every fired
    /// trigger has a final outcome (or ran out of retries).
    #[instrument(skip_all, fields(event_id = %event.id, source = %event.source))]
    pub async fn process(&self, event: Event) -> Outcome {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        let matches = self.sensors.match_event(&event);
        let event = Arc::new(event);
        let steps = self
            .correlator
            .offer(&self.sensors, &matches, &event, Instant::now());
        if steps.is_empty() {
            self.stats.unmatched.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("matched no sensor");
        }
        let primary = &event;
        let futures = steps.into_iter().map(|step| async move {
            match step {
                Step::Fire(f) => self.fire(primary, f).await,
                Step::Waiting { sensor, trigger } => {
                    let s = &self.sensors.sensors[sensor];
                    TriggerOutcome {
                        sensor: s.name.clone(),
                        trigger: s.triggers[trigger].name.clone(),
                        name: None,
                        status: Status::Waiting,
                        message: Some(format!("waiting for `{}`", s.triggers[trigger].when)),
                    }
                }
            }
        });
        let matched = join_all(futures).await;
        for m in &matched {
            self.stats.count(m.status);
        }
        Outcome {
            event_id: event.id.clone(),
            matched,
        }
    }

    async fn fire(&self, primary: &Event, f: Firing) -> TriggerOutcome {
        let sensor = &self.sensors.sensors[f.sensor];
        let trigger = &sensor.triggers[f.trigger];
        let span = tracing::info_span!("trigger", sensor = %sensor.name, trigger = %trigger.name);
        async move {
            let events: Vec<(&str, &Event)> = f
                .events
                .iter()
                .map(|(d, e)| (sensor.dependencies[*d].name.as_str(), e.as_ref()))
                .collect();
            let ids: Vec<&str> = events.iter().map(|(_, e)| e.id.as_str()).collect();
            let mut out = TriggerOutcome {
                sensor: sensor.name.clone(),
                trigger: trigger.name.clone(),
                name: None,
                status: Status::Invalid,
                message: None,
            };
            let (name, obj) = match trigger.render(
                &self.sensors.templates,
                &sensor.name,
                primary,
                &events,
                self.submitter.default_namespace(),
            ) {
                Ok(r) => r,
                Err(e) => {
                    let msg = e.to_string();
                    warn!(error = %msg, "render failed; dead-lettered");
                    self.dead_letter.record(
                        &sensor.name,
                        &trigger.name,
                        &ids,
                        &trigger.manifest,
                        &msg,
                        &Value::Null,
                    );
                    out.message = Some(msg);
                    return out;
                }
            };
            out.name = Some(name.clone());
            if let Some(l) = self.limiters.get(&(f.sensor, f.trigger)) {
                l.until_ready().await;
            }
            match submit_with_retry(self.submitter.as_ref(), &obj, &trigger.retry).await {
                Ok(s) => {
                    info!(name = %name, status = ?s, "submitted");
                    out.status = match s {
                        Submitted::Created => Status::Created,
                        Submitted::Existing => Status::Existing,
                    };
                }
                Err(SubmitError::Transient { message, .. }) => {
                    warn!(name = %name, error = %message, "submit unavailable");
                    out.status = Status::Unavailable;
                    out.message = Some(message);
                }
                Err(e @ SubmitError::Permanent { .. }) => {
                    let msg = e.to_string();
                    let status = match &e {
                        SubmitError::Permanent { status, .. } => status.clone(),
                        _ => Value::Null,
                    };
                    warn!(name = %name, error = %msg, "rejected; dead-lettered");
                    self.dead_letter
                        .record(&sensor.name, &trigger.name, &ids, &obj, &msg, &status);
                    out.message = Some(msg);
                }
            }
            out
        }
        .instrument(span)
        .await
    }

    /// Why the event matches or not, and what each trigger that would fire
    /// on this event alone would submit. Submits nothing.
    pub fn explain(&self, event: &Event) -> (Explanation, Vec<Rendered>) {
        let explanation = self.sensors.explain(event);
        (
            explanation,
            preview(&self.sensors, event, self.submitter.default_namespace()),
        )
    }
}

/// A rendered object (or the reason it could not be rendered).
#[derive(Debug, Clone, Serialize)]
pub struct Rendered {
    pub sensor: String,
    pub trigger: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For multi-dependency triggers: which dependencies this event alone
    /// satisfies and what the trigger waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Renders every trigger reached by `event` as if its condition held with
/// this event alone (no correlation state involved). Pure.
pub fn preview(sensors: &SensorSet, event: &Event, namespace: Option<&str>) -> Vec<Rendered> {
    let mut out = Vec::new();
    for m in sensors.match_event(event) {
        let sensor = &sensors.sensors[m.sensor];
        for t in &sensor.triggers {
            if !t.deps.iter().any(|d| m.deps.contains(d)) {
                continue;
            }
            let mut sat = vec![false; sensor.dependencies.len()];
            m.deps.iter().for_each(|d| sat[*d] = true);
            let note = (!t.condition.eval(&sat)).then(|| {
                format!(
                    "waits for `{}`; rendered with this event standing in for every dependency",
                    t.when
                )
            });
            let events: Vec<(&str, &Event)> = t
                .deps
                .iter()
                .map(|d| (sensor.dependencies[*d].name.as_str(), event))
                .collect();
            let (object, error) =
                match t.render(&sensors.templates, &sensor.name, event, &events, namespace) {
                    Ok((_, obj)) => (Some(obj), None),
                    Err(e) => (None, Some(e.to_string())),
                };
            out.push(Rendered {
                sensor: sensor.name.clone(),
                trigger: t.name.clone(),
                object,
                error,
                note,
            });
        }
    }
    out
}

/// Runs every source until `shutdown`, then gives in-flight work
/// `deadline` to finish.
pub async fn run_sources(
    engine: Arc<Engine>,
    sources: Vec<Box<dyn crate::sources::Source>>,
    shutdown: CancellationToken,
    deadline: std::time::Duration,
) -> Result<(), crate::sources::SourceError> {
    let mut tasks = tokio::task::JoinSet::new();
    for s in sources {
        let (engine, token) = (engine.clone(), shutdown.clone());
        tasks.spawn(async move {
            let name = s.name().to_string();
            (name, s.run(engine, token).await)
        });
    }
    let drain = async {
        let mut first_error = None;
        while let Some(res) = tasks.join_next().await {
            match res {
                Ok((name, Err(e))) => {
                    tracing::error!(source = %name, error = %e, "source failed");
                    first_error.get_or_insert(e);
                    // One source failing stops the process: better a restart
                    // by the supervisor than a half-working bridge.
                    shutdown.cancel();
                }
                Ok((name, Ok(()))) => info!(source = %name, "source stopped"),
                Err(e) => {
                    tracing::error!(error = %e, "source task panicked");
                    shutdown.cancel();
                }
            }
        }
        first_error
    };
    let first_error = tokio::select! {
        e = drain => e,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(deadline).await } => {
            warn!(deadline_s = deadline.as_secs(), "shutdown deadline passed; abandoning in-flight work (it will be redelivered)");
            None
        }
    };
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
