//! Discovery documents: `/api`, `/api/v1`, `/apis`, `/apis/<group>[/<version>]`,
//! their aggregated (`apidiscovery.k8s.io/v2`) form, and `/version`.

use std::net::SocketAddr;

use axum::{
    http::{header, HeaderMap},
    response::{IntoResponse, Response},
    Json,
};
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::catalog::{api_group_versions, group_version, Resource, RESOURCES};
use super::Status;

/// What `/api` answers.
pub(super) fn api_versions(addr: SocketAddr) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}],
    })
}

/// An `APIGroup` (the body of `/apis/<group>` without its type fields).
pub(super) fn api_group(group: &str) -> Option<Value> {
    let versions: Vec<Value> = api_group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": group_version(g, v), "version": v}))
        .collect();
    let preferred = versions.first()?.clone();
    Some(json!({"name": group, "versions": versions, "preferredVersion": preferred}))
}

/// What `/apis` answers.
pub(super) fn api_group_list() -> Value {
    let mut groups: Vec<&str> = api_group_versions().into_iter().map(|(g, _)| g).collect();
    groups.dedup();
    let groups: Vec<Value> = groups.into_iter().filter_map(api_group).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// What `/api/v1` or `/apis/<group>/<version>` answers.
fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(Resource::discovery_entries)
        .collect();
    if resources.is_empty() {
        return None;
    }
    let mut list = json!({
        "kind": "APIResourceList",
        "groupVersion": group_version(group, version),
        "resources": resources,
    });
    // The core list is the one the API server sends without an apiVersion.
    if !group.is_empty() {
        list["apiVersion"] = json!("v1");
    }
    Some(list)
}

/// Media type of aggregated discovery, as requested by the client and echoed back.
const AGGREGATED_DISCOVERY: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the `Accept` header asks for aggregated discovery v2.
pub(super) fn wants_aggregated(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()) else {
        return false;
    };
    accept.split(',').any(|range| {
        let params: Vec<&str> = range.split(';').map(str::trim).collect();
        ["g=apidiscovery.k8s.io", "v=v2", "as=APIGroupDiscoveryList"]
            .iter()
            .all(|wanted| params.contains(wanted))
    })
}

/// The aggregated discovery document of `/api` (`core`) or `/apis`.
pub(super) fn aggregated_discovery(core: bool) -> Response {
    let group_versions = if core {
        vec![("", "v1")]
    } else {
        api_group_versions()
    };
    let mut items: Vec<Value> = Vec::new();
    for (group, version) in group_versions {
        let resources: Vec<Value> = RESOURCES
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .map(Resource::aggregated_entry)
            .collect();
        let version = json!({"version": version, "resources": resources, "freshness": "Current"});
        match items
            .iter_mut()
            .find(|item| item["metadata"]["name"] == group)
        {
            Some(item) => item["versions"]
                .as_array_mut()
                .expect("versions is an array")
                .push(version),
            None => {
                let mut metadata = json!({"creationTimestamp": null});
                if !group.is_empty() {
                    metadata["name"] = json!(group);
                }
                items.push(json!({"metadata": metadata, "versions": [version]}));
            }
        }
    }
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    });
    (
        [(header::CONTENT_TYPE, AGGREGATED_DISCOVERY)],
        body.to_string(),
    )
        .into_response()
}

/// What `/version` answers.
pub(super) fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.1",
        "gitCommit": "8adc0f041b8e7ad1d30e29cc59c6ae7a15e19828",
        "gitTreeState": "clean",
        "buildDate": "2025-05-15T08:19:08Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// [`api_resource_list`] as an answer; 404 for a group version not served.
pub(super) fn discovery_list(group: &str, version: &str) -> Result<Response, Status> {
    api_resource_list(group, version)
        .map(|list| Json(list).into_response())
        .ok_or_else(Status::resource_not_found)
}

/// How a resource appears in discovery documents.
impl Resource {
    /// Kubernetes' `storageVersionHash`: base64 of the first 8 bytes of the
    /// SHA-256 of `group/version/kind`.
    fn storage_version_hash(&self) -> String {
        let digest = Sha256::digest(format!("{}/{}/{}", self.group, self.version, self.kind));
        base64::engine::general_purpose::STANDARD.encode(&digest[..8])
    }

    /// Entry in an `APIResourceList`, followed by its subresources.
    fn discovery_entries(&self) -> Vec<Value> {
        let mut entry = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": self.verbs,
            "storageVersionHash": self.storage_version_hash(),
        });
        if !self.short_names.is_empty() {
            entry["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            entry["categories"] = json!(self.categories);
        }
        let subresources = self.subresources.iter().map(|(name, verbs)| {
            json!({
                "name": format!("{}/{name}", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": verbs,
            })
        });
        std::iter::once(entry).chain(subresources).collect()
    }

    /// Entry in an aggregated (`apidiscovery.k8s.io/v2`) version.
    fn aggregated_entry(&self) -> Value {
        let response_kind =
            json!({"group": self.group, "version": self.version, "kind": self.kind});
        let mut entry = json!({
            "resource": self.plural,
            "responseKind": response_kind,
            "scope": if self.namespaced { "Namespaced" } else { "Cluster" },
            "singularResource": self.singular,
            "verbs": self.verbs,
        });
        if !self.short_names.is_empty() {
            entry["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            entry["categories"] = json!(self.categories);
        }
        if !self.subresources.is_empty() {
            entry["subresources"] = self
                .subresources
                .iter()
                .map(|(name, verbs)| {
                    json!({"subresource": name, "responseKind": response_kind, "verbs": verbs})
                })
                .collect();
        }
        entry
    }
}
