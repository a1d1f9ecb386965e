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
//! [`Engine::process`] returned, by what its outcome calls for:
//!
//! | outcome ([`Disposition`]) | reply to JetStream | what happens next |
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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::{self, AckKind};
use async_nats::{ConnectOptions, HeaderMap, ServerAddr};
use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, instrument, warn, Span};

use super::webhook::SecretRef;
use super::{Source, SourceError};
use crate::app::{Disposition, Engine};
use crate::config::Limits;
use crate::event::{parse_payload, Event};

/// Where the client connects when `urls` is empty and `$NATS_URL` is unset.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// How long one JetStream pull request waits for messages before the server
/// ends it (an idle source then simply pulls again).
const FETCH_EXPIRES: Duration = Duration::from_secs(5);

/// Backoff between attempts to bind the consumer (or subscribe) after errors.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Core NATS: in-process retries of a message whose submission is unavailable.
const CORE_RETRY_BASE: Duration = Duration::from_secs(1);
const CORE_RETRY_MAX: Duration = Duration::from_secs(60);

/// How often an ack (or term) that the server did not confirm is sent again.
const SETTLE_ATTEMPTS: u32 = 3;

/// Headers that carry credentials never reach the envelope.
const SECRET_HEADERS: [&str; 2] = ["authorization", "cookie"];

// ---- config ----------------------------------------------------------------

