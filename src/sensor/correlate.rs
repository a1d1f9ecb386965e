//! Correlation: a trigger whose condition names several dependencies
//! (`when: "code && data"`) keeps, per correlation key, the latest event of
//! each dependency for the sensor's window, and fires once the condition
//! holds. This file is the pure part — what one event does to one trigger's
//! [`TriggerState`] — and is unit-tested without any store; the engine loads
//! the state from a store, calls [`offer`], and saves it back with
//! compare-and-set, so that exactly one replica claims a firing.
//!
//! A firing is **pending** until its outcome is final: a redelivery of any of
//! its events fires it again (same events, so the same deterministic name),
//! and a transient failure never loses it. Once final ([`settle`]), its
//! events are remembered as consumed for the window: a redelivery of one of
//! them is answered as done and never stored again.
//!
//! Keys: a dependency may name `key: "{{body.sha}}"`; events only pair with
//! events of the same key (state is kept per key). Without keys, every event
//! of a dependency is a candidate (the window alone decides).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::Event;

/// The correlation state of one trigger for one key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TriggerState {
    /// What the state was built for (the trigger's condition and
    /// dependencies); a state for another definition is dropped.
    pub definition: String,
    /// The latest event per dependency name, with when it was stored.
    pub slots: BTreeMap<String, Stored>,
    /// A firing whose outcome is not final yet.
    pub pending: Option<Pending>,
    /// Identities of events whose firing is final, until when they count.
    pub consumed: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stored {
    /// Unix milliseconds.
    pub at: u64,
    pub event: Event,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pending {
    /// Unix milliseconds.
    pub since: u64,
    /// The events, by dependency name, in dependency order.
    pub events: Vec<(String, Event)>,
}

/// What one event does to one trigger.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The condition holds: fire with these events (by dependency name).
    Fire(Vec<(String, Event)>),
    /// The event belongs to a pending firing: fire it again.
    Refire(Vec<(String, Event)>),
    /// Stored; the trigger waits for `missing`.
    Waiting { missing: Vec<String> },
    /// The event already took part in a firing whose outcome is final.
    Consumed,
}

/// The trigger as correlation sees it.
pub struct Shape<'a> {
    /// Dependency names the condition mentions, in dependency order.
    pub deps: &'a [String],
    /// Whether the condition holds for the dependencies that have an event.
    pub holds: &'a (dyn Fn(&[&str]) -> bool + Sync),
    /// The window, in milliseconds.
    pub window_ms: u64,
    /// Whether a reset (Argo `conditionsReset`) happened between a stored
    /// event's time and now (unix milliseconds).
    pub reset: &'a (dyn Fn(u64, u64) -> bool + Sync),
}

/// Offers `event`, which satisfied the dependencies `matched`, to a trigger
/// whose state is `state`. Pure: the caller saves `state` afterwards.
pub fn offer(
    state: &mut TriggerState,
    shape: &Shape,
    matched: &[&str],
    event: &Event,
    now_ms: u64,
) -> Decision {
    let identity = event.identity();
    state.consumed.retain(|_, until| *until > now_ms);
    state.slots.retain(|_, s| {
        now_ms.saturating_sub(s.at) <= shape.window_ms && !(shape.reset)(s.at, now_ms)
    });
    if state.consumed.contains_key(&identity) {
        return Decision::Consumed;
    }
    if let Some(p) = &state.pending {
        if p.events.iter().any(|(_, e)| e.identity() == identity) {
            return Decision::Refire(p.events.clone());
        }
    }
    for dep in matched {
        state.slots.insert(
            dep.to_string(),
            Stored {
                at: now_ms,
                event: event.clone(),
            },
        );
    }
    let present: Vec<&str> = state.slots.keys().map(String::as_str).collect();
    if state.pending.is_none() && (shape.holds)(&present) {
        let events: Vec<(String, Event)> = shape
            .deps
            .iter()
            .filter_map(|d| state.slots.remove(d).map(|s| (d.clone(), s.event)))
            .collect();
        state.pending = Some(Pending {
            since: now_ms,
            events: events.clone(),
        });
        return Decision::Fire(events);
    }
    let missing = shape
        .deps
        .iter()
        .filter(|d| !state.slots.contains_key(*d))
        .cloned()
        .collect();
    Decision::Waiting { missing }
}

/// The firing made of `identities` has a final outcome: it is no longer
/// pending, and its events count as consumed for the window.
pub fn settle(state: &mut TriggerState, identities: &[String], now_ms: u64, window_ms: u64) {
    let ours = state.pending.as_ref().is_some_and(|p| {
        p.events.len() == identities.len()
            && p.events
                .iter()
                .all(|(_, e)| identities.contains(&e.identity()))
    });
    if ours {
        state.pending = None;
    }
    for id in identities {
        state.consumed.insert(id.clone(), now_ms + window_ms);
    }
}

