//! Sandboxed Lua 5.1 for Argo script filters and Lua transforms
//! (ARGO-COMPAT §4.5, §4.7). Upstream runs gopher-lua (Lua 5.1) in a fresh
//! state per evaluation with the event data as the global `event`
//! (`mapToTable`: null values and arrays inside arrays are dropped, numbers
//! are floats) and reads the chunk's last return value; so does this module,
//! with mlua's vendored Lua 5.1.
//!
//! The sandbox is tripline's addition: only the `string`, `table` and
//! `math` libraries and the base functions (`coroutine` included), without
//! `os`, `io`, `debug`, `require`/`package`/`module`, `load`/`loadstring`/
//! `loadfile`/`dofile`; `print` does nothing. Each evaluation gets a fresh
//! state with [`INSTRUCTION_LIMIT`] VM instructions (coroutines included)
//! and [`MEMORY_LIMIT`] bytes (the event's table included).
//!
//! A script is syntax-checked once at load ([`Script::compile`]) and kept as
//! source: Lua states are neither `Send` nor `Sync`, and a fresh state per
//! evaluation (as upstream) keeps events and sensors from seeing each
//! other's globals. Measured by `per_event_cost` (dev profile): about 75 µs
//! per evaluation of a webhook-sized event, two thirds of it creating the
//! state.

use std::cell::Cell;
use std::rc::Rc;

use mlua::{HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table, VmState};
use serde_json::{Map, Number, Value};

/// VM instructions one evaluation may run (counted every 1000).
pub const INSTRUCTION_LIMIT: u64 = 10_000_000;
/// Bytes one evaluation's Lua state may allocate, the event's table included.
pub const MEMORY_LIMIT: usize = 32 * 1024 * 1024;
/// How deep a returned table may nest (cycles are an error, not a crash).
const MAX_DEPTH: usize = 128;
const HOOK_EVERY: u32 = 1000;

/// Why a script could not be loaded or run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScriptError {
    /// The chunk does not parse (a load error).
    #[error("Lua syntax error: {0}")]
    Syntax(String),
    /// The event data is not a JSON object (upstream cannot unmarshal it into a map).
    #[error("the event data is not a JSON object")]
    NotObject,
    /// The chunk raised an error, or hit a sandbox limit.
    #[error("Lua error: {0}")]
    Runtime(String),
    /// A transform returned something other than a table.
    #[error("the script returned {0}, not a table")]
    NotTable(String),
    /// A returned table cannot be JSON (a function, a cycle, NaN…).
    #[error("the returned table is not JSON: {0}")]
    NotJson(String),
}

/// A syntax-checked Lua chunk; each run gets a fresh sandboxed state.
#[derive(Debug, Clone)]
pub struct Script {
    source: String,
    /// Chunk name in error messages (`filters.script`, `transform.script`).
    name: String,
}

impl Script {
    /// Parses `source` once (no code runs); `name` labels its errors.
    pub fn compile(source: &str, name: &str) -> Result<Script, ScriptError> {
        let lua = sandbox().map_err(|e| ScriptError::Runtime(e.to_string()))?;
        lua.load(source)
            .set_name(format!("={name}"))
            .into_function()
            .map_err(|e| ScriptError::Syntax(message(&e)))?;
        Ok(Script {
            source: source.to_string(),
            name: name.to_string(),
        })
    }

    /// Upstream's `filterScript`: true iff the last value the chunk returns
    /// is `true`. Null data passes without running (upstream: no payload).
    pub fn filter(&self, data: &Value) -> Result<bool, ScriptError> {
        if data.is_null() {
            return Ok(true);
        }
        self.run(data, |v| Ok(matches!(v, Some(mlua::Value::Boolean(true)))))
    }

    /// Upstream's `applyScriptTransform`: the chunk's last return value must
    /// be a table; it becomes the new data (a table with a sequence part is
    /// an array, `setmetatable(t, {__is_array = true})` forces one). Null
    /// data is kept as it is.
    pub fn transform(&self, data: &Value) -> Result<Value, ScriptError> {
        if data.is_null() {
            return Ok(Value::Null);
        }
        self.run(data, |v| match v {
            Some(mlua::Value::Table(t)) => to_json(&t, 0),
            Some(other) => Err(ScriptError::NotTable(other.type_name().to_string())),
            None => Err(ScriptError::NotTable("nothing".into())),
        })
    }

