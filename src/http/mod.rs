//! The HTTP server, independent of any source: the admin endpoints
//! (`/healthz`, `/readyz`, `/metrics`) plus the routes sources contribute
//! (the webhook endpoints and `/explain/<source>`), one listener, graceful
//! shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tracing::info;

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
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
}

/// `/healthz` (the process answers), `/readyz` (every source ready; 503 and
/// per-source details otherwise) and `/metrics` (Prometheus text).
pub fn admin_router(engine: Arc<Engine>, readiness: Arc<Readiness>) -> Router {
    Router::new()
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
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    engine.metrics(),
                )
                    .into_response()
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

/// A bound listener, so the caller can say where it listens before serving.
pub struct Server {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl Server {
    pub async fn bind(listen: SocketAddr) -> Result<Server, HttpError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|error| HttpError::Listen {
                addr: listen,
                error,
            })?;
        let addr = listener.local_addr().unwrap_or(listen);
        Ok(Server { listener, addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `router` until shutdown begins, then lets requests in flight
    /// finish (the caller bounds that with the drain deadline).
    pub async fn serve(self, router: Router, shutdown: Shutdown) -> Result<(), HttpError> {
        info!(addr = %self.addr, "listening");
        let app = router.fallback(not_found);
        axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { shutdown.begun().await })
            .await
            .map_err(HttpError::Serve)
    }
}
