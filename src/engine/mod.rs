//! The engine: event → matches → firings → rendered objects → submissions.
//!
//! [`Engine::process`] is the whole flow for one event and implements the
//! [`Process`] contract sources call. Matching and rendering are pure
//! ([`crate::sensor`]); submitting is [`crate::submit`]; the engine ties them
//! together, keeps the state that belongs to the loaded sensors (correlation,
//! rate-limit buckets), the retry budget of events that keep coming back
//! unavailable ([`budget`]), and counts what happened ([`Stats`]).
//!
//! Failures by cause: a permanent one is dead-lettered at once; a transient
//! one makes the event come back (nak, hold the commit, 503) until its retry
//! budget runs out, then it is dead-lettered; an infrastructure one (the
//! target as a whole) makes it come back without end, marks the `submit`
//! entry of `/readyz` not ready and is logged once per minute with a count.
//! A panic anywhere in processing is caught: the event is dead-lettered and
//! acknowledged, so it cannot pin a partition or a stream.
//!
//! Longer than most files: about 360 of its lines are unit tests of the flow
//! (fires, waits, retries, budgets, panics) against an in-memory submitter.

pub mod budget;
pub mod correlation;
pub mod fetch;
pub mod recent;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::join_all;
use futures::FutureExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::Value;
use tracing::{error, info, instrument, warn, Instrument};

use crate::event::{Event, EventReads};
pub use crate::metrics::Stats;
use crate::outcome::{panic_message, Outcome, Process, Status, TriggerOutcome, WHY_NOT_LIMIT};
use crate::readiness::ReadinessHandle;
use crate::sensor::{Explanation, Rendered, SensorSet};
use crate::state::{MemoryStore, Store};
use crate::submit::{submit_with_retry, DeadLetter, SubmitError, Submitted, Submitter};
use crate::throttle::Throttle;
use budget::{BudgetSpec, RetryBudget};
use correlation::{Correlation, Firing, Step};

/// How often an ongoing failure of the target is logged (with a count).
const LOG_WINDOW: Duration = Duration::from_secs(60);

/// How often an unmatched event of a sampled (broker) source is explained:
/// working out why-not for every message was a tenth of the no-match path's
/// CPU, for a status page that shows the last 50 events.
pub const EXPLAIN_EVERY: Duration = Duration::from_millis(100);

/// The sensors and the state that belongs to them (correlation, rate-limit
/// buckets): replaced as a whole when sensors are reloaded.
pub struct Loaded {
    pub sensors: SensorSet,
    limiters: HashMap<(usize, usize), DefaultDirectRateLimiter>,
    /// When each log trigger last wrote a line.
    logged: std::sync::Mutex<HashMap<(usize, usize), Instant>>,
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
            limiters,
            logged: std::sync::Mutex::default(),
        }
    }
}

pub struct Engine {
    loaded: RwLock<Arc<Loaded>>,
    submitter: Arc<dyn Submitter>,
    dead_letter: DeadLetter,
    budget: RetryBudget,
    /// Where multi-dependency triggers keep what they wait for.
    correlation: Correlation,
    /// The `submit` entry of `/readyz`, when serving.
    target_health: Option<ReadinessHandle>,
    unavailable_log: Throttle,
    pub stats: Stats,
    /// The last events and their verdicts, rates per source (status page).
    pub recent: recent::Recent,
    /// Sources whose unmatched events are explained only once per
    /// [`EXPLAIN_EVERY`] (Kafka, NATS); every other event is explained.
    /// Keyed by source name (configuration): `hashbrown`'s fast hash.
    sampled: RwLock<hashbrown::HashMap<String, Throttle>>,
}

/// Who reads the outcome of an event settled as unmatched.
#[derive(Clone, Copy)]
enum Keep {
    /// The caller: it is whole.
    All,
    /// Only the status page, which keeps explained outcomes: an unexplained
    /// one is left without its event id.
    Recorded,
}

impl Engine {
    pub fn new(sensors: SensorSet, submitter: Arc<dyn Submitter>, dead_letter: DeadLetter) -> Self {
        let stats = Stats::new();
        let submitter: Arc<dyn Submitter> = Arc::new(crate::metrics::Timed::new(submitter, &stats));
        Engine {
            loaded: RwLock::new(Arc::new(Loaded::new(sensors))),
            submitter,
            dead_letter,
            budget: RetryBudget::new(BudgetSpec::default()),
            correlation: Correlation::new(Arc::new(MemoryStore::default())),
            target_health: None,
            unavailable_log: Throttle::new(LOG_WINDOW),
            stats,
            recent: recent::Recent::default(),
            sampled: RwLock::default(),
        }
    }

