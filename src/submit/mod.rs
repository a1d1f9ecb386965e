//! Submission: the [`Submitter`] trait, its outcomes, retries and the
//! dead-letter log.
//!
//! * [`outbox`] — writes YAML files (no cluster needed; the default).
//! * [`kube`] — creates objects through the Kubernetes API.
//!
//! Both treat "an object of that name already exists" as success
//! ([`Submitted::Existing`]): names are deterministic, so that is what makes
//! at-least-once delivery produce exactly one object.

pub mod kube;
pub mod outbox;

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{json, Value};

use crate::event::Event;
use crate::sensor::RetrySpec;

/// What a successful submission did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Submitted {
    Created,
    /// An object of that name was already there: an earlier delivery of the
    /// same event created it.
    Existing,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    /// The API rejected the object (400/403/404/422…): retrying cannot help.
    #[error("rejected ({code} {reason}): {message}")]
    Permanent {
        code: u16,
        reason: String,
        message: String,
        /// The API's `Status` object, as returned.
        status: Value,
    },
    /// 429, 5xx, timeout, connection error: worth retrying.
    #[error("unavailable: {message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
}

impl SubmitError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SubmitError::Transient { .. })
    }

    /// The API's `Status` object (null when there is none).
    pub fn status(&self) -> &Value {
        match self {
            SubmitError::Permanent { status, .. } => status,
            SubmitError::Transient { .. } => &Value::Null,
        }
    }
}

/// Where objects go.
#[async_trait]
pub trait Submitter: Send + Sync {
    /// Creates `obj` (named, namespaced where the API wants it).
    async fn submit(&self, obj: &Value) -> Result<Submitted, SubmitError>;
    /// Namespace for objects whose trigger sets none.
    fn default_namespace(&self) -> Option<&str>;
    /// For logs: `outbox ./outbox`, `kubernetes https://…`.
    fn describe(&self) -> String;
}

/// Submits with the trigger's retry policy: exponential backoff with jitter,
/// honouring `Retry-After`, only for transient errors.
pub async fn submit_with_retry(
    submitter: &dyn Submitter,
    obj: &Value,
    policy: &RetrySpec,
) -> Result<Submitted, SubmitError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match submitter.submit(obj).await {
            Err(SubmitError::Transient {
                message,
                retry_after,
            }) if attempt < policy.attempts => {
                let delay = backoff(policy, attempt, retry_after);
                tracing::warn!(attempt, delay_ms = delay.as_millis() as u64, error = %message, "submit failed, retrying");
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}

/// Delay before retry number `attempt` (1-based): `backoff * 2^(attempt-1)`
/// capped at `maxBackoff`, ±20 % jitter; a server's `Retry-After` wins when longer.
pub fn backoff(policy: &RetrySpec, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let d = jittered(exponential(policy.backoff, policy.max_backoff, attempt));
    match retry_after {
        Some(ra) if ra > d => ra,
        _ => d,
    }
}

/// `base * 2^(attempt-1)` for a 1-based `attempt`, at most `max`: the one
/// backoff curve every retry loop uses (submissions, NATS naks and
/// reconnects, Kafka message retries).
pub fn exponential(base: Duration, max: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max)
}

/// `d` ±20 %, so many retries that failed together do not return together.
pub fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.8 + rand::random::<f64>() * 0.4)
}

/// JSON-lines log of objects the API rejected, with its reason.
pub struct DeadLetter {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
    /// Recently recorded `(sensor, trigger, event ids)`: an event redelivered
    /// because a sibling trigger was unavailable renders the same invalid
    /// object again, and is recorded once, not on every retry.
    recent: Mutex<(HashSet<String>, VecDeque<String>)>,
}

/// How many recent records [`DeadLetter`] remembers for de-duplication.
const RECENT: usize = 10_000;

impl DeadLetter {
    pub fn new(path: &Path) -> Self {
        DeadLetter {
            path: path.to_path_buf(),
            file: Mutex::new(None),
            recent: Mutex::default(),
        }
    }

