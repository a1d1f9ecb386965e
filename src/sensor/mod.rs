//! Sensors: loading, compiling and matching.
//!
//! * [`spec`] — the YAML a user writes (serde, strict).
//! * [`mod@load`] — reads files, validates everything, compiles filters, CEL,
//!   conditions and templates **once**; errors name file, document and field.
//! * [`SensorSet::match_event`] — the pure matcher: `(sensors, event) ->
//!   which dependencies matched`, indexed by source so sensors on other
//!   sources cost nothing. [`SensorSet::explain`] tells why, per filter.
//! * [`filter`] — the filters a dependency holds; [`cel_reads`] finds what a
//!   CEL program reads so it gets only that; [`window`] is the time-of-day
//!   window of `timeOfDay` and Argo's `time`.
//! * [`correlate`] — keeps dependency events for multi-dependency triggers.
//! * [`render`] — parameters into the manifest, deterministic names.
//! * [`preview`] — what an event would submit, for `test` and `/explain`.

pub mod argo;
pub mod catalog;
pub mod cel_reads;
pub mod condition;
pub mod correlate;
pub mod filter;
pub mod index;
pub mod load;
pub mod preview;
pub mod render;
pub mod report;
pub mod spec;
pub mod trace;
pub mod window;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::backoff::RetryPolicy;
use crate::event::{Event, EventReads};
pub use catalog::{ArgoSource, SourceCatalog};
use condition::Condition;
use filter::{EvalCtx, Filter, Trace};
pub use load::{load, LoadError, LoadErrors};
pub use preview::Rendered;
use render::Templates;
pub use spec::RateLimitSpec;

/// A compiled sensor.
#[derive(Debug)]
pub struct Sensor {
    pub name: String,
    pub file: PathBuf,
    pub dependencies: Vec<Dependency>,
    pub triggers: Vec<Trigger>,
    pub window: Duration,
}

#[derive(Debug)]
pub struct Dependency {
    pub name: String,
    pub source: String,
    pub filter: Option<Filter>,
    /// Key of the compiled correlation-key template in [`SensorSet::templates`].
    pub key: Option<String>,
}

#[derive(Debug)]
pub struct Trigger {
    pub name: String,
    pub when: String,
    pub condition: Condition,
    /// Dependencies the condition mentions (indices into `Sensor::dependencies`).
    pub deps: Vec<usize>,
    /// The object to submit, before parameters and naming.
    pub manifest: Value,
    pub parameters: Vec<Param>,
    pub namespace: Option<String>,
    /// Where objects may go; empty: anywhere the submit target allows.
    pub allowed_namespaces: Vec<String>,
    pub retry: RetryPolicy,
    pub rate_limit: Option<RateLimitSpec>,
    /// Argo `conditionsReset`: stored events are cleared at each tick.
    pub resets: Vec<Arc<argo::cron::Cron>>,
    /// What happens when it fires.
    pub action: Action,
    /// What correlation state was built for: a hash of the condition, the
    /// dependencies and their keys. State built for another is dropped.
    pub definition: String,
    /// Whether a template refers to a dependency by name (`{{push.body.x}}`);
    /// if not, templates see only the envelope and rendering copies less.
    pub uses_dependency_names: bool,
    /// The paths its parameter templates read (set by [`SensorSet::new`]):
    /// rendering copies only those out of the event; `None`: all of it.
    pub reads: render::Reads,
}

#[derive(Debug)]
pub struct Param {
    pub name: String,
    /// For an Argo sensor's parameter: resolved with Argo's rules instead
    /// of a template.
    pub argo: Option<ArgoParam>,
    /// Key of the compiled template in [`SensorSet::templates`].
    pub template: String,
    pub default: Option<String>,
    /// Where to insert; `None` = Argo Workflow argument `name`.
    pub dest: Option<Vec<String>>,
}

/// What a trigger does when it fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Render and submit the object.
    Submit,
    /// Log the events (Argo's `log` trigger), at most once per interval;
    /// nothing is submitted.
    Log { interval: Duration },
    /// The object cannot be had (an Argo trigger source tripline does not
    /// fetch): every firing is dead-lettered with this reason.
    Unavailable(String),
    /// The resource is read when the trigger fires (an Argo `file` or
    /// `configmap` source, `submit-from` a CronWorkflow); parameters then
    /// apply to it.
    Fetch(Arc<argo::fetch::FetchTrigger>),
}

