//! Feeds `/readyz` from the client's connection events: ready while
//! connected and consuming, with a detail that says why not otherwise
//! (the shared [`BrokerState`] machine). Also tells the fetch loop about
//! reconnects, since a restarted server forgot the pending pull request.

use async_nats::Event as ClientEvent;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::readiness::{BrokerHealth, BrokerState, ReadinessHandle};
use crate::redact;

pub struct Health {
    state: BrokerHealth,
    source: String,
    /// Bumped on every (re)connect, so the fetch loop can pull anew.
    reconnects: watch::Sender<u64>,
}

impl Health {
    /// `servers`: the urls, shown without user info.
    pub fn new(readiness: ReadinessHandle, servers: &[String]) -> (Self, watch::Receiver<u64>) {
        let shown: Vec<String> = servers.iter().map(|s| redact::url(s)).collect();
        let (reconnects, reconnected) = watch::channel(0u64);
        let health = Health {
            source: readiness.source().to_string(),
            state: BrokerHealth::new(
                readiness,
                BrokerState {
                    starting: "connected; binding".into(),
                    disconnected: format!("not connected to NATS ({})", shown.join(",")),
                    ..Default::default()
                },
            ),
            reconnects,
        };
        (health, reconnected)
    }

    pub fn on_client_event(&self, event: ClientEvent) {
        use ClientEvent as E;
        match &event {
            E::Connected => {
                info!(source = %self.source, "connected to NATS");
                self.state.update(|s| {
                    s.connected = true;
                    s.last_error = None;
                });
                self.reconnects.send_modify(|n| *n += 1);
            }
            E::Disconnected => {
                warn!(source = %self.source, "disconnected from NATS; reconnecting");
                self.state.update(|s| s.connected = false);
            }
            E::Closed => self.state.update(|s| s.connected = false),
            E::SlowConsumer(sid) => warn!(
                source = %self.source,
                subscription = sid,
                "slow consumer: the client dropped messages (core NATS loses them; raise limits.maxInFlight or use JetStream)"
            ),
            E::LameDuckMode | E::Draining => info!(source = %self.source, %event, "NATS"),
            // While disconnected, every failed reconnect attempt is a client
            // error: not worth a warning each.
            E::ClientError(_) | E::ServerError(_) if !self.state.read(|s| s.connected) => {
                debug!(source = %self.source, %event, "NATS");
                let error = event.to_string();
                self.state.update(|s| s.last_error = Some(error));
            }
            E::ServerError(_) | E::ClientError(_) => {
                warn!(source = %self.source, %event, "NATS")
            }
        }
    }

    pub fn set_consuming(&self, detail: String) {
        self.state.update(|s| s.consuming = Some(detail));
    }

    pub fn set_problem(&self, problem: Option<String>) {
        self.state.update(|s| s.problem = problem);
    }

    pub fn set_stopping(&self) {
        self.state.update(|s| s.stopping = true);
    }
}
