//! A Kubernetes API server test double, faithful where `tripline` can notice.
//!
//! [`KubeApi::start`] serves plain HTTP on a free port of 127.0.0.1 from a thread
//! of its own (so it keeps answering whatever the test's runtime is doing), and
//! [`KubeApi::write_kubeconfig`] points the real `kube` client at it.
//!
//! What it answers like the real API server:
//! - discovery: `/api`, `/api/v1`, `/apis`, `/apis/<group>`, `/apis/<group>/<version>`,
//!   the aggregated (`apidiscovery.k8s.io/v2`) form of `/api` and `/apis` when the
//!   client asks for it, and `/version`;
//! - create, get, list (label and `metadata.*` field selectors) and delete of the
//!   resources in the catalog below, namespaced under `.../namespaces/<ns>/<plural>`;
//! - create semantics: `201 Created` with `uid`, `resourceVersion` (one global
//!   counter), `creationTimestamp`, `generation` (non-core groups); `generateName`
//!   expansion; `?dryRun=All`; the body must match the URL (400); the namespace
//!   must exist (404, see [`KubeApi::add_namespace`]; `default`, `kube-system`,
//!   `kube-public` and `kube-node-lease` exist from the start); the name, label
//!   and annotation rules of `ObjectMeta` (422); an existing name is a 409;
//! - Argo kinds are validated against Argo's own JSON schema
//!   (`tests/fixtures/argo/workflows.schema.json`) plus Argo's rule that a
//!   workflow has either `templates` or a `workflowTemplateRef` (422 `Invalid` with
//!   one cause per violation, as the API server reports CRD schema violations);
//! - every error body is a `meta/v1` [`Status`].
//!
//! Faults ([`Fault`]) can be injected while a test runs; by default they hit
//! write requests only (anything but GET and HEAD), so discovery and reads keep
//! working.
//!
//! Not served: update, patch (including server-side apply), watch and
//! subresources; they answer `405 MethodNotAllowed` or `404 NotFound`.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, LazyLock, Mutex, MutexGuard,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    extract::{connect_info::Connected, ConnectInfo, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    serve::IncomingStream,
    Json, Router,
};
use base64::Engine as _;
use bytes::Bytes;
use jsonschema::{
    error::{TypeKind, ValidationErrorKind},
    Validator,
};
use rand::Rng as _;
use regex::Regex;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};

/// Status recorded in [`KubeApi::request_log`] for a request that got no
/// response because a [`Fault::Drop`] closed its connection.
pub const NO_RESPONSE: u16 = 0;

/// Namespaces that exist in a fresh cluster.
const INITIAL_NAMESPACES: [&str; 4] = ["default", "kube-node-lease", "kube-public", "kube-system"];

/// A Kubernetes API server double running until dropped.
pub struct KubeApi {
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

/// A way for a request to fail on purpose; see [`KubeApi::fail_next`].
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this HTTP status and the matching [`Status`] body
    /// (500 `InternalError`, 503 `ServiceUnavailable`, 504 `Timeout`, ...).
    Status(u16),
    /// `429 TooManyRequests` with a `Retry-After` header, as API Priority and
    /// Fairness sheds load.
    TooManyRequests {
        /// Seconds in `Retry-After` and in `details.retryAfterSeconds`.
        retry_after_secs: u64,
    },
    /// Wait this long, then handle the request normally: a create still
    /// happens, typically after the client has timed out.
    Hang(Duration),
    /// Close the connection without answering; the request is not handled.
    Drop,
}

impl KubeApi {
    /// Binds 127.0.0.1 on a free port and starts serving.
    pub async fn start() -> KubeApi {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind the Kubernetes API double");
        listener
            .set_nonblocking(true)
            .expect("make the API double's listener non-blocking");
        let addr = listener
            .local_addr()
            .expect("local address of the API double");
        let shared = Arc::new(Shared::new(addr));
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared))
            .into_make_service_with_connect_info::<Connection>();
        let (shutdown, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("kube-api-double".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime of the API double");
                runtime.block_on(async move {
                    let listener = CuttableListener(
                        TcpListener::from_std(listener).expect("register the API double's listener"),
                    );
                    tokio::select! {
                        served = axum::serve(listener, app) => served.expect("serve the API double"),
                        _ = stopped => {}
                    }
                });
            })
            .expect("spawn the API double's thread");
        KubeApi {
            shared,
            shutdown: Some(shutdown),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A kubeconfig whose cluster, user and context are all named `double`,
    /// pointing at [`Self::url`] without authentication, default namespace `default`.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: double
  cluster:
    server: {url}
users:
- name: double
  user: {{}}
contexts:
- name: double
  context:
    cluster: double
    user: double
    namespace: default
current-context: double
preferences: {{}}
",
            url = self.url()
        )
    }

    /// Writes [`Self::kubeconfig_yaml`] to `dir/kubeconfig` and returns that path.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(&path, self.kubeconfig_yaml()).expect("write the kubeconfig");
        path
    }

    /// Creates a namespace (as `kubectl create namespace` would) unless it exists.
    pub fn add_namespace(&self, name: &str) {
        self.shared.store().add_namespace(name);
    }

    /// Makes the next `n` write requests fail with `fault`. Queued after any
    /// faults still pending, so `fail_next(1, a); fail_next(1, b)` fails the next
    /// write with `a` and the one after with `b`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.shared
            .faults()
            .queued
            .extend(std::iter::repeat_n(fault, n));
    }

    /// Makes every request, reads and discovery included, fail with `fault`
    /// until [`Self::recover`].
    pub fn fail_all(&self, fault: Fault) {
        self.shared.faults().every = Some(fault);
    }

    /// While `down`, every write request answers `503 ServiceUnavailable`.
    pub fn set_down(&self, down: bool) {
        self.shared.faults().down = down;
    }

    /// Clears every fault: [`Self::fail_all`], [`Self::set_down`] and whatever
    /// [`Self::fail_next`] queued.
    pub fn recover(&self) {
        *self.shared.faults() = Faults::default();
    }

    /// Every stored object of a resource (plural name, e.g. `workflows`), in all
    /// namespaces, oldest first.
    pub fn objects(&self, plural: &str) -> Vec<Value> {
        let store = self.shared.store();
        let mut objects: Vec<Value> = store
            .objects
            .iter()
            .filter(|(key, _)| key.plural == plural)
            .map(|(_, object)| object.clone())
            .collect();
        objects.sort_by_key(|object| {
            object["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|version| version.parse::<u64>().ok())
        });
        objects
    }

    /// The stored object `namespace/name` of a resource (plural name); use an
    /// empty namespace for cluster-scoped resources.
    pub fn object(&self, namespace: &str, plural: &str, name: &str) -> Option<Value> {
        self.shared
            .store()
            .objects
            .get(&ObjectKey::new(plural, namespace, name))
            .cloned()
    }

    /// Every answered request as `(method, path without query, status)`, in
    /// answer order; [`NO_RESPONSE`] marks connections a [`Fault::Drop`] closed.
    pub fn request_log(&self) -> Vec<(String, String, u16)> {
        self.shared.log.lock().expect("request log").clone()
    }

    /// How many POST (create) requests arrived, faulted ones included.
    pub fn create_attempts(&self) -> usize {
        self.shared.create_attempts.load(Ordering::SeqCst)
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The server thread is gone already if the send fails.
            let _ = shutdown.send(());
        }
    }
}

