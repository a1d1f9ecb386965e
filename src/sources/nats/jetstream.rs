//! JetStream: a durable pull consumer. Fetches in overlapping batches,
//! never more than `maxInFlight` fetched and unsettled, processes each
//! message (in a task only if it waits, see [`MessageTasks`]), and
//! settles it by its outcome ([`super::ack`]); binds again and pulls anew
//! after errors and reconnects.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, instrument, warn, Span};

use super::ack::{AckRules, Settle};
use super::config::JetStreamConfig;
use super::envelope::jetstream_event;
use super::health::Health;
use super::source::{log_panic, log_task_end, retry_backoff, sleep_or_shutdown, NatsSource};
use std::panic::AssertUnwindSafe;

use crate::event::EventReads;
use crate::limits::ByteBudget;
use crate::outcome::{oversized, panic_message, Process};
use crate::sources::{read_settling, FirstRead, MessageTasks, SourceContext, SourceError};

/// How long one JetStream pull request waits for messages before the server
/// ends it (an idle source then simply pulls again).
const FETCH_EXPIRES: Duration = Duration::from_secs(5);

/// How often an ack (or term) that the server did not confirm is sent again.
const SETTLE_ATTEMPTS: u32 = 3;

/// What every JetStream message task needs to settle its message.
struct Settlement {
    source: String,
    process: Arc<dyn Process>,
    /// Progress (`+WPI`) interval: a third of the consumer's ack wait.
    progress_every: Duration,
    rules: AckRules,
    /// `limits.maxBodyBytes`: larger messages are dead-lettered.
    max_payload: usize,
    /// Payload bytes in processing across every source.
    bytes: ByteBudget,
}

/// Why consuming from a bound consumer stopped.
enum Pulled {
    /// The client reconnected; the server may have forgotten the requests.
    Reconnected,
    /// A request failed; bind the consumer again.
    Failed(String),
    Shutdown,
}

/// What an open pull request yields (one per message: not boxed).
#[allow(clippy::large_enum_variant)]
enum Pull {
    Message(jetstream::Message),
    /// The request ended (served or expired) with this many asked for and
    /// not delivered.
    Ended(usize),
    /// The request failed (the consumer is bound again).
    Failed(String),
}

/// A pull request's messages, then how it ended.
fn pull_items(batch: pull::Batch, asked: usize) -> impl futures::Stream<Item = Pull> {
    futures::stream::unfold(Some((batch, asked)), |state| async move {
        let (mut batch, left) = state?;
        match batch.next().await {
            Some(Ok(m)) => Some((Pull::Message(m), Some((batch, left.saturating_sub(1))))),
            Some(Err(e)) => Some((Pull::Failed(e.to_string()), None)),
            None => Some((Pull::Ended(left), None)),
        }
    })
}

