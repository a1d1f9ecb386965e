//! Correlation state around the pure logic of [`crate::sensor::correlate`]:
//! for every multi-dependency trigger an event reaches, the state of its
//! `(sensor, trigger, key)` is read from the [`Store`], changed, and written
//! back with compare-and-set (read again on a conflict), so the state
//! survives restarts and, in a shared store, exactly one replica claims a
//! firing. Single-dependency triggers never touch the store.

use crate::metrics::TriggerLabels;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::event::{now_unix_millis, Event};
use crate::sensor::correlate::{self, Decision, Shape, TriggerState};
use crate::sensor::{Match, SensorSet};
use crate::state::{Store, StoreError};

/// What an event does to one trigger.
#[derive(Debug, Clone)]
pub enum Step {
    Fire(Firing),
    /// Stored; the trigger waits for other dependencies.
    Waiting {
        sensor: usize,
        trigger: usize,
        key: String,
        missing: Vec<String>,
    },
    /// The event already took part in a firing whose outcome is final.
    Consumed {
        sensor: usize,
        trigger: usize,
    },
    /// The correlation key could not be rendered, or the store is
    /// unavailable (`retry`).
    Failed {
        sensor: usize,
        trigger: usize,
        message: String,
        retry: bool,
    },
}

/// A trigger whose condition holds.
#[derive(Debug, Clone)]
pub struct Firing {
    pub sensor: usize,
    pub trigger: usize,
    /// The events of the satisfied dependencies, in dependency order.
    pub events: Vec<(usize, Arc<Event>)>,
    /// For a correlated trigger: where its state is, to settle it once the
    /// outcome is final.
    pub state_key: Option<String>,
}

/// How many times a compare-and-set is tried before giving up (retry).
const ATTEMPTS: usize = 16;

pub struct Correlation {
    store: Arc<dyn Store>,
    /// Dependencies waiting per `(sensor, trigger)`, as this replica last
    /// wrote them (for the `tripline_correlation_waiting` gauge).
    waiting: Mutex<HashMap<(String, String), HashMap<String, usize>>>,
}

