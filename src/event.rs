//! The event envelope every source produces (CloudEvents-shaped).
//!
//! Sources build an [`Event`]; the matcher, the renderer and CEL programs only
//! ever see this envelope, so a sensor does not care which transport carried it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub mod reads;
pub use reads::{BodyReads, EventReads};

/// One event, whatever carried it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Upstream delivery id (X-GitHub-Delivery, ce-id, stream+sequence,
    /// topic/partition/offset) or, when there is none, a hash of the body.
    pub id: String,
    /// Name of the source (as declared in `tripline.yaml`) that received it.
    pub source: String,
    /// Event type (`push`, the CloudEvents `type`, the NATS subject…).
    #[serde(rename = "type")]
    pub kind: String,
    pub subject: String,
    /// RFC 3339 time the event happened (or was received).
    pub time: String,
    pub headers: Headers,
    /// Parsed JSON, or a JSON string when the payload was not JSON.
    pub body: Value,
    /// Source specifics: NATS subject and stream sequence, Kafka topic,
    /// partition, offset and key, HTTP path…
    pub meta: Map<String, Value>,
}

/// Header map with case-insensitive lookup. Names are stored lower-cased,
/// which is also how templates and CEL programs see them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Headers(BTreeMap<String, String>);

impl Headers {
    /// Adds a header; a repeated name keeps every value, joined with `", "`
    /// (as HTTP folds repeated headers).
    pub fn insert(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        self.0
            .entry(name.to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        // Names are lower-cased on insert; avoid allocating when the
        // caller already passes lower case.
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.0.get(&name.to_ascii_lowercase()).map(String::as_str)
        } else {
            self.0.get(name).map(String::as_str)
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    }
}

impl<K: AsRef<str>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut h = Headers::default();
        for (k, v) in iter {
            h.insert(k.as_ref(), v);
        }
        h
    }
}

/// The annotation every submitted object carries: the ids of the events that
/// fired it.
pub const ANNOTATION_EVENT_ID: &str = "tripline.dev/event-id";
/// The full hash behind a generated name: an object found under our name but
/// with another key is a name collision, not an earlier delivery of ours.
pub const ANNOTATION_EVENT_KEY: &str = "tripline.dev/event-key";

/// The envelope fields a path or a CEL program may start with.
pub const ROOTS: [&str; 8] = [
    "id", "source", "type", "subject", "time", "headers", "body", "meta",
];

impl Event {
    /// A new event with the given source and body; `id` defaults to a hash of
    /// the raw payload, `time` to now.
    pub fn new(source: impl Into<String>, raw: &[u8], body: Value) -> Self {
        Event::with_id(source, body_hash(raw), body)
    }

    /// A new event whose id the source knows (a broker's message
    /// coordinates): no hash of the payload is computed.
    pub fn with_id(source: impl Into<String>, id: String, body: Value) -> Self {
        Event::at(source, id, now_rfc3339(), body)
    }

    /// A new event whose id and time (RFC 3339) the source knows.
    pub fn at(source: impl Into<String>, id: String, time: String, body: Value) -> Self {
        Event {
            id,
            source: source.into(),
            kind: String::new(),
            subject: String::new(),
            time,
            headers: Headers::default(),
            body,
            meta: Map::new(),
        }
    }

