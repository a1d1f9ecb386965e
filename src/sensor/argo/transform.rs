//! Dependency transforms (ARGO-COMPAT §4.7, upstream `transform.go`):
//! `transform: {jq: …}` or `{script: …}` rewrites the event's `data` before
//! the filters run, and the trigger parameters see the result. `jq` runs on
//! jaq (the first output must be an object; keys come out sorted, as
//! upstream re-marshals a Go map); `script` is Lua 5.1 ([`super::lua`]).
//! Both are compiled at load; a failure at run time means the event does
//! not satisfy the dependency.
//!
//! jaq differs from gojq in places (see jaq's README); `"s" * n` repeats a
//! string as upstream's example needs. The jq builtins `env` (tripline's
//! environment holds secrets) and `halt` (it would exit the process) fail
//! instead of running. jaq has no instruction limit: each evaluation runs
//! on its own thread with a deadline instead.

use jaq_core::box_iter::box_once;
use jaq_core::data::JustLut;
use jaq_core::load::{Arena, File, Loader};
use jaq_core::native::{self, Fun};
use jaq_core::{Compiler, Ctx, Exn, Vars};
use jaq_json::Val;
use serde::Deserialize;
use serde_json::Value;

use super::lua::{Script, ScriptError};

type Data = JustLut<Val>;

/// `transform:` of an Argo dependency, as written.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TransformSpec {
    #[serde(default)]
    pub jq: Option<String>,
    #[serde(default)]
    pub script: Option<String>,
}

/// Why a transform could not be compiled or applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransformError {
    /// The jq program does not parse or compile (a load error).
    #[error("jq: {0}")]
    JqCompile(String),
    /// The jq program failed on this event.
    #[error("jq: {0}")]
    JqRun(String),
    /// The jq program produced no output.
    #[error("jq: no output")]
    JqNoOutput,
    /// The first jq output is not an object.
    #[error("jq: the output must be a JSON object, not {0}")]
    JqNotObject(String),
    /// The event data is not a JSON object.
    #[error("the event data is not a JSON object")]
    NotObject,
    /// The Lua script failed to load or run.
    #[error(transparent)]
    Script(#[from] ScriptError),
}

/// A compiled transform.
pub enum Transform {
    Jq(Jq),
    Lua(Script),
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transform::Jq(jq) => write!(f, "Transform::Jq({:?})", jq.source),
            Transform::Lua(s) => write!(f, "Transform::Lua({s:?})"),
        }
    }
}

impl Transform {
    /// Compiles `spec` (the `transform` value of a dependency). `Ok(None)`
    /// when it has neither `jq` nor `script` (upstream: no transform); `jq`
    /// wins when both are given, as upstream. Errors are `(field under
    /// transform, message)`.
    pub fn compile(spec: &Value) -> Result<Option<Transform>, (String, String)> {
        if spec.is_null() {
            return Ok(None);
        }
        let spec: TransformSpec = serde_json::from_value(spec.clone())
            .map_err(|e| ("transform".to_string(), e.to_string()))?;
        match (spec.jq.as_deref(), spec.script.as_deref()) {
            (Some(jq), _) if !jq.is_empty() => Jq::compile(jq)
                .map(|j| Some(Transform::Jq(j)))
                .map_err(|e| ("transform.jq".into(), e.to_string())),
            (_, Some(src)) if !src.is_empty() => Script::compile(src, "transform.script")
                .map(|s| Some(Transform::Lua(s)))
                .map_err(|e| ("transform.script".into(), e.to_string())),
            _ => Ok(None),
        }
    }

    /// The transformed data. Null data (no payload) is kept, as upstream.
    pub fn apply(&self, data: &Value) -> Result<Value, TransformError> {
        if data.is_null() {
            return Ok(Value::Null);
        }
        match self {
            Transform::Jq(jq) => jq.run(data),
            Transform::Lua(s) => Ok(s.transform(data)?),
        }
    }

    /// Which kind, for explanations.
    pub fn kind(&self) -> &'static str {
        match self {
            Transform::Jq(_) => "jq",
            Transform::Lua(_) => "script",
        }
    }
}

/// A compiled jq program.
pub struct Jq {
    source: String,
    filter: std::sync::Arc<JqFilter>,
}

type JqFilter = jaq_core::compile::Filter<jaq_core::Native<Data>>;

/// How long one jq evaluation may run (jaq has no instruction limit).
const JQ_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);
/// Evaluations still running past their deadline, process-wide (a thread
/// cannot be stopped: it runs on, counted, until it ends).
static JQ_OVERDUE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Past this many overdue evaluations, jq transforms fail at once instead
/// of starting more (a program that never ends cannot eat every core).
const JQ_MAX_OVERDUE: usize = 4;

