//! The webhook routes: one `POST <path>` per [`Endpoint`] on the public
//! listener, and `POST /explain/<source>` on the admin one. This file owns
//! what every webhook kind shares, in the order a request meets it:
//!
//! 1. header-only checks (a token, the presence and shape of a signature):
//!    a request failing them costs no body read and no permit (401);
//! 2. the body, read within `limits.bodyReadTimeout` (408) and
//!    `limits.maxBodyBytes` (413, after reading and discarding the rest up to
//!    a bound, so an ordinary client sees the 413 rather than a broken pipe);
//!    a request whose sender is known only from a body signature reads its
//!    body under a bounded pre-authentication budget (`limits.maxPreAuth`);
//! 3. the signature over the body (401), the envelope (400/415) — built at
//!    first with only the parts of the body the sensors read
//!    ([`Process::reads`]; the rest is checked, not built);
//! 4. an event no sensor matches is settled there and then (no permit, no
//!    task, no journal); any other is built whole and processed under the
//!    source's permit (`limits.maxInFlight`) and the byte budget, in a task that owns both
//!    for its whole life;
//! 5. the reply: the outcome if it is final within `intake.replyDeadline`,
//!    otherwise (slow or unavailable API, shutdown, no permit) the event is
//!    written to the [`Journal`] first and the sender gets `202 queued`.
//!
//! A final rejection (dead-lettered) answers 200 with `status: invalid`:
//! senders such as GitLab disable a hook after repeated errors, and nothing
//! they resend would change the answer.

use crate::metrics::RejectionLabels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tracing::{error, info, instrument, warn};

use super::auth::{header_str, Auth};
use super::envelope::{BodyError, Parsed, Provider};
use super::journal::Journal;
use crate::event::{Event, EventReads};
use crate::limits::{ByteBudget, BytesHeld, Limits};
use crate::outcome::{Disposition, Outcome, Process};
use crate::shutdown::Shutdown;
use crate::sources::{read_settling, FirstRead};

/// How much of an oversized body is read and discarded before the 413, so
/// that a client sending it whole reads the answer.
const DRAIN_BYTES: u64 = 32 << 20;

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

    /// [`parse`](Self::parse) with only `reads` of the body built (see
    /// [`Provider::envelope_reading`]).
    fn parse_reading(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        reads: Option<&EventReads>,
    ) -> Result<Parsed, BodyError> {
        self.provider
            .envelope_reading(&self.name, &self.path, headers, body, reads)
    }
}

/// Every webhook endpoint of the config, ready to be routed.
pub struct Webhooks {
    endpoints: Vec<Endpoint>,
    limits: Limits,
}

struct Mounted {
    endpoint: Endpoint,
    /// Processing permits (`limits.maxInFlight`).
    permits: Arc<Semaphore>,
    /// Body reads before the sender is verified (`limits.maxPreAuth`).
    pre_auth: Arc<Semaphore>,
}

/// Replies that were not a plain outcome, per source and status code
/// (`tripline_webhook_rejections_total`).
pub struct Rejections(Family<RejectionLabels, Counter>);

impl Rejections {
    pub fn new(family: Family<RejectionLabels, Counter>) -> Self {
        Rejections(family)
    }

    fn count(&self, source: &str, code: StatusCode) {
        self.0
            .get_or_create(&RejectionLabels {
                source: source.to_string(),
                code: code.as_u16().to_string(),
            })
            .inc();
    }
}

#[derive(Clone)]
struct Shared {
    process: Arc<dyn Process>,
    bytes: ByteBudget,
    journal: Arc<Journal>,
    /// The processing tasks, which outlive their requests.
    tasks: TaskTracker,
    shutdown: Shutdown,
    rejections: Arc<Rejections>,
    reply_deadline: Duration,
    body_read_timeout: Duration,
    max_body: usize,
    by_name: Arc<HashMap<String, Arc<Mounted>>>,
}

