//! `type: kafka` in `tripline.yaml`, and the librdkafka settings it becomes
//! (secrets resolved; the settings tripline owns are refused in `properties`).

use crate::sensor::ArgoSource;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Deserializer};

use crate::secret::SecretRef;
use crate::tls::TlsConfig;

/// `type: kafka` in `tripline.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaConfig {
    pub name: String,
    /// Argo Events compatibility: binding alias, `jsonBody`, `metadata`.
    #[serde(default)]
    pub argo: Option<ArgoSource>,
    /// Bootstrap servers (`host:port`): a list, or one comma-separated string.
    #[serde(deserialize_with = "string_or_list")]
    pub brokers: Vec<String>,
    /// Topics to subscribe to; an entry starting with `^` is a regular
    /// expression matched against every topic name.
    pub topics: Vec<String>,
    /// Consumer group: replicas with the same id share the partitions.
    pub group_id: String,
    /// Where a group without a committed offset starts (default `earliest`,
    /// so messages sent before the first start are not missed).
    #[serde(default)]
    pub auto_offset_reset: AutoOffsetReset,
    /// Default: `sasl_ssl` with `sasl`, `ssl` with only `tls`, else `plaintext`.
    #[serde(default)]
    pub security_protocol: Option<SecurityProtocol>,
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Extra librdkafka consumer properties (`session.timeout.ms`,
    /// `fetch.max.bytes`, `client.rack`…). Settings tripline owns (offsets,
    /// group id, brokers, secrets) are refused here.
    #[serde(default)]
    pub properties: BTreeMap<String, PropertyValue>,
    /// Messages processed at once per partition (default 8; 1 = in order).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Messages of one partition fetched ahead of processing (default
    /// 50 000; also at most 8 MiB). Past it the partition is paused at the
    /// broker until half of it is processed.
    #[serde(default = "default_max_queued")]
    pub max_queued: usize,
    /// First delay before retrying a message the Kubernetes API could not take.
    #[serde(default = "default_retry_backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Longest delay between retries of one message.
    #[serde(default = "default_max_retry_backoff", with = "humantime_serde")]
    pub max_retry_backoff: Duration,
    /// How often finished work is committed (also on revoke and shutdown).
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AutoOffsetReset {
    #[default]
    Earliest,
    Latest,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[serde(alias = "PLAINTEXT")]
    Plaintext,
    #[serde(alias = "SSL")]
    Ssl,
    #[serde(alias = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[serde(alias = "SASL_SSL")]
    SaslSsl,
}

impl SecurityProtocol {
    fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: SecretRef,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// A librdkafka property value as YAML writes it (`6000`, `true`, `"lz4"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PropertyValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl std::fmt::Display for PropertyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PropertyValue::Bool(b) => write!(f, "{b}"),
            PropertyValue::Int(i) => write!(f, "{i}"),
            PropertyValue::Float(x) => write!(f, "{x}"),
            PropertyValue::Text(s) => f.write_str(s),
        }
    }
}

fn default_max_in_flight() -> usize {
    8
}
fn default_max_queued() -> usize {
    50_000
}
fn default_retry_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_retry_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_commit_interval() -> Duration {
    Duration::from_secs(1)
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let list = match OneOrMany::deserialize(d).map_err(|_: D::Error| {
        serde::de::Error::custom(
            "expected `host:port`, a comma-separated string of them, or a list",
        )
    })? {
        OneOrMany::One(s) => s.split(',').map(|b| b.trim().to_string()).collect(),
        OneOrMany::Many(v) => v.into_iter().map(|b| b.trim().to_string()).collect(),
    };
    Ok(list)
}

/// Properties whose value is (or contains) a credential: a private key or
/// certificate inline (`ssl.key.pem`, `ssl.certificate.pem`), a password, a
/// secret, a keytab, an OAuth configuration.
fn holds_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.ends_with(".pem")
        || ["password", "secret", "keytab", "oauthbearer.config", "jaas"]
            .iter()
            .any(|w| k.contains(w))
}

/// librdkafka properties that `properties:` may not set, and why.
const OWNED_PROPERTIES: [(&str, &str); 11] = [
    ("bootstrap.servers", "use `brokers`"),
    ("metadata.broker.list", "use `brokers`"),
    ("group.id", "use `groupId`"),
    ("auto.offset.reset", "use `autoOffsetReset`"),
    ("security.protocol", "use `securityProtocol`"),
    (
        "enable.auto.commit",
        "tripline commits offsets itself, only behind finished messages",
    ),
    (
        "enable.auto.offset.store",
        "tripline commits offsets itself, only behind finished messages",
    ),
    (
        "sasl.password",
        "secrets are never inline: use `sasl.password: {env: …}` or `{file: …}`",
    ),
    (
        "ssl.key.password",
        "secrets are never inline: use `tls.keyPassword: {env: …}` or `{file: …}`",
    ),
    (
        "ssl.keystore.password",
        "secrets are never inline; use `tls` with PEM files",
    ),
    ("sasl.oauthbearer.client.secret", "secrets are never inline"),
];