/// The jq natives, with `env` and `halt` replaced by errors.
fn funs() -> impl Iterator<Item = Fun<Data>> {
    let disabled: jaq_core::RunPtr<Data> = |_| {
        box_once(Err(Exn::from(jaq_core::Error::str(
            "disabled in tripline (env, halt)",
        ))))
    };
    jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs())
        .map(move |f| match f.0 {
            "env" | "halt" => native::run::<Data>((f.0, f.1, disabled)),
            _ => f,
        })
}

impl Jq {
    /// Parses and compiles `source` with jaq's standard library.
    pub fn compile(source: &str) -> Result<Jq, TransformError> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let program = File {
            code: source,
            path: (),
        };
        let modules = loader
            .load(&arena, program)
            .map_err(|errs| TransformError::JqCompile(describe(&errs)))?;
        let filter = Compiler::default()
            .with_funs(funs())
            .compile(modules)
            .map_err(|errs| TransformError::JqCompile(describe(&errs)))?;
        Ok(Jq {
            source: source.to_string(),
            filter: std::sync::Arc::new(filter),
        })
    }

    /// Upstream's `applyJQTransform`: the first output, which must be an
    /// object. Runs on a thread of its own with `JQ_DEADLINE`: past it
    /// the transform fails (the event does not satisfy the dependency) and
    /// the evaluation is left to finish, counted in `JQ_OVERDUE`.
    pub fn run(&self, data: &Value) -> Result<Value, TransformError> {
        use std::sync::atomic::Ordering;
        if !data.is_object() {
            return Err(TransformError::NotObject);
        }
        if JQ_OVERDUE.load(Ordering::Relaxed) >= JQ_MAX_OVERDUE {
            return Err(TransformError::JqRun(format!(
                "{JQ_MAX_OVERDUE} jq evaluations are still running past their deadline; refused"
            )));
        }
        // (finished, overdue): who sets `overdue` counts it, who sees it
        // set on finishing uncounts it.
        let state = std::sync::Arc::new(std::sync::Mutex::new((false, false)));
        let (tx, rx) = std::sync::mpsc::channel();
        let (filter, input, shared) = (self.filter.clone(), data.clone(), state.clone());
        std::thread::Builder::new()
            .name("jq".into())
            .spawn(move || {
                let out = run_filter(&filter, &input);
                let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                s.0 = true;
                if s.1 {
                    JQ_OVERDUE.fetch_sub(1, Ordering::Relaxed);
                }
                let _ = tx.send(out);
            })
            .map_err(|e| TransformError::JqRun(format!("cannot start a jq thread: {e}")))?;
        match rx.recv_timeout(JQ_DEADLINE) {
            Ok(out) => out,
            Err(_) => {
                let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                if s.0 {
                    drop(s);
                    return rx
                        .recv()
                        .unwrap_or(Err(TransformError::JqRun("the jq thread died".into())));
                }
                s.1 = true;
                JQ_OVERDUE.fetch_add(1, Ordering::Relaxed);
                Err(TransformError::JqRun(format!(
                    "ran past its {JQ_DEADLINE:?} deadline"
                )))
            }
        }
    }
}

fn run_filter(filter: &JqFilter, data: &Value) -> Result<Value, TransformError> {
    let input = jaq_json::read::parse_single(data.to_string().as_bytes())
        .map_err(|e| TransformError::JqRun(e.to_string()))?;
    let ctx = Ctx::<Data>::new(&filter.lut, Vars::new([]));
    let first = filter.id.run((ctx, input)).next();
    let out = match first {
        None => return Err(TransformError::JqNoOutput),
        Some(Ok(v)) => v,
        Some(Err(exn)) => {
            let why = match exn.get_err() {
                Ok(e) => e.to_string(),
                Err(_) => "halted".to_string(),
            };
            return Err(TransformError::JqRun(why));
        }
    };
    if !matches!(out, Val::Obj(_)) {
        let kind = match out {
            Val::Null => "null",
            Val::Bool(_) => "a boolean",
            Val::Num(_) => "a number",
            Val::Arr(_) => "an array",
            _ => "a string",
        };
        return Err(TransformError::JqNotObject(kind.into()));
    }
    serde_json::from_str(&out.to_string()).map_err(|e| TransformError::JqRun(e.to_string()))
}

