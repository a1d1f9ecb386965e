//! Kafka: a consumer-group member that turns each message into an [`Event`](crate::event::Event)
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
//!   dispatched offset when every message has one ([`watermark::Watermark`]). A message
//!   that finishes early never carries the commit past a slower one before it.
//!   `maxInFlight: 1` processes each partition strictly in order.
//! * **Kubernetes API unavailable** (`Retry`, after the
//!   trigger's own retries): the message is retried with exponential backoff
//!   (`retryBackoff`, doubling up to `maxRetryBackoff`) and holds its
//!   partition's commit point until it succeeds. A partition whose queue fills
//!   up (`maxQueued` messages or 8 MiB waiting) is paused at the broker, so
//!   memory stays bounded; other partitions carry on.
//! * **Rejected** (`Rejected`: render failure or API 4xx): the
//!   object is already in the dead-letter log, so the message counts as
//!   finished and the commit moves past it. A poison message never blocks.
//! * **Rebalance** (eager or cooperative): when partitions are revoked, tripline
//!   stops dispatching them, abandons their retries, gives their in-flight
//!   submissions up to [`group::REVOKE_GRACE`] to finish, and commits their watermark
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
//! (`source.rs`): it reads the assigned partitions' messages in batches from
//! a queue of its own ([`batch`]), polls the consumer queue for the
//! callbacks between batches, settles on the spot each message no sensor
//! matches (read and matched there, final at once), dispatches the others
//! to their partition's task on the tokio runtime, commits, and handles
//! rebalances. A
//! rebalance callback may therefore block (waiting for in-flight work,
//! committing synchronously) without stalling the runtime, and since every
//! commit is made on that thread, a commit can never race a rebalance.
//!
//! # Layout
//!
//! * [`config`] — `type: kafka` as users write it, and the librdkafka settings.
//! * [`source`] — the consumer thread: read, dispatch, commit, shut down.
//! * [`batch`] — assigned partitions' messages, read in batches.
//! * [`group`] — librdkafka's callbacks: rebalances, commits, readiness.
//! * [`partition`] — one partition's task: process, retry until final.
//! * [`watermark`] — what may be committed (pure, unit-tested).
//! * [`envelope`] — message → event.

pub mod batch;
pub mod config;
pub mod envelope;
pub mod group;
pub mod partition;
pub mod source;
pub mod watermark;

pub use config::KafkaConfig;
pub use source::KafkaSource;