/// `type: nats` in `tripline.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NatsConfig {
    pub name: String,
    /// Server urls (`nats://`, `tls://`, `ws://`…). Empty: `$NATS_URL`
    /// (comma-separated), else [`DEFAULT_URL`].
    #[serde(default)]
    pub urls: Vec<String>,
    /// Authentication: at most one of `token`, `user` + `password`, `nkey`
    /// (the seed), `credsFile` (a `.creds` file with JWT and seed).
    #[serde(default)]
    pub token: Option<SecretRef>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<SecretRef>,
    #[serde(default)]
    pub nkey: Option<SecretRef>,
    #[serde(default)]
    pub creds_file: Option<SecretRef>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Subjects to consume, wildcards allowed. Core NATS: subscribed to
    /// (at least one). JetStream: the consumer's filter (none: the whole stream).
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Core NATS only: replicas in one queue group share the messages.
    #[serde(default)]
    pub queue_group: Option<String>,
    /// Consume from JetStream (at least once) instead of core NATS (at most once).
    #[serde(default)]
    pub jetstream: Option<JetStreamConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsConfig {
    /// CA certificate(s) to trust, PEM.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Refuse to talk to a server without TLS.
    #[serde(default)]
    pub require_tls: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JetStreamConfig {
    pub stream: String,
    /// Durable consumer name; replicas using the same one share the work.
    pub durable: String,
    /// Create the stream (capturing `subjects`) and the consumer when they
    /// are missing, and update the consumer to this config when it exists.
    /// Default: bind an existing consumer as it is.
    #[serde(default)]
    pub create: bool,
    /// Messages asked for per pull request.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Messages processed (unsettled) at once; default `limits.maxInFlight`.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// How long the server waits for an ack before redelivering (consumer
    /// setting, applied when tripline creates the consumer).
    #[serde(default = "default_ack_wait", with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Deliveries before the server gives a message up (consumer setting);
    /// default unlimited.
    #[serde(default)]
    pub max_deliver: Option<i64>,
    /// Redelivery delay after `Retry`, doubled per delivery.
    #[serde(default = "default_nak_delay", with = "humantime_serde")]
    pub nak_delay: Duration,
    #[serde(default = "default_max_nak_delay", with = "humantime_serde")]
    pub max_nak_delay: Duration,
}

fn default_batch() -> usize {
    64
}
fn default_ack_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_nak_delay() -> Duration {
    Duration::from_secs(1)
}
fn default_max_nak_delay() -> Duration {
    Duration::from_secs(300)
}

impl NatsConfig {
    /// Checks what serde cannot; errors are `(field, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: String| Err((f.to_string(), m));
        for (i, url) in self.urls.iter().enumerate() {
            if let Err(e) = url.parse::<ServerAddr>() {
                return err(&format!("urls[{i}]"), format!("`{url}`: {e}"));
            }
        }
        let methods = [
            self.token.is_some(),
            self.user.is_some() || self.password.is_some(),
            self.nkey.is_some(),
            self.creds_file.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return err(
                "token",
                "give at most one of `token`, `user` + `password`, `nkey`, `credsFile`".into(),
            );
        }
        if self.user.is_some() != self.password.is_some() {
            return err(
                if self.user.is_some() {
                    "password"
                } else {
                    "user"
                },
                "`user` and `password` go together".into(),
            );
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return err(
                    "tls",
                    "`certFile` and `keyFile` go together (mutual TLS)".into(),
                );
            }
        }
        for (i, s) in self.subjects.iter().enumerate() {
            check_subject(s).map_err(|m| (format!("subjects[{i}]"), format!("`{s}`: {m}")))?;
        }
        match &self.jetstream {
            None if self.subjects.is_empty() => err(
                "subjects",
                "core NATS needs at least one subject to subscribe to".into(),
            ),
            None => match &self.queue_group {
                Some(q) if q.is_empty() || q.contains(char::is_whitespace) => err(
                    "queueGroup",
                    format!("`{q}` must be non-empty, without whitespace"),
                ),
                _ => Ok(()),
            },
            Some(_) if self.queue_group.is_some() => err(
                "queueGroup",
                "queue groups are for core NATS; replicas sharing a JetStream `durable` already split the work".into(),
            ),
            Some(js) => js.validate(),
        }
    }

    pub fn rebase(&mut self, base: &Path) {
        for s in [
            &mut self.token,
            &mut self.password,
            &mut self.nkey,
            &mut self.creds_file,
        ]
        .into_iter()
        .flatten()
        {
            s.rebase(base);
        }
        if let Some(tls) = &mut self.tls {
            for p in [&mut tls.ca_file, &mut tls.cert_file, &mut tls.key_file]
                .into_iter()
                .flatten()
            {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
    }

    /// The urls to connect to: `urls`, else `$NATS_URL`, else [`DEFAULT_URL`].
    pub fn servers(&self) -> Vec<String> {
        if !self.urls.is_empty() {
            return self.urls.clone();
        }
        match std::env::var("NATS_URL") {
            Ok(v) if !v.trim().is_empty() => v.split(',').map(|u| u.trim().to_string()).collect(),
            _ => vec![DEFAULT_URL.to_string()],
        }
    }
}

impl JetStreamConfig {
    fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: &str| Err((format!("jetstream.{f}"), m.to_string()));
        let name_ok = |n: &str| {
            !n.is_empty()
                && !n
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        };
        if !name_ok(&self.stream) {
            return err(
                "stream",
                "a stream name cannot be empty or contain whitespace, `.`, `*`, `>`, `/` or `\\`",
            );
        }
        if !name_ok(&self.durable) {
            return err(
                "durable",
                "a consumer name cannot be empty or contain whitespace, `.`, `*`, `>`, `/` or `\\`",
            );
        }
        if self.batch == 0 {
            return err("batch", "must be at least 1");
        }
        if self.max_in_flight == Some(0) {
            return err("maxInFlight", "must be at least 1");
        }
        if self.ack_wait < Duration::from_millis(100) {
            return err("ackWait", "must be at least 100ms");
        }
        if matches!(self.max_deliver, Some(n) if n < 1) {
            return err(
                "maxDeliver",
                "must be at least 1 (leave it out for unlimited)",
            );
        }
        if self.nak_delay > self.max_nak_delay {
            return err("nakDelay", "must not exceed `maxNakDelay`");
        }
        Ok(())
    }
}

/// A subject to subscribe to: dot-separated non-empty tokens, `*` and `>` as
/// whole tokens, `>` only last.
fn check_subject(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.contains(char::is_whitespace) {
        return Err("a subject cannot be empty or contain whitespace");
    }
    let tokens: Vec<&str> = s.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return Err("empty token (`..`, or a leading or trailing `.`)");
        }
        if t.len() > 1 && (t.contains('*') || t.contains('>')) {
            return Err("wildcards `*` and `>` must be whole tokens");
        }
        if *t == ">" && i + 1 != tokens.len() {
            return Err("`>` may only be the last token");
        }
    }
    Ok(())
}

/// Delay of the `-NAK` for a message delivered `delivered` times (1-based):
/// `base · 2^(delivered−1)`, at most `max`.
pub fn nak_delay(base: Duration, max: Duration, delivered: i64) -> Duration {
    crate::submit::exponential(base, max, delivered.clamp(1, 21) as u32)
}

