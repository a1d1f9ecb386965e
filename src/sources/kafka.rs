//! Kafka: a consumer-group member that turns each message into an [`Event`]
//! and commits offsets only behind messages whose outcome is final.
//!
//! ```yaml
//! sources:
//!   - type: kafka
//!     name: jobs
//!     brokers: kafka-0:9092,kafka-1:9092    # or a list
//!     topics: [jobs, "^pipeline\\..*"]       # `^…` is a regular expression
//!     groupId: tripline
//!     autoOffsetReset: earliest              # where a new group starts (default)
//!     securityProtocol: sasl_ssl             # default: inferred from sasl/tls
//!     sasl: {mechanism: SCRAM-SHA-512, username: tripline, password: {env: KAFKA_PASSWORD}}
//!     tls: {caFile: /etc/kafka/ca.pem}
//!     properties: {session.timeout.ms: 10000} # any other librdkafka setting
//!     maxInFlight: 8                         # messages processed at once per partition
//!     maxQueued: 50000                       # fetched ahead per partition, then paused
//! ```
//!
//! # Delivery guarantees
//!
//! * **At least once, one object.** tripline commits offsets itself
//!   (`enable.auto.commit=false`, `enable.auto.offset.store=false`) and never
//!   past a message that lacks a final outcome, so a message can be delivered
//!   again (after a crash, a rebalance, a lost commit) but never skipped. Its
//!   event id is `<topic>/<partition>/<offset>`, the same on every delivery:
//!   the object gets the same deterministic name and a second submission finds
//!   it (`existing`) instead of creating another.
//! * **The commit watermark.** Within a partition, messages are dispatched in
//!   offset order and up to `maxInFlight` of them are processed at once (at
//!   most `limits.maxInFlight` for the whole source). What is committed is the
//!   lowest offset still without a final outcome, or one past the highest
//!   dispatched offset when every message has one ([`Watermark`]). A message
//!   that finishes early never carries the commit past a slower one before it.
//!   `maxInFlight: 1` processes each partition strictly in order.
//! * **Kubernetes API unavailable** ([`Disposition::Retry`], after the
//!   trigger's own retries): the message is retried with exponential backoff
//!   (`retryBackoff`, doubling up to `maxRetryBackoff`) and holds its
//!   partition's commit point until it succeeds. A partition whose queue fills
//!   up (`maxQueued` messages or 8 MiB waiting) is paused at the broker, so
//!   memory stays bounded; other partitions carry on.
//! * **Rejected** ([`Disposition::Rejected`]: render failure or API 4xx): the
//!   object is already in the dead-letter log, so the message counts as
//!   finished and the commit moves past it. A poison message never blocks.
//! * **Rebalance** (eager or cooperative): when partitions are revoked, tripline
//!   stops dispatching them, abandons their retries, gives their in-flight
//!   submissions up to [`REVOKE_GRACE`] to finish, and commits their watermark
//!   synchronously inside the rebalance callback, before another member can
//!   fetch them. Newly assigned partitions resume from the committed offset.
//! * **Shutdown** (SIGTERM): intake is paused, in-flight submissions get two
//!   thirds of `limits.shutdownDeadline`, the watermark is committed
//!   synchronously, and the consumer is closed, which sends LeaveGroup so the
//!   group hands the partitions over at once (not after `session.timeout.ms`).
//!
//! # Threads
//!
//! librdkafka runs its callbacks (rebalance, commit results, logs) on the
//! thread that polls the consumer. Here that is a dedicated OS thread
//! (`KafkaSource::consume`): it polls, dispatches each message to its
//! partition's task on the tokio runtime, commits, and handles rebalances. A
//! rebalance callback may therefore block (waiting for in-flight work,
//! committing synchronously) without stalling the runtime, and since every
//! commit is made on that thread, a commit can never race a rebalance.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message, OwnedMessage};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, info_span, warn, Instrument};

use super::webhook::SecretRef;
use super::{Source, SourceError};
use crate::app::{Disposition, Engine};
use crate::config::Limits;
use crate::event::{parse_payload, Event};

/// How long in-flight submissions of revoked partitions may take to finish
/// before the rebalance goes on without them (they stay uncommitted and the
/// new owner processes them again; deterministic names make that harmless).
pub const REVOKE_GRACE: Duration = Duration::from_secs(10);

/// How many bytes (keys and values) of one partition may wait for a
/// processing slot; see [`KafkaConfig::max_queued`] for the message count.
/// Past either, the partition is paused at the broker; it resumes once both
/// are down to half. Pausing drops what librdkafka prefetched, and resuming
/// fetches it again (one broker round trip), so the queue must cover that
/// round trip at full speed: a small queue turns into a pause/resume cycle
/// per round trip (measured: 500 messages halved the outbox throughput and
/// cut the no-match path 60-fold).
const MAX_QUEUED_BYTES: usize = 8 << 20;

/// How long the consumer thread waits for a message when nothing is paused,
/// and when some partition is paused (so it resumes it promptly).
const POLL: Duration = Duration::from_millis(100);
const POLL_PAUSED: Duration = Duration::from_millis(10);