// ---------------------------------------------------------------------------
// Resource catalog
// ---------------------------------------------------------------------------

/// One resource, as discovery describes it and as the server treats it.
#[derive(Debug)]
struct Resource {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
    verbs: &'static [&'static str],
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    /// Subresources (`status`, `log`, ...) and their verbs.
    subresources: &'static [(&'static str, &'static [&'static str])],
    /// Served from a CustomResourceDefinition rather than built in.
    custom: bool,
    /// Argo schema the objects must satisfy.
    argo: Option<ArgoSchema>,
}

/// How an Argo kind is validated.
#[derive(Debug)]
struct ArgoSchema {
    /// Definition in the Argo JSON schema.
    definition: &'static str,
    /// Dotted path of the embedded `WorkflowSpec` that must have templates or a
    /// `workflowTemplateRef`, for kinds Argo submits as workflows.
    workflow_spec: Option<&'static str>,
}

const BUILTIN_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const NAMESPACE_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
/// CRD-served resources list their verbs in this order.
const CUSTOM_VERBS: &[&str] = &[
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "create",
    "update",
    "watch",
];
const STATUS: (&str, &[&str]) = ("status", &["get", "patch", "update"]);
const TEKTON_CATEGORIES: &[&str] = &["tekton", "tekton-pipelines"];

const fn builtin(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
) -> Resource {
    Resource {
        group,
        version: "v1",
        kind,
        plural,
        singular,
        namespaced: true,
        verbs: BUILTIN_VERBS,
        short_names: &[],
        categories: &[],
        subresources: &[],
        custom: false,
        argo: None,
    }
}

const fn argo(
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
    argo: ArgoSchema,
) -> Resource {
    Resource {
        group: "argoproj.io",
        version: "v1alpha1",
        kind,
        plural,
        singular,
        namespaced: true,
        verbs: CUSTOM_VERBS,
        short_names,
        categories: &[],
        subresources: &[],
        custom: true,
        argo: Some(argo),
    }
}

const fn tekton(
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
    subresources: &'static [(&'static str, &'static [&'static str])],
) -> Resource {
    Resource {
        group: "tekton.dev",
        version: "v1",
        kind,
        plural,
        singular,
        namespaced: true,
        verbs: CUSTOM_VERBS,
        short_names,
        categories: TEKTON_CATEGORIES,
        subresources,
        custom: true,
        argo: None,
    }
}

/// Everything the double serves, in discovery order. Plural names are unique.
static RESOURCES: &[Resource] = &[
    Resource {
        short_names: &["cm"],
        ..builtin("", "ConfigMap", "configmaps", "configmap")
    },
    Resource {
        short_names: &["ev"],
        ..builtin("", "Event", "events", "event")
    },
    Resource {
        namespaced: false,
        verbs: NAMESPACE_VERBS,
        short_names: &["ns"],
        subresources: &[("finalize", &["update"]), STATUS],
        ..builtin("", "Namespace", "namespaces", "namespace")
    },
    Resource {
        short_names: &["po"],
        categories: &["all"],
        subresources: &[("log", &["get"]), STATUS],
        ..builtin("", "Pod", "pods", "pod")
    },
    builtin("", "Secret", "secrets", "secret"),
    Resource {
        short_names: &["sa"],
        ..builtin("", "ServiceAccount", "serviceaccounts", "serviceaccount")
    },
    Resource {
        short_names: &["svc"],
        categories: &["all"],
        subresources: &[STATUS],
        ..builtin("", "Service", "services", "service")
    },
    Resource {
        short_names: &["deploy"],
        categories: &["all"],
        subresources: &[("scale", &["get", "patch", "update"]), STATUS],
        ..builtin("apps", "Deployment", "deployments", "deployment")
    },
    Resource {
        short_names: &["cj"],
        categories: &["all"],
        subresources: &[STATUS],
        ..builtin("batch", "CronJob", "cronjobs", "cronjob")
    },
    Resource {
        categories: &["all"],
        subresources: &[STATUS],
        ..builtin("batch", "Job", "jobs", "job")
    },
    Resource {
        namespaced: false,
        ..argo(
            "ClusterWorkflowTemplate",
            "clusterworkflowtemplates",
            "clusterworkflowtemplate",
            &["clusterwftmpl", "cwft"],
            ArgoSchema {
                definition: "io.argoproj.workflow.v1alpha1.ClusterWorkflowTemplate",
                workflow_spec: None,
            },
        )
    },
    argo(
        "CronWorkflow",
        "cronworkflows",
        "cronworkflow",
        &["cwf", "cronwf"],
        ArgoSchema {
            definition: "io.argoproj.workflow.v1alpha1.CronWorkflow",
            workflow_spec: Some("spec.workflowSpec"),
        },
    ),
    argo(
        "Workflow",
        "workflows",
        "workflow",
        &["wf"],
        ArgoSchema {
            definition: "io.argoproj.workflow.v1alpha1.Workflow",
            workflow_spec: Some("spec"),
        },
    ),
    argo(
        "WorkflowTemplate",
        "workflowtemplates",
        "workflowtemplate",
        &["wftmpl"],
        ArgoSchema {
            definition: "io.argoproj.workflow.v1alpha1.WorkflowTemplate",
            workflow_spec: None,
        },
    ),
    tekton(
        "PipelineRun",
        "pipelineruns",
        "pipelinerun",
        &["pr", "prs"],
        &[STATUS],
    ),
    tekton("Pipeline", "pipelines", "pipeline", &[], &[]),
    tekton("TaskRun", "taskruns", "taskrun", &["tr", "trs"], &[STATUS]),
    tekton("Task", "tasks", "task", &[], &[]),
];

