//! Submission to the Kubernetes API with the `kube` client: any
//! apiVersion/kind (resolved by discovery, cached), created with a plain
//! POST so the reply's status code, `Status` body and `Retry-After` header
//! are all seen.
//!
//! What an answer means is [`classify`]'s decision; a timeout or a
//! connection error is transient (retried, `Retry-After` honoured).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use kube::api::{ApiResource, DynamicObject, GetParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{GroupVersionKind, Request};
use kube::discovery::Scope;
use kube::{Client, Config, Resource};
use serde_json::{json, Value};

use super::classify::{classify, Cause, Verdict};
use super::object::{check, collision, same_event};
use super::{SubmitError, Submitted, Submitter};

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("no cluster configured ({0}); set KUBECONFIG, pass --kubeconfig, run in a cluster, or use --dry-run to write to the outbox")]
    NoCluster(String),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(String),
}

/// A kind as the API serves it.
struct Resolved {
    resource: ApiResource,
    namespaced: bool,
}

pub struct KubeSubmitter {
    client: Client,
    namespace: String,
    server: String,
    /// apiVersion → kind → resource and whether it is namespaced (nested
    /// so that a lookup borrows, as it does for every object).
    resources: RwLock<HashMap<String, HashMap<String, Arc<Resolved>>>>,
}

impl KubeSubmitter {
    /// From `kubeconfig` (and `context`), else in-cluster config or
    /// `$KUBECONFIG`/`~/.kube/config`. `timeout` bounds every request.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
        namespace: &str,
        timeout: Duration,
    ) -> Result<Self, KubeError> {
        let mut config = match kubeconfig {
            Some(path) => {
                let err = |message: String| KubeError::Kubeconfig {
                    path: path.display().to_string(),
                    message,
                };
                let kc = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
                let opts = KubeConfigOptions {
                    context: context.map(str::to_string),
                    ..Default::default()
                };
                Config::from_custom_kubeconfig(kc, &opts)
                    .await
                    .map_err(|e| err(e.to_string()))?
            }
            None => Config::infer()
                .await
                .map_err(|e| KubeError::NoCluster(e.to_string()))?,
        };
        // Retries are ours (the trigger's policy, Retry-After honoured,
        // outcome reported to the source); kube's own would hide them.
        config.default_retry = false;
        config.connect_timeout = Some(timeout);
        config.read_timeout = Some(timeout);
        config.write_timeout = Some(timeout);
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| KubeError::Client(e.to_string()))?;
        Ok(KubeSubmitter {
            client,
            namespace: namespace.to_string(),
            server,
            resources: RwLock::new(HashMap::new()),
        })
    }

    async fn resource(&self, api_version: &str, kind: &str) -> Result<Arc<Resolved>, SubmitError> {
        let known = (self.resources.read())
            .unwrap_or_else(|e| e.into_inner())
            .get(api_version)
            .and_then(|kinds| kinds.get(kind))
            .cloned();
        if let Some(r) = known {
            return Ok(r);
        }
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        // A kind the API does not serve (yet: a CRD being installed, a
        // typo fixed by a sensor reload) is the cluster's state, not the
        // event's fault: retried, shown on /readyz, never dead-lettered.
        let not_served = |detail: String| {
            SubmitError::Infrastructure {
            message: format!(
                "the API server does not serve {kind} in {api_version} (is the CRD installed?): {detail}"
            ),
            retry_after: None,
        }
        };
        let (ar, caps) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) if s.code == 404 || s.code == 0 => {
                    not_served(s.message.clone())
                }
                kube::Error::Discovery(d) => not_served(d.to_string()),
                other => classify_client_error(other),
            })?;
        let r = Arc::new(Resolved {
            resource: ar,
            namespaced: caps.scope == Scope::Namespaced,
        });
        (self.resources.write())
            .unwrap_or_else(|e| e.into_inner())
            .entry(api_version.to_string())
            .or_default()
            .insert(kind.to_string(), r.clone());
        Ok(r)
    }
}