    /// Runs the chunk over `data` in a fresh sandbox and hands its last
    /// return value to `out`, still inside the state.
    fn run<T>(
        &self,
        data: &Value,
        out: impl FnOnce(Option<mlua::Value>) -> Result<T, ScriptError>,
    ) -> Result<T, ScriptError> {
        let Value::Object(map) = data else {
            return Err(ScriptError::NotObject);
        };
        let runtime = |e: mlua::Error| ScriptError::Runtime(message(&e));
        let lua = sandbox().map_err(runtime)?;
        let event = map_to_table(&lua, map).map_err(runtime)?;
        lua.globals().raw_set("event", event).map_err(runtime)?;
        let f = lua
            .load(self.source.as_str())
            .set_name(format!("={}", self.name))
            .into_function()
            .map_err(|e| ScriptError::Syntax(message(&e)))?;
        let values: MultiValue = f.call(()).map_err(runtime)?;
        let last = values.into_iter().next_back();
        out(last)
    }
}

/// A fresh state with the safe libraries, the limits, and the unsafe base
/// functions removed.
fn sandbox() -> mlua::Result<Lua> {
    let lua = Lua::new_with(
        StdLib::STRING | StdLib::TABLE | StdLib::MATH,
        LuaOptions::default(),
    )?;
    lua.set_memory_limit(MEMORY_LIMIT)?;
    let count = Rc::new(Cell::new(0u64));
    lua.set_global_hook(
        HookTriggers::new().every_nth_instruction(HOOK_EVERY),
        move |_, _| {
            let n = count.get() + u64::from(HOOK_EVERY);
            count.set(n);
            if n > INSTRUCTION_LIMIT {
                return Err(mlua::Error::runtime(format!(
                    "the instruction limit ({INSTRUCTION_LIMIT}) was reached"
                )));
            }
            Ok(VmState::Continue)
        },
    )?;
    let g = lua.globals();
    for name in [
        "load",
        "loadstring",
        "loadfile",
        "dofile",
        "require",
        "module",
        "package",
        "os",
        "io",
        "debug",
    ] {
        g.raw_set(name, mlua::Value::Nil)?;
    }
    g.raw_set("print", lua.create_function(|_, _: MultiValue| Ok(()))?)?;
    Ok(lua)
}

/// The text of a Lua error without mlua's traceback.
fn message(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { cause, .. } => message(cause),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::MemoryError(_) => {
            format!("the memory limit ({MEMORY_LIMIT} bytes) was reached")
        }
        other => other.to_string(),
    }
    .lines()
    .next()
    .unwrap_or_default()
    .to_string()
}

/// Upstream's `mapToTable`: numbers as floats, nulls dropped; in arrays,
/// objects, numbers, strings and bools are kept (nulls and nested arrays
/// dropped, the rest moving up).
fn map_to_table(lua: &Lua, map: &Map<String, Value>) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, map.len())?;
    for (k, v) in map {
        match v {
            Value::Null => {}
            Value::Bool(b) => t.raw_set(k.as_str(), *b)?,
            Value::Number(n) => t.raw_set(k.as_str(), n.as_f64().unwrap_or(0.0))?,
            Value::String(s) => t.raw_set(k.as_str(), s.as_str())?,
            Value::Object(m) => t.raw_set(k.as_str(), map_to_table(lua, m)?)?,
            Value::Array(items) => {
                let a = lua.create_table_with_capacity(items.len(), 0)?;
                for item in items {
                    match item {
                        Value::Object(m) => a.raw_push(map_to_table(lua, m)?)?,
                        Value::Number(n) => a.raw_push(n.as_f64().unwrap_or(0.0))?,
                        Value::String(s) => a.raw_push(s.as_str())?,
                        Value::Bool(b) => a.raw_push(*b)?,
                        Value::Null | Value::Array(_) => {}
                    }
                }
                t.raw_set(k.as_str(), a)?;
            }
        }
    }
    Ok(t)
}

