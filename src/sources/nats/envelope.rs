//! NATS message → [`Event`]: `type` and `subject` are the subject, headers
//! are copied (credentials dropped), the payload is parsed. JetStream adds
//! the stream position (the id) and delivery metadata.

use async_nats::jetstream;
use async_nats::HeaderMap;
use serde_json::{json, Map};

use crate::event::{
    body_hash, now_rfc3339, parse_payload_reading, rfc3339_from_unix_millis, BodyReads, Event,
};
use crate::redact::is_credential_header;

/// The envelope of a JetStream message and how many times it was delivered.
/// Of a JSON payload only what `reads` names is built (all for `None`).
pub(super) fn jetstream_event(
    source: &str,
    message: &jetstream::Message,
    reads: Option<&BodyReads>,
) -> Result<(Event, i64), async_nats::Error> {
    let info = message.info()?;
    let published = info
        .published
        .unix_timestamp_nanos()
        .clamp(0, i128::from(u64::MAX)) as u64;
    let mut event = envelope(
        source,
        message.subject.as_str(),
        &message.payload,
        message.headers.as_ref(),
        Some((
            format!("{}:{}", info.stream, info.stream_sequence),
            rfc3339_from_unix_millis(published / 1_000_000),
        )),
        reads,
    );
    for (k, v) in [
        ("stream", json!(info.stream)),
        ("consumer", json!(info.consumer)),
        ("streamSequence", json!(info.stream_sequence)),
        ("consumerSequence", json!(info.consumer_sequence)),
        ("delivered", json!(info.delivered)),
        ("pending", json!(info.pending)),
        ("published", json!(published / 1_000_000)),
    ] {
        event.meta.insert(k.into(), v);
    }
    Ok((event, info.delivered))
}

/// The envelope every NATS message shares: `type` and `subject` are the
/// subject, headers are copied (credentials dropped), the payload is parsed.
/// The id is the `Nats-Msg-Id` header if any, else a hash of the payload.
pub(super) fn message_event(
    source: &str,
    subject: &str,
    payload: &[u8],
    headers: Option<&HeaderMap>,
    reads: Option<&BodyReads>,
) -> Event {
    envelope(source, subject, payload, headers, None, reads)
}

/// [`message_event`], or with `position` (a JetStream message's id and
/// time) instead of the header id (or payload hash) and now — computed only
/// when needed: hashing every JetStream payload for nothing showed in
/// profiles.
fn envelope(
    source: &str,
    subject: &str,
    payload: &[u8],
    headers: Option<&HeaderMap>,
    position: Option<(String, String)>,
    reads: Option<&BodyReads>,
) -> Event {
    let mut meta = Map::new();
    let body = parse_payload_reading(payload, &mut meta, reads);
    let mut event = Event::at(source, String::new(), String::new(), body);
    meta.insert("subject".into(), json!(subject));
    event.meta = meta;
    event.kind = subject.to_string();
    event.subject = subject.to_string();
    for (name, values) in headers.into_iter().flat_map(HeaderMap::iter) {
        let name: &str = name.as_ref();
        if is_credential_header(name) {
            continue;
        }
        for v in values {
            event.headers.insert(name, v.as_str());
        }
    }
    (event.id, event.time) = position.unwrap_or_else(|| {
        let id = match event.headers.get("nats-msg-id").filter(|id| !id.is_empty()) {
            Some(id) => id.to_string(),
            None => body_hash(payload),
        };
        (id, now_rfc3339())
    });
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn message_envelope() {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", "m-1");
        h.insert("X-Trace", "t");
        h.insert("Authorization", "Bearer secret");
        let e = message_event("src", "files.new", br#"{"key":"a.csv"}"#, Some(&h), None);
        assert_eq!(e.id, "m-1");
        assert_eq!(
            (e.kind.as_str(), e.subject.as_str()),
            ("files.new", "files.new")
        );
        assert_eq!(e.body, json!({"key": "a.csv"}));
        assert_eq!(e.headers.get("x-trace"), Some("t"));
        assert_eq!(e.headers.get("authorization"), None);
        assert_eq!(e.meta["subject"], json!("files.new"));

        let e = message_event("src", "s", &[0xff, 0x00], None, None);
        assert!(e.id.starts_with("sha256:"));
        assert_eq!(e.meta["bodyEncoding"], json!("base64"));
    }
}
