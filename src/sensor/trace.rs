//! The explanation of a filter's verdict (`tripline test`, `/explain`, the
//! `why_not` of replies): one node per filter, with the value seen and why
//! it did not match. Shared by native and Argo filters.

use serde::Serialize;
use serde_json::Value;

/// Per-filter explanation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Trace {
    pub filter: String,
    pub matched: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Trace>,
}
