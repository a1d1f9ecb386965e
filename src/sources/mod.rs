//! Sources produce [`Event`]s and own acknowledgement:
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
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::FutureExt;
use tokio::task::JoinSet;

use crate::event::{Event, EventReads};
use crate::limits::ByteBudget;
use crate::outcome::{Outcome, Process};
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

/// A broker source's message work in flight: a [`JoinSet`] (which it
/// derefs to) whose [`start`](MessageTasks::start) runs work at once when it
/// finishes at the first poll — most does: nothing matched, or the outcome
/// is known without waiting — and spawns a task only for work that waits (a
/// submission). A task per message cost more than matching it.
///
/// Work run at once runs on the loop that feeds it, one message after the
/// other: cheap matching does not mind, but slow matching (a Lua filter,
/// thousands of sensors) would be held to one core. So once half of the
/// last eight first polls took longer than [`INLINE_BUDGET`] (one slow poll
/// is more likely the thread being preempted), work is spawned without
/// trying for [`INLINE_PAUSE`], then tried at once again.
pub struct MessageTasks {
    tasks: JoinSet<()>,
    spawn_until: Option<Instant>,
    /// One bit per recent first poll run at once: set if it was slow.
    slow: u8,
}

/// A first poll longer than this is slow (see [`MessageTasks`]).
pub const INLINE_BUDGET: Duration = Duration::from_micros(50);
/// For this long.
pub const INLINE_PAUSE: Duration = Duration::from_secs(1);

impl MessageTasks {
    pub fn new() -> Self {
        MessageTasks {
            tasks: JoinSet::new(),
            spawn_until: None,
            slow: 0,
        }
    }

    /// Runs `work` at once or as a task (see the type). A panic at the first
    /// poll is returned (its message), as a panicking task's would be seen.
    pub fn start<F>(&mut self, work: F) -> Result<(), String>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let started = Instant::now();
        if self.spawn_until.is_some_and(|until| started < until) {
            self.tasks.spawn(work);
            return Ok(());
        }
        let mut work = Box::pin(work);
        // Unconstrained: the feeding loop may have spent tokio's budget of
        // operations for this turn, and then every channel send in the work
        // (an ack) would say "not yet" and turn done-at-once work into a
        // task. One poll of one message's work is bounded; the loop itself
        // still yields when its own receives run out of budget.
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
            tokio::task::coop::unconstrained(work.as_mut()).now_or_never()
        }));
        let ended = Instant::now();
        self.first_poll_took(ended.saturating_duration_since(started), ended);
        match polled {
            Ok(Some(())) => Ok(()),
            Ok(None) => {
                self.tasks.spawn(work);
                Ok(())
            }
            Err(p) => Err(crate::outcome::panic_message(&*p)),
        }
    }

    /// Remembers how long a first poll run at once took; the fourth slow one
    /// of the last eight sends work to tasks until `now` + [`INLINE_PAUSE`].
    fn first_poll_took(&mut self, took: Duration, now: Instant) {
        self.slow = self.slow << 1 | u8::from(took > INLINE_BUDGET);
        if self.slow.count_ones() >= 4 {
            self.spawn_until = Some(now + INLINE_PAUSE);
            self.slow = 0;
        }
    }
}

impl Default for MessageTasks {
    fn default() -> Self {
        MessageTasks::new()
    }
}

impl std::ops::Deref for MessageTasks {
    type Target = JoinSet<()>;
    fn deref(&self) -> &JoinSet<()> {
        &self.tasks
    }
}

impl std::ops::DerefMut for MessageTasks {
    fn deref_mut(&mut self) -> &mut JoinSet<()> {
        &mut self.tasks
    }
}

/// A message as [`read_settling`] found it.
pub enum FirstRead<T> {
    /// Nothing wants it: settled, with this outcome (read in part).
    Settled(T, Outcome),
    /// Something wants it: read whole, to be processed.
    Wanted(T),
}

impl<T> FirstRead<T> {
    pub fn read(&self) -> &T {
        match self {
            FirstRead::Settled(read, _) | FirstRead::Wanted(read) => read,
        }
    }
}

/// Reads a message with `read`, at first building only what the sensors
/// on `source` read of its body ([`Process::reads`]), and settles it
/// then if nothing wants it ([`Process::settle_unmatched_reading`]);
/// otherwise reads it whole. `event` picks the event out of a read (`None`:
/// there is none to settle, as for a GitHub ping). Without `in_part` (a
/// kind of message that cannot be read in part) it is read whole once.
pub fn read_settling<T, E>(
    process: &dyn Process,
    source: &str,
    in_part: bool,
    read: impl Fn(Option<&EventReads>) -> Result<T, E>,
    event: fn(&T) -> Option<&Event>,
) -> Result<FirstRead<T>, E> {
    let reads = process.reads(source).filter(|_| in_part);
    let first = read(reads.as_deref())?;
    let settled = event(&first).and_then(|e| process.settle_unmatched_reading(e, reads.as_deref()));
    if let Some(outcome) = settled {
        return Ok(FirstRead::Settled(first, outcome));
    }
    Ok(FirstRead::Wanted(match reads {
        Some(_) => read(None)?,
        None => first,
    }))
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
        let mut running = MessageTasks::new();

        let d = done.clone();
        running
            .start(async move {
                d.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        assert_eq!(done.load(Ordering::SeqCst), 1, "ran at once");
        assert!(running.is_empty(), "no task for it");

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let d = done.clone();
        running
            .start(async move {
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

    #[test]
    fn four_slow_first_polls_of_the_last_eight_switch_to_tasks_for_a_while() {
        let mut running = MessageTasks::new();
        let t0 = Instant::now();
        let (slow, fast) = (INLINE_BUDGET * 2, INLINE_BUDGET / 2);
        // One slow poll alone (a preempted thread, say) changes nothing, nor
        // do three of the last eight...
        for took in [slow, fast, fast, slow, fast, slow, fast, fast, fast] {
            running.first_poll_took(took, t0);
        }
        assert_eq!(running.spawn_until, None);
        // ...(the first slow one has left the window of eight)...
        running.first_poll_took(slow, t0);
        assert_eq!(running.spawn_until, None);
        // ...the fourth of the last eight does, for INLINE_PAUSE, and the
        // count starts again.
        running.first_poll_took(slow, t0);
        assert_eq!(running.spawn_until, Some(t0 + INLINE_PAUSE));
        assert_eq!(running.slow, 0);
    }

    #[tokio::test]
    async fn slow_work_sends_what_follows_to_tasks() {
        let mut running = MessageTasks::new();
        // First polls that compute for longer than the budget (a heavy
        // filter) still finish at once...
        let finished = Arc::new(AtomicUsize::new(0));
        for _ in 0..4 {
            let f = finished.clone();
            running
                .start(async move {
                    std::thread::sleep(INLINE_BUDGET * 4);
                    f.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
        }
        assert_eq!(finished.load(Ordering::SeqCst), 4, "all ran at once");
        assert!(running.is_empty());
        // ...but after four of them the next work, however cheap, goes to a
        // task, so that heavy matching spreads over the runtime's threads.
        let f = finished.clone();
        running
            .start(async move {
                f.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        assert_eq!(running.len(), 1, "spawned, not run at once");
        running.join_next().await.unwrap().unwrap();
        assert_eq!(finished.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_panic_at_the_first_poll_is_returned_not_raised() {
        let mut running = MessageTasks::new();
        let err = running.start(async { panic!("bad message") }).unwrap_err();
        assert!(err.contains("bad message"), "{err}");
        assert!(running.is_empty());
    }
}
