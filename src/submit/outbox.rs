//! The outbox: each object becomes one YAML file, written atomically (temp
//! file, a hard link that fails if the name is taken) and made durable
//! before the submission is answered — with a group commit: the writes
//! queued meanwhile share one flush (see `Committer`). No cluster needed;
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
use super::object::{check, collision, same_event, ObjectRef};
use super::{SubmitError, Submitted, Submitter};

/// Temp files are named `<TMP_PREFIX>…` (and removed at start).
const TMP_PREFIX: &str = ".tripline-tmp-";

pub struct Outbox {
    dir: PathBuf,
    namespace: String,
    committer: Committer,
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
            committer: Committer::start(dir.to_path_buf())?,
        })
    }

    /// Flushes the group commit has done (each covering a batch of writes).
    pub fn flushes(&self) -> u64 {
        self.committer
            .flushes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `<dir>/<namespace>.<kind>.<name>.yaml`, lower-cased kind; `None`
    /// for an object whose coordinates are not valid.
    pub fn file_for(&self, obj: &Value) -> Option<PathBuf> {
        check(obj).ok().map(|o| self.file_of(&o))
    }

    /// [`Outbox::file_for`] of coordinates already checked.
    fn file_of(&self, o: &ObjectRef<'_>) -> PathBuf {
        let ns = o.namespace.unwrap_or(&self.namespace);
        let kind = o.kind.to_ascii_lowercase();
        self.dir.join(format!("{ns}.{kind}.{}.yaml", o.name))
    }
}

#[async_trait]
impl Submitter for Outbox {
    async fn submit(&self, obj: &Value) -> Result<Submitted, SubmitError> {
        let path = self.file_of(&check(obj)?);
        let yaml = serde_yaml_ng::to_string(obj)
            .map_err(|e| SubmitError::rejected(400, "BadRequest", e.to_string()))?;
        let written = self
            .committer
            .write(path.clone(), yaml.into_bytes())
            .await
            .map(|w| (w, path))
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

/// One object to write, and where its outcome goes.
struct Job {
    path: PathBuf,
    bytes: Vec<u8>,
    done: tokio::sync::oneshot::Sender<std::io::Result<Submitted>>,
}

/// The group commit: a writer thread takes every write queued meanwhile
/// (up to [`BATCH`]) and writes and links each; a flusher thread then makes
/// what was written durable with **one** flush — `syncfs` on Linux (file
/// data and directory entries of the outbox's file system), per-file
/// `fsync` + a directory `fsync` elsewhere or for a single file — and only
/// then answers: a submission is acknowledged only once its file would
/// survive a crash, and concurrent submissions share the flush, as a
/// database's group commit. The two threads overlap: the next batch is
/// written while the last one is being flushed, and batches written during
/// a flush share the next one.
struct Committer {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Job>>,
    /// Flushes done (each covering a batch).
    flushes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Writes flushed together at most.
const BATCH: usize = 256;

impl Committer {
    fn start(dir: PathBuf) -> std::io::Result<Committer> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let (written_tx, written_rx) = std::sync::mpsc::channel::<Vec<(Job, Write)>>();
        let flushes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = flushes.clone();
        let writer_dir = dir.clone();
        std::thread::Builder::new()
            .name("outbox-write".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(j) => batch.push(j),
                            Err(_) => break,
                        }
                    }
                    let written = batch
                        .into_iter()
                        .map(|j| {
                            let r = write_unsynced(&writer_dir, &j.path, &j.bytes);
                            (j, r)
                        })
                        .collect();
                    if written_tx.send(written).is_err() {
                        break;
                    }
                }
            })?;
        std::thread::Builder::new()
            .name("outbox-flush".into())
            .spawn(move || {
                while let Ok(first) = written_rx.recv() {
                    let mut written = first;
                    while let Ok(more) = written_rx.try_recv() {
                        written.extend(more);
                    }
                    if settle(&dir, written) {
                        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })?;
        Ok(Committer {
            jobs: std::sync::Mutex::new(tx),
            flushes,
        })
    }

    async fn write(&self, path: PathBuf, bytes: Vec<u8>) -> std::io::Result<Submitted> {
        let (done, outcome) = tokio::sync::oneshot::channel();
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Job { path, bytes, done });
        if sent.is_err() {
            return Err(std::io::Error::other("the outbox writer is gone"));
        }
        outcome
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("the outbox writer is gone")))
    }
}

/// What a write did, and the file to flush.
type Written = (Submitted, Option<std::fs::File>);

/// A write's result.
type Write = std::io::Result<Written>;

/// Flushes once what was written, then answers each job; whether it
/// flushed.
fn settle(dir: &Path, written: Vec<(Job, Write)>) -> bool {
    let files: Vec<&std::fs::File> = written
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().and_then(|(_, f)| f.as_ref()))
        .collect();
    let any_ok = written.iter().any(|(_, r)| r.is_ok());
    let flushed = if any_ok { flush(dir, &files) } else { Ok(()) };
    for (job, r) in written {
        let answer = match (r, &flushed) {
            (Ok((s, _)), Ok(())) => Ok(s),
            (Ok(_), Err(e)) => Err(std::io::Error::new(e.kind(), e.to_string())),
            (Err(e), _) => Err(e),
        };
        let _ = job.done.send(answer);
    }
    any_ok
}

