//! The retry budget: how long and how often one event may come back
//! unavailable before its pending triggers are given up (dead-lettered) — so
//! that nothing is retried forever. Counted per event (source and id) across
//! redeliveries, whichever way they come (a nak, a Kafka retry, a webhook
//! sender's resend). Failures of the target as a whole (infrastructure) do
//! not spend it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use crate::limits::BudgetSpec;

/// Events tracked at most; past it the oldest are forgotten (they then get a
/// fresh budget, which errs on the side of retrying).
const TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Spent {
    first: Instant,
    attempts: u32,
}

pub struct RetryBudget {
    spec: BudgetSpec,
    events: Mutex<HashMap<String, Spent>>,
    /// Some event is tracked (`events` is not empty), readable without the
    /// lock: almost always `false`, and every settled event asks.
    tracking: AtomicBool,
}

impl RetryBudget {
    pub fn new(spec: BudgetSpec) -> Self {
        RetryBudget {
            spec,
            events: Mutex::new(HashMap::new()),
            tracking: AtomicBool::new(false),
        }
    }

    /// Whether a delivery of the event `key` names now would be its last
    /// allowed one: if it ends unavailable, its pending triggers are given
    /// up. `key` is called only while some event is retrying (most of the
    /// time none is, and building a key costs a string per event).
    pub fn last_chance(&self, key: impl FnOnce() -> String, now: Instant) -> bool {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let tracked = if events.is_empty() {
            None
        } else {
            events.get(&key())
        };
        let Some(s) = tracked else {
            return self.spec.max_attempts.is_some_and(|m| m <= 1) || self.spec.max_age.is_zero();
        };
        self.spec
            .max_attempts
            .is_some_and(|m| s.attempts.saturating_add(1) >= m)
            || now.saturating_duration_since(s.first) >= self.spec.max_age
    }

    /// Records that a delivery of `key` ended unavailable.
    pub fn spend(&self, key: &str, now: Instant) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() >= TRACKED && !events.contains_key(key) {
            let max_age = self.spec.max_age;
            events.retain(|_, s| now.saturating_duration_since(s.first) < max_age);
            if events.len() >= TRACKED {
                if let Some(oldest) = events
                    .iter()
                    .min_by_key(|(_, s)| s.first)
                    .map(|(k, _)| k.clone())
                {
                    events.remove(&oldest);
                }
            }
        }
        let s = events.entry(key.to_string()).or_insert(Spent {
            first: now,
            attempts: 0,
        });
        s.attempts = s.attempts.saturating_add(1);
        self.tracking.store(true, Ordering::Release);
    }

    /// The event's outcome is final: forget it (`key` called only while
    /// some event is retrying).
    pub fn settle(&self, key: impl FnOnce() -> String) {
        // A `spend` running at the same time is for an outcome that is not
        // final, so it cannot be this event's: missing it is harmless.
        if !self.tracking.load(Ordering::Acquire) {
            return;
        }
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if !events.is_empty() {
            events.remove(&key());
        }
        self.tracking.store(!events.is_empty(), Ordering::Release);
    }

    /// Events waiting for a retry (for the `tripline_events_retrying` gauge).
    pub fn retrying(&self) -> usize {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// `(attempts, age)` of `key`, for messages.
    pub fn spent(&self, key: &str, now: Instant) -> (u32, Duration) {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.get(key).map_or((0, Duration::ZERO), |s| {
            (s.attempts, now.saturating_duration_since(s.first))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_run_out() {
        let b = RetryBudget::new(BudgetSpec {
            max_attempts: Some(3),
            max_age: Duration::from_secs(3600),
        });
        let t = Instant::now();
        assert!(!b.last_chance(|| "e".into(), t));
        b.spend("e", t);
        assert!(!b.last_chance(|| "e".into(), t));
        b.spend("e", t);
        assert!(
            b.last_chance(|| "e".into(), t),
            "the third delivery is the last"
        );
        assert_eq!(b.retrying(), 1);
        assert_eq!(b.spent("e", t).0, 2);
        b.settle(|| "e".into());
        assert_eq!(b.retrying(), 0);
        assert!(
            !b.last_chance(|| "e".into(), t),
            "a settled event starts afresh"
        );
    }

    #[test]
    fn settling_asks_for_the_key_only_while_something_is_tracked() {
        let b = RetryBudget::new(BudgetSpec::default());
        let t = Instant::now();
        b.settle(|| panic!("nothing tracked: no key built"));
        b.spend("a", t);
        b.spend("b", t);
        b.settle(|| "a".into());
        assert_eq!(b.retrying(), 1);
        assert_eq!(b.spent("b", t).0, 1, "b still tracked");
        b.settle(|| "b".into());
        assert_eq!(b.retrying(), 0);
        b.settle(|| panic!("all settled: no key built"));
        // And tracked again after that.
        b.spend("c", t);
        b.settle(|| "c".into());
        assert_eq!(b.retrying(), 0);
    }

    #[test]
    fn age_runs_out() {
        let b = RetryBudget::new(BudgetSpec {
            max_attempts: None,
            max_age: Duration::from_secs(60),
        });
        let t = Instant::now();
        b.spend("e", t);
        assert!(!b.last_chance(|| "e".into(), t + Duration::from_secs(59)));
        assert!(b.last_chance(|| "e".into(), t + Duration::from_secs(60)));
        assert!(!b.last_chance(|| "other".into(), t + Duration::from_secs(60)));
    }

    #[test]
    fn a_single_attempt_budget_gives_up_at_once() {
        let b = RetryBudget::new(BudgetSpec {
            max_attempts: Some(1),
            max_age: Duration::from_secs(60),
        });
        assert!(b.last_chance(|| "e".into(), Instant::now()));
    }
}
