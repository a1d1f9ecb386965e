//! Test support shared by every integration test, and by the throughput
//! benches (`#[path = "../tests/it/support/mod.rs"] mod support;`), which use
//! only part of it: hence `dead_code` is allowed for the whole tree.
#![allow(dead_code)]
pub mod brokers;
pub mod kube_api;
pub mod peer;
pub mod tripline;
pub mod wait;
