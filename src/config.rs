//! `tripline.yaml`: server settings, sources, submit target. Strict: unknown
//! fields are errors, reported with their path. Relative paths are relative
//! to the config file.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::sources::SourceConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// HTTP listen address for webhooks, `/healthz`, `/readyz`, `/metrics`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub limits: Limits,
    /// Sensor file or directory.
    #[serde(default = "default_sensors")]
    pub sensors: PathBuf,
    #[serde(default)]
    pub submit: SubmitConfig,
    /// JSON-lines file for objects the API rejected.
    #[serde(default = "default_dead_letter")]
    pub dead_letter: PathBuf,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// Largest accepted webhook body (default 1 MiB); larger gets 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Events processed at once per source; past it webhooks get 503 and
    /// brokers stop fetching (no unbounded queue).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// On SIGTERM, how long in-flight submissions may take to finish.
    #[serde(default = "default_deadline", with = "humantime_serde")]
    pub shutdown_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: default_max_body(),
            max_in_flight: default_max_in_flight(),
            shutdown_deadline: default_deadline(),
        }
    }
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
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_max_in_flight() -> usize {
    64
}
fn default_deadline() -> Duration {
    Duration::from_secs(30)
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
        if self.limits.max_in_flight == 0 {
            return Err(("limits.maxInFlight".into(), "must be at least 1".into()));
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
