//! The `meta/v1` `Status` every error answer carries, and the `Cause`s of an
//! `Invalid` one, worded as the API server words them.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Map, Value};

use super::catalog::qualify;

/// A `meta/v1` `Status` with `status: Failure`, the body of every error answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    /// HTTP status code, repeated in the body as `code`.
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `AlreadyExists`, `Invalid`, ...).
    pub reason: &'static str,
    /// Human-readable message, worded as the API server words it.
    pub message: String,
    /// `details`, when the API server sends them.
    pub details: Option<Value>,
}

/// One `details.causes` entry of an `Invalid` [`Status`].
#[derive(Clone, Debug, PartialEq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueTypeInvalid`, ...
    pub reason: &'static str,
    /// The error without its field: `Required value`, `Invalid value: "x": ...`.
    pub message: String,
    /// Dotted path of the offending field: `spec.templates[0].container`.
    pub field: String,
}

impl Cause {
    /// A missing field; `detail` may be empty.
    pub fn required(field: &str, detail: &str) -> Cause {
        Cause::new("FieldValueRequired", "Required value", field, detail)
    }

    /// A field whose value breaks a rule.
    pub fn invalid(field: &str, value: &Value, detail: &str) -> Cause {
        let body = format!("Invalid value: {}", go_value(value));
        Cause::new("FieldValueInvalid", &body, field, detail)
    }

    /// A field of the wrong JSON type, as CRD schema validation reports it.
    pub fn type_invalid(field: &str, actual: &str, expected: &str) -> Cause {
        let body = format!("Invalid value: \"{actual}\"");
        let detail = format!("{field} in body must be of type {expected}: \"{actual}\"");
        Cause::new("FieldValueTypeInvalid", &body, field, &detail)
    }

    /// A value outside an enumeration.
    pub fn not_supported(field: &str, value: &Value, supported: &[Value]) -> Cause {
        let supported: Vec<String> = supported.iter().map(go_value).collect();
        let body = format!("Unsupported value: {}", go_value(value));
        let detail = format!("supported values: {}", supported.join(", "));
        Cause::new("FieldValueNotSupported", &body, field, &detail)
    }

    /// A field that must not be set.
    pub fn forbidden(field: &str, detail: &str) -> Cause {
        Cause::new("FieldValueForbidden", "Forbidden", field, detail)
    }

    pub(super) fn new(reason: &'static str, body: &str, field: &str, detail: &str) -> Cause {
        let message = if detail.is_empty() {
            body.to_owned()
        } else {
            format!("{body}: {detail}")
        };
        Cause {
            reason,
            message,
            field: field.to_owned(),
        }
    }

    fn to_json(&self) -> Value {
        json!({"reason": self.reason, "message": self.message, "field": self.field})
    }
}

/// A value as Go's field errors print it: strings quoted, the rest as JSON.
fn go_value(value: &Value) -> String {
    value.to_string()
}

/// `details` naming one object: empty fields are left out, as the server does.
pub(super) fn details(group: &str, kind: &str, name: &str) -> Map<String, Value> {
    [("name", name), ("group", group), ("kind", kind)]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| (key.to_owned(), json!(value)))
        .collect()
}

impl Status {
    pub(super) fn failure(code: u16, reason: &'static str, message: impl Into<String>) -> Status {
        Status {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 404 for a named object that does not exist: `workflows.argoproj.io "x" not found`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Status {
        Status {
            details: Some(Value::Object(details(group, plural, name))),
            ..Status::failure(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", qualify(plural, group)),
            )
        }
    }

    /// 404 for a path that names no resource (unknown group, version or plural).
    pub fn resource_not_found() -> Status {
        Status {
            details: Some(json!({})),
            ..Status::failure(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        }
    }

    /// 409 for a create whose name is taken.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Status {
        Status {
            details: Some(Value::Object(details(group, plural, name))),
            ..Status::failure(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", qualify(plural, group)),
            )
        }
    }

    /// 422 listing what is wrong with an object of `kind`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: &[Cause]) -> Status {
        let errors: Vec<String> = causes
            .iter()
            .map(|cause| format!("{}: {}", cause.field, cause.message))
            .collect();
        let errors = match errors.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let mut details = details(group, kind, name);
        details.insert("causes".into(), causes.iter().map(Cause::to_json).collect());
        Status {
            details: Some(Value::Object(details)),
            ..Status::failure(
                422,
                "Invalid",
                format!("{} \"{name}\" is invalid: {errors}", qualify(kind, group)),
            )
        }
    }

    /// 400 for a request the server cannot make sense of.
    pub fn bad_request(message: impl Into<String>) -> Status {
        Status::failure(400, "BadRequest", message)
    }

    /// 405 for a method the path does not support.
    pub fn method_not_allowed() -> Status {
        Status {
            details: Some(json!({})),
            ..Status::failure(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        }
    }

    /// 500 `Internal error occurred: <message>`.
    pub fn internal_error(message: &str) -> Status {
        Status {
            details: Some(json!({"causes": [{"message": message}]})),
            ..Status::failure(
                500,
                "InternalError",
                format!("Internal error occurred: {message}"),
            )
        }
    }

    /// 429 as API Priority and Fairness answers it; the response also carries
    /// `Retry-After: <retry_after_secs>`.
    pub fn too_many_requests(retry_after_secs: u64) -> Status {
        Status {
            details: Some(json!({"retryAfterSeconds": retry_after_secs})),
            ..Status::failure(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.",
            )
        }
    }

    /// The Status the API server sends with an HTTP `code` for no more
    /// specific reason (what [`Fault::Status`](super::Fault::Status) answers).
    pub fn for_code(code: u16) -> Status {
        match code {
            429 => Status::too_many_requests(1),
            500 => Status::internal_error("injected fault"),
            503 => Status::failure(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            504 => Status::failure(
                504,
                "Timeout",
                "Timeout: request did not complete within requested timeout - context deadline exceeded",
            ),
            _ => {
                let reason = match code {
                    400 => "BadRequest",
                    401 => "Unauthorized",
                    403 => "Forbidden",
                    404 => "NotFound",
                    405 => "MethodNotAllowed",
                    409 => "Conflict",
                    410 => "Expired",
                    413 => "RequestEntityTooLarge",
                    415 => "UnsupportedMediaType",
                    422 => "Invalid",
                    _ => "",
                };
                Status::failure(
                    code,
                    reason,
                    format!("an error on the server (\"injected fault\") has prevented the request from succeeding (HTTP {code})"),
                )
            }
        }
    }

    /// The exact JSON body.
    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            body["reason"] = json!(self.reason);
        }
        if let Some(details) = &self.details {
            body["details"] = details.clone();
        }
        body
    }

    fn retry_after_secs(&self) -> Option<u64> {
        self.details.as_ref()?.get("retryAfterSeconds")?.as_u64()
    }
}

impl IntoResponse for Status {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (code, Json(self.to_json())).into_response();
        if let Some(seconds) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
