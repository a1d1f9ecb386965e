//! `limits:` in `tripline.yaml`: what one process takes on at once. Every
//! source reads them; they sit at the bottom so that nothing has to reach up
//! into the root config for them.

use std::time::Duration;

use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    /// Payload bytes in processing at once, across every source (default
    /// 64 MiB): what bounds memory when events are large. A source waits for
    /// room before it processes an event (a webhook answers 503 past it).
    #[serde(default = "default_max_in_flight_bytes")]
    pub max_in_flight_bytes: usize,
    /// On SIGTERM, how long in-flight submissions may take to finish.
    #[serde(default = "default_deadline", with = "humantime_serde")]
    pub shutdown_deadline: Duration,
    /// How long and how often one event may come back unavailable before
    /// its pending triggers are dead-lettered.
    #[serde(default)]
    pub retry_budget: BudgetSpec,
    /// Largest request head (request line and headers; default 16 KiB):
    /// larger gets 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Time for a client to send its request head (also how long an idle
    /// keep-alive connection stays open; default 10s).
    #[serde(default = "default_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time for a client to send its whole body (default 10s): past it, 408.
    #[serde(default = "default_read_timeout", with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Open connections per listener (default 1024); more wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Requests whose body is being read before their sender is verified
    /// (HMAC signatures cover the body), per webhook source (default 128):
    /// past it, 503. A request whose token or signature header is missing or
    /// malformed is refused before this.
    #[serde(default = "default_max_pre_auth")]
    pub max_pre_auth: usize,
    /// Size at which the dead-letter log is rotated to `<path>.1` (64 MiB).
    #[serde(default = "default_dead_letter_max_bytes")]
    pub dead_letter_max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: default_max_body(),
            max_in_flight: default_max_in_flight(),
            max_in_flight_bytes: default_max_in_flight_bytes(),
            shutdown_deadline: default_deadline(),
            retry_budget: BudgetSpec::default(),
            dead_letter_max_bytes: default_dead_letter_max_bytes(),
            max_header_bytes: default_max_header_bytes(),
            header_read_timeout: default_read_timeout(),
            body_read_timeout: default_read_timeout(),
            max_connections: default_max_connections(),
            max_pre_auth: default_max_pre_auth(),
        }
    }
}

impl Limits {
    /// Checks what serde cannot; errors are `(field, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.max_in_flight == 0 {
            return Err(("maxInFlight".into(), "must be at least 1".into()));
        }
        if self.max_in_flight_bytes < self.max_body_bytes {
            return Err((
                "maxInFlightBytes".into(),
                format!(
                    "must be at least maxBodyBytes ({}), or no event of the largest size could ever be processed",
                    self.max_body_bytes
                ),
            ));
        }
        if self.max_header_bytes < 8192 {
            return Err(("maxHeaderBytes".into(), "must be at least 8192".into()));
        }
        for (field, n) in [
            ("maxConnections", self.max_connections),
            ("maxPreAuth", self.max_pre_auth),
        ] {
            if n == 0 {
                return Err((field.into(), "must be at least 1".into()));
            }
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
fn default_max_header_bytes() -> usize {
    16 << 10
}
fn default_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_pre_auth() -> usize {
    128
}
fn default_max_in_flight_bytes() -> usize {
    64 << 20
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

/// The payload bytes in processing across every source
/// (`limits.maxInFlightBytes`), counted in KiB.
#[derive(Clone, Debug)]
pub struct ByteBudget {
    kib: Arc<Semaphore>,
    total_kib: u32,
}

/// Room for one event's payload; released when dropped.
pub type BytesHeld = OwnedSemaphorePermit;

impl ByteBudget {
    pub fn new(max_bytes: usize) -> Self {
        let total_kib = u32::try_from(max_bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1);
        ByteBudget {
            kib: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    fn kib_for(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_kib)
    }

    /// Waits for room for `bytes`.
    pub async fn hold(&self, bytes: usize) -> BytesHeld {
        self.kib
            .clone()
            .acquire_many_owned(self.kib_for(bytes))
            .await
            .expect("the budget is never closed")
    }

    /// Room for `bytes` now, or `None`.
    pub fn try_hold(&self, bytes: usize) -> Option<BytesHeld> {
        self.kib
            .clone()
            .try_acquire_many_owned(self.kib_for(bytes))
            .ok()
    }

    /// Bytes free now (for tests and metrics).
    pub fn available_bytes(&self) -> usize {
        self.kib.available_permits() * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_byte_budget_bounds_what_is_held() {
        let b = ByteBudget::new(4 << 20);
        let first = b.hold(3 << 20).await;
        assert!(b.try_hold(2 << 20).is_none(), "over the budget");
        let small = b.try_hold(1000).expect("room for a small one");
        drop(first);
        assert!(b.try_hold(3 << 20).is_some());
        drop(small);
        // An event larger than the whole budget still gets through, alone.
        let huge = b.hold(100 << 20).await;
        assert_eq!(b.available_bytes(), 0);
        drop(huge);
        assert_eq!(b.available_bytes(), 4 << 20);
    }
}
