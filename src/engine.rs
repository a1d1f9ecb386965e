//! The engine: event → matches → firings → rendered objects → submissions.
//!
//! [`Engine::process`] is the whole flow for one event and implements the
//! [`Process`] contract sources call. Matching and rendering are pure
//! ([`crate::sensor`]); submitting is [`crate::submit`]; the engine ties them
//! together, keeps the state that belongs to the loaded sensors (correlation,
//! rate-limit buckets) and counts what happened ([`Stats`]).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use async_trait::async_trait;
use futures::future::join_all;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::Value;
use tracing::{info, instrument, warn, Instrument};

use crate::event::Event;
pub use crate::metrics::Stats;
use crate::outcome::{Outcome, Process, Status, TriggerOutcome, WHY_NOT_LIMIT};
use crate::sensor::correlate::{Correlator, Firing, Step};
use crate::sensor::{Explanation, Rendered, SensorSet};
use crate::submit::{submit_with_retry, DeadLetter, SubmitError, Submitted, Submitter};

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
    submitter: Arc<dyn Submitter>,
    dead_letter: DeadLetter,
    pub stats: Stats,
}

impl Engine {
    pub fn new(sensors: SensorSet, submitter: Arc<dyn Submitter>, dead_letter: DeadLetter) -> Self {
        Engine {
            loaded: RwLock::new(Arc::new(Loaded::new(sensors))),
            submitter,
            dead_letter,
            stats: Stats::default(),
        }
    }

    /// The current sensors (a snapshot: a reload does not change it).
    pub fn loaded(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swaps in a new sensor set. Events in flight finish with the old one;
    /// correlation state and rate-limit buckets start afresh.
    pub fn reload(&self, sensors: SensorSet) {
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Loaded::new(sensors));
        self.stats.reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// Where objects go, for logs.
    pub fn describe_target(&self) -> String {
        self.submitter.describe()
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
                    let (s, t) = loaded.sensors.trigger(sensor, trigger);
                    TriggerOutcome {
                        sensor: s.name.clone(),
                        trigger: t.name.clone(),
                        name: None,
                        status: Status::Waiting,
                        message: Some(format!("waiting for `{}`", t.when)),
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
        let (sensor, trigger) = loaded.sensors.trigger(f.sensor, f.trigger);
        let span = tracing::info_span!("trigger", sensor = %sensor.name, trigger = %trigger.name);
        async move {
            let events = sensor.named(&f.events);
            let mut out = TriggerOutcome {
                sensor: sensor.name.clone(),
                trigger: trigger.name.clone(),
                name: None,
                status: Status::Invalid,
                message: None,
            };
            let ns = self.submitter.default_namespace();
            let rendered = trigger.render(
                &loaded.sensors.templates,
                &sensor.name,
                primary,
                &events,
                ns,
            );
            let (name, obj) = match rendered {
                Ok(r) => r,
                Err(e) => {
                    warn!(error = %e, "render failed; dead-lettered");
                    let error = format!("render failed: {e}");
                    self.dead_letter.record(
                        &sensor.name,
                        &trigger.name,
                        &events,
                        &trigger.manifest,
                        &error,
                        &Value::Null,
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
                    self.dead_letter.record(
                        &sensor.name,
                        &trigger.name,
                        &events,
                        &obj,
                        &e.to_string(),
                        e.status(),
                    );
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
        let rendered = loaded
            .sensors
            .preview(event, self.submitter.default_namespace());
        (explanation, rendered)
    }
}

#[async_trait]
impl Process for Engine {
    async fn process(&self, event: Event) -> Outcome {
        Engine::process(self, event).await
    }

    fn explain(&self, event: &Event) -> (Explanation, Vec<Rendered>) {
        Engine::explain(self, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Disposition;
    use crate::submit::{SubmitError, Submitted, Submitter};
    use async_trait::async_trait;
    use serde_json::json;
    use std::collections::HashSet;
    use std::sync::Mutex;
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