// ---- the source ------------------------------------------------------------

/// Credentials, resolved at build time (a missing secret fails the start).
enum Auth {
    None,
    Token(String),
    UserPassword(String, String),
    Nkey(String),
    Creds(String),
}

/// A running `type: nats` source.
pub struct NatsSource {
    name: String,
    servers: Vec<String>,
    auth: Auth,
    tls: Option<TlsConfig>,
    subjects: Vec<String>,
    queue_group: Option<String>,
    jetstream: Option<JetStreamConfig>,
    max_in_flight: usize,
}

impl NatsSource {
    /// Resolves secrets and checks files; connects to nothing.
    pub fn new(config: &NatsConfig, limits: &Limits) -> Result<Self, SourceError> {
        let secret_error = |message: String| SourceError::Secret {
            source_name: config.name.clone(),
            message,
        };
        // Outbound credentials: the first line (rotation is a server matter).
        let first_line = |r: &SecretRef| r.first().map_err(secret_error);
        let auth = if let Some(t) = &config.token {
            Auth::Token(first_line(t)?)
        } else if let (Some(u), Some(p)) = (&config.user, &config.password) {
            Auth::UserPassword(u.clone(), first_line(p)?)
        } else if let Some(n) = &config.nkey {
            Auth::Nkey(first_line(n)?)
        } else if let Some(c) = &config.creds_file {
            // A creds file has several blocks: read it whole.
            let text = c.read().map_err(secret_error)?;
            // Parse now, so a malformed file fails the start, not every reconnect.
            ConnectOptions::with_credentials(&text)
                .map_err(|e| secret_error(format!("credsFile: {e}")))?;
            Auth::Creds(text)
        } else {
            Auth::None
        };
        if let Some(tls) = &config.tls {
            for p in [&tls.ca_file, &tls.cert_file, &tls.key_file]
                .into_iter()
                .flatten()
            {
                if let Err(e) = std::fs::metadata(p) {
                    return Err(SourceError::Failed {
                        source_name: config.name.clone(),
                        message: format!("tls: cannot read {}: {e}", p.display()),
                    });
                }
            }
        }
        let servers = config.servers();
        for url in &servers {
            if let Err(e) = url.parse::<ServerAddr>() {
                return Err(SourceError::Failed {
                    source_name: config.name.clone(),
                    message: format!("NATS url `{url}`: {e}"),
                });
            }
        }
        let max_in_flight = config
            .jetstream
            .as_ref()
            .and_then(|js| js.max_in_flight)
            .unwrap_or(limits.max_in_flight)
            .max(1);
        Ok(NatsSource {
            name: config.name.clone(),
            servers,
            auth,
            tls: config.tls.clone(),
            subjects: config.subjects.clone(),
            queue_group: config.queue_group.clone(),
            jetstream: config.jetstream.clone(),
            max_in_flight,
        })
    }

    fn failed(&self, message: impl Into<String>) -> SourceError {
        SourceError::Failed {
            source_name: self.name.clone(),
            message: message.into(),
        }
    }

    /// Starts the client: it connects in the background and reconnects
    /// forever, reporting every state change to `health`.
    async fn connect(&self, health: Arc<Health>) -> Result<async_nats::Client, SourceError> {
        let mut options = ConnectOptions::new()
            .name(format!("tripline/{}", self.name))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .ping_interval(Duration::from_secs(10))
            .event_callback(move |event| {
                let health = health.clone();
                async move { health.on_client_event(event) }
            });
        options = match &self.auth {
            Auth::None => options,
            Auth::Token(t) => options.token(t.clone()),
            Auth::UserPassword(u, p) => options.user_and_password(u.clone(), p.clone()),
            Auth::Nkey(seed) => options.nkey(seed.clone()),
            Auth::Creds(text) => options
                .credentials(text)
                .map_err(|e| self.failed(format!("credsFile: {e}")))?,
        };
        if let Some(tls) = &self.tls {
            if let Some(ca) = &tls.ca_file {
                options = options.add_root_certificates(ca.clone());
            }
            if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
            options = options.require_tls(tls.require_tls);
        }
        options
            .connect(self.servers.as_slice())
            .await
            .map_err(|e| self.failed(format!("cannot connect: {e}")))
    }
}

