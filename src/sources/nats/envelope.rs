//! NATS message → [`Event`]: `type` and `subject` are the subject, headers
//! are copied (credentials dropped), the payload is parsed. JetStream adds
//! the stream position (the id) and delivery metadata.

use async_nats::jetstream;
use async_nats::HeaderMap;
use serde_json::{json, Map};

use crate::event::{
    body_hash, now_rfc3339, parse_payload_reading, rfc3339_from_unix_millis, Event, EventReads,
};
use crate::redact::is_credential_header;

/// The envelope of a JetStream message and how many times it was delivered.
/// With `reads` (`None`: everything), only what it names is built: of a
/// JSON payload those paths, and headers, `meta` and `time` only if read —
/// except `meta.published`, which is part of the event's identity.
pub(super) fn jetstream_event(
    source: &str,
    message: &jetstream::Message,
    reads: Option<&EventReads>,
) -> Result<(Event, i64), async_nats::Error> {
    let info = message.info()?;
    let published = info
        .published
        .unix_timestamp_nanos()
        .clamp(0, i128::from(u64::MAX)) as u64;
    let time = match reads.is_none_or(|r| r.time) {
        true => rfc3339_from_unix_millis(published / 1_000_000),
        false => String::new(),
    };
    let mut event = envelope(
        source,
        message.subject.as_str(),
        &message.payload,
        message.headers.as_ref(),
        Some((format!("{}:{}", info.stream, info.stream_sequence), time)),
        reads,
    );
    event
        .meta
        .insert("published".into(), json!(published / 1_000_000));
    if reads.is_none_or(|r| r.meta) {
        for (k, v) in [
            ("stream", json!(info.stream)),
            ("consumer", json!(info.consumer)),
            ("streamSequence", json!(info.stream_sequence)),
            ("consumerSequence", json!(info.consumer_sequence)),
            ("delivered", json!(info.delivered)),
            ("pending", json!(info.pending)),
        ] {
            event.meta.insert(k.into(), v);
        }
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
    reads: Option<&EventReads>,
) -> Event {
    envelope(source, subject, payload, headers, None, reads)
}

/// [`message_event`], or with `position` (a JetStream message's id and
/// time) instead of the header id (or payload hash) and now — computed only
/// when needed: hashing every JetStream payload for nothing showed in
/// profiles. Headers, `meta.subject` and `time` are left out when `reads`
/// says nothing reads them (the headers are still read for the id).
fn envelope(
    source: &str,
    subject: &str,
    payload: &[u8],
    headers: Option<&HeaderMap>,
    position: Option<(String, String)>,
    reads: Option<&EventReads>,
) -> Event {
    let read = |root: fn(&EventReads) -> bool| reads.is_none_or(root);
    let mut meta = Map::new();
    let body = parse_payload_reading(payload, &mut meta, reads);
    let mut event = Event::at(source, String::new(), String::new(), body);
    if read(|r| r.meta) {
        meta.insert("subject".into(), json!(subject));
    }
    event.meta = meta;
    event.kind = subject.to_string();
    event.subject = subject.to_string();
    let headers = headers.filter(|_| read(|r| r.headers) || position.is_none());
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
        let time = if read(|r| r.time) {
            now_rfc3339()
        } else {
            String::new()
        };
        (id, time)
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

        // Built for filters that read only the body: `meta.subject` and time
        // are left out; the headers are kept (the id comes from one).
        let part = message_event(
            "src",
            "files.new",
            br#"{"key":"a.csv"}"#,
            Some(&h),
            Some(&EventReads::default()),
        );
        assert_eq!((part.id.as_str(), part.kind.as_str()), ("m-1", "files.new"));
        assert_eq!(part.identity(), e.identity());
        assert_eq!((part.body, part.time.as_str()), (json!({}), ""));
        assert!(part.meta.is_empty());

        let e = message_event("src", "s", &[0xff, 0x00], None, None);
        assert!(e.id.starts_with("sha256:"));
        assert_eq!(e.meta["bodyEncoding"], json!("base64"));
    }
}
