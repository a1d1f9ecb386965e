//! What the status page shows of the engine's recent work: the last events
//! with their verdicts, and events per source per minute over the last
//! five minutes. Bounded: a fixed number of events, five minute buckets per
//! source.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::event::Event;
use crate::outcome::Outcome;

/// How many events the status page lists.
pub const RECENT_EVENTS: usize = 50;
/// Minutes of per-source counts kept.
const MINUTES: u64 = 5;

/// One processed event and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    /// When processing finished, in Unix milliseconds (the page writes it
    /// as RFC 3339 when it is asked for, not for every event).
    pub at_ms: u64,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub outcome: Outcome,
}

pub struct Recent {
    events: Mutex<VecDeque<Seen>>,
    /// Source → `(minute, events)`, oldest first. Looked up by a borrowed
    /// name for every event (`hashbrown`'s `entry_ref`: one lookup, no
    /// copy); sorted when the page asks.
    per_minute: Mutex<hashbrown::HashMap<String, VecDeque<(u64, u64)>>>,
    /// A wall-clock reading (Unix milliseconds) and the instant it was
    /// taken: an event's time is worked out from the instant its
    /// processing finished, which the engine reads anyway — no second
    /// clock read per event.
    epoch: (Instant, u64),
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            events: Mutex::default(),
            per_minute: Mutex::default(),
            epoch: (Instant::now(), crate::event::now_unix_millis()),
        }
    }
}

impl Recent {
    /// Counts `event` for its source's rate and lists it with its verdict —
    /// unless it matched nothing and was not explained (a busy broker
    /// source's, see `Engine::explain_sampled`): such a row would say
    /// nothing, and at 100 000 events a second would push the explained
    /// ones off the list within a millisecond.
    pub fn record(&self, event: &Event, outcome: &Outcome, at: Instant) {
        let ms = self.unix_millis(at);
        if !outcome.unexplained {
            let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
            if events.len() == RECENT_EVENTS {
                events.pop_back();
            }
            events.push_front(Seen {
                at_ms: ms,
                source: event.source.clone(),
                kind: event.kind.clone(),
                outcome: outcome.clone(),
            });
        }
        let minute = ms / 60_000;
        let mut per = self.per_minute.lock().unwrap_or_else(|e| e.into_inner());
        let buckets = per.entry_ref(event.source.as_str()).or_default();
        match buckets.back_mut() {
            Some((m, n)) if *m == minute => *n += 1,
            _ => buckets.push_back((minute, 1)),
        }
        while buckets.front().is_some_and(|(m, _)| *m + MINUTES <= minute) {
            buckets.pop_front();
        }
    }

    /// Newest first.
    pub fn events(&self) -> Vec<Seen> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// `at` in Unix milliseconds.
    fn unix_millis(&self, at: Instant) -> u64 {
        let (instant, ms) = self.epoch;
        ms + at.saturating_duration_since(instant).as_millis() as u64
    }

    /// Source → events per minute, averaged over the last five minutes.
    pub fn rates(&self) -> BTreeMap<String, f64> {
        let minute = self.unix_millis(Instant::now()) / 60_000;
        let per = self.per_minute.lock().unwrap_or_else(|e| e.into_inner());
        per.iter()
            .map(|(source, buckets)| {
                let n: u64 = buckets
                    .iter()
                    .filter(|(m, _)| *m + MINUTES > minute)
                    .map(|(_, n)| n)
                    .sum();
                (source.clone(), n as f64 / MINUTES as f64)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_events_newest_first_and_counts_per_source() {
        let r = Recent::default();
        for i in 0..(RECENT_EVENTS + 5) {
            let e = Event::new("hook", format!("{i}").as_bytes(), serde_json::json!(i));
            let outcome = Outcome {
                event_id: e.id.clone(),
                matched: Vec::new(),
                why_not: Vec::new(),
                unexplained: false,
            };
            r.record(&e, &outcome, Instant::now());
        }
        let events = r.events();
        assert_eq!(events.len(), RECENT_EVENTS);
        let newest = Event::new("hook", b"54", serde_json::json!(54));
        assert_eq!(events[0].outcome.event_id, newest.id);
        let rate = r.rates()["hook"];
        assert!((rate - 55.0 / 5.0).abs() < 1e-9, "{rate}");

        // Counts older than five minutes are dropped; the listed time is
        // the wall clock of the instant given.
        let later = Instant::now() + std::time::Duration::from_secs(6 * 60);
        r.record(&newest, &events[0].outcome, later);
        assert_eq!(r.rates()["hook"], 1.0 / 5.0);
        let at_ms = r.events()[0].at_ms;
        let expected = crate::event::now_unix_millis() + 6 * 60_000;
        assert!(at_ms.abs_diff(expected) < 1_000, "{at_ms} {expected}");
    }
}