/// While the source is unhealthy, how often the broker is asked again.
const HEALTH_RECHECK: Duration = Duration::from_secs(5);

// ---- config ----------------------------------------------------------------

/// `type: kafka` in `tripline.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaConfig {
    pub name: String,
    /// Bootstrap servers (`host:port`): a list, or one comma-separated string.
    #[serde(deserialize_with = "string_or_list")]
    pub brokers: Vec<String>,
    /// Topics to subscribe to; an entry starting with `^` is a regular
    /// expression matched against every topic name.
    pub topics: Vec<String>,
    /// Consumer group: replicas with the same id share the partitions.
    pub group_id: String,
    /// Where a group without a committed offset starts (default `earliest`,
    /// so messages sent before the first start are not missed).
    #[serde(default)]
    pub auto_offset_reset: AutoOffsetReset,
    /// Default: `sasl_ssl` with `sasl`, `ssl` with only `tls`, else `plaintext`.
    #[serde(default)]
    pub security_protocol: Option<SecurityProtocol>,
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Extra librdkafka consumer properties (`session.timeout.ms`,
    /// `fetch.max.bytes`, `client.rack`…). Settings tripline owns (offsets,
    /// group id, brokers, secrets) are refused here.
    #[serde(default)]
    pub properties: BTreeMap<String, PropertyValue>,
    /// Messages processed at once per partition (default 8; 1 = in order).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Messages of one partition fetched ahead of processing (default
    /// 50 000; also at most 8 MiB). Past it the partition is paused at the
    /// broker until half of it is processed.
    #[serde(default = "default_max_queued")]
    pub max_queued: usize,
    /// First delay before retrying a message the Kubernetes API could not take.
    #[serde(default = "default_retry_backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Longest delay between retries of one message.
    #[serde(default = "default_max_retry_backoff", with = "humantime_serde")]
    pub max_retry_backoff: Duration,
    /// How often finished work is committed (also on revoke and shutdown).
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AutoOffsetReset {
    #[default]
    Earliest,
    Latest,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[serde(alias = "PLAINTEXT")]
    Plaintext,
    #[serde(alias = "SSL")]
    Ssl,
    #[serde(alias = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[serde(alias = "SASL_SSL")]
    SaslSsl,
}

impl SecurityProtocol {
    fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: SecretRef,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// PEM files; relative paths are relative to `tripline.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsConfig {
    /// CA bundle to verify the brokers (default: the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub key_password: Option<SecretRef>,
}

/// A librdkafka property value as YAML writes it (`6000`, `true`, `"lz4"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PropertyValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl std::fmt::Display for PropertyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PropertyValue::Bool(b) => write!(f, "{b}"),
            PropertyValue::Int(i) => write!(f, "{i}"),
            PropertyValue::Float(x) => write!(f, "{x}"),
            PropertyValue::Text(s) => f.write_str(s),
        }
    }
}

fn default_max_in_flight() -> usize {
    8
}
fn default_max_queued() -> usize {
    50_000
}
fn default_retry_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_retry_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_commit_interval() -> Duration {
    Duration::from_secs(1)
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let list = match OneOrMany::deserialize(d).map_err(|_: D::Error| {
        serde::de::Error::custom(
            "expected `host:port`, a comma-separated string of them, or a list",
        )
    })? {
        OneOrMany::One(s) => s.split(',').map(|b| b.trim().to_string()).collect(),
        OneOrMany::Many(v) => v.into_iter().map(|b| b.trim().to_string()).collect(),
    };
    Ok(list)
}

/// librdkafka properties that `properties:` may not set, and why.
const OWNED_PROPERTIES: [(&str, &str); 11] = [
    ("bootstrap.servers", "use `brokers`"),
    ("metadata.broker.list", "use `brokers`"),
    ("group.id", "use `groupId`"),
    ("auto.offset.reset", "use `autoOffsetReset`"),
    ("security.protocol", "use `securityProtocol`"),
    (
        "enable.auto.commit",
        "tripline commits offsets itself, only behind finished messages",
    ),
    (
        "enable.auto.offset.store",
        "tripline commits offsets itself, only behind finished messages",
    ),
    (
        "sasl.password",
        "secrets are never inline: use `sasl.password: {env: …}` or `{file: …}`",
    ),
    (
        "ssl.key.password",
        "secrets are never inline: use `tls.keyPassword: {env: …}` or `{file: …}`",
    ),
    (
        "ssl.keystore.password",
        "secrets are never inline; use `tls` with PEM files",
    ),
    ("sasl.oauthbearer.client.secret", "secrets are never inline"),
];

