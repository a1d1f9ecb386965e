//! The consumer group side, run on the consumer thread: librdkafka's
//! callbacks (rebalances, commit results, logs, errors) and the per-partition
//! state they act on — dispatching messages to partition tasks, pausing full
//! partitions, committing watermarks, and readiness.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, info_span, warn, Instrument};

use super::batch::{Fetched, Forward};
use super::partition::{run_partition, WorkContext};
use super::watermark::{size, Progress};
use crate::readiness::BrokerHealth;

/// How long in-flight submissions of revoked partitions may take to finish
/// before the rebalance goes on without them (they stay uncommitted and the
/// new owner processes them again; deterministic names make that harmless).
pub const REVOKE_GRACE: Duration = Duration::from_secs(10);

/// While the source is unhealthy, how often the broker is asked again.
const HEALTH_RECHECK: Duration = Duration::from_secs(5);

pub(super) type TopicPartition = (String, i32);

/// The partitions assigned here. A `hashbrown` map, so that a message's
/// partition is looked up by its borrowed topic name ([`PartitionOf`]).
pub(super) type Partitions = hashbrown::HashMap<TopicPartition, Assigned>;

/// A [`TopicPartition`] key borrowed from a message: hashes and compares as
/// the owned key does.
struct PartitionOf<'a>(&'a str, i32);

impl Hash for PartitionOf<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `(String, i32)` hashes: the string, then the number.
        self.0.hash(state);
        self.1.hash(state);
    }
}

impl hashbrown::Equivalent<TopicPartition> for PartitionOf<'_> {
    fn equivalent(&self, key: &TopicPartition) -> bool {
        self.1 == key.1 && self.0 == key.0
    }
}

/// A partition assigned to this member.
pub(super) struct Assigned {
    progress: Arc<Progress>,
    /// To the partition's task.
    queue: mpsc::UnboundedSender<OwnedMessage>,
    /// Cancelled when the partition is revoked or the source stops.
    stop: CancellationToken,
    paused: bool,
}

#[derive(Default)]
pub(super) struct Health {
    /// Has had an assignment (possibly empty): the group is joined.
    joined: bool,
    /// The last consumer error, until the broker answers again.
    error: Option<String>,
    error_code: Option<RDKafkaErrorCode>,
    checked: Option<Instant>,
}

/// librdkafka's callbacks and the consumer thread's state. Used only from the
/// consumer thread (the locks are never contended there; message tasks only
/// touch [`Progress`]). No lock is held across a call into the consumer.
pub(super) struct GroupContext {
    pub(super) group: String,
    /// Subscribed topics that are not patterns (checked for health).
    pub(super) literal_topics: Vec<String>,
    pub(super) work: Arc<WorkContext>,
    /// Messages of a partition waiting before it is paused (`maxQueued`).
    pub(super) max_queued: usize,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) partitions: Mutex<Partitions>,
    pub(super) health: Mutex<Health>,
    /// What `/readyz` says about this source.
    pub(super) readiness: BrokerHealth,
    /// Set once the consumer is closing: revokes then wait no more.
    pub(super) closing: AtomicBool,
    pub(super) span: tracing::Span,
    /// Where assigned partitions' messages are forwarded (the consumer
    /// thread reads them from there in batches).
    pub(super) forward: Arc<Forward>,
}

/// A message on the consumer thread, copied for its partition's task.
pub(super) trait Detach: Message {
    fn detach(&self) -> OwnedMessage;
}

impl Detach for Fetched<'_> {
    fn detach(&self) -> OwnedMessage {
        Fetched::detach(self)
    }
}