    /// Explains the unmatched events of `sources` only once per
    /// [`EXPLAIN_EVERY`] each, from now on (replaces the previous set).
    pub fn explain_sampled(&self, sources: impl IntoIterator<Item = String>) {
        let sampled = sources
            .into_iter()
            .map(|s| (s, Throttle::new(EXPLAIN_EVERY)))
            .collect();
        *self.sampled.write().unwrap_or_else(|e| e.into_inner()) = sampled;
    }

    /// Whether to work out why `event` matched nothing (`now` about now).
    fn explains(&self, event: &Event, now: Instant) -> bool {
        if tracing::enabled!(tracing::Level::DEBUG) {
            return true;
        }
        let sampled = self.sampled.read().unwrap_or_else(|e| e.into_inner());
        sampled
            .get(&event.source)
            .is_none_or(|t| t.hit(now).is_some())
    }

    /// With the retry budget of `limits.retryBudget`.
    pub fn with_budget(mut self, spec: BudgetSpec) -> Self {
        self.budget = RetryBudget::new(spec);
        self
    }

    /// Keeps correlation state in `store` (default: in memory).
    pub fn with_correlation_store(mut self, store: Arc<dyn Store>) -> Self {
        self.correlation = Correlation::new(store);
        self
    }

    /// Reports the submit target's health to `handle` (`/readyz`).
    pub fn with_target_health(mut self, handle: ReadinessHandle) -> Self {
        handle.set(true, self.submitter.describe());
        self.target_health = Some(handle);
        self
    }

    /// The current sensors (a snapshot: a reload does not change it).
    pub fn loaded(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swaps in a new sensor set. Events in flight finish with the old one;
    /// rate-limit buckets start afresh; correlation state is kept for
    /// triggers whose definition did not change (and dropped, logged, for
    /// the others, when next touched).
    pub fn reload(&self, sensors: SensorSet) {
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Loaded::new(sensors));
        self.stats.reloads.inc();
    }

