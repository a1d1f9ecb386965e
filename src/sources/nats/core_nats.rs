//! Core NATS: subscriptions (optionally in a queue group), at most once.
//! A request gets the outcome as its reply; a plain message whose
//! submission is unavailable is retried in process until shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, instrument, warn, Span};

use super::envelope::message_event;
use super::health::Health;
use super::source::{log_panic, log_task_end, retry_backoff, sleep_or_shutdown, NatsSource};
use crate::backoff::exponential;
use std::panic::AssertUnwindSafe;

use crate::event::EventReads;
use crate::limits::ByteBudget;
use crate::outcome::{oversized, panic_message, Disposition, Process};
use crate::sources::{read_settling, FirstRead, MessageTasks, SourceContext, SourceError};

/// In-process retries of a message whose submission is unavailable.
const CORE_RETRY_BASE: Duration = Duration::from_secs(1);
const CORE_RETRY_MAX: Duration = Duration::from_secs(60);

impl NatsSource {
    pub(super) async fn run_core(
        &self,
        client: &async_nats::Client,
        cx: &SourceContext,
        health: &Health,
    ) -> Result<(), SourceError> {
        let shutdown = cx.shutdown.token();
        let mut subscriptions = Vec::new();
        for subject in &self.subjects {
            let sub = match &self.queue_group {
                Some(group) => client.queue_subscribe(subject.clone(), group.clone()).await,
                None => client.subscribe(subject.clone()).await,
            }
            .map_err(|e| self.failed(format!("subscribe to `{subject}`: {e}")))?;
            subscriptions.push(sub);
        }
        // Ready once the server has the subscriptions (a flush round trip).
        let mut retry = retry_backoff();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                flushed = client.flush() => match flushed {
                    Ok(()) => break,
                    Err(e) => {
                        debug!(source = %self.name, error = %e, "waiting for the connection");
                        if sleep_or_shutdown(retry.next_delay(), shutdown).await {
                            return Ok(());
                        }
                    }
                },
            }
        }
        let group = self
            .queue_group
            .as_ref()
            .map(|g| format!(" in queue group `{g}`"))
            .unwrap_or_default();
        info!(source = %self.name, subjects = ?self.subjects, queue_group = ?self.queue_group, "subscribed (core NATS: at most once)");
        health.set_consuming(format!(
            "subscribed to {}{group} (core NATS, at most once)",
            self.subjects.join(", ")
        ));

        let slots = Arc::new(Semaphore::new(self.max_in_flight));
        let mut in_flight = MessageTasks::new();
        let shared = Arc::new(Shared {
            process: cx.process.clone(),
            client: client.clone(),
            source: self.name.clone(),
            shutdown: shutdown.clone(),
            max_payload: self.max_payload,
            bytes: cx.bytes.clone(),
        });
        let spawn = |in_flight: &mut MessageTasks, message, slot| {
            if let Err(panic) = in_flight.start(handle_core(shared.clone(), message, slot)) {
                log_panic(&self.name, &panic);
            }
        };
        {
            let mut incoming = futures::stream::select_all(subscriptions.iter_mut());
            loop {
                let slot = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                };
                let message = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    m = incoming.next() => m,
                };
                let Some(message) = message else {
                    return Err(self.failed("the NATS client closed the subscriptions"));
                };
                while let Some(done) = in_flight.try_join_next() {
                    log_task_end(&self.name, Some(done));
                }
                spawn(&mut in_flight, message, slot);
            }
        }
        // Shutdown: unsubscribe first (a queue group then sends to the other
        // members), then process what had already arrived.
        health.set_stopping();
        for sub in &mut subscriptions {
            if let Err(e) = sub.unsubscribe().await {
                debug!(source = %self.name, error = %e, "unsubscribe failed");
            }
        }
        for sub in &mut subscriptions {
            while let Some(message) = sub.next().await {
                let slot = slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                spawn(&mut in_flight, message, slot);
            }
        }
        while let Some(done) = in_flight.join_next().await {
            log_task_end(&self.name, Some(done));
        }
        Ok(())
    }
}

/// What every core NATS message task shares.
struct Shared {
    process: Arc<dyn Process>,
    client: async_nats::Client,
    source: String,
    shutdown: CancellationToken,
    max_payload: usize,
    bytes: ByteBudget,
}

/// Processes one core NATS message: replies with the outcome to a request;
/// retries a plain message in process while the API is unavailable.
// At `debug`, as the engine's span is (see `Engine::process`): what is
// logged at `info` and up names the event itself.
#[instrument(level = "debug", skip_all, fields(source, subject, event_id))]
async fn handle_core(
    shared: Arc<Shared>,
    message: async_nats::Message,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let Shared {
        process,
        client,
        source,
        shutdown,
        max_payload,
        bytes,
    } = &*shared;
    let _held = bytes.hold(message.payload.len()).await;
    let span = Span::current();
    span.record("source", source.as_str());
    span.record("subject", message.subject.as_str());
    let read = |reads: Option<&EventReads>| match oversized(message.payload.len(), *max_payload) {
        Some(reason) => Err(reason),
        None => std::panic::catch_unwind(AssertUnwindSafe(|| {
            message_event(
                source,
                message.subject.as_str(),
                &message.payload,
                message.headers.as_ref(),
                reads,
            )
        }))
        .map_err(|p| format!("reading the message panicked: {}", panic_message(&*p))),
    };
    let first = match read_settling(process.as_ref(), source, true, read, |e| Some(e)) {
        Ok(first) => first,
        Err(reason) => {
            process
                .poisoned(source, message.subject.as_str(), &reason)
                .await;
            return;
        }
    };
    span.record("event_id", first.read().id.as_str());
    let (event, mut settled) = match first {
        FirstRead::Settled(e, outcome) => (Arc::new(e), Some(outcome)),
        FirstRead::Wanted(e) => (Arc::new(e), None),
    };
    let mut attempt = 0;
    loop {
        let outcome = match settled.take() {
            Some(outcome) => outcome,
            None => process.process(event.clone()).await,
        };
        if let Some(reply) = message.reply.clone() {
            let body = serde_json::to_vec(&outcome).unwrap_or_default();
            if let Err(e) = client.publish(reply, body.into()).await {
                warn!(event_id = %event.id, error = %e, "cannot reply with the outcome");
            }
            return;
        }
        if outcome.disposition() != Disposition::Retry {
            return;
        }
        attempt += 1;
        let delay = exponential(CORE_RETRY_BASE, CORE_RETRY_MAX, attempt);
        debug!(
            attempt,
            delay_ms = delay.as_millis() as u64,
            "unavailable; retrying in process (core NATS cannot redeliver)"
        );
        if sleep_or_shutdown(delay, shutdown).await {
            error!(event_id = %event.id, "shutting down with the Kubernetes API unavailable: this core NATS message is lost (core NATS is at most once; use JetStream)");
            return;
        }
    }
}
