//! What a create checks: decoding the body, its type fields and `ObjectMeta`
//! (400), then the rules of `ObjectMeta`, Argo's JSON schema and Argo's
//! workflow spec rule (422 causes).

use std::sync::LazyLock;

use axum::http::header;
use jsonschema::{
    error::{TypeKind, ValidationErrorKind},
    Validator,
};
use regex::Regex;
use serde_json::{json, Value};

use super::catalog::{Resource, ARGO_VALIDATORS};
use super::server::ApiRequest;
use super::{Cause, Status};

/// The request body as a JSON object (JSON or YAML, per `Content-Type`).
pub(super) fn decode(request: &ApiRequest) -> Result<Value, Status> {
    let content_type = request
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/json");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    let parsed = match media_type {
        "application/json" => serde_json::from_slice::<Value>(&request.body).map_err(|e| e.to_string()),
        "application/yaml" => serde_yaml_ng::from_slice::<Value>(&request.body).map_err(|e| e.to_string()),
        _ => {
            return Err(Status::failure(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf",
            ))
        }
    };
    match parsed {
        Ok(object @ Value::Object(_)) => Ok(object),
        Ok(other) => Err(cannot_unmarshal(
            &other,
            "Object",
            "map[string]interface {}",
        )),
        Err(error) => Err(Status::bad_request(format!(
            "couldn't get version/kind; json parse error: {error}"
        ))),
    }
}

/// 400 the way Go's JSON decoder words a type mismatch.
fn cannot_unmarshal(value: &Value, field: &str, go_type: &str) -> Status {
    let json_type = match value {
        Value::Array(_) => "array",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::Object(_) => "object",
        Value::String(_) => "string",
        Value::Null => "null",
    };
    Status::bad_request(format!(
        "json: cannot unmarshal {json_type} into Go struct field {field} of type {go_type}"
    ))
}

/// `metadata` must decode as an `ObjectMeta`: an object, with string fields
/// and string-to-string labels and annotations.
pub(super) fn check_metadata_types(resource: &Resource, metadata: &Value) -> Result<(), Status> {
    let Some(fields) = metadata.as_object() else {
        let field = format!("{}.metadata", resource.kind);
        return Err(cannot_unmarshal(metadata, &field, "v1.ObjectMeta"));
    };
    for field in ["name", "generateName", "namespace", "resourceVersion"] {
        if let Some(value) = fields.get(field).filter(|v| !v.is_string() && !v.is_null()) {
            let field = format!("ObjectMeta.metadata.{field}");
            return Err(cannot_unmarshal(value, &field, "string"));
        }
    }
    for field in ["labels", "annotations"] {
        let map = &fields.get(field).unwrap_or(&Value::Null);
        let not_a_string = match map {
            Value::Null => None,
            Value::Object(entries) => entries.values().find(|v| !v.is_string()),
            other => Some(*other),
        };
        if let Some(value) = not_a_string {
            let field = format!("ObjectMeta.metadata.{field}");
            return Err(cannot_unmarshal(value, &field, "string"));
        }
    }
    Ok(())
}

/// `apiVersion` and `kind` must be present and name the resource of the URL.
pub(super) fn check_type_fields(resource: &Resource, object: &Value) -> Result<(), Status> {
    let body = object.to_string();
    let kind = object["kind"].as_str().unwrap_or("");
    if kind.is_empty() {
        return Err(Status::bad_request(format!(
            "Object 'Kind' is missing in '{body}'"
        )));
    }
    let api_version = object["apiVersion"].as_str().unwrap_or("");
    if api_version.is_empty() {
        return Err(Status::bad_request(format!(
            "Object 'apiVersion' is missing in '{body}'"
        )));
    }
    let expected = resource.api_version();
    if api_version != expected {
        return Err(Status::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({expected})"
        )));
    }
    if kind != resource.kind {
        return Err(Status::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {expected_kind}: the object provided is unrecognized (must be of type {expected_kind})",
            version = resource.version,
            expected_kind = resource.kind,
        )));
    }
    Ok(())
}

/// A CRD's structural schema prunes unknown fields; at the top level only these are known.
pub(super) fn prune_unknown_top_level_fields(object: &mut Value) {
    if let Some(fields) = object.as_object_mut() {
        fields.retain(|key, _| {
            matches!(
                key.as_str(),
                "apiVersion" | "kind" | "metadata" | "spec" | "status"
            )
        });
    }
}

/// Every rule the object breaks.
pub(super) fn validate(resource: &Resource, object: &Value) -> Vec<Cause> {
    let mut causes = validate_object_meta(&object["metadata"]);
    if let Some(argo) = &resource.argo {
        causes.extend(schema_causes(&ARGO_VALIDATORS[argo.definition], object));
        if let Some(path) = argo.workflow_spec {
            let spec = path.split('.').fold(object, |node, key| &node[key]);
            causes.extend(workflow_spec_rule(path, spec));
        }
    }
    causes
}

const DNS1123_SUBDOMAIN_ERROR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME_ERROR: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_ERROR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
/// Total size allowed for all annotations.
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

static DNS1123_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").expect("regex")
});
static QUALIFIED_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").expect("regex"));
static LABEL_VALUE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$").expect("regex"));

