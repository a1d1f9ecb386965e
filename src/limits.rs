//! `limits:` in `tripline.yaml`: what one process takes on at once. Every
//! source reads them; they sit at the bottom so that nothing has to reach up
//! into the root config for them.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// Largest accepted webhook body (default 1 MiB); larger gets 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Events processed at once per source; past it webhooks get 503 and
    /// brokers stop fetching (no unbounded queue).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// On SIGTERM, how long in-flight submissions may take to finish.
    #[serde(default = "default_deadline", with = "humantime_serde")]
    pub shutdown_deadline: Duration,
    /// How long and how often one event may come back unavailable before
    /// its pending triggers are dead-lettered.
    #[serde(default)]
    pub retry_budget: BudgetSpec,
    /// Size at which the dead-letter log is rotated to `<path>.1` (64 MiB).
    #[serde(default = "default_dead_letter_max_bytes")]
    pub dead_letter_max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: default_max_body(),
            max_in_flight: default_max_in_flight(),
            shutdown_deadline: default_deadline(),
            retry_budget: BudgetSpec::default(),
            dead_letter_max_bytes: default_dead_letter_max_bytes(),
        }
    }
}

impl Limits {
    /// Checks what serde cannot; errors are `(field, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.max_in_flight == 0 {
            return Err(("maxInFlight".into(), "must be at least 1".into()));
        }
        if self.retry_budget.max_attempts == Some(0) {
            return Err((
                "retryBudget.maxAttempts".into(),
                "must be at least 1 (leave it out for no count limit)".into(),
            ));
        }
        Ok(())
    }
}

fn default_max_body() -> usize {
    1024 * 1024
}
fn default_max_in_flight() -> usize {
    64
}
fn default_dead_letter_max_bytes() -> u64 {
    64 << 20
}
fn default_deadline() -> Duration {
    Duration::from_secs(30)
}

/// `limits.retryBudget` in `tripline.yaml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BudgetSpec {
    /// Deliveries that may end unavailable; unset: no count limit.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// How long after its first unavailable delivery an event may still be
    /// retried (default 1h).
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for BudgetSpec {
    fn default() -> Self {
        BudgetSpec {
            max_attempts: None,
            max_age: default_max_age(),
        }
    }
}

fn default_max_age() -> Duration {
    Duration::from_secs(3600)
}