impl Resource {
    fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    fn namespace_resource() -> &'static Resource {
        Resource::find("", "v1", "namespaces").expect("namespaces are in the catalog")
    }

    /// `argoproj.io/v1alpha1`, or `v1` for the core group.
    fn api_version(&self) -> String {
        group_version(self.group, self.version)
    }

    /// Kubernetes' `storageVersionHash`: base64 of the first 8 bytes of the
    /// SHA-256 of `group/version/kind`.
    fn storage_version_hash(&self) -> String {
        let digest = Sha256::digest(format!("{}/{}/{}", self.group, self.version, self.kind));
        base64::engine::general_purpose::STANDARD.encode(&digest[..8])
    }

    fn has_status_subresource(&self) -> bool {
        self.subresources.iter().any(|(name, _)| *name == "status")
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

fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
}

/// `workflows.argoproj.io` / `Workflow.argoproj.io`; core names stay bare.
fn qualify(name: &str, group: &str) -> String {
    if group.is_empty() {
        name.to_owned()
    } else {
        format!("{name}.{group}")
    }
}

/// `(group, version)` pairs served under `/apis`, in catalog order.
fn api_group_versions() -> Vec<(&'static str, &'static str)> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for resource in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !pairs.contains(&(resource.group, resource.version)) {
            pairs.push((resource.group, resource.version));
        }
    }
    pairs
}

// ---------------------------------------------------------------------------
// Discovery documents
// ---------------------------------------------------------------------------

/// What `/api` answers.
fn api_versions(addr: SocketAddr) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}],
    })
}

/// An `APIGroup` (the body of `/apis/<group>` without its type fields).
fn api_group(group: &str) -> Option<Value> {
    let versions: Vec<Value> = api_group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": group_version(g, v), "version": v}))
        .collect();
    let preferred = versions.first()?.clone();
    Some(json!({"name": group, "versions": versions, "preferredVersion": preferred}))
}

/// What `/apis` answers.
fn api_group_list() -> Value {
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
fn wants_aggregated(headers: &HeaderMap) -> bool {
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
fn aggregated_discovery(core: bool) -> Response {
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
fn version_info() -> Value {
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

// ---------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------

/// A `meta/v1` `Status` with `status: Failure`, the body of every error answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    /// HTTP status code, repeated in the body as `code`.
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `AlreadyExists`, `Invalid`, ...).
    pub reason: &'static str,
    /// Human-readable message, worded as the API server words it.
    pub message: String,
    /// `details`, when the API server sends them.
    pub details: Option<Value>,
}

/// One `details.causes` entry of an `Invalid` [`Status`].
#[derive(Clone, Debug, PartialEq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueTypeInvalid`, ...
    pub reason: &'static str,
    /// The error without its field: `Required value`, `Invalid value: "x": ...`.
    pub message: String,
    /// Dotted path of the offending field: `spec.templates[0].container`.
    pub field: String,
}

impl Cause {
    /// A missing field; `detail` may be empty.
    pub fn required(field: &str, detail: &str) -> Cause {
        Cause::new("FieldValueRequired", "Required value", field, detail)
    }

    /// A field whose value breaks a rule.
    pub fn invalid(field: &str, value: &Value, detail: &str) -> Cause {
        let body = format!("Invalid value: {}", go_value(value));
        Cause::new("FieldValueInvalid", &body, field, detail)
    }

    /// A field of the wrong JSON type, as CRD schema validation reports it.
    pub fn type_invalid(field: &str, actual: &str, expected: &str) -> Cause {
        let body = format!("Invalid value: \"{actual}\"");
        let detail = format!("{field} in body must be of type {expected}: \"{actual}\"");
        Cause::new("FieldValueTypeInvalid", &body, field, &detail)
    }

    /// A value outside an enumeration.
    pub fn not_supported(field: &str, value: &Value, supported: &[Value]) -> Cause {
        let supported: Vec<String> = supported.iter().map(go_value).collect();
        let body = format!("Unsupported value: {}", go_value(value));
        let detail = format!("supported values: {}", supported.join(", "));
        Cause::new("FieldValueNotSupported", &body, field, &detail)
    }

    /// A field that must not be set.
    pub fn forbidden(field: &str, detail: &str) -> Cause {
        Cause::new("FieldValueForbidden", "Forbidden", field, detail)
    }

    fn new(reason: &'static str, body: &str, field: &str, detail: &str) -> Cause {
        let message = if detail.is_empty() {
            body.to_owned()
        } else {
            format!("{body}: {detail}")
        };
        Cause {
            reason,
            message,
            field: field.to_owned(),
        }
    }

    fn to_json(&self) -> Value {
        json!({"reason": self.reason, "message": self.message, "field": self.field})
    }
}

/// A value as Go's field errors print it: strings quoted, the rest as JSON.
fn go_value(value: &Value) -> String {
    value.to_string()
}

/// `details` naming one object: empty fields are left out, as the server does.
fn details(group: &str, kind: &str, name: &str) -> Map<String, Value> {
    [("name", name), ("group", group), ("kind", kind)]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| (key.to_owned(), json!(value)))
        .collect()
}

