//! Webhooks: one axum server for every HTTP source kind.
//!
//! Each source is mounted at its `path` (default `/events/<name>`). A request
//! is bounded (concurrency permit, body limit), authenticated (GitHub HMAC,
//! GitLab token, generic HMAC or bearer), parsed into an [`Event`], processed,
//! and only then answered — the reply says what was created, or why not:
//!
//! | reply | when |
//! |---|---|
//! | 200 | every trigger has a final outcome (`created`/`existing`/`waiting`), or nothing matched |
//! | 400 | malformed body (JSON error with line and column), missing required header |
//! | 401 | signature/token missing or wrong; the body names the failing check |
//! | 413 | body over `limits.maxBodyBytes`, refused before it is read in full |
//! | 415 | content type not supported |
//! | 422 | the object was rejected as invalid (dead-lettered); the API's message |
//! | 503 | overloaded, or the Kubernetes API unavailable past the retry budget; `Retry-After` set |
//!
//! `POST /explain/<source>` takes the same request and answers with the
//! per-filter explanation and the rendered objects, submitting nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument};

use super::{Source, SourceConfig, SourceError};
use crate::app::{Disposition, Engine};
use crate::config::Limits;
use crate::event::Event;

// ---- config ----------------------------------------------------------------

/// A secret from the environment or a file (a mounted Kubernetes Secret),
/// never inline. Several secrets may be valid at once (rotation): one per line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub file: Option<PathBuf>,
}

impl SecretRef {
    pub fn rebase(&mut self, base: &Path) {
        if let Some(f) = &mut self.file {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
    }

    /// The whole value, as stored (a NATS creds file has several blocks).
    pub fn read(&self) -> Result<String, String> {
        match (&self.env, &self.file) {
            (Some(var), None) => {
                std::env::var(var).map_err(|_| format!("environment variable `{var}` is not set"))
            }
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
            _ => Err("give exactly one of `env` or `file`".into()),
        }
    }

    /// The valid secrets (non-empty lines), for checking what senders present.
    pub fn resolve(&self) -> Result<Vec<Vec<u8>>, String> {
        let secrets: Vec<Vec<u8>> = self
            .read()?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| l.as_bytes().to_vec())
            .collect();
        if secrets.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(secrets)
    }