impl KafkaConfig {
    /// Checks what serde cannot; errors are `(field, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: &str| Err((f.to_string(), m.to_string()));
        if self.brokers.is_empty() || self.brokers.iter().any(String::is_empty) {
            return err(
                "brokers",
                "give at least one `host:port` (no empty entries)",
            );
        }
        if self.topics.is_empty() {
            return err("topics", "give at least one topic");
        }
        for (i, t) in self.topics.iter().enumerate() {
            if t.is_empty() {
                return err(&format!("topics[{i}]"), "empty topic name");
            }
            if t.starts_with('^') {
                if let Err(e) = regex::Regex::new(t) {
                    return err(
                        &format!("topics[{i}]"),
                        &format!("bad regular expression: {e}"),
                    );
                }
            }
        }
        if self.group_id.trim().is_empty() {
            return err("groupId", "must not be empty");
        }
        if self.max_in_flight == 0 {
            return err("maxInFlight", "must be at least 1");
        }
        if self.max_queued == 0 {
            return err("maxQueued", "must be at least 1");
        }
        if self.retry_backoff.is_zero() || self.max_retry_backoff < self.retry_backoff {
            return err(
                "maxRetryBackoff",
                "retryBackoff must be positive and maxRetryBackoff at least retryBackoff",
            );
        }
        if self.commit_interval < Duration::from_millis(10) {
            return err("commitInterval", "must be at least 10ms");
        }
        if let Some(s) = &self.sasl {
            if s.username.is_empty() {
                return err("sasl.username", "must not be empty");
            }
        }
        if let Some(t) = &self.tls {
            if t.cert_file.is_some() != t.key_file.is_some() {
                return err("tls", "give both `certFile` and `keyFile` (or neither)");
            }
        }
        for key in self.properties.keys() {
            if let Some((_, why)) = OWNED_PROPERTIES.iter().find(|(k, _)| k == key) {
                return err(&format!("properties.{key}"), why);
            }
        }
        Ok(())
    }

    pub fn rebase(&mut self, base: &Path) {
        if let Some(s) = &mut self.sasl {
            s.password.rebase(base);
        }
        if let Some(t) = &mut self.tls {
            for f in [&mut t.ca_file, &mut t.cert_file, &mut t.key_file]
                .into_iter()
                .flatten()
            {
                if f.is_relative() {
                    *f = base.join(&*f);
                }
            }
            if let Some(p) = &mut t.key_password {
                p.rebase(base);
            }
        }
    }

    fn security_protocol(&self) -> SecurityProtocol {
        self.security_protocol
            .unwrap_or(match (&self.sasl, &self.tls) {
                (Some(_), _) => SecurityProtocol::SaslSsl,
                (None, Some(_)) => SecurityProtocol::Ssl,
                (None, None) => SecurityProtocol::Plaintext,
            })
    }

    /// The librdkafka consumer settings, secrets resolved. Errors name the
    /// secret that could not be read.
    pub fn client_config(&self) -> Result<ClientConfig, String> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.join(","))
            .set("group.id", &self.group_id)
            .set("client.id", format!("tripline-{}", self.name))
            .set(
                "auto.offset.reset",
                match self.auto_offset_reset {
                    AutoOffsetReset::Earliest => "earliest",
                    AutoOffsetReset::Latest => "latest",
                },
            )
            .set("security.protocol", self.security_protocol().as_str());
        let first_line = |s: &SecretRef, what: &str| s.first().map_err(|e| format!("{what}: {e}"));
        if let Some(s) = &self.sasl {
            c.set("sasl.mechanisms", s.mechanism.as_str())
                .set("sasl.username", &s.username)
                .set("sasl.password", first_line(&s.password, "sasl.password")?);
        }
        if let Some(t) = &self.tls {
            let path = |p: &PathBuf| p.display().to_string();
            if let Some(ca) = &t.ca_file {
                c.set("ssl.ca.location", path(ca));
            }
            if let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) {
                c.set("ssl.certificate.location", path(cert))
                    .set("ssl.key.location", path(key));
            }
            if let Some(p) = &t.key_password {
                c.set("ssl.key.password", first_line(p, "tls.keyPassword")?);
            }
        }
        for (k, v) in &self.properties {
            c.set(k, v.to_string());
        }
        // Offsets are tripline's: only committed behind finished messages.
        c.set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        Ok(c)
    }
}

// ---- the source ------------------------------------------------------------

