//! Correlation: a trigger whose condition names several dependencies
//! (`when: "code && data"`) keeps the latest event per dependency for the
//! sensor's window, fires once the condition holds, then resets.
//!
//! Single-dependency triggers never touch the state (no lock on the hot
//! path). State is in memory, per replica: see docs/scaling.md.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Match, SensorSet};
use crate::event::Event;

/// A trigger whose condition became true.
#[derive(Debug, Clone)]
pub struct Firing {
    pub sensor: usize,
    pub trigger: usize,
    /// The events of the satisfied dependencies, in dependency order.
    pub events: Vec<(usize, Arc<Event>)>,
}

/// Outcome of offering a match to one trigger.
#[derive(Debug, Clone)]
pub enum Step {
    Fire(Firing),
    /// Stored; the trigger waits for its other dependencies.
    Waiting {
        sensor: usize,
        trigger: usize,
    },
}

/// Per dependency of one trigger: the latest matching event and when it came.
type Slots = Vec<Option<(Instant, Arc<Event>)>>;

#[derive(Default)]
pub struct Correlator {
    /// Keyed by `(sensor, trigger)`.
    state: Mutex<HashMap<(usize, usize), Slots>>,
}

impl Correlator {
    /// Offers one event's matches to every trigger that mentions a matched
    /// dependency.
    pub fn offer(
        &self,
        set: &SensorSet,
        matches: &[Match],
        event: &Arc<Event>,
        now: Instant,
    ) -> Vec<Step> {
        let mut steps = Vec::new();
        for m in matches {
            let sensor = &set.sensors[m.sensor];
            for (ti, t) in sensor.triggers.iter().enumerate() {
                if !t.deps.iter().any(|d| m.deps.contains(d)) {
                    continue;
                }
                let n = sensor.dependencies.len();
                if t.deps.len() == 1 {
                    let mut sat = vec![false; n];
                    for d in &m.deps {
                        sat[*d] = true;
                    }
                    if t.condition.eval(&sat) {
                        steps.push(Step::Fire(Firing {
                            sensor: m.sensor,
                            trigger: ti,
                            events: vec![(t.deps[0], Arc::clone(event))],
                        }));
                    }
                    continue;
                }
                let mut state = self.state.lock().expect("correlator lock");
                let slots = state.entry((m.sensor, ti)).or_insert_with(|| vec![None; n]);
                for slot in slots.iter_mut() {
                    if slot
                        .as_ref()
                        .is_some_and(|(at, _)| now.duration_since(*at) > sensor.window)
                    {
                        *slot = None;
                    }
                }
                for d in &m.deps {
                    slots[*d] = Some((now, Arc::clone(event)));
                }
                let sat: Vec<bool> = slots.iter().map(Option::is_some).collect();
                if t.condition.eval(&sat) {
                    let events = t
                        .deps
                        .iter()
                        .filter_map(|d| slots[*d].as_ref().map(|(_, e)| (*d, Arc::clone(e))))
                        .collect();
                    slots.iter_mut().for_each(|s| *s = None);
                    steps.push(Step::Fire(Firing {
                        sensor: m.sensor,
                        trigger: ti,
                        events,
                    }));
                } else {
                    steps.push(Step::Waiting {
                        sensor: m.sensor,
                        trigger: ti,
                    });
                }
            }
        }
        steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::load;
    use serde_json::json;
    use std::collections::HashSet;
    use std::time::Duration;

    fn set(when: &str) -> SensorSet {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"
apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {{name: s}}
spec:
  correlationWindow: 60s
  dependencies:
    - {{name: code, source: src, filters: {{path: body.kind, equals: code}}}}
    - {{name: data, source: src, filters: {{path: body.kind, equals: data}}}}
  triggers:
    - name: both
      when: "{when}"
      workflow: {{workflowTemplateRef: wt}}
"#
        );
        let f = dir.path().join("s.yaml");
        std::fs::write(&f, text).unwrap();
        let sources: HashSet<String> = ["src".to_string()].into();
        load(&[f], Some(&sources)).unwrap()
    }

    fn ev(kind: &str, id: &str) -> Arc<Event> {
        let mut e = Event::new("src", b"", json!({"kind": kind}));
        e.id = id.into();
        Arc::new(e)
    }

    fn offer(c: &Correlator, s: &SensorSet, e: &Arc<Event>, at: Instant) -> Vec<Step> {
        c.offer(s, &s.match_event(e), e, at)
    }

    fn fired(steps: &[Step]) -> Option<Vec<String>> {
        steps.iter().find_map(|s| match s {
            Step::Fire(f) => Some(f.events.iter().map(|(_, e)| e.id.clone()).collect()),
            _ => None,
        })
    }

    #[test]
    fn fires_once_both_arrive_then_resets() {
        let s = set("code && data");
        let c = Correlator::default();
        let t0 = Instant::now();
        assert!(fired(&offer(&c, &s, &ev("code", "c1"), t0)).is_none());
        assert!(fired(&offer(&c, &s, &ev("code", "c2"), t0)).is_none()); // latest wins
        let f = fired(&offer(
            &c,
            &s,
            &ev("data", "d1"),
            t0 + Duration::from_secs(5),
        ))
        .unwrap();
        assert_eq!(f, vec!["c2", "d1"]);
        // Reset: another data event alone does not fire.
        assert!(fired(&offer(
            &c,
            &s,
            &ev("data", "d2"),
            t0 + Duration::from_secs(6)
        ))
        .is_none());
    }

    #[test]
    fn events_older_than_the_window_expire() {
        let s = set("code && data");
        let c = Correlator::default();
        let t0 = Instant::now();
        offer(&c, &s, &ev("code", "c1"), t0);
        let late = offer(&c, &s, &ev("data", "d1"), t0 + Duration::from_secs(61));
        assert!(fired(&late).is_none());
        assert!(matches!(late[0], Step::Waiting { .. }));
    }

    #[test]
    fn or_conditions_fire_on_either() {
        let s = set("code || data");
        let c = Correlator::default();
        assert_eq!(
            fired(&offer(&c, &s, &ev("data", "d1"), Instant::now())).unwrap(),
            vec!["d1"]
        );
        assert!(offer(&c, &s, &ev("other", "x"), Instant::now()).is_empty());
    }
}
