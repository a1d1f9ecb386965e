//! Submission to the Kubernetes API with the `kube` client: any
//! apiVersion/kind (resolved by discovery, cached), created with a plain
//! POST so the reply's status code, `Status` body and `Retry-After` header
//! are all seen.
//!
//! What an answer means is [`classify`]'s decision; a timeout or a
//! connection error is transient (retried, `Retry-After` honoured).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{GroupVersionKind, Request};
use kube::discovery::Scope;
use kube::{Client, Config, Resource};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::classify::{classify, Verdict};
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

pub struct KubeSubmitter {
    client: Client,
    namespace: String,
    server: String,
    /// `(apiVersion, kind)` → resource and whether it is namespaced.
    resources: Mutex<HashMap<(String, String), (ApiResource, bool)>>,
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
            resources: Mutex::new(HashMap::new()),
        })
    }

    async fn resource(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, bool), SubmitError> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(r) = self.resources.lock().await.get(&key) {
            return Ok(r.clone());
        }
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, caps) = kube::discovery::pinned_kind(&self.client, &gvk).await.map_err(|e| match e {
            kube::Error::Api(s) if s.code == 404 || s.code == 0 => SubmitError::Permanent {
                code: 404,
                reason: "NotFound".into(),
                message: format!("the API server does not serve {kind} in {api_version} (is the CRD installed?)"),
                status: json!({"code": 404, "reason": "NotFound", "message": s.message}),
            },
            kube::Error::Discovery(d) => SubmitError::Permanent {
                code: 404,
                reason: "NotFound".into(),
                message: format!("the API server does not serve {kind} in {api_version}: {d}"),
                status: Value::Null,
            },
            other => classify_client_error(other),
        })?;
        let r = (ar, caps.scope == Scope::Namespaced);
        self.resources.lock().await.insert(key, r.clone());
        Ok(r)
    }
}

fn classify_client_error(e: kube::Error) -> SubmitError {
    match e {
        kube::Error::Api(s) if classify(s.code, &s.reason) != Verdict::Permanent => {
            SubmitError::Transient {
                message: format!("{} {}", s.code, s.message),
                retry_after: None,
            }
        }
        kube::Error::Api(s) => SubmitError::Permanent {
            code: s.code,
            reason: s.reason.clone(),
            message: s.message.clone(),
            status: serde_json::to_value(&*s).unwrap_or_default(),
        },
        // Connection refused, reset, timeout, TLS…: the API may come back.
        other => SubmitError::Transient {
            message: other.to_string(),
            retry_after: None,
        },
    }
}

#[async_trait]
impl Submitter for KubeSubmitter {
    async fn submit(&self, obj: &Value) -> Result<Submitted, SubmitError> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let (ar, namespaced) = self.resource(api_version, kind).await?;
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or(&self.namespace);
        let url = DynamicObject::url_path(&ar, namespaced.then_some(ns));
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
        let status: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| json!({"message": String::from_utf8_lossy(&body)}));
        let reason = status["reason"].as_str().unwrap_or_default().to_string();
        let message = status["message"].as_str().unwrap_or_default().to_string();
        match classify(code, &reason) {
            Verdict::Created => Ok(Submitted::Created),
            Verdict::Existing => Ok(Submitted::Existing),
            Verdict::Transient => Err(SubmitError::Transient {
                message: format!("{code} {reason}: {message}"),
                retry_after,
            }),
            Verdict::Permanent => Err(SubmitError::Permanent {
                code,
                reason,
                message,
                status,
            }),
        }
    }

    fn default_namespace(&self) -> Option<&str> {
        Some(&self.namespace)
    }

    fn describe(&self) -> String {
        format!("kubernetes {} (namespace {})", self.server, self.namespace)
    }
}
