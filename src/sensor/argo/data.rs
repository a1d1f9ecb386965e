//! The event an Argo dependency sees: upstream's `{context, data}`, built
//! from tripline's envelope (ARGO-COMPAT §3). The Argo source type is read
//! off the envelope: Kafka (`meta.topic`), GitHub (`X-GitHub-Event`), GitLab
//! (`X-Gitlab-Event`), NATS (`meta.subject`, no `meta.path`), else a webhook.

use serde_json::{json, Map, Value};

use crate::event::Event;
use crate::sensor::catalog::ArgoSource;

/// Upstream's event: `context` and `data`.
#[derive(Debug, Clone, PartialEq)]
pub struct ArgoEvent {
    pub context: Value,
    pub data: Value,
}

/// Go's canonical header key: `x-github-event` → `X-Github-Event`.
pub fn canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(first) => {
                    first.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase()
                }
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Header maps as Go's `http.Header`: canonical keys, lists of values.
/// Credentials were removed by the source already; upstream masks
/// `Authorization` with this text, kept for parity when present.
fn header_map(event: &Event) -> Value {
    let mut m = Map::new();
    for (k, v) in event.headers.iter() {
        m.insert(canonical(k), json!([v]));
    }
    Value::Object(m)
}

/// Why an event cannot be seen by Argo dependencies at all.
pub type NotArgo = String;

/// A NATS/Kafka body under `jsonBody: false`: the payload's base64 (a JSON
/// payload is re-serialised compactly, keys sorted — not byte for byte).
fn base64_body(event: &Event) -> Value {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| json!(base64::engine::general_purpose::STANDARD.encode(bytes));
    match &event.body {
        Value::String(s) if event.meta.contains_key("bodyEncoding") => json!(s),
        Value::String(s) => b64(s.as_bytes()),
        other => b64(other.to_string().as_bytes()),
    }
}

fn json_body(event: &Event) -> Result<Value, NotArgo> {
    let text_body = matches!(event.body, Value::String(_))
        && !event
            .meta
            .get("contentType")
            .and_then(Value::as_str)
            .is_some_and(|c| c.ends_with("json"));
    if text_body || event.meta.contains_key("bodyEncoding") {
        return Err("the body is not JSON; Argo sources reject such events".into());
    }
    Ok(event.body.clone())
}

/// The Argo event for a dependency on `event_source`/`event_name`, bound to
/// a source with the `source` `argo:` block.
pub fn argo_event(
    event: &Event,
    event_source: &str,
    event_name: &str,
    source: &ArgoSource,
) -> Result<ArgoEvent, NotArgo> {
    let broker_body = |event: &Event| {
        if source.json_body {
            json_body(event)
        } else {
            Ok(base64_body(event))
        }
    };
    let header = |name: &str| event.headers.get(name).map(str::to_string);
    let (kind, data) = if event.meta.contains_key("topic") && event.meta.contains_key("partition") {
        let timestamp = event
            .meta
            .get("timestamp")
            .and_then(Value::as_i64)
            .map(go_time_string)
            .unwrap_or_default();
        let headers: Map<String, Value> = event
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let data = json!({
            "topic": event.meta["topic"],
            "key": event.meta.get("key").and_then(Value::as_str).unwrap_or_default(),
            "partition": event.meta["partition"],
            "body": broker_body(event)?,
            "timestamp": timestamp,
            "headers": headers,
        });
        ("kafka", data)
    } else if let Some(kind) = header("x-github-event") {
        let mut body = json_body(event)?;
        if let Value::Object(m) = &mut body {
            m.insert("X-GitHub-Event".into(), json!(kind));
            m.insert(
                "X-GitHub-Delivery".into(),
                json!(header("x-github-delivery").unwrap_or_default()),
            );
        }
        (
            "github",
            json!({"headers": header_map(event), "body": body}),
        )
    } else if header("x-gitlab-event").is_some() {
        (
            "gitlab",
            json!({"headers": header_map(event), "body": json_body(event)?}),
        )
    } else if event.meta.contains_key("subject") && !event.meta.contains_key("path") {
        let mut data = json!({"subject": event.meta["subject"], "body": broker_body(event)?});
        if event.headers.iter().next().is_some() {
            data["header"] = header_map(event);
        }
        ("nats", data)
    } else {
        let mut body = json_body(event)?;
        // A form body: Go's url.Values, a list per field.
        if event.meta.get("contentType").and_then(Value::as_str)
            == Some("application/x-www-form-urlencoded")
        {
            if let Value::Object(m) = &mut body {
                for v in m.values_mut() {
                    if v.is_string() {
                        *v = json!([v.take()]);
                    }
                }
            }
        }
        (
            "webhook",
            json!({"header": header_map(event), "body": body}),
        )
    };
    let mut data = data;
    if let (Some(m), Value::Object(d)) = (&source.metadata, &mut data) {
        d.insert("metadata".into(), Value::Object(m.clone()));
    }
    let context = json!({
        "id": event.id,
        "source": event_source,
        "subject": event_name,
        "type": kind,
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "time": seconds(&event.time),
    });
    Ok(ArgoEvent { context, data })
}

