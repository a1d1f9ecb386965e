//! The dead-letter log: one JSON line per object that was rejected (the API
//! said no, it could not be rendered, or its event's retry budget ran out),
//! with the events that fired it, the object, the error and the API's
//! `Status`; and one per message that never became an event. A rejected event
//! is acknowledged (a poison event must not block its stream); this log is
//! where it went.
//!
//! Records are written by a thread of their own (never on the async
//! workers), each batch in one `write` followed by `fdatasync`, and
//! [`DeadLetter::record`] returns once its line is on disk — so the source
//! acknowledges an event only after its dead letter is durable. Past
//! `max_bytes` the file is rotated to `<path>.1` (one old file is kept).

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};

use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::event::Event;

/// Default size at which the log is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// How many recent records [`DeadLetter`] remembers for de-duplication.
const RECENT: usize = 10_000;

/// One line for the writer thread.
struct Line {
    text: String,
    /// What the record is about, for an error message (never the record).
    what: String,
    written: oneshot::Sender<()>,
}

/// JSON-lines log of what was rejected, with the reason.
pub struct DeadLetter {
    path: PathBuf,
    lines: Mutex<mpsc::Sender<Line>>,
    /// Recently recorded `(sensor, trigger, event ids)`: an event redelivered
    /// because a sibling trigger was unavailable renders the same invalid
    /// object again, and is recorded once, not on every retry.
    recent: Mutex<(HashSet<String>, VecDeque<String>)>,
    /// Records handed to the writer.
    written: std::sync::atomic::AtomicU64,
}

impl DeadLetter {
    pub fn new(path: &Path) -> Self {
        Self::with_max_bytes(path, DEFAULT_MAX_BYTES)
    }

