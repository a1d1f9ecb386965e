//! Integration tests: one binary (links once) with a module per area.
//! Shared pieces (brokers, the Kubernetes API double, fixtures, running the real
//! binary) live in `support/`.
mod argo;
mod brokers_smoke;
mod cli;
mod correlation;
mod engine;
mod failures;
mod fault_matrix;
mod image;
mod intake;
mod kafka;
mod kube_api_double;
mod nats;
mod shipped_yaml;
mod status_page;
mod support;
mod webhook;
