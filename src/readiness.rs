//! Readiness: what `/readyz` reports. Every source gets a
//! [`ReadinessHandle`] from the one [`Readiness`] registry and says, as it
//! goes, whether it is ready and why not. Broker sources share the state
//! machine [`BrokerState`]: connected → consuming, with the last problem.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// Readiness of each source (listening, connected to its broker…).
#[derive(Default)]
pub struct Readiness(Mutex<BTreeMap<String, (bool, String)>>);

impl Readiness {
    /// A handle for `source`, which starts not ready ("starting"): `/readyz`
    /// never answers 200 before a broker source has connected.
    pub fn handle(self: &Arc<Self>, source: &str) -> ReadinessHandle {
        let handle = ReadinessHandle {
            registry: self.clone(),
            source: source.to_string(),
        };
        handle.set(false, "starting");
        handle
    }

    /// `(all ready, per-source detail)`.
    pub fn report(&self) -> (bool, Value) {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let all = map.values().all(|(r, _)| *r);
        let detail = map
            .iter()
            .map(|(k, (r, d))| (k.clone(), json!({"ready": r, "detail": d})))
            .collect::<serde_json::Map<_, _>>();
        (all, Value::Object(detail))
    }
}

/// One source's entry in the registry.
#[derive(Clone)]
pub struct ReadinessHandle {
    registry: Arc<Readiness>,
    source: String,
}

impl ReadinessHandle {
    pub fn set(&self, ready: bool, detail: impl Into<String>) {
        self.registry
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.source.clone(), (ready, detail.into()));
    }

    /// Marks the source ready unless it already is; `detail` is built only
    /// on that change. For a hot path saying "still fine" (the submit target
    /// after every submission): a lock, no allocation.
    pub fn set_ready_with(&self, detail: impl FnOnce() -> String) {
        let mut map = self.registry.0.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(&self.source) {
            Some((true, _)) => {}
            Some(entry) => *entry = (true, detail()),
            None => {
                map.insert(self.source.clone(), (true, detail()));
            }
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Where a broker source stands. Ready only while connected, consuming and
/// without a problem; otherwise the detail says why not.
#[derive(Debug, Clone, Default)]
pub struct BrokerState {
    /// Shown while connected but not yet consuming ("connected; binding").
    pub starting: String,
    /// Shown while not connected ("not connected to NATS (…)").
    pub disconnected: String,
    pub connected: bool,
    /// What the source does once it works ("consuming stream …").
    pub consuming: Option<String>,
    /// Why it does not work although connected (stream missing…).
    pub problem: Option<String>,
    /// The client's last error while not connected (auth, TLS, refused…).
    pub last_error: Option<String>,
    pub stopping: bool,
}

impl BrokerState {
    /// `(ready, detail)`.
    pub fn verdict(&self) -> (bool, String) {
        if self.stopping {
            return (false, "shutting down".into());
        }
        if !self.connected {
            return match &self.last_error {
                Some(e) => (false, format!("{}: {e}", self.disconnected)),
                None => (false, self.disconnected.clone()),
            };
        }
        match (&self.consuming, &self.problem) {
            (_, Some(p)) => (false, p.clone()),
            (None, None) => (false, self.starting.clone()),
            (Some(c), None) => (true, c.clone()),
        }
    }
}

/// A [`BrokerState`] that publishes every change to its handle.
pub struct BrokerHealth {
    state: Mutex<BrokerState>,
    handle: ReadinessHandle,
}

impl BrokerHealth {
    pub fn new(handle: ReadinessHandle, state: BrokerState) -> Self {
        let health = BrokerHealth {
            state: Mutex::new(state),
            handle,
        };
        health.publish();
        health
    }

    /// Changes the state and publishes the new verdict (except once stopping,
    /// when the source alone says what it is doing).
    pub fn update(&self, change: impl FnOnce(&mut BrokerState)) {
        let verdict = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let was_stopping = s.stopping;
            change(&mut s);
            (!was_stopping || !s.stopping).then(|| s.verdict())
        };
        if let Some((ready, detail)) = verdict {
            self.handle.set(ready, detail);
        }
    }

    pub fn read<T>(&self, f: impl FnOnce(&BrokerState) -> T) -> T {
        f(&self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn publish(&self) {
        let (ready, detail) = self.read(BrokerState::verdict);
        self.handle.set(ready, detail);
    }

    pub fn handle(&self) -> &ReadinessHandle {
        &self.handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> BrokerState {
        BrokerState {
            starting: "connected; binding".into(),
            disconnected: "not connected to NATS (nats://h:4222)".into(),
            ..Default::default()
        }
    }

    #[test]
    fn set_ready_with_builds_the_detail_only_on_a_change() {
        let registry = Arc::new(Readiness::default());
        let h = registry.handle("target");
        let built = std::cell::Cell::new(0);
        let detail = || {
            built.set(built.get() + 1);
            "kubernetes https://k (namespace ml)".to_string()
        };
        h.set_ready_with(detail);
        h.set_ready_with(detail);
        assert_eq!(built.get(), 1, "already ready: nothing built");
        assert_eq!(
            registry.report(),
            (
                true,
                json!({"target": {"ready": true, "detail": "kubernetes https://k (namespace ml)"}})
            )
        );
        h.set(false, "503 ServiceUnavailable");
        assert!(!registry.report().0);
        h.set_ready_with(detail);
        assert_eq!(built.get(), 2, "down → up: the detail again");
        assert!(registry.report().0);
    }

    #[test]
    fn broker_state_is_ready_only_connected_and_consuming() {
        let mut s = state();
        assert_eq!(
            s.verdict(),
            (false, "not connected to NATS (nats://h:4222)".into())
        );
        s.last_error = Some("authorization violation".into());
        assert_eq!(
            s.verdict(),
            (
                false,
                "not connected to NATS (nats://h:4222): authorization violation".into()
            )
        );
        s.connected = true;
        assert_eq!(s.verdict(), (false, "connected; binding".into()));
        s.consuming = Some("consuming stream `S`".into());
        assert_eq!(s.verdict(), (true, "consuming stream `S`".into()));
        s.problem = Some("stream `S` not found".into());
        assert_eq!(s.verdict(), (false, "stream `S` not found".into()));
        s.problem = None;
        s.stopping = true;
        assert_eq!(s.verdict(), (false, "shutting down".into()));
    }

    #[test]
    fn registry_reports_every_source_and_starts_not_ready() {
        let r = Arc::new(Readiness::default());
        let a = r.handle("a");
        let b = r.handle("b");
        assert!(!r.report().0);
        a.set(true, "listening");
        b.set(true, "consuming");
        let (all, detail) = r.report();
        assert!(all);
        assert_eq!(detail["a"]["detail"], "listening");
        let health = BrokerHealth::new(b.clone(), state());
        assert!(!r.report().0, "a new broker health is not connected");
        health.update(|s| s.stopping = true);
        b.set(false, "stopped");
        health.update(|s| s.connected = true);
        assert_eq!(
            r.report().1["b"]["detail"],
            "stopped",
            "once stopping, the source has the last word"
        );
    }
}
