//! The contract between sources and the engine: a source hands an [`Event`]
//! to a [`Process`] and gets back an [`Outcome`], whose [`Disposition`] tells
//! it what to do with the delivery (ack, retry, or acknowledge a rejection).
//! Sources know this file, never the engine behind it.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::event::{Event, EventReads};
use crate::sensor::{Explanation, Miss, Rendered};

/// What a source hands its events to.
#[async_trait]
pub trait Process: Send + Sync {
    /// Matches, correlates, renders and submits; returns once every fired
    /// trigger has a final outcome (or ran out of retries). Never panics: a
    /// panic inside is caught, dead-lettered and answered as a rejection.
    async fn process(&self, event: Arc<Event>) -> Outcome;
    /// If no sensor matches `event`, settles it where it stands — counted,
    /// recorded and explained as [`process`](Self::process) would — and
    /// returns that outcome; otherwise `None`, and the caller processes it.
    /// Synchronous and cheap, so that an event nothing wants (most of a busy
    /// topic's traffic) needs no task, no queue and no permit. Never panics
    /// (a panic inside answers `None`: `process` then deals with it).
    fn settle_unmatched(&self, event: &Event) -> Option<Outcome>;
    /// What the sensors on `source` read of an event; `None` when some read
    /// all of its body. An event built with just that (its body parsed with
    /// [`BodyReads::parse`](crate::event::BodyReads::parse)) can be given to
    /// [`settle_unmatched_reading`](Self::settle_unmatched_reading).
    fn reads(&self, source: &str) -> Option<Arc<EventReads>>;
    /// [`settle_unmatched`](Self::settle_unmatched) for an event that holds
    /// only what `kept` names (from [`reads`](Self::reads); `None`: the
    /// whole event, as `reads` says when it is needed):
    /// settled with the outcome and why-not the whole event would get;
    /// `None` if something matches it, or if the sensors loaded now read
    /// more than `kept` (reloaded meanwhile) — then the caller builds the
    /// whole event. Saves building the body of an event no sensor wants: a
    /// GitHub event type, branch or repository nobody listens for.
    fn settle_unmatched_reading(&self, event: &Event, kept: Option<&EventReads>)
        -> Option<Outcome>;
    /// [`reads`](Self::reads), `build` and
    /// [`settle_unmatched_reading`](Self::settle_unmatched_reading) in one,
    /// under one snapshot of the sensors (so nothing can be reloaded in
    /// between, and the sensors are looked up once): `build` makes the event
    /// of `source` from what its sensors read (`None`: all of it), or says
    /// there is none (`None`). For a source whose event is its message
    /// (Kafka), on the path every message of a busy topic takes: `true` if
    /// settled (the outcome itself is not handed back; the status page
    /// keeps it when it is explained). `taken`: when the source took the
    /// message (its batch) from the broker's client — the event's latency
    /// counts from there, and the engine need not read the clock for it.
    fn settle_unmatched_built(
        &self,
        source: &str,
        taken: std::time::Instant,
        build: &mut dyn FnMut(Option<&EventReads>) -> Option<Event>,
    ) -> bool {
        let _ = taken; // the default settles as the reading path does
        let reads = self.reads(source);
        build(reads.as_deref()).is_some_and(|event| {
            self.settle_unmatched_reading(&event, reads.as_deref())
                .is_some()
        })
    }
    /// Why the event matches or not and what it would submit; submits nothing.
    fn explain(&self, event: &Event) -> (Explanation, Vec<Rendered>);
    /// A message of `source` that cannot become an event at all (oversized,
    /// or the source's own handling failed): dead-lettered with `reason`
    /// and counted; the source then acknowledges it so it cannot block.
    async fn poisoned(&self, source: &str, reference: &str, reason: &str);
}

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
    /// The target could not take it within the trigger's retries: the
    /// source retries the event.
    Unavailable,
    /// Still unavailable when the event's retry budget ran out: given up
    /// and dead-lettered.
    Expired,
    /// A log trigger (Argo's `log`): the events were logged, nothing submitted.
    Logged,
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
    pub why_not: Vec<Miss>,
    /// Nothing matched and `why_not` was not worked out: a broker source's
    /// unmatched events are explained at most once per
    /// [`EXPLAIN_EVERY`](crate::engine::EXPLAIN_EVERY) (no sender reads a
    /// reply); the status page counts such events but does not list them.
    #[serde(skip)]
    pub unexplained: bool,
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
        } else if self
            .matched
            .iter()
            .any(|t| matches!(t.status, Status::Invalid | Status::Expired))
        {
            Disposition::Rejected
        } else {
            Disposition::Done
        }
    }
}

/// The message a caught panic carried, for logs and dead letters.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Why a message of `bytes` is refused, if it is over `limit`.
pub fn oversized(bytes: usize, limit: usize) -> Option<String> {
    (bytes > limit).then(|| {
        format!("payload of {bytes} bytes is over the {limit} byte limit (limits.maxBodyBytes)")
    })
}
