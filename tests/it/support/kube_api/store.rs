//! The object store and what create, get, list and delete do with it:
//! `resourceVersion`s, names (`generateName`), system fields, namespaces.

use std::collections::BTreeMap;

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use rand::Rng as _;
use serde_json::{json, Map, Value};

use super::catalog::Resource;
use super::selectors::{FieldSelector, LabelSelector};
use super::server::{ApiRequest, Shared};
use super::status::details;
use super::validate::{
    check_metadata_types, check_type_fields, decode, prune_unknown_top_level_fields, validate,
};
use super::Status;

/// Namespaces that exist in a fresh cluster.
const INITIAL_NAMESPACES: [&str; 4] = ["default", "kube-node-lease", "kube-public", "kube-system"];

/// Where an object is stored; cluster-scoped objects have an empty namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ObjectKey {
    pub(super) plural: String,
    pub(super) namespace: String,
    pub(super) name: String,
}

impl ObjectKey {
    pub(super) fn new(plural: &str, namespace: &str, name: &str) -> ObjectKey {
        ObjectKey {
            plural: plural.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// Every stored object, by key.
pub(super) struct Store {
    /// Last `resourceVersion` handed out (etcd's revision in a real cluster).
    revision: u64,
    pub(super) objects: BTreeMap<ObjectKey, Value>,
}

impl Store {
    pub(super) fn new() -> Store {
        let mut store = Store {
            revision: 0,
            objects: BTreeMap::new(),
        };
        for namespace in INITIAL_NAMESPACES {
            store.add_namespace(namespace);
        }
        store
    }

    pub(super) fn add_namespace(&mut self, name: &str) {
        let resource = Resource::namespace_resource();
        if self.contains(resource, "", name) {
            return;
        }
        let mut namespace =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        fill_system_fields(resource, &mut namespace);
        self.insert(resource, "", name, namespace);
    }

    fn contains(&self, resource: &Resource, namespace: &str, name: &str) -> bool {
        self.objects
            .contains_key(&ObjectKey::new(resource.plural, namespace, name))
    }

    /// Stores `object` under a new `resourceVersion` and returns the stored copy.
    fn insert(
        &mut self,
        resource: &Resource,
        namespace: &str,
        name: &str,
        mut object: Value,
    ) -> Value {
        self.revision += 1;
        object["metadata"]["resourceVersion"] = json!(self.revision.to_string());
        self.objects.insert(
            ObjectKey::new(resource.plural, namespace, name),
            object.clone(),
        );
        object
    }
}

/// The requests on objects, routed here by `Shared::resource_request`.
impl Shared {
    pub(super) fn get(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
    ) -> Result<Response, Status> {
        let store = self.store();
        let object = store
            .objects
            .get(&ObjectKey::new(resource.plural, namespace, name))
            .ok_or_else(|| Status::not_found(resource.group, resource.plural, name))?;
        Ok(Json(object.clone()).into_response())
    }

    /// Lists one namespace, or all when `namespace` is empty.
    pub(super) fn list(
        &self,
        request: &ApiRequest,
        resource: &Resource,
        namespace: &str,
    ) -> Result<Response, Status> {
        if matches!(request.query("watch"), Some("true" | "1")) {
            return Err(Status {
                message: "watch is not supported by the API double".into(),
                ..Status::method_not_allowed()
            });
        }
        let labels = LabelSelector::parse(request.query("labelSelector").unwrap_or(""))?;
        let fields = FieldSelector::parse(request.query("fieldSelector").unwrap_or(""))?;
        let store = self.store();
        let items: Vec<Value> = store
            .objects
            .iter()
            .filter(|(key, _)| {
                key.plural == resource.plural
                    && (namespace.is_empty() || key.namespace == namespace)
            })
            .map(|(_, object)| object)
            .filter(|object| labels.matches(object) && fields.matches(object))
            .map(|object| {
                let mut item = object.clone();
                // Typed lists of built-in resources carry no type fields per item.
                if !resource.custom {
                    if let Some(item) = item.as_object_mut() {
                        item.remove("apiVersion");
                        item.remove("kind");
                    }
                }
                item
            })
            .collect();
        Ok(Json(json!({
            "apiVersion": resource.api_version(),
            "kind": format!("{}List", resource.kind),
            "metadata": {"resourceVersion": store.revision.to_string()},
            "items": items,
        }))
        .into_response())
    }

    /// Deletes at once (no finalizers, no graceful deletion). Custom resources
    /// answer with the deleted object, built-in ones with a success `Status`.
    pub(super) fn delete(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
    ) -> Result<Response, Status> {
        let mut store = self.store();
        let object = store
            .objects
            .remove(&ObjectKey::new(resource.plural, namespace, name))
            .ok_or_else(|| Status::not_found(resource.group, resource.plural, name))?;
        store.revision += 1;
        if resource.custom {
            return Ok(Json(object).into_response());
        }
        let mut details = details(resource.group, resource.plural, name);
        details.insert("uid".into(), object["metadata"]["uid"].clone());
        Ok(Json(json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }))
        .into_response())
    }

    /// Create, in the order the API server checks things: decoding and the
    /// request's own consistency (400), the namespace (404), the object (422),
    /// storage (500 for a preset resourceVersion, 409 for a taken name).
    pub(super) fn create(
        &self,
        request: &ApiRequest,
        resource: &Resource,
        namespace: &str,
    ) -> Result<Response, Status> {
        let dry_run = request.dry_run()?;
        let mut object = decode(request)?;
        check_type_fields(resource, &object)?;
        if resource.custom {
            prune_unknown_top_level_fields(&mut object);
        }
        let metadata = object
            .as_object_mut()
            .expect("decode returns objects")
            .entry("metadata")
            .or_insert_with(|| json!({}));
        check_metadata_types(resource, metadata)?;
        let metadata = metadata.as_object_mut().expect("checked to be an object");
        let body_namespace = metadata_str(metadata, "namespace").map(str::to_owned);
        match body_namespace {
            Some(body) if body != namespace => {
                if resource.namespaced {
                    return Err(Status::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                metadata.remove("namespace");
            }
            _ if resource.namespaced => {
                metadata.insert("namespace".into(), json!(namespace));
            }
            _ => {}
        }
        if resource.namespaced
            && !self
                .store()
                .contains(Resource::namespace_resource(), "", namespace)
        {
            return Err(Status::not_found("", "namespaces", namespace));
        }
        let name = assign_name(metadata);
        fill_system_fields(resource, &mut object);
        let causes = validate(resource, &object);
        if !causes.is_empty() {
            return Err(Status::invalid(
                resource.group,
                resource.kind,
                &name,
                &causes,
            ));
        }
        if object["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|version| !version.is_empty())
        {
            return Err(Status::internal_error(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let mut store = self.store();
        if store.contains(resource, namespace, &name) {
            return Err(Status::already_exists(
                resource.group,
                resource.plural,
                &name,
            ));
        }
        let created = if dry_run {
            object
        } else {
            store.insert(resource, namespace, &name, object)
        };
        Ok((StatusCode::CREATED, Json(created)).into_response())
    }
}

fn metadata_str<'a>(metadata: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    metadata
        .get(field)
        .and_then(Value::as_str)
        .filter(|value| !value.is_empty())
}

/// Expands `generateName` when there is no name, as Kubernetes' name generator
/// does (prefix cut to 58 characters, 5 random characters from its alphabet),
/// and returns the name (empty when there is none).
fn assign_name(metadata: &mut Map<String, Value>) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    const MAX_PREFIX: usize = 63 - 5;
    if let Some(name) = metadata_str(metadata, "name") {
        return name.to_owned();
    }
    let Some(prefix) = metadata_str(metadata, "generateName") else {
        return String::new();
    };
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    let name = format!("{}{suffix}", truncate(prefix, MAX_PREFIX));
    metadata.insert("name".into(), json!(name));
    name
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// What the API server sets on every new object, whatever the client sent.
fn fill_system_fields(resource: &Resource, object: &mut Value) {
    let metadata = &mut object["metadata"];
    metadata["uid"] = json!(random_uuid());
    metadata["creationTimestamp"] = json!(k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string());
    if !resource.group.is_empty() {
        metadata["generation"] = json!(1);
    }
    if resource.has_status_subresource() {
        if let Some(fields) = object.as_object_mut() {
            fields.remove("status");
        }
    }
    if resource.kind == "Namespace" {
        let name = object["metadata"]["name"].clone();
        object["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
        object["spec"] = json!({"finalizers": ["kubernetes"]});
        object["status"] = json!({"phase": "Active"});
    }
}

/// A random (version 4) UUID.
fn random_uuid() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}
