//! Counters served at `/metrics` (Prometheus text format), kept by the engine.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::outcome::{Status, TriggerOutcome};

/// Counters served at `/metrics`.
#[derive(Default)]
pub struct Stats {
    pub events: AtomicU64,
    pub unmatched: AtomicU64,
    pub created: AtomicU64,
    pub existing: AtomicU64,
    pub invalid: AtomicU64,
    pub unavailable: AtomicU64,
    pub expired: AtomicU64,
    /// Events whose processing panicked (dead-lettered, acknowledged).
    pub panics: AtomicU64,
    /// Events a source could not turn into an event at all (oversized,
    /// unreadable), dead-lettered and acknowledged.
    pub poisoned: AtomicU64,
    /// Submissions that failed because the target as a whole did.
    pub infrastructure: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// Outcomes per `(sensor, trigger, status)`, for which trigger does what.
    per_trigger: Mutex<BTreeMap<(String, String, Status), u64>>,
}

impl Stats {
    pub fn count(&self, t: &TriggerOutcome) {
        *self
            .per_trigger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((t.sensor.clone(), t.trigger.clone(), t.status))
            .or_default() += 1;
        let c = match t.status {
            Status::Created => &self.created,
            Status::Existing => &self.existing,
            Status::Invalid => &self.invalid,
            Status::Unavailable => &self.unavailable,
            Status::Expired => &self.expired,
            Status::Waiting | Status::Logged => return,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text format; `retrying` is the gauge of events waiting
    /// for a retry.
    pub fn render(&self, retrying: usize) -> String {
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
                "tripline_objects_expired_total",
                "Submissions given up when their event's retry budget ran out (dead-lettered).",
                &self.expired,
            ),
            (
                "tripline_events_panicked_total",
                "Events whose processing panicked (dead-lettered, acknowledged).",
                &self.panics,
            ),
            (
                "tripline_events_poisoned_total",
                "Messages that could not become events (oversized, unreadable): dead-lettered, acknowledged.",
                &self.poisoned,
            ),
            (
                "tripline_submit_infrastructure_errors_total",
                "Submissions that failed because the target as a whole did (unreachable, 401/403, kind not served, disk full).",
                &self.infrastructure,
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
        let name = "tripline_events_retrying";
        out.push_str(&format!(
            "# HELP {name} Events whose last delivery ended unavailable, waiting for a retry.\n# TYPE {name} gauge\n{name} {retrying}\n"
        ));
        let name = "tripline_trigger_outcomes_total";
        out.push_str(&format!("# HELP {name} Trigger outcomes by sensor, trigger and status.\n# TYPE {name} counter\n"));
        for ((sensor, trigger, status), n) in self
            .per_trigger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let status = serde_json::to_value(status).unwrap_or_default();
            let status = status.as_str().unwrap_or_default();
            out.push_str(&format!(
                "{name}{{sensor=\"{sensor}\",trigger=\"{trigger}\",status=\"{status}\"}} {n}\n"
            ));
        }
        out
    }
}
