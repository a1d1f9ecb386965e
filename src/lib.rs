//! tripline: events in, Kubernetes objects out, exactly once.
//!
//! # Layout
//!
//! The flow is `source → Event → matcher → correlator → renderer → submitter`,
//! and the source acknowledges only after the submitter's outcome is final.
//! Modules are layered; each imports only from the layers below it.
//!
//! * [`cli`] — the commands (`serve`, `validate`, `test`); `main` only parses.
//! * [`serve`] — runs it all: builds the engine and the sources, the HTTP
//!   server, signals (SIGTERM drains within the deadline, SIGHUP reloads);
//!   a changed config starts a new generation on the same sockets.
//!   [`config`] — `tripline.yaml`, gathering each source's own config type.
//! * [`sources`] — produce [`event::Event`]s and own acknowledgement, each a
//!   folder: [`sources::webhook`] (routes on the HTTP server),
//!   [`sources::nats`] (JetStream and core) and [`sources::kafka`] (consumer
//!   group, commit watermark). [`http`] — the HTTP server and the admin
//!   endpoints (`/healthz`, `/readyz`, `/metrics`, the `/status` page).
//! * [`engine`] — match → correlate → render → submit for one event; it
//!   implements the [`outcome::Process`] contract, which is all a source
//!   knows of it; it also reads Argo trigger sources at fire time and keeps
//!   the recent verdicts the status page shows. [`metrics`] — what it
//!   counts (`prometheus-client`), histograms and process metrics included.
//! * [`sensor`] — sensor files: spec, load (validate and compile once), the
//!   pure matcher (filter, index, condition), correlation, rendering, preview,
//!   the source catalog sensors bind to, and Argo Events `Sensor`s run
//!   unchanged ([`sensor::argo`]: filters, Lua/jq, parameters, import).
//!   [`submit`] — the [`submit::Submitter`] trait, retries, the answer
//!   classification, the dead-letter log; outbox (group commit) and
//!   Kubernetes API.
//! * [`event`] — the envelope; shared plumbing: [`limits`], [`secret`],
//!   [`tls`], [`backoff`], [`redact`], [`readiness`], [`shutdown`].

pub mod backoff;
pub mod cli;
pub mod config;
pub mod engine;
pub mod event;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod outcome;
pub mod readiness;
pub mod redact;
pub mod secret;
pub mod sensor;
pub mod serve;
pub mod shutdown;
pub mod sources;
pub mod state;
pub mod submit;
pub mod throttle;
pub mod tls;

/// Sets up logging to stderr: `filter` is an `EnvFilter` directive.
///
/// The kube client's own line per failed request is silenced (unless the
/// filter names `kube_client`): the engine logs an outage once a minute with
/// a count instead of once per request.
pub fn init_tracing(
    filter: &str,
    json: bool,
) -> Result<(), tracing_subscriber::filter::ParseError> {
    use std::io::IsTerminal;
    let filter = if filter.contains("kube_client") {
        filter.to_string()
    } else {
        format!("{filter},kube_client::client::builder=off")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(filter)?;
    // Colour only for a person at a terminal (and never with NO_COLOR).
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}