    /// The first secret, for credentials tripline itself presents (to a
    /// broker); rotation is then the broker's matter.
    pub fn first(&self) -> Result<String, String> {
        Ok(String::from_utf8_lossy(&self.resolve()?[0]).into_owned())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpConfig {
    pub name: String,
    #[serde(default)]
    pub path: Option<String>,
    /// Header holding a delivery id (default: none, the id is a body hash).
    #[serde(default)]
    pub id_header: Option<String>,
    /// Header holding the event type.
    #[serde(default)]
    pub type_header: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    pub name: String,
    #[serde(default)]
    pub path: Option<String>,
    /// The webhook secret configured in GitHub.
    pub secret: SecretRef,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitlabConfig {
    pub name: String,
    #[serde(default)]
    pub path: Option<String>,
    /// The "Secret token" configured in GitLab.
    pub token: SecretRef,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GenericConfig {
    pub name: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub hmac: Option<HmacConfig>,
    /// `Authorization: Bearer <token>`.
    #[serde(default)]
    pub bearer: Option<SecretRef>,
    #[serde(default)]
    pub id_header: Option<String>,
    #[serde(default)]
    pub type_header: Option<String>,
}

impl GenericConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        match (&self.hmac, &self.bearer) {
            (Some(_), Some(_)) | (None, None) => Err(("hmac".into(), "a generic source needs exactly one of `hmac` or `bearer` (use type: http for no authentication)".into())),
            _ => Ok(()),
        }
    }

    pub fn rebase(&mut self, base: &Path) {
        if let Some(h) = &mut self.hmac {
            h.secret.rebase(base);
        }
        if let Some(b) = &mut self.bearer {
            b.rebase(base);
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HmacConfig {
    /// Header carrying the signature, e.g. `X-Signature`.
    pub header: String,
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Text before the signature, e.g. `sha256=`.
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub encoding: Encoding,
    pub secret: SecretRef,
    /// Replay protection: the signature then covers `<timestamp>.<body>`
    /// and the timestamp (unix seconds) must be within `tolerance` of now.
    #[serde(default)]
    pub timestamp: Option<TimestampConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampConfig {
    pub header: String,
    #[serde(default = "default_tolerance", with = "humantime_serde")]
    pub tolerance: Duration,
}

fn default_tolerance() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Sha1,
    #[default]
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Hex,
    Base64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudEventsConfig {
    pub name: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub bearer: Option<SecretRef>,
}

// ---- endpoints -------------------------------------------------------------

/// How a request proves where it came from.
enum Auth {
    None,
    GithubHmac(Vec<Vec<u8>>),
    GitlabToken(Vec<Vec<u8>>),
    Hmac {
        header: String,
        algorithm: Algorithm,
        prefix: String,
        encoding: Encoding,
        secrets: Vec<Vec<u8>>,
        timestamp: Option<(String, Duration)>,
    },
    Bearer(Vec<Vec<u8>>),
}

enum Kind {
    Http {
        id_header: Option<String>,
        type_header: Option<String>,
    },
    Github,
    Gitlab,
    CloudEvents,
}

/// One mounted webhook source.
pub struct Endpoint {
    pub name: String,
    pub path: String,
    auth: Auth,
    kind: Kind,
}

impl Endpoint {
    /// Resolves secrets; fails when one is missing (better at start than at
    /// the first delivery). `None` for sources that are not webhooks.
    pub fn from_config(cfg: &SourceConfig) -> Result<Option<Endpoint>, SourceError> {
        let name = cfg.name().to_string();
        let secret = |r: &SecretRef| {
            r.resolve().map_err(|message| SourceError::Secret {
                source_name: name.clone(),
                message,
            })
        };
        let (auth, kind) = match cfg {
            SourceConfig::Http(c) => (
                Auth::None,
                Kind::Http {
                    id_header: c.id_header.clone(),
                    type_header: c.type_header.clone(),
                },
            ),
            SourceConfig::Github(c) => (Auth::GithubHmac(secret(&c.secret)?), Kind::Github),
            SourceConfig::Gitlab(c) => (Auth::GitlabToken(secret(&c.token)?), Kind::Gitlab),
            SourceConfig::Generic(c) => {
                let auth = match (&c.hmac, &c.bearer) {
                    (Some(h), _) => Auth::Hmac {
                        header: h.header.clone(),
                        algorithm: h.algorithm,
                        prefix: h.prefix.clone(),
                        encoding: h.encoding,
                        secrets: secret(&h.secret)?,
                        timestamp: h
                            .timestamp
                            .as_ref()
                            .map(|t| (t.header.clone(), t.tolerance)),
                    },
                    (None, Some(b)) => Auth::Bearer(secret(b)?),
                    (None, None) => Auth::None,
                };
                let kind = Kind::Http {
                    id_header: c.id_header.clone(),
                    type_header: c.type_header.clone(),
                };
                (auth, kind)
            }
            SourceConfig::Cloudevents(c) => (
                match &c.bearer {
                    Some(b) => Auth::Bearer(secret(b)?),
                    None => Auth::None,
                },
                Kind::CloudEvents,
            ),
            SourceConfig::Nats(_) | SourceConfig::Kafka(_) => return Ok(None),
        };
        let path = cfg
            .webhook_path()
            .map_or_else(|| format!("/events/{name}"), str::to_string);
        Ok(Some(Endpoint {
            name,
            path,
            auth,
            kind,
        }))
    }
}

/// A failed authentication check: which check, and what went wrong.
#[derive(Debug, PartialEq)]
pub struct AuthFailure {
    pub check: String,
    pub error: String,
}

fn fail(check: &str, error: impl Into<String>) -> Result<(), AuthFailure> {
    Err(AuthFailure {
        check: check.to_string(),
        error: error.into(),
    })
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn hmac_matches(algorithm: Algorithm, key: &[u8], parts: &[&[u8]], sig: &[u8]) -> bool {
    macro_rules! check {
        ($d:ty) => {{
            let mut mac = <Hmac<$d>>::new_from_slice(key).expect("HMAC takes any key length");
            for p in parts {
                mac.update(p);
            }
            mac.verify_slice(sig).is_ok()
        }};
    }
    match algorithm {
        Algorithm::Sha1 => check!(sha1::Sha1),
        Algorithm::Sha256 => check!(sha2::Sha256),
        Algorithm::Sha512 => check!(sha2::Sha512),
    }
}

fn ct_eq_any(given: &[u8], secrets: &[Vec<u8>]) -> bool {
    // Check every secret (no early exit) so timing does not tell which matched.
    secrets
        .iter()
        .fold(false, |acc, s| acc | bool::from(given.ct_eq(s)))
}

impl Auth {
    /// Verifies the request. Error messages never echo a secret.
    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), AuthFailure> {
        match self {
            Auth::None => Ok(()),
            Auth::GithubHmac(secrets) => {
                const H: &str = "X-Hub-Signature-256";
                let Some(v) = header_str(headers, H) else {
                    return fail(
                        H,
                        "missing X-Hub-Signature-256 header (is the webhook secret set in GitHub?)",
                    );
                };
                let Some(sig) = v.strip_prefix("sha256=").and_then(|h| hex::decode(h).ok()) else {
                    return fail(H, "malformed signature: expected sha256=<hex>");
                };
                if secrets
                    .iter()
                    .any(|k| hmac_matches(Algorithm::Sha256, k, &[body], &sig))
                {
                    Ok(())
                } else {
                    fail(
                        H,
                        "signature does not match the body (wrong secret, or the body was altered)",
                    )
                }
            }
            Auth::GitlabToken(secrets) => {
                const H: &str = "X-Gitlab-Token";
                match header_str(headers, H) {
                    None => fail(H, "missing X-Gitlab-Token header"),
                    Some(t) if ct_eq_any(t.as_bytes(), secrets) => Ok(()),
                    Some(_) => fail(H, "token does not match"),
                }
            }
            Auth::Bearer(secrets) => {
                const H: &str = "Authorization";
                match header_str(headers, H).and_then(|v| v.strip_prefix("Bearer ")) {
                    None => fail(H, "missing `Authorization: Bearer <token>` header"),
                    Some(t) if ct_eq_any(t.trim().as_bytes(), secrets) => Ok(()),
                    Some(_) => fail(H, "bearer token does not match"),
                }
            }
            Auth::Hmac {
                header,
                algorithm,
                prefix,
                encoding,
                secrets,
                timestamp,
            } => {
                let Some(v) = header_str(headers, header) else {
                    return fail(header, format!("missing {header} header"));
                };
                let Some(encoded) = v.trim().strip_prefix(prefix.as_str()) else {
                    return fail(
                        header,
                        format!("malformed signature: expected prefix `{prefix}`"),
                    );
                };
                let sig = match encoding {
                    Encoding::Hex => hex::decode(encoded).ok(),
                    Encoding::Base64 => base64::engine::general_purpose::STANDARD
                        .decode(encoded)
                        .ok(),
                };
                let Some(sig) = sig else {
                    return fail(
                        header,
                        format!("malformed signature: not {encoding:?}").to_lowercase(),
                    );
                };
                let ts_value;
                let parts: Vec<&[u8]> = match timestamp {
                    None => vec![body],
                    Some((ts_header, tolerance)) => {
                        let Some(ts) = header_str(headers, ts_header) else {
                            return fail(ts_header, format!("missing {ts_header} header"));
                        };
                        let Ok(secs) = ts.trim().parse::<u64>() else {
                            return fail(ts_header, "timestamp is not unix seconds");
                        };
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_secs();
                        if now.abs_diff(secs) > tolerance.as_secs() {
                            return fail(
                                ts_header,
                                format!(
                                    "timestamp is outside the replay window of {}s",
                                    tolerance.as_secs()
                                ),
                            );
                        }
                        ts_value = ts.trim().to_string();
                        vec![ts_value.as_bytes(), b".", body]
                    }
                };
                if secrets
                    .iter()
                    .any(|k| hmac_matches(*algorithm, k, &parts, &sig))
                {
                    Ok(())
                } else {
                    fail(
                        header,
                        "signature does not match the body (wrong secret, or the body was altered)",
                    )
                }
            }
        }
    }
}

/// Why a body could not become an event.
#[derive(Debug, PartialEq)]
pub enum BodyError {
    Malformed(String),
    Unsupported(String),
}

/// What a verified request turned into.
#[derive(Debug)]
pub enum Parsed {
    Event(Box<Event>),
    /// GitHub's `ping`: answered, never submitted.
    Ping,
}

fn content_type(headers: &HeaderMap) -> String {
    header_str(headers, "content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Decodes a body by content type: JSON (400 on error, with line and column),
/// form (`payload=` JSON for GitHub, else fields), text, octet-stream (base64),
/// or no content type (JSON when it parses, else text).
fn decode_body(ct: &str, body: &[u8], meta: &mut Map<String, Value>) -> Result<Value, BodyError> {
    let json = |b: &[u8]| {
        serde_json::from_slice::<Value>(b)
            .map_err(|e| BodyError::Malformed(format!("invalid JSON: {e}")))
    };
    match ct {
        "" => Ok(crate::event::parse_payload(body, meta)),
        "application/json" => json(body),
        ct if ct.ends_with("+json") && ct.starts_with("application/") => json(body),
        "application/x-www-form-urlencoded" => {
            let fields: Map<String, Value> = url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect();
            match fields.get("payload").and_then(Value::as_str) {
                Some(p) => json(p.as_bytes()),
                None => Ok(Value::Object(fields)),
            }
        }
        ct if ct.starts_with("text/") => std::str::from_utf8(body)
            .map(|s| Value::String(s.into()))
            .map_err(|e| BodyError::Malformed(format!("text body is not UTF-8: {e}"))),
        "application/octet-stream" => {
            meta.insert("bodyEncoding".into(), json!("base64"));
            Ok(Value::String(base64::engine::general_purpose::STANDARD.encode(body)))
        }
        other => Err(BodyError::Unsupported(format!(
            "content type `{other}` is not supported (use application/json, application/x-www-form-urlencoded, text/*, application/octet-stream)"
        ))),
    }
}

/// Headers that carry credentials never reach the envelope (and so never a
/// template, an outbox file or a dead-letter record).
const SECRET_HEADERS: [&str; 3] = ["authorization", "x-gitlab-token", "cookie"];

impl Endpoint {
    /// Turns a verified request into an event.
    pub fn parse(&self, headers: &HeaderMap, body: &[u8]) -> Result<Parsed, BodyError> {
        let ct = content_type(headers);
        let mut meta = Map::new();
        meta.insert("path".into(), json!(self.path));
        if !ct.is_empty() {
            meta.insert("contentType".into(), json!(ct));
        }
        let mut event = Event::new(&self.name, body, Value::Null);
        for (k, v) in headers {
            if !SECRET_HEADERS.contains(&k.as_str()) {
                event
                    .headers
                    .insert(k.as_str(), String::from_utf8_lossy(v.as_bytes()));
            }
        }
        let required = |h: &str| {
            header_str(headers, h)
                .map(str::to_string)
                .ok_or_else(|| BodyError::Malformed(format!("missing {h} header")))
        };
        match &self.kind {
            Kind::Http {
                id_header,
                type_header,
            } => {
                event.body = decode_body(&ct, body, &mut meta)?;
                if let Some(id) = id_header.as_deref().and_then(|h| header_str(headers, h)) {
                    event.id = id.to_string();
                }
                if let Some(t) = type_header.as_deref().and_then(|h| header_str(headers, h)) {
                    event.kind = t.to_string();
                }
                event.subject = self.path.clone();
            }
            Kind::Github => {
                event.kind = required("X-GitHub-Event")?;
                if let Some(id) = header_str(headers, "X-GitHub-Delivery") {
                    event.id = id.to_string();
                }
                if event.kind == "ping" {
                    return Ok(Parsed::Ping);
                }
                event.body = decode_body(&ct, body, &mut meta)?;
                event.subject = event.body["repository"]["full_name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
            }
            Kind::Gitlab => {
                event.kind = required("X-Gitlab-Event")?;
                if let Some(id) = header_str(headers, "X-Gitlab-Event-UUID") {
                    event.id = id.to_string();
                }
                event.body = decode_body(&ct, body, &mut meta)?;
                event.subject = event.body["project"]["path_with_namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
            }
            Kind::CloudEvents => parse_cloudevent(&ct, headers, body, &mut event, &mut meta)?,
        }
        event.meta = meta;
        Ok(Parsed::Event(Box::new(event)))
    }
}

/// CloudEvents HTTP binding: structured (`application/cloudevents+json`) or
/// binary (`ce-*` headers).
fn parse_cloudevent(
    ct: &str,
    headers: &HeaderMap,
    body: &[u8],
    event: &mut Event,
    meta: &mut Map<String, Value>,
) -> Result<(), BodyError> {
    let missing = |a: &str| BodyError::Malformed(format!("CloudEvent attribute `{a}` is missing"));
    if ct == "application/cloudevents+json" {
        let Value::Object(mut ce) = serde_json::from_slice::<Value>(body)
            .map_err(|e| BodyError::Malformed(format!("invalid JSON: {e}")))?
        else {
            return Err(BodyError::Malformed(
                "a structured CloudEvent must be a JSON object".into(),
            ));
        };
        let mut attr = |a: &str| ce.remove(a).and_then(|v| v.as_str().map(str::to_string));
        event.id = attr("id").ok_or_else(|| missing("id"))?;
        let ce_source = attr("source").ok_or_else(|| missing("source"))?;
        event.kind = attr("type").ok_or_else(|| missing("type"))?;
        let spec = attr("specversion").ok_or_else(|| missing("specversion"))?;
        event.subject = attr("subject").unwrap_or_default();
        if let Some(t) = attr("time") {
            event.time = t;
        }
        meta.insert("ceSource".into(), json!(ce_source));
        meta.insert("ceSpecversion".into(), json!(spec));
        event.body = match (ce.remove("data"), ce.remove("data_base64")) {
            (Some(d), _) => d,
            (None, Some(b)) => {
                meta.insert("bodyEncoding".into(), json!("base64"));
                b
            }
            (None, None) => Value::Null,
        };
        // Remaining attributes (datacontenttype, extensions) go to meta.
        for (k, v) in ce {
            meta.insert(format!("ce_{k}"), v);
        }
        return Ok(());
    }
    if ct == "application/cloudevents-batch+json" {
        return Err(BodyError::Unsupported(
            "batched CloudEvents are not supported; send one event per request".into(),
        ));
    }
    let Some(spec) = header_str(headers, "ce-specversion") else {
        return Err(BodyError::Malformed(
            "not a CloudEvent: expected ce-specversion/ce-id/ce-source/ce-type headers (binary mode) or an application/cloudevents+json body".into(),
        ));
    };
    let attr = |a: &str| header_str(headers, &format!("ce-{a}")).map(str::to_string);
    event.id = attr("id").ok_or_else(|| missing("id"))?;
    let ce_source = attr("source").ok_or_else(|| missing("source"))?;
    event.kind = attr("type").ok_or_else(|| missing("type"))?;
    event.subject = attr("subject").unwrap_or_default();
    if let Some(t) = attr("time") {
        event.time = t;
    }
    meta.insert("ceSource".into(), json!(ce_source));
    meta.insert("ceSpecversion".into(), json!(spec));
    event.body = decode_body(ct, body, meta)?;
    Ok(())
}

// ---- server ----------------------------------------------------------------

/// The HTTP server: every webhook endpoint plus `/healthz`, `/readyz`, `/metrics`.
pub struct WebhookServer {
    listen: SocketAddr,
    limits: Limits,
    endpoints: Vec<Endpoint>,
}

impl WebhookServer {
    pub fn new(listen: SocketAddr, limits: Limits, endpoints: Vec<Endpoint>) -> Self {
        WebhookServer {
            listen,
            limits,
            endpoints,
        }
    }
}

struct Mounted {
    endpoint: Endpoint,
    permits: Semaphore,
}

#[derive(Clone)]
struct Shared {
    engine: Arc<Engine>,
    max_body: usize,
    by_name: Arc<HashMap<String, Arc<Mounted>>>,
}

#[async_trait]
impl Source for WebhookServer {
    fn name(&self) -> &str {
        "http"
    }

    async fn run(
        self: Box<Self>,
        engine: Arc<Engine>,
        shutdown: CancellationToken,
    ) -> Result<(), SourceError> {
        let mounted: Vec<Arc<Mounted>> = self
            .endpoints
            .into_iter()
            .map(|endpoint| {
                Arc::new(Mounted {
                    endpoint,
                    permits: Semaphore::new(self.limits.max_in_flight),
                })
            })
            .collect();
        let shared = Shared {
            engine: engine.clone(),
            max_body: self.limits.max_body_bytes,
            by_name: Arc::new(
                mounted
                    .iter()
                    .map(|m| (m.endpoint.name.clone(), m.clone()))
                    .collect(),
            ),
        };
        let mut app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/explain/{source}", post(explain));
        for m in &mounted {
            let name = m.endpoint.name.clone();
            app = app.route(
                &m.endpoint.path,
                post(
                    move |State(s): State<Shared>, headers: HeaderMap, body: Body| async move {
                        deliver(s, &name, headers, body).await
                    },
                ),
            );
        }
        let app = app
            .fallback(|uri: axum::http::Uri| async move {
                (
                    StatusCode::NOT_FOUND,
                    Json(json!({"error": format!("no source is mounted at {}", uri.path())})),
                )
            })
            .with_state(shared);

        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .map_err(|error| SourceError::Listen {
                addr: self.listen.to_string(),
                error,
            })?;
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        for m in &mounted {
            engine.readiness.set(
                &m.endpoint.name,
                true,
                format!("listening on {addr}{}", m.endpoint.path),
            );
            info!(source = %m.endpoint.name, path = %m.endpoint.path, "webhook mounted");
        }
        info!(%addr, "listening");
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(|e| SourceError::Failed {
                source_name: "http".into(),
                message: e.to_string(),
            })
    }
}

fn reply(code: StatusCode, body: Value) -> Response {
    (code, Json(body)).into_response()
}

fn unavailable(retry_after_secs: u64, body: Value) -> Response {
    let mut r = reply(StatusCode::SERVICE_UNAVAILABLE, body);
    r.headers_mut()
        .insert(header::RETRY_AFTER, retry_after_secs.into());
    r
}

/// Reads a verified, parsed event from the request, or the reply to send.
async fn intake(
    s: &Shared,
    m: &Mounted,
    headers: &HeaderMap,
    body: Body,
) -> Result<Parsed, Response> {
    let too_large = || {
        reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": format!("body is larger than the {} byte limit", s.max_body)}),
        )
    };
    let declared = header_str(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.max_body as u64) {
        return Err(too_large());
    }
    let bytes = match http_body_util::Limited::new(body, s.max_body)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(reply(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("cannot read body: {e}")}),
            ))
        }
    };
    if let Err(f) = m.endpoint.auth.verify(headers, &bytes) {
        tracing::warn!(source = %m.endpoint.name, check = %f.check, error = %f.error, "webhook rejected");
        return Err(reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": f.error, "check": f.check}),
        ));
    }
    m.endpoint.parse(headers, &bytes).map_err(|e| match e {
        BodyError::Malformed(msg) => reply(StatusCode::BAD_REQUEST, json!({"error": msg})),
        BodyError::Unsupported(msg) => {
            reply(StatusCode::UNSUPPORTED_MEDIA_TYPE, json!({"error": msg}))
        }
    })
}

#[instrument(skip_all, fields(source = %name))]
async fn deliver(s: Shared, name: &str, headers: HeaderMap, body: Body) -> Response {
    let m = s.by_name[name].clone();
    let Ok(_permit) = m.permits.try_acquire() else {
        return unavailable(
            1,
            json!({"error": "overloaded: too many requests in flight, retry later"}),
        );
    };
    let event = match intake(&s, &m, &headers, body).await {
        Ok(Parsed::Event(e)) => *e,
        Ok(Parsed::Ping) => {
            return reply(
                StatusCode::OK,
                json!({"event_id": header_str(&headers, "X-GitHub-Delivery"), "ping": true, "matched": []}),
            )
        }
        Err(r) => return r,
    };
    // Processing runs to completion even if the sender hangs up, so a
    // submission is never cut in half.
    let engine = s.engine.clone();
    let outcome = match tokio::spawn(async move { engine.process(event).await }).await {
        Ok(o) => o,
        Err(e) => {
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": format!("processing failed: {e}")}),
            )
        }
    };
    let body = serde_json::to_value(&outcome).unwrap_or_default();
    match outcome.disposition() {
        Disposition::Done => reply(StatusCode::OK, body),
        Disposition::Rejected => reply(StatusCode::UNPROCESSABLE_ENTITY, body),
        Disposition::Retry => unavailable(5, body),
    }
}

async fn explain(
    State(s): State<Shared>,
    axum::extract::Path(source): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(m) = s.by_name.get(&source).cloned() else {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no source named `{source}`")}),
        );
    };
    match intake(&s, &m, &headers, body).await {
        Ok(Parsed::Event(e)) => {
            let (explanation, rendered) = s.engine.explain(&e);
            reply(
                StatusCode::OK,
                json!({"explanation": explanation, "rendered": rendered}),
            )
        }
        Ok(Parsed::Ping) => reply(StatusCode::OK, json!({"ping": true})),
        Err(r) => r,
    }
}

async fn readyz(State(s): State<Shared>) -> Response {
    let (ready, detail) = s.engine.readiness.report();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    reply(code, json!({"ready": ready, "sources": detail}))
}

async fn metrics(State(s): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.engine.stats.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn mac_hex(key: &[u8], parts: &[&[u8]]) -> String {
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        for p in parts {
            m.update(p);
        }
        hex::encode(m.finalize().into_bytes())
    }

    #[test]
    fn github_signature_checks() {
        let auth = Auth::GithubHmac(vec![b"old".to_vec(), b"new".to_vec()]);
        let body = b"{\"a\":1}";
        for key in [&b"old"[..], b"new"] {
            let sig = format!("sha256={}", mac_hex(key, &[body]));
            assert_eq!(
                auth.verify(&headers(&[("x-hub-signature-256", &sig)]), body),
                Ok(())
            );
        }
        let wrong = format!("sha256={}", mac_hex(b"other", &[body]));
        let f = auth
            .verify(&headers(&[("x-hub-signature-256", &wrong)]), body)
            .unwrap_err();
        assert_eq!(f.check, "X-Hub-Signature-256");
        assert!(f.error.contains("does not match"));
        assert!(auth
            .verify(&headers(&[]), body)
            .unwrap_err()
            .error
            .contains("missing"));
        let f = auth
            .verify(&headers(&[("x-hub-signature-256", "sha1=abc")]), body)
            .unwrap_err();
        assert!(f.error.contains("malformed"));
        let f = auth
            .verify(&headers(&[("x-hub-signature-256", "sha256=zz")]), body)
            .unwrap_err();
        assert!(f.error.contains("malformed"));
    }

    #[test]
    fn generic_hmac_prefix_encoding_and_replay_window() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let auth = Auth::Hmac {
            header: "X-Sig".into(),
            algorithm: Algorithm::Sha256,
            prefix: "v1=".into(),
            encoding: Encoding::Hex,
            secrets: vec![b"k".to_vec()],
            timestamp: Some(("X-Ts".into(), Duration::from_secs(60))),
        };
        let body = b"payload";
        let ts = now.to_string();
        let sig = format!("v1={}", mac_hex(b"k", &[ts.as_bytes(), b".", body]));
        assert_eq!(
            auth.verify(&headers(&[("x-sig", &sig), ("x-ts", &ts)]), body),
            Ok(())
        );
        // Without the prefix, without the timestamp, with an old timestamp.
        assert!(auth
            .verify(&headers(&[("x-sig", &sig[3..]), ("x-ts", &ts)]), body)
            .is_err());
        assert_eq!(
            auth.verify(&headers(&[("x-sig", &sig)]), body)
                .unwrap_err()
                .check,
            "X-Ts"
        );
        let old = (now - 120).to_string();
        let old_sig = format!("v1={}", mac_hex(b"k", &[old.as_bytes(), b".", body]));
        let f = auth
            .verify(&headers(&[("x-sig", &old_sig), ("x-ts", &old)]), body)
            .unwrap_err();
        assert!(f.error.contains("replay window"));
        let f = auth
            .verify(&headers(&[("x-sig", &sig), ("x-ts", "yesterday")]), body)
            .unwrap_err();
        assert!(f.error.contains("unix seconds"));

        // sha1 + base64, no timestamp.
        let auth = Auth::Hmac {
            header: "X-Sig".into(),
            algorithm: Algorithm::Sha1,
            prefix: String::new(),
            encoding: Encoding::Base64,
            secrets: vec![b"k".to_vec()],
            timestamp: None,
        };
        let mut m = Hmac::<sha1::Sha1>::new_from_slice(b"k").unwrap();
        m.update(body);
        let sig = base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes());
        assert_eq!(auth.verify(&headers(&[("x-sig", &sig)]), body), Ok(()));
        assert!(auth
            .verify(&headers(&[("x-sig", "!!!")]), body)
            .unwrap_err()
            .error
            .contains("base64"));
    }