impl KafkaConfig {
    /// Checks what serde cannot; errors are `(field, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: &str| Err((f.to_string(), m.to_string()));
        if self.brokers.is_empty() || self.brokers.iter().any(String::is_empty) {
            return err(
                "brokers",
                "give at least one `host:port` (no empty entries)",
            );
        }
        if self.topics.is_empty() {
            return err("topics", "give at least one topic");
        }
        for (i, t) in self.topics.iter().enumerate() {
            if t.is_empty() {
                return err(&format!("topics[{i}]"), "empty topic name");
            }
            if t.starts_with('^') {
                if let Err(e) = regex::Regex::new(t) {
                    return err(
                        &format!("topics[{i}]"),
                        &format!("bad regular expression: {e}"),
                    );
                }
            }
        }
        if self.group_id.trim().is_empty() {
            return err("groupId", "must not be empty");
        }
        if self.max_in_flight == 0 {
            return err("maxInFlight", "must be at least 1");
        }
        if self.max_queued == 0 {
            return err("maxQueued", "must be at least 1");
        }
        if self.retry_backoff.is_zero() || self.max_retry_backoff < self.retry_backoff {
            return err(
                "maxRetryBackoff",
                "retryBackoff must be positive and maxRetryBackoff at least retryBackoff",
            );
        }
        if self.commit_interval < Duration::from_millis(10) {
            return err("commitInterval", "must be at least 10ms");
        }
        if let Some(s) = &self.sasl {
            if s.username.is_empty() {
                return err("sasl.username", "must not be empty");
            }
        }
        if let Some(t) = &self.tls {
            t.validate()?;
            if t.require_tls {
                return err(
                    "tls.requireTls",
                    "Kafka sources choose TLS with `securityProtocol` (ssl or sasl_ssl)",
                );
            }
        }
        for key in self.properties.keys() {
            if let Some((_, why)) = OWNED_PROPERTIES.iter().find(|(k, _)| k == key) {
                return err(&format!("properties.{key}"), why);
            }
            if holds_secret(key) {
                return err(
                    &format!("properties.{key}"),
                    "secrets are never inline: use `sasl`/`tls` with `{env: …}` or `{file: …}`, or PEM files",
                );
            }
        }
        Ok(())
    }

    pub fn rebase(&mut self, base: &Path) {
        if let Some(s) = &mut self.sasl {
            s.password.rebase(base);
        }
        if let Some(t) = &mut self.tls {
            t.rebase(base);
        }
    }

    fn security_protocol(&self) -> SecurityProtocol {
        self.security_protocol
            .unwrap_or(match (&self.sasl, &self.tls) {
                (Some(_), _) => SecurityProtocol::SaslSsl,
                (None, Some(_)) => SecurityProtocol::Ssl,
                (None, None) => SecurityProtocol::Plaintext,
            })
    }

    /// The librdkafka consumer settings, secrets resolved. Errors name the
    /// secret that could not be read.
    pub fn client_config(&self) -> Result<ClientConfig, String> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.join(","))
            .set("group.id", &self.group_id)
            .set("client.id", format!("tripline-{}", self.name))
            .set(
                "auto.offset.reset",
                match self.auto_offset_reset {
                    AutoOffsetReset::Earliest => "earliest",
                    AutoOffsetReset::Latest => "latest",
                },
            )
            .set("security.protocol", self.security_protocol().as_str())
            // When librdkafka's local queue passes `queued.min.messages`
            // (100 000, shared by the partitions), it stops fetching for
            // this long — 1 s by default, which a consumer catching up on a
            // backlog spent mostly idle (it drains 100 000 messages in a
            // quarter of that). `properties` may set it back.
            .set("fetch.queue.backoff.ms", "10");
        let first_line = |s: &SecretRef, what: &str| s.first().map_err(|e| format!("{what}: {e}"));
        if let Some(s) = &self.sasl {
            c.set("sasl.mechanisms", s.mechanism.as_str())
                .set("sasl.username", &s.username)
                .set("sasl.password", first_line(&s.password, "sasl.password")?);
        }
        if let Some(t) = &self.tls {
            let path = |p: &PathBuf| p.display().to_string();
            if let Some(ca) = &t.ca_file {
                c.set("ssl.ca.location", path(ca));
            }
            if let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) {
                c.set("ssl.certificate.location", path(cert))
                    .set("ssl.key.location", path(key));
            }
            if let Some(p) = &t.key_password {
                c.set("ssl.key.password", first_line(p, "tls.keyPassword")?);
            }
        }
        for (k, v) in &self.properties {
            c.set(k, v.to_string());
        }
        // Offsets are tripline's: only committed behind finished messages.
        c.set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<KafkaConfig, String> {
        let c: KafkaConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        c.validate().map_err(|(f, m)| format!("{f}: {m}"))?;
        Ok(c)
    }

    #[test]
    fn config_defaults_and_client_properties() {
        let c = parse(
            "{name: q, brokers: 'a:9092, b:9092', topics: [jobs, '^pipe\\..*'], groupId: g,
              properties: {session.timeout.ms: 6000, check.crcs: true, client.rack: r1}}",
        )
        .unwrap();
        assert_eq!(c.brokers, ["a:9092", "b:9092"]);
        assert_eq!(c.auto_offset_reset, AutoOffsetReset::Earliest);
        assert_eq!(c.max_in_flight, 8);
        assert_eq!(c.max_queued, 50_000);
        let cc = c.client_config().unwrap();
        assert_eq!(cc.get("bootstrap.servers"), Some("a:9092,b:9092"));
        assert_eq!(cc.get("group.id"), Some("g"));
        assert_eq!(cc.get("enable.auto.commit"), Some("false"));
        assert_eq!(cc.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(cc.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(cc.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(cc.get("security.protocol"), Some("plaintext"));
        assert_eq!(cc.get("session.timeout.ms"), Some("6000"));
        assert_eq!(cc.get("check.crcs"), Some("true"));
        assert!(cc.create_native_config().is_ok());
        // The fetch backoff default is ours; properties still win.
        let c = parse("{name: q, brokers: a:9092, topics: [t], groupId: g, properties: {fetch.queue.backoff.ms: 500}}")
            .unwrap();
        assert_eq!(
            c.client_config().unwrap().get("fetch.queue.backoff.ms"),
            Some("500")
        );

        let c =
            parse("{name: q, brokers: [a:1], topics: [t], groupId: g, autoOffsetReset: latest}")
                .unwrap();
        assert_eq!(
            c.client_config().unwrap().get("auto.offset.reset"),
            Some("latest")
        );
    }

    #[test]
    fn security_settings_pass_through_with_secrets_resolved() {
        std::env::set_var("TRIPLINE_TEST_KAFKA_PW", "s3cret\n");
        let mut c = parse(
            "{name: q, brokers: a:1, topics: [t], groupId: g,
              sasl: {mechanism: SCRAM-SHA-512, username: u, password: {env: TRIPLINE_TEST_KAFKA_PW}},
              tls: {caFile: ca.pem, certFile: /abs/c.pem, keyFile: k.pem}}",
        )
        .unwrap();
        c.rebase(Path::new("/etc/tripline"));
        let cc = c.client_config().unwrap();
        assert_eq!(cc.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(cc.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(cc.get("sasl.username"), Some("u"));
        assert_eq!(cc.get("sasl.password"), Some("s3cret"));
        assert_eq!(cc.get("ssl.ca.location"), Some("/etc/tripline/ca.pem"));
        assert_eq!(cc.get("ssl.certificate.location"), Some("/abs/c.pem"));
        assert_eq!(cc.get("ssl.key.location"), Some("/etc/tripline/k.pem"));

        let c = parse(
            "{name: q, brokers: a:1, topics: [t], groupId: g, securityProtocol: SASL_PLAINTEXT,
              sasl: {mechanism: PLAIN, username: u, password: {env: TRIPLINE_TEST_KAFKA_NOPE}}}",
        )
        .unwrap();
        let err = c.client_config().unwrap_err();
        assert!(err.contains("TRIPLINE_TEST_KAFKA_NOPE"), "{err}");
        let c = parse("{name: q, brokers: a:1, topics: [t], groupId: g, tls: {}}").unwrap();
        assert_eq!(
            c.client_config().unwrap().get("security.protocol"),
            Some("ssl")
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = |y: &str| parse(y).unwrap_err();
        let base = "name: q, brokers: a:1, groupId: g";
        assert!(err(&format!("{{{base}, topics: []}}")).starts_with("topics:"));
        assert!(err(&format!("{{{base}, topics: [t, '^(']}}")).starts_with("topics[1]:"));
        assert!(
            err(&format!("{{{base}, topics: [t], maxInFlight: 0}}")).starts_with("maxInFlight:")
        );
        assert!(err(&format!("{{{base}, topics: [t], maxQueued: 0}}")).starts_with("maxQueued:"));
        let e = err(&format!(
            "{{{base}, topics: [t], properties: {{enable.auto.commit: true}}}}"
        ));
        assert!(e.starts_with("properties.enable.auto.commit:"), "{e}");
        let e = err(&format!(
            "{{{base}, topics: [t], properties: {{sasl.password: x}}}}"
        ));
        assert!(e.contains("never inline"), "{e}");
        for key in [
            "ssl.key.pem",
            "ssl.certificate.pem",
            "sasl.oauthbearer.client.secret",
            "sasl.kerberos.keytab",
            "sasl.oauthbearer.config",
        ] {
            let e = err(&format!(
                "{{{base}, topics: [t], properties: {{{key}: x}}}}"
            ));
            assert!(
                e.starts_with(&format!("properties.{key}:")) && e.contains("never inline"),
                "{e}"
            );
        }
        let e = err(&format!("{{{base}, topics: [t], tls: {{certFile: c}}}}"));
        assert!(e.starts_with("tls:"), "{e}");
        assert!(err(&format!("{{{base}, topics: [t], groupid: x}}")).contains("unknown field"));
        assert!(err("{name: q, brokers: '', topics: [t], groupId: g}").starts_with("brokers:"));
        assert!(err(&format!("{{{base}, topics: [t], sasl: {{mechanism: GSSAPI, username: u, password: {{env: X}}}}}}"))
            .contains("unknown variant"));
    }
}