impl Status {
    fn failure(code: u16, reason: &'static str, message: impl Into<String>) -> Status {
        Status {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 404 for a named object that does not exist: `workflows.argoproj.io "x" not found`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Status {
        Status {
            details: Some(Value::Object(details(group, plural, name))),
            ..Status::failure(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", qualify(plural, group)),
            )
        }
    }

    /// 404 for a path that names no resource (unknown group, version or plural).
    pub fn resource_not_found() -> Status {
        Status {
            details: Some(json!({})),
            ..Status::failure(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        }
    }

    /// 409 for a create whose name is taken.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Status {
        Status {
            details: Some(Value::Object(details(group, plural, name))),
            ..Status::failure(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", qualify(plural, group)),
            )
        }
    }

    /// 422 listing what is wrong with an object of `kind`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: &[Cause]) -> Status {
        let errors: Vec<String> = causes
            .iter()
            .map(|cause| format!("{}: {}", cause.field, cause.message))
            .collect();
        let errors = match errors.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let mut details = details(group, kind, name);
        details.insert("causes".into(), causes.iter().map(Cause::to_json).collect());
        Status {
            details: Some(Value::Object(details)),
            ..Status::failure(
                422,
                "Invalid",
                format!("{} \"{name}\" is invalid: {errors}", qualify(kind, group)),
            )
        }
    }

    /// 400 for a request the server cannot make sense of.
    pub fn bad_request(message: impl Into<String>) -> Status {
        Status::failure(400, "BadRequest", message)
    }

    /// 405 for a method the path does not support.
    pub fn method_not_allowed() -> Status {
        Status {
            details: Some(json!({})),
            ..Status::failure(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        }
    }

    /// 500 `Internal error occurred: <message>`.
    pub fn internal_error(message: &str) -> Status {
        Status {
            details: Some(json!({"causes": [{"message": message}]})),
            ..Status::failure(
                500,
                "InternalError",
                format!("Internal error occurred: {message}"),
            )
        }
    }

    /// 429 as API Priority and Fairness answers it; the response also carries
    /// `Retry-After: <retry_after_secs>`.
    pub fn too_many_requests(retry_after_secs: u64) -> Status {
        Status {
            details: Some(json!({"retryAfterSeconds": retry_after_secs})),
            ..Status::failure(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.",
            )
        }
    }

    /// The Status the API server sends with an HTTP `code` for no more
    /// specific reason (what [`Fault::Status`] answers).
    pub fn for_code(code: u16) -> Status {
        match code {
            429 => Status::too_many_requests(1),
            500 => Status::internal_error("injected fault"),
            503 => Status::failure(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            504 => Status::failure(
                504,
                "Timeout",
                "Timeout: request did not complete within requested timeout - context deadline exceeded",
            ),
            _ => {
                let reason = match code {
                    400 => "BadRequest",
                    401 => "Unauthorized",
                    403 => "Forbidden",
                    404 => "NotFound",
                    405 => "MethodNotAllowed",
                    409 => "Conflict",
                    410 => "Expired",
                    413 => "RequestEntityTooLarge",
                    415 => "UnsupportedMediaType",
                    422 => "Invalid",
                    _ => "",
                };
                Status::failure(
                    code,
                    reason,
                    format!("an error on the server (\"injected fault\") has prevented the request from succeeding (HTTP {code})"),
                )
            }
        }
    }

    /// The exact JSON body.
    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            body["reason"] = json!(self.reason);
        }
        if let Some(details) = &self.details {
            body["details"] = details.clone();
        }
        body
    }

    fn retry_after_secs(&self) -> Option<u64> {
        self.details.as_ref()?.get("retryAfterSeconds")?.as_u64()
    }
}

impl IntoResponse for Status {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (code, Json(self.to_json())).into_response();
        if let Some(seconds) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

// ---------------------------------------------------------------------------
// Server state
// ---------------------------------------------------------------------------

struct Shared {
    addr: SocketAddr,
    store: Mutex<Store>,
    faults: Mutex<Faults>,
    log: Mutex<Vec<(String, String, u16)>>,
    create_attempts: AtomicUsize,
}

#[derive(Default)]
struct Faults {
    /// One entry per write request still to fail.
    queued: VecDeque<Fault>,
    /// Fault for every request, until recovered.
    every: Option<Fault>,
    /// Writes answer 503.
    down: bool,
}

impl Faults {
    /// The fault, if any, for the next request with this method.
    fn take(&mut self, method: &Method) -> Option<Fault> {
        if let Some(fault) = &self.every {
            return Some(fault.clone());
        }
        if *method == Method::GET || *method == Method::HEAD {
            return None;
        }
        if self.down {
            return Some(Fault::Status(503));
        }
        self.queued.pop_front()
    }
}

/// Where an object is stored; cluster-scoped objects have an empty namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ObjectKey {
    plural: String,
    namespace: String,
    name: String,
}

impl ObjectKey {
    fn new(plural: &str, namespace: &str, name: &str) -> ObjectKey {
        ObjectKey {
            plural: plural.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

struct Store {
    /// Last `resourceVersion` handed out (etcd's revision in a real cluster).
    revision: u64,
    objects: BTreeMap<ObjectKey, Value>,
}

impl Store {
    fn new() -> Store {
        let mut store = Store {
            revision: 0,
            objects: BTreeMap::new(),
        };
        for namespace in INITIAL_NAMESPACES {
            store.add_namespace(namespace);
        }
        store
    }

    fn add_namespace(&mut self, name: &str) {
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

/// The parts of an HTTP request the double looks at.
struct ApiRequest {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
}

impl ApiRequest {
    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// `?dryRun=All` → true; Kubernetes knows no other value.
    fn dry_run(&self) -> Result<bool, Status> {
        match self.query("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(Status::bad_request(format!(
                "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
            ))),
        }
    }
}

impl Shared {
    fn new(addr: SocketAddr) -> Shared {
        Shared {
            addr,
            store: Mutex::new(Store::new()),
            faults: Mutex::default(),
            log: Mutex::default(),
            create_attempts: AtomicUsize::new(0),
        }
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().expect("object store")
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().expect("fault settings")
    }

    fn record(&self, request: &ApiRequest, status: u16) {
        self.log.lock().expect("request log").push((
            request.method.to_string(),
            request.path.clone(),
            status,
        ));
    }

    /// Handles a request that is not faulted, and logs the answer.
    fn answer(&self, request: &ApiRequest) -> Response {
        let response = self
            .route(request)
            .unwrap_or_else(IntoResponse::into_response);
        self.record(request, response.status().as_u16());
        response
    }

    fn route(&self, request: &ApiRequest) -> Result<Response, Status> {
        let segments: Vec<&str> = request.path.split('/').filter(|s| !s.is_empty()).collect();
        let get = request.method == Method::GET;
        let aggregated = wants_aggregated(&request.headers);
        match segments.as_slice() {
            ["version"] if get => Ok(Json(version_info()).into_response()),
            ["healthz" | "livez" | "readyz"] if get => Ok("ok".into_response()),
            ["api"] if get && aggregated => Ok(aggregated_discovery(true)),
            ["api"] if get => Ok(Json(api_versions(self.addr)).into_response()),
            ["apis"] if get && aggregated => Ok(aggregated_discovery(false)),
            ["apis"] if get => Ok(Json(api_group_list()).into_response()),
            ["apis", group] if get => {
                let mut group = api_group(group).ok_or_else(Status::resource_not_found)?;
                group["kind"] = json!("APIGroup");
                group["apiVersion"] = json!("v1");
                Ok(Json(group).into_response())
            }
            ["api", "v1"] if get => discovery_list("", "v1"),
            ["apis", group, version] if get => discovery_list(group, version),
            ["api", "v1", rest @ ..] => self.resource_request(request, "", "v1", rest),
            ["apis", group, version, rest @ ..] => {
                self.resource_request(request, group, version, rest)
            }
            _ => Err(Status::resource_not_found()),
        }
    }

    /// A request under a group version: `[namespaces/<ns>/]<plural>[/<name>]`.
    fn resource_request(
        &self,
        request: &ApiRequest,
        group: &str,
        version: &str,
        rest: &[&str],
    ) -> Result<Response, Status> {
        let (namespace, plural, name) = match rest {
            ["namespaces", namespace, plural] => (Some(*namespace), *plural, None),
            ["namespaces", namespace, plural, name] => (Some(*namespace), *plural, Some(*name)),
            [plural] => (None, *plural, None),
            [plural, name] => (None, *plural, Some(*name)),
            _ => return Err(Status::resource_not_found()),
        };
        let resource =
            Resource::find(group, version, plural).ok_or_else(Status::resource_not_found)?;
        // A namespaced resource is listed across namespaces without one, but its
        // objects are only addressed inside one; a cluster-scoped one never has one.
        let misplaced = if resource.namespaced {
            namespace.is_none() && (name.is_some() || request.method != Method::GET)
        } else {
            namespace.is_some()
        };
        if misplaced {
            return Err(Status::resource_not_found());
        }
        let namespace = namespace.unwrap_or("");
        match (&request.method, name) {
            (&Method::GET, None) => self.list(request, resource, namespace),
            (&Method::GET, Some(name)) => self.get(resource, namespace, name),
            (&Method::POST, None) => self.create(request, resource, namespace),
            (&Method::DELETE, Some(name)) => self.delete(resource, namespace, name),
            _ => Err(Status::method_not_allowed()),
        }
    }

    fn get(&self, resource: &Resource, namespace: &str, name: &str) -> Result<Response, Status> {
        let store = self.store();
        let object = store
            .objects
            .get(&ObjectKey::new(resource.plural, namespace, name))
            .ok_or_else(|| Status::not_found(resource.group, resource.plural, name))?;
        Ok(Json(object.clone()).into_response())
    }

    /// Lists one namespace, or all when `namespace` is empty.
    fn list(
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
    fn delete(&self, resource: &Resource, namespace: &str, name: &str) -> Result<Response, Status> {
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
    fn create(
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

fn discovery_list(group: &str, version: &str) -> Result<Response, Status> {
    api_resource_list(group, version)
        .map(|list| Json(list).into_response())
        .ok_or_else(Status::resource_not_found)
}

// ---------------------------------------------------------------------------
// Create: decoding and system fields
// ---------------------------------------------------------------------------

/// The request body as a JSON object (JSON or YAML, per `Content-Type`).
fn decode(request: &ApiRequest) -> Result<Value, Status> {
    let content_type = request
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/json");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    let parsed = match media_type {
        "application/json" => serde_json::from_slice::<Value>(&request.body).map_err(|e| e.to_string()),
        "application/yaml" => serde_yaml_ng::from_slice::<Value>(&request.body).map_err(|e| e.to_string()),
        _ => {
            return Err(Status::failure(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf",
            ))
        }
    };
    match parsed {
        Ok(object @ Value::Object(_)) => Ok(object),
        Ok(other) => Err(cannot_unmarshal(
            &other,
            "Object",
            "map[string]interface {}",
        )),
        Err(error) => Err(Status::bad_request(format!(
            "couldn't get version/kind; json parse error: {error}"
        ))),
    }
}

/// 400 the way Go's JSON decoder words a type mismatch.
fn cannot_unmarshal(value: &Value, field: &str, go_type: &str) -> Status {
    let json_type = match value {
        Value::Array(_) => "array",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::Object(_) => "object",
        Value::String(_) => "string",
        Value::Null => "null",
    };
    Status::bad_request(format!(
        "json: cannot unmarshal {json_type} into Go struct field {field} of type {go_type}"
    ))
}

/// `metadata` must decode as an `ObjectMeta`: an object, with string fields
/// and string-to-string labels and annotations.
fn check_metadata_types(resource: &Resource, metadata: &Value) -> Result<(), Status> {
    let Some(fields) = metadata.as_object() else {
        let field = format!("{}.metadata", resource.kind);
        return Err(cannot_unmarshal(metadata, &field, "v1.ObjectMeta"));
    };
    for field in ["name", "generateName", "namespace", "resourceVersion"] {
        if let Some(value) = fields.get(field).filter(|v| !v.is_string() && !v.is_null()) {
            let field = format!("ObjectMeta.metadata.{field}");
            return Err(cannot_unmarshal(value, &field, "string"));
        }
    }
    for field in ["labels", "annotations"] {
        let map = &fields.get(field).unwrap_or(&Value::Null);
        let not_a_string = match map {
            Value::Null => None,
            Value::Object(entries) => entries.values().find(|v| !v.is_string()),
            other => Some(*other),
        };
        if let Some(value) = not_a_string {
            let field = format!("ObjectMeta.metadata.{field}");
            return Err(cannot_unmarshal(value, &field, "string"));
        }
    }
    Ok(())
}

/// `apiVersion` and `kind` must be present and name the resource of the URL.
fn check_type_fields(resource: &Resource, object: &Value) -> Result<(), Status> {
    let body = object.to_string();
    let kind = object["kind"].as_str().unwrap_or("");
    if kind.is_empty() {
        return Err(Status::bad_request(format!(
            "Object 'Kind' is missing in '{body}'"
        )));
    }
    let api_version = object["apiVersion"].as_str().unwrap_or("");
    if api_version.is_empty() {
        return Err(Status::bad_request(format!(
            "Object 'apiVersion' is missing in '{body}'"
        )));
    }
    let expected = resource.api_version();
    if api_version != expected {
        return Err(Status::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({expected})"
        )));
    }
    if kind != resource.kind {
        return Err(Status::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {expected_kind}: the object provided is unrecognized (must be of type {expected_kind})",
            version = resource.version,
            expected_kind = resource.kind,
        )));
    }
    Ok(())
}

/// A CRD's structural schema prunes unknown fields; at the top level only these are known.
fn prune_unknown_top_level_fields(object: &mut Value) {
    if let Some(fields) = object.as_object_mut() {
        fields.retain(|key, _| {
            matches!(
                key.as_str(),
                "apiVersion" | "kind" | "metadata" | "spec" | "status"
            )
        });
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

// ---------------------------------------------------------------------------
// Create: validation
// ---------------------------------------------------------------------------

/// Every rule the object breaks.
fn validate(resource: &Resource, object: &Value) -> Vec<Cause> {
    let mut causes = validate_object_meta(&object["metadata"]);
    if let Some(argo) = &resource.argo {
        causes.extend(schema_causes(&ARGO_VALIDATORS[argo.definition], object));
        if let Some(path) = argo.workflow_spec {
            let spec = path.split('.').fold(object, |node, key| &node[key]);
            causes.extend(workflow_spec_rule(path, spec));
        }
    }
    causes
}

const DNS1123_SUBDOMAIN_ERROR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME_ERROR: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_ERROR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
/// Total size allowed for all annotations.
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

static DNS1123_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").expect("regex")
});
static QUALIFIED_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").expect("regex"));
static LABEL_VALUE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$").expect("regex"));

/// `ObjectMeta` rules: the name, label keys and values, annotation keys and size.
fn validate_object_meta(metadata: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    match metadata["name"].as_str().unwrap_or("") {
        "" => causes.push(Cause::required(
            "metadata.name",
            "name or generateName is required",
        )),
        name => {
            for problem in dns1123_subdomain_problems(name) {
                causes.push(Cause::invalid("metadata.name", &json!(name), &problem));
            }
        }
    }
    for field in ["labels", "annotations"] {
        let Some(entries) = metadata[field].as_object() else {
            continue;
        };
        let path = format!("metadata.{field}");
        for (key, value) in entries {
            // Annotation keys are checked lower-cased, label keys as they are.
            let checked_key = if field == "labels" {
                key.clone()
            } else {
                key.to_lowercase()
            };
            for problem in qualified_name_problems(&checked_key) {
                causes.push(Cause::invalid(&path, &json!(key), &problem));
            }
            let text = value.as_str().unwrap_or_default();
            if field == "labels" {
                if text.len() > 63 {
                    causes.push(Cause::invalid(
                        &path,
                        value,
                        "must be no more than 63 characters",
                    ));
                }
                if !LABEL_VALUE.is_match(text) {
                    causes.push(Cause::invalid(&path, value, LABEL_VALUE_ERROR));
                }
            }
        }
        if field == "annotations" {
            let size: usize = entries
                .iter()
                .map(|(key, value)| key.len() + value.as_str().map_or(0, str::len))
                .sum();
            if size > ANNOTATIONS_MAX_BYTES {
                causes.push(Cause::new(
                    "FieldValueTooLong",
                    "Too long",
                    &path,
                    &format!("may not be more than {ANNOTATIONS_MAX_BYTES} bytes"),
                ));
            }
        }
    }
    causes
}

fn dns1123_subdomain_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > 253 {
        problems.push("must be no more than 253 characters".to_owned());
    }
    if !DNS1123_SUBDOMAIN.is_match(value) {
        problems.push(DNS1123_SUBDOMAIN_ERROR.to_owned());
    }
    problems
}

/// Kubernetes' `IsQualifiedName`: `[prefix/]name`, the rule for label and annotation keys.
fn qualified_name_problems(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split('/').collect::<Vec<_>>().as_slice() {
        [name] => (None, *name),
        [prefix, name] => (Some(*prefix), *name),
        _ => {
            return vec![format!(
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )]
        }
    };
    let mut problems = Vec::new();
    match prefix {
        Some("") => problems.push("prefix part must be non-empty".to_owned()),
        Some(prefix) => problems.extend(
            dns1123_subdomain_problems(prefix)
                .into_iter()
                .map(|problem| format!("prefix part {problem}")),
        ),
        None => {}
    }
    if name.is_empty() {
        problems.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        problems.push("name part must be no more than 63 characters".to_owned());
    }
    if !QUALIFIED_NAME.is_match(name) {
        problems.push(QUALIFIED_NAME_ERROR.to_owned());
    }
    problems
}

/// The JSON schema definitions of `tests/fixtures/argo/workflows.schema.json`,
/// widened where Argo's generated schema is narrower than what Kubernetes and
/// Argo actually decode, so that real manifests validate:
/// - `IntOrString` takes integers too (`retryStrategy.limit: 10`);
/// - `Quantity` takes numbers too (`cpu: 1`);
/// - parameter values and defaults are Argo `AnyString`s, which take numbers
///   and booleans too.
static ARGO_DEFINITIONS: LazyLock<Value> = LazyLock::new(|| {
    let mut schema: Value =
        serde_json::from_str(include_str!("../../fixtures/argo/workflows.schema.json"))
            .expect("the Argo JSON schema is JSON");
    let mut definitions = schema["definitions"].take();
    definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["type"] =
        json!(["integer", "string"]);
    definitions["io.k8s.apimachinery.pkg.api.resource.Quantity"]["type"] =
        json!(["number", "string"]);
    let any_string = json!(["string", "number", "boolean"]);
    for (definition, property) in [
        ("io.argoproj.workflow.v1alpha1.Parameter", "value"),
        ("io.argoproj.workflow.v1alpha1.Parameter", "default"),
        ("io.argoproj.workflow.v1alpha1.ValueFrom", "default"),
    ] {
        definitions[definition]["properties"][property]["type"] = any_string.clone();
    }
    definitions
});

/// One compiled validator per Argo kind in the catalog, built once per test binary.
static ARGO_VALIDATORS: LazyLock<HashMap<&'static str, Validator>> = LazyLock::new(|| {
    RESOURCES
        .iter()
        .filter_map(|resource| resource.argo.as_ref())
        .map(|argo| {
            let mut schema = json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$ref": format!("#/definitions/{}", argo.definition),
            });
            schema["definitions"] = ARGO_DEFINITIONS.clone();
            let validator = jsonschema::validator_for(&schema).unwrap_or_else(|error| {
                panic!("compile the schema of {}: {error}", argo.definition)
            });
            (argo.definition, validator)
        })
        .collect()
});