    #[test]
    fn tokens_compare_exactly() {
        let gl = Auth::GitlabToken(vec![b"tok".to_vec()]);
        assert_eq!(
            gl.verify(&headers(&[("x-gitlab-token", "tok")]), b""),
            Ok(())
        );
        assert!(gl
            .verify(&headers(&[("x-gitlab-token", "to")]), b"")
            .is_err());
        assert!(gl
            .verify(&headers(&[("x-gitlab-token", "tokk")]), b"")
            .is_err());
        let bearer = Auth::Bearer(vec![b"tok".to_vec()]);
        assert_eq!(
            bearer.verify(&headers(&[("authorization", "Bearer tok")]), b""),
            Ok(())
        );
        assert!(bearer
            .verify(&headers(&[("authorization", "Basic tok")]), b"")
            .is_err());
    }

    #[test]
    fn bodies_decode_by_content_type() {
        let mut meta = Map::new();
        assert_eq!(
            decode_body("application/json", b"{\"a\":1}", &mut meta),
            Ok(json!({"a": 1}))
        );
        assert_eq!(
            decode_body("application/vnd.x+json", b"[1]", &mut meta),
            Ok(json!([1]))
        );
        let err = decode_body("application/json", b"{\n\"a\": }", &mut meta).unwrap_err();
        assert!(
            matches!(&err, BodyError::Malformed(m) if m.contains("line 2 column")),
            "{err:?}"
        );
        assert_eq!(
            decode_body(
                "application/x-www-form-urlencoded",
                b"payload=%7B%22a%22%3A2%7D",
                &mut meta
            ),
            Ok(json!({"a": 2}))
        );
        assert_eq!(
            decode_body("application/x-www-form-urlencoded", b"a=1&b=x", &mut meta),
            Ok(json!({"a": "1", "b": "x"}))
        );
        assert_eq!(decode_body("text/plain", b"hi", &mut meta), Ok(json!("hi")));
        assert!(matches!(
            decode_body("text/plain", &[0xff], &mut meta),
            Err(BodyError::Malformed(_))
        ));
        assert!(matches!(
            decode_body("application/xml", b"<a/>", &mut meta),
            Err(BodyError::Unsupported(_))
        ));
        assert_eq!(
            decode_body("", b"{\"a\":1}", &mut meta),
            Ok(json!({"a": 1}))
        );
        assert_eq!(
            decode_body("", b"not json", &mut meta),
            Ok(json!("not json"))
        );
        assert_eq!(
            decode_body("application/octet-stream", &[1, 2], &mut meta),
            Ok(json!("AQI="))
        );
        assert_eq!(meta["bodyEncoding"], json!("base64"));
    }