/// What the routes need from `serve`.
pub struct Intake {
    pub process: Arc<dyn Process>,
    pub bytes: ByteBudget,
    pub journal: Arc<Journal>,
    pub tasks: TaskTracker,
    pub shutdown: Shutdown,
    pub rejections: Arc<Rejections>,
    pub reply_deadline: Duration,
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

    /// `(public, admin)` routes: `POST <path>` per endpoint on the public
    /// listener; `POST /explain/<source>` on the admin one.
    pub fn routers(self, intake: Intake) -> (Router, Router) {
        let mounted: Vec<Arc<Mounted>> = self
            .endpoints
            .into_iter()
            .map(|endpoint| {
                Arc::new(Mounted {
                    endpoint,
                    permits: Arc::new(Semaphore::new(self.limits.max_in_flight)),
                    pre_auth: Arc::new(Semaphore::new(self.limits.max_pre_auth)),
                })
            })
            .collect();
        let shared = Shared {
            process: intake.process,
            bytes: intake.bytes,
            journal: intake.journal,
            tasks: intake.tasks,
            shutdown: intake.shutdown,
            rejections: intake.rejections,
            reply_deadline: intake.reply_deadline,
            body_read_timeout: self.limits.body_read_timeout,
            max_body: self.limits.max_body_bytes,
            by_name: Arc::new(
                mounted
                    .iter()
                    .map(|m| (m.endpoint.name.clone(), m.clone()))
                    .collect(),
            ),
        };
        let mut public = Router::new();
        for m in &mounted {
            let name = m.endpoint.name.clone();
            info!(source = %name, path = %m.endpoint.path, "webhook mounted");
            public = public.route(
                &m.endpoint.path,
                post(
                    move |State(s): State<Shared>, headers: HeaderMap, body: Body| async move {
                        deliver(s, &name, headers, body).await
                    },
                ),
            );
        }
        let admin = Router::new()
            .route("/explain/{source}", post(explain))
            .with_state(shared.clone());
        (public.with_state(shared), admin)
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

/// Why a request was refused: its reply, counted per source and code.
struct Refused(StatusCode, Response);

fn refuse(code: StatusCode, body: Value) -> Refused {
    let response = if code == StatusCode::SERVICE_UNAVAILABLE {
        unavailable(1, body)
    } else {
        reply(code, body)
    };
    Refused(code, response)
}

/// Reads the body within the deadline and the limit. Over the limit, the
/// rest is read and discarded (up to [`DRAIN_BYTES`], within the deadline)
/// before the 413, so that the sender reads it.
async fn read_body(s: &Shared, headers: &HeaderMap, body: Body) -> Result<bytes::Bytes, Refused> {
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": format!("body is larger than the {} byte limit", s.max_body)}),
        )
    };
    let deadline = tokio::time::Instant::now() + s.body_read_timeout;
    let timed_out = || {
        refuse(
            StatusCode::REQUEST_TIMEOUT,
            json!({"error": format!("the body did not arrive within {:?}", s.body_read_timeout)}),
        )
    };
    let declared = header_str(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut over = declared.is_some_and(|n| n > s.max_body as u64);
    if over && declared.is_some_and(|n| n > DRAIN_BYTES) {
        return Err(too_large());
    }
    let mut drained: u64 = 0;
    loop {
        let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) if over => return Err(too_large()),
            Err(_) => return Err(timed_out()),
            Ok(None) => break,
            Ok(Some(Ok(c))) => c,
            Ok(Some(Err(e))) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    json!({"error": format!("cannot read body: {e}")}),
                ))
            }
        };
        if over {
            drained += chunk.len() as u64;
            if drained > DRAIN_BYTES {
                return Err(too_large());
            }
            continue;
        }
        if buf.len() + chunk.len() > s.max_body {
            over = true;
            drained = (buf.len() + chunk.len()) as u64;
            buf = bytes::BytesMut::new();
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if over {
        return Err(too_large());
    }
    Ok(buf.freeze())
}

/// What a verified request turned into.
enum Intook {
    /// Parsed, with room held for it in the byte budget.
    Parsed(Parsed, Option<BytesHeld>),
    /// An event nothing wants, settled ([`read_settling`]).
    Settled(Outcome),
}