/// An Argo parameter and the dependency whose event it reads.
#[derive(Debug, Clone)]
pub struct ArgoParam {
    pub param: Arc<argo::params::Param>,
    pub dependency: Arc<argo::filter::DependencyFilter>,
}

/// Every loaded sensor plus an index from source name to the dependencies
/// listening on it.
pub struct SensorSet {
    pub sensors: Vec<Sensor>,
    /// Keyed by source name (configuration, not event data), so hashed
    /// with `hashbrown`'s fast default rather than SipHash: looked up a few
    /// times per event.
    by_source: hashbrown::HashMap<String, index::SourceIndex>,
    pub templates: Templates,
    /// What loading noticed but accepted (`file: document N: field: …`):
    /// unknown fields of Argo sensors, ignored Argo documents.
    pub warnings: Vec<String>,
}

impl SensorSet {
    /// Sensor `sensor` and its trigger `trigger` (indices as matches and
    /// firings carry them).
    pub fn trigger(&self, sensor: usize, trigger: usize) -> (&Sensor, &Trigger) {
        let s = &self.sensors[sensor];
        (s, &s.triggers[trigger])
    }
}

impl Sensor {
    /// The correlation key of `event` for trigger `t`: rendered from the key
    /// of the first dependency of `t` the event satisfied (`matched`), or
    /// `""` when the trigger's dependencies have no keys.
    pub fn correlation_key(
        &self,
        templates: &Templates,
        t: &Trigger,
        matched: &[usize],
        event: &Event,
    ) -> Result<String, render::RenderError> {
        let Some(dep) = t
            .deps
            .iter()
            .find(|d| matched.contains(d))
            .map(|d| &self.dependencies[*d])
        else {
            return Ok(String::new());
        };
        let Some(template) = &dep.key else {
            return Ok(String::new());
        };
        templates
            .render(template, &render::context(event, &[]))
            .map_err(|reason| render::RenderError::Param {
                param: format!("{}.key", dep.name),
                reason,
            })
    }

    /// Events keyed by dependency index → keyed by dependency name, as
    /// templates and dead letters see them.
    pub fn named<'e>(&'e self, events: &'e [(usize, Arc<Event>)]) -> Vec<(&'e str, &'e Event)> {
        events
            .iter()
            .map(|(d, e)| (self.dependencies[*d].name.as_str(), e.as_ref()))
            .collect()
    }
}

/// The dependencies of one sensor that an event satisfied.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub sensor: usize,
    pub deps: Vec<usize>,
}

/// Why an event did or did not match, sensor by sensor.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub event_id: String,
    pub source: String,
    pub sensors: Vec<SensorExplanation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One dependency an event did not satisfy, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Miss {
    pub sensor: String,
    pub dependency: String,
    pub reason: String,
}