/// Upstream's `toGoValue` then `json.Marshal`: a table with a sequence part
/// (or `__is_array = true` in its metatable) is an array of that part, any
/// other table an object with the keys as strings.
fn to_json(t: &Table, depth: usize) -> Result<Value, ScriptError> {
    if depth > MAX_DEPTH {
        return Err(ScriptError::NotJson(format!(
            "tables nest deeper than {MAX_DEPTH} (a cycle?)"
        )));
    }
    let lua_err = |e: mlua::Error| ScriptError::NotJson(message(&e));
    let forced = t
        .metatable()
        .map(|mt| matches!(mt.raw_get("__is_array"), Ok(mlua::Value::Boolean(true))))
        .unwrap_or(false);
    let n = t.raw_len();
    if forced || n > 0 {
        let mut out = Vec::with_capacity(n);
        for i in 1..=n {
            let v: mlua::Value = t.raw_get(i).map_err(lua_err)?;
            out.push(value_to_json(&v, depth)?);
        }
        return Ok(Value::Array(out));
    }
    let mut out = Map::new();
    for pair in t.pairs::<mlua::Value, mlua::Value>() {
        let (k, v) = pair.map_err(lua_err)?;
        let key = match &k {
            mlua::Value::String(s) => s.to_string_lossy(),
            mlua::Value::Integer(i) => i.to_string(),
            mlua::Value::Number(f) => lua_number_text(*f),
            mlua::Value::Boolean(b) => b.to_string(),
            other => return Err(ScriptError::NotJson(format!("a {} key", other.type_name()))),
        };
        out.insert(key, value_to_json(&v, depth)?);
    }
    Ok(Value::Object(out))
}

fn value_to_json(v: &mlua::Value, depth: usize) -> Result<Value, ScriptError> {
    Ok(match v {
        mlua::Value::Nil => Value::Null,
        mlua::Value::Boolean(b) => Value::Bool(*b),
        mlua::Value::Integer(i) => Value::from(*i),
        mlua::Value::Number(f) => float_json(*f)?,
        mlua::Value::String(s) => Value::String(s.to_string_lossy()),
        mlua::Value::Table(t) => to_json(t, depth + 1)?,
        other => {
            return Err(ScriptError::NotJson(format!(
                "a {} value",
                other.type_name()
            )))
        }
    })
}

/// A float as Go's `json.Marshal` of a float64 writes it: integral values
/// without a fraction (`1`, not `1.0`); NaN and infinities are errors.
fn float_json(f: f64) -> Result<Value, ScriptError> {
    if !f.is_finite() {
        return Err(ScriptError::NotJson(format!("the number {f}")));
    }
    if f.fract() == 0.0 && f.abs() < 9e18 {
        // Exact: an integral float within i64.
        return Ok(Value::from(f as i64));
    }
    Ok(Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null))
}

