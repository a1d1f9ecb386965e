//! The dead-letter log: one JSON line per object that was rejected (the API
//! said no, or it could not be rendered), with the events that fired it, the
//! object, the error and the API's `Status`. A rejected event is acknowledged
//! (a poison event must not block its stream); this log is where it went.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::event::Event;

/// JSON-lines log of objects the API rejected, with its reason.
pub struct DeadLetter {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
    /// Recently recorded `(sensor, trigger, event ids)`: an event redelivered
    /// because a sibling trigger was unavailable renders the same invalid
    /// object again, and is recorded once, not on every retry.
    recent: Mutex<(HashSet<String>, VecDeque<String>)>,
}

/// How many recent records [`DeadLetter`] remembers for de-duplication.
const RECENT: usize = 10_000;

impl DeadLetter {
    pub fn new(path: &Path) -> Self {
        DeadLetter {
            path: path.to_path_buf(),
            file: Mutex::new(None),
            recent: Mutex::default(),
        }
    }

    /// True the first time `key` is seen (within the last [`RECENT`]).
    fn first_time(&self, key: String) -> bool {
        let mut guard = self.recent.lock().expect("dead-letter lock");
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

    /// Appends one record: the sensor and trigger, the events (by
    /// dependency name) that fired it, the object, the error and the API's
    /// `Status`. Write errors are logged: the event is acknowledged either
    /// way (a poison event must not block its stream).
    pub fn record(
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
        let mut guard = self.file.lock().expect("dead-letter lock");
        if guard.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                let _ = std::fs::create_dir_all(dir);
            }
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                Ok(f) => *guard = Some(f),
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, record = %line, "cannot open dead-letter log");
                    return;
                }
            }
        }
        if let Some(f) = guard.as_mut() {
            if let Err(e) = writeln!(f, "{line}") {
                tracing::error!(path = %self.path.display(), error = %e, record = %line, "cannot write dead-letter log");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::submit::SubmitError;

    #[test]
    fn dead_letters_are_json_lines() {
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
        );
        let render = "render failed: parameter `n`: no field";
        let mut e2 = e1.clone();
        e2.id = "e2".into();
        dl.record("s", "t", &[("dep", &e2)], &json!({}), render, &Value::Null);
        // The same event and trigger again (a redelivery): not recorded twice;
        // another trigger for the same event is.
        dl.record("s", "t", &[("dep", &e2)], &json!({}), render, &Value::Null);
        dl.record("s", "t2", &[("dep", &e2)], &json!({}), render, &Value::Null);
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
}
