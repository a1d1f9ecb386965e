//! What `/metrics` serves, through `prometheus-client` (OpenMetrics text):
//! per-source event counters, trigger outcomes, latency histograms (event →
//! final outcome, each submit call), in-flight/retrying/correlation gauges,
//! dead letters, webhook rejections, reloads and the process's own metrics
//! (read from `/proc/self` on each scrape). The engine owns one [`Stats`];
//! gauges computed elsewhere are set just before a scrape is encoded.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use serde_json::Value;

use crate::outcome::{Status, TriggerOutcome};
use crate::submit::{SubmitError, Submitted, Submitter};

/// The `Content-Type` of [`Stats::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

impl SourceLabel {
    pub fn of(source: &str) -> Self {
        SourceLabel {
            source: source.to_string(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub sensor: String,
    pub trigger: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    pub sensor: String,
    pub trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabels {
    pub source: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubmitLabels {
    /// `created`, `existing`, `permanent`, `transient`, `infrastructure`.
    pub result: String,
}

/// Every `result` of `tripline_submit_duration_seconds`.
const RESULTS: [&str; 5] = [
    "created",
    "existing",
    "permanent",
    "transient",
    "infrastructure",
];

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Event → outcome: 100 µs … ~26 s.
fn event_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 19,
    ))
}

/// One submit call: 100 µs … ~6.5 s.
fn submit_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 17,
    ))
}

/// One source's per-event series, looked up once per source (no label
/// allocation per event).
pub struct SourceSeries {
    pub events: Counter,
    pub matched: Counter,
    pub unmatched: Counter,
    pub seconds: Histogram,
}