/// Schema violations as the API server reports CRD schema violations.
fn schema_causes(validator: &Validator, object: &Value) -> Vec<Cause> {
    validator
        .iter_errors(object)
        .map(|error| {
            let field = field_path(object, error.instance_path().as_str());
            let value = error.instance();
            match error.kind() {
                ValidationErrorKind::Required { property } => {
                    let property = property.as_str().unwrap_or_default();
                    let field = if field.is_empty() {
                        property.to_owned()
                    } else {
                        format!("{field}.{property}")
                    };
                    Cause::required(&field, "")
                }
                ValidationErrorKind::Type { kind } => {
                    let expected = match kind {
                        TypeKind::Single(expected) => expected.to_string(),
                        TypeKind::Multiple(expected) => expected
                            .iter()
                            .map(|t| t.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                    };
                    Cause::type_invalid(&field, json_type(value), &expected)
                }
                ValidationErrorKind::Enum { options } => Cause::not_supported(
                    &field,
                    value,
                    options.as_array().map(Vec::as_slice).unwrap_or_default(),
                ),
                _ => Cause::invalid(&field, value, &error.to_string()),
            }
        })
        .collect()
}

/// JSON type names as OpenAPI validation reports them.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `spec.templates[0].container` for the JSON pointer `/spec/templates/0/container`.
fn field_path(object: &Value, pointer: &str) -> String {
    let mut path = String::new();
    let mut node = Some(object);
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        node = match node {
            Some(Value::Array(items)) => {
                path.push_str(&format!("[{segment}]"));
                segment
                    .parse::<usize>()
                    .ok()
                    .and_then(|index| items.get(index))
            }
            other => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&segment);
                other.and_then(|node| node.get(&segment))
            }
        };
    }
    path
}

