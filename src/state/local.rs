//! The embedded state store: one JSON file per key in a directory, written
//! atomically (temp file, fsync, rename, directory fsync), with the revision
//! in the file. Compare-and-set holds within one process (the lock below);
//! the directory is not meant to be shared by several processes — use the
//! NATS KeyValue store for replicas.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{Store, StoreError, Versioned};

pub struct LocalStore {
    dir: PathBuf,
    /// Serialises read-check-write.
    lock: Mutex<()>,
}

#[derive(Serialize, Deserialize)]
struct File {
    revision: u64,
    value: String,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl LocalStore {
    pub fn open(dir: &Path) -> Result<LocalStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| unavailable(format!("{}: {e}", dir.display())))?;
        for entry in std::fs::read_dir(dir).map_err(unavailable)?.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(".tripline-tmp-")
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(LocalStore {
            dir: dir.to_path_buf(),
            lock: Mutex::new(()),
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    fn read(&self, key: &str) -> Result<Option<File>, StoreError> {
        match std::fs::read(self.path(key)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(unavailable),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    fn write(&self, key: &str, file: &File) -> Result<(), StoreError> {
        use std::io::Write;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tripline-tmp-")
            .tempfile_in(&self.dir)
            .map_err(unavailable)?;
        tmp.write_all(&serde_json::to_vec(file).map_err(unavailable)?)
            .map_err(unavailable)?;
        tmp.as_file().sync_all().map_err(unavailable)?;
        tmp.persist(self.path(key))
            .map_err(|e| unavailable(e.error))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(unavailable)
    }
}

#[async_trait]
impl Store for LocalStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let _held = self.lock.lock().await;
        Ok(self.read(key)?.map(|f| (f.value.into_bytes(), f.revision)))
    }

    async fn put(&self, key: &str, value: &[u8], expected: Option<u64>) -> Result<u64, StoreError> {
        let _held = self.lock.lock().await;
        let current = self.read(key)?.map(|f| f.revision);
        if current != expected {
            return Err(StoreError::Conflict);
        }
        let revision = current.unwrap_or(0) + 1;
        let value = String::from_utf8(value.to_vec()).map_err(unavailable)?;
        self.write(key, &File { revision, value })?;
        Ok(revision)
    }

    async fn delete(&self, key: &str, expected: u64) -> Result<(), StoreError> {
        let _held = self.lock.lock().await;
        match self.read(key)? {
            Some(f) if f.revision == expected => {
                std::fs::remove_file(self.path(key)).map_err(unavailable)
            }
            None => Ok(()),
            Some(_) => Err(StoreError::Conflict),
        }
    }

    fn describe(&self) -> String {
        format!("local {}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn compare_and_set_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        assert!(s.get("k").await.unwrap().is_none());
        let r1 = s.put("k", b"one", None).await.unwrap();
        assert!(matches!(
            s.put("k", b"x", None).await,
            Err(StoreError::Conflict)
        ));
        let r2 = s.put("k", b"two", Some(r1)).await.unwrap();
        assert!(matches!(
            s.put("k", b"x", Some(r1)).await,
            Err(StoreError::Conflict)
        ));
        drop(s);
        let s = LocalStore::open(dir.path()).unwrap();
        assert_eq!(s.get("k").await.unwrap(), Some((b"two".to_vec(), r2)));
        assert!(matches!(s.delete("k", r1).await, Err(StoreError::Conflict)));
        s.delete("k", r2).await.unwrap();
        assert!(s.get("k").await.unwrap().is_none());
    }
}