    fn endpoint(cfg: &str) -> Endpoint {
        let c: SourceConfig = serde_yaml_ng::from_str(cfg).unwrap();
        Endpoint::from_config(&c).unwrap().unwrap()
    }

    fn event(p: Parsed) -> Event {
        match p {
            Parsed::Event(e) => *e,
            Parsed::Ping => panic!("ping"),
        }
    }

    #[test]
    fn provider_envelopes() {
        std::env::set_var("TRIPLINE_UNIT_SECRET", "s");
        let gh = endpoint("{type: github, name: gh, secret: {env: TRIPLINE_UNIT_SECRET}}");
        assert_eq!(gh.path, "/events/gh");
        let h = headers(&[
            ("x-github-event", "push"),
            ("x-github-delivery", "d1"),
            ("content-type", "application/json"),
            ("authorization", "Bearer leak"),
        ]);
        let e = event(
            gh.parse(&h, br#"{"repository":{"full_name":"o/r"}}"#)
                .unwrap(),
        );
        assert_eq!(
            (
                e.id.as_str(),
                e.kind.as_str(),
                e.subject.as_str(),
                e.source.as_str()
            ),
            ("d1", "push", "o/r", "gh")
        );
        assert_eq!(
            e.headers.get("authorization"),
            None,
            "credentials never reach the envelope"
        );
        assert!(matches!(
            gh.parse(&headers(&[("x-github-event", "ping")]), b"{}")
                .unwrap(),
            Parsed::Ping
        ));
        assert_eq!(
            gh.parse(&headers(&[]), b"{}").unwrap_err(),
            BodyError::Malformed("missing X-GitHub-Event header".into())
        );

        let gl =
            endpoint("{type: gitlab, name: gl, path: /gl, token: {env: TRIPLINE_UNIT_SECRET}}");
        let h = headers(&[
            ("x-gitlab-event", "Push Hook"),
            ("x-gitlab-event-uuid", "u1"),
            ("x-gitlab-token", "s"),
        ]);
        let e = event(
            gl.parse(&h, br#"{"project":{"path_with_namespace":"g/p"}}"#)
                .unwrap(),
        );
        assert_eq!(
            (e.id.as_str(), e.kind.as_str(), e.subject.as_str()),
            ("u1", "Push Hook", "g/p")
        );
        assert_eq!(e.headers.get("x-gitlab-token"), None);

        let ce = endpoint("{type: cloudevents, name: ce}");
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "c1"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
            ("ce-subject", "sub"),
            ("ce-time", "2026-01-01T00:00:00Z"),
            ("content-type", "text/plain"),
        ]);
        let e = event(ce.parse(&h, b"data").unwrap());
        assert_eq!(
            (
                e.id.as_str(),
                e.kind.as_str(),
                e.subject.as_str(),
                e.time.as_str()
            ),
            ("c1", "t", "sub", "2026-01-01T00:00:00Z")
        );
        assert_eq!(e.body, json!("data"));
        assert_eq!(e.meta["ceSource"], json!("/s"));
        let h = headers(&[("content-type", "application/cloudevents+json")]);
        let e = event(ce.parse(&h, br#"{"specversion":"1.0","id":"c2","source":"/s","type":"t","data_base64":"AQI=","x-ext":"v"}"#).unwrap());
        assert_eq!(e.body, json!("AQI="));
        assert_eq!(e.meta["bodyEncoding"], json!("base64"));
        assert_eq!(e.meta["ce_x-ext"], json!("v"));
        assert!(
            matches!(ce.parse(&headers(&[]), b"{}"), Err(BodyError::Malformed(m)) if m.contains("not a CloudEvent"))
        );
        assert!(matches!(
            ce.parse(
                &headers(&[("content-type", "application/cloudevents-batch+json")]),
                b"[]"
            ),
            Err(BodyError::Unsupported(_))
        ));
    }

    #[test]
    fn secrets_resolve_from_env_or_file_and_never_inline() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "one\n\n two \n").unwrap();
        let r = SecretRef {
            env: None,
            file: Some(f),
        };
        assert_eq!(r.resolve().unwrap(), vec![b"one".to_vec(), b"two".to_vec()]);
        let r = SecretRef {
            env: Some("TRIPLINE_SURELY_UNSET".into()),
            file: None,
        };
        assert!(r.resolve().unwrap_err().contains("TRIPLINE_SURELY_UNSET"));
        let r = SecretRef {
            env: None,
            file: None,
        };
        assert!(r.resolve().is_err());
        assert!(
            serde_yaml_ng::from_str::<SecretRef>("{value: s3cret}").is_err(),
            "inline secrets are not a thing"
        );
    }
}
