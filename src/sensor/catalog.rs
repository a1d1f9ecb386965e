//! The sources sensors may bind to, as `tripline.yaml` declares them, with
//! each source's optional `argo:` block (ARGO-COMPAT §2.1): an Argo
//! dependency `{eventSourceName: E, eventName: N}` binds to the source whose
//! `argo:` block names `E`/`N`, else to the source named `E-N`; the block
//! also says how that source's events look to Argo filters and parameters
//! (`jsonBody`, `metadata`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

/// A source's `argo:` block.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArgoSource {
    /// Binding alias: Argo dependencies on `eventSourceName`/`eventName`
    /// bind to this source whatever its name. Give both or neither.
    #[serde(default)]
    pub event_source_name: Option<String>,
    #[serde(default)]
    pub event_name: Option<String>,
    /// NATS/Kafka: `true` (default) — the body is JSON and a message that is
    /// not does not satisfy Argo dependencies; `false` — `data.body` is the
    /// base64 of the payload, as Argo's `jsonBody: false`.
    #[serde(default = "yes")]
    pub json_body: bool,
    /// Copied into the Argo event's `data.metadata`.
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
}

fn yes() -> bool {
    true
}

impl Default for ArgoSource {
    fn default() -> Self {
        ArgoSource {
            event_source_name: None,
            event_name: None,
            json_body: true,
            metadata: None,
        }
    }
}

impl ArgoSource {
    /// Checks what serde cannot; errors are `(field, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        match (&self.event_source_name, &self.event_name) {
            (Some(e), Some(n)) if e.is_empty() || n.is_empty() => Err((
                "argo".into(),
                "`eventSourceName` and `eventName` must not be empty".into(),
            )),
            (Some(_), None) | (None, Some(_)) => Err((
                "argo".into(),
                "give both `eventSourceName` and `eventName` (or neither: the source then binds by its name `<eventSourceName>-<eventName>`)".into(),
            )),
            _ => Ok(()),
        }
    }

    /// The `(eventSourceName, eventName)` alias, when given.
    pub fn alias(&self) -> Option<(&str, &str)> {
        Some((
            self.event_source_name.as_deref()?,
            self.event_name.as_deref()?,
        ))
    }
}

/// Declared sources by name. An *open* catalog accepts any name (for
/// `tripline test` on a lone sensor file) while still applying the `argo:`
/// blocks of the sources it does know.
#[derive(Debug, Clone, Default)]
pub struct SourceCatalog {
    sources: BTreeMap<String, Option<ArgoSource>>,
    open: bool,
}

impl SourceCatalog {
    /// A catalog that accepts every source name.
    pub fn open() -> Self {
        SourceCatalog {
            sources: BTreeMap::new(),
            open: true,
        }
    }

    /// Makes this catalog accept names it does not declare.
    pub fn opened(mut self) -> Self {
        self.open = true;
        self
    }

    pub fn insert(&mut self, name: &str, argo: Option<ArgoSource>) {
        self.sources.insert(name.to_string(), argo);
    }

    /// Whether a dependency may name `source`.
    pub fn accepts(&self, source: &str) -> bool {
        self.open || self.sources.contains_key(source)
    }

    /// Whether `source` is declared (not merely accepted).
    pub fn declares(&self, source: &str) -> bool {
        self.sources.contains_key(source)
    }

    /// The declared names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }

    /// The `argo:` block of `source`.
    pub fn argo(&self, source: &str) -> Option<&ArgoSource> {
        self.sources.get(source).and_then(Option::as_ref)
    }

    /// The source an Argo dependency on `event_source`/`event_name` binds
    /// to: the one whose `argo:` block names them, else `<E>-<N>` when
    /// declared (or when the catalog is open).
    pub fn bind(&self, event_source: &str, event_name: &str) -> Option<String> {
        let alias = self.sources.iter().find(|(_, a)| {
            a.as_ref().and_then(ArgoSource::alias) == Some((event_source, event_name))
        });
        if let Some((name, _)) = alias {
            return Some(name.clone());
        }
        let name = format!("{event_source}-{event_name}");
        self.accepts(&name).then_some(name)
    }
}

impl<S: Into<String>> FromIterator<S> for SourceCatalog {
    /// Plain names, no `argo:` blocks.
    fn from_iter<I: IntoIterator<Item = S>>(names: I) -> Self {
        SourceCatalog {
            sources: names.into_iter().map(|n| (n.into(), None)).collect(),
            open: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_by_alias_first_then_by_name() {
        let mut c: SourceCatalog = ["webhook-example", "push"].into_iter().collect();
        c.insert(
            "push",
            Some(ArgoSource {
                event_source_name: Some("github".into()),
                event_name: Some("example".into()),
                ..Default::default()
            }),
        );
        assert_eq!(c.bind("github", "example").as_deref(), Some("push"));
        assert_eq!(
            c.bind("webhook", "example").as_deref(),
            Some("webhook-example")
        );
        assert_eq!(c.bind("kafka", "example"), None);
        assert_eq!(
            c.clone().opened().bind("kafka", "example").as_deref(),
            Some("kafka-example")
        );
        assert!(SourceCatalog::open().accepts("anything"));
        assert!(!c.accepts("anything"));
    }

    #[test]
    fn the_block_parses_with_defaults_and_rejects_half_an_alias() {
        let a: ArgoSource = serde_yaml_ng::from_str("{metadata: {team: ml}}").unwrap();
        assert!(a.json_body);
        assert_eq!(a.metadata.unwrap()["team"], "ml");
        let half: ArgoSource = serde_yaml_ng::from_str("{eventName: x}").unwrap();
        assert!(half.validate().unwrap_err().1.contains("both"));
        assert!(serde_yaml_ng::from_str::<ArgoSource>("{jsonbody: false}").is_err());
    }
}
