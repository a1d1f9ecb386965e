//! The intake journal: where a webhook delivery goes when its outcome is not
//! final in time (the Kubernetes API is slow or unavailable, or tripline is
//! shutting down). A sender such as GitHub never redelivers on its own, so
//! the delivery is written durably *before* the sender gets `202 queued`; a
//! worker then drains the journal with the normal retries, removes an entry
//! only once its outcome is final, and replays what is left after a restart.
//! Deterministic names make a replay harmless.
//!
//! Two backends:
//! * a local directory (the default): one file per event, fsynced with its
//!   directory; one process;
//! * a JetStream stream, for several replicas: an event is published (and
//!   acknowledged by the server, so stored) before the 202, with its key as
//!   `Nats-Msg-Id`; the replicas drain it through one durable consumer, so a
//!   queued delivery is processed even if the replica that took it is gone.
//!
//! Longer than most files: two backends behind one small type, so that the
//! drain worker and the server see one journal; the JetStream backend is
//! kept here rather than in `sources/nats` because it is the webhook's
//! durability, not a source.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::event::Event;
use crate::outcome::{Disposition, Process};
use crate::readiness::ReadinessHandle;
use crate::shutdown::Shutdown;

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

/// Where queued deliveries are kept.
pub struct Journal {
    backend: Backend,
    /// For the dir backend: where the files are.
    dir: PathBuf,
    /// Last known `(entries, oldest age)`, for the JetStream backend.
    cached_depth: Mutex<(usize, Duration)>,
    /// Entries some task is processing right now (the worker skips them).
    claimed: Mutex<HashSet<String>>,
    /// Dir backend: the entries found at open or written since, not yet
    /// removed — so that a delivery processed in time (most) costs no
    /// `unlink` of a file that was never written.
    written: Mutex<HashSet<String>>,
    /// Woken when an entry is added.
    added: Notify,
}

/// One queued event and when it was queued.
#[derive(Debug, Clone)]
pub struct Queued {
    pub key: String,
    pub since: SystemTime,
}

/// A set's lock (a panic while holding it leaves the set usable).
fn lock(set: &Mutex<HashSet<String>>) -> std::sync::MutexGuard<'_, HashSet<String>> {
    set.lock().unwrap_or_else(|e| e.into_inner())
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
        let mut written = HashSet::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TMP_PREFIX) {
                let _ = std::fs::remove_file(entry.path());
            } else if let Some(key) = name.strip_suffix(".json") {
                written.insert(key.to_string());
            }
        }
        Ok(Arc::new(Journal {
            backend: Backend::Dir,
            dir: dir.to_path_buf(),
            cached_depth: Mutex::default(),
            claimed: Mutex::new(HashSet::new()),
            written: Mutex::new(written),
            added: Notify::new(),
        }))
    }

    /// Opens (creating) the JetStream stream of the journal.
    pub async fn open_nats(config: &NatsJournalConfig) -> Result<Arc<Journal>, JournalError> {
        let nats = NatsJournal::connect(config).await?;
        Ok(Arc::new(Journal {
            backend: Backend::Nats(Box::new(nats)),
            dir: PathBuf::new(),
            cached_depth: Mutex::default(),
            claimed: Mutex::new(HashSet::new()),
            written: Mutex::default(),
            added: Notify::new(),
        }))
    }

    /// For logs and `/readyz`.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Dir => self.dir.display().to_string(),
            Backend::Nats(n) => n.describe.clone(),
        }
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

    /// Writes `event` durably (file and directory fsynced, or stored by
    /// JetStream) unless it is queued already; returns its key.
    pub async fn append(self: &Arc<Self>, event: &Event) -> Result<String, JournalError> {
        let key = Self::key(event);
        let bytes = serde_json::to_vec(event).expect("events serialize");
        if let Backend::Nats(n) = &self.backend {
            n.publish(&key, bytes).await?;
            return Ok(key);
        }
        // Known before it is written: a task finishing meanwhile removes it.
        lock(&self.written).insert(key.clone());
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

    /// Drops an entry whose outcome is final (the dir backend; a JetStream
    /// entry is acknowledged by the worker, which finds such an event done).
    pub fn remove(&self, key: &str) {
        if !matches!(self.backend, Backend::Dir) {
            return;
        }
        lock(&self.written).remove(key);
        let path = self.path(key);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a journal entry; it will be replayed (harmless)");
            }
        }
    }

    /// Drops the entry of a delivery whose outcome became final while it was
    /// processed live, if it was queued meanwhile (or found at open); a
    /// delivery never queued costs no file-system call.
    pub fn remove_if_queued(&self, key: &str) {
        if lock(&self.written).contains(key) {
            self.remove(key);
        }
    }

    /// [`remove_if_queued`](Self::remove_if_queued) for an event settled
    /// without its key: the key (a hash) is worked out only when something
    /// is queued at all.
    pub fn settled(&self, event: &Event) {
        if !lock(&self.written).is_empty() {
            self.remove_if_queued(&Self::key(event));
        }
    }

    /// Moves an unreadable entry out of the way (`<key>.json.bad`), kept for
    /// an operator to look at.
    pub fn set_aside(&self, key: &str) {
        lock(&self.written).remove(key);
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
        if !matches!(self.backend, Backend::Dir) {
            return *self.cached_depth.lock().unwrap_or_else(|e| e.into_inner());
        }
        let entries = self.list();
        let age = entries
            .first()
            .and_then(|q| q.since.elapsed().ok())
            .unwrap_or_default();
        (entries.len(), age)
    }

    /// Marks `key` as being processed; `false` if someone else is on it.
    pub fn claim(&self, key: &str) -> bool {
        lock(&self.claimed).insert(key.to_string())
    }

    pub fn release(&self, key: &str) {
        lock(&self.claimed).remove(key);
    }

    /// Resolves when an entry was added (or after `at_most`).
    pub async fn wait_added(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.added.notified()).await;
    }
}

