//! The HTTP side: the server thread, the one handler (faults first, then an
//! answer) and routing of paths to discovery and to the object store.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use axum::{
    extract::{ConnectInfo, State},
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Json, Router,
};
use bytes::Bytes;
use serde_json::json;
use tokio::{net::TcpListener, sync::oneshot};

use super::catalog::Resource;
use super::discovery::{
    aggregated_discovery, api_group, api_group_list, api_versions, discovery_list, version_info,
    wants_aggregated,
};
use super::faults::{Connection, CuttableListener, Faults};
use super::store::Store;
use super::Status;
use super::{Fault, NO_RESPONSE};

/// Serves `listener` (bound and non-blocking) from a thread of its own with
/// its own runtime, until the returned sender is used or dropped.
pub(super) fn spawn(listener: std::net::TcpListener, shared: Arc<Shared>) -> oneshot::Sender<()> {
    let app = Router::new()
        .fallback(handle)
        .with_state(shared)
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
    shutdown
}

/// What the server and the [`super::KubeApi`] handle share.
pub(super) struct Shared {
    pub(super) addr: SocketAddr,
    store: Mutex<Store>,
    faults: Mutex<Faults>,
    /// Every answer as `(method, path, status)`; see [`super::KubeApi::request_log`].
    pub(super) log: Mutex<Vec<(String, String, u16)>>,
    pub(super) create_attempts: AtomicUsize,
}

/// The parts of an HTTP request the double looks at.
pub(super) struct ApiRequest {
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) query: Vec<(String, String)>,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl ApiRequest {
    pub(super) fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// `?dryRun=All` → true; Kubernetes knows no other value.
    pub(super) fn dry_run(&self) -> Result<bool, Status> {
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
    pub(super) fn new(addr: SocketAddr) -> Shared {
        Shared {
            addr,
            store: Mutex::new(Store::new()),
            faults: Mutex::default(),
            log: Mutex::default(),
            create_attempts: AtomicUsize::new(0),
        }
    }

    pub(super) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().expect("object store")
    }

    pub(super) fn faults(&self) -> MutexGuard<'_, Faults> {
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
}

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
        Some(Fault::Answer {
            code,
            reason,
            message,
        }) => {
            let response = Status::failure(code, reason, message).into_response();
            shared.record(&request, response.status().as_u16());
            response
        }
    }
}
