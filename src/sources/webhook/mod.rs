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
//!
//! * [`config`] — what users write per kind, and the [`Endpoint`] each becomes.
//! * [`auth`] — signatures and tokens, checked before the body is parsed.
//! * [`envelope`] — request → event, one [`envelope::Provider`] per kind.
//! * [`server`] — the routes, limits and the outcome → status mapping.

pub mod auth;
pub mod config;
pub mod envelope;
pub mod server;

pub use auth::{Algorithm, Encoding};
pub use config::{CloudEventsConfig, GenericConfig, GithubConfig, GitlabConfig, HttpConfig};
pub use server::{Endpoint, Webhooks};