    /// The sources the loaded sensors listen on, sorted.
    pub fn source_names(&self) -> Vec<String> {
        let loaded = self.loaded();
        let mut names: Vec<String> = loaded
            .sensors
            .sensors
            .iter()
            .flat_map(|s| s.dependencies.iter().map(|d| d.source.clone()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Dependency events waiting for partners: `(sensor, trigger, count)`.
    pub fn waiting(&self) -> Vec<(String, String, usize)> {
        self.correlation.waiting()
    }

    /// The dead-letter file's last `n` records (newest last).
    pub fn dead_letters(&self, n: usize) -> Vec<Value> {
        self.dead_letter.tail(n)
    }

    /// `/metrics`.
    pub fn metrics(&self) -> String {
        self.stats.retrying.set(self.budget.retrying() as i64);
        let (written, counted) = (self.dead_letter.written(), self.stats.dead_letters.get());
        if written > counted {
            self.stats.dead_letters.inc_by(written - counted);
        }
        self.correlation.refresh(&self.stats.correlation_waiting);
        self.stats.render()
    }

    /// Matches, correlates, renders and submits. Returns once every fired
    /// trigger has a final outcome (or ran out of retries). A panic inside is
    /// caught: the event is dead-lettered and the outcome is a rejection.
    ///
    /// The span per event is at `debug`: a span is formatted per event at
    /// the level it is enabled, which cost broker sources a fifth of their
    /// throughput at the default `info` for events that log nothing. What
    /// this logs at `info` and above names the event itself (the `trigger`
    /// span of a firing carries `event_id`; the rest have the field).
    #[instrument(level = "debug", skip_all, fields(event_id = %event.id, source = %event.source))]
    pub async fn process(&self, event: Arc<Event>) -> Outcome {
        let series = self.stats.source(&event.source);
        series.events.inc();
        let started = Instant::now();
        let _in_flight = crate::metrics::InFlight::enter(&self.stats.in_flight);
        let last_chance = self.budget.last_chance(|| event.identity(), started);
        let processed = AssertUnwindSafe(self.process_inner(&event, &series, last_chance))
            .catch_unwind()
            .await;
        let outcome = match processed {
            Ok(outcome) => outcome,
            Err(panic) => {
                let what = panic_message(&*panic);
                error!(event_id = %event.id, panic = %what, "processing panicked; the event is dead-lettered and acknowledged");
                self.stats.panics.inc();
                let reason = format!("processing panicked: {what}");
                self.dead_letter
                    .record(
                        "",
                        "",
                        &[("event", &event)],
                        &Value::Null,
                        &reason,
                        &Value::Null,
                    )
                    .await;
                Outcome {
                    event_id: event.id.clone(),
                    matched: vec![TriggerOutcome {
                        sensor: String::new(),
                        trigger: String::new(),
                        name: None,
                        status: Status::Invalid,
                        message: Some(reason),
                    }],
                    why_not: Vec::new(),
                    unexplained: false,
                }
            }
        };
        self.finished(&event, &series, started, &outcome);
        outcome
    }

    /// See [`Process::settle_unmatched`]. An event that matches something
    /// is matched again by `process` (a second filter pass, small next to
    /// rendering and submitting; the sensors may have been reloaded since).
    pub fn settle_unmatched(&self, event: &Event) -> Option<Outcome> {
        self.settle_if(event, |sensors| sensors.match_event(event).is_empty())
    }

    /// See [`Process::reads`].
    pub fn reads(&self, source: &str) -> Option<Arc<EventReads>> {
        self.loaded().sensors.reads(source)
    }

    /// See [`Process::settle_unmatched_reading`].
    pub fn settle_unmatched_reading(
        &self,
        event: &Event,
        kept: Option<&EventReads>,
    ) -> Option<Outcome> {
        self.settle_if(event, |sensors| {
            kept.is_none_or(|k| sensors.reads_within(&event.source, k))
                && sensors.match_event(event).is_empty()
        })
    }

    /// See [`Process::settle_unmatched_built`].
    pub fn settle_unmatched_built(
        &self,
        source: &str,
        taken: Instant,
        build: &mut dyn FnMut(Option<&EventReads>) -> Option<Event>,
    ) -> bool {
        let loaded = self.loaded();
        let Some(event) = build(loaded.sensors.reads_borrowed(source)) else {
            return false;
        };
        debug_assert_eq!(event.source, source);
        // Built for these very sensors: what they read was kept. The
        // caller only asks whether it was settled.
        let settled = self.settle_with(&loaded, &event, taken, Keep::Recorded, |sensors| {
            sensors.match_event(&event).is_empty()
        });
        settled.is_some()
    }

    /// Settles `event` as unmatched if `unmatched` says so of the sensors
    /// loaded now (one snapshot for the decision and the why-not).
    fn settle_if(
        &self,
        event: &Event,
        unmatched: impl FnOnce(&SensorSet) -> bool,
    ) -> Option<Outcome> {
        let started = Instant::now();
        self.settle_with(&self.loaded(), event, started, Keep::All, unmatched)
    }

    /// [`Engine::settle_if`] with the snapshot `loaded`; `started` when
    /// the event reached the engine.
    fn settle_with(
        &self,
        loaded: &Loaded,
        event: &Event,
        started: Instant,
        keep: Keep,
        unmatched: impl FnOnce(&SensorSet) -> bool,
    ) -> Option<Outcome> {
        let settled = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if !unmatched(&loaded.sensors) {
                return None;
            }
            let series = self.stats.source(&event.source);
            series.events.inc();
            let outcome = self.unmatched(loaded, event, &series, started, keep);
            self.finished(event, &series, started, &outcome);
            Some(outcome)
        }));
        settled.unwrap_or(None)
    }

    /// What an event that fired nothing is told: why not (unless sampled
    /// out, see [`Engine::explain_sampled`]; `now` about now); counted as
    /// unmatched.
    fn unmatched(
        &self,
        loaded: &Loaded,
        event: &Event,
        series: &crate::metrics::SourceSeries,
        now: Instant,
        keep: Keep,
    ) -> Outcome {
        series.unmatched.inc();
        let (why_not, unexplained) = if self.explains(event, now) {
            let why = loaded.sensors.why_not(event, WHY_NOT_LIMIT);
            tracing::debug!(event_id = %event.id, why_not = ?why, "matched no sensor");
            (why, false)
        } else {
            (Vec::new(), true)
        };
        Outcome {
            // An outcome only counted (not explained, so the status page
            // does not keep it) and not returned needs no id: a copy per
            // message of a busy topic saved.
            event_id: match keep {
                Keep::Recorded if unexplained => String::new(),
                _ => event.id.clone(),
            },
            matched: Vec::new(),
            why_not,
            unexplained,
        }
    }