/// Everything `/metrics` serves.
pub struct Stats {
    registry: Registry,
    /// Keyed by source name (configuration): `hashbrown`'s fast hash.
    by_source: std::sync::RwLock<hashbrown::HashMap<String, Arc<SourceSeries>>>,
    /// Events received, per source.
    pub events: Family<SourceLabel, Counter>,
    /// Events that matched at least one dependency, per source.
    pub matched: Family<SourceLabel, Counter>,
    pub unmatched: Family<SourceLabel, Counter>,
    /// Messages that could not become events, per source.
    pub poisoned: Family<SourceLabel, Counter>,
    pub created: Counter,
    pub existing: Counter,
    pub invalid: Counter,
    pub unavailable: Counter,
    pub expired: Counter,
    pub panics: Counter,
    pub infrastructure: Counter,
    pub dead_letters: Counter,
    pub reloads: Counter,
    pub reload_failures: Counter,
    pub outcomes: Family<OutcomeLabels, Counter>,
    pub rejections: Family<RejectionLabels, Counter>,
    /// Seconds from an event's arrival at the engine to its final outcome.
    pub event_seconds: Histograms<SourceLabel>,
    /// Seconds per submit call to the target (each attempt).
    pub submit_seconds: Histograms<SubmitLabels>,
    pub in_flight: Gauge,
    pub retrying: Gauge,
    pub correlation_waiting: Family<TriggerLabels, Gauge>,
    pub journal_entries: Gauge,
    pub journal_oldest_seconds: Gauge,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let s = Stats {
            registry: Registry::default(),
            by_source: Default::default(),
            events: Family::default(),
            matched: Family::default(),
            unmatched: Family::default(),
            poisoned: Family::default(),
            created: Counter::default(),
            existing: Counter::default(),
            invalid: Counter::default(),
            unavailable: Counter::default(),
            expired: Counter::default(),
            panics: Counter::default(),
            infrastructure: Counter::default(),
            dead_letters: Counter::default(),
            reloads: Counter::default(),
            reload_failures: Counter::default(),
            outcomes: Family::default(),
            rejections: Family::default(),
            event_seconds: Family::new_with_constructor(event_buckets),
            submit_seconds: Family::new_with_constructor(submit_buckets),
            in_flight: Gauge::default(),
            retrying: Gauge::default(),
            correlation_waiting: Family::default(),
            journal_entries: Gauge::default(),
            journal_oldest_seconds: Gauge::default(),
        };
        // Counters: the `_total` suffix is the encoder's.
        let r = &mut registry;
        r.register(
            "tripline_events",
            "Events received, per source",
            s.events.clone(),
        );
        r.register(
            "tripline_events_matched",
            "Events that matched at least one sensor dependency, per source",
            s.matched.clone(),
        );
        r.register(
            "tripline_events_unmatched",
            "Events that matched no sensor, per source",
            s.unmatched.clone(),
        );
        r.register(
            "tripline_events_poisoned",
            "Messages that could not become events (oversized, unreadable): dead-lettered, acknowledged. Per source",
            s.poisoned.clone(),
        );
        r.register(
            "tripline_objects_created",
            "Objects created",
            s.created.clone(),
        );
        r.register(
            "tripline_objects_existing",
            "Submissions that found the object already there (a redelivery: done)",
            s.existing.clone(),
        );
        r.register(
            "tripline_objects_invalid",
            "Objects rejected (dead-lettered)",
            s.invalid.clone(),
        );
        r.register(
            "tripline_submit_unavailable",
            "Submissions that ran out of retries (the source retries the event)",
            s.unavailable.clone(),
        );
        r.register(
            "tripline_objects_expired",
            "Submissions given up when their event's retry budget ran out (dead-lettered)",
            s.expired.clone(),
        );
        r.register(
            "tripline_events_panicked",
            "Events whose processing panicked (dead-lettered, acknowledged)",
            s.panics.clone(),
        );
        r.register(
            "tripline_submit_infrastructure_errors",
            "Submissions that failed because the target as a whole did (unreachable, 401/403, kind not served, disk full)",
            s.infrastructure.clone(),
        );
        r.register(
            "tripline_dead_letters",
            "Records written to the dead-letter file",
            s.dead_letters.clone(),
        );
        r.register(
            "tripline_sensor_reloads",
            "Sensor reloads (file change or SIGHUP) that took effect",
            s.reloads.clone(),
        );
        r.register(
            "tripline_sensor_reload_failures",
            "Sensor reloads refused because the files did not load (the running sensors stay)",
            s.reload_failures.clone(),
        );
        r.register(
            "tripline_trigger_outcomes",
            "Trigger outcomes by sensor, trigger and status",
            s.outcomes.clone(),
        );
        r.register(
            "tripline_webhook_rejections",
            "Webhook requests refused, by source and status (400, 401, 408, 413, 415, 503)",
            s.rejections.clone(),
        );
        r.register_with_unit(
            "tripline_event_duration",
            "From an event reaching the engine to its final outcome (every trigger submitted, stored or failed), per source",
            Unit::Seconds,
            s.event_seconds.clone(),
        );
        r.register_with_unit(
            "tripline_submit_duration",
            "One submit call to the target (each attempt), by result",
            Unit::Seconds,
            s.submit_seconds.clone(),
        );
        r.register(
            "tripline_events_in_flight",
            "Events being processed now",
            s.in_flight.clone(),
        );
        r.register(
            "tripline_events_retrying",
            "Events whose last delivery ended unavailable, waiting for a retry",
            s.retrying.clone(),
        );
        r.register(
            "tripline_correlation_waiting",
            "Dependency events stored and waiting for their partners, per trigger (as this replica last wrote them)",
            s.correlation_waiting.clone(),
        );
        r.register(
            "tripline_journal_entries",
            "Webhook deliveries waiting in the journal",
            s.journal_entries.clone(),
        );
        r.register(
            "tripline_journal_oldest_seconds",
            "Age of the oldest journal entry",
            s.journal_oldest_seconds.clone(),
        );
        registry.register_collector(Box::new(Process));
        // The submit results are a fixed set: served from the start.
        for result in RESULTS {
            let _ = s.submit_seconds.get_or_create(&SubmitLabels {
                result: result.to_string(),
            });
        }
        Stats { registry, ..s }
    }

    /// Serves the process's config reload counters (kept across the
    /// generations a reload starts).
    pub fn register_config_reloads(&mut self, ok: Counter, refused: Counter) {
        self.registry.register(
            "tripline_config_reloads",
            "Config file changes that checked out and started a new generation",
            ok,
        );
        self.registry.register(
            "tripline_config_reload_failures",
            "Config file changes refused (the running config stays)",
            refused,
        );
    }

    /// `source`'s per-event series (created at 0 on first use).
    pub fn source(&self, source: &str) -> Arc<SourceSeries> {
        if let Some(s) = self
            .by_source
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(source)
        {
            return s.clone();
        }
        let l = SourceLabel::of(source);
        let series = Arc::new(SourceSeries {
            events: self.events.get_or_create(&l).clone(),
            matched: self.matched.get_or_create(&l).clone(),
            unmatched: self.unmatched.get_or_create(&l).clone(),
            seconds: self.event_seconds.get_or_create(&l).clone(),
        });
        self.by_source
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(source.to_string())
            .or_insert(series)
            .clone()
    }

    /// Starts `source`'s per-source series at 0, so that they are served
    /// (and rate() works) before its first event.
    pub fn declare_source(&self, source: &str) {
        self.source(source);
        let _ = self.poisoned.get_or_create(&SourceLabel::of(source));
    }

    pub fn count(&self, t: &TriggerOutcome) {
        let status = serde_json::to_value(t.status).unwrap_or_default();
        self.outcomes
            .get_or_create(&OutcomeLabels {
                sensor: t.sensor.clone(),
                trigger: t.trigger.clone(),
                status: status.as_str().unwrap_or_default().to_string(),
            })
            .inc();
        let c = match t.status {
            Status::Created => &self.created,
            Status::Existing => &self.existing,
            Status::Invalid => &self.invalid,
            Status::Unavailable => &self.unavailable,
            Status::Expired => &self.expired,
            Status::Waiting | Status::Logged => return,
        };
        c.inc();
    }

    /// OpenMetrics text ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Counts an event in `tripline_events_in_flight` while alive (a
/// cancelled future leaves the gauge right too).
pub struct InFlight(Gauge);