#[async_trait]
impl Source for NatsSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(
        self: Box<Self>,
        engine: Arc<Engine>,
        shutdown: CancellationToken,
    ) -> Result<(), SourceError> {
        let (reconnects, reconnected) = watch::channel(0u64);
        let health = Arc::new(Health::new(
            engine.clone(),
            &self.name,
            self.servers.join(","),
            reconnects,
        ));
        health.publish();
        let client = self.connect(health.clone()).await?;
        let result = match &self.jetstream {
            Some(js) => {
                self.run_jetstream(js, &client, &engine, &health, reconnected, &shutdown)
                    .await
            }
            None => self.run_core(&client, &engine, &health, &shutdown).await,
        };
        health.set_stopping();
        // Acks and replies are written by the client's task: make sure they
        // left before the connection goes (nothing to flush if never connected).
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        if !connected {
            debug!(source = %self.name, "not connected at shutdown; nothing to flush");
        } else if let Err(e) = tokio::time::timeout(Duration::from_secs(5), client.flush()).await {
            warn!(source = %self.name, error = %e, "flush on shutdown timed out");
        }
        info!(source = %self.name, "NATS source stopped");
        result
    }
}

// ---- JetStream -------------------------------------------------------------

/// What every JetStream message task needs to settle its message.
struct Settlement {
    source: String,
    /// Progress (`+WPI`) interval: a third of the consumer's ack wait.
    progress_every: Duration,
    nak_delay: Duration,
    max_nak_delay: Duration,
    /// The consumer's max deliveries (`-1`: unlimited).
    max_deliver: i64,
}

/// How one pull request ended.
enum Pulled {
    /// The server sent what it had (or the request expired): pull again.
    Done,
    /// The client reconnected; the server may have forgotten the request.
    Reconnected,
    /// The request failed; bind the consumer again.
    Failed(String),
    Shutdown,
}