/// RFC 3339 in UTC to the second, as `metav1.Time` marshals (an offset is
/// turned into the same instant in UTC; text that is not RFC 3339 is kept).
fn seconds(time: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(time) {
        Ok(t) => t
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string(),
        Err(_) => time.to_string(),
    }
}

/// Go's `time.Time.String()` in UTC: `2026-11-30 08:30:00.123 +0000 UTC`.
fn go_time_string(ms: i64) -> String {
    let t = crate::event::rfc3339_from_unix_millis(ms.max(0) as u64);
    // 2026-11-30T08:30:00.123Z → 2026-11-30 08:30:00.123 +0000 UTC
    let t = t.trim_end_matches('Z').replacen('T', " ", 1);
    let t = t.trim_end_matches(".000");
    format!("{t} +0000 UTC")
}

impl ArgoEvent {
    /// The whole event as upstream marshals it for a parameter without a
    /// key or template: `data` is base64 (Go `[]byte`).
    pub fn whole(&self) -> String {
        use base64::Engine as _;
        json!({
            "context": self.context,
            "data": base64::engine::general_purpose::STANDARD.encode(self.data.to_string()),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_github_kafka_shapes() {
        let mut e = Event::new("webhook-example", b"{}", json!({"message": "hi"}));
        e.headers.insert("content-type", "application/json");
        e.meta
            .insert("contentType".into(), json!("application/json"));
        e.meta.insert("path".into(), json!("/example"));
        let a = argo_event(&e, "webhook", "example", &ArgoSource::default()).unwrap();
        assert_eq!(
            a.data["header"]["Content-Type"],
            json!(["application/json"])
        );
        assert_eq!(a.data["body"]["message"], "hi");
        assert_eq!(a.context["type"], "webhook");
        assert_eq!(a.context["source"], "webhook");
        assert_eq!(a.context["subject"], "example");

        let mut g = Event::new("github-example", b"{}", json!({"action": "opened"}));
        g.headers.insert("x-github-event", "pull_request");
        g.headers.insert("x-github-delivery", "d-1");
        let a = argo_event(&g, "github", "example", &ArgoSource::default()).unwrap();
        assert_eq!(a.data["headers"]["X-Github-Event"], json!(["pull_request"]));
        assert_eq!(a.data["body"]["X-GitHub-Event"], "pull_request");
        assert_eq!(a.data["body"]["X-GitHub-Delivery"], "d-1");

        let mut k = Event::new("kafka-example", b"{}", json!({"job": 1}));
        for (key, v) in [
            ("topic", json!("jobs")),
            ("partition", json!(2)),
            ("key", json!("k")),
            ("timestamp", json!(1_764_491_400_123_i64)),
        ] {
            k.meta.insert(key.into(), v);
        }
        let a = argo_event(&k, "kafka", "example", &ArgoSource::default()).unwrap();
        assert_eq!(a.data["topic"], "jobs");
        assert_eq!(a.data["partition"], 2);
        assert_eq!(a.data["timestamp"], "2025-11-30 08:30:00.123 +0000 UTC");

        let text = Event::new("webhook-example", b"hello", json!("hello"));
        assert!(argo_event(&text, "webhook", "example", &ArgoSource::default()).is_err());
    }

    #[test]
    fn json_body_false_gives_base64_and_metadata_is_copied() {
        let mut n = Event::new("nats-example", b"hello", json!("hello"));
        n.meta.insert("subject".into(), json!("jobs"));
        let plain = ArgoSource::default();
        assert!(argo_event(&n, "nats", "example", &plain).is_err());
        let raw = ArgoSource {
            json_body: false,
            metadata: Some(serde_json::from_str(r#"{"team":"ml"}"#).unwrap()),
            ..Default::default()
        };
        let a = argo_event(&n, "nats", "example", &raw).unwrap();
        assert_eq!(a.data["body"], "aGVsbG8=");
        assert_eq!(a.data["metadata"]["team"], "ml");
        assert_eq!(a.data["subject"], "jobs");
        // A JSON payload under jsonBody: false is base64 too, of its compact
        // re-serialisation (keys sorted: a documented deviation).
        let j = Event::new("nats-example", b"{}", json!({"b": 1, "a": 2}));
        let mut j = j;
        j.meta.insert("subject".into(), json!("jobs"));
        let a = argo_event(&j, "nats", "example", &raw).unwrap();
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(a.data["body"].as_str().unwrap())
            .unwrap();
        assert_eq!(decoded, br#"{"a":2,"b":1}"#);
        // No metadata block ⇒ no `metadata` key (Go omitempty).
        let a = argo_event(&j, "nats", "example", &ArgoSource::default()).unwrap();
        assert!(a.data.get("metadata").is_none());
    }
}