impl InFlight {
    pub fn enter(gauge: &Gauge) -> Self {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A [`Submitter`] that times every call into `tripline_submit_duration`.
pub struct Timed {
    inner: Arc<dyn Submitter>,
    seconds: Histograms<SubmitLabels>,
}

impl Timed {
    pub fn new(inner: Arc<dyn Submitter>, stats: &Stats) -> Self {
        Timed {
            inner,
            seconds: stats.submit_seconds.clone(),
        }
    }

    fn observe(&self, started: Instant, result: &str) {
        self.seconds
            .get_or_create(&SubmitLabels {
                result: result.to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

#[async_trait]
impl Submitter for Timed {
    async fn submit(&self, obj: &Value) -> Result<Submitted, SubmitError> {
        let started = Instant::now();
        let r = self.inner.submit(obj).await;
        self.observe(
            started,
            match &r {
                Ok(Submitted::Created) => "created",
                Ok(Submitted::Existing) => "existing",
                Err(SubmitError::Permanent { .. }) => "permanent",
                Err(SubmitError::Transient { .. }) => "transient",
                Err(SubmitError::Infrastructure { .. }) => "infrastructure",
            },
        );
        r
    }

    fn default_namespace(&self) -> Option<&str> {
        self.inner.default_namespace()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, SubmitError> {
        self.inner.get(api_version, kind, namespace, name).await
    }
}

/// The process's own metrics, read from `/proc/self` on each scrape (the
/// names every Prometheus client library uses): resident and virtual
/// memory, CPU seconds, open and maximum file descriptors, threads, start
/// time. Elsewhere than Linux: nothing.
#[derive(Debug)]
struct Process;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on
/// every Linux architecture tripline builds for).
const TICKS: f64 = 100.0;

impl Process {
    fn read() -> Option<ProcessFigures> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the `(comm)`, which may hold spaces.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is field 3 (state): field n is f[n - 3].
        let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kb = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
                .map(|v| v * 1024.0)
        };
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())?;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| {
                l.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3))
                    .and_then(|v| v.parse::<f64>().ok())
            });
        Some(ProcessFigures {
            cpu_seconds: (num(14)? + num(15)?) / TICKS,
            threads: num(20)?,
            start_time: boot + num(22)? / TICKS,
            virtual_bytes: num(23)?,
            resident_bytes: kb("VmRSS:")?,
            open_fds: std::fs::read_dir("/proc/self/fd").ok()?.count() as f64,
            max_fds,
        })
    }
}

struct ProcessFigures {
    cpu_seconds: f64,
    threads: f64,
    start_time: f64,
    virtual_bytes: f64,
    resident_bytes: f64,
    open_fds: f64,
    max_fds: Option<f64>,
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = Process::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(p.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "User and system CPU time spent",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let mut gauge = |name: &str, help: &str, unit: Option<&Unit>, v: f64| {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, unit, g.metric_type())?)
        };
        gauge(
            "process_resident_memory",
            "Resident memory size",
            Some(&Unit::Bytes),
            p.resident_bytes,
        )?;
        gauge(
            "process_virtual_memory",
            "Virtual memory size",
            Some(&Unit::Bytes),
            p.virtual_bytes,
        )?;
        gauge(
            "process_start_time",
            "Start time of the process since the Unix epoch",
            Some(&Unit::Seconds),
            p.start_time,
        )?;
        gauge(
            "process_open_fds",
            "Open file descriptors",
            None,
            p.open_fds,
        )?;
        if let Some(max) = p.max_fds {
            gauge(
                "process_max_fds",
                "Maximum number of open file descriptors",
                None,
                max,
            )?;
        }
        gauge("process_threads", "OS threads", None, p.threads)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, sample: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {sample} in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn counters_histograms_and_process_metrics_are_served() {
        let s = Stats::new();
        s.events.get_or_create(&SourceLabel::of("github")).inc();
        s.count(&TriggerOutcome {
            sensor: "s".into(),
            trigger: "t".into(),
            name: None,
            status: Status::Created,
            message: None,
        });
        s.event_seconds
            .get_or_create(&SourceLabel::of("github"))
            .observe(0.003);
        let text = s.render();
        assert_eq!(
            value(&text, r#"tripline_events_total{source="github"}"#),
            1.0
        );
        assert_eq!(value(&text, "tripline_objects_created_total"), 1.0);
        assert_eq!(
            value(
                &text,
                r#"tripline_trigger_outcomes_total{sensor="s",trigger="t",status="created"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                r#"tripline_event_duration_seconds_count{source="github"}"#
            ),
            1.0
        );
        // 0.003 s lands in the 0.0032 bucket and above, not 0.0016.
        assert!(
            text.contains(
                r#"tripline_event_duration_seconds_bucket{le="0.0016",source="github"} 0"#
            ) || text.contains(
                r#"tripline_event_duration_seconds_bucket{source="github",le="0.0016"} 0"#
            ),
            "{text}"
        );
        assert!(value(&text, "process_resident_memory_bytes") > 1e6);
        assert!(value(&text, "process_open_fds") >= 3.0);
        assert!(value(&text, "process_start_time_seconds") > 1.7e9);
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
