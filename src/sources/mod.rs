//! Sources produce [`Event`](crate::event::Event)s and own acknowledgement:
//! a webhook answers the request, JetStream acks/naks, Kafka commits. A source
//! never acknowledges before [`Process::process`] returned a final outcome for
//! the event, and it knows only that contract, never the engine behind it.
//!
//! * [`webhook`] — GitHub, GitLab, generic HMAC, CloudEvents and plain HTTP:
//!   routes on the one HTTP server.
//! * [`nats`] — a JetStream durable pull consumer, or core NATS subscriptions.
//! * [`kafka`] — a consumer-group member with a commit watermark.
//!
//! Each folder owns its config type; the root config (`tripline.yaml`)
//! gathers them into one tagged enum.

pub mod kafka;
pub mod nats;
pub mod webhook;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_trait::async_trait;
use futures::FutureExt;
use tokio::task::JoinSet;

use crate::limits::ByteBudget;
use crate::outcome::Process;
use crate::readiness::ReadinessHandle;
use crate::shutdown::Shutdown;

/// What a running source is given: where events go, where to say whether it
/// is ready, when to stop (with the drain deadline), and the memory budget.
pub struct SourceContext {
    pub process: Arc<dyn Process>,
    pub readiness: ReadinessHandle,
    pub shutdown: Shutdown,
    /// Payload bytes in processing across every source: hold room for an
    /// event before processing it.
    pub bytes: ByteBudget,
}

/// Runs a message's work at once if it finishes at the first poll (most do:
/// nothing matched, or the outcome is known without waiting), else spawns
/// it into `running` — a task per message cost more than matching it.
/// A panic is reported as a panicking task would be (`Err`, its message).
pub fn run_now_or_spawn<F>(running: &mut JoinSet<()>, work: F) -> Result<(), String>
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut work = Box::pin(work);
    match std::panic::catch_unwind(AssertUnwindSafe(|| work.as_mut().now_or_never())) {
        Ok(Some(())) => Ok(()),
        Ok(None) => {
            running.spawn(work);
            Ok(())
        }
        Err(p) => Err(crate::outcome::panic_message(&*p)),
    }
}

/// A running broker source (webhooks are routes on the HTTP server instead).
#[async_trait]
pub trait Source: Send {
    fn name(&self) -> &str;
    /// Runs until shutdown begins, then finishes (or hands back for
    /// redelivery) what it has in flight and returns.
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError>;
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source `{source_name}`: {message}")]
    Failed {
        source_name: String,
        message: String,
    },
    #[error("secret for source `{source_name}`: {message}")]
    Secret {
        source_name: String,
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn work_done_at_once_costs_no_task_and_the_rest_is_spawned() {
        let done = Arc::new(AtomicUsize::new(0));
        let mut running = JoinSet::new();

        let d = done.clone();
        run_now_or_spawn(&mut running, async move {
            d.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        assert_eq!(done.load(Ordering::SeqCst), 1, "ran at once");
        assert!(running.is_empty(), "no task for it");

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let d = done.clone();
        run_now_or_spawn(&mut running, async move {
            rx.await.unwrap();
            d.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        assert_eq!(running.len(), 1, "waiting work became a task");
        assert_eq!(done.load(Ordering::SeqCst), 1);
        tx.send(()).unwrap();
        running.join_next().await.unwrap().unwrap();
        assert_eq!(done.load(Ordering::SeqCst), 2, "and finished there");
    }

    #[tokio::test]
    async fn a_panic_at_the_first_poll_is_returned_not_raised() {
        let mut running = JoinSet::new();
        let err = run_now_or_spawn(&mut running, async { panic!("bad message") }).unwrap_err();
        assert!(err.contains("bad message"), "{err}");
        assert!(running.is_empty());
    }
}