/// Argo's rule for a `WorkflowSpec` that will run: it brings its own templates
/// or references a WorkflowTemplate, not both.
fn workflow_spec_rule(path: &str, spec: &Value) -> Option<Cause> {
    let has_templates = spec["templates"].as_array().is_some_and(|t| !t.is_empty());
    let has_reference = !spec["workflowTemplateRef"].is_null();
    let field = format!("{path}.templates");
    match (has_templates, has_reference) {
        (false, false) => Some(Cause::required(
            &field,
            "a workflow needs templates or a workflowTemplateRef",
        )),
        (true, true) => Some(Cause::forbidden(
            &field,
            "Templates is invalid field in spec if workflow referred WorkflowTemplate reference",
        )),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// List selectors
// ---------------------------------------------------------------------------

/// A parsed `labelSelector`: every requirement must hold.
struct LabelSelector(Vec<Requirement>);

enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl LabelSelector {
    fn parse(selector: &str) -> Result<LabelSelector, Status> {
        split_outside_parentheses(selector)
            .into_iter()
            .map(str::trim)
            .filter(|term| !term.is_empty())
            .map(Requirement::parse)
            .collect::<Result<_, _>>()
            .map(LabelSelector)
    }

    fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.0.iter().all(|requirement| {
            let label = |key: &str| labels[key].as_str().map(str::to_owned);
            match requirement {
                Requirement::In(key, values) => label(key).is_some_and(|v| values.contains(&v)),
                Requirement::NotIn(key, values) => !label(key).is_some_and(|v| values.contains(&v)),
                Requirement::Exists(key) => label(key).is_some(),
                Requirement::DoesNotExist(key) => label(key).is_none(),
            }
        })
    }
}

impl Requirement {
    fn parse(term: &str) -> Result<Requirement, Status> {
        let invalid = || Status::bad_request(format!("unable to parse requirement: {term}"));
        let key = |key: &str| {
            let key = key.trim();
            if key.is_empty() || !qualified_name_problems(key).is_empty() {
                Err(invalid())
            } else {
                Ok(key.to_owned())
            }
        };
        let values = |values: &str| -> Result<Vec<String>, Status> {
            let inner = values
                .trim()
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(invalid)?;
            Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
        };
        if let Some(rest) = term.strip_prefix('!') {
            return Ok(Requirement::DoesNotExist(key(rest)?));
        }
        if let Some((k, v)) = term.split_once(" notin ") {
            return Ok(Requirement::NotIn(key(k)?, values(v)?));
        }
        if let Some((k, v)) = term.split_once(" in ") {
            return Ok(Requirement::In(key(k)?, values(v)?));
        }
        if let Some((k, v)) = term.split_once("!=") {
            return Ok(Requirement::NotIn(key(k)?, vec![v.trim().to_owned()]));
        }
        if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            return Ok(Requirement::In(key(k)?, vec![v.trim().to_owned()]));
        }
        Ok(Requirement::Exists(key(term)?))
    }
}

