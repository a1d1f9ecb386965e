//! Sources produce [`Event`](crate::event::Event)s and own acknowledgement:
//! a webhook answers the request, JetStream acks/naks, Kafka commits. A source
//! never acknowledges before [`Process::process`] returned a final outcome for
//! the event, and it knows only that contract, never the engine behind it.
//!
//! * [`webhook`] — GitHub, GitLab, generic HMAC, CloudEvents and plain HTTP:
//!   routes on the one HTTP server.
//! * [`nats`] — a JetStream durable pull consumer, or core NATS subscriptions.
//! * [`kafka`] — a consumer-group member with a commit watermark.
//!
//! Each folder owns its config type; the root config (`tripline.yaml`)
//! gathers them into one tagged enum.

pub mod kafka;
pub mod nats;
pub mod webhook;

use std::sync::Arc;

use async_trait::async_trait;

use crate::limits::ByteBudget;
use crate::outcome::Process;
use crate::readiness::ReadinessHandle;
use crate::shutdown::Shutdown;

/// What a running source is given: where events go, where to say whether it
/// is ready, when to stop (with the drain deadline), and the memory budget.
pub struct SourceContext {
    pub process: Arc<dyn Process>,
    pub readiness: ReadinessHandle,
    pub shutdown: Shutdown,
    /// Payload bytes in processing across every source: hold room for an
    /// event before processing it.
    pub bytes: ByteBudget,
}

/// A running broker source (webhooks are routes on the HTTP server instead).
#[async_trait]
pub trait Source: Send {
    fn name(&self) -> &str;
    /// Runs until shutdown begins, then finishes (or hands back for
    /// redelivery) what it has in flight and returns.
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError>;
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source `{source_name}`: {message}")]
    Failed {
        source_name: String,
        message: String,
    },
    #[error("secret for source `{source_name}`: {message}")]
    Secret {
        source_name: String,
        message: String,
    },
}