impl NatsSource {
    async fn run_jetstream(
        &self,
        config: &JetStreamConfig,
        client: &async_nats::Client,
        engine: &Arc<Engine>,
        health: &Health,
        mut reconnected: watch::Receiver<u64>,
        shutdown: &CancellationToken,
    ) -> Result<(), SourceError> {
        let js = jetstream::new(client.clone());
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let mut retry = Backoff::default();
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
                    if sleep_or_shutdown(retry.next(), shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            let info = consumer.cached_info();
            let settlement = Arc::new(Settlement {
                source: self.name.clone(),
                progress_every: (info.config.ack_wait / 3).max(Duration::from_millis(50)),
                nak_delay: config.nak_delay,
                max_nak_delay: config.max_nak_delay,
                max_deliver: info.config.max_deliver,
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
            loop {
                // Wait for room: never more than `max_in_flight` unsettled messages.
                while in_flight.len() >= self.max_in_flight {
                    tokio::select! {
                        _ = shutdown.cancelled() => break 'bind,
                        done = in_flight.join_next() => log_task_end(&self.name, done),
                    }
                }
                while let Some(done) = in_flight.try_join_next() {
                    log_task_end(&self.name, Some(done));
                }
                let room = (self.max_in_flight - in_flight.len()).min(config.batch);
                reconnected.borrow_and_update();
                let pulled = self
                    .pull(
                        &consumer,
                        room,
                        engine,
                        &settlement,
                        &mut in_flight,
                        &mut reconnected,
                        shutdown,
                    )
                    .await;
                match pulled {
                    Pulled::Done => retry.reset(),
                    Pulled::Reconnected => {
                        info!(source = %self.name, "reconnected to NATS; pulling again");
                    }
                    Pulled::Failed(problem) => {
                        warn!(source = %self.name, error = %problem, "JetStream pull failed; binding the consumer again");
                        health.set_problem(Some(problem));
                        if sleep_or_shutdown(retry.next(), shutdown).await {
                            break 'bind;
                        }
                        continue 'bind;
                    }
                    Pulled::Shutdown => break 'bind,
                }
            }
        }
        // Shutdown: nothing more is fetched. The messages in flight finish
        // and are settled (the deadline in `run_sources` bounds this; what
        // does not finish is redelivered after `ackWait`).
        health.set_stopping();
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

    fn consumer_config(&self, config: &JetStreamConfig) -> pull::Config {
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

    /// One pull request for up to `room` messages: each message is handed to
    /// its own task as soon as it arrives.
    #[allow(clippy::too_many_arguments)]
    async fn pull(
        &self,
        consumer: &PullConsumer,
        room: usize,
        engine: &Arc<Engine>,
        settlement: &Arc<Settlement>,
        in_flight: &mut JoinSet<()>,
        reconnected: &mut watch::Receiver<u64>,
        shutdown: &CancellationToken,
    ) -> Pulled {
        let request = consumer
            .batch()
            .max_messages(room)
            .expires(FETCH_EXPIRES)
            .messages();
        let mut batch = tokio::select! {
            _ = shutdown.cancelled() => return Pulled::Shutdown,
            b = request => match b {
                Ok(b) => b,
                Err(e) => return Pulled::Failed(e.to_string()),
            },
        };
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Pulled::Shutdown,
                _ = reconnected.changed() => return Pulled::Reconnected,
                next = batch.next() => match next {
                    None => return Pulled::Done,
                    Some(Ok(message)) => {
                        in_flight.spawn(handle_jetstream(engine.clone(), settlement.clone(), message));
                    }
                    Some(Err(e)) => return Pulled::Failed(e.to_string()),
                },
            }
        }
    }
}

/// Processes one JetStream message and settles it by its outcome.
#[instrument(skip_all, fields(source, subject, event_id))]
async fn handle_jetstream(engine: Arc<Engine>, s: Arc<Settlement>, message: jetstream::Message) {
    let span = Span::current();
    span.record("source", s.source.as_str());
    span.record("subject", message.subject.as_str());
    let (event, delivered) = match jetstream_event(&s.source, &message) {
        Ok(e) => e,
        Err(e) => {
            // Not a JetStream delivery (no ack subject): nothing to settle.
            error!(error = %e, "cannot read JetStream metadata; message skipped");
            return;
        }
    };
    span.record("event_id", event.id.as_str());
    let outcome = with_progress(&message, s.progress_every, engine.process(event)).await;
    let kind = match outcome.disposition() {
        Disposition::Done => AckKind::Ack,
        Disposition::Rejected => {
            warn!("object rejected (dead-lettered); terminating the message");
            AckKind::Term
        }
        Disposition::Retry => {
            let delay = nak_delay(s.nak_delay, s.max_nak_delay, delivered);
            if s.max_deliver > 0 && delivered >= s.max_deliver {
                error!(
                    delivered,
                    max_deliver = s.max_deliver,
                    "Kubernetes API unavailable on the last delivery (maxDeliver); JetStream gives this message up"
                );
            } else {
                warn!(
                    delivered,
                    delay_ms = delay.as_millis() as u64,
                    "Kubernetes API unavailable; nak, redelivery after the delay"
                );
            }
            AckKind::Nak(Some(delay))
        }
    };
    // A confirmed ack costs a round trip; it is worth it when a redelivery
    // would cost an API call, i.e. when the event fired something.
    let confirm = !outcome.matched.is_empty() || matches!(kind, AckKind::Term);
    settle(&message, kind, confirm).await;
}

/// Runs `work`, telling the server every `every` that the message is still
/// being worked on (so a long submission is not redelivered meanwhile).
async fn with_progress<F: std::future::Future>(
    message: &jetstream::Message,
    every: Duration,
    work: F,
) -> F::Output {
    tokio::pin!(work);
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
            warn!(?kind, error = %e, "cannot settle; the message is redelivered after ackWait");
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
                ?kind,
                error = %e,
                "settlement not confirmed; the message may be redelivered (its object is found existing)"
            ),
        }
    }
}

/// The envelope of a JetStream message and how many times it was delivered.
fn jetstream_event(
    source: &str,
    message: &jetstream::Message,
) -> Result<(Event, i64), async_nats::Error> {
    let info = message.info()?;
    let mut event = message_event(
        source,
        message.subject.as_str(),
        &message.payload,
        message.headers.as_ref(),
    );
    event.id = format!("{}:{}", info.stream, info.stream_sequence);
    let published = u64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0);
    event.time =
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(published)).to_string();
    for (k, v) in [
        ("stream", json!(info.stream)),
        ("consumer", json!(info.consumer)),
        ("streamSequence", json!(info.stream_sequence)),
        ("consumerSequence", json!(info.consumer_sequence)),
        ("delivered", json!(info.delivered)),
        ("pending", json!(info.pending)),
    ] {
        event.meta.insert(k.into(), v);
    }
    Ok((event, info.delivered))
}