/// Makes what the batch wrote durable: one `syncfs` when several files
/// share it (Linux), else each file's `fsync` and the directory's.
fn flush(dir: &Path, files: &[&std::fs::File]) -> std::io::Result<()> {
    let d = std::fs::File::open(dir)?;
    #[cfg(target_os = "linux")]
    if files.len() > 1 {
        use std::os::fd::AsRawFd;
        // SAFETY: `d` is an open descriptor for the call's duration.
        return if unsafe { libc::syncfs(d.as_raw_fd()) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        };
    }
    for f in files {
        f.sync_all()?;
    }
    d.sync_all()
}

/// Writes `bytes` to `path` unless it exists: a temp file, then a hard link
/// that fails if the name is taken (readers never see a partial file). Not
/// flushed: [`flush`] does that for the whole batch. Returns the file to
/// flush (the one it created, or the one already there).
///
/// No look for `path` first: the link fails if it is there, and a look
/// (a `stat`, 6 % of this thread's time) would cost every new object to
/// save a redelivery the write of an unnamed file.
fn write_unsynced(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<Written> {
    #[cfg(target_os = "linux")]
    match write_anonymous(dir, path, bytes) {
        Ok(file) => return Ok((Submitted::Created, Some(file))),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return existing(path),
        // No O_TMPFILE here (filesystem, kernel) or no /proc: a named temp file.
        Err(_) => {}
    }
    write_named(dir, path, bytes)
}

/// The file already at `path`, to flush too: an `existing` answer promises a
/// durable file, and it may be one a killed process linked unflushed.
fn existing(path: &Path) -> std::io::Result<Written> {
    std::fs::File::open(path).map(|f| (Submitted::Existing, Some(f)))
}

/// [`write_unsynced`] through a named temp file in `dir`, hard-linked to
/// `path` (where `O_TMPFILE` is not available).
fn write_named(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<Written> {
    use std::io::Write;
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
    match std::fs::hard_link(tmp.path(), path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return existing(path),
        Err(e) => return Err(e),
    }
    let file = tmp.as_file().try_clone()?;
    drop(tmp); // removes the temp name
    Ok((Submitted::Created, Some(file)))
}

/// [`write_unsynced`] without a temp name: an unnamed file in `dir`
/// (`O_TMPFILE`), written, then linked to `path` (failing if the name is
/// taken). Saves creating and removing a name per object, and a killed
/// process leaves nothing behind.
#[cfg(target_os = "linux")]
fn write_anonymous(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<std::fs::File> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .mode(0o644)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)?;
    file.write_all(bytes)?;
    let from = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let to = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: both are NUL-terminated paths that live across the call.
    let linked = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if linked == 0 {
        Ok(file)
    } else {
        Err(std::io::Error::last_os_error())
    }
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

    /// 200 concurrent submissions of distinct objects: every file complete
    /// and answered `created`, with far fewer flushes than files.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_submissions_share_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = std::sync::Arc::new(Outbox::new(dir.path(), "ns").unwrap());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let o = outbox.clone();
                tokio::spawn(async move {
                    let obj = json!({"apiVersion": "batch/v1", "kind": "Job",
                        "metadata": {"name": format!("j-{i}")}, "spec": {"n": i}});
                    o.submit(&obj).await.unwrap()
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Submitted::Created);
        }
        for i in 0..200 {
            let text =
                std::fs::read_to_string(dir.path().join(format!("ns.job.j-{i}.yaml"))).unwrap();
            let back: Value = serde_yaml_ng::from_str(&text).unwrap();
            assert_eq!(back["spec"]["n"], i);
        }
        let flushes = outbox.flushes();
        assert!(flushes < 200, "{flushes} flushes for 200 files");
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

    /// Both ways of writing a file (unnamed + link, and the named temp file
    /// used where that is not available): created once with its bytes and
    /// mode, `existing` after, and no temp file left behind.
    #[test]
    fn both_write_paths_create_once_and_leave_no_temp_files() {
        type Write = fn(&Path, &Path, &[u8]) -> std::io::Result<Written>;
        let mut paths: Vec<(&str, Write)> = vec![("named", write_named)];
        #[cfg(target_os = "linux")]
        paths.push(("unnamed", |d, p, b| {
            write_anonymous(d, p, b).map(|f| (Submitted::Created, Some(f)))
        }));
        for (how, write) in paths {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x.yaml");
            let (first, file) = write(dir.path(), &path, b"a: 1\n").unwrap();
            assert_eq!(first, Submitted::Created, "{how}");
            assert!(file.is_some(), "{how}");
            assert_eq!(std::fs::read(&path).unwrap(), b"a: 1\n", "{how}");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode & 0o644, 0o644, "{how}: readable ({mode:o})");
            }
            let again = write(dir.path(), &path, b"a: 2\n");
            match how {
                "named" => assert_eq!(again.unwrap().0, Submitted::Existing),
                _ => assert_eq!(again.unwrap_err().kind(), std::io::ErrorKind::AlreadyExists),
            }
            assert_eq!(
                std::fs::read(&path).unwrap(),
                b"a: 1\n",
                "{how}: not overwritten"
            );
            let names: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["x.yaml"], "{how}");
        }
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