enum Backend {
    Dir,
    Nats(Box<NatsJournal>),
}

/// `intake.journal: {nats: {…}}`: the journal on a JetStream stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NatsJournalConfig {
    /// Server urls (default `$NATS_URL`, else `nats://127.0.0.1:4222`).
    #[serde(default)]
    pub urls: Vec<String>,
    /// The stream (created if missing, file storage).
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Subject prefix of the entries.
    #[serde(default = "default_subject")]
    pub subject: String,
    #[serde(default)]
    pub token: Option<crate::secret::SecretRef>,
    #[serde(default)]
    pub creds_file: Option<crate::secret::SecretRef>,
}

fn default_stream() -> String {
    "TRIPLINE_INTAKE".into()
}
fn default_subject() -> String {
    "tripline.intake".into()
}

impl NatsJournalConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (i, u) in self.urls.iter().enumerate() {
            if crate::redact::has_user_info(u) {
                return Err((
                    format!("urls[{i}]"),
                    "carries credentials: use `token` or `credsFile`".into(),
                ));
            }
        }
        if self.stream.is_empty() || self.stream.contains(['.', '*', '>', ' ']) {
            return Err((
                "stream".into(),
                "a stream name without `.`, `*`, `>` or spaces".into(),
            ));
        }
        Ok(())
    }

    pub fn rebase(&mut self, base: &Path) {
        for s in [&mut self.token, &mut self.creds_file]
            .into_iter()
            .flatten()
        {
            s.rebase(base);
        }
    }
}

/// The durable consumer every replica drains the JetStream journal with.
const CONSUMER: &str = "tripline-intake";

struct NatsJournal {
    js: jetstream::Context,
    stream: String,
    subject: String,
    describe: String,
}

fn nats_error(e: impl std::fmt::Display) -> JournalError {
    JournalError::Io {
        path: PathBuf::from("nats"),
        source: std::io::Error::other(e.to_string()),
    }
}

