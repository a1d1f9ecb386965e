//! One partition's task on the tokio runtime: takes its messages in offset
//! order, processes up to `maxInFlight` at once, and retries each until its
//! outcome is final, holding the partition's commit point meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::message::{Message, OwnedMessage};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, debug_span, error, info, warn, Instrument};

use super::envelope::to_event;
use super::watermark::{size, Progress};
use crate::backoff::{exponential, jittered};
use crate::event::{Event, EventReads};
use crate::limits::ByteBudget;
use std::panic::AssertUnwindSafe;

use crate::outcome::{oversized, panic_message, Disposition, Process};
use crate::sources::MessageTasks;

/// Messages up to this size are read on the consumer thread to see whether
/// anything wants them ([`WorkContext::settle_at_once`]); larger ones go to
/// their partition's task whatever they hold, so that reading one never
/// keeps the consumer thread from polling for long.
const SETTLE_AT_ONCE_BYTES: usize = 64 << 10;

/// What every message task needs.
pub(super) struct WorkContext {
    pub(super) source: String,
    pub(super) process: Arc<dyn Process>,
    /// Source-wide processing slots (`limits.maxInFlight`).
    pub(super) slots: Arc<Semaphore>,
    pub(super) max_in_flight: usize,
    pub(super) retry_backoff: Duration,
    pub(super) max_retry_backoff: Duration,
    /// Larger payloads are dead-lettered (`limits.maxBodyBytes`).
    pub(super) max_payload: usize,
    /// Payload bytes in processing across every source.
    pub(super) bytes: ByteBudget,
}

impl WorkContext {
    /// On the consumer thread: whether `m` is a readable event that no
    /// sensor matches, and so is settled now (counted and recorded by the
    /// engine) and needs no task. Most of a busy topic's messages are
    /// such; handing each to a task cost more than reading it. Anything
    /// else — a match, an oversized or unreadable message — is `false`
    /// and goes to the partition's task (which reads it again). `taken`:
    /// when the consumer thread took it (its batch) from librdkafka.
    pub(super) fn settle_at_once(&self, m: &impl Message, taken: Instant) -> bool {
        if m.payload().map_or(0, <[u8]>::len) > SETTLE_AT_ONCE_BYTES.min(self.max_payload) {
            return false;
        }
        // Only what the sensors read of the payload is built.
        self.process
            .settle_unmatched_built(&self.source, taken, &mut |reads| {
                envelope(self, m, reads).ok()
            })
    }
}

/// One partition's task: takes its messages in order and processes up to
/// `maxInFlight` at once, each to a final outcome. Ends when the partition
/// is revoked or the source stops, after what runs has stopped; messages still
/// queued are left uncommitted (fetched again by whoever owns the partition).
pub(super) async fn run_partition(
    work: Arc<WorkContext>,
    mut messages: mpsc::UnboundedReceiver<OwnedMessage>,
    progress: Arc<Progress>,
    stop: CancellationToken,
) {
    // The tasks below are spawned, so they name their parent span explicitly.
    let partition_span = tracing::Span::current();
    let mut running = MessageTasks::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Err(e) = done {
                    task_failed(&e);
                }
            }
            message = messages.recv(), if running.len() < work.max_in_flight => {
                let Some(message) = message else { break };
                let slot = tokio::select! {
                    slot = work.slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    _ = stop.cancelled() => break,
                };
                let Some(mark) = progress.start(&stop, size(&message)) else { break };
                let (work, progress, stop) = (work.clone(), progress.clone(), stop.clone());
                let offset = message.offset();
                // At `debug`, as the engine's span is (see `Engine::process`):
                // what is logged at `info` and up names the event itself.
                let span = debug_span!(parent: &partition_span, "message", offset);
                let job = async move {
                    let _slot = slot;
                    let _mark = mark;
                    let _held = work.bytes.hold(message.payload().map_or(0, <[u8]>::len)).await;
                    let finished = match envelope(&work, &message, None) {
                        Ok(event) => {
                            drop(message);
                            process_until_final(&work, Arc::new(event), &stop).instrument(span).await
                        }
                        // Never blocks the partition: dead-lettered, then
                        // committed past like any final outcome.
                        Err(reason) => {
                            let reference = format!("{}/{}/{offset}", message.topic(), message.partition());
                            drop(message);
                            work.process.poisoned(&work.source, &reference, &reason).await;
                            true
                        }
                    };
                    if finished {
                        progress.lock().marks.finished(offset);
                    }
                };
                if let Err(panic) = running.start(job) {
                    task_failed(&panic);
                }
            }
        }
    }
    while running.join_next().await.is_some() {}
}

/// A message's work panicked, run at once or as a task.
fn task_failed(error: &dyn std::fmt::Display) {
    error!(error = %error, "message task failed; its offset stays uncommitted");
}

/// The message as an event, or why it cannot be one: over the payload
/// limit, or building the envelope panicked.
fn envelope(
    work: &WorkContext,
    message: &impl Message,
    reads: Option<&EventReads>,
) -> Result<Event, String> {
    let bytes = message.payload().map_or(0, <[u8]>::len);
    if let Some(reason) = oversized(bytes, work.max_payload) {
        return Err(reason);
    }
    std::panic::catch_unwind(AssertUnwindSafe(|| to_event(&work.source, message, reads)))
        .map_err(|p| format!("reading the message panicked: {}", panic_message(&*p)))
}

/// Processes `event` until its outcome is final; `true` then. Retries while
/// the Kubernetes API is unavailable; `false` if `stop` came first (the
/// message stays uncommitted and will be delivered again).
async fn process_until_final(
    work: &WorkContext,
    event: Arc<Event>,
    stop: &CancellationToken,
) -> bool {
    let mut attempt = 1u32;
    loop {
        let outcome = work.process.process(event.clone()).await;
        match outcome.disposition() {
            Disposition::Done => {
                debug!(triggers = outcome.matched.len(), "done");
                return true;
            }
            Disposition::Rejected => {
                warn!(event_id = %event.id, "an object was rejected and dead-lettered; committing past this message");
                return true;
            }
            Disposition::Retry => {
                let wait = jittered(exponential(
                    work.retry_backoff,
                    work.max_retry_backoff,
                    attempt,
                ));
                debug!(
                    attempt,
                    retry_in_ms = wait.as_millis() as u64,
                    "unavailable; holding this partition's commit point and retrying"
                );
                tokio::select! {
                    _ = stop.cancelled() => {
                        info!(event_id = %event.id, "partition released while retrying; left uncommitted for redelivery");
                        return false;
                    }
                    _ = tokio::time::sleep(wait) => {}
                }
                attempt += 1;
            }
        }
    }
}
