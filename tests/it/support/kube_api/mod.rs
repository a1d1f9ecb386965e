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
//!   resources in the catalog (`catalog.rs`), namespaced under `.../namespaces/<ns>/<plural>`;
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
//!
//! Where things are:
//! - `mod.rs`: [`KubeApi`] (start, kubeconfig, namespaces, faults, what was
//!   stored and requested) and [`Fault`];
//! - `catalog.rs`: the resources served, group/version helpers, Argo's JSON schema;
//! - `discovery.rs`: `/api`, `/apis` (plain and aggregated) and `/version`;
//! - `status.rs`: the `meta/v1` [`Status`] and [`Cause`] of error answers;
//! - `store.rs`: the object store and create, get, list and delete;
//! - `validate.rs`: decoding a body and the rules an object must meet;
//! - `selectors.rs`: label and field selectors of a list;
//! - `faults.rs`: pending faults and the connections [`Fault::Drop`] cuts;
//! - `server.rs`: the HTTP server thread, the handler and routing.

mod catalog;
mod discovery;
mod faults;
mod selectors;
mod server;
mod status;
mod store;
mod validate;

use std::{
    path::{Path, PathBuf},
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use serde_json::Value;
use tokio::sync::oneshot;

use faults::Faults;
use server::Shared;
// The submodules import these through this re-export, so it is used even in a
// crate that includes the support without using them (a bench).
pub use status::{Cause, Status};
use store::ObjectKey;

/// Status recorded in [`KubeApi::request_log`] for a request that got no
/// response because a [`Fault::Drop`] closed its connection.
pub const NO_RESPONSE: u16 = 0;

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
    /// Answer with this status code, `reason` and `message` (say, the 500
    /// etcd gives for an object over its size limit).
    Answer {
        code: u16,
        reason: &'static str,
        message: &'static str,
    },
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
        let shutdown = server::spawn(listener, Arc::clone(&shared));
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

    /// Makes every write request fail with `fault` until [`Self::recover`]
    /// (reads and discovery keep working).
    pub fn fail_writes(&self, fault: Fault) {
        self.shared.faults().writes = Some(fault);
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

    /// Stores `object` as if created by someone else (no validation), under
    /// its `metadata.namespace`/`metadata.name`.
    pub fn put(&self, plural: &str, object: Value) {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        self.shared
            .store()
            .objects
            .insert(ObjectKey::new(plural, &ns, &name), object);
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
