//! The one backoff curve every retry loop uses: submissions, NATS naks and
//! reconnects, Kafka message retries. Exponential from a base, capped, with
//! jitter so that retries that failed together do not return together.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `base * 2^(attempt-1)` for a 1-based `attempt`, at most `max`.
pub fn exponential(base: Duration, max: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max)
}

/// `d` ±20 %.
pub fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.8 + rand::random::<f64>() * 0.4)
}

/// A retry policy as users write it (a trigger's `retry:`): how many
/// attempts in all, and the curve between them.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Total attempts (default 3).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: default_attempts(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

fn default_attempts() -> u32 {
    3
}
fn default_backoff() -> Duration {
    Duration::from_millis(500)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(10)
}

impl RetryPolicy {
    /// Delay before retry number `attempt` (1-based), jittered; a server's
    /// `Retry-After` wins when longer.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let d = jittered(exponential(self.backoff, self.max_backoff, attempt));
        match retry_after {
            Some(ra) if ra > d => ra,
            _ => d,
        }
    }
}

/// Failures in a row and the delay they call for, for loops that retry
/// until something works (binding a consumer, reconnecting).
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            failures: 0,
        }
    }

    /// The delay after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        exponential(self.min, self.max, self.failures)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_doubles_from_base_up_to_max() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let d: Vec<u64> = (1..=8)
            .map(|n| exponential(base, max, n).as_secs())
            .collect();
        assert_eq!(d, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(exponential(base, max, 0), base);
        assert_eq!(exponential(base, max, u32::MAX), max);
        let j = jittered(Duration::from_secs(10));
        assert!(
            j >= Duration::from_secs(8) && j <= Duration::from_secs(12),
            "{j:?}"
        );
    }

    #[test]
    fn policy_delay_grows_caps_and_honours_retry_after() {
        let p = RetryPolicy {
            attempts: 10,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        let d1 = p.delay(1, None);
        assert!(
            d1 >= Duration::from_millis(80) && d1 <= Duration::from_millis(120),
            "{d1:?}"
        );
        let d3 = p.delay(3, None);
        assert!(
            d3 >= Duration::from_millis(320) && d3 <= Duration::from_millis(480),
            "{d3:?}"
        );
        assert!(p.delay(9, None) <= Duration::from_millis(1200));
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn backoff_counts_failures_until_reset() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
        let d: Vec<u64> = (0..5).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(d, [200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(200));
    }
}
