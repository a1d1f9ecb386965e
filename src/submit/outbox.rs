//! The outbox: each object becomes one YAML file, written atomically (temp
//! file, fsync, a hard link that fails if the name is taken, then an fsync of
//! the directory so the new name survives a crash). No cluster needed;
//! `tripline serve` on a fresh machine writes here.
//!
//! An object's coordinates are checked before its file name is built (see
//! [`super::object::check`]). A file already there is `existing` only if it
//! holds the same event's object; otherwise it is a name collision. Temp
//! files left by a killed process are removed at start.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::Value;

use super::classify::classify_io;
use super::object::{check, collision, same_event};
use super::{SubmitError, Submitted, Submitter};

/// Temp files are named `<TMP_PREFIX>…` (and removed at start).
const TMP_PREFIX: &str = ".tripline-tmp-";

pub struct Outbox {
    dir: PathBuf,
    namespace: String,
}

impl Outbox {
    /// Creates `dir` if needed and removes temp files a killed process left.
    pub fn new(dir: &Path, namespace: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut removed = 0;
        for entry in std::fs::read_dir(dir)?.flatten() {
            let stale = entry.file_name().to_string_lossy().starts_with(TMP_PREFIX);
            if stale && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(dir = %dir.display(), removed, "removed temp files left by an earlier run");
        }
        Ok(Outbox {
            dir: dir.to_path_buf(),
            namespace: namespace.to_string(),
        })
    }

    /// `<dir>/<namespace>.<kind>.<name>.yaml`, lower-cased kind; `None`
    /// for an object whose coordinates are not valid.
    pub fn file_for(&self, obj: &Value) -> Option<PathBuf> {
        let o = check(obj).ok()?;
        let ns = o.namespace.unwrap_or(&self.namespace);
        let kind = o.kind.to_ascii_lowercase();
        Some(self.dir.join(format!("{ns}.{kind}.{}.yaml", o.name)))
    }
}

#[async_trait]
impl Submitter for Outbox {
    async fn submit(&self, obj: &Value) -> Result<Submitted, SubmitError> {
        check(obj)?;
        let path = self.file_for(obj).expect("checked above");
        let yaml = serde_yaml_ng::to_string(obj)
            .map_err(|e| SubmitError::rejected(400, "BadRequest", e.to_string()))?;
        let dir = self.dir.clone();
        let written = tokio::task::spawn_blocking(move || {
            write_once(&dir, &path, yaml.as_bytes()).map(|w| (w, path))
        })
        .await
        .map_err(|e| transient(e.to_string()))?
        .map_err(|e| {
            let cause = classify_io(&e);
            SubmitError::of(
                cause,
                0,
                "OutboxWrite",
                format!("outbox: {e}"),
                Value::Null,
                None,
            )
        })?;
        match written {
            (Submitted::Existing, path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| transient(format!("outbox: reading {}: {e}", path.display())))?;
                let existing: Value = serde_yaml_ng::from_str(&text).unwrap_or(Value::Null);
                if same_event(obj, &existing) {
                    Ok(Submitted::Existing)
                } else {
                    Err(collision(obj, &existing))
                }
            }
            (created, _) => Ok(created),
        }
    }

    fn default_namespace(&self) -> Option<&str> {
        Some(&self.namespace)
    }

    fn describe(&self) -> String {
        format!("outbox {}", self.dir.display())
    }
}

fn transient(message: String) -> SubmitError {
    SubmitError::Transient {
        message,
        retry_after: None,
    }
}

/// Writes `bytes` to `path` unless it exists. Readers never see a partial
/// file; a created file survives a crash (file and directory fsynced).
fn write_once(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<Submitted> {
    use std::io::Write;
    if path.exists() {
        return Ok(Submitted::Existing);
    }
    let temp = || {
        let mut b = tempfile::Builder::new();
        b.prefix(TMP_PREFIX);
        #[cfg(unix)]
        b.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
        b.tempfile_in(dir)
    };
    let mut tmp = match temp() {
        // The directory was removed while we run: make it again (only then,
        // not on every write).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            temp()?
        }
        other => other?,
    };
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    let linked = match std::fs::hard_link(tmp.path(), path) {
        Ok(()) => Submitted::Created,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(Submitted::Existing),
        Err(e) => return Err(e),
    };
    drop(tmp); // removes the temp name
    std::fs::File::open(dir)?.sync_all()?;
    Ok(linked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn writes_once_then_reports_existing() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path(), "default").unwrap();
        let obj = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                         "metadata": {"name": "retrain-abc"}, "spec": {"x": "{{inputs.parameters.a}}"}});
        assert_eq!(outbox.submit(&obj).await.unwrap(), Submitted::Created);
        let mut changed = obj.clone();
        changed["spec"]["x"] = json!("other");
        assert_eq!(outbox.submit(&changed).await.unwrap(), Submitted::Existing);
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            files,
            vec![std::ffi::OsString::from(
                "default.workflow.retrain-abc.yaml"
            )]
        );
        let back: Value = serde_yaml_ng::from_str(
            &std::fs::read_to_string(outbox.file_for(&obj).unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(back, obj, "the first write wins and is intact");

        // A removed outbox directory is made again on the next write.
        std::fs::remove_dir_all(dir.path()).unwrap();
        let other =
            json!({"apiVersion": "v1", "kind": "Workflow", "metadata": {"name": "after-rm"}});
        assert_eq!(outbox.submit(&other).await.unwrap(), Submitted::Created);
        assert!(outbox.file_for(&other).unwrap().exists());
    }

    #[tokio::test]
    async fn concurrent_submissions_of_one_name_create_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = std::sync::Arc::new(Outbox::new(dir.path(), "ns").unwrap());
        let obj = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}});
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (o, obj) = (outbox.clone(), obj.clone());
                tokio::spawn(async move { o.submit(&obj).await.unwrap() })
            })
            .collect();
        let mut created = 0;
        for t in tasks {
            if t.await.unwrap() == Submitted::Created {
                created += 1;
            }
        }
        assert_eq!(created, 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn unsafe_names_collisions_and_stale_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".tripline-tmp-abc"), "half a file").unwrap();
        let outbox = Outbox::new(dir.path(), "default").unwrap();
        assert!(
            !dir.path().join(".tripline-tmp-abc").exists(),
            "stale temp files are removed at start"
        );
        let escape = json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "x", "namespace": "../escaped"}});
        let e = outbox.submit(&escape).await.unwrap_err();
        assert!(!e.is_retryable(), "{e}");
        assert!(!dir
            .path()
            .parent()
            .unwrap()
            .join("escaped.configmap.x.yaml")
            .exists());
        let long = json!({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "x", "namespace": "n".repeat(300)}});
        assert!(!outbox.submit(&long).await.unwrap_err().is_retryable());

        let ours = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "t-1",
            "annotations": {"tripline.dev/event-key": "k1", "tripline.dev/event-id": "e1"}}});
        let theirs = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "t-1",
            "annotations": {"tripline.dev/event-key": "k2", "tripline.dev/event-id": "e2"}}});
        assert_eq!(outbox.submit(&ours).await.unwrap(), Submitted::Created);
        assert_eq!(outbox.submit(&ours).await.unwrap(), Submitted::Existing);
        let e = outbox.submit(&theirs).await.unwrap_err();
        assert!(e.to_string().contains("NameCollision"), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(outbox.file_for(&ours).unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o644);
        }
    }
}