/// The first failing leaf of a trace, as one line:
/// `body.ref equals "refs/heads/main" (seen "refs/tags/v1"): value does not satisfy the operator`.
fn first_failure(t: &Trace) -> String {
    // Into `all` and the Argo kinds (an Argo dependency, its `data (and)`):
    // the first failing child says why.
    let conjunctive =
        t.filter == "all" || t.filter.starts_with("argo ") || t.filter.starts_with("data (");
    if conjunctive {
        if let Some(c) = t.children.iter().find(|c| !c.matched) {
            return first_failure(c);
        }
    }
    let seen = t
        .seen
        .as_ref()
        .map(|v| format!(" (seen {v})"))
        .unwrap_or_default();
    let reason = t.reason.as_deref().unwrap_or("did not match");
    let what = match t.filter.as_str() {
        "any" => format!(
            "any of [{}]",
            t.children
                .iter()
                .map(|c| c.filter.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ),
        "not" => format!(
            "not [{}]",
            t.children.first().map_or("", |c| c.filter.as_str())
        ),
        f => f.to_string(),
    };
    format!("{what}{seen}: {reason}")
}

#[derive(Debug, Clone, Serialize)]
pub struct SensorExplanation {
    pub sensor: String,
    pub dependencies: Vec<DependencyExplanation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DependencyExplanation {
    pub name: String,
    pub source: String,
    pub matched: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filters: Option<Trace>,
}

impl SensorSet {
    pub fn new(mut sensors: Vec<Sensor>, templates: Templates) -> Self {
        for t in sensors.iter_mut().flat_map(|s| s.triggers.iter_mut()) {
            t.reads = templates.reads(
                t.parameters
                    .iter()
                    .filter(|p| p.argo.is_none())
                    .map(|p| p.template.as_str()),
            );
        }
        let mut grouped: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
        for (si, s) in sensors.iter().enumerate() {
            for (di, d) in s.dependencies.iter().enumerate() {
                grouped.entry(d.source.clone()).or_default().push((si, di));
            }
        }
        let by_source = grouped
            .into_iter()
            .map(|(source, all)| (source, index::SourceIndex::build(&sensors, all)))
            .collect();
        SensorSet {
            sensors,
            by_source,
            templates,
            warnings: Vec::new(),
        }
    }

    /// Number of dependencies listening on `source`.
    pub fn listeners(&self, source: &str) -> usize {
        self.by_source.get(source).map_or(0, |i| i.all.len())
    }

    /// The pure matcher: which dependencies of which sensors this event
    /// satisfies. Only dependencies on the event's source are looked at, and
    /// of those only the ones the [`index`] cannot rule out.
    pub fn match_event(&self, event: &Event) -> Vec<Match> {
        let Some(index) = self.by_source.get(&event.source) else {
            return Vec::new();
        };
        let ctx = EvalCtx::new(event);
        let mut out: Vec<Match> = Vec::new();
        for (si, di) in index.candidates(event) {
            let dep = &self.sensors[si].dependencies[di];
            if dep.filter.as_ref().is_none_or(|f| f.test(&ctx)) {
                match out.last_mut() {
                    Some(m) if m.sensor == si => m.deps.push(di),
                    _ => out.push(Match {
                        sensor: si,
                        deps: vec![di],
                    }),
                }
            }
        }
        out
    }

    /// What the filters on `source` read of an event
    /// ([`index::SourceIndex::reads`]); `None` when some read all of its
    /// body. A source no sensor uses reads nothing of it.
    pub fn reads(&self, source: &str) -> Option<Arc<EventReads>> {
        self.shared_reads(source).cloned()
    }

    /// [`SensorSet::reads`], borrowed from this set (no reference count
    /// taken per event).
    pub fn reads_borrowed(&self, source: &str) -> Option<&EventReads> {
        self.shared_reads(source).map(|r| &**r)
    }

    fn shared_reads(&self, source: &str) -> Option<&Arc<EventReads>> {
        static NOTHING: std::sync::LazyLock<Arc<EventReads>> =
            std::sync::LazyLock::new(Arc::default);
        match self.by_source.get(source) {
            Some(index) => index.reads(),
            None => Some(&NOTHING),
        }
    }

    /// Whether an event of `source` built with only what `kept` names (its
    /// body parsed with [`crate::event::BodyReads::parse`]) is matched and
    /// explained here exactly as the whole event: the filters on the source
    /// read no more than `kept`.
    pub fn reads_within(&self, source: &str, kept: &EventReads) -> bool {
        self.by_source
            .get(source)
            // The same `EventReads` it handed out (the common case) needs
            // no walk through its paths.
            .is_none_or(|i| {
                i.reads()
                    .is_some_and(|r| std::ptr::eq(&**r, kept) || kept.covers(r))
            })
    }

    /// For an event that fired nothing: why, in one line per dependency on
    /// its source (the first failing filter and the value it saw), for at
    /// most `limit` dependencies. Cheap enough to put in every reply.
    pub fn why_not(&self, event: &Event, limit: usize) -> Vec<Miss> {
        let Some(index) = self.by_source.get(&event.source) else {
            return vec![Miss {
                sensor: String::new(),
                dependency: String::new(),
                reason: format!("no sensor has a dependency on source `{}`", event.source),
            }];
        };
        let ctx = EvalCtx::new(event);
        index
            .all
            .iter()
            .take(limit)
            .filter_map(|&(si, di)| {
                let dep = &self.sensors[si].dependencies[di];
                let trace = dep.filter.as_ref()?.explain(&ctx);
                (!trace.matched).then(|| Miss {
                    sensor: self.sensors[si].name.clone(),
                    dependency: dep.name.clone(),
                    reason: first_failure(&trace),
                })
            })
            .collect()
    }

    /// The same decision as [`match_event`](Self::match_event), with the
    /// per-filter story.
    pub fn explain(&self, event: &Event) -> Explanation {
        let ctx = EvalCtx::new(event);
        let mut sensors: Vec<SensorExplanation> = Vec::new();
        for &(si, di) in self
            .by_source
            .get(&event.source)
            .map(|i| i.all.as_slice())
            .unwrap_or_default()
        {
            let sensor = &self.sensors[si];
            let dep = &sensor.dependencies[di];
            let trace = dep.filter.as_ref().map(|f| f.explain(&ctx));
            let d = DependencyExplanation {
                name: dep.name.clone(),
                source: dep.source.clone(),
                matched: trace.as_ref().is_none_or(|t| t.matched),
                filters: trace,
            };
            match sensors.last_mut() {
                Some(s) if s.sensor == sensor.name => s.dependencies.push(d),
                _ => sensors.push(SensorExplanation {
                    sensor: sensor.name.clone(),
                    dependencies: vec![d],
                }),
            }
        }
        let note = sensors
            .is_empty()
            .then(|| format!("no sensor has a dependency on source `{}`", event.source));
        Explanation {
            event_id: event.id.clone(),
            source: event.source.clone(),
            sensors,
            note,
        }
    }
}

impl Trigger {
    /// Renders parameters into a copy of the manifest and names it.
    /// `primary` is the event that completed the trigger; `events` holds
    /// every dependency's event by name.
    pub fn render(
        &self,
        templates: &Templates,
        sensor: &str,
        primary: &Event,
        events: &[(&str, &Event)],
        default_namespace: Option<&str>,
    ) -> Result<(String, Value), render::RenderError> {
        self.render_resource(
            &self.manifest,
            templates,
            sensor,
            primary,
            events,
            default_namespace,
        )
    }

    /// [`render`](Self::render) over `resource` (fetched when the trigger
    /// fired) instead of the loaded manifest.
    pub fn render_resource(
        &self,
        resource: &Value,
        templates: &Templates,
        sensor: &str,
        primary: &Event,
        events: &[(&str, &Event)],
        default_namespace: Option<&str>,
    ) -> Result<(String, Value), render::RenderError> {
        let ctx = render::context_reading(
            primary,
            if self.uses_dependency_names {
                events
            } else {
                &[]
            },
            &self.reads,
        );
        let mut obj = resource.clone();
        for p in &self.parameters {
            if let Some(a) = &p.argo {
                let event = events
                    .iter()
                    .find(|(name, _)| *name == a.param.dependency)
                    .and_then(|(_, e)| a.dependency.argo_event(e));
                a.param.apply(&mut obj, event.as_ref()).map_err(|reason| {
                    render::RenderError::Param {
                        param: format!("{} (dest {})", p.name, a.param.dest()),
                        reason,
                    }
                })?;
                continue;
            }
            let value = match templates.render(&p.template, &ctx) {
                Ok(v) => v,
                Err(reason) => match &p.default {
                    Some(d) => d.clone(),
                    None => {
                        return Err(render::RenderError::Param {
                            param: p.name.clone(),
                            reason,
                        })
                    }
                },
            };
            let placed = match &p.dest {
                Some(dest) => render::insert(&mut obj, dest, Value::String(value)),
                None => render::set_argument(&mut obj, &p.name, &value),
            };
            placed.map_err(|reason| render::RenderError::Dest {
                dest: p
                    .dest
                    .as_ref()
                    .map_or_else(|| p.name.clone(), |d| d.join(".")),
                reason,
            })?;
        }
        let mut fired: Vec<&Event> = events.iter().map(|(_, e)| *e).collect();
        if fired.is_empty() {
            fired.push(primary);
        }
        let ns = self.namespace.as_deref().or(default_namespace);
        let name = render::finalize(&mut obj, sensor, &self.name, &fired, ns);
        if !self.allowed_namespaces.is_empty() {
            let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
            if !self.allowed_namespaces.iter().any(|a| a == ns) {
                return Err(render::RenderError::NamespaceNotAllowed {
                    namespace: ns.to_string(),
                    allowed: self.allowed_namespaces.join(", "),
                });
            }
        }
        Ok((name, obj))
    }
}
