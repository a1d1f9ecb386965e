//! The selectors of a list: `labelSelector` (equality and set-based) and
//! `fieldSelector` over `metadata.name` and `metadata.namespace`.

use serde_json::Value;

use super::validate::qualified_name_problems;
use super::Status;

/// A parsed `labelSelector`: every requirement must hold.
pub(super) struct LabelSelector(Vec<Requirement>);

enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl LabelSelector {
    pub(super) fn parse(selector: &str) -> Result<LabelSelector, Status> {
        split_outside_parentheses(selector)
            .into_iter()
            .map(str::trim)
            .filter(|term| !term.is_empty())
            .map(Requirement::parse)
            .collect::<Result<_, _>>()
            .map(LabelSelector)
    }

    pub(super) fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.0.iter().all(|requirement| {
            let label = |key: &str| labels[key].as_str().map(str::to_owned);
            match requirement {
                Requirement::In(key, values) => label(key).is_some_and(|v| values.contains(&v)),
                Requirement::NotIn(key, values) => !label(key).is_some_and(|v| values.contains(&v)),
                Requirement::Exists(key) => label(key).is_some(),
                Requirement::DoesNotExist(key) => label(key).is_none(),
            }
        })
    }
}

impl Requirement {
    fn parse(term: &str) -> Result<Requirement, Status> {
        let invalid = || Status::bad_request(format!("unable to parse requirement: {term}"));
        let key = |key: &str| {
            let key = key.trim();
            if key.is_empty() || !qualified_name_problems(key).is_empty() {
                Err(invalid())
            } else {
                Ok(key.to_owned())
            }
        };
        let values = |values: &str| -> Result<Vec<String>, Status> {
            let inner = values
                .trim()
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(invalid)?;
            Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
        };
        if let Some(rest) = term.strip_prefix('!') {
            return Ok(Requirement::DoesNotExist(key(rest)?));
        }
        if let Some((k, v)) = term.split_once(" notin ") {
            return Ok(Requirement::NotIn(key(k)?, values(v)?));
        }
        if let Some((k, v)) = term.split_once(" in ") {
            return Ok(Requirement::In(key(k)?, values(v)?));
        }
        if let Some((k, v)) = term.split_once("!=") {
            return Ok(Requirement::NotIn(key(k)?, vec![v.trim().to_owned()]));
        }
        if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            return Ok(Requirement::In(key(k)?, vec![v.trim().to_owned()]));
        }
        Ok(Requirement::Exists(key(term)?))
    }
}

fn split_outside_parentheses(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (index, character) in text.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A parsed `fieldSelector` over `metadata.name` and `metadata.namespace`,
/// the fields every resource supports.
pub(super) struct FieldSelector(Vec<(&'static str, bool, String)>);

impl FieldSelector {
    pub(super) fn parse(selector: &str) -> Result<FieldSelector, Status> {
        let mut terms = Vec::new();
        for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((field, value)) = term.split_once("!=") {
                (field, false, value)
            } else if let Some((field, value)) =
                term.split_once("==").or_else(|| term.split_once('='))
            {
                (field, true, value)
            } else {
                return Err(Status::bad_request(format!(
                    "invalid selector: '{selector}'; can't understand '{term}'"
                )));
            };
            let field = match field.trim() {
                "metadata.name" => "name",
                "metadata.namespace" => "namespace",
                other => {
                    return Err(Status::bad_request(format!(
                        "field label not supported: {other}"
                    )))
                }
            };
            terms.push((field, equal, value.trim().to_owned()));
        }
        Ok(FieldSelector(terms))
    }

    pub(super) fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            (object["metadata"][*field].as_str().unwrap_or("") == value) == *equal
        })
    }
}
