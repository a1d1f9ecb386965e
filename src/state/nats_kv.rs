//! The shared state store: a NATS JetStream KeyValue bucket, as Argo Events
//! keeps its sensors' trigger state — every replica reads and writes the same
//! entries, and a write names the revision it read (the server refuses it if
//! the entry moved on), so exactly one replica wins a race.

use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::stream;
use async_trait::async_trait;
use serde::Deserialize;

use super::{Store, StoreError, Versioned};
use crate::redact;
use crate::secret::SecretRef;

/// `correlation: {store: nats, …}` in `tripline.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NatsKvConfig {
    /// Server urls (default `$NATS_URL`, else `nats://127.0.0.1:4222`).
    #[serde(default)]
    pub urls: Vec<String>,
    /// The bucket (created if missing).
    #[serde(default = "default_bucket")]
    pub bucket: String,
    /// How long an entry lives without being written (default 24h; longer
    /// than every sensor's correlation window).
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    #[serde(default)]
    pub token: Option<SecretRef>,
    #[serde(default)]
    pub creds_file: Option<SecretRef>,
}

fn default_bucket() -> String {
    "tripline-correlation".into()
}
fn default_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl NatsKvConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (i, u) in self.urls.iter().enumerate() {
            if redact::has_user_info(u) {
                return Err((
                    format!("urls[{i}]"),
                    format!(
                        "`{}` carries credentials: use `token` or `credsFile`",
                        redact::url(u)
                    ),
                ));
            }
        }
        if self.bucket.is_empty()
            || !self
                .bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(("bucket".into(), "letters, digits, `-` and `_` only".into()));
        }
        if self.token.is_some() && self.creds_file.is_some() {
            return Err((
                "token".into(),
                "give at most one of `token`, `credsFile`".into(),
            ));
        }
        Ok(())
    }

    pub fn rebase(&mut self, base: &std::path::Path) {
        for s in [&mut self.token, &mut self.creds_file]
            .into_iter()
            .flatten()
        {
            s.rebase(base);
        }
    }

    fn servers(&self) -> Vec<String> {
        if !self.urls.is_empty() {
            return self.urls.clone();
        }
        match std::env::var("NATS_URL") {
            Ok(v) if !v.trim().is_empty() => v.split(',').map(|u| u.trim().to_string()).collect(),
            _ => vec!["nats://127.0.0.1:4222".into()],
        }
    }
}

pub struct NatsKvStore {
    kv: kv::Store,
    describe: String,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl NatsKvStore {
    /// Connects (waiting for the server up to `wait`) and opens or creates
    /// the bucket.
    pub async fn connect(config: &NatsKvConfig, wait: Duration) -> Result<NatsKvStore, StoreError> {
        let mut options = async_nats::ConnectOptions::new()
            .name("tripline/correlation")
            .retry_on_initial_connect()
            .max_reconnects(None);
        if let Some(t) = &config.token {
            options = options.token(t.first().map_err(unavailable)?);
        }
        if let Some(c) = &config.creds_file {
            options = options
                .credentials(&c.read().map_err(unavailable)?)
                .map_err(unavailable)?;
        }
        let servers = config.servers();
        let shown: Vec<String> = servers.iter().map(|s| redact::url(s)).collect();
        let client = tokio::time::timeout(wait, options.connect(servers.as_slice()))
            .await
            .map_err(|_| {
                unavailable(format!(
                    "no NATS server answered at {} within {wait:?}",
                    shown.join(",")
                ))
            })?
            .map_err(unavailable)?;
        let js = async_nats::jetstream::new(client);
        // The bucket's stream is created as the KeyValue convention lays it
        // out (what `create_key_value` does, without its account query, which
        // older servers answer in a shape the client does not read).
        js.get_or_create_stream(stream::Config {
            name: format!("KV_{}", config.bucket),
            description: Some("tripline correlation state".into()),
            subjects: vec![format!("$KV.{}.>", config.bucket)],
            max_messages_per_subject: 1,
            max_age: config.max_age,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(unavailable)?;
        let kv = js
            .get_key_value(&config.bucket)
            .await
            .map_err(unavailable)?;
        Ok(NatsKvStore {
            kv,
            describe: format!("NATS KV bucket `{}` at {}", config.bucket, shown.join(",")),
        })
    }
}

#[async_trait]
impl Store for NatsKvStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        match self.kv.entry(key).await.map_err(unavailable)? {
            Some(e) if e.operation == Operation::Put => Ok(Some((e.value.to_vec(), e.revision))),
            _ => Ok(None),
        }
    }

    async fn put(&self, key: &str, value: &[u8], expected: Option<u64>) -> Result<u64, StoreError> {
        let value = bytes::Bytes::copy_from_slice(value);
        match expected {
            None => self
                .kv
                .create(key, value)
                .await
                .map_err(|e| match e.kind() {
                    CreateErrorKind::AlreadyExists => StoreError::Conflict,
                    _ => unavailable(e),
                }),
            Some(revision) => {
                self.kv
                    .update(key, value, revision)
                    .await
                    .map_err(|e| match e.kind() {
                        UpdateErrorKind::WrongLastRevision => StoreError::Conflict,
                        _ => unavailable(e),
                    })
            }
        }
    }

    async fn delete(&self, key: &str, expected: u64) -> Result<(), StoreError> {
        self.kv
            .delete_expect_revision(key, Some(expected))
            .await
            .map_err(|e| {
                if e.to_string().contains("wrong last sequence") {
                    StoreError::Conflict
                } else {
                    unavailable(e)
                }
            })
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}