/// `ObjectMeta` rules: the name, label keys and values, annotation keys and size.
fn validate_object_meta(metadata: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    match metadata["name"].as_str().unwrap_or("") {
        "" => causes.push(Cause::required(
            "metadata.name",
            "name or generateName is required",
        )),
        name => {
            for problem in dns1123_subdomain_problems(name) {
                causes.push(Cause::invalid("metadata.name", &json!(name), &problem));
            }
        }
    }
    for field in ["labels", "annotations"] {
        let Some(entries) = metadata[field].as_object() else {
            continue;
        };
        let path = format!("metadata.{field}");
        for (key, value) in entries {
            // Annotation keys are checked lower-cased, label keys as they are.
            let checked_key = if field == "labels" {
                key.clone()
            } else {
                key.to_lowercase()
            };
            for problem in qualified_name_problems(&checked_key) {
                causes.push(Cause::invalid(&path, &json!(key), &problem));
            }
            let text = value.as_str().unwrap_or_default();
            if field == "labels" {
                if text.len() > 63 {
                    causes.push(Cause::invalid(
                        &path,
                        value,
                        "must be no more than 63 characters",
                    ));
                }
                if !LABEL_VALUE.is_match(text) {
                    causes.push(Cause::invalid(&path, value, LABEL_VALUE_ERROR));
                }
            }
        }
        if field == "annotations" {
            let size: usize = entries
                .iter()
                .map(|(key, value)| key.len() + value.as_str().map_or(0, str::len))
                .sum();
            if size > ANNOTATIONS_MAX_BYTES {
                causes.push(Cause::new(
                    "FieldValueTooLong",
                    "Too long",
                    &path,
                    &format!("may not be more than {ANNOTATIONS_MAX_BYTES} bytes"),
                ));
            }
        }
    }
    causes
}

fn dns1123_subdomain_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > 253 {
        problems.push("must be no more than 253 characters".to_owned());
    }
    if !DNS1123_SUBDOMAIN.is_match(value) {
        problems.push(DNS1123_SUBDOMAIN_ERROR.to_owned());
    }
    problems
}

/// Kubernetes' `IsQualifiedName`: `[prefix/]name`, the rule for label and annotation keys.
pub(super) fn qualified_name_problems(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split('/').collect::<Vec<_>>().as_slice() {
        [name] => (None, *name),
        [prefix, name] => (Some(*prefix), *name),
        _ => {
            return vec![format!(
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )]
        }
    };
    let mut problems = Vec::new();
    match prefix {
        Some("") => problems.push("prefix part must be non-empty".to_owned()),
        Some(prefix) => problems.extend(
            dns1123_subdomain_problems(prefix)
                .into_iter()
                .map(|problem| format!("prefix part {problem}")),
        ),
        None => {}
    }
    if name.is_empty() {
        problems.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        problems.push("name part must be no more than 63 characters".to_owned());
    }
    if !QUALIFIED_NAME.is_match(name) {
        problems.push(QUALIFIED_NAME_ERROR.to_owned());
    }
    problems
}

/// Schema violations as the API server reports CRD schema violations.
fn schema_causes(validator: &Validator, object: &Value) -> Vec<Cause> {
    validator
        .iter_errors(object)
        .map(|error| {
            let field = field_path(object, error.instance_path().as_str());
            let value = error.instance();
            match error.kind() {
                ValidationErrorKind::Required { property } => {
                    let property = property.as_str().unwrap_or_default();
                    let field = if field.is_empty() {
                        property.to_owned()
                    } else {
                        format!("{field}.{property}")
                    };
                    Cause::required(&field, "")
                }
                ValidationErrorKind::Type { kind } => {
                    let expected = match kind {
                        TypeKind::Single(expected) => expected.to_string(),
                        TypeKind::Multiple(expected) => expected
                            .iter()
                            .map(|t| t.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                    };
                    Cause::type_invalid(&field, json_type(value), &expected)
                }
                ValidationErrorKind::Enum { options } => Cause::not_supported(
                    &field,
                    value,
                    options.as_array().map(Vec::as_slice).unwrap_or_default(),
                ),
                _ => Cause::invalid(&field, value, &error.to_string()),
            }
        })
        .collect()
}

/// JSON type names as OpenAPI validation reports them.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `spec.templates[0].container` for the JSON pointer `/spec/templates/0/container`.
fn field_path(object: &Value, pointer: &str) -> String {
    let mut path = String::new();
    let mut node = Some(object);
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        node = match node {
            Some(Value::Array(items)) => {
                path.push_str(&format!("[{segment}]"));
                segment
                    .parse::<usize>()
                    .ok()
                    .and_then(|index| items.get(index))
            }
            other => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&segment);
                other.and_then(|node| node.get(&segment))
            }
        };
    }
    path
}

/// Argo's rule for a `WorkflowSpec` that will run: it brings its own templates
/// or references a WorkflowTemplate, not both.
fn workflow_spec_rule(path: &str, spec: &Value) -> Option<Cause> {
    let has_templates = spec["templates"].as_array().is_some_and(|t| !t.is_empty());
    let has_reference = !spec["workflowTemplateRef"].is_null();
    let field = format!("{path}.templates");
    match (has_templates, has_reference) {
        (false, false) => Some(Cause::required(
            &field,
            "a workflow needs templates or a workflowTemplateRef",
        )),
        (true, true) => Some(Cause::forbidden(
            &field,
            "Templates is invalid field in spec if workflow referred WorkflowTemplate reference",
        )),
        _ => None,
    }
}
