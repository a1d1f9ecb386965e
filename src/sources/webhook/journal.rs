//! The intake journal: where a webhook delivery goes when its outcome is not
//! final in time (the Kubernetes API is slow or unavailable, or tripline is
//! shutting down). A sender such as GitHub never redelivers on its own, so
//! the delivery is written durably (one file per event, fsynced with its
//! directory) *before* the sender gets `202 queued`; a worker then drains the
//! journal with the normal retries, removes an entry only once its outcome
//! is final, and replays what is left after a restart. Deterministic names
//! make a replay harmless.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::event::Event;

const TMP_PREFIX: &str = ".tripline-tmp-";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal entry {key}: {message}")]
    Corrupt { key: String, message: String },
}

/// A local directory of queued events.
pub struct Journal {
    dir: PathBuf,
    /// Entries some task is processing right now (the worker skips them).
    claimed: Mutex<HashSet<String>>,
    /// Woken when an entry is added.
    added: Notify,
}

/// One queued event and when it was queued.
#[derive(Debug, Clone)]
pub struct Queued {
    pub key: String,
    pub since: SystemTime,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Journal {
    /// Opens (creating) `dir` and removes temp files a killed process left.
    pub fn open(dir: &Path) -> Result<Arc<Journal>, JournalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        for entry in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Arc::new(Journal {
            dir: dir.to_path_buf(),
            claimed: Mutex::new(HashSet::new()),
            added: Notify::new(),
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry key of an event: a hash of its identity (file-name safe).
    pub fn key(event: &Event) -> String {
        hex::encode(&Sha256::digest(event.identity().as_bytes())[..16])
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// Writes `event` durably (file and directory fsynced) unless it is
    /// queued already; returns its key.
    pub async fn append(self: &Arc<Self>, event: &Event) -> Result<String, JournalError> {
        let key = Self::key(event);
        let bytes = serde_json::to_vec(event).expect("events serialize");
        let (dir, path) = (self.dir.clone(), self.path(&key));
        tokio::task::spawn_blocking(move || write_once(&dir, &path, &bytes))
            .await
            .map_err(|e| JournalError::Io {
                path: self.dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })??;
        self.added.notify_one();
        Ok(key)
    }

    /// Drops an entry whose outcome is final.
    pub fn remove(&self, key: &str) {
        let path = self.path(key);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a journal entry; it will be replayed (harmless)");
            }
        }
    }

    /// Moves an unreadable entry out of the way (`<key>.json.bad`), kept for
    /// an operator to look at.
    pub fn set_aside(&self, key: &str) {
        let path = self.path(key);
        let mut bad = path.as_os_str().to_owned();
        bad.push(".bad");
        if let Err(e) = std::fs::rename(&path, &bad) {
            tracing::error!(path = %path.display(), error = %e, "cannot move the entry aside");
        }
    }

    pub fn read(&self, key: &str) -> Result<Event, JournalError> {
        let path = self.path(key);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| JournalError::Corrupt {
            key: key.to_string(),
            message: e.to_string(),
        })
    }

    /// Queued entries, oldest first.
    pub fn list(&self) -> Vec<Queued> {
        let mut out: Vec<Queued> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().to_string();
                        let key = name.strip_suffix(".json")?.to_string();
                        let since = e.metadata().ok()?.modified().ok()?;
                        Some(Queued { key, since })
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|q| q.since);
        out
    }

    /// `(entries, age of the oldest)`.
    pub fn depth(&self) -> (usize, Duration) {
        let entries = self.list();
        let age = entries
            .first()
            .and_then(|q| q.since.elapsed().ok())
            .unwrap_or_default();
        (entries.len(), age)
    }

    /// Marks `key` as being processed; `false` if someone else is on it.
    pub fn claim(&self, key: &str) -> bool {
        self.claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string())
    }

    pub fn release(&self, key: &str) {
        self.claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Resolves when an entry was added (or after `at_most`).
    pub async fn wait_added(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.added.notified()).await;
    }
}

fn write_once(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    if path.exists() {
        return Ok(());
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempfile_in(dir)
        .map_err(io(dir))?;
    tmp.write_all(bytes).map_err(io(path))?;
    tmp.as_file().sync_all().map_err(io(path))?;
    tmp.persist(path).map_err(|e| JournalError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn entries_survive_a_reopen_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let mut e = Event::new("gh", b"{}", json!({"ref": "main"}));
        e.id = "d-1".into();
        e.headers.insert("X-GitHub-Event", "push");
        let key = j.append(&e).await.unwrap();
        assert_eq!(j.append(&e).await.unwrap(), key, "queued once");
        std::fs::write(dir.path().join(".tripline-tmp-x"), "torn").unwrap();
        drop(j);
        let j = Journal::open(dir.path()).unwrap();
        assert!(!dir.path().join(".tripline-tmp-x").exists());
        let queued = j.list();
        assert_eq!(queued.len(), 1);
        let back = j.read(&queued[0].key).unwrap();
        assert_eq!(back.id, "d-1");
        assert_eq!(back.headers.get("x-github-event"), Some("push"));
        assert_eq!(back.identity(), e.identity());
        assert!(j.claim(&key));
        assert!(!j.claim(&key), "one task at a time");
        j.release(&key);
        j.remove(&key);
        assert_eq!(j.depth().0, 0);
    }
}
