//! What is checked of an object before any path or URL is built from it:
//! `apiVersion`, `kind`, `metadata.namespace` and `metadata.name` must be
//! what the Kubernetes API accepts (so event data that ended up in them —
//! `../escaped`, `a/b` — can never reach a file path or a URL), and whether
//! an object already there is ours (see [`same_event`]).

use serde_json::Value;

use super::SubmitError;
use crate::event::{ANNOTATION_EVENT_ID, ANNOTATION_EVENT_KEY};

/// The coordinates of an object, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectRef<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
}

fn invalid(field: &str, value: &str, rule: &str) -> SubmitError {
    SubmitError::rejected(
        422,
        "Invalid",
        format!(
            "{field}: Invalid value: \"{}\": {rule}",
            value.escape_default()
        ),
    )
}

/// A DNS-1123 label: at most 63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: at most 253, dot-separated labels.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Checks the coordinates of `obj`.
pub fn check(obj: &Value) -> Result<ObjectRef<'_>, SubmitError> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let namespace = obj["metadata"]["namespace"].as_str();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    if !is_dns_label(version) || !(group.is_empty() || is_dns_subdomain(group)) {
        return Err(invalid(
            "apiVersion",
            api_version,
            "must be <group>/<version> or <version>",
        ));
    }
    if kind.is_empty() || kind.len() > 63 || !kind.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid("kind", kind, "must be letters and digits"));
    }
    if let Some(ns) = namespace {
        if !is_dns_label(ns) {
            return Err(invalid(
                "metadata.namespace",
                ns,
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (at most 63)",
            ));
        }
    }
    if !is_dns_subdomain(name) {
        return Err(invalid(
            "metadata.name",
            name,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (at most 253)",
        ));
    }
    Ok(ObjectRef {
        api_version,
        kind,
        namespace,
        name,
    })
}

/// Whether `existing` (found under the name of `ours`) is the object an
/// earlier delivery of the same event created. Generated names carry the
/// event key; a fixed name carries none and is a singleton, so anything
/// under it counts.
pub fn same_event(ours: &Value, existing: &Value) -> bool {
    let key = |v: &Value| {
        v["metadata"]["annotations"][ANNOTATION_EVENT_KEY]
            .as_str()
            .map(str::to_string)
    };
    match key(ours) {
        None => true,
        Some(k) => key(existing).as_deref() == Some(k.as_str()),
    }
}

/// The rejection for a name that another event's object holds.
pub fn collision(ours: &Value, existing: &Value) -> SubmitError {
    let ids = |v: &Value| {
        v["metadata"]["annotations"][ANNOTATION_EVENT_ID]
            .as_str()
            .unwrap_or("?")
            .to_string()
    };
    SubmitError::rejected(
        409,
        "NameCollision",
        format!(
            "an object named {} already exists for other events ({}); this event ({}) is dead-lettered instead of being reported as done",
            ours["metadata"]["name"].as_str().unwrap_or_default(),
            ids(existing),
            ids(ours)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(api: &str, kind: &str, ns: Option<&str>, name: &str) -> Value {
        let mut o = json!({"apiVersion": api, "kind": kind, "metadata": {"name": name}});
        if let Some(ns) = ns {
            o["metadata"]["namespace"] = json!(ns);
        }
        o
    }

    #[test]
    fn coordinates_are_checked_before_any_path_is_built() {
        let ok = obj("argoproj.io/v1alpha1", "Workflow", Some("ml"), "train-abc");
        assert_eq!(check(&ok).unwrap().namespace, Some("ml"));
        check(&obj("v1", "ConfigMap", None, "a.b-c")).unwrap();
        let bad = [
            obj("v1", "Job", Some("../escaped"), "x"),
            obj("v1", "Job", Some("a/b"), "x"),
            obj("v1", "Job", Some(&"n".repeat(64)), "x"),
            obj("v1", "Job", Some("ml"), "../x"),
            obj("v1", "Job", Some("ml"), "X"),
            obj("v1", "Job", Some("ml"), ""),
            obj("v1", "Jo/b", Some("ml"), "x"),
            obj("v1", "", Some("ml"), "x"),
            obj("../v1", "Job", Some("ml"), "x"),
            obj("batch/v1/x", "Job", Some("ml"), "x"),
        ];
        for o in bad {
            let e = check(&o).unwrap_err();
            assert!(!e.is_retryable(), "{o}: {e}");
            assert!(e.to_string().contains("Invalid value"), "{e}");
        }
    }

    #[test]
    fn an_object_under_our_name_is_ours_only_with_our_key() {
        let ours = json!({"metadata": {"name": "t-1", "annotations": {ANNOTATION_EVENT_KEY: "k1", ANNOTATION_EVENT_ID: "e1"}}});
        let same = ours.clone();
        let other = json!({"metadata": {"name": "t-1", "annotations": {ANNOTATION_EVENT_KEY: "k2", ANNOTATION_EVENT_ID: "e2"}}});
        let foreign = json!({"metadata": {"name": "t-1"}});
        assert!(same_event(&ours, &same));
        assert!(!same_event(&ours, &other));
        assert!(!same_event(&ours, &foreign));
        let fixed = json!({"metadata": {"name": "singleton"}});
        assert!(same_event(&fixed, &other), "fixed names are singletons");
        let e = collision(&ours, &other);
        assert!(
            e.to_string().contains("(e2)") && e.to_string().contains("(e1)"),
            "{e}"
        );
    }
}