    /// The bookkeeping every outcome ends with: the retry budget, the
    /// latency histogram, the status page — with one clock read.
    fn finished(
        &self,
        event: &Event,
        series: &crate::metrics::SourceSeries,
        started: Instant,
        outcome: &Outcome,
    ) {
        let now = Instant::now();
        match outcome.disposition() {
            crate::outcome::Disposition::Retry => self.budget.spend(&event.identity(), now),
            _ => self.budget.settle(|| event.identity()),
        }
        series
            .seconds
            .observe(now.saturating_duration_since(started).as_secs_f64());
        self.recent.record(event, outcome, now);
    }

    async fn process_inner(
        &self,
        event: &Arc<Event>,
        series: &crate::metrics::SourceSeries,
        last_chance: bool,
    ) -> Outcome {
        let loaded = self.loaded();
        let matches = loaded.sensors.match_event(event);
        let steps = self
            .correlation
            .offer(&loaded.sensors, &matches, event)
            .await;
        if steps.is_empty() {
            return self.unmatched(&loaded, event, series, Instant::now(), Keep::All);
        }
        series.matched.inc();
        let loaded = &*loaded;
        let futures = steps.into_iter().map(|step| async move {
            match step {
                Step::Fire(f) => {
                    let out = self.fire(loaded, event, &f, last_chance).await;
                    if out.status != Status::Unavailable {
                        self.correlation.settle(&loaded.sensors, &f).await;
                    }
                    out
                }
                Step::Waiting {
                    sensor,
                    trigger,
                    key,
                    missing,
                } => {
                    let (s, t) = loaded.sensors.trigger(sensor, trigger);
                    let key = if key.is_empty() {
                        String::new()
                    } else {
                        format!(" (key `{key}`)")
                    };
                    TriggerOutcome {
                        sensor: s.name.clone(),
                        trigger: t.name.clone(),
                        name: None,
                        status: Status::Waiting,
                        message: Some(format!(
                            "waiting for `{}`{key}: still missing {}",
                            t.when,
                            missing.join(", ")
                        )),
                    }
                }
                Step::Consumed { sensor, trigger } => {
                    let (s, t) = loaded.sensors.trigger(sensor, trigger);
                    TriggerOutcome {
                        sensor: s.name.clone(),
                        trigger: t.name.clone(),
                        name: None,
                        status: Status::Existing,
                        message: Some("this event already took part in a firing of this trigger".into()),
                    }
                }
                Step::Failed {
                    sensor,
                    trigger,
                    message,
                    retry,
                } => {
                    let (s, t) = loaded.sensors.trigger(sensor, trigger);
                    let status = if retry {
                        warn!(event_id = %event.id, sensor = %s.name, trigger = %t.name, error = %message, "correlation unavailable; the event will be retried");
                        Status::Unavailable
                    } else {
                        warn!(event_id = %event.id, sensor = %s.name, trigger = %t.name, error = %message, "cannot correlate; dead-lettered");
                        self.dead_letter
                            .record(&s.name, &t.name, &[("event", event)], &Value::Null, &message, &Value::Null)
                            .await;
                        Status::Invalid
                    };
                    TriggerOutcome {
                        sensor: s.name.clone(),
                        trigger: t.name.clone(),
                        name: None,
                        status,
                        message: Some(message),
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
            why_not: Vec::new(),
            unexplained: false,
        }
    }

    /// Renders and submits one firing. `last_chance`: the event's retry
    /// budget is spent if this ends transiently unavailable.
    async fn fire(
        &self,
        loaded: &Loaded,
        primary: &Event,
        f: &Firing,
        last_chance: bool,
    ) -> TriggerOutcome {
        let (sensor, trigger) = loaded.sensors.trigger(f.sensor, f.trigger);
        let span = tracing::info_span!("trigger", event_id = %primary.id, sensor = %sensor.name, trigger = %trigger.name);
        async move {
            let events = sensor.named(&f.events);
            let mut out = TriggerOutcome {
                sensor: sensor.name.clone(),
                trigger: trigger.name.clone(),
                name: None,
                status: Status::Invalid,
                message: None,
            };
            let mut fetched = None;
            match &trigger.action {
                crate::sensor::Action::Submit => {}
                crate::sensor::Action::Fetch(f) => match fetch::fetch(f, self.submitter.as_ref(), trigger.namespace.as_deref()).await {
                    Ok(resource) => fetched = Some(resource),
                    Err(e) => {
                        let error = Err(e);
                        return self.settle(out, error, &events, &Value::Null, "", last_chance).await;
                    }
                },
                crate::sensor::Action::Log { interval } => {
                    let now = Instant::now();
                    let mut last = loaded.logged.lock().unwrap_or_else(|e| e.into_inner());
                    let due = last
                        .get(&(f.sensor, f.trigger))
                        .is_none_or(|at| now.duration_since(*at) >= *interval);
                    if due {
                        last.insert((f.sensor, f.trigger), now);
                        for (dependency, e) in &events {
                            info!(dependency = %dependency, event_id = %e.id, event_source = %e.source, data = %e.body, "log trigger");
                        }
                    }
                    out.status = Status::Logged;
                    return out;
                }
                crate::sensor::Action::Unavailable(reason) => {
                    warn!(error = %reason, "trigger cannot submit; dead-lettered");
                    self.dead_letter
                        .record(&sensor.name, &trigger.name, &events, &Value::Null, reason, &Value::Null)
                        .await;
                    out.message = Some(reason.clone());
                    return out;
                }
            }
            let ns = self.submitter.default_namespace();
            let resource = fetched.as_ref().unwrap_or(&trigger.manifest);
            let rendered = trigger.render_resource(resource, &loaded.sensors.templates, &sensor.name, primary, &events, ns);
            let (name, obj) = match rendered {
                Ok(r) => r,
                Err(e) => {
                    warn!(error = %e, "render failed; dead-lettered");
                    let error = format!("render failed: {e}");
                    self.dead_letter
                        .record(&sensor.name, &trigger.name, &events, &trigger.manifest, &error, &Value::Null)
                        .await;
                    out.message = Some(error);
                    return out;
                }
            };
            out.name = Some(name.clone());
            if let Some(l) = loaded.limiters.get(&(f.sensor, f.trigger)) {
                l.until_ready().await;
            }
            let fired = submit_with_retry(self.submitter.as_ref(), &obj, &trigger.retry).await;
            self.settle(out, fired, &events, &obj, &name, last_chance).await
        }
        .instrument(span)
        .await
    }

    /// The outcome of a firing from its submission's (or fetch's) result:
    /// counted, logged, dead-lettered when final and failed.
    async fn settle(
        &self,
        mut out: TriggerOutcome,
        fired: Result<Submitted, SubmitError>,
        events: &[(&str, &Event)],
        obj: &Value,
        name: &str,
        last_chance: bool,
    ) -> TriggerOutcome {
        let (sensor, trigger) = (out.sensor.clone(), out.trigger.clone());
        match fired {
            Ok(s) => {
                info!(name = %name, status = ?s, "submitted");
                self.target_ok();
                out.status = match s {
                    Submitted::Created => Status::Created,
                    Submitted::Existing => Status::Existing,
                };
            }
            Err(SubmitError::Infrastructure { message, .. }) => {
                self.stats.infrastructure.inc();
                self.target_down(&message);
                out.status = Status::Unavailable;
                out.message = Some(message);
            }
            Err(SubmitError::Transient { message, .. }) if last_chance => {
                let error = format!("retry budget spent; last error: {message}");
                warn!(name = %name, error = %message, "retry budget spent; dead-lettered");
                self.dead_letter
                    .record(&sensor, &trigger, events, obj, &error, &Value::Null)
                    .await;
                out.status = Status::Expired;
                out.message = Some(error);
            }
            Err(SubmitError::Transient { message, .. }) => {
                if let Some(n) = self.unavailable_log.hit(Instant::now()) {
                    warn!(name = %name, error = %message, failures = n, "submission unavailable; the event will be retried");
                }
                out.status = Status::Unavailable;
                out.message = Some(message);
            }
            Err(e) => {
                warn!(name = %name, error = %e, "rejected; dead-lettered");
                self.dead_letter
                    .record(&sensor, &trigger, events, obj, &e.to_string(), e.status())
                    .await;
                out.message = Some(e.to_string());
            }
        }
        out
    }

    fn target_ok(&self) {
        if let Some(h) = &self.target_health {
            h.set_ready_with(|| self.submitter.describe());
        }
    }

    fn target_down(&self, message: &str) {
        if let Some(n) = self.unavailable_log.hit(Instant::now()) {
            error!(error = %message, failures = n, target = %self.submitter.describe(), "submit target unavailable; events are retried (not dead-lettered)");
        }
        if let Some(h) = &self.target_health {
            h.set(false, format!("{}: {message}", self.submitter.describe()));
        }
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
    async fn process(&self, event: Arc<Event>) -> Outcome {
        Engine::process(self, event).await
    }

    fn settle_unmatched(&self, event: &Event) -> Option<Outcome> {
        Engine::settle_unmatched(self, event)
    }

    fn reads(&self, source: &str) -> Option<Arc<EventReads>> {
        Engine::reads(self, source)
    }

    fn settle_unmatched_reading(
        &self,
        event: &Event,
        kept: Option<&EventReads>,
    ) -> Option<Outcome> {
        Engine::settle_unmatched_reading(self, event, kept)
    }

    fn settle_unmatched_built(
        &self,
        source: &str,
        taken: Instant,
        build: &mut dyn FnMut(Option<&EventReads>) -> Option<Event>,
    ) -> bool {
        Engine::settle_unmatched_built(self, source, taken, build)
    }

    fn explain(&self, event: &Event) -> (Explanation, Vec<Rendered>) {
        Engine::explain(self, event)
    }

    async fn poisoned(&self, source: &str, reference: &str, reason: &str) {
        warn!(
            source,
            reference, reason, "message cannot be processed; dead-lettered and acknowledged"
        );
        self.stats
            .poisoned
            .get_or_create(&crate::metrics::SourceLabel::of(source))
            .inc();
        self.dead_letter
            .record_unprocessable(source, reference, reason)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Disposition;
    use crate::submit::{SubmitError, Submitted, Submitter};
    use async_trait::async_trait;
    use serde_json::json;
    use std::sync::atomic::Ordering;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Records what it is given; answers with a scripted result.
    #[derive(Default)]
    struct Recorder {
        objects: Mutex<Vec<(Instant, Value)>>,
        fail: Mutex<Option<SubmitError>>,
        panic: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl Submitter for Recorder {
        async fn submit(&self, obj: &Value) -> Result<Submitted, SubmitError> {
            if self.panic.load(Ordering::SeqCst) {
                panic!("submitter exploded");
            }
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
        let sources: crate::sensor::SourceCatalog = ["src"].into_iter().collect();
        let set = crate::sensor::load(&[f], &sources).unwrap();
        let rec = Arc::new(Recorder::default());
        let e = Engine::new(set, rec.clone(), DeadLetter::new(&dir.join("dl.jsonl")));
        (e, rec)
    }

    fn ev(id: &str, body: Value) -> Arc<Event> {
        let mut e = Event::new("src", b"", body);
        e.id = id.into();
        Arc::new(e)
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
        assert_eq!(
            engine
                .stats
                .unmatched
                .get_or_create(&crate::metrics::SourceLabel::of("src"))
                .get(),
            1
        );
        assert!(engine
            .metrics()
            .contains("tripline_events_unmatched_total{source=\"src\"} 1"));
    }

    /// Settling an unmatched event at once tells, counts and records what
    /// processing it would; an event that matches is left to `process`,
    /// untouched and uncounted.
    #[tokio::test]
    async fn settling_at_once_equals_processing_and_leaves_matches_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (processed, _) = engine(dir.path());
        let (settled, rec) = engine(dir.path());
        let by_process = processed.process(ev("x", json!({"kind": "other"}))).await;
        let at_once = settled
            .settle_unmatched(&ev("x", json!({"kind": "other"})))
            .expect("nothing matches: settled");
        assert_eq!(
            serde_json::to_value(&at_once).unwrap(),
            serde_json::to_value(&by_process).unwrap()
        );
        assert!(!at_once.why_not.is_empty());
        let counted = |e: &Engine| {
            let m = e.metrics();
            (
                m.contains("tripline_events_total{source=\"src\"} 1"),
                m.contains("tripline_events_unmatched_total{source=\"src\"} 1"),
            )
        };
        assert_eq!(counted(&settled), (true, true));
        assert_eq!(counted(&settled), counted(&processed));
        let listed: Vec<String> = (settled.recent.events().iter())
            .map(|s| s.outcome.event_id.clone())
            .collect();
        assert_eq!(listed, ["x"]);

        // Read in part: settled only when what was kept covers what the
        // sensors read (`body.kind` here); a body parsed for less (the
        // sensors were reloaded meanwhile) is left to `process`.
        let reads = settled.reads("src").expect("the sensor reads paths");
        let other = ev("y", json!({"kind": "other", "big": [1, 2]}));
        let part = Event {
            body: reads.body.parse(other.body.to_string().as_bytes()).unwrap(),
            ..(*other).clone()
        };
        assert_eq!(part.body, json!({"kind": "other"}));
        assert!(settled
            .settle_unmatched_reading(&part, Some(&EventReads::default()))
            .is_none());
        let read_in_part = settled.settle_unmatched_reading(&part, Some(&reads));
        let whole = processed.settle_unmatched(&other);
        assert_eq!(
            serde_json::to_value(read_in_part.expect("settled")).unwrap(),
            serde_json::to_value(whole.expect("settled")).unwrap()
        );

        // Built and settled under one snapshot: the builder is handed what
        // the sensors read, and the outcome is the whole event's.
        let z = ev("z", json!({"kind": "other", "big": [3]}));
        let mut handed = Vec::new();
        let built = settled.settle_unmatched_built("src", Instant::now(), &mut |r| {
            handed.push(r.cloned());
            Some(Event {
                body: r?.body.parse(z.body.to_string().as_bytes()).ok()?,
                ..(*z).clone()
            })
        });
        assert_eq!(handed, [Some((*reads).clone())]);
        assert!(built, "settled");
        // What the status page keeps of it is the whole event's outcome.
        assert_eq!(
            serde_json::to_value(&settled.recent.events()[0].outcome).unwrap(),
            serde_json::to_value(processed.settle_unmatched(&z).expect("settled")).unwrap()
        );
        // Nothing built: nothing settled, nothing counted.
        assert!(!settled.settle_unmatched_built("src", Instant::now(), &mut |_| None));
        assert_eq!(settled.recent.events().len(), 3);

        let tick = ev("t", json!({"kind": "tick", "n": 1}));
        assert!(settled.settle_unmatched(&tick).is_none());
        assert!(settled
            .settle_unmatched_reading(&tick, Some(&reads))
            .is_none());
        assert!(
            !settled.settle_unmatched_built("src", Instant::now(), &mut |_| Some((*tick).clone()))
        );
        assert!(rec.objects.lock().unwrap().is_empty());
        assert_eq!(settled.recent.events().len(), 3, "not recorded");
        assert!(settled
            .metrics()
            .contains("tripline_events_total{source=\"src\"} 3"));
        let out = settled.process(tick).await;
        assert_eq!(out.matched[0].status, Status::Created);
        assert_eq!(rec.objects.lock().unwrap().len(), 1);
        assert!(settled
            .metrics()
            .contains("tripline_events_total{source=\"src\"} 4"));
    }

    /// A sampled (broker) source's unmatched events are explained once per
    /// [`EXPLAIN_EVERY`]; the rest say they were not; other sources always.
    #[tokio::test]
    async fn a_sampled_source_explains_unmatched_events_now_and_then() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine(dir.path());
        // (Unit tests run without a subscriber: DEBUG is not enabled.)
        let first = engine.process(ev("a", json!({"kind": "other"}))).await;
        let second = engine.process(ev("b", json!({"kind": "other"}))).await;
        assert!(!first.why_not.is_empty() && !second.why_not.is_empty());
        assert!(!first.unexplained && !second.unexplained);
        engine.explain_sampled(["src".to_string()]);
        let first = engine.process(ev("c", json!({"kind": "other"}))).await;
        let second = engine.process(ev("d", json!({"kind": "other"}))).await;
        assert!(!first.why_not.is_empty() && !first.unexplained);
        assert!(second.why_not.is_empty() && second.unexplained);
        assert_eq!(second.disposition(), Disposition::Done);
        tokio::time::sleep(EXPLAIN_EVERY).await;
        let later = engine.process(ev("e", json!({"kind": "other"}))).await;
        assert!(!later.why_not.is_empty() && !later.unexplained);
        // Both counted as unmatched either way.
        assert!(engine
            .metrics()
            .contains("tripline_events_unmatched_total{source=\"src\"} 5"));
        // The status page lists the explained ones only (the newest first).
        let seen = engine.recent.events();
        let listed: Vec<&str> = seen.iter().map(|s| s.outcome.event_id.as_str()).collect();
        assert_eq!(listed, ["e", "c", "b", "a"], "d is counted, not listed");
        assert!(seen.iter().all(|s| !s.outcome.unexplained));
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
        let metrics = engine.metrics();
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

    fn dead_letters(dir: &std::path::Path) -> Vec<Value> {
        std::fs::read_to_string(dir.join("dl.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_panic_is_caught_dead_lettered_and_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, rec) = engine(dir.path());
        rec.panic.store(true, Ordering::SeqCst);
        let out = engine
            .process(ev("boom", json!({"kind": "tick", "n": 1})))
            .await;
        assert_eq!(
            out.disposition(),
            Disposition::Rejected,
            "acknowledged, never stuck"
        );
        assert!(out.matched[0]
            .message
            .as_deref()
            .unwrap()
            .contains("submitter exploded"));
        let dl = dead_letters(dir.path());
        assert_eq!(dl.len(), 1);
        assert_eq!(dl[0]["eventIds"], json!(["boom"]));
        assert!(engine
            .metrics()
            .contains("tripline_events_panicked_total 1"));
        // The engine goes on.
        rec.panic.store(false, Ordering::SeqCst);
        let out = engine
            .process(ev("after", json!({"kind": "tick", "n": 2})))
            .await;
        assert_eq!(out.matched[0].status, Status::Created);
    }

    #[tokio::test]
    async fn infrastructure_failures_retry_without_end_and_show_on_readyz() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, rec) = engine(dir.path());
        let readiness = Arc::new(crate::readiness::Readiness::default());
        let engine = engine
            .with_budget(BudgetSpec {
                max_attempts: Some(2),
                max_age: Duration::from_secs(3600),
            })
            .with_target_health(readiness.handle("submit"));
        *rec.fail.lock().unwrap() = Some(SubmitError::Infrastructure {
            message: "403 Forbidden: RBAC".into(),
            retry_after: None,
        });
        for _ in 0..5 {
            let out = engine
                .process(ev("t1", json!({"kind": "tick", "n": 1})))
                .await;
            assert_eq!(out.disposition(), Disposition::Retry);
        }
        assert!(
            dead_letters(dir.path()).is_empty(),
            "never the event's fault"
        );
        let (ready, detail) = readiness.report();
        assert!(!ready);
        assert!(detail["submit"]["detail"]
            .as_str()
            .unwrap()
            .contains("403 Forbidden"));
        assert!(engine.metrics().contains("tripline_events_retrying 1"));
        *rec.fail.lock().unwrap() = None;
        let out = engine
            .process(ev("t1", json!({"kind": "tick", "n": 1})))
            .await;
        assert_eq!(out.matched[0].status, Status::Created);
        assert!(readiness.report().0, "ready again once the target answers");
        assert!(engine.metrics().contains("tripline_events_retrying 0"));
    }

    #[tokio::test]
    async fn transient_failures_expire_when_the_budget_is_spent() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, rec) = engine(dir.path());
        let engine = engine.with_budget(BudgetSpec {
            max_attempts: Some(3),
            max_age: Duration::from_secs(3600),
        });
        *rec.fail.lock().unwrap() = Some(SubmitError::Transient {
            message: "503 ServiceUnavailable".into(),
            retry_after: None,
        });
        for _ in 0..2 {
            let out = engine
                .process(ev("t1", json!({"kind": "tick", "n": 1})))
                .await;
            assert_eq!(out.matched[0].status, Status::Unavailable);
        }
        let out = engine
            .process(ev("t1", json!({"kind": "tick", "n": 1})))
            .await;
        assert_eq!(out.matched[0].status, Status::Expired);
        assert_eq!(out.disposition(), Disposition::Rejected);
        let dl = dead_letters(dir.path());
        assert_eq!(dl.len(), 1);
        assert!(dl[0]["error"]
            .as_str()
            .unwrap()
            .contains("retry budget spent; last error: 503"));
        assert_eq!(
            dl[0]["object"]["kind"], "Workflow",
            "the object is kept for a replay"
        );
        assert!(engine
            .metrics()
            .contains("tripline_objects_expired_total 1"));
    }

    #[tokio::test]
    async fn a_reload_keeps_the_state_of_unchanged_triggers_only() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, rec) = engine(dir.path());
        let reload = |text: &str| {
            let f = dir.path().join("s.yaml");
            std::fs::write(&f, text).unwrap();
            let sources: crate::sensor::SourceCatalog = ["src"].into_iter().collect();
            crate::sensor::load(&[f], &sources).unwrap()
        };
        let out = engine
            .process(ev("c1", json!({"kind": "code", "rev": "a"})))
            .await;
        assert_eq!(out.matched[0].status, Status::Waiting);
        engine.reload(reload(SENSORS));
        let out = engine
            .process(ev("d1", json!({"kind": "data", "key": "k"})))
            .await;
        assert_eq!(out.matched[0].status, Status::Created, "unchanged: kept");
        assert_eq!(rec.objects.lock().unwrap().len(), 1);

        engine
            .process(ev("c2", json!({"kind": "code", "rev": "b"})))
            .await;
        engine.reload(reload(
            &SENSORS.replace("when: code && data", "when: data && code"),
        ));
        let out = engine
            .process(ev("d2", json!({"kind": "data", "key": "k"})))
            .await;
        assert_eq!(out.matched[0].status, Status::Waiting, "changed: dropped");
    }
}
