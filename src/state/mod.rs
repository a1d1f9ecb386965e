//! Durable state with compare-and-set: where correlation keeps what it
//! waits for, so that it survives restarts and, with a shared backend, is
//! shared by every replica.
//!
//! * [`local`] — a directory of fsynced files (the embedded default);
//! * [`nats_kv`] — a NATS JetStream KeyValue bucket (every replica shares it;
//!   entries expire with the bucket's `maxAge`).
//!
//! A write names the revision it read ([`Store::put`]); if someone wrote in
//! between, it fails with [`StoreError::Conflict`] and the caller reads again.

pub mod local;
pub mod nats_kv;

use async_trait::async_trait;

/// A value and the revision it was read at.
pub type Versioned = (Vec<u8>, u64);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("changed since it was read")]
    Conflict,
    #[error("state store: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Store: Send + Sync {
    /// The value under `key` and its revision, if any.
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;
    /// Writes `value` if `key` is still at revision `expected` (`None`: if it
    /// does not exist); returns the new revision.
    async fn put(&self, key: &str, value: &[u8], expected: Option<u64>) -> Result<u64, StoreError>;
    /// Removes `key` if it is still at revision `expected`.
    async fn delete(&self, key: &str, expected: u64) -> Result<(), StoreError>;
    /// For logs and `/readyz`.
    fn describe(&self) -> String;
}

/// A store in memory, for tests and `tripline test`: nothing survives.
#[derive(Default)]
pub struct MemoryStore(tokio::sync::Mutex<std::collections::HashMap<String, Versioned>>);

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.0.lock().await.get(key).cloned())
    }

    async fn put(&self, key: &str, value: &[u8], expected: Option<u64>) -> Result<u64, StoreError> {
        let mut map = self.0.lock().await;
        let current = map.get(key).map(|(_, r)| *r);
        if current != expected {
            return Err(StoreError::Conflict);
        }
        let revision = current.unwrap_or(0) + 1;
        map.insert(key.to_string(), (value.to_vec(), revision));
        Ok(revision)
    }

    async fn delete(&self, key: &str, expected: u64) -> Result<(), StoreError> {
        let mut map = self.0.lock().await;
        match map.get(key) {
            Some((_, r)) if *r != expected => Err(StoreError::Conflict),
            _ => {
                map.remove(key);
                Ok(())
            }
        }
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}
