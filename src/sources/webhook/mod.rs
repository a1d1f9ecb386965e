//! Webhooks: routes on the public HTTP listener for every HTTP source kind.
//!
//! Each source is mounted at its `path` (default `/events/<name>`). A request
//! is authenticated as far as its headers allow before anything is spent,
//! its body read within a deadline and a limit, verified (GitHub HMAC, GitLab
//! token, generic HMAC or bearer), parsed into an event, processed, and
//! answered — the reply says what was created, or why not:
//!
//! | reply | when |
//! |---|---|
//! | 200 | every trigger has a final outcome (`created`/`existing`/`waiting`/`invalid` — a rejection is final and dead-lettered), or nothing matched |
//! | 202 | not final within `intake.replyDeadline` (slow or unavailable API, overload, shutdown): written to the journal, processed from there; the reply names the objects to come |
//! | 400 | malformed body (JSON error with line and column), missing required header |
//! | 401 | signature/token missing or wrong; the body names the failing check |
//! | 408 | the body did not arrive within `limits.bodyReadTimeout` |
//! | 413 | body over `limits.maxBodyBytes` (answered after the rest is read and discarded) |
//! | 415 | content type not supported |
//! | 431 | request head over `limits.maxHeaderBytes` |
//! | 503 | too many unverified requests at once, or the journal cannot be written; `Retry-After` set |
//!
//! `POST /explain/<source>` (on the admin listener) takes the same request and
//! answers with the per-filter explanation and the rendered objects,
//! submitting nothing.
//!
//! * [`config`] — what users write per kind, and the [`Endpoint`] each becomes.
//! * [`auth`] — signatures and tokens, checked before the body is parsed.
//! * [`envelope`] — request → event, one [`envelope::Provider`] per kind.
//! * [`server`] — the routes, limits and the outcome → status mapping.
//! * [`journal`] — where deliveries wait when their outcome is not final in time.

pub mod auth;
pub mod config;
pub mod envelope;
pub mod journal;
pub mod server;

pub use auth::{Algorithm, Encoding};
pub use config::{CloudEventsConfig, GenericConfig, GithubConfig, GitlabConfig, HttpConfig};
pub use journal::Journal;
pub use server::{Endpoint, Intake, Rejections, Webhooks};