/// Lua 5.1's `tostring` of a number (`%.14g`), as gopher-lua's key text.
fn lua_number_text(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(src: &str, data: Value) -> Result<bool, ScriptError> {
        Script::compile(src, "filters.script")
            .expect("compiles")
            .filter(&data)
    }

    fn transform(src: &str, data: Value) -> Result<Value, ScriptError> {
        Script::compile(src, "transform.script")
            .expect("compiles")
            .transform(&data)
    }

    /// Upstream `filter_script_test.go` `TestScriptFilter`, case by case.
    #[test]
    fn upstream_script_filter_cases() {
        // 1: true.
        let src = "\nif event.a == \"hello\" then return true else return false end\n";
        assert_eq!(filter(src, json!({"a": "hello"})), Ok(true));
        // 2: false.
        let src = "\nif event.a == \"hello\" and event.b == \"world\" then return false else return true end\n";
        assert_eq!(filter(src, json!({"a": "hello", "b": "world"})), Ok(false));
        // 3: a syntax error — upstream fails at run time, tripline at load.
        let src = "\nif event.a == \"hello\" return false else return true end\n";
        let e = Script::compile(src, "filters.script").unwrap_err();
        assert!(
            matches!(&e, ScriptError::Syntax(m) if m.contains("filters.script")),
            "{e}"
        );
        // 4: indexing an undefined global is a runtime error.
        let src = "\nif a.a == \"hello\" then return true else return false end\n";
        let e = filter(src, json!({"a": "hello"})).unwrap_err();
        assert!(
            matches!(&e, ScriptError::Runtime(m) if m.contains("a")),
            "{e}"
        );
    }

    /// Upstream `examples/sensors/filter-script.yaml` on its documented payload.
    #[test]
    fn upstream_filter_script_example() {
        let src = "if event.body.a == \"b\" and event.body.d.e == \"z\" then return true else return false end";
        let data = json!({"header": {}, "body": {"a": "b", "c": 10, "d": {"e": "z"}}});
        assert_eq!(filter(src, data), Ok(true));
        let data = json!({"header": {}, "body": {"a": "b", "c": 10, "d": {"e": "y"}}});
        assert_eq!(filter(src, data), Ok(false));
    }

    #[test]
    fn only_a_last_true_passes() {
        assert_eq!(filter("return 1", json!({})), Ok(false));
        assert_eq!(filter("return 'true'", json!({})), Ok(false));
        assert_eq!(filter("local x = 1", json!({})), Ok(false));
        // gopher-lua's `Get(-1)`: the last of several return values.
        assert_eq!(filter("return false, true", json!({})), Ok(true));
        assert_eq!(filter("return true, false", json!({})), Ok(false));
        // No payload: passes without running (upstream `payload == nil`).
        assert_eq!(filter("error('x')", Value::Null), Ok(true));
        // Data that is not an object: upstream cannot unmarshal it.
        assert_eq!(
            filter("return true", json!([1])),
            Err(ScriptError::NotObject)
        );
    }

    /// Upstream's `mapToTable`: numbers are floats, nulls are dropped, and
    /// so are arrays inside arrays (later elements move up).
    #[test]
    fn event_table_follows_map_to_table() {
        let data = json!({"n": 10, "f": 1.5, "z": null, "s": "x", "b": true,
            "a": [1, null, [2], "t", {"k": "v"}, false]});
        assert_eq!(filter("return event.z == nil", data.clone()), Ok(true));
        assert_eq!(
            filter("return event.n == 10 and event.f == 1.5", data.clone()),
            Ok(true)
        );
        assert_eq!(filter("return #event.a == 4", data.clone()), Ok(true));
        assert_eq!(
            filter(
                "return event.a[1] == 1 and event.a[2] == 't' and event.a[3].k == 'v' and event.a[4] == false",
                data.clone()
            ),
            Ok(true)
        );
        assert_eq!(filter("return event.b and event.s == 'x'", data), Ok(true));
        // Lua 5.1 has only floats: integer division is float division.
        assert_eq!(
            filter("return event.n / 4 == 2.5", json!({"n": 10})),
            Ok(true)
        );
    }

    #[test]
    fn the_sandbox_has_no_os_io_require_or_load() {
        for src in [
            "return os.time() ~= nil",
            "return io.open('/etc/passwd') ~= nil",
            "return require('os') ~= nil",
            "return loadstring('return true')()",
            "return load(function() return nil end) ~= nil",
            "return dofile('/etc/passwd')",
            "return package.loaded ~= nil",
            "return debug.getinfo(1) ~= nil",
        ] {
            assert!(
                matches!(filter(src, json!({})), Err(ScriptError::Runtime(_))),
                "{src}"
            );
        }
        // What scripts do use is there.
        assert_eq!(
            filter(
                "print('x'); return string.upper('a') == 'A' and math.floor(1.5) == 1 and table.concat({'a','b'}) == 'ab' and tostring(2) == '2' and type(pairs) == 'function' and type(coroutine.create) == 'function' and type(setmetatable) == 'function'",
                json!({})
            ),
            Ok(true)
        );
        // string.find with patterns, a common filter idiom.
        assert_eq!(
            filter(
                "return string.find(event.ref, '^refs/heads/') ~= nil",
                json!({"ref": "refs/heads/main"})
            ),
            Ok(true)
        );
    }

    #[test]
    fn limits_stop_runaway_scripts() {
        for src in [
            "while true do end",
            "coroutine.wrap(function() while true do end end)()",
            "local function f() return f() end return f()",
        ] {
            let e = filter(src, json!({})).unwrap_err();
            assert!(
                matches!(&e, ScriptError::Runtime(m) if m.contains("instruction limit")),
                "{src}: {e}"
            );
        }
        let e = filter(
            "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 100) .. i end return true",
            json!({}),
        )
        .unwrap_err();
        assert!(
            matches!(&e, ScriptError::Runtime(m) if m.contains("memory limit") || m.contains("instruction limit")),
            "{e}"
        );
        let e = filter(
            "local s = string.rep('x', 64 * 1024 * 1024) return true",
            json!({}),
        )
        .unwrap_err();
        assert!(
            matches!(&e, ScriptError::Runtime(m) if m.contains("memory limit")),
            "{e}"
        );
        // Globals do not leak between evaluations: each gets a fresh state.
        let s =
            Script::compile("if seen then return false end seen = true return true", "f").unwrap();
        assert_eq!(s.filter(&json!({})), Ok(true));
        assert_eq!(s.filter(&json!({})), Ok(true));
    }

    /// Upstream `transform_test.go` `TestApplyScriptTransform`.
    #[test]
    fn upstream_script_transform_cases() {
        // "empty array from lua"
        let out = transform(
            "\nevent.env = setmetatable({}, { __is_array = true })\nreturn event\n",
            json!({"env": 123}),
        );
        assert_eq!(out, Ok(json!({"env": []})));
        // Table case 1: numbers come back as Go prints float64s.
        let out = transform(
            "\nevent.c.d[1]=4\nreturn event\n",
            json!({"a":1,"b":"2","c":{"d":[3]}}),
        )
        .unwrap();
        assert_eq!(out.to_string(), r#"{"a":1,"b":"2","c":{"d":[4]}}"#);
        // Table case 2: not a table.
        assert_eq!(
            transform("\nreturn \"hello\"\n", json!({"a":1,"b":"2","c":{"d":[3]}})),
            Err(ScriptError::NotTable("string".into()))
        );
    }

    /// Upstream `examples/sensors/transform.yaml`, the `script` dependency.
    #[test]
    fn upstream_transform_example() {
        let out = transform(
            "event.body.message='updated'\nreturn event",
            json!({"header": {"Content-Type": ["application/json"]}, "body": {"message": "hello"}}),
        )
        .unwrap();
        assert_eq!(out["body"], json!({"message": "updated"}));
        assert_eq!(out["header"]["Content-Type"], json!(["application/json"]));
    }

    #[test]
    fn transform_output_conversion() {
        // Floats stay floats, large integers print as Go would.
        assert_eq!(
            transform("return {a = 1.5, b = 2^40, c = -3}", json!({})),
            Ok(json!({"a": 1.5, "b": 1099511627776_i64, "c": -3}))
        );
        // An empty array in the event comes back as an object (upstream:
        // an empty table is a map).
        assert_eq!(
            transform("return event", json!({"a": []})),
            Ok(json!({"a": {}}))
        );
        // A sequence is an array; number keys of a map become strings.
        assert_eq!(
            transform("return {{1, 2}, {[10] = 'x', y = true}}", json!({})),
            Ok(json!([[1, 2], {"10": "x", "y": true}]))
        );
        // A nil result, a function, a cycle, NaN: errors, not panics.
        assert_eq!(
            transform("return nil", json!({})),
            Err(ScriptError::NotTable("nil".into()))
        );
        assert_eq!(
            transform("", json!({})),
            Err(ScriptError::NotTable("nothing".into()))
        );
        assert!(matches!(
            transform("return {f = print}", json!({})),
            Err(ScriptError::NotJson(_))
        ));
        assert!(matches!(
            transform("local t = {} t.t = t return t", json!({})),
            Err(ScriptError::NotJson(_))
        ));
        assert!(matches!(
            transform("return {x = 0/0}", json!({})),
            Err(ScriptError::NotJson(_))
        ));
        // No payload: unchanged.
        assert_eq!(transform("return {}", Value::Null), Ok(Value::Null));
    }
}