    /// Looks up a dotted path (`body.commits.0.id`, `headers.X-GitHub-Event`).
    /// `None` when any step is absent.
    pub fn lookup(&self, path: &[String]) -> Option<Cow<'_, Value>> {
        let (root, rest) = path.split_first()?;
        let str_value = |s: &str| Cow::Owned(Value::String(s.to_string()));
        match root.as_str() {
            "id" => rest.is_empty().then(|| str_value(&self.id)),
            "source" => rest.is_empty().then(|| str_value(&self.source)),
            "type" => rest.is_empty().then(|| str_value(&self.kind)),
            "subject" => rest.is_empty().then(|| str_value(&self.subject)),
            "time" => rest.is_empty().then(|| str_value(&self.time)),
            "headers" => match rest {
                [] => Some(Cow::Owned(self.headers.to_json())),
                [name] => self.headers.get(name).map(str_value),
                _ => None,
            },
            "body" => walk(&self.body, rest).map(Cow::Borrowed),
            "meta" => match rest.split_first() {
                None => Some(Cow::Owned(Value::Object(self.meta.clone()))),
                Some((k, more)) => walk(self.meta.get(k)?, more).map(Cow::Borrowed),
            },
            _ => None,
        }
    }

    /// What makes this event unique, for deterministic names and the retry
    /// budget: the source it came in on, its id, and what that id is scoped
    /// by — the CloudEvents `source` (CloudEvents ids are unique per source
    /// only), and a broker message's timestamp (`meta.timestamp` for Kafka,
    /// `meta.published` for JetStream), which differs when a topic or stream
    /// is re-created and its offsets or sequences start over.
    pub fn identity(&self) -> String {
        let mut key = format!("{}\u{1f}{}", self.source, self.id);
        for scope in ["ceSource", "timestamp", "published"] {
            if let Some(v) = self.meta.get(scope) {
                key.push('\u{1f}');
                match v {
                    Value::String(s) => key.push_str(s),
                    other => key.push_str(&other.to_string()),
                }
            }
        }
        key
    }

    /// The envelope as JSON, as templates see it.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("an event always serializes")
    }
}

/// Walks object keys and array indices.
pub fn walk<'a>(mut v: &'a Value, path: &[String]) -> Option<&'a Value> {
    for seg in path {
        v = match v {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// `paths` sorted, without repeats and without a path under another one
/// (`body` covers `body.after`): what reading all of them needs.
pub fn outermost(mut paths: Vec<Vec<String>>) -> Vec<Vec<String>> {
    paths.sort();
    paths.dedup();
    let covered = |p: &Vec<String>| paths.iter().any(|q| q.len() < p.len() && p.starts_with(q));
    paths.iter().filter(|p| !covered(p)).cloned().collect()
}

/// Short, stable id for payloads that carry none: hex SHA-256 prefix.
pub fn body_hash(raw: &[u8]) -> String {
    let digest = Sha256::digest(raw);
    format!("sha256:{}", hex::encode(&digest[..12]))
}

/// The latest time RFC 3339 can write: 9999-12-31T23:59:59.999Z.
const MAX_UNIX_MILLIS: u64 = 253_402_300_799_999;

/// `unix_millis` as RFC 3339 in UTC to the millisecond
/// (`2025-11-24T16:00:00.123Z`), clamped to what the format can write (a
/// broker timestamp in the year 10 000 must not stop a stream). Written by
/// hand into one 24-byte string: every broker message's envelope needs it.
pub fn rfc3339_from_unix_millis(unix_millis: u64) -> String {
    let ms = unix_millis.min(MAX_UNIX_MILLIS);
    let (days, ms_of_day) = (ms / 86_400_000, ms % 86_400_000);
    let (year, month, day) = civil_from_days(days as i64);
    let (h, m) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60);
    let (sec, milli) = (ms_of_day / 1000 % 60, ms_of_day % 1000);
    let mut out = [0u8; 24];
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year as u64);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, h);
    put(14, 2, m);
    put(17, 2, sec);
    put(20, 3, milli);
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        out[at] = c;
    }
    String::from_utf8(out.to_vec()).expect("ASCII digits and separators")
}

/// Year, month, day of the `days`-th day since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u64, u64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn now_rfc3339() -> String {
    rfc3339_from_unix_millis(now_unix_millis())
}

/// An event as a sender would deliver it to `source`, from a pasted or
/// saved payload and headers (`tripline test`, the status page's form):
/// the body parsed as [`parse_payload`] does, the type from
/// `X-GitHub-Event`/`X-Gitlab-Event` when given.
pub fn from_sample(source: &str, raw: &[u8], headers: &[(String, String)]) -> Event {
    let mut meta = Map::new();
    let body = parse_payload(raw, &mut meta);
    let mut event = Event::new(source, raw, body);
    event.meta = meta;
    for (k, v) in headers {
        event.headers.insert(k, v.clone());
    }
    if let Some(t) = event
        .headers
        .get("x-github-event")
        .or(event.headers.get("x-gitlab-event"))
    {
        event.kind = t.to_string();
    }
    event
}

