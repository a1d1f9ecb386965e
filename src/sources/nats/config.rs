//! `type: nats` in `tripline.yaml`: servers, credentials, TLS, subjects, and
//! the JetStream consumer settings. Strict, checked before anything connects.

use crate::sensor::ArgoSource;
use std::path::Path;
use std::time::Duration;

use async_nats::ServerAddr;
use serde::Deserialize;

use crate::redact;
use crate::secret::SecretRef;
use crate::tls::TlsConfig;

/// Where the client connects when `urls` is empty and `$NATS_URL` is unset.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// `type: nats` in `tripline.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NatsConfig {
    pub name: String,
    /// Argo Events compatibility: binding alias, `jsonBody`, `metadata`.
    #[serde(default)]
    pub argo: Option<ArgoSource>,
    /// Server urls (`nats://`, `tls://`, `ws://`…). Empty: `$NATS_URL`
    /// (comma-separated), else [`DEFAULT_URL`].
    #[serde(default)]
    pub urls: Vec<String>,
    /// Authentication: at most one of `token`, `user` + `password`, `nkey`
    /// (the seed), `credsFile` (a `.creds` file with JWT and seed).
    #[serde(default)]
    pub token: Option<SecretRef>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<SecretRef>,
    #[serde(default)]
    pub nkey: Option<SecretRef>,
    #[serde(default)]
    pub creds_file: Option<SecretRef>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Subjects to consume, wildcards allowed. Core NATS: subscribed to
    /// (at least one). JetStream: the consumer's filter (none: the whole stream).
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Core NATS only: replicas in one queue group share the messages.
    #[serde(default)]
    pub queue_group: Option<String>,
    /// Consume from JetStream (at least once) instead of core NATS (at most once).
    #[serde(default)]
    pub jetstream: Option<JetStreamConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JetStreamConfig {
    pub stream: String,
    /// Durable consumer name; replicas using the same one share the work.
    pub durable: String,
    /// Create the stream (capturing `subjects`) and the consumer when they
    /// are missing, and update the consumer to this config when it exists.
    /// Default: bind an existing consumer as it is.
    #[serde(default)]
    pub create: bool,
    /// Messages asked for per pull request.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Messages processed (unsettled) at once; default `limits.maxInFlight`.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// How long the server waits for an ack before redelivering (consumer
    /// setting, applied when tripline creates the consumer).
    #[serde(default = "default_ack_wait", with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Deliveries before the server gives a message up (consumer setting);
    /// default unlimited.
    #[serde(default)]
    pub max_deliver: Option<i64>,
    /// Redelivery delay after `Retry`, doubled per delivery.
    #[serde(default = "default_nak_delay", with = "humantime_serde")]
    pub nak_delay: Duration,
    #[serde(default = "default_max_nak_delay", with = "humantime_serde")]
    pub max_nak_delay: Duration,
}

fn default_batch() -> usize {
    64
}
fn default_ack_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_nak_delay() -> Duration {
    Duration::from_secs(1)
}
fn default_max_nak_delay() -> Duration {
    Duration::from_secs(300)
}

impl NatsConfig {
    /// Checks what serde cannot; errors are `(field, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: String| Err((f.to_string(), m));
        for (i, url) in self.urls.iter().enumerate() {
            if redact::has_user_info(url) {
                return err(
                    &format!("urls[{i}]"),
                    format!(
                        "`{}` carries credentials: use `user` + `password: {{env: …}}` or `token: {{file: …}}`, never inline",
                        redact::url(url)
                    ),
                );
            }
            if let Err(e) = url.parse::<ServerAddr>() {
                return err(
                    &format!("urls[{i}]"),
                    format!("`{}`: {e}", redact::url(url)),
                );
            }
        }
        let methods = [
            self.token.is_some(),
            self.user.is_some() || self.password.is_some(),
            self.nkey.is_some(),
            self.creds_file.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return err(
                "token",
                "give at most one of `token`, `user` + `password`, `nkey`, `credsFile`".into(),
            );
        }
        if self.user.is_some() != self.password.is_some() {
            return err(
                if self.user.is_some() {
                    "password"
                } else {
                    "user"
                },
                "`user` and `password` go together".into(),
            );
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
            if tls.key_password.is_some() {
                return err(
                    "tls.keyPassword",
                    "NATS takes an unencrypted `keyFile`".into(),
                );
            }
        }
        for (i, s) in self.subjects.iter().enumerate() {
            check_subject(s).map_err(|m| (format!("subjects[{i}]"), format!("`{s}`: {m}")))?;
        }
        match &self.jetstream {
            None if self.subjects.is_empty() => err(
                "subjects",
                "core NATS needs at least one subject to subscribe to".into(),
            ),
            None => match &self.queue_group {
                Some(q) if q.is_empty() || q.contains(char::is_whitespace) => err(
                    "queueGroup",
                    format!("`{q}` must be non-empty, without whitespace"),
                ),
                _ => Ok(()),
            },
            Some(_) if self.queue_group.is_some() => err(
                "queueGroup",
                "queue groups are for core NATS; replicas sharing a JetStream `durable` already split the work".into(),
            ),
            Some(js) => js.validate(),
        }
    }

    pub fn rebase(&mut self, base: &Path) {
        for s in [
            &mut self.token,
            &mut self.password,
            &mut self.nkey,
            &mut self.creds_file,
        ]
        .into_iter()
        .flatten()
        {
            s.rebase(base);
        }
        if let Some(tls) = &mut self.tls {
            tls.rebase(base);
        }
    }

    /// The urls to connect to: `urls`, else `$NATS_URL`, else [`DEFAULT_URL`].
    pub fn servers(&self) -> Vec<String> {
        if !self.urls.is_empty() {
            return self.urls.clone();
        }
        match std::env::var("NATS_URL") {
            Ok(v) if !v.trim().is_empty() => v.split(',').map(|u| u.trim().to_string()).collect(),
            _ => vec![DEFAULT_URL.to_string()],
        }
    }
}

