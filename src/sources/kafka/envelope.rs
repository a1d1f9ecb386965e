//! Kafka message → [`Event`].

use base64::Engine as _;
use rdkafka::message::{Headers, Message};
use serde_json::{json, Map, Value};

use crate::event::{
    now_rfc3339, parse_payload_reading, rfc3339_from_unix_millis, Event, EventReads,
};
use crate::redact::is_credential_header;

/// The envelope of a Kafka message: id `<topic>/<partition>/<offset>`,
/// `type` and `subject` the topic, `time` the message timestamp, Kafka headers
/// as headers, and `meta` with topic, partition, offset, key and timestamp.
/// With `reads` (`None`: everything), only what it names is built: of a JSON
/// payload those paths, and headers, `meta` and `time` only if read —
/// except `meta.timestamp`, which is part of the event's identity.
pub fn to_event(source: &str, m: &impl Message, reads: Option<&EventReads>) -> Event {
    let read = |root: fn(&EventReads) -> bool| reads.is_none_or(root);
    let mut meta = Map::new();
    let body = match m.payload() {
        Some(raw) => parse_payload_reading(raw, &mut meta, reads),
        // A tombstone (null value).
        None => Value::Null,
    };
    // Read once: librdkafka hands it out as a C string, checked each time.
    let topic = m.topic();
    // `<topic>/<partition>/<offset>`, written without the formatter (this
    // runs for every message of a busy topic).
    let mut id = String::with_capacity(topic.len() + 2 + 11 + 20);
    id.push_str(topic);
    id.push('/');
    id.push_str(itoa::Buffer::new().format(m.partition()));
    id.push('/');
    id.push_str(itoa::Buffer::new().format(m.offset()));
    let timestamp = m.timestamp().to_millis().filter(|ms| *ms >= 0);
    let time = match timestamp {
        _ if !read(|r| r.time) => String::new(),
        Some(ms) => rfc3339_from_unix_millis(ms as u64),
        None => now_rfc3339(),
    };
    let mut event = Event::at(source, id, time, body);
    event.kind = topic.to_string();
    event.subject = topic.to_string();
    if let Some(ms) = timestamp {
        meta.insert("timestamp".into(), json!(ms));
    }
    // Asked only if read: librdkafka parses them out of the message (and
    // allocates) on every call, even for a message that has none.
    if let Some(headers) = read(|r| r.headers).then(|| m.headers()).flatten() {
        for h in headers.iter() {
            if is_credential_header(h.key) {
                continue;
            }
            let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
            event.headers.insert(h.key, value);
        }
    }
    if read(|r| r.meta) {
        meta.insert("topic".into(), json!(topic));
        meta.insert("partition".into(), json!(m.partition()));
        meta.insert("offset".into(), json!(m.offset()));
        let key = match m.key() {
            None => Value::Null,
            Some(k) => match std::str::from_utf8(k) {
                Ok(s) => json!(s),
                Err(_) => {
                    meta.insert("keyEncoding".into(), json!("base64"));
                    json!(base64::engine::general_purpose::STANDARD.encode(k))
                }
            },
        };
        meta.insert("key".into(), key);
    }
    event.meta = meta;
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
    use rdkafka::Timestamp;

    #[test]
    fn messages_become_events() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "Content-Type",
                value: Some("application/json"),
            })
            .insert(Header {
                key: "trace",
                value: None::<&str>,
            });
        let m = OwnedMessage::new(
            Some(br#"{"job":"resize","n":3}"#.to_vec()),
            Some(b"k-1".to_vec()),
            "jobs".into(),
            Timestamp::CreateTime(1_764_000_000_123),
            2,
            41,
            Some(headers),
        );
        let e = to_event("queue", &m, None);
        // Built for filters that read only the body: no headers, no time,
        // of `meta` only the timestamp (the identity needs it).
        let part = to_event("queue", &m, Some(&EventReads::default()));
        assert_eq!(part.identity(), e.identity());
        let expected = Event {
            body: json!({}),
            headers: Default::default(),
            time: String::new(),
            meta: Map::from_iter([("timestamp".to_string(), json!(1_764_000_000_123_i64))]),
            ..e.clone()
        };
        assert_eq!(part, expected);
        // What is read is built as in the whole event.
        let mut reads = EventReads::default();
        for root in [&["body", "n"][..], &["headers"], &["meta"], &["time"]] {
            reads.add(root);
        }
        let part = to_event("queue", &m, Some(&reads));
        assert_eq!(
            part,
            Event {
                body: json!({"n": 3}),
                ..e.clone()
            }
        );
        assert_eq!(e.id, "jobs/2/41");
        assert_eq!(e.source, "queue");
        assert_eq!(e.kind, "jobs");
        assert_eq!(e.subject, "jobs");
        assert_eq!(e.time, "2025-11-24T16:00:00.123Z");
        assert_eq!(e.body, json!({"job": "resize", "n": 3}));
        assert_eq!(e.headers.get("content-type"), Some("application/json"));
        assert_eq!(e.headers.get("trace"), Some(""));
        assert_eq!(e.meta["topic"], json!("jobs"));
        assert_eq!(e.meta["partition"], json!(2));
        assert_eq!(e.meta["offset"], json!(41));
        assert_eq!(e.meta["key"], json!("k-1"));
        assert_eq!(e.meta["timestamp"], json!(1_764_000_000_123_i64));

        // Binary key and value, no timestamp; a tombstone has a null body.
        let m = OwnedMessage::new(
            Some(vec![0xff, 0x00]),
            Some(vec![0xfe]),
            "raw".into(),
            Timestamp::NotAvailable,
            0,
            7,
            None,
        );
        let e = to_event("queue", &m, None);
        assert_eq!(e.body, json!("/wA="));
        assert_eq!(e.meta["bodyEncoding"], json!("base64"));
        assert_eq!(e.meta["key"], json!("/g=="));
        assert_eq!(e.meta["keyEncoding"], json!("base64"));
        assert!(e.meta.get("timestamp").is_none());
        let tomb = OwnedMessage::new(
            None,
            None,
            "raw".into(),
            Timestamp::NotAvailable,
            0,
            8,
            None,
        );
        let e = to_event("queue", &tomb, None);
        assert_eq!(e.body, Value::Null);
        assert_eq!(e.meta["key"], Value::Null);
        assert_eq!(e.id, "raw/0/8");
    }

    /// A message that counts the calls to `headers()`.
    struct Counting(OwnedMessage, std::cell::Cell<usize>);

    impl Message for Counting {
        type Headers = OwnedHeaders;
        fn key(&self) -> Option<&[u8]> {
            self.0.key()
        }
        fn payload(&self) -> Option<&[u8]> {
            self.0.payload()
        }
        unsafe fn payload_mut(&mut self) -> Option<&mut [u8]> {
            // SAFETY: delegated as is.
            unsafe { self.0.payload_mut() }
        }
        fn topic(&self) -> &str {
            self.0.topic()
        }
        fn partition(&self) -> i32 {
            self.0.partition()
        }
        fn offset(&self) -> i64 {
            self.0.offset()
        }
        fn timestamp(&self) -> Timestamp {
            self.0.timestamp()
        }
        fn headers(&self) -> Option<&OwnedHeaders> {
            self.1.set(self.1.get() + 1);
            self.0.headers()
        }
    }

    #[test]
    fn headers_are_not_asked_for_unless_read() {
        // librdkafka parses a message's headers (and allocates) on every
        // `headers()` call, even when it has none: measured as 7 % of the
        // consumer thread for filters that never read them.
        let m = Counting(
            OwnedMessage::new(
                Some(br#"{"n":3}"#.to_vec()),
                None,
                "jobs".into(),
                Timestamp::CreateTime(1),
                0,
                1,
                None,
            ),
            Default::default(),
        );
        to_event("queue", &m, Some(&EventReads::default()));
        assert_eq!(m.1.get(), 0, "body-only filters: headers never asked for");
        let mut reads = EventReads::default();
        reads.add(&["headers", "x"]);
        to_event("queue", &m, Some(&reads));
        assert_eq!(m.1.get(), 1, "read when a filter reads them");
        to_event("queue", &m, None);
        assert_eq!(m.1.get(), 2, "and when everything is read");
    }
}