/// The store key of `(sensor, trigger, key)`: a hash, valid in any store.
fn state_key(sensor: &str, trigger: &str, key: &str) -> String {
    let mut h = Sha256::new();
    for part in [sensor, trigger, key] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

impl Correlation {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Correlation {
            store,
            waiting: Mutex::default(),
        }
    }

    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// Offers one event's matches to every trigger that mentions a matched
    /// dependency.
    pub async fn offer(&self, set: &SensorSet, matches: &[Match], event: &Arc<Event>) -> Vec<Step> {
        let mut steps = Vec::new();
        for m in matches {
            let sensor = &set.sensors[m.sensor];
            for (ti, t) in sensor.triggers.iter().enumerate() {
                if !t.deps.iter().any(|d| m.deps.contains(d)) {
                    continue;
                }
                if t.deps.len() == 1 {
                    let mut sat = vec![false; sensor.dependencies.len()];
                    m.deps.iter().for_each(|d| sat[*d] = true);
                    if t.condition.eval(&sat) {
                        steps.push(Step::Fire(Firing {
                            sensor: m.sensor,
                            trigger: ti,
                            events: vec![(t.deps[0], Arc::clone(event))],
                            state_key: None,
                        }));
                    }
                    continue;
                }
                let key = match sensor.correlation_key(&set.templates, t, &m.deps, event) {
                    Ok(k) => k,
                    Err(e) => {
                        steps.push(Step::Failed {
                            sensor: m.sensor,
                            trigger: ti,
                            message: format!("correlation key: {e}"),
                            retry: false,
                        });
                        continue;
                    }
                };
                steps.push(self.offer_one(set, m, ti, &key, event).await);
            }
        }
        steps
    }

    async fn offer_one(
        &self,
        set: &SensorSet,
        m: &Match,
        ti: usize,
        key: &str,
        event: &Arc<Event>,
    ) -> Step {
        let (sensor, t) = set.trigger(m.sensor, ti);
        let names: Vec<String> = t
            .deps
            .iter()
            .map(|d| sensor.dependencies[*d].name.clone())
            .collect();
        let matched: Vec<&str> = m
            .deps
            .iter()
            .filter(|d| t.deps.contains(d))
            .map(|d| sensor.dependencies[*d].name.as_str())
            .collect();
        let holds = |present: &[&str]| {
            let sat: Vec<bool> = sensor
                .dependencies
                .iter()
                .map(|d| present.contains(&d.name.as_str()))
                .collect();
            t.condition.eval(&sat)
        };
        let reset = |at: u64, now: u64| t.resets.iter().any(|c| c.ticked_between(at, now));
        let shape = Shape {
            deps: &names,
            holds: &holds,
            window_ms: sensor.window.as_millis() as u64,
            reset: &reset,
        };
        let skey = state_key(&sensor.name, &t.name, key);
        let failed = |message: String| Step::Failed {
            sensor: m.sensor,
            trigger: ti,
            message,
            retry: true,
        };
        for _ in 0..ATTEMPTS {
            let (mut state, revision) =
                match self.load(&skey, &t.definition, &sensor.name, &t.name).await {
                    Ok(s) => s,
                    Err(e) => return failed(format!("correlation state: {e}")),
                };
            let decision = correlate::offer(&mut state, &shape, &matched, event, now_unix_millis());
            if !matches!(decision, Decision::Consumed | Decision::Refire(_)) {
                match self.save(&skey, &state, revision).await {
                    Ok(()) => {}
                    Err(StoreError::Conflict) => continue,
                    Err(e) => return failed(format!("correlation state: {e}")),
                }
                self.count_waiting(&sensor.name, &t.name, &skey, state.slots.len());
            }
            let by_index = |events: Vec<(String, Event)>| {
                events
                    .into_iter()
                    .filter_map(|(name, e)| {
                        let d = sensor.dependencies.iter().position(|d| d.name == name)?;
                        // The event just offered keeps its allocation.
                        let e = if e.identity() == event.identity() {
                            Arc::clone(event)
                        } else {
                            Arc::new(e)
                        };
                        Some((d, e))
                    })
                    .collect()
            };
            return match decision {
                Decision::Fire(events) | Decision::Refire(events) => Step::Fire(Firing {
                    sensor: m.sensor,
                    trigger: ti,
                    events: by_index(events),
                    state_key: Some(skey),
                }),
                Decision::Waiting { missing } => Step::Waiting {
                    sensor: m.sensor,
                    trigger: ti,
                    key: key.to_string(),
                    missing,
                },
                Decision::Consumed => Step::Consumed {
                    sensor: m.sensor,
                    trigger: ti,
                },
            };
        }
        failed("correlation state: too many concurrent changes; retried".into())
    }

    /// The firing's outcome is final: it is no longer pending and its events
    /// count as consumed for the window.
    pub async fn settle(&self, set: &SensorSet, firing: &Firing) {
        let Some(skey) = &firing.state_key else {
            return;
        };
        let (sensor, t) = set.trigger(firing.sensor, firing.trigger);
        let identities: Vec<String> = firing.events.iter().map(|(_, e)| e.identity()).collect();
        let window_ms = sensor.window.as_millis() as u64;
        for _ in 0..ATTEMPTS {
            let Ok((mut state, revision)) =
                self.load(skey, &t.definition, &sensor.name, &t.name).await
            else {
                break;
            };
            correlate::settle(&mut state, &identities, now_unix_millis(), window_ms);
            match self.save(skey, &state, revision).await {
                Ok(()) => return,
                Err(StoreError::Conflict) => continue,
                Err(e) => {
                    // The firing stays pending: a redelivery fires it again
                    // and finds its object (`existing`).
                    warn!(sensor = %sensor.name, trigger = %t.name, error = %e, "cannot settle a firing; it stays pending");
                    return;
                }
            }
        }
    }

    /// The state under `skey` and its revision; a state built for another
    /// definition of the trigger is dropped (logged).
    async fn load(
        &self,
        skey: &str,
        definition: &str,
        sensor: &str,
        trigger: &str,
    ) -> Result<(TriggerState, Option<u64>), StoreError> {
        let Some((bytes, revision)) = self.store.get(skey).await? else {
            return Ok((fresh(definition), None));
        };
        match serde_json::from_slice::<TriggerState>(&bytes) {
            Ok(state) if state.definition == definition => Ok((state, Some(revision))),
            Ok(_) => {
                info!(
                    sensor,
                    trigger,
                    "the trigger changed since its correlation state was stored; starting afresh"
                );
                Ok((fresh(definition), Some(revision)))
            }
            Err(e) => {
                warn!(sensor, trigger, error = %e, "unreadable correlation state; starting afresh");
                Ok((fresh(definition), Some(revision)))
            }
        }
    }

    async fn save(
        &self,
        skey: &str,
        state: &TriggerState,
        revision: Option<u64>,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(state).expect("states serialize");
        self.store.put(skey, &bytes, revision).await.map(|_| ())
    }

    fn count_waiting(&self, sensor: &str, trigger: &str, skey: &str, slots: usize) {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let per_key = w
            .entry((sensor.to_string(), trigger.to_string()))
            .or_default();
        if slots == 0 {
            per_key.remove(skey);
        } else {
            per_key.insert(skey.to_string(), slots);
        }
    }

    /// `(sensor, trigger, events waiting)`, as this replica last wrote them.
    pub fn waiting(&self) -> Vec<(String, String, usize)> {
        let w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<_> = w
            .iter()
            .map(|((s, t), per_key)| (s.clone(), t.clone(), per_key.values().sum()))
            .collect();
        rows.sort();
        rows
    }

    /// Sets `tripline_correlation_waiting{sensor, trigger}` (before a
    /// scrape).
    pub fn refresh(&self, gauge: &Family<TriggerLabels, Gauge>) {
        gauge.clear();
        let w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        for ((sensor, trigger), per_key) in w.iter() {
            let labels = TriggerLabels {
                sensor: sensor.clone(),
                trigger: trigger.clone(),
            };
            gauge
                .get_or_create(&labels)
                .set(per_key.values().sum::<usize>() as i64);
        }
    }
}

fn fresh(definition: &str) -> TriggerState {
    TriggerState {
        definition: definition.to_string(),
        ..Default::default()
    }
}
