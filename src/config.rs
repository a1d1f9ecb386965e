//! `tripline.yaml`: server settings, sources, submit target. Strict: unknown
//! fields are errors, reported with their path. Relative paths are relative
//! to the config file.
//!
//! The root config gathers every source's own config type into one tagged
//! enum ([`SourceConfig`], `type: github`) and builds the running sources
//! from it ([`Config::build_sources`]): webhook endpoints for the HTTP
//! server, one task per broker source.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::limits::Limits;
use crate::sensor::{ArgoSource, SourceCatalog};
use crate::sources::kafka::{KafkaConfig, KafkaSource};
use crate::sources::nats::{NatsConfig, NatsSource};
use crate::sources::webhook::journal::NatsJournalConfig;
use crate::sources::webhook::{self, Endpoint};
use crate::sources::{Source, SourceError};
use crate::state::nats_kv::NatsKvConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// The public listener: webhook paths and `/healthz`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub limits: Limits,
    /// Sensor file or directory.
    #[serde(default = "default_sensors")]
    pub sensors: PathBuf,
    /// How often the sensor files are checked for changes (an edit, a
    /// ConfigMap's symlink swap); a change reloads them as SIGHUP does.
    /// `0s`: only on SIGHUP.
    #[serde(default = "default_watch_sensors", with = "humantime_serde")]
    pub watch_sensors: Duration,
    #[serde(default)]
    pub submit: SubmitConfig,
    /// JSON-lines file for objects the API rejected.
    #[serde(default = "default_dead_letter")]
    pub dead_letter: PathBuf,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// The admin listener: `/readyz`, `/metrics`, `/explain/<source>`.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Where multi-dependency triggers keep what they wait for.
    #[serde(default)]
    pub correlation: CorrelationConfig,
    /// Webhook intake: the journal and the reply deadline.
    #[serde(default)]
    pub intake: IntakeConfig,
    /// More headers that carry credentials (beyond `Authorization`,
    /// `Cookie`, `X-Api-Key`… — see `redact::CREDENTIAL_HEADERS`): dropped by
    /// every source before the event is built.
    #[serde(default)]
    pub redact_headers: Vec<String>,
}

/// `correlation:` — the state store of multi-dependency triggers.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "store", rename_all = "lowercase")]
pub enum CorrelationConfig {
    /// A directory of fsynced files (default `correlation/`): survives
    /// restarts; one process.
    Local {
        #[serde(default = "default_correlation_dir")]
        dir: PathBuf,
    },
    /// A NATS JetStream KeyValue bucket shared by every replica.
    Nats(NatsKvConfig),
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        CorrelationConfig::Local {
            dir: default_correlation_dir(),
        }
    }
}

fn default_correlation_dir() -> PathBuf {
    "correlation".into()
}

/// `admin:` — the listener for operators, apart from the public one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AdminConfig {
    /// Default `127.0.0.1:9090`: loopback, its own port.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
        }
    }
}

/// `intake:` — what a webhook delivery does when its outcome is not final in
/// time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IntakeConfig {
    /// Where queued deliveries wait: a directory (default `journal/`), or
    /// `{nats: {urls, stream}}` for a JetStream stream every replica drains.
    #[serde(default = "default_journal")]
    pub journal: JournalConfig,
    /// How long a sender waits for the outcome before `202 queued`
    /// (default 5s: GitHub gives up after 10 s).
    #[serde(default = "default_reply_deadline", with = "humantime_serde")]
    pub reply_deadline: Duration,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig {
            journal: default_journal(),
            reply_deadline: default_reply_deadline(),
        }
    }
}

fn default_admin_listen() -> SocketAddr {
    "127.0.0.1:9090".parse().expect("valid address")
}
fn default_journal() -> JournalConfig {
    JournalConfig::Dir("journal".into())
}

/// `intake.journal`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum JournalConfig {
    Dir(PathBuf),
    Nats { nats: NatsJournalConfig },
}
fn default_watch_sensors() -> Duration {
    Duration::from_secs(2)
}
fn default_reply_deadline() -> Duration {
    Duration::from_secs(5)
}