    /// Rotated to `<path>.1` once it would grow past `max_bytes`.
    pub fn with_max_bytes(path: &Path, max_bytes: u64) -> Self {
        let (tx, rx) = mpsc::channel();
        let (p, max) = (path.to_path_buf(), max_bytes.max(1));
        let spawned = std::thread::Builder::new()
            .name("dead-letter".into())
            .spawn(move || write_lines(&p, max, rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the dead-letter writer");
        }
        DeadLetter {
            path: path.to_path_buf(),
            lines: Mutex::new(tx),
            recent: Mutex::default(),
            written: Default::default(),
        }
    }

    /// True the first time `key` is seen (within the last [`RECENT`]).
    fn first_time(&self, key: String) -> bool {
        let mut guard = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let (seen, order) = &mut *guard;
        if !seen.insert(key.clone()) {
            return false;
        }
        order.push_back(key);
        if order.len() > RECENT {
            if let Some(old) = order.pop_front() {
                seen.remove(&old);
            }
        }
        true
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records written (or being written) since start.
    pub fn written(&self) -> u64 {
        self.written.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The last `n` records of the file (newest last); what cannot be read
    /// or parsed is left out. Reads at most the file's last 1 MiB.
    pub fn tail(&self, n: usize) -> Vec<Value> {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(1 << 20);
        let mut text = String::new();
        if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_string(&mut text).is_err() {
            return Vec::new();
        }
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Appends one record: the sensor and trigger, the events (by
    /// dependency name) that fired it, the object, the error and the API's
    /// `Status`; returns once it is on disk. Write errors are logged (with
    /// the event ids, not the record): the event is acknowledged either way.
    pub async fn record(
        &self,
        sensor: &str,
        trigger: &str,
        events: &[(&str, &Event)],
        object: &Value,
        error: &str,
        status: &Value,
    ) {
        let ids: Vec<&str> = events.iter().map(|(_, e)| e.id.as_str()).collect();
        if !self.first_time(format!("{sensor}\0{trigger}\0{}", ids.join("\0"))) {
            tracing::debug!(sensor, trigger, event_ids = ?ids, "already dead-lettered");
            return;
        }
        let line = json!({
            "time": crate::event::now_rfc3339(),
            "sensor": sensor,
            "trigger": trigger,
            "eventIds": ids,
            "events": events.iter().map(|(d, e)| (d.to_string(), e.to_json())).collect::<serde_json::Map<_, _>>(),
            "error": error,
            "status": status,
            "object": object,
        });
        self.append(
            line,
            format!("sensor {sensor} trigger {trigger} events {ids:?}"),
        )
        .await;
    }

    /// Appends a record for a message that never became an event (too
    /// large, unreadable): its source, where it was (`topic/partition/offset`,
    /// a subject…) and why.
    pub async fn record_unprocessable(&self, source: &str, reference: &str, reason: &str) {
        let line = json!({
            "time": crate::event::now_rfc3339(),
            "source": source,
            "reference": reference,
            "error": reason,
        });
        self.append(line, format!("source {source} message {reference}"))
            .await;
    }

    async fn append(&self, line: Value, what: String) {
        let (written, done) = oneshot::channel();
        let sent = self
            .lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Line {
                text: line.to_string(),
                what: what.clone(),
                written,
            });
        if sent.is_err() {
            tracing::error!(path = %self.path.display(), record = %what, "the dead-letter writer is gone; record lost");
            return;
        }
        self.written
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = done.await;
    }
}

/// The writer thread: batches what is queued, one write and one fdatasync
/// per batch, rotation past `max_bytes`.
fn write_lines(path: &Path, max_bytes: u64, lines: mpsc::Receiver<Line>) {
    let mut file: Option<(File, u64)> = None;
    while let Ok(first) = lines.recv() {
        let mut batch = vec![first];
        while batch.len() < 256 {
            match lines.try_recv() {
                Ok(l) => batch.push(l),
                Err(_) => break,
            }
        }
        let mut buf = String::new();
        for l in &batch {
            buf.push_str(&l.text);
            buf.push('\n');
        }
        if let Err(e) = write_batch(path, max_bytes, &mut file, buf.as_bytes()) {
            file = None;
            let what: Vec<&str> = batch.iter().map(|l| l.what.as_str()).collect();
            tracing::error!(path = %path.display(), error = %e, records = ?what, "cannot write the dead-letter log");
        }
        for l in batch {
            let _ = l.written.send(());
        }
    }
}

fn write_batch(
    path: &Path,
    max_bytes: u64,
    file: &mut Option<(File, u64)>,
    bytes: &[u8],
) -> std::io::Result<()> {
    if let Some((_, size)) = file {
        if *size > 0 && *size + bytes.len() as u64 > max_bytes {
            *file = None;
            let mut old = path.as_os_str().to_owned();
            old.push(".1");
            std::fs::rename(path, &old)?;
        }
    }
    if file.is_none() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let f = options.open(path)?;
        let size = f.metadata()?.len();
        *file = Some((f, size));
    }
    let (f, size) = file.as_mut().expect("opened above");
    f.write_all(bytes)?;
    f.sync_data()?;
    *size += bytes.len() as u64;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::submit::SubmitError;

    #[tokio::test]
    async fn dead_letters_are_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetter::new(&dir.path().join("sub/dl.jsonl"));
        let mut e1 = Event::new("src", b"", json!({"k": 1}));
        e1.id = "e1".into();
        let rejected = SubmitError::Permanent {
            code: 422,
            reason: "Invalid".into(),
            message: "bad".into(),
            status: json!({"code": 422}),
        };
        dl.record(
            "s",
            "t",
            &[("dep", &e1)],
            &json!({"kind": "Workflow"}),
            &rejected.to_string(),
            rejected.status(),
        )
        .await;
        let render = "render failed: parameter `n`: no field";
        let mut e2 = e1.clone();
        e2.id = "e2".into();
        dl.record("s", "t", &[("dep", &e2)], &json!({}), render, &Value::Null)
            .await;
        // The same event and trigger again (a redelivery): not recorded twice;
        // another trigger for the same event is.
        dl.record("s", "t", &[("dep", &e2)], &json!({}), render, &Value::Null)
            .await;
        dl.record("s", "t2", &[("dep", &e2)], &json!({}), render, &Value::Null)
            .await;
        let text = std::fs::read_to_string(dl.path()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["eventIds"], json!(["e1"]));
        assert_eq!(lines[1]["eventIds"], json!(["e2"]));
        assert_eq!(lines[2]["trigger"], "t2");
        assert_eq!(lines[0]["events"]["dep"]["body"], json!({"k": 1}));
        assert_eq!(lines[0]["status"]["code"], 422);
        assert_eq!(lines[0]["object"]["kind"], "Workflow");
        assert_eq!(lines[0]["error"], "rejected (422 Invalid): bad");
        assert_eq!(lines[1]["status"], Value::Null);
        assert_eq!(lines[1]["error"], "render failed: parameter `n`: no field");
    }

    #[tokio::test]
    async fn rotates_past_the_size_cap_and_records_unprocessable_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.jsonl");
        let dl = DeadLetter::with_max_bytes(&path, 300);
        for i in 0..5 {
            dl.record_unprocessable(
                "jobs",
                &format!("jobs/0/{i}"),
                "payload of 2000000 bytes is over the 1048576 byte limit",
            )
            .await;
        }
        let now: Vec<Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let old = std::fs::read_to_string(dir.path().join("dl.jsonl.1")).unwrap();
        assert!(
            !now.is_empty() && !old.is_empty(),
            "rotated: {now:?} / {old}"
        );
        assert!(std::fs::metadata(&path).unwrap().len() <= 300);
        assert_eq!(now.last().unwrap()["reference"], "jobs/0/4");
        assert_eq!(now.last().unwrap()["source"], "jobs");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "dead letters hold event data: owner only"
            );
        }
    }
}
