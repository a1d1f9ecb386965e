//! Request → [`Event`]: one [`Provider`] per webhook kind (plain HTTP,
//! GitHub, GitLab, CloudEvents in binary and structured mode) and the body
//! decoding they share (JSON with line and column on error, forms, text,
//! octet-stream).

use axum::http::HeaderMap;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::auth::header_str;
use crate::event::{body_hash, parse_payload_reading, Event, EventReads};
use crate::redact::is_credential_header;

/// How a webhook kind turns a verified request into an event.
pub enum Provider {
    Http {
        id_header: Option<String>,
        /// Where in the body the delivery id is (`idFrom: body.delivery.id`),
        /// already split after `body.`.
        id_from: Option<Vec<String>>,
        type_header: Option<String>,
    },
    Github {
        /// `dedupe: body`: the id is a hash of the body, not the delivery id.
        dedupe_body: bool,
    },
    Gitlab,
    CloudEvents,
}

/// Why a body could not become an event.
#[derive(Debug, PartialEq)]
pub enum BodyError {
    Malformed(String),
    Unsupported(String),
}

/// What a verified request turned into.
#[derive(Debug)]
pub enum Parsed {
    Event(Box<Event>),
    /// GitHub's `ping`: answered, never submitted.
    Ping,
}

fn content_type(headers: &HeaderMap) -> String {
    header_str(headers, "content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Decodes a body by content type: JSON (400 on error, with line and column),
/// form (`payload=` JSON for GitHub, else fields), text, octet-stream (base64),
/// or no content type (JSON when it parses, else text). With `reads`, JSON
/// is built only as far as they reach (the same errors otherwise).
fn decode_body(
    ct: &str,
    body: &[u8],
    meta: &mut Map<String, Value>,
    reads: Option<&EventReads>,
) -> Result<Value, BodyError> {
    let json = |b: &[u8]| {
        match reads {
            Some(r) => r.body.parse(b),
            None => serde_json::from_slice::<Value>(b),
        }
        .map_err(|e| BodyError::Malformed(format!("invalid JSON: {e}")))
    };
    match ct {
        "" => Ok(parse_payload_reading(body, meta, reads)),
        ct if is_json(ct) => json(body),
        "application/x-www-form-urlencoded" => {
            let fields: Map<String, Value> = url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect();
            match fields.get("payload").and_then(Value::as_str) {
                Some(p) => json(p.as_bytes()),
                None => Ok(Value::Object(fields)),
            }
        }
        ct if ct.starts_with("text/") => std::str::from_utf8(body)
            .map(|s| Value::String(s.into()))
            .map_err(|e| BodyError::Malformed(format!("text body is not UTF-8: {e}"))),
        "application/octet-stream" => {
            meta.insert("bodyEncoding".into(), json!("base64"));
            Ok(Value::String(base64::engine::general_purpose::STANDARD.encode(body)))
        }
        other => Err(BodyError::Unsupported(format!(
            "content type `{other}` is not supported (use application/json, application/x-www-form-urlencoded, text/*, application/octet-stream)"
        ))),
    }
}

/// `application/json` or `application/…+json`.
fn is_json(ct: &str) -> bool {
    ct == "application/json" || (ct.starts_with("application/") && ct.ends_with("+json"))
}

impl Provider {
    /// Turns a verified request to `path` of source `source` into an event.
    /// Credential headers never reach it.
    pub fn envelope(
        &self,
        source: &str,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Parsed, BodyError> {
        self.envelope_reading(source, path, headers, body, None)
    }

    /// Whether [`envelope_reading`](Self::envelope_reading) can build an
    /// event with part of its body: all but CloudEvents.
    pub fn in_part(&self) -> bool {
        !matches!(self, Provider::CloudEvents)
    }

    /// [`envelope`](Self::envelope) with only `reads` of the body built
    /// (the rest checked to be well-formed: the same errors), plus what the
    /// envelope itself reads of it (GitHub's and GitLab's subject,
    /// `idFrom`), so that id, type and subject are the whole event's.
    /// CloudEvents, whose attributes are the body, are always built whole.
    pub fn envelope_reading(
        &self,
        source: &str,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        reads: Option<&EventReads>,
    ) -> Result<Parsed, BodyError> {
        let Some(mut reads) = reads.cloned() else {
            return self.build(source, path, headers, body, None);
        };
        match self {
            Provider::CloudEvents => return self.build(source, path, headers, body, None),
            Provider::Github { .. } => reads.body.add(&["repository", "full_name"]),
            Provider::Gitlab => reads.body.add(&["project", "path_with_namespace"]),
            Provider::Http {
                id_from: Some(p), ..
            } => reads.body.add(p),
            Provider::Http { .. } => true,
        };
        self.build(source, path, headers, body, Some(&reads))
    }

    fn build(
        &self,
        source: &str,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        reads: Option<&EventReads>,
    ) -> Result<Parsed, BodyError> {
        let ct = content_type(headers);
        let mut meta = Map::new();
        meta.insert("path".into(), json!(path));
        if !ct.is_empty() {
            meta.insert("contentType".into(), json!(ct));
        }
        // The delivery id when the sender gives one; else (at the end) a
        // hash of the body — computed only then.
        let mut id: Option<String> = None;
        let mut event = Event::with_id(source, String::new(), Value::Null);
        for (k, v) in headers {
            if !is_credential_header(k.as_str()) {
                event
                    .headers
                    .insert(k.as_str(), String::from_utf8_lossy(v.as_bytes()));
            }
        }
        let required = |h: &str| {
            header_str(headers, h)
                .map(str::to_string)
                .ok_or_else(|| BodyError::Malformed(format!("missing {h} header")))
        };
        match self {
            Provider::Http {
                id_header,
                id_from,
                type_header,
            } => {
                event.body = decode_body(&ct, body, &mut meta, reads)?;
                if let Some(given) = id_header.as_deref().and_then(|h| header_str(headers, h)) {
                    id = Some(given.to_string());
                } else if let Some(path) = id_from {
                    id = Some(id_from_body(&event.body, path)?);
                }
                if let Some(t) = type_header.as_deref().and_then(|h| header_str(headers, h)) {
                    event.kind = t.to_string();
                }
                event.subject = path.to_string();
            }
            Provider::Github { dedupe_body } => {
                event.kind = required("X-GitHub-Event")?;
                // With `dedupe: body` the id stays the hash of the body.
                if let Some(given) =
                    header_str(headers, "X-GitHub-Delivery").filter(|_| !dedupe_body)
                {
                    id = Some(given.to_string());
                }
                if let Some(d) = header_str(headers, "X-GitHub-Delivery") {
                    meta.insert("delivery".into(), json!(d));
                }
                if event.kind == "ping" {
                    return Ok(Parsed::Ping);
                }
                event.body = decode_body(&ct, body, &mut meta, reads)?;
                event.subject = event.body["repository"]["full_name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
            }
            Provider::Gitlab => {
                event.kind = required("X-Gitlab-Event")?;
                // GitLab keeps `Idempotency-Key` across its retries of one
                // delivery; older versions send only the event UUID.
                if let Some(given) = header_str(headers, "Idempotency-Key")
                    .or_else(|| header_str(headers, "X-Gitlab-Event-UUID"))
                {
                    id = Some(given.to_string());
                }
                event.body = decode_body(&ct, body, &mut meta, reads)?;
                event.subject = event.body["project"]["path_with_namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
            }
            Provider::CloudEvents => {
                parse_cloudevent(&ct, headers, body, &mut event, &mut meta)?;
                id = Some(std::mem::take(&mut event.id));
            }
        }
        event.id = id.unwrap_or_else(|| body_hash(body));
        event.meta = meta;
        Ok(Parsed::Event(Box::new(event)))
    }
}

/// The delivery id at `path` of the body (a string or a number); a
/// delivery without it is refused, since its id would otherwise silently
/// fall back to a hash of the body.
fn id_from_body(body: &Value, path: &[String]) -> Result<String, BodyError> {
    match crate::event::walk(body, path) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(BodyError::Malformed(format!(
            "the delivery id is missing: `idFrom` names body.{}, which this body lacks (or is not a string or number)",
            path.join(".")
        ))),
    }
}

/// CloudEvents HTTP binding: structured (`application/cloudevents+json`) or
/// binary (`ce-*` headers).
fn parse_cloudevent(
    ct: &str,
    headers: &HeaderMap,
    body: &[u8],
    event: &mut Event,
    meta: &mut Map<String, Value>,
) -> Result<(), BodyError> {
    let missing = |a: &str| BodyError::Malformed(format!("CloudEvent attribute `{a}` is missing"));
    if ct == "application/cloudevents+json" {
        let Value::Object(mut ce) = serde_json::from_slice::<Value>(body)
            .map_err(|e| BodyError::Malformed(format!("invalid JSON: {e}")))?
        else {
            return Err(BodyError::Malformed(
                "a structured CloudEvent must be a JSON object".into(),
            ));
        };
        let mut attr = |a: &str| ce.remove(a).and_then(|v| v.as_str().map(str::to_string));
        event.id = attr("id").ok_or_else(|| missing("id"))?;
        let ce_source = attr("source").ok_or_else(|| missing("source"))?;
        event.kind = attr("type").ok_or_else(|| missing("type"))?;
        let spec = attr("specversion").ok_or_else(|| missing("specversion"))?;
        event.subject = attr("subject").unwrap_or_default();
        if let Some(t) = attr("time") {
            event.time = t;
        }
        meta.insert("ceSource".into(), json!(ce_source));
        meta.insert("ceSpecversion".into(), json!(spec));
        event.body = match (ce.remove("data"), ce.remove("data_base64")) {
            (Some(d), _) => d,
            (None, Some(b)) => {
                meta.insert("bodyEncoding".into(), json!("base64"));
                b
            }
            (None, None) => Value::Null,
        };
        // Remaining attributes (datacontenttype, extensions) go to meta.
        for (k, v) in ce {
            meta.insert(format!("ce_{k}"), v);
        }
        return Ok(());
    }
    if ct == "application/cloudevents-batch+json" {
        return Err(BodyError::Unsupported(
            "batched CloudEvents are not supported; send one event per request".into(),
        ));
    }
    let Some(spec) = header_str(headers, "ce-specversion") else {
        return Err(BodyError::Malformed(
            "not a CloudEvent: expected ce-specversion/ce-id/ce-source/ce-type headers (binary mode) or an application/cloudevents+json body".into(),
        ));
    };
    let attr = |a: &str| header_str(headers, &format!("ce-{a}")).map(str::to_string);
    event.id = attr("id").ok_or_else(|| missing("id"))?;
    let ce_source = attr("source").ok_or_else(|| missing("source"))?;
    event.kind = attr("type").ok_or_else(|| missing("type"))?;
    event.subject = attr("subject").unwrap_or_default();
    if let Some(t) = attr("time") {
        event.time = t;
    }
    meta.insert("ceSource".into(), json!(ce_source));
    meta.insert("ceSpecversion".into(), json!(spec));
    event.body = decode_body(ct, body, meta, None)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_decode_by_content_type() {
        let mut meta = Map::new();
        assert_eq!(
            decode_body("application/json", b"{\"a\":1}", &mut meta, None),
            Ok(json!({"a": 1}))
        );
        assert_eq!(
            decode_body("application/vnd.x+json", b"[1]", &mut meta, None),
            Ok(json!([1]))
        );
        let err = decode_body("application/json", b"{\n\"a\": }", &mut meta, None).unwrap_err();
        assert!(
            matches!(&err, BodyError::Malformed(m) if m.contains("line 2 column")),
            "{err:?}"
        );
        assert_eq!(
            decode_body(
                "application/x-www-form-urlencoded",
                b"payload=%7B%22a%22%3A2%7D",
                &mut meta,
                None
            ),
            Ok(json!({"a": 2}))
        );
        assert_eq!(
            decode_body(
                "application/x-www-form-urlencoded",
                b"a=1&b=x",
                &mut meta,
                None
            ),
            Ok(json!({"a": "1", "b": "x"}))
        );
        assert_eq!(
            decode_body("text/plain", b"hi", &mut meta, None),
            Ok(json!("hi"))
        );
        assert!(matches!(
            decode_body("text/plain", &[0xff], &mut meta, None),
            Err(BodyError::Malformed(_))
        ));
        assert!(matches!(
            decode_body("application/xml", b"<a/>", &mut meta, None),
            Err(BodyError::Unsupported(_))
        ));
        assert_eq!(
            decode_body("", b"{\"a\":1}", &mut meta, None),
            Ok(json!({"a": 1}))
        );
        assert_eq!(
            decode_body("", b"not json", &mut meta, None),
            Ok(json!("not json"))
        );
        assert_eq!(
            decode_body("application/octet-stream", &[1, 2], &mut meta, None),
            Ok(json!("AQI="))
        );
        assert_eq!(meta["bodyEncoding"], json!("base64"));
    }

    /// Building part of a body refuses exactly what building all of it
    /// refuses, with the same error; the event is the whole event with its
    /// body pruned to the paths read and what the envelope reads itself.
    #[test]
    fn an_envelope_reading_paths_is_the_envelope_with_a_pruned_body() {
        let mut reads = EventReads::default();
        reads.add(&["body", "ref"]);
        let cases: [(&str, &[u8]); 10] = [
            ("application/json", b"{\"a\":1}"),
            ("application/json", b"{\n\"a\": }"),
            ("application/json", b"{\"a\":1} trailing"),
            ("application/json", b"{\"a\":\"\xff\",\"ref\":1}"),
            ("application/vnd.x+json", b"[1"),
            (
                "application/x-www-form-urlencoded",
                b"payload=%7B%22a%22%3A",
            ),
            ("text/plain", &[0xff]),
            ("application/xml", b"<a/>"),
            ("", b"not json"),
            ("application/octet-stream", &[1, 2]),
        ];
        for (ct, body) in cases {
            let (mut whole_meta, mut part_meta) = (Map::new(), Map::new());
            let whole = decode_body(ct, body, &mut whole_meta, None);
            let part = decode_body(ct, body, &mut part_meta, Some(&reads));
            assert_eq!(
                part.map_err(|e| format!("{e:?}")),
                whole
                    .map(|w| if w.is_object() { json!({}) } else { w })
                    .map_err(|e| format!("{e:?}")),
                "{ct}"
            );
            assert_eq!(part_meta, whole_meta, "{ct}");
        }

        let body = br#"{"ref": "refs/heads/main", "before": "0", "repository": {"full_name": "o/r", "id": 7}}"#;
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert("x-github-event", "push".parse().unwrap());
        headers.insert("x-github-delivery", "d-1".parse().unwrap());
        let github = Provider::Github { dedupe_body: false };
        let (Ok(Parsed::Event(whole)), Ok(Parsed::Event(part))) = (
            github.envelope("gh", "/gh", &headers, body),
            github.envelope_reading("gh", "/gh", &headers, body, Some(&reads)),
        ) else {
            panic!("both are events")
        };
        assert_eq!(whole.subject, "o/r");
        let expected = Event {
            body: json!({"ref": "refs/heads/main", "repository": {"full_name": "o/r"}}),
            time: part.time.clone(),
            ..*whole
        };
        assert_eq!(*part, expected);
        assert!(github
            .envelope_reading("gh", "/gh", &headers, b"{", Some(&reads))
            .is_err());
        assert!(github.in_part() && !Provider::CloudEvents.in_part());
        // CloudEvents are built whole, whatever the reads.
        let mut ce_headers = headers.clone();
        for (k, v) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "c1"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
        ] {
            ce_headers.insert(k, v.parse().unwrap());
        }
        let Ok(Parsed::Event(ce)) =
            Provider::CloudEvents.envelope_reading("ce", "/ce", &ce_headers, body, Some(&reads))
        else {
            panic!("a CloudEvent")
        };
        assert_eq!(ce.body["before"], "0");
        // The id a plain webhook takes from the body is read too.
        let plain = Provider::Http {
            id_header: None,
            id_from: Some(vec!["delivery".into(), "id".into()]),
            type_header: None,
        };
        let body = br#"{"delivery": {"id": 42, "at": 1}, "ref": "x", "big": [1, 2, 3]}"#;
        let Ok(Parsed::Event(part)) =
            plain.envelope_reading("h", "/h", &headers, body, Some(&reads))
        else {
            panic!("an event")
        };
        assert_eq!(part.id, "42");
        assert_eq!(part.body, json!({"delivery": {"id": 42}, "ref": "x"}));
    }
}
