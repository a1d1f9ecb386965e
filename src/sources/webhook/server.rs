//! The webhook routes: one `POST <path>` per [`Endpoint`] and `POST
//! /explain/<source>`, merged into the HTTP server by `serve`. This file
//! owns what every webhook kind shares — the in-flight limit, the body limit,
//! authentication before parsing, and the mapping from an outcome's
//! [`Disposition`] to a status code.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tracing::{info, instrument};

use super::auth::{header_str, Auth};
use super::envelope::{BodyError, Parsed, Provider};
use crate::limits::{ByteBudget, BytesHeld, Limits};
use crate::outcome::{Disposition, Process};

/// One mounted webhook source: where, who may call it, how its requests
/// become events.
pub struct Endpoint {
    pub name: String,
    pub path: String,
    auth: Auth,
    provider: Provider,
}

impl Endpoint {
    /// Mounted at `path`, default `/events/<name>`.
    pub fn new(name: &str, path: Option<&str>, auth: Auth, provider: Provider) -> Self {
        Endpoint {
            name: name.to_string(),
            path: path.map_or_else(|| format!("/events/{name}"), str::to_string),
            auth,
            provider,
        }
    }

    /// Turns a verified request into an event.
    pub fn parse(&self, headers: &HeaderMap, body: &[u8]) -> Result<Parsed, BodyError> {
        self.provider
            .envelope(&self.name, &self.path, headers, body)
    }
}

/// Every webhook endpoint of the config, ready to be routed.
pub struct Webhooks {
    endpoints: Vec<Endpoint>,
    limits: Limits,
}

struct Mounted {
    endpoint: Endpoint,
    permits: Semaphore,
}

#[derive(Clone)]
struct Shared {
    process: Arc<dyn Process>,
    bytes: ByteBudget,
    max_body: usize,
    by_name: Arc<HashMap<String, Arc<Mounted>>>,
}

impl Webhooks {
    pub fn new(endpoints: Vec<Endpoint>, limits: &Limits) -> Self {
        Webhooks {
            endpoints,
            limits: limits.clone(),
        }
    }

    /// `(source name, path)` of every endpoint.
    pub fn mounts(&self) -> Vec<(String, String)> {
        self.endpoints
            .iter()
            .map(|e| (e.name.clone(), e.path.clone()))
            .collect()
    }

    /// The routes: `POST <path>` per endpoint and `POST /explain/<source>`.
    pub fn router(self, process: Arc<dyn Process>, bytes: ByteBudget) -> Router {
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
            process,
            bytes,
            max_body: self.limits.max_body_bytes,
            by_name: Arc::new(
                mounted
                    .iter()
                    .map(|m| (m.endpoint.name.clone(), m.clone()))
                    .collect(),
            ),
        };
        let mut app = Router::new().route("/explain/{source}", post(explain));
        for m in &mounted {
            let name = m.endpoint.name.clone();
            info!(source = %name, path = %m.endpoint.path, "webhook mounted");
            app = app.route(
                &m.endpoint.path,
                post(
                    move |State(s): State<Shared>, headers: HeaderMap, body: Body| async move {
                        deliver(s, &name, headers, body).await
                    },
                ),
            );
        }
        app.with_state(shared)
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
) -> Result<(Parsed, BytesHeld), Response> {
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
    let bytes = match http_body_util::BodyExt::collect(http_body_util::Limited::new(
        body, s.max_body,
    ))
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
    let held = s.bytes.try_hold(bytes.len()).ok_or_else(|| {
        unavailable(
            1,
            json!({"error": "overloaded: too many bytes in flight (limits.maxInFlightBytes), retry later"}),
        )
    })?;
    m.endpoint
        .parse(headers, &bytes)
        .map(|p| (p, held))
        .map_err(|e| match e {
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
    let (event, held) = match intake(&s, &m, &headers, body).await {
        Ok((Parsed::Event(e), held)) => (Arc::new(*e), held),
        Ok((Parsed::Ping, _)) => {
            return reply(
                StatusCode::OK,
                json!({"event_id": header_str(&headers, "X-GitHub-Delivery"), "ping": true, "matched": []}),
            )
        }
        Err(r) => return r,
    };
    // Processing runs to completion even if the sender hangs up, so a
    // submission is never cut in half.
    let process = s.process.clone();
    let outcome = match tokio::spawn(async move {
        let _held = held;
        process.process(event).await
    })
    .await
    {
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
        Ok((Parsed::Event(e), _held)) => {
            let (explanation, rendered) = s.process.explain(&e);
            reply(
                StatusCode::OK,
                json!({"explanation": explanation, "rendered": rendered}),
            )
        }
        Ok((Parsed::Ping, _)) => reply(StatusCode::OK, json!({"ping": true})),
        Err(r) => r,
    }
}
