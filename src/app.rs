//! The engine (event → matches → firings → rendered objects → submissions)
//! and `serve`, which wires sources to it and handles shutdown.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
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

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
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
    /// When nothing matched: why not, per dependency on the event's source
    /// (capped at [`WHY_NOT_LIMIT`]). A webhook sender's delivery log then
    /// shows the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub why_not: Vec<crate::sensor::Miss>,
}

/// How many non-matching dependencies an outcome explains.
pub const WHY_NOT_LIMIT: usize = 10;

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
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// Outcomes per `(sensor, trigger, status)`, for which trigger does what.
    per_trigger: Mutex<BTreeMap<(String, String, Status), u64>>,
}

impl Stats {
    fn count(&self, t: &TriggerOutcome) {
        *self
            .per_trigger
            .lock()
            .expect("stats lock")
            .entry((t.sensor.clone(), t.trigger.clone(), t.status))
            .or_default() += 1;
        let c = match t.status {
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
            (
                "tripline_sensor_reloads_total",
                "Sensor reloads (SIGHUP) that took effect.",
                &self.reloads,
            ),
            (
                "tripline_sensor_reload_failures_total",
                "Sensor reloads refused because the files did not load.",
                &self.reload_failures,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        let name = "tripline_trigger_outcomes_total";
        out.push_str(&format!("# HELP {name} Trigger outcomes by sensor, trigger and status.\n# TYPE {name} counter\n"));
        for ((sensor, trigger, status), n) in self.per_trigger.lock().expect("stats lock").iter() {
            let status = serde_json::to_value(status).unwrap_or_default();
            let status = status.as_str().unwrap_or_default();
            out.push_str(&format!(
                "{name}{{sensor=\"{sensor}\",trigger=\"{trigger}\",status=\"{status}\"}} {n}\n"
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

/// The sensors and the state that belongs to them (correlation, rate-limit
/// buckets): replaced as a whole when sensors are reloaded.
pub struct Loaded {
    pub sensors: SensorSet,
    correlator: Correlator,
    limiters: HashMap<(usize, usize), DefaultDirectRateLimiter>,
}

impl Loaded {
    fn new(sensors: SensorSet) -> Self {
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
        Loaded {
            sensors,
            correlator: Correlator::default(),
            limiters,
        }
    }
}

pub struct Engine {
    loaded: RwLock<Arc<Loaded>>,
    pub submitter: Arc<dyn Submitter>,
    pub dead_letter: DeadLetter,
    pub stats: Stats,
    pub readiness: Readiness,
}

impl Engine {
    pub fn new(sensors: SensorSet, submitter: Arc<dyn Submitter>, dead_letter: DeadLetter) -> Self {
        Engine {
            loaded: RwLock::new(Arc::new(Loaded::new(sensors))),
            submitter,
            dead_letter,
            stats: Stats::default(),
            readiness: Readiness::default(),
        }
    }

    /// The current sensors (a snapshot: a reload does not change it).
    pub fn loaded(&self) -> Arc<Loaded> {
        self.loaded.read().expect("sensors lock").clone()
    }

    /// Swaps in a new sensor set. Events in flight finish with the old one;
    /// correlation state and rate-limit buckets start afresh.
    pub fn reload(&self, sensors: SensorSet) {
        *self.loaded.write().expect("sensors lock") = Arc::new(Loaded::new(sensors));
    }

    /// Matches, correlates, renders and submits. Returns once every fired
    /// trigger has a final outcome (or ran out of retries).
    #[instrument(skip_all, fields(event_id = %event.id, source = %event.source))]
    pub async fn process(&self, event: Event) -> Outcome {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        let loaded = self.loaded();
        let matches = loaded.sensors.match_event(&event);
        let event = Arc::new(event);
        let steps = loaded
            .correlator
            .offer(&loaded.sensors, &matches, &event, Instant::now());
        let why_not = if steps.is_empty() {
            self.stats.unmatched.fetch_add(1, Ordering::Relaxed);
            let why = loaded.sensors.why_not(&event, WHY_NOT_LIMIT);
            tracing::debug!(why_not = ?why, "matched no sensor");
            why
        } else {
            Vec::new()
        };
        let (primary, loaded) = (&event, &*loaded);
        let futures = steps.into_iter().map(|step| async move {
            match step {
                Step::Fire(f) => self.fire(loaded, primary, f).await,
                Step::Waiting { sensor, trigger } => {
                    let s = &loaded.sensors.sensors[sensor];
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
            self.stats.count(m);
        }
        Outcome {
            event_id: event.id.clone(),
            matched,
            why_not,
        }
    }

    async fn fire(&self, loaded: &Loaded, primary: &Event, f: Firing) -> TriggerOutcome {
        let sensor = &loaded.sensors.sensors[f.sensor];
        let trigger = &sensor.triggers[f.trigger];
        let span = tracing::info_span!("trigger", sensor = %sensor.name, trigger = %trigger.name);
        async move {
            let events: Vec<(&str, &Event)> = f
                .events
                .iter()
                .map(|(d, e)| (sensor.dependencies[*d].name.as_str(), e.as_ref()))
                .collect();
            let mut out = TriggerOutcome {
                sensor: sensor.name.clone(),
                trigger: trigger.name.clone(),
                name: None,
                status: Status::Invalid,
                message: None,
            };
            let ns = self.submitter.default_namespace();
            let (name, obj) = match trigger.render(
                &loaded.sensors.templates,
                &sensor.name,
                primary,
                &events,
                ns,
            ) {
                Ok(r) => r,
                Err(e) => {
                    let error = SubmitError::Permanent {
                        code: 0,
                        reason: "RenderFailed".into(),
                        message: e.to_string(),
                        status: Value::Null,
                    };
                    warn!(error = %e, "render failed; dead-lettered");
                    self.dead_letter.record(
                        &sensor.name,
                        &trigger.name,
                        &events,
                        &trigger.manifest,
                        &error,
                    );
                    out.message = Some(e.to_string());
                    return out;
                }
            };
            out.name = Some(name.clone());
            if let Some(l) = loaded.limiters.get(&(f.sensor, f.trigger)) {
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
                Err(e) => {
                    warn!(name = %name, error = %e, "rejected; dead-lettered");
                    self.dead_letter
                        .record(&sensor.name, &trigger.name, &events, &obj, &e);
                    out.message = Some(e.to_string());
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
        let loaded = self.loaded();
        let explanation = loaded.sensors.explain(event);
        (
            explanation,
            preview(&loaded.sensors, event, self.submitter.default_namespace()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::submit::{SubmitError, Submitted, Submitter};
    use async_trait::async_trait;
    use serde_json::json;
    use std::collections::HashSet;
    use std::time::Duration;

    /// Records what it is given; answers with a scripted result.
    #[derive(Default)]
    struct Recorder {
        objects: Mutex<Vec<(Instant, Value)>>,
        fail: Mutex<Option<SubmitError>>,
    }

    #[async_trait]
    impl Submitter for Recorder {
        async fn submit(&self, obj: &Value) -> Result<Submitted, SubmitError> {
            if let Some(e) = self.fail.lock().unwrap().clone() {
                return Err(e);
            }
            let mut objs = self.objects.lock().unwrap();
            let name = &obj["metadata"]["name"];
            if objs.iter().any(|(_, o)| &o["metadata"]["name"] == name) {
                return Ok(Submitted::Existing);
            }
            objs.push((Instant::now(), obj.clone()));
            Ok(Submitted::Created)
        }
        fn default_namespace(&self) -> Option<&str> {
            Some("ns")
        }
        fn describe(&self) -> String {
            "recorder".into()
        }
    }

    const SENSORS: &str = r#"
apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {name: pair}
spec:
  dependencies:
    - {name: code, source: src, filters: {path: body.kind, equals: code}}
    - {name: data, source: src, filters: {path: body.kind, equals: data}}
  triggers:
    - name: both
      when: code && data
      workflow: {workflowTemplateRef: wt}
      parameters:
        - {name: rev, value: "{{code.body.rev}}"}
        - {name: key, value: "{{data.body.key}}"}
---
apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {name: limited}
spec:
  dependencies:
    - {name: tick, source: src, filters: {path: body.kind, equals: tick}}
  triggers:
    - name: job
      workflow: {workflowTemplateRef: wt}
      parameters:
        - {name: n, value: "{{body.n}}"}
      retry: {attempts: 2, backoff: 10ms, maxBackoff: 10ms}
      rateLimit: {perMinute: 120, burst: 1}
"#;

    fn engine(dir: &std::path::Path) -> (Engine, Arc<Recorder>) {
        let f = dir.join("s.yaml");
        std::fs::write(&f, SENSORS).unwrap();
        let sources: HashSet<String> = ["src".to_string()].into();
        let set = crate::sensor::load(&[f], Some(&sources)).unwrap();
        let rec = Arc::new(Recorder::default());
        let e = Engine::new(set, rec.clone(), DeadLetter::new(&dir.join("dl.jsonl")));
        (e, rec)
    }

    fn ev(id: &str, body: Value) -> Event {
        let mut e = Event::new("src", b"", body);
        e.id = id.into();
        e
    }

    #[tokio::test]
    async fn correlated_trigger_waits_then_fires_with_both_events() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, rec) = engine(dir.path());
        let first = engine
            .process(ev("c1", json!({"kind": "code", "rev": "abc"})))
            .await;
        assert_eq!(first.matched[0].status, Status::Waiting);
        assert_eq!(
            first.disposition(),
            Disposition::Done,
            "a stored event is acknowledged"
        );
        let second = engine
            .process(ev("d1", json!({"kind": "data", "key": "x.csv"})))
            .await;
        assert_eq!(second.matched[0].status, Status::Created);
        let objs = rec.objects.lock().unwrap();
        assert_eq!(objs.len(), 1);
        let wf = &objs[0].1;
        assert_eq!(
            wf["spec"]["arguments"]["parameters"],
            json!([{"name": "rev", "value": "abc"}, {"name": "key", "value": "x.csv"}])
        );
        assert_eq!(
            wf["metadata"]["annotations"]["tripline.dev/event-id"],
            "c1,d1"
        );
        assert_eq!(wf["metadata"]["namespace"], "ns");
    }

    #[tokio::test]
    async fn nothing_matched_is_done_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine(dir.path());
        let out = engine.process(ev("x", json!({"kind": "other"}))).await;
        assert!(out.matched.is_empty());
        assert_eq!(out.disposition(), Disposition::Done);
        let why: Vec<String> = out
            .why_not
            .iter()
            .map(|m| format!("{}/{}: {}", m.sensor, m.dependency, m.reason))
            .collect();
        assert_eq!(
            why,
            vec![
                "pair/code: body.kind equals \"code\" (seen \"other\"): value does not satisfy the operator",
                "pair/data: body.kind equals \"data\" (seen \"other\"): value does not satisfy the operator",
                "limited/tick: body.kind equals \"tick\" (seen \"other\"): value does not satisfy the operator",
            ]
        );
        assert_eq!(engine.stats.unmatched.load(Ordering::Relaxed), 1);
        assert!(engine
            .stats
            .render()
            .contains("tripline_events_unmatched_total 1"));
    }

    #[tokio::test]
    async fn rate_limit_delays_rather_than_drops() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, rec) = engine(dir.path());
        for n in 0..3 {
            let out = engine
                .process(ev(&format!("t{n}"), json!({"kind": "tick", "n": n})))
                .await;
            assert_eq!(out.matched[0].status, Status::Created);
        }
        let objs = rec.objects.lock().unwrap();
        assert_eq!(objs.len(), 3, "none dropped");
        // 120/min = one every 500ms after a burst of one.
        let spread = objs[2].0 - objs[0].0;
        assert!(
            spread >= Duration::from_millis(900),
            "submissions were not spaced: {spread:?}"
        );
    }

    #[tokio::test]
    async fn transient_and_permanent_failures_map_to_dispositions() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, rec) = engine(dir.path());
        *rec.fail.lock().unwrap() = Some(SubmitError::Transient {
            message: "503".into(),
            retry_after: None,
        });
        let out = engine
            .process(ev("t1", json!({"kind": "tick", "n": 1})))
            .await;
        assert_eq!(out.matched[0].status, Status::Unavailable);
        assert_eq!(out.disposition(), Disposition::Retry);

        *rec.fail.lock().unwrap() = Some(SubmitError::Permanent {
            code: 422,
            reason: "Invalid".into(),
            message: "spec.templates: Required value".into(),
            status: json!({"kind": "Status", "code": 422}),
        });
        let out = engine
            .process(ev("t2", json!({"kind": "tick", "n": 2})))
            .await;
        assert_eq!(out.matched[0].status, Status::Invalid);
        assert_eq!(out.disposition(), Disposition::Rejected);
        let dl = std::fs::read_to_string(dir.path().join("dl.jsonl")).unwrap();
        assert_eq!(dl.lines().count(), 1, "only the rejection is dead-lettered");
        let metrics = engine.stats.render();
        for status in ["unavailable", "invalid"] {
            let line = format!("tripline_trigger_outcomes_total{{sensor=\"limited\",trigger=\"job\",status=\"{status}\"}} 1");
            assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");
        }
        assert!(dl.contains("spec.templates: Required value"));

        // A render failure (missing field, no default) is a rejection too.
        *rec.fail.lock().unwrap() = None;
        let out = engine.process(ev("t3", json!({"kind": "tick"}))).await;
        assert_eq!(out.matched[0].status, Status::Invalid);
        assert!(out.matched[0]
            .message
            .as_deref()
            .unwrap()
            .contains("body.n"));
    }
}