impl KubeSubmitter {
    /// A 409 `AlreadyExists` counts as done only when the object there is
    /// this event's (its event-key annotation); otherwise it is a collision.
    async fn confirm_existing(
        &self,
        collection: &str,
        name: &str,
        ours: &Value,
    ) -> Result<Submitted, SubmitError> {
        let req = Request::new(collection)
            .get(name, &GetParams::default())
            .map_err(|e| SubmitError::rejected(400, "BadRequest", e.to_string()))?;
        let existing: Value = self
            .client
            .request(req)
            .await
            .map_err(classify_client_error)?;
        if same_event(ours, &existing) {
            Ok(Submitted::Existing)
        } else {
            Err(collision(ours, &existing))
        }
    }
}

fn classify_client_error(e: kube::Error) -> SubmitError {
    match e {
        kube::Error::Api(s) => {
            let cause = match classify(s.code, &s.reason, &s.message) {
                Verdict::Failed(cause) => cause,
                Verdict::Created | Verdict::Existing => Cause::Transient,
            };
            let status = serde_json::to_value(&*s).unwrap_or_default();
            let message = format!("{} {}: {}", s.code, s.reason, s.message);
            SubmitError::of(cause, s.code, &s.reason, message, status, None)
        }
        // Connection refused, reset, timeout, TLS…: the API is not there.
        other => SubmitError::Infrastructure {
            message: other.to_string(),
            retry_after: None,
        },
    }
}

#[async_trait]
impl Submitter for KubeSubmitter {
    async fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, SubmitError> {
        let r = self.resource(api_version, kind).await?;
        let ns = namespace.unwrap_or(&self.namespace);
        let url = DynamicObject::url_path(&r.resource, r.namespaced.then_some(ns));
        let req = Request::new(url)
            .get(name, &GetParams::default())
            .map_err(|e| SubmitError::rejected(400, "BadRequest", e.to_string()))?;
        self.client
            .request::<Value>(req)
            .await
            .map_err(classify_client_error)
    }

    async fn submit(&self, obj: &Value) -> Result<Submitted, SubmitError> {
        // Coordinates are checked before any URL is built from them.
        let o = check(obj)?;
        let r = self.resource(o.api_version, o.kind).await?;
        let ns = o.namespace.unwrap_or(&self.namespace);
        let url = DynamicObject::url_path(&r.resource, r.namespaced.then_some(ns));
        let collection = url.clone();
        let bytes = serde_json::to_vec(obj).expect("JSON values serialize");
        let req = Request::new(url)
            .create(&PostParams::default(), bytes)
            .map_err(|e| SubmitError::Permanent {
                code: 400,
                reason: "BadRequest".into(),
                message: e.to_string(),
                status: Value::Null,
            })?;
        let resp = self
            .client
            .send(req.map(kube::client::Body::from))
            .await
            .map_err(classify_client_error)?;
        let code = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp
            .into_body()
            .collect_bytes()
            .await
            .map_err(|e| SubmitError::Transient {
                message: format!("reading the API reply: {e}"),
                retry_after: None,
            })?;
        if code == 201 {
            // The created object comes back; nothing in it is needed.
            return Ok(Submitted::Created);
        }
        let status: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| json!({"message": String::from_utf8_lossy(&body)}));
        let reason = status["reason"].as_str().unwrap_or_default().to_string();
        let message = status["message"].as_str().unwrap_or_default().to_string();
        match classify(code, &reason, &message) {
            Verdict::Created => Ok(Submitted::Created),
            Verdict::Existing => self.confirm_existing(&collection, o.name, obj).await,
            Verdict::Failed(cause) => {
                let text = format!("{code} {reason}: {message}");
                let message = if cause == Cause::Permanent {
                    message
                } else {
                    text
                };
                Err(SubmitError::of(
                    cause,
                    code,
                    &reason,
                    message,
                    status,
                    retry_after,
                ))
            }
        }
    }

    fn default_namespace(&self) -> Option<&str> {
        Some(&self.namespace)
    }

    fn describe(&self) -> String {
        format!("kubernetes {} (namespace {})", self.server, self.namespace)
    }
}
