//! The running NATS source: credentials resolved at build time, a client
//! that connects in the background and reconnects forever, and the choice
//! between the JetStream and the core NATS loop.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{ConnectOptions, ServerAddr};
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::config::{JetStreamConfig, NatsConfig};
use super::health::Health;
use crate::backoff::Backoff;
use crate::limits::Limits;
use crate::secret::SecretRef;
use crate::sources::{Source, SourceContext, SourceError};
use crate::tls::TlsConfig;

/// Credentials, resolved at build time (a missing secret fails the start).
pub(super) enum Auth {
    None,
    Token(String),
    UserPassword(String, String),
    Nkey(String),
    Creds(String),
}

/// A running `type: nats` source.
pub struct NatsSource {
    pub(super) name: String,
    pub(super) servers: Vec<String>,
    pub(super) auth: Auth,
    pub(super) tls: Option<TlsConfig>,
    pub(super) subjects: Vec<String>,
    pub(super) queue_group: Option<String>,
    pub(super) jetstream: Option<JetStreamConfig>,
    pub(super) max_in_flight: usize,
    /// `limits.maxBodyBytes`: larger messages are dead-lettered.
    pub(super) max_payload: usize,
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
            tls.check_files().map_err(|message| SourceError::Failed {
                source_name: config.name.clone(),
                message,
            })?;
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
            max_payload: limits.max_body_bytes,
        })
    }

    pub(super) fn failed(&self, message: impl Into<String>) -> SourceError {
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
            // Core NATS: what may wait in the client per subscription; past
            // it the client drops (and says so: slow consumer). Bounded so
            // memory is, too (the default is 65 536 messages).
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
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

    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError> {
        let (health, reconnected) = Health::new(cx.readiness.clone(), &self.servers);
        let health = Arc::new(health);
        let client = self.connect(health.clone()).await?;
        let result = match &self.jetstream {
            Some(js) => {
                self.run_jetstream(js, &client, &cx, &health, reconnected)
                    .await
            }
            None => self.run_core(&client, &cx, &health).await,
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

/// Messages buffered per core NATS subscription.
const SUBSCRIPTION_CAPACITY: usize = 1024;

/// Backoff between attempts to bind the consumer (or subscribe) after errors.
pub(super) fn retry_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(200), Duration::from_secs(5))
}

/// Sleeps for `d`; `true` if shutdown came first.
pub(super) async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

pub(super) fn log_task_end(source: &str, done: Option<Result<(), tokio::task::JoinError>>) {
    if let Some(Err(e)) = done {
        log_panic(source, &e.to_string());
    }
}

/// A message's work panicked (run at once or as a task).
pub(super) fn log_panic(source: &str, panic: &str) {
    error!(source, error = %panic, "message task failed; the message is redelivered (JetStream) or lost (core)");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> NatsConfig {
        let c: NatsConfig = serde_yaml_ng::from_str(yaml).unwrap();
        c.validate().unwrap();
        c
    }

    #[test]
    fn consumer_config_filters_by_subjects() {
        let c = parse(
            "{name: n, subjects: [a.>, b.*], jetstream: {stream: S, durable: d, maxDeliver: 5, ackWait: 3s}}",
        );
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
        let c = parse("{name: n, subjects: [a], token: {env: TRIPLINE_NATS_SURELY_UNSET}}");
        let e = NatsSource::new(&c, &Limits::default()).err().unwrap();
        assert!(e.to_string().contains("TRIPLINE_NATS_SURELY_UNSET"), "{e}");
    }
}