/// Where objects go.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SubmitConfig {
    /// YAML files in a directory; no cluster needed.
    Outbox {
        #[serde(default = "default_outbox")]
        dir: PathBuf,
        #[serde(default = "default_namespace")]
        namespace: String,
    },
    /// The Kubernetes API: in-cluster config, `kubeconfig`, or `$KUBECONFIG`.
    Kubernetes {
        #[serde(default = "default_namespace")]
        namespace: String,
        #[serde(default)]
        kubeconfig: Option<PathBuf>,
        #[serde(default)]
        context: Option<String>,
        /// Per-request timeout (default 10s).
        #[serde(default = "default_api_timeout", with = "humantime_serde")]
        timeout: Duration,
    },
}

impl Default for SubmitConfig {
    fn default() -> Self {
        SubmitConfig::Outbox {
            dir: default_outbox(),
            namespace: default_namespace(),
        }
    }
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:8080".parse().expect("valid address")
}
fn default_sensors() -> PathBuf {
    "sensors".into()
}
fn default_dead_letter() -> PathBuf {
    "dead-letter.jsonl".into()
}
fn default_outbox() -> PathBuf {
    "outbox".into()
}
fn default_namespace() -> String {
    "default".into()
}
fn default_api_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {field}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

impl Config {
    /// Reads and validates `path`; relative paths inside become relative to it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Config::parse(&text).map_err(|(field, message)| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            message,
        })?;
        cfg.rebase(path.parent().unwrap_or(Path::new(".")));
        Ok(cfg)
    }

    /// Parses and validates config text; errors are `(field, message)`.
    pub fn parse(text: &str) -> Result<Config, (String, String)> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            (
                if field == "." { "-".into() } else { field },
                e.into_inner().to_string(),
            )
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let mut names = HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let name = s.name();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err((
                    format!("sources[{i}].name"),
                    format!("`{name}` must be letters, digits, `-` or `_`"),
                ));
            }
            if !names.insert(name) {
                return Err((
                    format!("sources[{i}].name"),
                    format!("source `{name}` is declared twice"),
                ));
            }
            s.validate()
                .map_err(|(f, m)| (format!("sources[{i}].{f}"), m))?;
        }
        let mut aliases = std::collections::HashMap::new();
        for (i, s) in self.sources.iter().enumerate() {
            let Some(a) = s.argo() else { continue };
            a.validate()
                .map_err(|(f, m)| (format!("sources[{i}].{f}"), m))?;
            if let Some((e, n)) = a.alias() {
                if let Some(other) = aliases.insert((e, n), s.name()) {
                    return Err((
                        format!("sources[{i}].argo"),
                        format!("Argo event '{e}/{n}' is already bound to source `{other}`"),
                    ));
                }
            }
        }
        self.limits
            .validate()
            .map_err(|(f, m)| (format!("limits.{f}"), m))?;
        if let JournalConfig::Nats { nats } = &self.intake.journal {
            nats.validate()
                .map_err(|(f, m)| (format!("intake.journal.nats.{f}"), m))?;
        }
        if let CorrelationConfig::Nats(c) = &self.correlation {
            c.validate()
                .map_err(|(f, m)| (format!("correlation.{f}"), m))?;
        }
        if self.admin.listen == self.listen && self.listen.port() != 0 {
            return Err((
                "admin.listen".into(),
                "must differ from `listen`: the admin endpoints stay off the public port".into(),
            ));
        }
        let mut paths = std::collections::HashMap::new();
        for (i, s) in self.sources.iter().enumerate() {
            if let Some(p) = s.webhook_path() {
                if let Some(other) = paths.insert(p.to_string(), s.name()) {
                    return Err((
                        format!("sources[{i}].path"),
                        format!("`{p}` is already the path of source `{other}`"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn rebase(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.sensors);
        fix(&mut self.dead_letter);
        match &mut self.intake.journal {
            JournalConfig::Dir(d) => fix(d),
            JournalConfig::Nats { nats } => nats.rebase(base),
        }
        match &mut self.correlation {
            CorrelationConfig::Local { dir } => fix(dir),
            CorrelationConfig::Nats(c) => c.rebase(base),
        }
        match &mut self.submit {
            SubmitConfig::Outbox { dir, .. } => fix(dir),
            SubmitConfig::Kubernetes { kubeconfig, .. } => {
                if let Some(k) = kubeconfig {
                    fix(k);
                }
            }
        }
        for s in &mut self.sources {
            s.rebase(base);
        }
    }

    /// Names of every declared source.
    pub fn source_names(&self) -> HashSet<String> {
        self.sources.iter().map(|s| s.name().to_string()).collect()
    }

    /// The sources sensors bind to, with their `argo:` blocks.
    pub fn source_catalog(&self) -> SourceCatalog {
        let mut c = SourceCatalog::default();
        for s in &self.sources {
            c.insert(s.name(), s.argo().cloned());
        }
        c
    }
}

/// One entry of `sources:` in `tripline.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceConfig {
    /// Plain HTTP: `POST <path>` with a JSON or text body, no signature.
    Http(webhook::HttpConfig),
    /// GitHub webhooks, `X-Hub-Signature-256` verified.
    Github(webhook::GithubConfig),
    /// GitLab webhooks, `X-Gitlab-Token` verified.
    Gitlab(webhook::GitlabConfig),
    /// Any sender: HMAC (configurable header, algorithm, encoding, replay
    /// window) or bearer token.
    Generic(webhook::GenericConfig),
    /// CloudEvents over HTTP, binary and structured mode.
    Cloudevents(webhook::CloudEventsConfig),
    /// A Kafka consumer group member; commits offsets behind finished messages.
    Kafka(KafkaConfig),
    /// A JetStream durable pull consumer (acks after the submission), or core
    /// NATS subscriptions (at most once).
    Nats(NatsConfig),
}

/// What a source config builds.
pub enum Built {
    /// A webhook endpoint, served by the HTTP server.
    Endpoint(Box<Endpoint>),
    /// A broker source, run as a task of its own.
    Task(Box<dyn Source>),
}

impl SourceConfig {
    /// The source's `argo:` block (Argo Events binding and event shape).
    pub fn argo(&self) -> Option<&ArgoSource> {
        match self {
            SourceConfig::Http(c) => c.argo.as_ref(),
            SourceConfig::Github(c) => c.argo.as_ref(),
            SourceConfig::Gitlab(c) => c.argo.as_ref(),
            SourceConfig::Generic(c) => c.argo.as_ref(),
            SourceConfig::Cloudevents(c) => c.argo.as_ref(),
            SourceConfig::Kafka(c) => c.argo.as_ref(),
            SourceConfig::Nats(c) => c.argo.as_ref(),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            SourceConfig::Http(c) => &c.name,
            SourceConfig::Github(c) => &c.name,
            SourceConfig::Gitlab(c) => &c.name,
            SourceConfig::Generic(c) => &c.name,
            SourceConfig::Cloudevents(c) => &c.name,
            SourceConfig::Kafka(c) => &c.name,
            SourceConfig::Nats(c) => &c.name,
        }
    }

    /// Checks what serde cannot; errors are `(field, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        match self {
            SourceConfig::Http(c) => c.validate(),
            SourceConfig::Generic(c) => c.validate(),
            SourceConfig::Kafka(c) => c.validate(),
            SourceConfig::Nats(c) => c.validate(),
            _ => Ok(()),
        }?;
        if let Some(p) = self.webhook_path() {
            webhook::config::check_path(&p)?;
        }
        Ok(())
    }

    pub fn rebase(&mut self, base: &Path) {
        match self {
            SourceConfig::Github(c) => c.secret.rebase(base),
            SourceConfig::Gitlab(c) => c.token.rebase(base),
            SourceConfig::Generic(c) => c.rebase(base),
            SourceConfig::Cloudevents(c) => {
                if let Some(t) = &mut c.bearer {
                    t.rebase(base)
                }
            }
            SourceConfig::Http(_) => {}
            SourceConfig::Kafka(c) => c.rebase(base),
            SourceConfig::Nats(c) => c.rebase(base),
        }
    }

    /// The HTTP path for webhook kinds (`/events/<name>` unless set),
    /// `None` for broker sources.
    pub fn webhook_path(&self) -> Option<String> {
        let (name, path) = match self {
            SourceConfig::Http(c) => (&c.name, &c.path),
            SourceConfig::Github(c) => (&c.name, &c.path),
            SourceConfig::Gitlab(c) => (&c.name, &c.path),
            SourceConfig::Generic(c) => (&c.name, &c.path),
            SourceConfig::Cloudevents(c) => (&c.name, &c.path),
            SourceConfig::Kafka(_) | SourceConfig::Nats(_) => return None,
        };
        Some(path.clone().unwrap_or_else(|| format!("/events/{name}")))
    }

    /// Resolves secrets and checks settings; connects to nothing (that
    /// happens when a task runs), so `tripline validate` uses it too.
    pub fn build(&self, limits: &Limits) -> Result<Built, SourceError> {
        Ok(match self {
            SourceConfig::Http(c) => Built::Endpoint(Box::new(c.endpoint()?)),
            SourceConfig::Github(c) => Built::Endpoint(Box::new(c.endpoint()?)),
            SourceConfig::Gitlab(c) => Built::Endpoint(Box::new(c.endpoint()?)),
            SourceConfig::Generic(c) => Built::Endpoint(Box::new(c.endpoint()?)),
            SourceConfig::Cloudevents(c) => Built::Endpoint(Box::new(c.endpoint()?)),
            SourceConfig::Nats(c) => Built::Task(Box::new(NatsSource::new(c, limits)?)),
            SourceConfig::Kafka(c) => Built::Task(Box::new(KafkaSource::new(c, limits)?)),
        })
    }
}

impl Config {
    /// Every source built: the webhook endpoints and the broker tasks.
    #[allow(clippy::type_complexity)]
    pub fn build_sources(&self) -> Result<(Vec<Endpoint>, Vec<Box<dyn Source>>), SourceError> {
        let (mut endpoints, mut tasks) = (Vec::new(), Vec::new());
        for s in &self.sources {
            match s.build(&self.limits)? {
                Built::Endpoint(e) => endpoints.push(*e),
                Built::Task(t) => tasks.push(t),
            }
        }
        Ok((endpoints, tasks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_sane() {
        let c = Config::parse("sources: [{type: http, name: events}]").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.limits.max_body_bytes, 1 << 20);
        assert!(matches!(c.submit, SubmitConfig::Outbox { .. }));
        assert_eq!(c.source_names(), ["events".to_string()].into());
    }

    #[test]
    fn unknown_fields_are_errors_with_their_path() {
        let (field, msg) = Config::parse("limits: {maxBody: 3}").unwrap_err();
        assert_eq!(field, "limits.maxBody");
        assert!(msg.contains("unknown field `maxBody`"), "{msg}");
        let (field, _) = Config::parse("submit: {type: outbox, dri: x}").unwrap_err();
        assert_eq!(field, "submit");
        let (field, msg) = Config::parse("sources: [{type: carrier-pigeon, name: x}]").unwrap_err();
        assert_eq!(field, "sources[0].type");
        assert!(msg.contains("unknown variant"), "{msg}");
        let (field, msg) =
            Config::parse("sources: [{type: http, name: a}, {type: http, name: a}]").unwrap_err();
        assert_eq!(field, "sources[1].name");
        assert!(msg.contains("twice"));
        let (field, msg) = Config::parse(
            "sources: [{type: http, name: a, path: /x}, {type: http, name: b, path: /x}]",
        )
        .unwrap_err();
        assert_eq!(field, "sources[1].path");
        assert!(msg.contains("already the path of source `a`"), "{msg}");
        let (field, msg) =
            Config::parse("sources: [{type: http, name: a, path: '/x/{id}'}]").unwrap_err();
        assert_eq!(field, "sources[0].path");
        assert!(msg.contains("literal path"), "{msg}");
        let (field, msg) =
            Config::parse("sources: [{type: http, name: a, path: /metrics}]").unwrap_err();
        assert_eq!(field, "sources[0].path");
        assert!(msg.contains("served by tripline itself"), "{msg}");
        let (field, _) =
            Config::parse("sources: [{type: http, name: a, idFrom: delivery.id}]").unwrap_err();
        assert_eq!(field, "sources[0].idFrom");
        let (field, _) = Config::parse("limits: {maxInFlight: 0}").unwrap_err();
        assert_eq!(field, "limits.maxInFlight");
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tripline.yaml");
        std::fs::write(&p, "sensors: s\nsubmit: {type: outbox, dir: out}\n").unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(c.sensors, dir.path().join("s"));
        match c.submit {
            SubmitConfig::Outbox { dir: d, .. } => assert_eq!(d, dir.path().join("out")),
            _ => unreachable!(),
        }
    }
}