/// A running Kafka source (see the module documentation).
pub struct KafkaSource {
    config: KafkaConfig,
    client: ClientConfig,
    /// Source-wide cap on messages in processing (`limits.maxInFlight`).
    max_in_flight_total: usize,
    /// How long shutdown waits for in-flight messages.
    drain: Duration,
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
            drain: limits.shutdown_deadline * 2 / 3,
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
        engine: Arc<Engine>,
        shutdown: CancellationToken,
        runtime: tokio::runtime::Handle,
    ) -> Result<(), SourceError> {
        let name = self.config.name.clone();
        let span = info_span!("kafka", source = %name, group = %self.config.group_id);
        let _entered = span.enter();
        let ctx = GroupContext {
            source: name.clone(),
            group: self.config.group_id.clone(),
            brokers: self.config.brokers.join(","),
            literal_topics: (self.config.topics.iter())
                .filter(|t| !t.starts_with('^'))
                .cloned()
                .collect(),
            work: Arc::new(WorkContext {
                source: name.clone(),
                engine: engine.clone(),
                slots: Arc::new(Semaphore::new(self.max_in_flight_total)),
                max_in_flight: self.config.max_in_flight,
                retry_backoff: self.config.retry_backoff,
                max_retry_backoff: self.config.max_retry_backoff,
            }),
            max_queued: self.config.max_queued,
            runtime,
            partitions: Mutex::new(HashMap::new()),
            health: Mutex::new(Health::default()),
            stopping: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            span: span.clone(),
        };
        ctx.publish_readiness();
        let consumer: BaseConsumer<GroupContext> = self
            .client
            .create_with_context(ctx)
            .map_err(|e| self.failed(format!("cannot create the consumer: {e}")))?;
        let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| self.failed(format!("cannot subscribe to {topics:?}: {e}")))?;
        info!(topics = ?topics, brokers = %self.config.brokers.join(","), "subscribed");

        let mut last_commit = Instant::now();
        while !shutdown.is_cancelled() {
            let ctx = consumer.context();
            let timeout = if ctx.any_paused() { POLL_PAUSED } else { POLL };
            match consumer.poll(timeout) {
                Some(Ok(m)) => ctx.dispatch(&consumer, &m),
                Some(Err(e)) => ctx.consumer_error(e),
                None => {}
            }
            ctx.resume_drained(&consumer);
            if last_commit.elapsed() >= self.config.commit_interval {
                ctx.commit_assigned(&consumer, CommitMode::Async);
                last_commit = Instant::now();
            }
            ctx.recheck_health(&consumer);
        }

        // Shutdown: no new work, finish what runs, commit, leave the group.
        info!("stopping: intake paused, finishing in-flight messages");
        let ctx = consumer.context().clone();
        ctx.stopping.store(true, Ordering::SeqCst);
        engine.readiness.set(&name, false, "shutting down");
        ctx.stop_all();
        if let Ok(assignment) = consumer.assignment() {
            let _ = consumer.pause(&assignment);
        }
        let deadline = Instant::now() + self.drain;
        while !ctx.idle() && Instant::now() < deadline {
            // Keep serving callbacks (a rebalance may be under way); messages
            // are no longer dispatched and stay uncommitted.
            if let Some(Err(e)) = consumer.poll(Duration::from_millis(50)) {
                ctx.consumer_error(e);
            }
        }
        if !ctx.idle() {
            warn!(
                drain_s = self.drain.as_secs(),
                "in-flight messages did not finish in time; they stay uncommitted and will be redelivered"
            );
        }
        ctx.commit_assigned(&consumer, CommitMode::Sync);
        ctx.closing.store(true, Ordering::SeqCst);
        // Dropping the consumer closes it: the final revoke runs our callback,
        // then LeaveGroup is sent.
        drop(consumer);
        engine.readiness.set(&name, false, "stopped");
        info!("consumer closed, left the group");
        Ok(())
    }
}

