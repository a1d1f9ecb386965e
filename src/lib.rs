//! tripline: events in, Kubernetes objects out, exactly once.
//!
//! # Layout
//!
//! The flow is `source → Event → matcher → correlator → renderer → submitter`,
//! and the source acknowledges only after the submitter's outcome is final.
//!
//! * [`sources`] — produce [`event::Event`]s and own acknowledgement:
//!   [`sources::webhook`] (GitHub, GitLab, generic HMAC, CloudEvents, plain
//!   HTTP; one axum server), [`sources::nats`] (core and JetStream: ack, nak,
//!   term) and [`sources::kafka`] (consumer group, commit watermark).
//! * [`event`] — the envelope every source produces.
//! * [`sensor`] — sensor files: [`sensor::spec`] (what users write),
//!   [`mod@sensor::load`] (validation and compilation, once),
//!   [`sensor::filter`], [`sensor::index`] and [`sensor::condition`] (pure matching),
//!   [`sensor::correlate`] (multi-dependency triggers),
//!   [`sensor::render`] (parameters into manifests, deterministic names).
//! * [`submit`] — the [`submit::Submitter`] trait, retries, dead-letter log;
//!   [`submit::outbox`] (YAML files) and [`submit::kube`] (the Kubernetes API).
//! * [`app`] — the [`app::Engine`] tying matcher, correlator, renderer and
//!   submitter together, and the run loop with shutdown.
//! * [`config`] — `tripline.yaml`; [`cli`] — the commands.

pub mod app;
pub mod cli;
pub mod config;
pub mod event;
pub mod sensor;
pub mod sources;
pub mod submit;

/// Sets up logging to stderr: `filter` is an `EnvFilter` directive.
pub fn init_tracing(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