fn split_outside_parentheses(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (index, character) in text.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A parsed `fieldSelector` over `metadata.name` and `metadata.namespace`,
/// the fields every resource supports.
struct FieldSelector(Vec<(&'static str, bool, String)>);

impl FieldSelector {
    fn parse(selector: &str) -> Result<FieldSelector, Status> {
        let mut terms = Vec::new();
        for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((field, value)) = term.split_once("!=") {
                (field, false, value)
            } else if let Some((field, value)) =
                term.split_once("==").or_else(|| term.split_once('='))
            {
                (field, true, value)
            } else {
                return Err(Status::bad_request(format!(
                    "invalid selector: '{selector}'; can't understand '{term}'"
                )));
            };
            let field = match field.trim() {
                "metadata.name" => "name",
                "metadata.namespace" => "namespace",
                other => {
                    return Err(Status::bad_request(format!(
                        "field label not supported: {other}"
                    )))
                }
            };
            terms.push((field, equal, value.trim().to_owned()));
        }
        Ok(FieldSelector(terms))
    }

    fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            (object["metadata"][*field].as_str().unwrap_or("") == value) == *equal
        })
    }
}

// ---------------------------------------------------------------------------
// HTTP plumbing
// ---------------------------------------------------------------------------

/// The one handler: counts creates, applies faults, then answers.
async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = ApiRequest {
        query: uri
            .query()
            .map(|query| {
                url::form_urlencoded::parse(query.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default(),
        path: uri.path().to_owned(),
        method,
        headers,
        body,
    };
    if request.method == Method::POST {
        shared.create_attempts.fetch_add(1, Ordering::SeqCst);
    }
    let fault = shared.faults().take(&request.method);
    match fault {
        None => shared.answer(&request),
        Some(Fault::Hang(delay)) => {
            // Finish even if the client goes away meanwhile, like a server
            // that commits a write its client no longer waits for.
            let answered = tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                shared.answer(&request)
            });
            answered.await.expect("answer after the hang")
        }
        Some(Fault::Drop) => {
            connection.cut();
            shared.record(&request, NO_RESPONSE);
            // Never sent: writing to the cut connection fails, so it closes.
            StatusCode::OK.into_response()
        }
        Some(Fault::TooManyRequests { retry_after_secs }) => {
            let response = Status::too_many_requests(retry_after_secs).into_response();
            shared.record(&request, response.status().as_u16());
            response
        }
        Some(Fault::Status(code)) => {
            let response = Status::for_code(code).into_response();
            shared.record(&request, response.status().as_u16());
            response
        }
    }
}

/// Accepts TCP connections that a handler can cut ([`Fault::Drop`]).
struct CuttableListener(TcpListener);

impl axum::serve::Listener for CuttableListener {
    type Io = CuttableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CuttableStream, SocketAddr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.0).await;
        let stream = CuttableStream {
            inner: stream,
            cut: Arc::default(),
        };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A TCP stream that, once cut, reads end-of-stream and fails every write, so
/// the HTTP server closes it without sending anything more.
struct CuttableStream {
    inner: TcpStream,
    cut: Arc<AtomicBool>,
}

impl CuttableStream {
    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

fn connection_cut() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "cut by Fault::Drop")
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.is_cut() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.is_cut() {
            return Poll::Ready(Err(connection_cut()));
        }
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_cut() {
            return Poll::Ready(Err(connection_cut()));
        }
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Handle on the connection a request arrived on.
#[derive(Clone)]
struct Connection(Arc<AtomicBool>);

impl Connection {
    fn cut(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, CuttableListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, CuttableListener>) -> Self {
        Connection(Arc::clone(&stream.io().cut))
    }
}