impl NatsJournal {
    async fn connect(c: &NatsJournalConfig) -> Result<NatsJournal, JournalError> {
        let mut options = async_nats::ConnectOptions::new()
            .name("tripline/intake")
            .retry_on_initial_connect()
            .max_reconnects(None);
        if let Some(t) = &c.token {
            options = options.token(t.first().map_err(nats_error)?);
        }
        if let Some(f) = &c.creds_file {
            options = options
                .credentials(&f.read().map_err(nats_error)?)
                .map_err(nats_error)?;
        }
        let servers = if c.urls.is_empty() {
            std::env::var("NATS_URL")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| v.split(',').map(|u| u.trim().to_string()).collect())
                .unwrap_or_else(|| vec!["nats://127.0.0.1:4222".to_string()])
        } else {
            c.urls.clone()
        };
        let client =
            tokio::time::timeout(Duration::from_secs(30), options.connect(servers.as_slice()))
                .await
                .map_err(|_| nats_error("no NATS server answered within 30s"))?
                .map_err(nats_error)?;
        let js = jetstream::new(client);
        js.get_or_create_stream(jetstream::stream::Config {
            name: c.stream.clone(),
            subjects: vec![format!("{}.>", c.subject)],
            storage: jetstream::stream::StorageType::File,
            // A resend within this window publishes nothing new.
            duplicate_window: Duration::from_secs(600),
            ..Default::default()
        })
        .await
        .map_err(nats_error)?;
        let shown: Vec<String> = servers.iter().map(|s| crate::redact::url(s)).collect();
        Ok(NatsJournal {
            js,
            stream: c.stream.clone(),
            subject: c.subject.clone(),
            describe: format!("JetStream stream `{}` at {}", c.stream, shown.join(",")),
        })
    }

    async fn publish(&self, key: &str, bytes: Vec<u8>) -> Result<(), JournalError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", key);
        self.js
            .publish_with_headers(format!("{}.{key}", self.subject), headers, bytes.into())
            .await
            .map_err(nats_error)?
            .await
            .map_err(nats_error)?;
        Ok(())
    }
}

/// Drains the journal: queued events are processed with the normal retries
/// until their outcome is final, then dropped. While the target keeps
/// failing, only one entry at a time is tried (with backoff, up to 10 s) — a
/// probe, so an outage is not hammered with the whole backlog — and the
/// backlog follows as soon as the probe succeeds. What is left at shutdown
/// stays for the next start. Publishes the depth to `/readyz`.
pub async fn drain(
    journal: Arc<Journal>,
    process: Arc<dyn Process>,
    readiness: ReadinessHandle,
    shutdown: Shutdown,
    parallel: usize,
) {
    match &journal.backend {
        Backend::Dir => drain_dir(&journal, process, readiness, shutdown, parallel).await,
        Backend::Nats(n) => {
            if let Err(e) = drain_nats(&journal, n, process, &readiness, &shutdown, parallel).await
            {
                error!(error = %e, "the journal worker stopped");
                readiness.set(false, format!("journal: {e}"));
            }
        }
    }
}