/// Parses a payload: JSON when it is JSON, otherwise a string (UTF-8, or
/// base64 with `meta.bodyEncoding = "base64"` for binary payloads).
pub fn parse_payload(raw: &[u8], meta: &mut Map<String, Value>) -> Value {
    parse_payload_reading(raw, meta, None)
}

/// [`parse_payload`], building of a JSON payload only the body paths `reads` names
/// (all of it for `None`); anything else comes out the same.
pub fn parse_payload_reading(
    raw: &[u8],
    meta: &mut Map<String, Value>,
    reads: Option<&EventReads>,
) -> Value {
    let json = match reads {
        Some(r) => r.body.parse(raw),
        None => serde_json::from_slice::<Value>(raw),
    };
    if let Ok(v) = json {
        return v;
    }
    match std::str::from_utf8(raw) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => {
            use base64::Engine as _;
            meta.insert("bodyEncoding".into(), Value::String("base64".into()));
            Value::String(base64::engine::general_purpose::STANDARD.encode(raw))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_past_the_year_9999_are_clamped() {
        assert_eq!(rfc3339_from_unix_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_from_unix_millis(u64::MAX),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            rfc3339_from_unix_millis(300_000_000_000_000),
            "9999-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn rfc3339_is_written_as_humantime_writes_it() {
        // Leap days, century rules, month and year ends, and a spread of
        // instants up to the last one the format can write.
        let mut instants = vec![
            951_782_400_000,   // 2000-02-29
            4_107_542_399_999, // 2100-02-28T23:59:59.999
            4_107_542_400_000, // 2100-03-01
            1_704_067_199_999, // 2023-12-31T23:59:59.999
            MAX_UNIX_MILLIS,
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            instants.push(x % (MAX_UNIX_MILLIS + 1));
        }
        for ms in instants {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            let expected = humantime::format_rfc3339_millis(t).to_string();
            assert_eq!(rfc3339_from_unix_millis(ms), expected, "{ms}");
        }
    }
    use serde_json::json;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(String::from).collect()
    }

    #[test]
    fn headers_are_case_insensitive_and_fold_repeats() {
        let mut h = Headers::default();
        h.insert("X-GitHub-Event", "push");
        h.insert("Accept", "a");
        h.insert("accept", "b");
        assert_eq!(h.get("x-github-event"), Some("push"));
        assert_eq!(h.get("X-GITHUB-EVENT"), Some("push"));
        assert_eq!(h.get("Accept"), Some("a, b"));
        assert_eq!(h.get("missing"), None);
    }

    #[test]
    fn lookup_reaches_into_arrays_headers_and_meta() {
        let mut e = Event::new("gh", b"{}", json!({"commits": [{"id": "abc"}], "n": 3}));
        e.headers.insert("X-GitHub-Event", "push");
        e.meta.insert("partition".into(), json!(2));
        assert_eq!(
            e.lookup(&path("body.commits.0.id")).unwrap().as_ref(),
            &json!("abc")
        );
        assert_eq!(
            e.lookup(&path("headers.X-GitHub-Event")).unwrap().as_ref(),
            &json!("push")
        );
        assert_eq!(
            e.lookup(&path("meta.partition")).unwrap().as_ref(),
            &json!(2)
        );
        assert_eq!(e.lookup(&path("source")).unwrap().as_ref(), &json!("gh"));
        assert!(e.lookup(&path("body.commits.1.id")).is_none());
        assert!(e.lookup(&path("body.n.x")).is_none());
        assert!(e.lookup(&path("body.commits.x")).is_none());
        assert!(e.lookup(&path("nope")).is_none());
    }

    #[test]
    fn ids_default_to_a_stable_body_hash() {
        let a = Event::new("s", b"hello", json!("hello"));
        let b = Event::new("s", b"hello", json!("hello"));
        let c = Event::new("s", b"hellp", json!("hellp"));
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
    }

    #[test]
    fn payloads_parse_as_json_text_or_base64() {
        let mut meta = Map::new();
        assert_eq!(parse_payload(b"{\"a\":1}", &mut meta), json!({"a": 1}));
        assert_eq!(parse_payload(b"plain text", &mut meta), json!("plain text"));
        assert!(meta.is_empty());
        assert_eq!(parse_payload(&[0xff, 0xfe], &mut meta), json!("//4="));
        assert_eq!(meta["bodyEncoding"], json!("base64"));
    }
}