impl NatsSource {
    pub(super) async fn run_jetstream(
        &self,
        config: &JetStreamConfig,
        client: &async_nats::Client,
        cx: &SourceContext,
        health: &Health,
        mut reconnected: watch::Receiver<u64>,
    ) -> Result<(), SourceError> {
        let (process, bytes, shutdown) = (&cx.process, &cx.bytes, cx.shutdown.token());
        let js = jetstream::new(client.clone());
        let mut in_flight = MessageTasks::new();
        let mut retry = retry_backoff();
        'bind: while !shutdown.is_cancelled() {
            let bound = tokio::select! {
                _ = shutdown.cancelled() => break,
                bound = self.bind(&js, config) => bound,
            };
            let consumer = match bound {
                Ok(c) => c,
                Err(problem) => {
                    warn!(source = %self.name, error = %problem, "cannot bind the JetStream consumer; retrying");
                    health.set_problem(Some(problem));
                    if sleep_or_shutdown(retry.next_delay(), shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            let info = consumer.cached_info();
            let settlement = Arc::new(Settlement {
                source: self.name.clone(),
                process: process.clone(),
                progress_every: (info.config.ack_wait / 3).max(Duration::from_millis(50)),
                rules: AckRules {
                    nak_delay: config.nak_delay,
                    max_nak_delay: config.max_nak_delay,
                    max_deliver: info.config.max_deliver,
                },
                max_payload: self.max_payload,
                bytes: bytes.clone(),
            });
            info!(
                source = %self.name,
                stream = %config.stream,
                durable = %config.durable,
                ack_wait = ?info.config.ack_wait,
                pending = info.num_pending,
                "consuming from JetStream"
            );
            health.set_problem(None);
            health.set_consuming(format!(
                "consuming stream `{}` with durable consumer `{}`",
                config.stream, config.durable
            ));
            let pulled = self
                .consume(
                    &consumer,
                    config.batch,
                    &settlement,
                    &mut in_flight,
                    &mut reconnected,
                    shutdown,
                    &mut retry,
                )
                .await;
            match pulled {
                Pulled::Reconnected => {
                    info!(source = %self.name, "reconnected to NATS; pulling again");
                }
                Pulled::Failed(problem) => {
                    warn!(source = %self.name, error = %problem, "JetStream pull failed; binding the consumer again");
                    health.set_problem(Some(problem));
                    if sleep_or_shutdown(retry.next_delay(), shutdown).await {
                        break 'bind;
                    }
                }
                Pulled::Shutdown => break 'bind,
            }
        }
        // Shutdown: nothing more is fetched. The messages in flight finish
        // and are settled (the deadline in `run_sources` bounds this; what
        // does not finish is redelivered after `ackWait`).
        health.set_stopping();
        while let Some(done) = in_flight.try_join_next() {
            log_task_end(&self.name, Some(done));
        }
        info!(source = %self.name, in_flight = in_flight.len(), "stopped fetching; finishing in-flight messages");
        while let Some(done) = in_flight.join_next().await {
            log_task_end(&self.name, Some(done));
        }
        Ok(())
    }

    /// Finds (or, with `create`, creates) the stream and the durable consumer.
    async fn bind(
        &self,
        js: &jetstream::Context,
        config: &JetStreamConfig,
    ) -> Result<PullConsumer, String> {
        let stream = if config.create {
            js.get_or_create_stream(jetstream::stream::Config {
                name: config.stream.clone(),
                subjects: self.subjects.clone(),
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())
        } else {
            js.get_stream(&config.stream)
                .await
                .map_err(|e| e.to_string())
        }
        .map_err(|e| format!("stream `{}`: {e}", config.stream))?;
        let consumer: PullConsumer = if config.create {
            stream
                .create_consumer(self.consumer_config(config))
                .await
                .map_err(|e| e.to_string())
        } else {
            stream
                .get_consumer(&config.durable)
                .await
                .map_err(|e| e.to_string())
        }
        .map_err(|e| {
            format!(
                "durable consumer `{}` on stream `{}`: {e}",
                config.durable, config.stream
            )
        })?;
        let policy = consumer.cached_info().config.ack_policy;
        if policy != AckPolicy::Explicit {
            return Err(format!(
                "durable consumer `{}` has ack policy {policy:?}; tripline needs `explicit` (it acks each message once its submission is final)",
                config.durable
            ));
        }
        Ok(consumer)
    }

    pub(super) fn consumer_config(&self, config: &JetStreamConfig) -> pull::Config {
        let (filter_subject, filter_subjects) = match self.subjects.as_slice() {
            [one] => (one.clone(), Vec::new()),
            many => (String::new(), many.to_vec()),
        };
        pull::Config {
            durable_name: Some(config.durable.clone()),
            description: Some(format!("tripline source `{}`", self.name)),
            ack_policy: AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            max_deliver: config.max_deliver.unwrap_or(-1),
            filter_subject,
            filter_subjects,
            ..Default::default()
        }
    }

    /// Pulls and processes until shutdown, a reconnect or a failed request.
    ///
    /// Pull requests overlap: the next is sent once half a batch is free
    /// (not when the last one is served), so messages keep arriving while a
    /// request makes its round trip. Messages asked for and not yet
    /// delivered count as in flight: never more than `maxInFlight` are
    /// fetched and unsettled at once.
    #[allow(clippy::too_many_arguments)]
    async fn consume(
        &self,
        consumer: &PullConsumer,
        batch: usize,
        settlement: &Arc<Settlement>,
        in_flight: &mut MessageTasks,
        reconnected: &mut watch::Receiver<u64>,
        shutdown: &CancellationToken,
        retry: &mut crate::backoff::Backoff,
    ) -> Pulled {
        reconnected.borrow_and_update();
        let mut pulls = futures::stream::SelectAll::new();
        // Asked for in open requests, not yet delivered.
        let mut asked = 0usize;
        let half_batch = (batch.min(self.max_in_flight) / 2).max(1);
        loop {
            while let Some(done) = in_flight.try_join_next() {
                log_task_end(&self.name, Some(done));
            }
            let room = self.max_in_flight - in_flight.len() - asked;
            if room >= half_batch || (pulls.is_empty() && room > 0) {
                let want = room.min(batch);
                let request = consumer
                    .batch()
                    .max_messages(want)
                    .expires(FETCH_EXPIRES)
                    .messages();
                tokio::select! {
                    _ = shutdown.cancelled() => return Pulled::Shutdown,
                    b = request => match b {
                        Ok(b) => {
                            pulls.push(Box::pin(pull_items(b, want)));
                            asked += want;
                        }
                        Err(e) => return Pulled::Failed(e.to_string()),
                    },
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Pulled::Shutdown,
                _ = reconnected.changed() => return Pulled::Reconnected,
                done = in_flight.join_next(), if !in_flight.is_empty() => log_task_end(&self.name, done),
                next = pulls.next(), if !pulls.is_empty() => match next {
                    Some(Pull::Message(message)) => {
                        asked = asked.saturating_sub(1);
                        let work = handle_jetstream(settlement.clone(), message);
                        if let Err(panic) = in_flight.start(work) {
                            log_panic(&self.name, &panic);
                        }
                    }
                    Some(Pull::Ended(left)) => {
                        asked = asked.saturating_sub(left);
                        retry.reset();
                    }
                    Some(Pull::Failed(e)) => return Pulled::Failed(e),
                    None => {}
                },
            }
        }
    }
}

/// Processes one JetStream message and settles it by its outcome.
// At `debug`, as the engine's span is (see `Engine::process`): what is
// logged at `info` and up names the event itself.
#[instrument(level = "debug", skip_all, fields(source, subject, event_id))]
async fn handle_jetstream(s: Arc<Settlement>, message: jetstream::Message) {
    let span = Span::current();
    span.record("source", s.source.as_str());
    span.record("subject", message.subject.as_str());
    let _held = s.bytes.hold(message.payload.len()).await;
    let read = |reads: Option<&EventReads>| match oversized(message.payload.len(), s.max_payload) {
        Some(reason) => Err(reason),
        None => std::panic::catch_unwind(AssertUnwindSafe(|| {
            jetstream_event(&s.source, &message, reads)
        }))
        .unwrap_or_else(|p| {
            Err(format!("reading the message panicked: {}", panic_message(&*p)).into())
        })
        .map_err(|e| e.to_string()),
    };
    let first = match read_settling(s.process.as_ref(), &s.source, true, read, |(e, _)| Some(e)) {
        Ok(first) => first,
        Err(reason) => return poisoned(&s, &message, &reason).await,
    };
    span.record("event_id", first.read().0.id.as_str());
    let (outcome, delivered) = match first {
        FirstRead::Settled((_, delivered), outcome) => (outcome, delivered),
        FirstRead::Wanted((event, delivered)) => {
            let outcome = with_progress(
                &message,
                s.progress_every,
                s.process.process(Arc::new(event)),
            )
            .await;
            (outcome, delivered)
        }
    };
    let settle_as = s.rules.settle(
        outcome.disposition(),
        delivered,
        !outcome.matched.is_empty(),
    );
    let (kind, confirm) = match settle_as {
        Settle::Ack { confirm } => (AckKind::Ack, confirm),
        Settle::Term => {
            warn!(event_id = %outcome.event_id, "object rejected (dead-lettered); terminating the message");
            (AckKind::Term, true)
        }
        Settle::Nak { delay, last: true } => {
            error!(
                event_id = %outcome.event_id,
                delivered,
                max_deliver = s.rules.max_deliver,
                "Kubernetes API unavailable on the last delivery (maxDeliver); JetStream gives this message up"
            );
            (AckKind::Nak(Some(delay)), false)
        }
        Settle::Nak { delay, last: false } => {
            debug!(
                delivered,
                delay_ms = delay.as_millis() as u64,
                "Kubernetes API unavailable; nak, redelivery after the delay"
            );
            (AckKind::Nak(Some(delay)), false)
        }
    };
    settle(&message, kind, confirm).await;
}

/// A message that cannot become an event: dead-lettered and terminated, so
/// that it never blocks the stream.
async fn poisoned(s: &Settlement, message: &jetstream::Message, reason: &str) {
    let reference = message
        .info()
        .map(|i| format!("{}:{}", i.stream, i.stream_sequence))
        .unwrap_or_else(|_| message.subject.to_string());
    s.process.poisoned(&s.source, &reference, reason).await;
    settle(message, AckKind::Term, true).await;
}

/// Runs `work`, telling the server every `every` that the message is still
/// being worked on (so a long submission is not redelivered meanwhile).
async fn with_progress<F: std::future::Future>(
    message: &jetstream::Message,
    every: Duration,
    work: F,
) -> F::Output {
    tokio::pin!(work);
    // Most events are done at the first poll (nothing matched): no timer
    // is armed for them.
    if let Some(out) = futures::FutureExt::now_or_never(&mut work) {
        return out;
    }
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = ticker.tick() => {
                debug!("still processing; progress ack");
                if let Err(e) = message.ack_with(AckKind::Progress).await {
                    debug!(error = %e, "progress ack failed");
                }
            }
        }
    }
}

/// Acks, naks or terminates. With `confirm`, the server's confirmation is
/// awaited and the reply sent again if it does not come (a lost term would
/// bring a poison message back); should it still be lost, the message is
/// redelivered after `ackWait` and found done. Without, it is
/// fire-and-forget: a lost ack of an event that fired nothing redelivers an
/// event that again fires nothing, and a lost nak merely delays the
/// redelivery to `ackWait`.
async fn settle(message: &jetstream::Message, kind: AckKind, confirm: bool) {
    if !confirm || matches!(kind, AckKind::Nak(_)) {
        if let Err(e) = message.ack_with(kind).await {
            warn!(subject = %message.subject, ?kind, error = %e, "cannot settle; the message is redelivered after ackWait");
        }
        return;
    }
    for attempt in 1..=SETTLE_ATTEMPTS {
        match message.double_ack_with(kind).await {
            Ok(()) => {
                debug!(?kind, "settled");
                return;
            }
            Err(e) if attempt < SETTLE_ATTEMPTS => {
                debug!(?kind, attempt, error = %e, "settlement not confirmed; sending again");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            Err(e) => warn!(
                subject = %message.subject,
                ?kind,
                error = %e,
                "settlement not confirmed; the message may be redelivered (its object is found existing)"
            ),
        }
    }
}
