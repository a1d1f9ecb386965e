//! What users write for webhook sources (`type: http | github | gitlab |
//! generic | cloudevents`), and how each becomes a mounted [`Endpoint`].

use crate::sensor::ArgoSource;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::auth::{Algorithm, Auth, Encoding};
use super::envelope::Provider;
use super::server::Endpoint;
use crate::secret::SecretRef;
use crate::sources::SourceError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpConfig {
    pub name: String,
    /// Argo Events compatibility: binding alias, `jsonBody`, `metadata`.
    #[serde(default)]
    pub argo: Option<ArgoSource>,
    #[serde(default)]
    pub path: Option<String>,
    /// Header holding a delivery id (default: none, the id is a body hash).
    #[serde(default)]
    pub id_header: Option<String>,
    /// Where in the body the delivery id is, for senders that put it there
    /// (`body.delivery.id`); used when `idHeader` is unset or absent.
    #[serde(default)]
    pub id_from: Option<String>,
    /// Header holding the event type.
    #[serde(default)]
    pub type_header: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    pub name: String,
    /// Argo Events compatibility: binding alias, `jsonBody`, `metadata`.
    #[serde(default)]
    pub argo: Option<ArgoSource>,
    #[serde(default)]
    pub path: Option<String>,
    /// The webhook secret configured in GitHub.
    pub secret: SecretRef,
    /// What makes two deliveries the same event: `delivery` (default: the
    /// `X-GitHub-Delivery` id, so GitHub's redeliveries are one event) or
    /// `body` (a hash of the signed body, so a captured body replayed under
    /// a new delivery id is one event too).
    #[serde(default)]
    pub dedupe: Dedupe,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Dedupe {
    #[default]
    Delivery,
    Body,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitlabConfig {
    pub name: String,
    /// Argo Events compatibility: binding alias, `jsonBody`, `metadata`.
    #[serde(default)]
    pub argo: Option<ArgoSource>,
    #[serde(default)]
    pub path: Option<String>,
    /// The "Secret token" configured in GitLab.
    pub token: SecretRef,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GenericConfig {
    pub name: String,
    /// Argo Events compatibility: binding alias, `jsonBody`, `metadata`.
    #[serde(default)]
    pub argo: Option<ArgoSource>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub hmac: Option<HmacConfig>,
    /// `Authorization: Bearer <token>`.
    #[serde(default)]
    pub bearer: Option<SecretRef>,
    #[serde(default)]
    pub id_header: Option<String>,
    /// As for `type: http`.
    #[serde(default)]
    pub id_from: Option<String>,
    #[serde(default)]
    pub type_header: Option<String>,
}

impl GenericConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        id_from_path(self.id_from.as_deref())?;
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudEventsConfig {
    pub name: String,
    /// Argo Events compatibility: binding alias, `jsonBody`, `metadata`.
    #[serde(default)]
    pub argo: Option<ArgoSource>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub bearer: Option<SecretRef>,
}

/// Resolves a secret for source `name`; a missing one fails the start
/// (better than failing the first delivery).
fn secrets(name: &str, r: &SecretRef) -> Result<Vec<Vec<u8>>, SourceError> {
    r.resolve().map_err(|message| SourceError::Secret {
        source_name: name.to_string(),
        message,
    })
}

/// The plain-HTTP provider of `http` and `generic` sources: ids from a
/// header or a body path, the type from a header.
fn http_provider(
    name: &str,
    id_header: &Option<String>,
    id_from: Option<&str>,
    type_header: &Option<String>,
) -> Result<Provider, SourceError> {
    Ok(Provider::Http {
        id_header: id_header.clone(),
        id_from: id_from_path(id_from).map_err(|(_, message)| SourceError::Failed {
            source_name: name.to_string(),
            message,
        })?,
        type_header: type_header.clone(),
    })
}

impl HttpConfig {
    pub fn endpoint(&self) -> Result<Endpoint, SourceError> {
        let provider = http_provider(
            &self.name,
            &self.id_header,
            self.id_from.as_deref(),
            &self.type_header,
        )?;
        Ok(Endpoint::new(
            &self.name,
            self.path.as_deref(),
            Auth::None,
            provider,
        ))
    }
}

impl GithubConfig {
    pub fn endpoint(&self) -> Result<Endpoint, SourceError> {
        let auth = Auth::GithubHmac(secrets(&self.name, &self.secret)?);
        Ok(Endpoint::new(
            &self.name,
            self.path.as_deref(),
            auth,
            Provider::Github {
                dedupe_body: self.dedupe == Dedupe::Body,
            },
        ))
    }
}

impl GitlabConfig {
    pub fn endpoint(&self) -> Result<Endpoint, SourceError> {
        let auth = Auth::GitlabToken(secrets(&self.name, &self.token)?);
        Ok(Endpoint::new(
            &self.name,
            self.path.as_deref(),
            auth,
            Provider::Gitlab,
        ))
    }
}

impl GenericConfig {
    pub fn endpoint(&self) -> Result<Endpoint, SourceError> {
        let auth = match (&self.hmac, &self.bearer) {
            (Some(h), _) => Auth::Hmac {
                header: h.header.clone(),
                algorithm: h.algorithm,
                prefix: h.prefix.clone(),
                encoding: h.encoding,
                secrets: secrets(&self.name, &h.secret)?,
                timestamp: h
                    .timestamp
                    .as_ref()
                    .map(|t| (t.header.clone(), t.tolerance)),
            },
            (None, Some(b)) => Auth::Bearer(secrets(&self.name, b)?),
            (None, None) => Auth::None,
        };
        let provider = http_provider(
            &self.name,
            &self.id_header,
            self.id_from.as_deref(),
            &self.type_header,
        )?;
        Ok(Endpoint::new(
            &self.name,
            self.path.as_deref(),
            auth,
            provider,
        ))
    }
}

impl CloudEventsConfig {
    pub fn endpoint(&self) -> Result<Endpoint, SourceError> {
        let auth = match &self.bearer {
            Some(b) => Auth::Bearer(secrets(&self.name, b)?),
            None => Auth::None,
        };
        Ok(Endpoint::new(
            &self.name,
            self.path.as_deref(),
            auth,
            Provider::CloudEvents,
        ))
    }
}

impl HttpConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        id_from_path(self.id_from.as_deref()).map(|_| ())
    }
}

/// `idFrom: body.a.b` → `["a", "b"]`.
fn id_from_path(id_from: Option<&str>) -> Result<Option<Vec<String>>, (String, String)> {
    let Some(p) = id_from else { return Ok(None) };
    match p.strip_prefix("body.") {
        Some(rest) if !rest.is_empty() && rest.split('.').all(|s| !s.is_empty()) => {
            Ok(Some(rest.split('.').map(str::to_string).collect()))
        }
        _ => Err((
            "idFrom".into(),
            format!("`{p}` must be a dotted path into the body, like `body.delivery.id`"),
        )),
    }
}

/// Paths the HTTP server serves itself.
const RESERVED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// A mount path must start with `/` and be a literal path (no `{capture}`,
/// no `*wildcard`: the router would take them as patterns).
pub fn check_path(path: &str) -> Result<(), (String, String)> {
    if !path.starts_with('/') {
        return Err(("path".into(), format!("`{path}` must start with `/`")));
    }
    if RESERVED.contains(&path) || path.starts_with("/explain/") || path == "/explain" {
        return Err((
            "path".into(),
            format!(
                "`{path}` is served by tripline itself (/healthz, /readyz, /metrics, /explain/…)"
            ),
        ));
    }
    if path.contains(['{', '}', '*']) {
        return Err((
            "path".into(),
            format!("`{path}` must be a literal path (no `{{…}}` or `*`)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::envelope::{BodyError, Parsed};
    use super::*;
    use crate::event::Event;
    use axum::http::{HeaderMap, HeaderValue};
    use serde_json::json;

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

    fn endpoint<C: serde::de::DeserializeOwned>(
        cfg: &str,
        build: impl Fn(&C) -> Result<Endpoint, SourceError>,
    ) -> Endpoint {
        build(&serde_yaml_ng::from_str::<C>(cfg).unwrap()).unwrap()
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
        let gh = endpoint(
            "{name: gh, secret: {env: TRIPLINE_UNIT_SECRET}}",
            GithubConfig::endpoint,
        );
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

        let gl = endpoint(
            "{name: gl, path: /gl, token: {env: TRIPLINE_UNIT_SECRET}}",
            GitlabConfig::endpoint,
        );
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

        let ce = endpoint("{name: ce}", CloudEventsConfig::endpoint);
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
    fn delivery_ids_from_the_body_and_gitlab_idempotency_key() {
        let json_ct = headers(&[("content-type", "application/json")]);
        let h = endpoint("{name: h, idFrom: body.delivery.id}", HttpConfig::endpoint);
        let e = event(h.parse(&json_ct, br#"{"delivery":{"id":"d-7"}}"#).unwrap());
        assert_eq!(e.id, "d-7");
        let e = event(h.parse(&json_ct, br#"{"delivery":{"id":42}}"#).unwrap());
        assert_eq!(e.id, "42");
        assert!(matches!(
            h.parse(&json_ct, b"{}"),
            Err(BodyError::Malformed(m)) if m.contains("idFrom")
        ));
        std::env::set_var("TRIPLINE_UNIT_SECRET", "s");
        let gl = endpoint(
            "{name: gl, token: {env: TRIPLINE_UNIT_SECRET}}",
            GitlabConfig::endpoint,
        );
        let h = headers(&[
            ("x-gitlab-event", "Push Hook"),
            ("x-gitlab-event-uuid", "u1"),
            ("idempotency-key", "k1"),
        ]);
        assert_eq!(event(gl.parse(&h, b"{}").unwrap()).id, "k1");
        // dedupe: body — a signed body replayed under a new delivery id is
        // the same event.
        let gh = endpoint(
            "{name: gh, secret: {env: TRIPLINE_UNIT_SECRET}, dedupe: body}",
            GithubConfig::endpoint,
        );
        let id = |delivery: &str| {
            let h = headers(&[
                ("x-github-event", "push"),
                ("x-github-delivery", delivery),
                ("content-type", "application/json"),
            ]);
            event(gh.parse(&h, br#"{"after":"abc"}"#).unwrap())
        };
        assert_eq!(id("d-1").id, id("d-2").id);
        assert!(id("d-1").id.starts_with("sha256:"));
        assert_eq!(id("d-1").meta["delivery"], json!("d-1"));
        // CloudEvents ids are unique per `source` only: the identity says so.
        let ce = endpoint("{name: ce}", CloudEventsConfig::endpoint);
        let from = |src: &str| {
            let h = headers(&[
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", src),
                ("ce-type", "t"),
            ]);
            event(ce.parse(&h, b"{}").unwrap()).identity()
        };
        assert_ne!(from("/a"), from("/b"));
        assert_eq!(from("/a"), from("/a"));
    }
}
