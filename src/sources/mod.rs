//! Sources produce [`Event`](crate::event::Event)s and own acknowledgement:
//! a webhook answers the request, JetStream acks/naks, Kafka commits. A source
//! never acknowledges before [`Engine::process`](crate::app::Engine::process)
//! returned a final outcome for the event.
//!
//! Config is one tagged enum (`type: github`); every webhook kind shares one
//! HTTP server ([`webhook`]), each broker source runs its own task.

pub mod kafka;
pub mod nats;
pub mod webhook;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::app::Engine;

/// A running source.
#[async_trait]
pub trait Source: Send {
    fn name(&self) -> &str;
    /// Runs until `shutdown` is cancelled, then finishes (or hands back for
    /// redelivery) what it has in flight and returns.
    async fn run(
        self: Box<Self>,
        engine: Arc<Engine>,
        shutdown: CancellationToken,
    ) -> Result<(), SourceError>;
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source `{source_name}`: {message}")]
    Failed {
        source_name: String,
        message: String,
    },
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: String, error: std::io::Error },
    #[error("secret for source `{source_name}`: {message}")]
    Secret {
        source_name: String,
        message: String,
    },
}

/// One entry of `sources:` in `tripline.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceConfig {
    /// Plain HTTP: `POST <path>` with a JSON or text body, no signature.
    Http(webhook::HttpConfig),
    /// GitHub webhooks, `X-Hub-Signature-256` verified.
    Github(webhook::GithubConfig),
    /// GitLab webhooks, `X-Gitlab-Token` verified.
    Gitlab(webhook::GitlabConfig),
    /// Any sender: HMAC (configurable header, algorithm, encoding, replay
    /// window) or bearer token.
    Generic(webhook::GenericConfig),
    /// CloudEvents over HTTP, binary and structured mode.
    Cloudevents(webhook::CloudEventsConfig),
    /// A Kafka consumer group member; commits offsets behind finished messages.
    Kafka(kafka::KafkaConfig),
    /// A JetStream durable pull consumer (acks after the submission), or core
    /// NATS subscriptions (at most once).
    Nats(nats::NatsConfig),
}

impl SourceConfig {
    pub fn name(&self) -> &str {
        match self {
            SourceConfig::Http(c) => &c.name,
            SourceConfig::Github(c) => &c.name,
            SourceConfig::Gitlab(c) => &c.name,
            SourceConfig::Generic(c) => &c.name,
            SourceConfig::Cloudevents(c) => &c.name,
            SourceConfig::Kafka(c) => &c.name,
            SourceConfig::Nats(c) => &c.name,
        }
    }

    /// Checks what serde cannot; errors are `(field, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        match self {
            SourceConfig::Generic(c) => c.validate(),
            SourceConfig::Kafka(c) => c.validate(),
            SourceConfig::Nats(c) => c.validate(),
            _ => Ok(()),
        }?;
        if let Some(p) = self.webhook_path() {
            if !p.starts_with('/') {
                return Err(("path".into(), format!("`{p}` must start with `/`")));
            }
        }
        Ok(())
    }

    pub fn rebase(&mut self, base: &Path) {
        match self {
            SourceConfig::Github(c) => c.secret.rebase(base),
            SourceConfig::Gitlab(c) => c.token.rebase(base),
            SourceConfig::Generic(c) => c.rebase(base),
            SourceConfig::Cloudevents(c) => {
                if let Some(t) = &mut c.bearer {
                    t.rebase(base)
                }
            }
            SourceConfig::Http(_) => {}
            SourceConfig::Kafka(c) => c.rebase(base),
            SourceConfig::Nats(c) => c.rebase(base),
        }
    }

    /// The HTTP path for webhook kinds, `None` for broker sources.
    pub fn webhook_path(&self) -> Option<&str> {
        match self {
            SourceConfig::Http(c) => c.path.as_deref(),
            SourceConfig::Github(c) => c.path.as_deref(),
            SourceConfig::Gitlab(c) => c.path.as_deref(),
            SourceConfig::Generic(c) => c.path.as_deref(),
            SourceConfig::Cloudevents(c) => c.path.as_deref(),
            SourceConfig::Kafka(_) => None,
            SourceConfig::Nats(_) => None,
        }
    }
}

/// Builds the running sources: one HTTP server carrying every webhook
/// endpoint (always, for `/healthz`), plus one task per broker source.
/// Resolves secrets and checks settings; connects to nothing (that happens
/// in [`Source::run`]), so `tripline validate` uses it too.
pub fn build(config: &crate::config::Config) -> Result<Vec<Box<dyn Source>>, SourceError> {
    let mut out: Vec<Box<dyn Source>> = Vec::new();
    let mut endpoints = Vec::new();
    for s in &config.sources {
        match s {
            SourceConfig::Nats(c) => out.push(Box::new(nats::NatsSource::new(c, &config.limits)?)),
            SourceConfig::Kafka(c) => {
                out.push(Box::new(kafka::KafkaSource::new(c, &config.limits)?))
            }
            webhook_kind => endpoints.extend(webhook::Endpoint::from_config(webhook_kind)?),
        }
    }
    out.insert(
        0,
        Box::new(webhook::WebhookServer::new(
            config.listen,
            config.limits.clone(),
            endpoints,
        )),
    );
    Ok(out)
}