async fn drain_dir(
    journal: &Arc<Journal>,
    process: Arc<dyn Process>,
    readiness: ReadinessHandle,
    shutdown: Shutdown,
    parallel: usize,
) {
    let mut probe = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    let mut failing = false;
    while !shutdown.is_begun() {
        let queued = journal.list();
        let age = queued
            .first()
            .and_then(|q| q.since.elapsed().ok())
            .unwrap_or_default();
        readiness.set(
            true,
            format!(
                "{} queued, oldest {}s ({})",
                queued.len(),
                age.as_secs(),
                journal.describe()
            ),
        );
        let batch: Vec<String> = queued
            .into_iter()
            .map(|q| q.key)
            .filter(|k| journal.claim(k))
            .take(if failing { 1 } else { parallel.max(1) })
            .collect();
        if batch.is_empty() {
            tokio::select! {
                _ = shutdown.begun() => break,
                _ = journal.wait_added(Duration::from_millis(500)) => {}
            }
            continue;
        }
        let results = futures::future::join_all(batch.iter().map(|key| {
            let (journal, process) = (journal.clone(), process.clone());
            async move {
                let retry = match journal.read(key) {
                    Ok(event) => {
                        let outcome = process.process(Arc::new(event)).await;
                        let retry = outcome.disposition() == Disposition::Retry;
                        if !retry {
                            journal.remove(key);
                        }
                        retry
                    }
                    Err(e) => {
                        // Written fsynced, so a disk problem or a bug: said
                        // loudly; moved aside for an operator.
                        error!(error = %e, "unreadable journal entry moved aside");
                        journal.set_aside(key);
                        false
                    }
                };
                journal.release(key);
                retry
            }
        }))
        .await;
        if results.iter().any(|retry| *retry) {
            failing = true;
            let delay = probe.next_delay();
            tokio::select! {
                _ = shutdown.begun() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        } else {
            failing = false;
            probe.reset();
        }
    }
    let (depth, _) = journal.depth();
    if depth > 0 {
        info!(queued = depth, journal = %journal.describe(), "journal entries left for the next start");
    }
}

async fn drain_nats(
    journal: &Journal,
    n: &NatsJournal,
    process: Arc<dyn Process>,
    readiness: &ReadinessHandle,
    shutdown: &Shutdown,
    parallel: usize,
) -> Result<(), JournalError> {
    use futures::StreamExt;
    let stream = n.js.get_stream(&n.stream).await.map_err(nats_error)?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            CONSUMER,
            jetstream::consumer::pull::Config {
                durable_name: Some(CONSUMER.into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(60),
                filter_subject: format!("{}.>", n.subject),
                ..Default::default()
            },
        )
        .await
        .map_err(nats_error)?;
    let mut probe = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    let mut failing = false;
    while !shutdown.is_begun() {
        if let Ok(info) = consumer.clone().info().await {
            let depth = (info.num_pending + info.num_ack_pending as u64) as usize;
            *journal
                .cached_depth
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = (depth, Duration::ZERO);
            readiness.set(true, format!("{depth} queued ({})", n.describe));
        }
        let want = if failing { 1 } else { parallel.max(1) };
        let batch = tokio::select! {
            _ = shutdown.begun() => break,
            b = consumer.fetch().max_messages(want).expires(Duration::from_secs(1)).messages() => b,
        };
        let messages: Vec<jetstream::Message> = match batch {
            Ok(b) => b.filter_map(|m| async { m.ok() }).collect().await,
            Err(e) => {
                warn!(error = %e, "cannot pull from the journal; retrying");
                tokio::time::sleep(probe.next_delay()).await;
                continue;
            }
        };
        let results = futures::future::join_all(messages.into_iter().map(|m| {
            let process = process.clone();
            async move {
                let event: Event = match serde_json::from_slice(&m.payload) {
                    Ok(e) => e,
                    Err(e) => {
                        error!(error = %e, subject = %m.subject, "unreadable journal entry terminated");
                        let _ = m.ack_with(jetstream::AckKind::Term).await;
                        return false;
                    }
                };
                let outcome = process.process(Arc::new(event)).await;
                if outcome.disposition() == Disposition::Retry {
                    let _ = m.ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1)))).await;
                    true
                } else {
                    if let Err(e) = m.double_ack().await {
                        warn!(error = %e, "journal ack not confirmed; the entry may come back (harmless)");
                    }
                    false
                }
            }
        }))
        .await;
        if results.iter().any(|retry| *retry) {
            failing = true;
            let delay = probe.next_delay();
            tokio::select! {
                _ = shutdown.begun() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        } else if !results.is_empty() {
            failing = false;
            probe.reset();
        }
    }
    Ok(())
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

    #[tokio::test]
    async fn a_live_outcome_removes_only_entries_queued_or_found_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let event = |id: &str| {
            let mut e = Event::new("gh", b"{}", json!({}));
            e.id = id.into();
            e
        };
        let (found, queued, placed) = (event("found"), event("queued"), event("placed"));
        let j = Journal::open(dir.path()).unwrap();
        let found_key = j.append(&found).await.unwrap();
        drop(j);
        let j = Journal::open(dir.path()).unwrap();
        let queued_key = j.append(&queued).await.unwrap();
        // An entry put there behind the journal's back (an operator moving
        // a `.bad` entry back): the worker's to replay, not a live task's.
        let placed_key = Journal::key(&placed);
        std::fs::write(
            dir.path().join(format!("{placed_key}.json")),
            serde_json::to_vec(&placed).unwrap(),
        )
        .unwrap();
        for key in [
            &found_key,
            &queued_key,
            &placed_key,
            &Journal::key(&event("never")),
        ] {
            j.remove_if_queued(key);
        }
        let left: Vec<String> = j.list().into_iter().map(|q| q.key).collect();
        assert_eq!(left, vec![placed_key.clone()]);
        j.remove(&placed_key);
        assert_eq!(j.depth().0, 0, "the worker's remove always removes");
    }
}
