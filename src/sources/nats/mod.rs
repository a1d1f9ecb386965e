//! NATS: a JetStream durable pull consumer, or core NATS subscriptions.
//!
//! ```yaml
//! sources:
//!   - type: nats
//!     name: bucket-events
//!     urls: [nats://nats-0:4222, nats://nats-1:4222]  # default: $NATS_URL, else nats://127.0.0.1:4222
//!     credsFile: {file: /etc/nats/tripline.creds}    # or token, user + password, nkey (secret references)
//!     tls: {caFile: /etc/nats/ca.pem}                 # certFile + keyFile for mutual TLS, requireTls
//!     subjects: ["storage.objects.created.>"]         # wildcards allowed
//!     jetstream:                                      # omit for core NATS (at most once!)
//!       stream: STORAGE
//!       durable: tripline
//!       create: true       # create the stream/consumer if missing (default: bind existing ones)
//!       batch: 64          # messages asked for per pull request
//!       maxInFlight: 64    # messages processed at once (default: limits.maxInFlight)
//!       ackWait: 30s       # consumer setting, when tripline creates the consumer
//!       maxDeliver: 20     # consumer setting (default: unlimited)
//!       nakDelay: 1s       # redelivery delay after an unavailable API, doubling per delivery…
//!       maxNakDelay: 5m    # …up to this
//! ```
//!
//! # Delivery guarantees
//!
//! ## JetStream (`jetstream:` set): at least once, one object
//!
//! tripline fetches from a durable pull consumer (explicit acks) in batches,
//! never holding more than `maxInFlight` unsettled messages, and processes
//! them concurrently. Each message is settled only once
//! [`Process::process`](crate::outcome::Process::process) returned, by what its outcome calls for:
//!
//! | outcome ([`Disposition`](crate::outcome::Disposition)) | reply to JetStream | what happens next |
//! |---|---|---|
//! | `Done`: created, existing, waiting, or nothing matched | `+ACK` (awaiting the server's confirmation when the event fired a trigger) | never delivered again |
//! | `Retry`: the Kubernetes API stayed unavailable past the trigger's retries | `-NAK` with a delay of `nakDelay · 2^(delivered−1)`, at most `maxNakDelay` | redelivered after the delay |
//! | `Rejected`: render failure or API 4xx, already in the dead-letter log | `+TERM` | never delivered again (a poison message must not block) |
//! | still processing | `+WPI` (progress) every `ackWait / 3` | the server keeps waiting |
//!
//! The event id is `<stream>:<stream sequence>`, the same on every delivery,
//! so a redelivered message renders the same deterministic object name and
//! its second submission finds the object (`existing`) instead of creating
//! another. That is what makes "at least once" produce exactly one object
//! when tripline is killed mid-flight, when an ack is lost, or when the
//! server restarts: the message comes back (after `ackWait` if it was never
//! settled) and is found done.
//!
//! Replicas sharing a `durable` split the messages between them (each pull
//! request is served with different messages). With `maxDeliver` set, a
//! message whose submission is still unavailable on its last delivery is given
//! up by JetStream (tripline logs an error naming it); unset, it is retried
//! until the API comes back.
//!
//! ## Core NATS (no `jetstream:`): at most once
//!
//! Core NATS has no acknowledgements and no redelivery: a message published
//! while tripline is down, disconnected, or too slow (the client drops
//! messages past its subscription buffer and logs a slow-consumer warning) is
//! lost, and so is a message being processed when tripline is killed. Use
//! JetStream for anything that must not be lost. Within those limits:
//!
//! * Up to `limits.maxInFlight` messages are processed at once; `queueGroup`
//!   spreads messages over replicas (each message goes to one of them).
//! * A message sent as a request (with a reply subject) gets the outcome as
//!   its reply (the JSON a webhook would answer with); the requester decides
//!   whether to retry an `unavailable` one.
//! * A plain message whose submission is unavailable is retried in process
//!   (1 s, doubling up to 1 min) until it is done or tripline shuts down.
//! * The event id is the `Nats-Msg-Id` header when present, else a hash of
//!   the payload: the same payload twice makes one object.
//!
//! # Connection
//!
//! The client connects in the background and reconnects forever (server
//! restarts, failovers to another url). `/readyz` reports the source ready
//! only while it is connected and consuming (JetStream: the consumer is
//! bound; core: the subscriptions are registered). The JetStream fetch loop
//! survives errors: it logs them, backs off, binds the consumer again
//! (creating it again with `create: true`) and pulls anew; after a reconnect
//! it pulls anew at once, since a server that restarted forgot the pending
//! pull request.
//!
//! # Shutdown
//!
//! On cancellation the source stops fetching (core: unsubscribes, then still
//! processes what it had received), lets the messages in flight finish and
//! settles them, flushes, and returns.
//!
//! # Layout
//!
//! * [`config`] — `type: nats` as users write it.
//! * [`source`] — credentials, the client, and the choice of loop.
//! * [`jetstream`] — the pull consumer loop; [`ack`] — how a message is settled.
//! * [`core_nats`] — core NATS subscriptions.
//! * [`envelope`] — message → event.
//! * [`health`] — readiness from the connection.

pub mod ack;
pub mod config;
pub mod core_nats;
pub mod envelope;
pub mod health;
pub mod jetstream;
pub mod source;

pub use config::NatsConfig;
pub use source::NatsSource;
