//! The running Kafka source: a dedicated consumer thread that polls,
//! dispatches, commits and handles rebalances, and on shutdown drains,
//! commits and leaves the group.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::ClientConfig;
use tokio::sync::Semaphore;
use tracing::{info, info_span, warn};

use super::batch::{self, FetchQueue, Forward};
use super::config::KafkaConfig;
use super::group::{GroupContext, Health};
use super::partition::WorkContext;
use crate::limits::Limits;
use crate::readiness::{BrokerHealth, BrokerState};
use crate::sources::{Source, SourceContext, SourceError};

/// How long the consumer thread waits for a message when nothing is paused,
/// and when some partition is paused (so it resumes it promptly).
const POLL: Duration = Duration::from_millis(100);
const POLL_PAUSED: Duration = Duration::from_millis(10);
/// Messages dispatched between two rounds of the consumer loop's chores.
const CHORES_EVERY: u32 = 64;
/// Consumer-queue events served between two batches at most.
const EVENTS_AT_ONCE: usize = 16;

/// A running Kafka source (see the module documentation).
pub struct KafkaSource {
    config: KafkaConfig,
    client: ClientConfig,
    /// Source-wide cap on messages in processing (`limits.maxInFlight`).
    max_in_flight_total: usize,
    /// `limits.maxBodyBytes`: larger messages are dead-lettered.
    max_payload: usize,
}

impl KafkaSource {
    /// Resolves secrets and checks every librdkafka property; connects to
    /// nothing (so `tripline validate` can use it).
    pub fn new(config: &KafkaConfig, limits: &Limits) -> Result<Self, SourceError> {
        let client = config
            .client_config()
            .map_err(|message| SourceError::Secret {
                source_name: config.name.clone(),
                message,
            })?;
        client
            .create_native_config()
            .map_err(|e| SourceError::Failed {
                source_name: config.name.clone(),
                message: format!("librdkafka settings: {e}"),
            })?;
        Ok(KafkaSource {
            config: config.clone(),
            client,
            max_in_flight_total: limits.max_in_flight.max(1),
            max_payload: limits.max_body_bytes,
        })
    }

    fn failed(&self, message: String) -> SourceError {
        SourceError::Failed {
            source_name: self.config.name.clone(),
            message,
        }
    }

    /// The consumer thread: polls, dispatches, commits, handles rebalances,
    /// and on shutdown drains, commits and leaves the group.
    fn consume(
        self,
        cx: SourceContext,
        runtime: tokio::runtime::Handle,
    ) -> Result<(), SourceError> {
        let shutdown = cx.shutdown.token().clone();
        let name = self.config.name.clone();
        let span = info_span!("kafka", source = %name, group = %self.config.group_id);
        let _entered = span.enter();
        let forward = Arc::new(Forward::default());
        let ctx = GroupContext {
            group: self.config.group_id.clone(),
            literal_topics: (self.config.topics.iter())
                .filter(|t| !t.starts_with('^'))
                .cloned()
                .collect(),
            work: Arc::new(WorkContext {
                source: name.clone(),
                process: cx.process.clone(),
                slots: Arc::new(Semaphore::new(self.max_in_flight_total)),
                max_in_flight: self.config.max_in_flight,
                retry_backoff: self.config.retry_backoff,
                max_retry_backoff: self.config.max_retry_backoff,
                max_payload: self.max_payload,
                bytes: cx.bytes.clone(),
            }),
            max_queued: self.config.max_queued,
            runtime,
            partitions: Mutex::new(super::group::Partitions::new()),
            health: Mutex::new(Health::default()),
            readiness: BrokerHealth::new(
                cx.readiness.clone(),
                BrokerState {
                    starting: format!(
                        "joining group `{}` at {}",
                        self.config.group_id,
                        self.config.brokers.join(",")
                    ),
                    connected: true,
                    ..Default::default()
                },
            ),
            closing: AtomicBool::new(false),
            span: span.clone(),
            forward: forward.clone(),
        };
        ctx.publish_readiness();
        let mut consumer: BaseConsumer<GroupContext> = self
            .client
            .create_with_context(ctx)
            .map_err(|e| self.failed(format!("cannot create the consumer: {e}")))?;
        let fetch = FetchQueue::open(&mut consumer, forward)
            .ok_or_else(|| self.failed("librdkafka cannot create a queue".into()))?;
        let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| self.failed(format!("cannot subscribe to {topics:?}: {e}")))?;
        info!(topics = ?topics, brokers = %self.config.brokers.join(","), "subscribed");