#[async_trait]
impl Source for KafkaSource {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn run(
        self: Box<Self>,
        engine: Arc<Engine>,
        shutdown: CancellationToken,
    ) -> Result<(), SourceError> {
        let name = self.config.name.clone();
        let runtime = tokio::runtime::Handle::current();
        let (done, finished) = tokio::sync::oneshot::channel();
        // A plain thread, not `spawn_blocking`: the runtime must not wait for
        // it at exit if the shutdown deadline passes.
        std::thread::Builder::new()
            .name(format!("kafka-{name}"))
            .spawn(move || {
                let _ = done.send(self.consume(engine, shutdown, runtime));
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

// ---- the commit watermark --------------------------------------------------

/// Which offsets of one partition have a final outcome, and so what may be
/// committed. Offsets are recorded as they are dispatched (in the order the
/// broker delivers them, which is offset order) and removed when final; gaps
/// in offsets (compaction, transaction markers) need no special care.
#[derive(Debug, Default)]
pub struct Watermark {
    /// Dispatched, no final outcome yet.
    pending: BTreeSet<i64>,
    /// One past the highest offset dispatched.
    next: Option<i64>,
    /// What was last committed (or sent to be).
    committed: Option<i64>,
}

impl Watermark {
    /// Records a dispatched message; `false` if that offset was dispatched
    /// already (it is then not processed twice).
    pub fn dispatched(&mut self, offset: i64) -> bool {
        if self.next.is_some_and(|n| offset < n) {
            return false;
        }
        self.pending.insert(offset);
        self.next = Some(offset + 1);
        true
    }

    /// Records a final outcome.
    pub fn finished(&mut self, offset: i64) {
        self.pending.remove(&offset);
    }

    /// The offset to commit: every message below it has a final outcome.
    /// `None` before anything was dispatched.
    pub fn commit_point(&self) -> Option<i64> {
        self.pending.first().copied().or(self.next)
    }

    /// The commit point, if it is not what was committed last.
    pub fn uncommitted(&self) -> Option<i64> {
        self.commit_point().filter(|p| Some(*p) != self.committed)
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// One assigned partition's progress, shared by the consumer thread and the
/// partition's tasks.
#[derive(Default)]
struct Progress {
    state: Mutex<ProgressState>,
    /// Signalled when a message stops running.
    stopped_running: Condvar,
}

#[derive(Default)]
struct ProgressState {
    marks: Watermark,
    /// Messages in processing (including those waiting to retry).
    running: usize,
    /// Dispatched messages waiting for a processing slot, and their size.
    queued: usize,
    queued_bytes: usize,
}

impl ProgressState {
    fn full(&self, max_queued: usize) -> bool {
        self.queued >= max_queued || self.queued_bytes >= MAX_QUEUED_BYTES
    }

    fn drained(&self, max_queued: usize) -> bool {
        self.queued <= max_queued / 2 && self.queued_bytes <= MAX_QUEUED_BYTES / 2
    }
}

/// What a message weighs in the queue.
fn size(m: &impl Message) -> usize {
    m.payload().map_or(0, <[u8]>::len) + m.key().map_or(0, <[u8]>::len)
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, ProgressState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves a message from the queue to running, unless the partition is
    /// being released.
    fn start(self: &Arc<Self>, stop: &CancellationToken, bytes: usize) -> Option<Running> {
        let mut s = self.lock();
        // Checked under the lock: the consumer thread cancels `stop` and then
        // waits (under this lock) for `running` to reach zero.
        if stop.is_cancelled() {
            return None;
        }
        s.queued = s.queued.saturating_sub(1);
        s.queued_bytes = s.queued_bytes.saturating_sub(bytes);
        s.running += 1;
        Some(Running(self.clone()))
    }

    /// Waits until nothing runs, or `deadline`; `true` if nothing runs.
    fn wait_idle(&self, deadline: Instant) -> bool {
        let mut s = self.lock();
        while s.running > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = match self.stopped_running.wait_timeout(s, left) {
                Ok((s, _)) => s,
                Err(e) => e.into_inner().0,
            };
        }
        true
    }
}

/// A message in processing; dropping it (even in a panic) says it stopped.
struct Running(Arc<Progress>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.lock().running -= 1;
        self.0.stopped_running.notify_all();
    }
}

// ---- the consumer context: dispatch, commits, rebalances ------------------

type TopicPartition = (String, i32);

/// A partition assigned to this member.
struct Assigned {
    progress: Arc<Progress>,
    /// To the partition's task.
    queue: mpsc::UnboundedSender<OwnedMessage>,
    /// Cancelled when the partition is revoked or the source stops.
    stop: CancellationToken,
    paused: bool,
}

#[derive(Default)]
struct Health {
    /// Has had an assignment (possibly empty): the group is joined.
    joined: bool,
    /// The last consumer error, until the broker answers again.
    error: Option<String>,
    error_code: Option<RDKafkaErrorCode>,
    checked: Option<Instant>,
}

/// What every message task needs.
struct WorkContext {
    source: String,
    engine: Arc<Engine>,
    /// Source-wide processing slots (`limits.maxInFlight`).
    slots: Arc<Semaphore>,
    max_in_flight: usize,
    retry_backoff: Duration,
    max_retry_backoff: Duration,
}

/// librdkafka's callbacks and the consumer thread's state. Used only from the
/// consumer thread (the locks are never contended there; message tasks only
/// touch [`Progress`]). No lock is held across a call into the consumer.
struct GroupContext {
    source: String,
    group: String,
    brokers: String,
    /// Subscribed topics that are not patterns (checked for health).
    literal_topics: Vec<String>,
    work: Arc<WorkContext>,
    /// Messages of a partition waiting before it is paused (`maxQueued`).
    max_queued: usize,
    runtime: tokio::runtime::Handle,
    partitions: Mutex<HashMap<TopicPartition, Assigned>>,
    health: Mutex<Health>,
    /// Set once shutdown began: readiness stays "shutting down".
    stopping: AtomicBool,
    /// Set once the consumer is closing: revokes then wait no more.
    closing: AtomicBool,
    span: tracing::Span,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn list(tps: &[TopicPartition]) -> String {
    let names: Vec<String> = tps.iter().map(|(t, p)| format!("{t}/{p}")).collect();
    names.join(", ")
}

impl GroupContext {
    /// Hands a message to its partition's task.
    fn dispatch(&self, consumer: &BaseConsumer<GroupContext>, m: &BorrowedMessage<'_>) {
        let tp = (m.topic().to_string(), m.partition());
        let mut parts = lock(&self.partitions);
        let Some(a) = parts.get_mut(&tp) else {
            debug!(topic = %tp.0, partition = tp.1, offset = m.offset(), "message for a partition not assigned here; skipped");
            return;
        };
        let (queued, full) = {
            let mut s = a.progress.lock();
            if !s.marks.dispatched(m.offset()) {
                debug!(topic = %tp.0, partition = tp.1, offset = m.offset(), "offset already dispatched; skipped");
                return;
            }
            s.queued += 1;
            s.queued_bytes += size(m);
            (s.queued, s.full(self.max_queued))
        };
        // A send fails only once the task stopped (partition being released).
        let _ = a.queue.send(m.detach());
        if full && !a.paused {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&tp.0, tp.1);
            match consumer.pause(&tpl) {
                Ok(()) => {
                    a.paused = true;
                    debug!(topic = %tp.0, partition = tp.1, queued, "partition paused: its queue is full");
                }
                Err(e) => {
                    warn!(topic = %tp.0, partition = tp.1, error = %e, "cannot pause partition")
                }
            }
        }
    }

    fn any_paused(&self) -> bool {
        lock(&self.partitions).values().any(|a| a.paused)
    }

    /// Resumes paused partitions whose queue has drained to half.
    fn resume_drained(&self, consumer: &BaseConsumer<GroupContext>) {
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
    fn commit_assigned(&self, consumer: &BaseConsumer<GroupContext>, mode: CommitMode) {
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
    fn stop_all(&self) {
        for a in lock(&self.partitions).values() {
            a.stop.cancel();
        }
    }

    /// Nothing is processing.
    fn idle(&self) -> bool {
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

    fn consumer_error(&self, e: KafkaError) {
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
    fn recheck_health(&self, consumer: &BaseConsumer<GroupContext>) {
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
    fn publish_readiness(&self) {
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let mut assigned: Vec<TopicPartition> = lock(&self.partitions).keys().cloned().collect();
        assigned.sort();
        let h = lock(&self.health);
        let (ready, detail) = match (&h.error, h.joined) {
            (Some(e), _) => (false, format!("group `{}`: {e}", self.group)),
            (None, false) => (
                false,
                format!("joining group `{}` at {}", self.group, self.brokers),
            ),
            (None, true) => (
                true,
                format!(
                    "group `{}`: {} partition(s) assigned{}{}",
                    self.group,
                    assigned.len(),
                    if assigned.is_empty() { "" } else { ": " },
                    list(&assigned)
                ),
            ),
        };
        drop(h);
        self.work.engine.readiness.set(&self.source, ready, detail);
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
            Rebalance::Assign(_) => {}
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

// ---- processing ------------------------------------------------------------

/// One partition's task: takes its messages in order and processes up to
/// `maxInFlight` at once, each to a final outcome. Ends when the partition
/// is revoked or the source stops, after what runs has stopped; messages still
/// queued are left uncommitted (fetched again by whoever owns the partition).
async fn run_partition(
    work: Arc<WorkContext>,
    mut messages: mpsc::UnboundedReceiver<OwnedMessage>,
    progress: Arc<Progress>,
    stop: CancellationToken,
) {
    // The tasks below are spawned, so they name their parent span explicitly.
    let partition_span = tracing::Span::current();
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Err(e) = done {
                    error!(error = %e, "message task failed; its offset stays uncommitted");
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
                let span = info_span!(parent: &partition_span, "message", offset, id = tracing::field::Empty);
                running.spawn(async move {
                    let _slot = slot;
                    let _mark = mark;
                    let event = to_event(&work.source, &message);
                    span.record("id", event.id.as_str());
                    drop(message);
                    if process_until_final(&work, event, &stop).instrument(span).await {
                        progress.lock().marks.finished(offset);
                    }
                });
            }
        }
    }
    while running.join_next().await.is_some() {}
}

/// Processes `event` until its outcome is final; `true` then. Retries while
/// the Kubernetes API is unavailable; `false` if `stop` came first (the
/// message stays uncommitted and will be delivered again).
async fn process_until_final(work: &WorkContext, event: Event, stop: &CancellationToken) -> bool {
    let mut attempt = 1u32;
    loop {
        let outcome = work.engine.process(event.clone()).await;
        match outcome.disposition() {
            Disposition::Done => {
                debug!(triggers = outcome.matched.len(), "done");
                return true;
            }
            Disposition::Rejected => {
                warn!("an object was rejected and dead-lettered; committing past this message");
                return true;
            }
            Disposition::Retry => {
                let wait = crate::submit::jittered(crate::submit::exponential(
                    work.retry_backoff,
                    work.max_retry_backoff,
                    attempt,
                ));
                warn!(
                    attempt,
                    retry_in_ms = wait.as_millis() as u64,
                    "Kubernetes API unavailable; holding this partition's commit point and retrying"
                );
                tokio::select! {
                    _ = stop.cancelled() => {
                        info!("partition released while retrying; left uncommitted for redelivery");
                        return false;
                    }
                    _ = tokio::time::sleep(wait) => {}
                }
                attempt += 1;
            }
        }
    }
}

/// The envelope of a Kafka message: id `<topic>/<partition>/<offset>`,
/// `type` and `subject` the topic, `time` the message timestamp, Kafka headers
/// as headers, and `meta` with topic, partition, offset, key and timestamp.
pub fn to_event(source: &str, m: &impl Message) -> Event {
    let mut meta = Map::new();
    let (raw, body) = match m.payload() {
        Some(raw) => (raw, parse_payload(raw, &mut meta)),
        // A tombstone (null value).
        None => (&[][..], Value::Null),
    };
    let mut event = Event::new(source, raw, body);
    event.id = format!("{}/{}/{}", m.topic(), m.partition(), m.offset());
    event.kind = m.topic().to_string();
    event.subject = m.topic().to_string();
    if let Some(ms) = m.timestamp().to_millis().filter(|ms| *ms >= 0) {
        let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
        event.time = humantime::format_rfc3339_millis(t).to_string();
        meta.insert("timestamp".into(), json!(ms));
    }
    if let Some(headers) = m.headers() {
        for h in headers.iter() {
            let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
            event.headers.insert(h.key, value);
        }
    }
    meta.insert("topic".into(), json!(m.topic()));
    meta.insert("partition".into(), json!(m.partition()));
    meta.insert("offset".into(), json!(m.offset()));
    let key = match m.key() {
        None => Value::Null,
        Some(k) => match std::str::from_utf8(k) {
            Ok(s) => json!(s),
            Err(_) => {
                meta.insert("keyEncoding".into(), json!("base64"));
                json!(base64::engine::general_purpose::STANDARD.encode(k))
            }
        },
    };
    meta.insert("key".into(), key);
    event.meta = meta;
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::Timestamp;

    #[test]
    fn the_watermark_never_passes_an_unfinished_message() {
        let mut w = Watermark::default();
        assert_eq!(w.commit_point(), None);
        for o in 10..15 {
            assert!(w.dispatched(o));
        }
        assert_eq!(w.commit_point(), Some(10));
        // 11, 12 and 14 finish before 10: nothing below 10 is done yet.
        w.finished(11);
        w.finished(12);
        w.finished(14);
        assert_eq!(w.commit_point(), Some(10));
        w.finished(10);
        assert_eq!(w.commit_point(), Some(13), "13 still pending");
        w.finished(13);
        assert_eq!(w.commit_point(), Some(15), "one past the highest");
        // Gaps (compaction, transaction markers) are fine.
        assert!(w.dispatched(20));
        assert_eq!(w.commit_point(), Some(20));
        w.finished(20);
        assert_eq!(w.commit_point(), Some(21));
        // A redelivered offset below what was dispatched is refused.
        assert!(!w.dispatched(12));
        assert_eq!(w.commit_point(), Some(21));
    }

    #[test]
    fn uncommitted_reports_only_movement() {
        let mut w = Watermark::default();
        w.dispatched(0);
        assert_eq!(w.uncommitted(), Some(0));
        w.committed = Some(0);
        assert_eq!(w.uncommitted(), None);
        w.finished(0);
        assert_eq!(w.uncommitted(), Some(1));
    }

    #[test]
    fn messages_become_events() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "Content-Type",
                value: Some("application/json"),
            })
            .insert(Header {
                key: "trace",
                value: None::<&str>,
            });
        let m = OwnedMessage::new(
            Some(br#"{"job":"resize","n":3}"#.to_vec()),
            Some(b"k-1".to_vec()),
            "jobs".into(),
            Timestamp::CreateTime(1_764_000_000_123),
            2,
            41,
            Some(headers),
        );
        let e = to_event("queue", &m);
        assert_eq!(e.id, "jobs/2/41");
        assert_eq!(e.source, "queue");
        assert_eq!(e.kind, "jobs");
        assert_eq!(e.subject, "jobs");
        assert_eq!(e.time, "2025-11-24T16:00:00.123Z");
        assert_eq!(e.body, json!({"job": "resize", "n": 3}));
        assert_eq!(e.headers.get("content-type"), Some("application/json"));
        assert_eq!(e.headers.get("trace"), Some(""));
        assert_eq!(e.meta["topic"], json!("jobs"));
        assert_eq!(e.meta["partition"], json!(2));
        assert_eq!(e.meta["offset"], json!(41));
        assert_eq!(e.meta["key"], json!("k-1"));
        assert_eq!(e.meta["timestamp"], json!(1_764_000_000_123_i64));

        // Binary key and value, no timestamp; a tombstone has a null body.
        let m = OwnedMessage::new(
            Some(vec![0xff, 0x00]),
            Some(vec![0xfe]),
            "raw".into(),
            Timestamp::NotAvailable,
            0,
            7,
            None,
        );
        let e = to_event("queue", &m);
        assert_eq!(e.body, json!("/wA="));
        assert_eq!(e.meta["bodyEncoding"], json!("base64"));
        assert_eq!(e.meta["key"], json!("/g=="));
        assert_eq!(e.meta["keyEncoding"], json!("base64"));
        assert!(e.meta.get("timestamp").is_none());
        let tomb = OwnedMessage::new(
            None,
            None,
            "raw".into(),
            Timestamp::NotAvailable,
            0,
            8,
            None,
        );
        let e = to_event("queue", &tomb);
        assert_eq!(e.body, Value::Null);
        assert_eq!(e.meta["key"], Value::Null);
        assert_eq!(e.id, "raw/0/8");
    }

    fn parse(yaml: &str) -> Result<KafkaConfig, String> {
        let c: KafkaConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        c.validate().map_err(|(f, m)| format!("{f}: {m}"))?;
        Ok(c)
    }

    #[test]
    fn config_defaults_and_client_properties() {
        let c = parse(
            "{name: q, brokers: 'a:9092, b:9092', topics: [jobs, '^pipe\\..*'], groupId: g,
              properties: {session.timeout.ms: 6000, check.crcs: true, client.rack: r1}}",
        )
        .unwrap();
        assert_eq!(c.brokers, ["a:9092", "b:9092"]);
        assert_eq!(c.auto_offset_reset, AutoOffsetReset::Earliest);
        assert_eq!(c.max_in_flight, 8);
        assert_eq!(c.max_queued, 50_000);
        let cc = c.client_config().unwrap();
        assert_eq!(cc.get("bootstrap.servers"), Some("a:9092,b:9092"));
        assert_eq!(cc.get("group.id"), Some("g"));
        assert_eq!(cc.get("enable.auto.commit"), Some("false"));
        assert_eq!(cc.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(cc.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(cc.get("security.protocol"), Some("plaintext"));
        assert_eq!(cc.get("session.timeout.ms"), Some("6000"));
        assert_eq!(cc.get("check.crcs"), Some("true"));
        assert!(cc.create_native_config().is_ok());

        let c =
            parse("{name: q, brokers: [a:1], topics: [t], groupId: g, autoOffsetReset: latest}")
                .unwrap();
        assert_eq!(
            c.client_config().unwrap().get("auto.offset.reset"),
            Some("latest")
        );
    }

    #[test]
    fn security_settings_pass_through_with_secrets_resolved() {
        std::env::set_var("TRIPLINE_TEST_KAFKA_PW", "s3cret\n");
        let mut c = parse(
            "{name: q, brokers: a:1, topics: [t], groupId: g,
              sasl: {mechanism: SCRAM-SHA-512, username: u, password: {env: TRIPLINE_TEST_KAFKA_PW}},
              tls: {caFile: ca.pem, certFile: /abs/c.pem, keyFile: k.pem}}",
        )
        .unwrap();
        c.rebase(Path::new("/etc/tripline"));
        let cc = c.client_config().unwrap();
        assert_eq!(cc.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(cc.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(cc.get("sasl.username"), Some("u"));
        assert_eq!(cc.get("sasl.password"), Some("s3cret"));
        assert_eq!(cc.get("ssl.ca.location"), Some("/etc/tripline/ca.pem"));
        assert_eq!(cc.get("ssl.certificate.location"), Some("/abs/c.pem"));
        assert_eq!(cc.get("ssl.key.location"), Some("/etc/tripline/k.pem"));

        let c = parse(
            "{name: q, brokers: a:1, topics: [t], groupId: g, securityProtocol: SASL_PLAINTEXT,
              sasl: {mechanism: PLAIN, username: u, password: {env: TRIPLINE_TEST_KAFKA_NOPE}}}",
        )
        .unwrap();
        let err = c.client_config().unwrap_err();
        assert!(err.contains("TRIPLINE_TEST_KAFKA_NOPE"), "{err}");
        let c = parse("{name: q, brokers: a:1, topics: [t], groupId: g, tls: {}}").unwrap();
        assert_eq!(
            c.client_config().unwrap().get("security.protocol"),
            Some("ssl")
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = |y: &str| parse(y).unwrap_err();
        let base = "name: q, brokers: a:1, groupId: g";
        assert!(err(&format!("{{{base}, topics: []}}")).starts_with("topics:"));
        assert!(err(&format!("{{{base}, topics: [t, '^(']}}")).starts_with("topics[1]:"));
        assert!(
            err(&format!("{{{base}, topics: [t], maxInFlight: 0}}")).starts_with("maxInFlight:")
        );
        assert!(err(&format!("{{{base}, topics: [t], maxQueued: 0}}")).starts_with("maxQueued:"));
        let e = err(&format!(
            "{{{base}, topics: [t], properties: {{enable.auto.commit: true}}}}"
        ));
        assert!(e.starts_with("properties.enable.auto.commit:"), "{e}");
        let e = err(&format!(
            "{{{base}, topics: [t], properties: {{sasl.password: x}}}}"
        ));
        assert!(e.contains("never inline"), "{e}");
        let e = err(&format!("{{{base}, topics: [t], tls: {{certFile: c}}}}"));
        assert!(e.starts_with("tls:"), "{e}");
        assert!(err(&format!("{{{base}, topics: [t], groupid: x}}")).contains("unknown field"));
        assert!(err("{name: q, brokers: '', topics: [t], groupId: g}").starts_with("brokers:"));
        assert!(err(&format!("{{{base}, topics: [t], sasl: {{mechanism: GSSAPI, username: u, password: {{env: X}}}}}}"))
            .contains("unknown variant"));
    }
}