/// Reads a verified request; with `settle`, an event nothing wants is
/// settled from the parts of its body the sensors read ([`read_settling`]:
/// the rest is checked, not built) and any other is read whole.
async fn intake(
    s: &Shared,
    m: &Mounted,
    headers: &HeaderMap,
    body: Body,
    settle: bool,
) -> Result<Intook, Refused> {
    let unauthorized = |f: super::auth::AuthFailure| {
        warn!(source = %m.endpoint.name, check = %f.check, error = %f.error, "webhook rejected");
        refuse(
            StatusCode::UNAUTHORIZED,
            json!({"error": f.error, "check": f.check}),
        )
    };
    m.endpoint
        .auth
        .check_headers(headers)
        .map_err(unauthorized)?;
    // A sender known only from a signature over the body reads it under the
    // pre-authentication budget.
    let _pre_auth = if m.endpoint.auth.needs_body() {
        Some(m.pre_auth.clone().try_acquire_owned().map_err(|_| {
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "overloaded: too many unverified requests in flight, retry later"}),
            )
        })?)
    } else {
        None
    };
    let bytes = read_body(s, headers, body).await?;
    m.endpoint
        .auth
        .verify(headers, &bytes)
        .map_err(unauthorized)?;
    let read = |reads: Option<&EventReads>| m.endpoint.parse_reading(headers, &bytes, reads);
    let first = match settle {
        true => read_settling(
            s.process.as_ref(),
            &m.endpoint.name,
            m.endpoint.provider.in_part(),
            read,
            |p| match p {
                Parsed::Event(e) => Some(e),
                Parsed::Ping => None,
            },
        ),
        false => read(None).map(FirstRead::Wanted),
    }
    .map_err(|e| match e {
        BodyError::Malformed(msg) => refuse(StatusCode::BAD_REQUEST, json!({"error": msg})),
        BodyError::Unsupported(msg) => {
            refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, json!({"error": msg}))
        }
    })?;
    match first {
        // Nothing wants it: answered now, with no permit, task or journal
        // entry — also while the permits are taken or shutdown has begun;
        // a queued copy of the same delivery is dropped.
        FirstRead::Settled(parsed, outcome) => {
            if let Parsed::Event(event) = &parsed {
                s.journal.settled(event);
            }
            Ok(Intook::Settled(outcome))
        }
        FirstRead::Wanted(parsed) => Ok(Intook::Parsed(parsed, s.bytes.try_hold(bytes.len()))),
    }
}

#[instrument(skip_all, fields(source = %name))]
async fn deliver(s: Shared, name: &str, headers: HeaderMap, body: Body) -> Response {
    let m = s.by_name[name].clone();
    let (event, held) = match intake(&s, &m, &headers, body, true).await {
        Ok(Intook::Settled(outcome)) => return reply(StatusCode::OK, outcome_json(&outcome)),
        Ok(Intook::Parsed(Parsed::Event(e), held)) => (Arc::new(*e), held),
        Ok(Intook::Parsed(Parsed::Ping, _)) => {
            return reply(
                StatusCode::OK,
                json!({"event_id": header_str(&headers, "X-GitHub-Delivery"), "ping": true, "matched": []}),
            )
        }
        Err(Refused(code, response)) => {
            s.rejections.count(name, code);
            return response;
        }
    };
    let permit = m.permits.clone().try_acquire_owned().ok();
    match (permit, held) {
        (Some(permit), Some(held)) if !s.shutdown.is_begun() => {
            process_or_queue(&s, name, event, permit, held).await
        }
        // No room to process it now: queued durably, processed by the
        // journal worker.
        _ => queue(&s, name, &event, None).await,
    }
}

