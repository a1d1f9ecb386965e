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
    let position = Position {
        stream: info.stream,
        consumer: info.consumer,
        stream_sequence: info.stream_sequence,
        consumer_sequence: info.consumer_sequence,
        delivered: info.delivered,
        pending: info.pending,
        published_ms: (info.published.unix_timestamp_nanos() / 1_000_000)
            .clamp(0, i128::from(u64::MAX)) as u64,
    };
    let event = positioned_event(
        source,
        message.subject.as_str(),
        &message.payload,
        message.headers.as_ref(),
        &position,
        reads,
    );
    Ok((event, info.delivered))
}

/// Where a JetStream message sits and how it was delivered (from its reply
/// subject).
struct Position<'a> {
    stream: &'a str,
    consumer: &'a str,
    stream_sequence: u64,
    consumer_sequence: u64,
    delivered: i64,
    pending: u64,
    published_ms: u64,
}

/// [`jetstream_event`] once the position is read: id `<stream>:<sequence>`,
/// time the publication, the position in `meta`.
fn positioned_event(
    source: &str,
    subject: &str,
    payload: &[u8],
    headers: Option<&HeaderMap>,
    p: &Position,
    reads: Option<&EventReads>,
) -> Event {
    let time = match reads.is_none_or(|r| r.time) {
        true => rfc3339_from_unix_millis(p.published_ms),
        false => String::new(),
    };
    let id = format!("{}:{}", p.stream, p.stream_sequence);
    let mut event = envelope(source, subject, payload, headers, Some((id, time)), reads);
    event.meta.insert("published".into(), json!(p.published_ms));
    if reads.is_none_or(|r| r.meta) {
        for (k, v) in [
            ("stream", json!(p.stream)),
            ("consumer", json!(p.consumer)),
            ("streamSequence", json!(p.stream_sequence)),
            ("consumerSequence", json!(p.consumer_sequence)),
            ("delivered", json!(p.delivered)),
            ("pending", json!(p.pending)),
        ] {
            event.meta.insert(k.into(), v);
        }
    }
    event
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

    #[test]
    fn jetstream_envelope_whole_and_in_part() {
        let mut h = HeaderMap::new();
        h.insert("X-Trace", "t");
        let p = Position {
            stream: "S",
            consumer: "c",
            stream_sequence: 42,
            consumer_sequence: 7,
            delivered: 2,
            pending: 5,
            published_ms: 1_764_000_000_123,
        };
        let body = br#"{"key":"a.csv","size":3}"#;
        let e = positioned_event("src", "files.new", body, Some(&h), &p, None);
        assert_eq!((e.id.as_str(), e.kind.as_str()), ("S:42", "files.new"));
        assert_eq!(e.time, "2025-11-24T16:00:00.123Z");
        assert_eq!(e.headers.get("x-trace"), Some("t"));
        assert_eq!(
            e.meta,
            Map::from_iter(
                [
                    ("subject", json!("files.new")),
                    ("stream", json!("S")),
                    ("consumer", json!("c")),
                    ("streamSequence", json!(42)),
                    ("consumerSequence", json!(7)),
                    ("delivered", json!(2)),
                    ("pending", json!(5)),
                    ("published", json!(1_764_000_000_123_u64)),
                ]
                .map(|(k, v)| (k.to_string(), v))
            )
        );
        // For filters reading only `body.key`: no headers, no time, of `meta`
        // only `published` (the identity needs it) — and the same identity.
        let mut reads = EventReads::default();
        reads.add(&["body", "key"]);
        let part = positioned_event("src", "files.new", body, Some(&h), &p, Some(&reads));
        assert_eq!(part.identity(), e.identity());
        let expected = Event {
            body: json!({"key": "a.csv"}),
            headers: Default::default(),
            time: String::new(),
            meta: Map::from_iter([("published".to_string(), json!(1_764_000_000_123_u64))]),
            ..e.clone()
        };
        assert_eq!(part, expected);
        // Reading every root: the whole event with the body pruned.
        for root in [&["headers"][..], &["meta"], &["time"]] {
            reads.add(root);
        }
        let part = positioned_event("src", "files.new", body, Some(&h), &p, Some(&reads));
        assert_eq!(
            part,
            Event {
                body: json!({"key": "a.csv"}),
                ..e
            }
        );
    }
}