impl JetStreamConfig {
    fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: &str| Err((format!("jetstream.{f}"), m.to_string()));
        let name_ok = |n: &str| {
            !n.is_empty()
                && !n
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        };
        if !name_ok(&self.stream) {
            return err(
                "stream",
                "a stream name cannot be empty or contain whitespace, `.`, `*`, `>`, `/` or `\\`",
            );
        }
        if !name_ok(&self.durable) {
            return err(
                "durable",
                "a consumer name cannot be empty or contain whitespace, `.`, `*`, `>`, `/` or `\\`",
            );
        }
        if self.batch == 0 {
            return err("batch", "must be at least 1");
        }
        if self.max_in_flight == Some(0) {
            return err("maxInFlight", "must be at least 1");
        }
        if self.ack_wait < Duration::from_millis(100) {
            return err("ackWait", "must be at least 100ms");
        }
        if matches!(self.max_deliver, Some(n) if n < 1) {
            return err(
                "maxDeliver",
                "must be at least 1 (leave it out for unlimited)",
            );
        }
        if self.nak_delay > self.max_nak_delay {
            return err("nakDelay", "must not exceed `maxNakDelay`");
        }
        Ok(())
    }
}

/// A subject to subscribe to: dot-separated non-empty tokens, `*` and `>` as
/// whole tokens, `>` only last.
fn check_subject(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.contains(char::is_whitespace) {
        return Err("a subject cannot be empty or contain whitespace");
    }
    let tokens: Vec<&str> = s.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return Err("empty token (`..`, or a leading or trailing `.`)");
        }
        if t.len() > 1 && (t.contains('*') || t.contains('>')) {
            return Err("wildcards `*` and `>` must be whole tokens");
        }
        if *t == ">" && i + 1 != tokens.len() {
            return Err("`>` may only be the last token");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<NatsConfig, String> {
        let c: NatsConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        c.validate().map_err(|(f, m)| format!("{f}: {m}"))?;
        Ok(c)
    }

    #[test]
    fn jetstream_config_defaults() {
        let c = parse(
            "{name: n, urls: [nats://a:4222], subjects: [a.>], jetstream: {stream: S, durable: d}}",
        )
        .unwrap();
        let js = c.jetstream.unwrap();
        assert_eq!(js.batch, 64);
        assert_eq!(js.ack_wait, Duration::from_secs(30));
        assert_eq!(js.nak_delay, Duration::from_secs(1));
        assert_eq!(js.max_deliver, None);
        assert!(!js.create);
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let cases = [
            ("{name: n}", "subjects: core NATS"),
            (
                "{name: n, subjects: [a], bogus: 1}",
                "unknown field `bogus`",
            ),
            ("{name: n, subjects: ['a..b']}", "subjects[0]"),
            ("{name: n, subjects: ['a.>.b']}", "last token"),
            ("{name: n, subjects: ['a.b*']}", "whole tokens"),
            ("{name: n, subjects: [a], urls: ['http://x y']}", "urls[0]"),
            ("{name: n, subjects: [a], user: u}", "password: "),
            (
                "{name: n, subjects: [a], urls: ['nats://u:hunter2@h:4222']}",
                "urls[0]: `nats://***@h:4222` carries credentials",
            ),
            (
                "{name: n, subjects: [a], token: {env: T}, nkey: {env: N}}",
                "at most one",
            ),
            ("{name: n, subjects: [a], tls: {certFile: c}}", "keyFile"),
            (
                "{name: n, subjects: [a], queueGroup: q, jetstream: {stream: S, durable: d}}",
                "queueGroup: queue groups are for core NATS",
            ),
            (
                "{name: n, jetstream: {stream: S.x, durable: d}}",
                "jetstream.stream",
            ),
            (
                "{name: n, jetstream: {stream: S, durable: d, batch: 0}}",
                "jetstream.batch",
            ),
            (
                "{name: n, jetstream: {stream: S, durable: d, maxDeliver: 0}}",
                "jetstream.maxDeliver",
            ),
            (
                "{name: n, jetstream: {stream: S, durable: d, token: x}}",
                "unknown field `token`",
            ),
        ];
        for (yaml, want) in cases {
            let e = parse(yaml).unwrap_err();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn urls_default_to_the_environment() {
        let c = parse("{name: n, subjects: [a], urls: [nats://x:1]}").unwrap();
        assert_eq!(c.servers(), ["nats://x:1"]);
    }
}
