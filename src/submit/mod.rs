//! Submission: the [`Submitter`] trait, its outcomes and retries.
//!
//! * [`classify`] — what a Kubernetes API answer means (created, existing,
//!   worth retrying, rejected): one pure, table-tested function.
//! * [`dead_letter`] — the log of what was rejected, with the reason.
//! * [`outbox`] — writes YAML files (no cluster needed; the default).
//! * [`kube`] — creates objects through the Kubernetes API.
//!
//! Both treat "an object of that name already exists" as success
//! ([`Submitted::Existing`]): names are deterministic, so that is what makes
//! at-least-once delivery produce exactly one object.

pub mod classify;
pub mod dead_letter;
pub mod kube;
pub mod object;
pub mod outbox;

pub use classify::Cause;
pub use dead_letter::DeadLetter;

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::backoff::RetryPolicy;

/// What a successful submission did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Submitted {
    Created,
    /// An object of that name was already there: an earlier delivery of the
    /// same event created it.
    Existing,
}

/// Why a submission did not succeed, by cause (see [`classify`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    /// The object itself is wrong (400/404/413/422, a name collision, an
    /// object too large to store…): retrying cannot help, it is dead-lettered.
    #[error("rejected ({code} {reason}): {message}")]
    Permanent {
        code: u16,
        reason: String,
        message: String,
        /// The API's `Status` object, as returned.
        status: Value,
    },
    /// This request failed in a way that passes (429, 5xx, a conflict):
    /// retried with backoff, within the event's retry budget.
    #[error("unavailable: {message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The target as a whole refuses or cannot be reached (unreachable,
    /// 401/403, the kind not served yet, the outbox disk full): retried,
    /// alerted and shown on `/readyz`; never dead-lettered, since it is
    /// not the event's fault.
    #[error("target unavailable: {message}")]
    Infrastructure {
        message: String,
        retry_after: Option<Duration>,
    },
}

/// The longest a server's `Retry-After` is honoured for, within one attempt.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

impl SubmitError {
    /// Worth trying again (transient or infrastructure).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, SubmitError::Permanent { .. })
    }

    /// The API's `Status` object (null when there is none).
    pub fn status(&self) -> &Value {
        match self {
            SubmitError::Permanent { status, .. } => status,
            _ => &Value::Null,
        }
    }

    /// The error for a failure of `cause`; `status` is the API's `Status`
    /// (kept for permanent failures, which are dead-lettered with it).
    pub fn of(
        cause: Cause,
        code: u16,
        reason: &str,
        message: String,
        status: Value,
        retry_after: Option<Duration>,
    ) -> Self {
        match cause {
            Cause::Permanent => SubmitError::Permanent {
                code,
                reason: reason.to_string(),
                message,
                status,
            },
            Cause::Transient => SubmitError::Transient {
                message,
                retry_after,
            },
            Cause::Infrastructure => SubmitError::Infrastructure {
                message,
                retry_after,
            },
        }
    }

    /// A rejection that is tripline's own finding, not the API's.
    pub fn rejected(code: u16, reason: &str, message: impl Into<String>) -> Self {
        SubmitError::Permanent {
            code,
            reason: reason.to_string(),
            message: message.into(),
            status: Value::Null,
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
    /// Reads an object from the target (what an Argo trigger reads when it
    /// fires: a ConfigMap, a CronWorkflow); `namespace` `None`: the
    /// default one. Errors are classified as for [`submit`](Self::submit)
    /// (404: permanent). A target without a cluster cannot: permanent.
    async fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, SubmitError> {
        let _ = namespace;
        Err(SubmitError::rejected(
            501,
            "NotImplemented",
            format!(
                "{kind} {api_version} `{name}` is read from a cluster; {} has none",
                self.describe()
            ),
        ))
    }
}

/// Submits with the trigger's retry policy: exponential backoff with jitter,
/// honouring `Retry-After` (up to [`MAX_RETRY_AFTER`]), for retryable errors
/// only.
pub async fn submit_with_retry(
    submitter: &dyn Submitter,
    obj: &Value,
    policy: &RetryPolicy,
) -> Result<Submitted, SubmitError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match submitter.submit(obj).await {
            Err(
                SubmitError::Transient {
                    message,
                    retry_after,
                }
                | SubmitError::Infrastructure {
                    message,
                    retry_after,
                },
            ) if attempt < policy.attempts => {
                let retry_after = retry_after.map(|d| d.min(MAX_RETRY_AFTER));
                let delay = policy.delay(attempt, retry_after);
                tracing::debug!(attempt, delay_ms = delay.as_millis() as u64, error = %message, "submit failed, retrying");
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
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

    fn policy(attempts: u32) -> RetryPolicy {
        RetryPolicy {
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
            .is_retryable());
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
            .is_retryable());
        assert_eq!(s.calls.load(Ordering::SeqCst), 1);
    }
}
