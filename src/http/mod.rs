//! The HTTP servers, independent of any source: the public listener (the
//! webhook routes and `/healthz`) and the admin listener (`/healthz`,
//! `/readyz`, `/metrics`, `/status`, `/explain/<source>`), each with connection
//! limits (head size and read timeout, connection cap) and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::ServiceExt;
use tracing::{debug, info, warn};

pub mod status;

use crate::engine::Engine;
use crate::readiness::Readiness;
use crate::shutdown::Shutdown;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// Run before `/metrics` is encoded: sets gauges a part keeps on its own.
pub type BeforeScrape = Arc<dyn Fn() + Send + Sync>;

/// `/healthz` (the process answers), `/readyz` (every source ready; 503 and
/// per-source details otherwise), `/metrics` (OpenMetrics text, after
/// `before_scrape` set the gauges it owns) and the [`status`] page.
pub fn admin_router(
    engine: Arc<Engine>,
    readiness: Arc<Readiness>,
    before_scrape: Vec<BeforeScrape>,
) -> Router {
    status::routes(engine.clone(), readiness.clone())
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || async move {
                let (ready, detail) = readiness.report();
                let code = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (code, Json(json!({"ready": ready, "sources": detail}))).into_response()
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                for f in &before_scrape {
                    f();
                }
                let text = engine.metrics();
                ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
            }),
        )
}

/// Anything else: a JSON 404 naming the path.
async fn not_found(uri: axum::http::Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no source is mounted at {}", uri.path())})),
    )
        .into_response()
}

/// How a listener treats its connections (from `limits`).
#[derive(Debug, Clone)]
pub struct ConnLimits {
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

/// How long an open connection may still send its request once shutdown
/// began (a client that connected an instant before it is served, not
/// dropped); then idle connections are closed.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// A bound listener, so the caller can say where it listens before serving.
/// Cloning shares the socket: a config reload serves the next generation's
/// routes on the same listener, so connections wait in its backlog instead
/// of being refused while the sources are rebuilt.
#[derive(Clone)]
pub struct Server {
    listener: Arc<tokio::net::TcpListener>,
    addr: SocketAddr,
    limits: ConnLimits,
}

impl Server {
    pub async fn bind(listen: SocketAddr, limits: ConnLimits) -> Result<Server, HttpError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|error| HttpError::Listen {
                addr: listen,
                error,
            })?;
        let addr = listener.local_addr().unwrap_or(listen);
        Ok(Server {
            listener: Arc::new(listener),
            addr,
            limits,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The same socket with other connection limits (a reload may change them).
    pub fn with_limits(mut self, limits: ConnLimits) -> Server {
        self.limits = limits;
        self
    }

    /// Serves `router` (HTTP/1.1) until shutdown begins, then stops accepting
    /// and lets requests in flight finish (the caller bounds that with the
    /// drain deadline). Each connection gets `header_read_timeout` for every
    /// request head (an idle keep-alive connection is closed after it), heads
    /// over `max_header_bytes` get 431, and at most `max_connections` are
    /// open at once (more wait in the accept queue).
    pub async fn serve(self, router: Router, shutdown: Shutdown) -> Result<(), HttpError> {
        info!(addr = %self.addr, "listening");
        let app = router.fallback(not_found);
        let slots = Arc::new(Semaphore::new(self.limits.max_connections));
        let mut connections = JoinSet::new();
        loop {
            let slot = tokio::select! {
                _ = shutdown.begun() => break,
                slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            };
            let (stream, peer) = tokio::select! {
                _ = shutdown.begun() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: wait a moment rather than spin.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            while connections.try_join_next().is_some() {}
            let service = TowerToHyperService::new(app.clone().map_request(
                move |mut r: http::Request<Incoming>| {
                    r.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                    r.map(axum::body::Body::new)
                },
            ));
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(self.limits.header_read_timeout)
                .max_buf_size(self.limits.max_header_bytes.max(8192))
                .keep_alive(true);
            let shutdown = shutdown.clone();
            connections.spawn(async move {
                let _slot = slot;
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    done = conn.as_mut() => {
                        if let Err(e) = done {
                            debug!(error = %e, "connection ended");
                        }
                    }
                    _ = shutdown.begun() => {
                        // A connection accepted just before the shutdown may
                        // not have sent its request yet (hyper would close it
                        // as idle): give it a moment, then close gracefully.
                        tokio::select! {
                            done = conn.as_mut() => {
                                if let Err(e) = done {
                                    debug!(error = %e, "connection ended");
                                }
                                return;
                            }
                            _ = tokio::time::sleep(SHUTDOWN_GRACE) => {}
                        }
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
        // Requests in flight finish; the caller's deadline bounds the wait.
        while connections.join_next().await.is_some() {}
        Ok(())
    }
}