/// Polled from the consumer queue: only a partition whose messages were
/// somehow not forwarded to the fetch queue.
impl Detach for BorrowedMessage<'_> {
    fn detach(&self) -> OwnedMessage {
        BorrowedMessage::detach(self)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn list(tps: &[TopicPartition]) -> String {
    let names: Vec<String> = tps.iter().map(|(t, p)| format!("{t}/{p}")).collect();
    names.join(", ")
}

impl GroupContext {
    /// Settles a message nothing wants at once; hands any other to its
    /// partition's task. `true` if that paused the partition (its queue is
    /// full).
    pub(super) fn dispatch(
        &self,
        consumer: &BaseConsumer<GroupContext>,
        m: &impl Detach,
        taken: Instant,
    ) -> bool {
        let (topic, partition) = (m.topic(), m.partition());
        let mut parts = lock(&self.partitions);
        let Some(a) = parts.get_mut(&PartitionOf(topic, partition)) else {
            debug!(
                topic,
                partition,
                offset = m.offset(),
                "message for a partition not assigned here; skipped"
            );
            return false;
        };
        {
            let s = a.progress.lock();
            if s.marks.is_rewind(m.offset()) {
                warn!(topic, partition, offset = m.offset(), "offsets went back (reset, or the topic was re-created): processing again from here");
            }
            if s.marks.in_flight(m.offset()) {
                debug!(
                    topic,
                    partition,
                    offset = m.offset(),
                    "offset already in flight; skipped"
                );
                return false;
            }
        }
        // Outside the progress lock (tasks finishing take it); only this
        // thread dispatches, so nothing comes between.
        if self.work.settle_at_once(m, taken) {
            // Final: the commit moves past it once everything before it is
            // final too.
            a.progress.lock().marks.passed(m.offset());
            return false;
        }
        let (queued, full) = {
            let mut s = a.progress.lock();
            s.marks.dispatched(m.offset());
            s.queued += 1;
            s.queued_bytes += size(m);
            (s.queued, s.full(self.max_queued))
        };
        // A send fails only once the task stopped (partition being released).
        let _ = a.queue.send(m.detach());
        if full && !a.paused {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(topic, partition);
            match consumer.pause(&tpl) {
                Ok(()) => {
                    a.paused = true;
                    debug!(
                        topic,
                        partition, queued, "partition paused: its queue is full"
                    );
                    return true;
                }
                Err(e) => {
                    warn!(topic, partition, error = %e, "cannot pause partition")
                }
            }
        }
        false
    }

    pub(super) fn any_paused(&self) -> bool {
        lock(&self.partitions).values().any(|a| a.paused)
    }

    /// Resumes paused partitions whose queue has drained to half.
    pub(super) fn resume_drained(&self, consumer: &BaseConsumer<GroupContext>) {
        let mut parts = lock(&self.partitions);
        for ((topic, partition), a) in parts.iter_mut().filter(|(_, a)| a.paused) {
            let (queued, drained) = {
                let s = a.progress.lock();
                (s.queued, s.drained(self.max_queued))
            };
            if drained {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(topic, *partition);
                if consumer.resume(&tpl).is_ok() {
                    a.paused = false;
                    debug!(topic = %topic, partition, queued, "partition resumed");
                }
            }
        }
    }

    /// Commits the watermark of every assigned partition that moved.
    pub(super) fn commit_assigned(&self, consumer: &BaseConsumer<GroupContext>, mode: CommitMode) {
        let assigned: Vec<(TopicPartition, Arc<Progress>)> = lock(&self.partitions)
            .iter()
            .map(|(tp, a)| (tp.clone(), a.progress.clone()))
            .collect();
        self.commit(consumer, &assigned, mode);
    }

    fn commit(
        &self,
        consumer: &BaseConsumer<GroupContext>,
        partitions: &[(TopicPartition, Arc<Progress>)],
        mode: CommitMode,
    ) {
        let mut tpl = TopicPartitionList::new();
        let mut points = Vec::new();
        for ((topic, partition), progress) in partitions {
            if let Some(offset) = progress.lock().marks.uncommitted() {
                if tpl
                    .add_partition_offset(topic, *partition, Offset::Offset(offset))
                    .is_ok()
                {
                    points.push((progress, offset));
                }
            }
        }
        if points.is_empty() {
            return;
        }
        match consumer.commit(&tpl, mode) {
            Ok(()) => {
                // For async commits this is optimistic; a failure reported
                // to `commit_callback` makes the next tick commit again.
                for (progress, offset) in points {
                    progress.lock().marks.committed = Some(offset);
                }
                if matches!(mode, CommitMode::Sync) {
                    debug!(offsets = %offsets_text(&tpl), "committed");
                }
            }
            Err(e) => {
                warn!(error = %e, offsets = %offsets_text(&tpl), "commit failed; the messages may be redelivered (harmless)")
            }
        }
    }

    /// Stops every partition's task: no new messages start, retries end.
    pub(super) fn stop_all(&self) {
        for a in lock(&self.partitions).values() {
            a.stop.cancel();
        }
    }

    /// Nothing is processing.
    pub(super) fn idle(&self) -> bool {
        lock(&self.partitions)
            .values()
            .all(|a| a.progress.lock().running == 0)
    }

    fn assign(&self, consumer: &BaseConsumer<GroupContext>, tpl: &TopicPartitionList) {
        let mut added = Vec::new();
        {
            let mut parts = lock(&self.partitions);
            for e in tpl.elements() {
                let tp = (e.topic().to_string(), e.partition());
                if parts.contains_key(&tp) {
                    continue;
                }
                let progress = Arc::new(Progress::default());
                let stop = CancellationToken::new();
                let (queue, messages) = mpsc::unbounded_channel();
                let span =
                    info_span!(parent: &self.span, "partition", topic = %tp.0, partition = tp.1);
                self.runtime.spawn(
                    run_partition(self.work.clone(), messages, progress.clone(), stop.clone())
                        .instrument(span),
                );
                parts.insert(
                    tp.clone(),
                    Assigned {
                        progress,
                        queue,
                        stop,
                        paused: false,
                    },
                );
                added.push(tp);
            }
        }
        // A partition paused under an earlier assignment must fetch again.
        let _ = consumer.resume(tpl);
        added.sort();
        info!(assigned = %list(&added), "partitions assigned; consuming from the committed offsets");
        lock(&self.health).joined = true;
        self.publish_readiness();
    }

    /// Stops the revoked partitions, lets their in-flight messages finish
    /// (up to [`REVOKE_GRACE`]) and commits their watermark synchronously,
    /// all before librdkafka lets them go.
    fn revoke(&self, consumer: &BaseConsumer<GroupContext>, tpl: &TopicPartitionList) {
        let revoked: Vec<(TopicPartition, Assigned)> = {
            let mut parts = lock(&self.partitions);
            tpl.elements()
                .iter()
                .filter_map(|e| {
                    let tp = (e.topic().to_string(), e.partition());
                    parts.remove(&tp).map(|a| (tp, a))
                })
                .collect()
        };
        if revoked.is_empty() {
            return;
        }
        for (_, a) in &revoked {
            a.stop.cancel();
        }
        let grace = if self.closing.load(Ordering::SeqCst) {
            Duration::ZERO
        } else {
            REVOKE_GRACE
        };
        let deadline = Instant::now() + grace;
        for ((topic, partition), a) in &revoked {
            if !a.progress.wait_idle(deadline) {
                warn!(topic = %topic, partition, "in-flight messages still running; left uncommitted for the next owner");
            }
        }
        let names: Vec<TopicPartition> = revoked.iter().map(|(tp, _)| tp.clone()).collect();
        if consumer.assignment_lost() {
            warn!(revoked = %list(&names), "assignment lost (session timed out); nothing committed, the new owner redelivers");
        } else {
            let progress: Vec<(TopicPartition, Arc<Progress>)> = revoked
                .iter()
                .map(|(tp, a)| (tp.clone(), a.progress.clone()))
                .collect();
            self.commit(consumer, &progress, CommitMode::Sync);
        }
        info!(revoked = %list(&names), "partitions revoked");
        self.publish_readiness();
    }

    pub(super) fn consumer_error(&self, e: KafkaError) {
        if matches!(e, KafkaError::PartitionEOF(_)) {
            return;
        }
        match e.rdkafka_error_code() {
            // A dropped connection: librdkafka reconnects by itself (and
            // reports AllBrokersDown if none is left).
            Some(RDKafkaErrorCode::BrokerTransportFailure) => {
                debug!(error = %e, "broker connection lost; reconnecting")
            }
            code => {
                let mut h = lock(&self.health);
                // librdkafka reports most errors twice (error callback and
                // consumer queue) and repeats them while they last.
                if h.error.is_none() || h.error_code != code {
                    warn!(error = %e, "kafka consumer error");
                }
                h.error = Some(e.to_string());
                h.error_code = code;
                h.checked = Some(Instant::now());
                drop(h);
                self.publish_readiness();
            }
        }
    }

    /// After an error, asks the broker every [`HEALTH_RECHECK`] whether it
    /// answers and knows the subscribed topics; clears the error if so.
    pub(super) fn recheck_health(&self, consumer: &BaseConsumer<GroupContext>) {
        {
            let h = lock(&self.health);
            if h.error.is_none() || h.checked.is_some_and(|c| c.elapsed() < HEALTH_RECHECK) {
                return;
            }
        }
        let healthy = match consumer.fetch_metadata(None, Duration::from_secs(2)) {
            Ok(md) => self.literal_topics.iter().all(|t| {
                md.topics()
                    .iter()
                    .any(|mt| mt.name() == t.as_str() && mt.error().is_none())
            }),
            Err(_) => false,
        };
        let mut h = lock(&self.health);
        h.checked = Some(Instant::now());
        if healthy {
            info!("broker reachable again");
            h.error = None;
            drop(h);
            self.publish_readiness();
        }
    }

    /// `/readyz`: ready once the group is joined, unless the last error has
    /// not cleared.
    pub(super) fn publish_readiness(&self) {
        let mut assigned: Vec<TopicPartition> = lock(&self.partitions).keys().cloned().collect();
        assigned.sort();
        let (joined, error) = {
            let h = lock(&self.health);
            (h.joined, h.error.clone())
        };
        let consuming = joined.then(|| {
            format!(
                "group `{}`: {} partition(s) assigned{}{}",
                self.group,
                assigned.len(),
                if assigned.is_empty() { "" } else { ": " },
                list(&assigned)
            )
        });
        let problem = error.map(|e| format!("group `{}`: {e}", self.group));
        self.readiness.update(|s| {
            s.consuming = consuming;
            s.problem = problem;
        });
    }
}

fn offsets_text(tpl: &TopicPartitionList) -> String {
    let parts: Vec<String> = tpl
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => format!("{}/{}@{o}", e.topic(), e.partition()),
            other => format!("{}/{}@{other:?}", e.topic(), e.partition()),
        })
        .collect();
    parts.join(", ")
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let _entered = self.span.enter();
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => error!(target: "librdkafka", facility = fac, "{message}"),
            RDKafkaLogLevel::Warning => warn!(target: "librdkafka", facility = fac, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(target: "librdkafka", facility = fac, "{message}")
            }
            RDKafkaLogLevel::Debug => debug!(target: "librdkafka", facility = fac, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let _entered = self.span.enter();
        debug!(error = %error, reason, "librdkafka error");
        self.consumer_error(error);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let _entered = self.span.enter();
        match rebalance {
            Rebalance::Revoke(tpl) => self.revoke(consumer, tpl),
            // Before librdkafka starts fetching them.
            Rebalance::Assign(tpl) => self.forward.partitions(consumer, tpl),
            Rebalance::Error(e) => {
                error!(error = %e, "rebalance failed");
                lock(&self.health).error = Some(format!("rebalance failed: {e}"));
                self.publish_readiness();
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let _entered = self.span.enter();
        if let Rebalance::Assign(tpl) = rebalance {
            self.assign(consumer, tpl);
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        let _entered = self.span.enter();
        match result {
            Ok(()) => debug!(offsets = %offsets_text(offsets), "committed"),
            Err(e) => {
                warn!(error = %e, offsets = %offsets_text(offsets), "commit failed; retrying at the next tick");
                let parts = lock(&self.partitions);
                for el in offsets.elements() {
                    if let Some(a) = parts.get(&(el.topic().to_string(), el.partition())) {
                        a.progress.lock().marks.committed = None;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_partition_finds_its_owned_key() {
        let mut map: hashbrown::HashMap<TopicPartition, u32> = hashbrown::HashMap::new();
        for (i, topic) in ["jobs", "jobs-2", "", "données"].iter().enumerate() {
            for partition in 0..40 {
                map.insert(
                    (topic.to_string(), partition),
                    i as u32 * 100 + partition as u32,
                );
            }
        }
        for (i, topic) in ["jobs", "jobs-2", "", "données"].iter().enumerate() {
            for partition in 0..40 {
                assert_eq!(
                    map.get(&PartitionOf(topic, partition)),
                    Some(&(i as u32 * 100 + partition as u32)),
                    "{topic}/{partition}"
                );
            }
        }
        assert_eq!(map.get(&PartitionOf("jobs", 40)), None);
        assert_eq!(map.get(&PartitionOf("job", 1)), None);
        assert_eq!(map.get(&PartitionOf("jobs-3", 1)), None);
    }
}