/// Whether the state holds nothing worth keeping.
pub fn is_empty(state: &TriggerState) -> bool {
    state.slots.is_empty() && state.pending.is_none() && state.consumed.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(id: &str) -> Event {
        let mut e = Event::new("src", b"", json!({}));
        e.id = id.into();
        e
    }

    fn deps() -> Vec<String> {
        vec!["code".into(), "data".into()]
    }

    fn both(present: &[&str]) -> bool {
        present.contains(&"code") && present.contains(&"data")
    }

    fn either(present: &[&str]) -> bool {
        !present.is_empty()
    }

    const WINDOW: u64 = 60_000;

    fn never(_: u64, _: u64) -> bool {
        false
    }

    fn ids(events: &[(String, Event)]) -> Vec<&str> {
        events.iter().map(|(_, e)| e.id.as_str()).collect()
    }

    #[test]
    fn fires_once_both_arrive_and_stays_pending_until_settled() {
        let deps = deps();
        let shape = Shape {
            deps: &deps,
            holds: &both,
            window_ms: WINDOW,
            reset: &never,
        };
        let mut s = TriggerState::default();
        assert_eq!(
            offer(&mut s, &shape, &["code"], &ev("c1"), 0),
            Decision::Waiting {
                missing: vec!["data".into()]
            }
        );
        offer(&mut s, &shape, &["code"], &ev("c2"), 1); // the latest wins
        let Decision::Fire(events) = offer(&mut s, &shape, &["data"], &ev("d1"), 5) else {
            panic!("should fire")
        };
        assert_eq!(ids(&events), ["c2", "d1"]);
        // Not final yet (say the API was unavailable): a redelivery of either
        // event fires the same pair again, never a new one.
        let Decision::Refire(again) = offer(&mut s, &shape, &["data"], &ev("d1"), 6) else {
            panic!("should refire")
        };
        assert_eq!(ids(&again), ["c2", "d1"]);
        assert!(matches!(
            offer(&mut s, &shape, &["code"], &ev("c2"), 7),
            Decision::Refire(_)
        ));
        // Final: consumed; a redelivery is done, a new event starts afresh.
        let identities: Vec<String> = events.iter().map(|(_, e)| e.identity()).collect();
        settle(&mut s, &identities, 8, WINDOW);
        assert!(s.pending.is_none());
        assert_eq!(
            offer(&mut s, &shape, &["data"], &ev("d1"), 9),
            Decision::Consumed
        );
        assert!(matches!(
            offer(&mut s, &shape, &["data"], &ev("d2"), 10),
            Decision::Waiting { .. }
        ));
    }

    #[test]
    fn a_lost_half_never_shifts_later_pairs() {
        // c1 stored; its d1 is lost. The next pair (c2, d2) must join
        // c2 with d2 — with keys they can never mix; without keys the latest
        // event of each dependency wins, so the older c1 is replaced.
        let deps = deps();
        let shape = Shape {
            deps: &deps,
            holds: &both,
            window_ms: WINDOW,
            reset: &never,
        };
        let mut s = TriggerState::default();
        offer(&mut s, &shape, &["code"], &ev("c1"), 0);
        offer(&mut s, &shape, &["code"], &ev("c2"), 10);
        let Decision::Fire(events) = offer(&mut s, &shape, &["data"], &ev("d2"), 20) else {
            panic!()
        };
        assert_eq!(ids(&events), ["c2", "d2"]);
    }

    #[test]
    fn events_older_than_the_window_expire_and_consumed_ids_are_forgotten_after_it() {
        let deps = deps();
        let shape = Shape {
            deps: &deps,
            holds: &both,
            window_ms: WINDOW,
            reset: &never,
        };
        let mut s = TriggerState::default();
        offer(&mut s, &shape, &["code"], &ev("c1"), 0);
        assert!(matches!(
            offer(&mut s, &shape, &["data"], &ev("d1"), WINDOW + 1),
            Decision::Waiting { .. }
        ));
        settle(&mut s, &[ev("x").identity()], 0, WINDOW);
        assert_eq!(
            offer(&mut s, &shape, &["code"], &ev("x"), 10),
            Decision::Consumed
        );
        assert!(!matches!(
            offer(&mut s, &shape, &["code"], &ev("x"), WINDOW + 10),
            Decision::Consumed
        ));
    }

    #[test]
    fn or_conditions_fire_on_either_and_the_state_round_trips() {
        let deps = deps();
        let shape = Shape {
            deps: &deps,
            holds: &either,
            window_ms: WINDOW,
            reset: &never,
        };
        let mut s = TriggerState::default();
        let Decision::Fire(events) = offer(&mut s, &shape, &["data"], &ev("d1"), 0) else {
            panic!()
        };
        assert_eq!(ids(&events), ["d1"]);
        let json = serde_json::to_string(&s).unwrap();
        let back: TriggerState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        settle(&mut s, &[events[0].1.identity()], 1, WINDOW);
        assert!(!is_empty(&s));
    }
}