/// jaq's load or compile errors, as one line.
fn describe<E: std::fmt::Debug, P>(errs: &[(File<&str, P>, E)]) -> String {
    errs.iter()
        .map(|(_, e)| format!("{e:?}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jq(program: &str, data: Value) -> Result<Value, TransformError> {
        Jq::compile(program).expect("compiles").run(&data)
    }

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn compiled_transforms_are_send_and_sync() {
        send_sync::<Transform>();
    }

    /// Upstream `transform_test.go` `TestApplyJQTransform`.
    #[test]
    fn upstream_jq_transform_case() {
        let out = jq(".a += 1 | .b *= 2", json!({"a": 1, "b": "2"})).unwrap();
        assert_eq!(out.to_string(), r#"{"a":2,"b":"22"}"#);
    }

    /// Upstream `examples/sensors/transform.yaml`, the `jq` dependency:
    /// string repetition (`"hello" * 2`).
    #[test]
    fn upstream_jq_example_repeats_strings() {
        let out = jq(
            ".body.message *= 2",
            json!({"header": {}, "body": {"message": "hello"}}),
        )
        .unwrap();
        assert_eq!(out["body"]["message"], "hellohello");
    }

    #[test]
    fn jq_output_rules() {
        // Only the first output counts; it must be an object.
        assert_eq!(jq("{a: 1}, {a: 2}", json!({})), Ok(json!({"a": 1})));
        assert_eq!(
            jq(".x", json!({"x": [1]})),
            Err(TransformError::JqNotObject("an array".into()))
        );
        assert_eq!(jq("empty", json!({})), Err(TransformError::JqNoOutput));
        assert!(matches!(
            jq(".a + 1", json!({"a": "s"})),
            Err(TransformError::JqRun(_))
        ));
        // Keys come out sorted (upstream re-marshals a Go map).
        let out = jq("{z: 1, a: 2}", json!({})).unwrap();
        assert_eq!(out.to_string(), r#"{"a":2,"z":1}"#);
        // The example in docs/argo-events.md.
        assert_eq!(
            jq(
                ".body.action |= ascii_downcase",
                json!({"body": {"action": "OPENED"}})
            ),
            Ok(json!({"body": {"action": "opened"}}))
        );
        // Floats stay floats.
        assert_eq!(jq("{x: (.x / 2)}", json!({"x": 3})), Ok(json!({"x": 1.5})));
        // env and halt fail instead of leaking secrets or exiting.
        assert!(matches!(
            jq("{e: env}", json!({})),
            Err(TransformError::JqRun(_))
        ));
        assert!(matches!(
            jq("halt", json!({})),
            Err(TransformError::JqRun(_))
        ));
        assert!(matches!(
            jq("halt_error", json!({})),
            Err(TransformError::JqRun(_))
        ));
    }

    #[test]
    fn compile_errors_name_the_field() {
        let e = Transform::compile(&json!({"jq": ".a |"})).unwrap_err();
        assert_eq!(e.0, "transform.jq");
        let e = Transform::compile(&json!({"jq": "nosuchfunction"})).unwrap_err();
        assert_eq!(e.0, "transform.jq");
        let e = Transform::compile(&json!({"script": "return {"})).unwrap_err();
        assert_eq!(e.0, "transform.script");
        assert!(e.1.contains("transform.script"), "{}", e.1);
        // Neither: no transform; both: jq, as upstream.
        assert!(Transform::compile(&json!({})).unwrap().is_none());
        assert!(Transform::compile(&json!({"jq": "", "script": ""}))
            .unwrap()
            .is_none());
        let t = Transform::compile(&json!({"jq": ".", "script": "return {}"}))
            .unwrap()
            .unwrap();
        assert_eq!(t.kind(), "jq");
    }

    /// jaq has no instruction limit: a program that never ends fails at
    /// its deadline (the event does not satisfy the dependency) and the
    /// next evaluation still runs.
    #[test]
    fn a_jq_program_that_never_ends_fails_at_its_deadline() {
        let forever = Jq::compile("last(range(1e18)) | {}").unwrap();
        let started = std::time::Instant::now();
        let e = forever.run(&json!({"a": 1})).unwrap_err();
        assert!(e.to_string().contains("deadline"), "{e}");
        assert!(started.elapsed() < JQ_DEADLINE * 2);
        assert_eq!(
            jq(".a += 1", json!({"a": 1})),
            Ok(json!({"a": 2})),
            "other programs still run"
        );
    }

    #[test]
    fn null_data_is_kept() {
        let t = Transform::compile(&json!({"jq": "{a: 1}"}))
            .unwrap()
            .unwrap();
        assert_eq!(t.apply(&Value::Null), Ok(Value::Null));
    }
}