    /// True the first time `key` is seen (within the last [`RECENT`]).
    fn first_time(&self, key: String) -> bool {
        let mut guard = self.recent.lock().expect("dead-letter lock");
        let (seen, order) = &mut *guard;
        if !seen.insert(key.clone()) {
            return false;
        }
        order.push_back(key);
        if order.len() > RECENT {
            if let Some(old) = order.pop_front() {
                seen.remove(&old);
            }
        }
        true
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record: the sensor and trigger, the events (by
    /// dependency name) that fired it, the object, the error and the API's
    /// `Status`. Write errors are logged: the event is acknowledged either
    /// way (a poison event must not block its stream).
    pub fn record(
        &self,
        sensor: &str,
        trigger: &str,
        events: &[(&str, &Event)],
        object: &Value,
        error: &SubmitError,
    ) {
        let ids: Vec<&str> = events.iter().map(|(_, e)| e.id.as_str()).collect();
        if !self.first_time(format!("{sensor}\0{trigger}\0{}", ids.join("\0"))) {
            tracing::debug!(sensor, trigger, event_ids = ?ids, "already dead-lettered");
            return;
        }
        let line = json!({
            "time": crate::event::now_rfc3339(),
            "sensor": sensor,
            "trigger": trigger,
            "eventIds": ids,
            "events": events.iter().map(|(d, e)| (d.to_string(), e.to_json())).collect::<serde_json::Map<_, _>>(),
            "error": error.to_string(),
            "status": error.status(),
            "object": object,
        });
        let mut guard = self.file.lock().expect("dead-letter lock");
        if guard.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                let _ = std::fs::create_dir_all(dir);
            }
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                Ok(f) => *guard = Some(f),
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, record = %line, "cannot open dead-letter log");
                    return;
                }
            }
        }
        if let Some(f) = guard.as_mut() {
            if let Err(e) = writeln!(f, "{line}") {
                tracing::error!(path = %self.path.display(), error = %e, record = %line, "cannot write dead-letter log");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Flaky {
        fail: u32,
        calls: AtomicU32,
        permanent: bool,
    }

    #[async_trait]
    impl Submitter for Flaky {
        async fn submit(&self, _: &Value) -> Result<Submitted, SubmitError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if self.permanent {
                return Err(SubmitError::Permanent {
                    code: 422,
                    reason: "Invalid".into(),
                    message: "bad".into(),
                    status: json!({}),
                });
            }
            if n < self.fail {
                Err(SubmitError::Transient {
                    message: "503".into(),
                    retry_after: None,
                })
            } else {
                Ok(Submitted::Created)
            }
        }
        fn default_namespace(&self) -> Option<&str> {
            None
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
    }

    fn policy(attempts: u32) -> RetrySpec {
        RetrySpec {
            attempts,
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_the_budget_ends() {
        let s = Flaky {
            fail: 2,
            calls: AtomicU32::new(0),
            permanent: false,
        };
        assert_eq!(
            submit_with_retry(&s, &json!({}), &policy(3)).await.unwrap(),
            Submitted::Created
        );
        assert_eq!(s.calls.load(Ordering::SeqCst), 3);
        let s = Flaky {
            fail: 5,
            calls: AtomicU32::new(0),
            permanent: false,
        };
        assert!(submit_with_retry(&s, &json!({}), &policy(3))
            .await
            .unwrap_err()
            .is_transient());
        assert_eq!(s.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let s = Flaky {
            fail: 0,
            calls: AtomicU32::new(0),
            permanent: true,
        };
        assert!(!submit_with_retry(&s, &json!({}), &policy(5))
            .await
            .unwrap_err()
            .is_transient());
        assert_eq!(s.calls.load(Ordering::SeqCst), 1);
    }

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
    fn backoff_grows_caps_and_honours_retry_after() {
        let p = RetrySpec {
            attempts: 10,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        let d1 = backoff(&p, 1, None);
        assert!(
            d1 >= Duration::from_millis(80) && d1 <= Duration::from_millis(120),
            "{d1:?}"
        );
        let d3 = backoff(&p, 3, None);
        assert!(
            d3 >= Duration::from_millis(320) && d3 <= Duration::from_millis(480),
            "{d3:?}"
        );
        assert!(backoff(&p, 9, None) <= Duration::from_millis(1200));
        assert_eq!(
            backoff(&p, 1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn dead_letters_are_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetter::new(&dir.path().join("sub/dl.jsonl"));
        let mut e1 = Event::new("src", b"", json!({"k": 1}));
        e1.id = "e1".into();
        let rejected = SubmitError::Permanent {
            code: 422,
            reason: "Invalid".into(),
            message: "bad".into(),
            status: json!({"code": 422}),
        };
        dl.record(
            "s",
            "t",
            &[("dep", &e1)],
            &json!({"kind": "Workflow"}),
            &rejected,
        );
        let render = SubmitError::Permanent {
            code: 0,
            reason: "RenderFailed".into(),
            message: "no field".into(),
            status: Value::Null,
        };
        let mut e2 = e1.clone();
        e2.id = "e2".into();
        dl.record("s", "t", &[("dep", &e2)], &json!({}), &render);
        // The same event and trigger again (a redelivery): not recorded twice;
        // another trigger for the same event is.
        dl.record("s", "t", &[("dep", &e2)], &json!({}), &render);
        dl.record("s", "t2", &[("dep", &e2)], &json!({}), &render);
        let text = std::fs::read_to_string(dl.path()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["eventIds"], json!(["e1"]));
        assert_eq!(lines[1]["eventIds"], json!(["e2"]));
        assert_eq!(lines[2]["trigger"], "t2");
        assert_eq!(lines[0]["events"]["dep"]["body"], json!({"k": 1}));
        assert_eq!(lines[0]["status"]["code"], 422);
        assert_eq!(lines[0]["object"]["kind"], "Workflow");
        assert_eq!(lines[0]["error"], "rejected (422 Invalid): bad");
        assert_eq!(lines[1]["status"], Value::Null);
    }
}
