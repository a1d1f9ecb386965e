//! Test support shared by every integration test.
#![allow(dead_code)]
pub mod brokers;
pub mod kube_api;
pub mod tripline;
