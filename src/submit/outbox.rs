//! The outbox: each object becomes one YAML file, written atomically
//! (temp file, then a hard link that fails if the name is taken). No cluster
//! needed; `tripline serve` on a fresh machine writes here.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::Value;

use super::{SubmitError, Submitted, Submitter};

pub struct Outbox {
    dir: PathBuf,
    namespace: String,
}

impl Outbox {
    pub fn new(dir: &Path, namespace: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Outbox {
            dir: dir.to_path_buf(),
            namespace: namespace.to_string(),
        })
    }

    /// `<dir>/<namespace>.<kind>.<name>.yaml`, lower-cased kind.
    pub fn file_for(&self, obj: &Value) -> PathBuf {
        let meta = &obj["metadata"];
        let ns = meta["namespace"].as_str().unwrap_or(&self.namespace);
        let kind = obj["kind"]
            .as_str()
            .unwrap_or("object")
            .to_ascii_lowercase();
        let name = meta["name"].as_str().unwrap_or("unnamed");
        self.dir.join(format!("{ns}.{kind}.{name}.yaml"))
    }
}

#[async_trait]
impl Submitter for Outbox {
    async fn submit(&self, obj: &Value) -> Result<Submitted, SubmitError> {
        let path = self.file_for(obj);
        let yaml = serde_yaml_ng::to_string(obj).map_err(|e| SubmitError::Permanent {
            code: 400,
            reason: "BadRequest".into(),
            message: e.to_string(),
            status: Value::Null,
        })?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_once(&dir, &path, yaml.as_bytes()))
            .await
            .map_err(|e| transient(e.to_string()))?
            .map_err(|e| transient(format!("outbox: {e}")))
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

/// Writes `bytes` to `path` unless it exists. Readers never see a partial file.
fn write_once(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<Submitted> {
    use std::io::Write;
    if path.exists() {
        return Ok(Submitted::Existing);
    }
    let mut tmp = match tempfile::NamedTempFile::new_in(dir) {
        // The directory was removed while we run: make it again (only then,
        // not on every write).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            tempfile::NamedTempFile::new_in(dir)?
        }
        other => other?,
    };
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    match std::fs::hard_link(tmp.path(), path) {
        Ok(()) => Ok(Submitted::Created),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Submitted::Existing),
        Err(e) => Err(e),
    }
    // `tmp` is removed on drop.
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
        let back: Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(outbox.file_for(&obj)).unwrap())
                .unwrap();
        assert_eq!(back, obj, "the first write wins and is intact");

        // A removed outbox directory is made again on the next write.
        std::fs::remove_dir_all(dir.path()).unwrap();
        let other = json!({"kind": "Workflow", "metadata": {"name": "after-rm"}});
        assert_eq!(outbox.submit(&other).await.unwrap(), Submitted::Created);
        assert!(outbox.file_for(&other).exists());
    }

    #[tokio::test]
    async fn concurrent_submissions_of_one_name_create_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = std::sync::Arc::new(Outbox::new(dir.path(), "ns").unwrap());
        let obj = json!({"kind": "Job", "metadata": {"name": "j"}});
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
}