/// Processes `event` in a task of its own (which keeps the permits even if
/// the sender hangs up); answers with the outcome if it is final within the
/// reply deadline, else queues the event and answers 202.
async fn process_or_queue(
    s: &Shared,
    name: &str,
    event: Arc<Event>,
    permit: OwnedSemaphorePermit,
    held: BytesHeld,
) -> Response {
    let key = Journal::key(&event);
    // While this task runs, the journal worker leaves the entry alone.
    let claimed = s.journal.claim(&key);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let task = {
        let (process, journal, event, key) = (
            s.process.clone(),
            s.journal.clone(),
            event.clone(),
            key.clone(),
        );
        async move {
            let _permits = (permit, held);
            let outcome = process.process(event).await;
            let final_outcome = outcome.disposition() != Disposition::Retry;
            if final_outcome {
                // If it was queued meanwhile, it is done now.
                journal.remove_if_queued(&key);
            }
            if claimed {
                journal.release(&key);
            }
            let _ = done_tx.send(outcome);
        }
    };
    s.tasks.spawn(task);
    // Shutting down, the outcome gets half the drain deadline at most: the
    // event must be in the journal before the process exits.
    let shutdown_grace = async {
        s.shutdown.begun().await;
        tokio::time::sleep(s.shutdown.deadline() / 2).await
    };
    let waited = tokio::select! {
        outcome = done_rx => outcome.ok(),
        _ = tokio::time::sleep(s.reply_deadline) => None,
        _ = shutdown_grace => None,
    };
    match waited {
        Some(outcome) => match outcome.disposition() {
            Disposition::Done | Disposition::Rejected => {
                reply(StatusCode::OK, outcome_json(&outcome))
            }
            Disposition::Retry => queue(s, name, &event, Some(&outcome)).await,
        },
        None => queue(s, name, &event, None).await,
    }
}

fn outcome_json(outcome: &Outcome) -> Value {
    serde_json::to_value(outcome).unwrap_or_default()
}

/// Writes `event` to the journal and answers `202 queued` with the names
/// its objects will get; if even that fails, 503 (the sender may retry).
async fn queue(s: &Shared, name: &str, event: &Event, outcome: Option<&Outcome>) -> Response {
    if let Err(e) = s.journal.append(event).await {
        error!(source = %name, error = %e, "cannot queue the delivery");
        s.rejections.count(name, StatusCode::SERVICE_UNAVAILABLE);
        return unavailable(
            5,
            json!({"event_id": event.id, "error": format!("not processed and cannot be queued: {e}")}),
        );
    }
    let matched: Vec<Value> = match outcome {
        Some(o) => o
            .matched
            .iter()
            .map(|t| json!({"sensor": t.sensor, "trigger": t.trigger, "name": t.name, "status": "queued", "message": t.message}))
            .collect(),
        None => s
            .process
            .explain(event)
            .1
            .iter()
            .map(|r| {
                let name = r.object.as_ref().and_then(|o| o["metadata"]["name"].as_str());
                json!({"sensor": r.sensor, "trigger": r.trigger, "name": name, "status": "queued"})
            })
            .collect(),
    };
    reply(
        StatusCode::ACCEPTED,
        json!({"event_id": event.id, "status": "queued", "matched": matched}),
    )
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
    // Explaining renders every trigger: it takes a processing permit too.
    let Ok(_permit) = m.permits.clone().try_acquire_owned() else {
        return unavailable(1, json!({"error": "overloaded, retry later"}));
    };
    match intake(&s, &m, &headers, body, false).await {
        Ok(Intook::Parsed(Parsed::Event(e), _held)) => {
            let (explanation, rendered) = s.process.explain(&e);
            reply(
                StatusCode::OK,
                json!({"explanation": explanation, "rendered": rendered}),
            )
        }
        Ok(Intook::Parsed(Parsed::Ping, _)) => reply(StatusCode::OK, json!({"ping": true})),
        // (Not asked for: explaining reads the whole event.)
        Ok(Intook::Settled(outcome)) => reply(StatusCode::OK, outcome_json(&outcome)),
        Err(Refused(_, r)) => r,
    }
}

/// The processing tasks that outlived their requests: waited for at
/// shutdown (the drain deadline bounds it); an unfinished one's event is in
/// the journal already.
pub async fn wait_tasks(tasks: TaskTracker) {
    tasks.close();
    tasks.wait().await;
}