        let mut last_commit = Instant::now();
        // The chores between batches (resuming drained partitions, the
        // periodic commit, the health recheck) take locks and read the
        // clock: done after every [`CHORES_EVERY`] messages, and whenever
        // a wait brings none, not after each batch of a busy topic.
        // The shutdown check (a lock inside the token) is one of them.
        let (mut paused, mut since_chores) = (false, CHORES_EVERY);
        // While batches bring messages the next one does not wait (and
        // librdkafka skips its clock read for the deadline). A batch that
        // brings none makes the next one wait.
        let mut busy = false;
        let mut batch = Vec::with_capacity(batch::BATCH);
        loop {
            let ctx = consumer.context();
            if since_chores >= CHORES_EVERY {
                if shutdown.is_cancelled() {
                    break;
                }
                since_chores = 0;
                ctx.resume_drained(&consumer);
                if last_commit.elapsed() >= self.config.commit_interval {
                    ctx.commit_assigned(&consumer, CommitMode::Async);
                    last_commit = Instant::now();
                }
                ctx.recheck_health(&consumer);
                paused = ctx.any_paused();
            }
            // Rebalances, commit results and errors, served here (their
            // callbacks run on this thread). Polled only when there are
            // some: a poll of an empty queue reads the clock three times.
            for _ in 0..EVENTS_AT_ONCE {
                if !fetch.events_waiting() {
                    break;
                }
                match consumer.poll(Duration::ZERO) {
                    Some(Ok(m)) => paused |= ctx.dispatch(&consumer, &m, Instant::now()),
                    Some(Err(e)) => ctx.consumer_error(e),
                    None => {}
                }
                since_chores = CHORES_EVERY;
            }
            let wait = match (busy, paused) {
                (true, _) => Duration::ZERO,
                (false, true) => POLL_PAUSED,
                (false, false) => POLL,
            };
            fetch.fill(wait, &mut batch);
            busy = !batch.is_empty();
            if !busy {
                since_chores = CHORES_EVERY;
            }
            // One clock read per batch: where its events' latency starts.
            let taken = Instant::now();
            for m in batch.drain(..) {
                match m.error() {
                    Some(e) => {
                        ctx.consumer_error(e);
                        since_chores = CHORES_EVERY;
                    }
                    None => {
                        paused |= ctx.dispatch(&consumer, &m, taken);
                        since_chores += 1;
                    }
                }
            }
        }

        // Shutdown: no new work, finish what runs, commit, leave the group.
        info!("stopping: intake paused, finishing in-flight messages");
        let ctx = consumer.context().clone();
        ctx.readiness.update(|s| s.stopping = true);
        ctx.stop_all();
        if let Ok(assignment) = consumer.assignment() {
            let _ = consumer.pause(&assignment);
        }
        let drain = cx.shutdown.deadline() * 2 / 3;
        let deadline = Instant::now() + drain;
        while !ctx.idle() && Instant::now() < deadline {
            // Keep serving callbacks (a rebalance may be under way); messages
            // are no longer dispatched and stay uncommitted.
            if let Some(Err(e)) = consumer.poll(Duration::from_millis(50)) {
                ctx.consumer_error(e);
            }
        }
        if !ctx.idle() {
            warn!(
                drain_s = drain.as_secs(),
                "in-flight messages did not finish in time; they stay uncommitted and will be redelivered"
            );
        }
        ctx.commit_assigned(&consumer, CommitMode::Sync);
        ctx.closing.store(true, Ordering::SeqCst);
        // The fetch queue goes first (it must not outlive the consumer).
        // Dropping the consumer closes it: the final revoke runs our callback,
        // then LeaveGroup is sent.
        drop(batch);
        drop(fetch);
        drop(consumer);
        cx.readiness.set(false, "stopped");
        info!("consumer closed, left the group");
        Ok(())
    }
}

#[async_trait]
impl Source for KafkaSource {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError> {
        let name = self.config.name.clone();
        let runtime = tokio::runtime::Handle::current();
        let (done, finished) = tokio::sync::oneshot::channel();
        // A plain thread, not `spawn_blocking`: the runtime must not wait for
        // it at exit if the shutdown deadline passes.
        std::thread::Builder::new()
            .name(format!("kafka-{name}"))
            .spawn(move || {
                let _ = done.send(self.consume(cx, runtime));
            })
            .map_err(|e| SourceError::Failed {
                source_name: name.clone(),
                message: format!("cannot start the consumer thread: {e}"),
            })?;
        finished.await.unwrap_or_else(|_| {
            Err(SourceError::Failed {
                source_name: name,
                message: "the consumer thread panicked".into(),
            })
        })
    }
}