/// The envelope every NATS message shares: `type` and `subject` are the
/// subject, headers are copied (credentials dropped), the payload is parsed.
/// The id is the `Nats-Msg-Id` header if any, else a hash of the payload.
fn message_event(
    source: &str,
    subject: &str,
    payload: &[u8],
    headers: Option<&HeaderMap>,
) -> Event {
    let mut meta = Map::new();
    let body = parse_payload(payload, &mut meta);
    let mut event = Event::new(source, payload, body);
    meta.insert("subject".into(), json!(subject));
    event.meta = meta;
    event.kind = subject.to_string();
    event.subject = subject.to_string();
    for (name, values) in headers.into_iter().flat_map(HeaderMap::iter) {
        let name: &str = name.as_ref();
        if SECRET_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        for v in values {
            event.headers.insert(name, v.as_str());
        }
    }
    if let Some(id) = event.headers.get("nats-msg-id").filter(|id| !id.is_empty()) {
        event.id = id.to_string();
    }
    event
}

// ---- core NATS -------------------------------------------------------------

impl NatsSource {
    async fn run_core(
        &self,
        client: &async_nats::Client,
        engine: &Arc<Engine>,
        health: &Health,
        shutdown: &CancellationToken,
    ) -> Result<(), SourceError> {
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
        let mut retry = Backoff::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                flushed = client.flush() => match flushed {
                    Ok(()) => break,
                    Err(e) => {
                        debug!(source = %self.name, error = %e, "waiting for the connection");
                        if sleep_or_shutdown(retry.next(), shutdown).await {
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
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let spawn = |in_flight: &mut JoinSet<()>, message, slot| {
            in_flight.spawn(handle_core(
                engine.clone(),
                client.clone(),
                self.name.clone(),
                message,
                shutdown.clone(),
                slot,
            ));
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

/// Processes one core NATS message: replies with the outcome to a request;
/// retries a plain message in process while the API is unavailable.
#[instrument(skip_all, fields(source, subject, event_id))]
async fn handle_core(
    engine: Arc<Engine>,
    client: async_nats::Client,
    source: String,
    message: async_nats::Message,
    shutdown: CancellationToken,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let span = Span::current();
    span.record("source", source.as_str());
    span.record("subject", message.subject.as_str());
    let event = message_event(
        &source,
        message.subject.as_str(),
        &message.payload,
        message.headers.as_ref(),
    );
    span.record("event_id", event.id.as_str());
    let mut attempt = 0;
    loop {
        let outcome = engine.process(event.clone()).await;
        if let Some(reply) = message.reply.clone() {
            let body = serde_json::to_vec(&outcome).unwrap_or_default();
            if let Err(e) = client.publish(reply, body.into()).await {
                warn!(error = %e, "cannot reply with the outcome");
            }
            return;
        }
        if outcome.disposition() != Disposition::Retry {
            return;
        }
        attempt += 1;
        let delay = crate::submit::exponential(CORE_RETRY_BASE, CORE_RETRY_MAX, attempt);
        warn!(
            attempt,
            delay_ms = delay.as_millis() as u64,
            "Kubernetes API unavailable; retrying in process (core NATS cannot redeliver)"
        );
        if sleep_or_shutdown(delay, &shutdown).await {
            error!("shutting down with the Kubernetes API unavailable: this core NATS message is lost (core NATS is at most once; use JetStream)");
            return;
        }
    }
}

// ---- health ----------------------------------------------------------------

/// Feeds `/readyz`: ready while connected and consuming, with a detail that
/// says why not otherwise.
struct Health {
    engine: Arc<Engine>,
    source: String,
    servers: String,
    state: Mutex<HealthState>,
    /// Bumped on every (re)connect, so the fetch loop can pull anew.
    reconnects: watch::Sender<u64>,
}

#[derive(Default)]
struct HealthState {
    connected: bool,
    /// What the source is doing once it works ("consuming stream …").
    consuming: Option<String>,
    /// Why it does not work although connected (stream missing…).
    problem: Option<String>,
    /// The client's last error while not connected (auth, TLS, refused…),
    /// so `/readyz` says why rather than only that.
    last_error: Option<String>,
    stopping: bool,
}

impl Health {
    fn new(
        engine: Arc<Engine>,
        source: &str,
        servers: String,
        reconnects: watch::Sender<u64>,
    ) -> Self {
        Health {
            engine,
            source: source.to_string(),
            servers,
            state: Mutex::new(HealthState::default()),
            reconnects,
        }
    }

    fn on_client_event(&self, event: async_nats::Event) {
        use async_nats::Event as E;
        match &event {
            E::Connected => {
                info!(source = %self.source, servers = %self.servers, "connected to NATS");
                self.update(|s| {
                    s.connected = true;
                    s.last_error = None;
                });
                self.reconnects.send_modify(|n| *n += 1);
            }
            E::Disconnected => {
                warn!(source = %self.source, "disconnected from NATS; reconnecting");
                self.update(|s| s.connected = false);
            }
            E::Closed => self.update(|s| s.connected = false),
            E::SlowConsumer(sid) => warn!(
                source = %self.source,
                subscription = sid,
                "slow consumer: the client dropped messages (core NATS loses them; raise limits.maxInFlight or use JetStream)"
            ),
            E::LameDuckMode | E::Draining => info!(source = %self.source, %event, "NATS"),
            // While disconnected, every failed reconnect attempt is a client
            // error: not worth a warning each.
            E::ClientError(_) | E::ServerError(_)
                if !self.state.lock().expect("health lock").connected =>
            {
                debug!(source = %self.source, %event, "NATS");
                let error = event.to_string();
                self.update(|s| s.last_error = Some(error));
            }
            E::ServerError(_) | E::ClientError(_) => {
                warn!(source = %self.source, %event, "NATS")
            }
        }
    }

    fn set_consuming(&self, detail: String) {
        self.update(|s| s.consuming = Some(detail));
    }

    fn set_problem(&self, problem: Option<String>) {
        self.update(|s| s.problem = problem);
    }

    fn set_stopping(&self) {
        self.update(|s| s.stopping = true);
    }

    fn update(&self, change: impl FnOnce(&mut HealthState)) {
        change(&mut self.state.lock().expect("health lock"));
        self.publish();
    }

    fn publish(&self) {
        let (ready, detail) = {
            let s = self.state.lock().expect("health lock");
            match (&s.consuming, &s.problem) {
                _ if s.stopping => (false, "shutting down".to_string()),
                _ if !s.connected => match &s.last_error {
                    Some(e) => (
                        false,
                        format!("not connected to NATS ({}): {e}", self.servers),
                    ),
                    None => (false, format!("not connected to NATS ({})", self.servers)),
                },
                (_, Some(p)) => (false, p.clone()),
                (None, None) => (false, "connected; binding".to_string()),
                (Some(c), None) => (true, c.clone()),
            }
        };
        self.engine.readiness.set(&self.source, ready, detail);
    }
}

// ---- small helpers ---------------------------------------------------------

/// Exponential backoff between [`RETRY_MIN`] and [`RETRY_MAX`].
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        self.failures += 1;
        crate::submit::exponential(RETRY_MIN, RETRY_MAX, self.failures)
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Sleeps for `d`; `true` if shutdown came first.
async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

fn log_task_end(source: &str, done: Option<Result<(), tokio::task::JoinError>>) {
    if let Some(Err(e)) = done {
        error!(source, error = %e, "message task failed; the message is redelivered (JetStream) or lost (core)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::SourceConfig;

    fn parse(yaml: &str) -> Result<NatsConfig, String> {
        let c: SourceConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        c.validate().map_err(|(f, m)| format!("{f}: {m}"))?;
        match c {
            SourceConfig::Nats(n) => Ok(n),
            _ => unreachable!(),
        }
    }

    #[test]
    fn jetstream_config_defaults() {
        let c = parse(
            "{type: nats, name: n, urls: [nats://a:4222], subjects: [a.>], jetstream: {stream: S, durable: d}}",
        )
        .unwrap();
        let js = c.jetstream.unwrap();
        assert_eq!(js.batch, 64);
        assert_eq!(js.ack_wait, Duration::from_secs(30));
        assert_eq!(js.nak_delay, Duration::from_secs(1));
        assert_eq!(js.max_deliver, None);
        assert!(!js.create);
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let cases = [
            ("{type: nats, name: n}", "subjects: core NATS"),
            ("{type: nats, name: n, subjects: [a], bogus: 1}", "unknown field `bogus`"),
            ("{type: nats, name: n, subjects: ['a..b']}", "subjects[0]"),
            ("{type: nats, name: n, subjects: ['a.>.b']}", "last token"),
            ("{type: nats, name: n, subjects: ['a.b*']}", "whole tokens"),
            ("{type: nats, name: n, subjects: [a], urls: ['http://x y']}", "urls[0]"),
            ("{type: nats, name: n, subjects: [a], user: u}", "password: "),
            (
                "{type: nats, name: n, subjects: [a], token: {env: T}, nkey: {env: N}}",
                "at most one",
            ),
            (
                "{type: nats, name: n, subjects: [a], tls: {certFile: c}}",
                "keyFile",
            ),
            (
                "{type: nats, name: n, subjects: [a], queueGroup: q, jetstream: {stream: S, durable: d}}",
                "queueGroup: queue groups are for core NATS",
            ),
            (
                "{type: nats, name: n, jetstream: {stream: S.x, durable: d}}",
                "jetstream.stream",
            ),
            (
                "{type: nats, name: n, jetstream: {stream: S, durable: d, batch: 0}}",
                "jetstream.batch",
            ),
            (
                "{type: nats, name: n, jetstream: {stream: S, durable: d, maxDeliver: 0}}",
                "jetstream.maxDeliver",
            ),
            (
                "{type: nats, name: n, jetstream: {stream: S, durable: d, token: x}}",
                "unknown field `token`",
            ),
        ];
        for (yaml, want) in cases {
            let e = parse(yaml).unwrap_err();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn nak_delay_doubles_per_delivery_up_to_the_cap() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(10));
        let d: Vec<u64> = (1..=6).map(|n| nak_delay(base, max, n).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 10, 10]);
        assert_eq!(nak_delay(base, max, 0), base);
        assert_eq!(nak_delay(base, max, i64::MAX), max);
    }

    #[test]
    fn urls_default_to_the_environment() {
        let c = parse("{type: nats, name: n, subjects: [a], urls: [nats://x:1]}").unwrap();
        assert_eq!(c.servers(), ["nats://x:1"]);
    }

    #[test]
    fn message_envelope() {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", "m-1");
        h.insert("X-Trace", "t");
        h.insert("Authorization", "Bearer secret");
        let e = message_event("src", "files.new", br#"{"key":"a.csv"}"#, Some(&h));
        assert_eq!(e.id, "m-1");
        assert_eq!(
            (e.kind.as_str(), e.subject.as_str()),
            ("files.new", "files.new")
        );
        assert_eq!(e.body, json!({"key": "a.csv"}));
        assert_eq!(e.headers.get("x-trace"), Some("t"));
        assert_eq!(e.headers.get("authorization"), None);
        assert_eq!(e.meta["subject"], json!("files.new"));

        let e = message_event("src", "s", &[0xff, 0x00], None);
        assert!(e.id.starts_with("sha256:"));
        assert_eq!(e.meta["bodyEncoding"], json!("base64"));
    }

    #[test]
    fn consumer_config_filters_by_subjects() {
        let c = parse(
            "{type: nats, name: n, subjects: [a.>, b.*], jetstream: {stream: S, durable: d, maxDeliver: 5, ackWait: 3s}}",
        )
        .unwrap();
        let src = NatsSource::new(&c, &Limits::default()).unwrap();
        let cc = src.consumer_config(c.jetstream.as_ref().unwrap());
        assert_eq!(cc.durable_name.as_deref(), Some("d"));
        assert_eq!(cc.filter_subject, "");
        assert_eq!(cc.filter_subjects, ["a.>", "b.*"]);
        assert_eq!(cc.max_deliver, 5);
        assert_eq!(cc.ack_wait, Duration::from_secs(3));
        assert_eq!(src.max_in_flight, Limits::default().max_in_flight);
    }

    #[test]
    fn missing_secrets_fail_the_build() {
        let c =
            parse("{type: nats, name: n, subjects: [a], token: {env: TRIPLINE_NATS_SURELY_UNSET}}")
                .unwrap();
        let e = NatsSource::new(&c, &Limits::default()).err().unwrap();
        assert!(e.to_string().contains("TRIPLINE_NATS_SURELY_UNSET"), "{e}");
    }
}
