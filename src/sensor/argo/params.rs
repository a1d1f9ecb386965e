//! Argo trigger parameters (ARGO-COMPAT §6.5): resolve a value from the
//! stored event of `src.dependencyName` (template first, then key, then the
//! default `value`; the whole event without any of them), and insert it at
//! `dest` with sjson's rules (`-1` appends, `:N` forces an object key, `\.`
//! escapes a dot), overwriting, appending or prepending.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::data::ArgoEvent;
use super::gotmpl::Template;
use super::path::{self, Path};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParamSpec {
    pub src: SourceSpec,
    pub dest: String,
    #[serde(default)]
    pub operation: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    pub dependency_name: String,
    #[serde(default)]
    pub data_key: Option<String>,
    #[serde(default)]
    pub data_template: Option<String>,
    #[serde(default)]
    pub context_key: Option<String>,
    #[serde(default)]
    pub context_template: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub use_raw_data: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Operation {
    Overwrite,
    Append,
    Prepend,
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
    Append,
}

/// A compiled parameter.
#[derive(Debug, Clone)]
pub struct Param {
    pub dependency: String,
    from_data: bool,
    key: Option<Path>,
    template: Option<Template>,
    value: Option<String>,
    raw: bool,
    dest: Vec<Seg>,
    dest_text: String,
    op: Operation,
    /// `(field, message)`: a template that does not parse, kept out because
    /// upstream then falls back to the key or the default at every event.
    pub warning: Option<(String, String)>,
}

/// What a resolved value is, for `useRawData`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Type {
    String,
    Json,
}

impl Param {
    pub fn compile(spec: &ParamSpec) -> Result<Param, (String, String)> {
        let s = &spec.src;
        if s.dependency_name.is_empty() {
            return Err(("src.dependencyName".into(), "required".into()));
        }
        let from_data = s.data_key.is_some() || s.data_template.is_some();
        let (key, template) = if from_data {
            (&s.data_key, &s.data_template)
        } else {
            (&s.context_key, &s.context_template)
        };
        let key_field = if from_data {
            "src.dataKey"
        } else {
            "src.contextKey"
        };
        let template_field = if from_data {
            "src.dataTemplate"
        } else {
            "src.contextTemplate"
        };
        let key = key
            .as_deref()
            .map(Path::parse)
            .transpose()
            .map_err(|e| (key_field.to_string(), e))?;
        let has_fallback = key.is_some() || s.value.is_some();
        let mut warning = None;
        let template = match template.as_deref().map(Template::parse).transpose() {
            Ok(t) => t,
            // A template Go cannot parse either: upstream logs the error and
            // falls back, event after event. (tripline's own limits stay errors.)
            Err(e) if has_fallback && !e.contains("tripline") => {
                warning = Some((
                    template_field.to_string(),
                    format!("{e}; ignored: the key or the default is used, as upstream does"),
                ));
                None
            }
            Err(e) => return Err((template_field.to_string(), e)),
        };
        let op = match spec.operation.as_deref().unwrap_or("") {
            "" | "overwrite" => Operation::Overwrite,
            "append" => Operation::Append,
            "prepend" => Operation::Prepend,
            other => {
                return Err((
                    "operation".into(),
                    format!("`{other}` (use overwrite, append, prepend)"),
                ))
            }
        };
        let dest = parse_dest(&spec.dest).map_err(|e| ("dest".to_string(), e))?;
        Ok(Param {
            dependency: s.dependency_name.clone(),
            from_data,
            key,
            template,
            value: s.value.clone(),
            raw: s.use_raw_data,
            dest,
            dest_text: spec.dest.clone(),
            op,
            warning,
        })
    }

    pub fn dest(&self) -> &str {
        &self.dest_text
    }

    /// Resolves the value from `ev` (the dependency's stored event, absent
    /// on an `||` branch: then the default, or the parameter is skipped).
    fn resolve(&self, ev: Option<&ArgoEvent>) -> Result<Option<(String, Type)>, String> {
        let Some(ev) = ev else {
            return Ok(self.value.clone().map(|v| (v, Type::String)));
        };
        if self.key.is_none() && self.template.is_none() {
            return Ok(Some(match &self.value {
                Some(v) => (v.clone(), Type::String),
                None => (ev.whole(), Type::Json),
            }));
        }
        let input = if self.from_data {
            &ev.data
        } else {
            &ev.context
        };
        if let Some(t) = &self.template {
            if let Ok(out) = t.execute(input) {
                if !out.is_empty() && out != "<no value>" {
                    return Ok(Some((out, Type::String)));
                }
            }
        }
        if let Some(k) = &self.key {
            if let Some(found) = k.get(input) {
                return Ok(Some(match found.as_ref() {
                    Value::String(s) => (s.clone(), Type::String),
                    other => (path::text(other).to_string_if_null(other), Type::Json),
                }));
            }
        }
        match &self.value {
            Some(v) => Ok(Some((v.clone(), Type::String))),
            None => Err(format!(
                "unable to resolve the value from `{}`: {} not found in the event {}",
                self.dependency,
                self.key
                    .as_ref()
                    .map(|k| format!("key `{k}`"))
                    .unwrap_or_else(|| "the template rendered nothing".into()),
                if self.from_data { "data" } else { "context" }
            )),
        }
    }

    /// Resolves and inserts into `target`; `Ok(false)` when skipped.
    pub fn apply(&self, target: &mut Value, ev: Option<&ArgoEvent>) -> Result<bool, String> {
        let Some((text, ty)) = self.resolve(ev)? else {
            return Ok(false);
        };
        let current = get(target, &self.dest).and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        });
        let value = match (self.op, current) {
            (Operation::Append, Some(cur)) => Value::String(cur + &text),
            (Operation::Prepend, Some(cur)) => Value::String(text + &cur),
            _ if self.raw && ty == Type::Json => {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            }
            _ => Value::String(text),
        };
        set(target, &self.dest, value).map_err(|e| format!("dest `{}`: {e}", self.dest_text))?;
        Ok(true)
    }
}

trait NullText {
    fn to_string_if_null(self, v: &Value) -> String;
}

impl NullText for String {
    /// gjson's `String()` of null is empty; upstream then passes `null`.
    fn to_string_if_null(self, v: &Value) -> String {
        if v.is_null() {
            "null".into()
        } else {
            self
        }
    }
}

fn parse_dest(dest: &str) -> Result<Vec<Seg>, String> {
    if dest.is_empty() {
        return Err("empty".into());
    }
    let mut segs = Vec::new();
    let mut cur = String::new();
    let mut chars = dest.chars().peekable();
    let push = |raw: String, segs: &mut Vec<Seg>| {
        if let Some(k) = raw.strip_prefix(':') {
            segs.push(Seg::Key(k.to_string()));
        } else if raw == "-1" {
            segs.push(Seg::Append);
        } else if let Ok(i) = raw.parse::<usize>() {
            segs.push(Seg::Index(i));
        } else {
            segs.push(Seg::Key(raw));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '.' => push(std::mem::take(&mut cur), &mut segs),
            c => cur.push(c),
        }
    }
    push(cur, &mut segs);
    Ok(segs)
}

fn get<'a>(v: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    let mut cur = v;
    for s in path {
        cur = match (s, cur) {
            (Seg::Key(k), Value::Object(m)) => m.get(k)?,
            (Seg::Index(i), Value::Array(a)) => a.get(*i)?,
            (Seg::Index(i), Value::Object(m)) => m.get(&i.to_string())?,
            _ => return None,
        };
    }
    Some(cur)
}

fn set(v: &mut Value, path: &[Seg], value: Value) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        *v = value;
        return Ok(());
    };
    if v.is_null() {
        *v = match first {
            Seg::Key(_) => Value::Object(Map::new()),
            _ => Value::Array(Vec::new()),
        };
    }
    let slot: &mut Value = match (first, v) {
        (Seg::Key(k), Value::Object(m)) => m.entry(k.clone()).or_insert(Value::Null),
        (Seg::Index(i), Value::Object(m)) => m.entry(i.to_string()).or_insert(Value::Null),
        (Seg::Index(i), Value::Array(a)) => {
            while a.len() <= *i {
                a.push(Value::Null);
            }
            &mut a[*i]
        }
        (Seg::Append, Value::Array(a)) => {
            a.push(Value::Null);
            a.last_mut().expect("just pushed")
        }
        (_, other) => return Err(format!("cannot walk through {}", kind(other))),
    };
    set(slot, rest, value)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a bool",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
        Value::Null => "null",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn param(yaml: &str) -> Param {
        Param::compile(&serde_yaml_ng::from_str(yaml).unwrap()).unwrap()
    }

    fn ev() -> ArgoEvent {
        ArgoEvent {
            context: json!({"id": "1", "source": "github", "subject": "example", "type": "github"}),
            data: json!({"body": {"pull_request": {"number": 2, "title": "Update", "head": {"sha": "ec26c3e57ca3"}}, "n": 51.0, "ok": true}}),
        }
    }

    #[test]
    fn resolves_and_inserts_as_upstream() {
        let mut wf = json!({"metadata": {"generateName": "github-"}, "spec": {"arguments": {"parameters": [{"name": "a"}, {"name": "b"}]}}});
        param("{src: {dependencyName: d, dataKey: body.pull_request.title}, dest: spec.arguments.parameters.0.value}")
            .apply(&mut wf, Some(&ev()))
            .unwrap();
        param("{src: {dependencyName: d, dataKey: body.pull_request.number}, dest: spec.arguments.parameters.1.value}")
            .apply(&mut wf, Some(&ev()))
            .unwrap();
        assert_eq!(wf["spec"]["arguments"]["parameters"][0]["value"], "Update");
        assert_eq!(wf["spec"]["arguments"]["parameters"][1]["value"], "2");
        // append on an absent dest just sets it (github.yaml's comment is wrong).
        param("{src: {dependencyName: d, dataTemplate: '{{ .Input.body.pull_request.number }}-{{ .Input.body.pull_request.head.sha | substr 0 7 }}'}, dest: metadata.name, operation: append}")
            .apply(&mut wf, Some(&ev()))
            .unwrap();
        assert_eq!(wf["metadata"]["name"], "2-ec26c3e");
        // prepend / append on an existing value.
        param(
            "{src: {dependencyName: d, value: x-}, dest: metadata.generateName, operation: append}",
        )
        .apply(&mut wf, None)
        .unwrap();
        assert_eq!(wf["metadata"]["generateName"], "github-x-");
        // numbers print like gjson; objects as JSON text; useRawData keeps types.
        let mut o = json!({});
        param("{src: {dependencyName: d, dataKey: body.n}, dest: a}")
            .apply(&mut o, Some(&ev()))
            .unwrap();
        param("{src: {dependencyName: d, dataKey: body.ok, useRawData: true}, dest: b}")
            .apply(&mut o, Some(&ev()))
            .unwrap();
        param("{src: {dependencyName: d, dataKey: body.pull_request.head}, dest: c.-1}")
            .apply(&mut o, Some(&ev()))
            .unwrap();
        assert_eq!(
            o,
            json!({"a": "51", "b": true, "c": ["{\"sha\":\"ec26c3e57ca3\"}"]})
        );
        // A missing key without a default fails the trigger; with one, the default.
        let e = param("{src: {dependencyName: d, dataKey: name}, dest: x}")
            .apply(&mut o, Some(&ev()))
            .unwrap_err();
        assert!(e.contains("key `name` not found"), "{e}");
        param("{src: {dependencyName: d, dataKey: name, value: dflt}, dest: x}")
            .apply(&mut o, Some(&ev()))
            .unwrap();
        assert_eq!(o["x"], "dflt");
        // An absent dependency (an || branch) skips the parameter.
        assert!(!param("{src: {dependencyName: d, dataKey: name}, dest: y}")
            .apply(&mut o, None)
            .unwrap());
        // The whole event: context plus base64 data.
        param("{src: {dependencyName: d}, dest: w}")
            .apply(&mut o, Some(&ev()))
            .unwrap();
        let whole: Value = serde_json::from_str(o["w"].as_str().unwrap()).unwrap();
        assert_eq!(whole["context"]["source"], "github");
        assert!(whole["data"].is_string());
        // `:N` forces an object key.
        let mut m = json!({});
        param("{src: {dependencyName: d, value: v}, dest: 'labels.:1'}")
            .apply(&mut m, None)
            .unwrap();
        assert_eq!(m, json!({"labels": {"1": "v"}}));
    }

    /// Upstream's `TestResolveParamValue` and `TestApplyParams`
    /// (`pkg/sensors/triggers/params_test.go`), case by case.
    #[test]
    fn upstream_params_test_tables() {
        let ev = ArgoEvent {
            context: json!({"datacontenttype": "application/json", "subject": "example-1",
                "source": "webhook-gateway", "type": "webhook", "id": "1"}),
            data: json!({"name": {"first": "fake", "last": "user"}, "reviews": 8, "rating": 4.5,
                "isActive": true, "isVerified": false, "countries": ["ca", "us", "mx"], "age": 100}),
        };
        // TestResolveParamValue: (name, src, result).
        let resolve: &[(&str, &str, &str)] = &[
            ("get first name", "{dependencyName: d, dataKey: name.first}", "fake"),
            ("get the event subject", "{dependencyName: d, contextKey: subject}", "example-1"),
            ("get the default value", "{dependencyName: d, value: hello}", "hello"),
            ("data key has preference over context key", "{dependencyName: d, contextKey: subject, dataKey: name.first}", "fake"),
            ("get first name with template", "{dependencyName: d, dataTemplate: '{{ .Input.name.first }}'}", "fake"),
            ("get capitalized first name with template", "{dependencyName: d, dataTemplate: '{{ upper .Input.name.first }}'}", "FAKE"),
            ("get subject with template", "{dependencyName: d, contextTemplate: '{{ .Input.subject }}'}", "example-1"),
            ("get formatted subject with template", "{dependencyName: d, contextTemplate: '{{ .Input.subject | replace \"-\" \"_\" }}'}", "example_1"),
            ("data template has preference over context template", "{dependencyName: d, contextTemplate: '{{ .Input.subject }}', dataTemplate: '{{ .Input.name.first }}'}", "fake"),
            ("data template fails over to data key", "{dependencyName: d, dataTemplate: '{{ .Input.name.non_exist }}', dataKey: name.first}", "fake"),
            ("invalid template fails over to data key", "{dependencyName: d, dataTemplate: '{{ no }}', dataKey: name.first}", "fake"),
            ("UseRawData set to true - string", "{dependencyName: d, dataKey: name.first, useRawData: true}", "fake"),
        ];
        for (name, src, want) in resolve {
            let p = param(&format!("{{src: {src}, dest: x}}"));
            let mut o = json!({});
            p.apply(&mut o, Some(&ev)).unwrap();
            assert_eq!(o["x"], *want, "{name}");
        }
        // The invalid template is a warning naming its field, not a load error.
        let p = param(
            "{src: {dependencyName: d, dataTemplate: '{{ no }}', dataKey: name.first}, dest: x}",
        );
        assert_eq!(
            p.warning.as_ref().map(|w| w.0.as_str()),
            Some("src.dataTemplate")
        );
        // …and with nothing to fall back to it is one.
        let spec = serde_yaml_ng::from_str(
            "{src: {dependencyName: d, dataTemplate: '{{ no }}'}, dest: x}",
        )
        .unwrap();
        assert_eq!(Param::compile(&spec).unwrap_err().0, "src.dataTemplate");
        // A sprig function tripline lacks is tripline's limit, not upstream's
        // fallback: a load error even with a key to fall back to.
        let spec = serde_yaml_ng::from_str(
            "{src: {dependencyName: d, dataTemplate: '{{ sha256sum .Input.a }}', dataKey: a}, dest: x}",
        )
        .unwrap();
        let e = Param::compile(&spec).unwrap_err();
        assert!(e.1.contains("not available in tripline"), "{e:?}");
        // "UseRawData set to true - json / list": upstream returns gjson's raw
        // text; tripline's events are parsed, so the same JSON, compact.
        for (key, want) in [
            ("name", json!({"first": "fake", "last": "user"})),
            ("countries", json!(["ca", "us", "mx"])),
        ] {
            let mut o = json!({});
            param(&format!(
                "{{src: {{dependencyName: d, dataKey: {key}, useRawData: true}}, dest: x}}"
            ))
            .apply(&mut o, Some(&ev))
            .unwrap();
            assert_eq!(o["x"], want, "{key}");
        }

        // TestApplyParams: (name, params, object, result).
        let apply: &[(&str, &[&str], Value, Value)] = &[
            ("normal apply parameters operation", &["{src: {dependencyName: d, dataKey: name.first}, dest: name}"], json!({"name": "faker"}), json!({"name": "fake"})),
            ("apply parameters with prepend operation", &["{src: {dependencyName: d, dataKey: name.first}, dest: name, operation: prepend}"], json!({"name": "faker"}), json!({"name": "fakefaker"})),
            ("apply parameters with append operation", &["{src: {dependencyName: d, dataKey: name.first}, dest: name, operation: append}"], json!({"name": "faker"}), json!({"name": "fakerfake"})),
            ("apply parameters with overwrite operation", &["{src: {dependencyName: d, dataKey: name.first}, dest: name, operation: overwrite}"], json!({"name": "faker"}), json!({"name": "fake"})),
            ("apply block parameters with overwrite operation - useRawDataValue false", &["{src: {dependencyName: d, dataKey: name}, dest: name, operation: overwrite}"], json!({"name": "faker"}), json!({"name": "{\"first\":\"fake\",\"last\":\"user\"}"})),
            ("apply block parameters with overwrite operation - useRawDataValue true", &["{src: {dependencyName: d, dataKey: name, useRawData: true}, dest: name, operation: overwrite}"], json!({"name": "faker"}), json!({"name": {"first": "fake", "last": "user"}})),
            ("Use raw data types", &[
                "{src: {dependencyName: d, dataKey: age, useRawData: true}, dest: age, operation: overwrite}",
                "{src: {dependencyName: d, dataKey: age, useRawData: true}, dest: ageWithYears, operation: append}",
                "{src: {dependencyName: d, dataKey: countries, useRawData: true}, dest: countries, operation: append}",
            ], json!({"age": "this-gets-over-written", "ageWithYears": "Years: "}), json!({"age": 100, "ageWithYears": "Years: 100", "countries": ["ca", "us", "mx"]})),
        ];
        for (name, params, object, want) in apply {
            let mut o = object.clone();
            for p in *params {
                param(p).apply(&mut o, Some(&ev)).unwrap();
            }
            assert_eq!(&o, want, "{name}");
        }

        // TestConstructPayload: typed with useRawData, text without; an
        // unknown key falls back to the default.
        let mut o = json!({});
        for p in [
            "{src: {dependencyName: d, dataKey: unknown, value: faker}, dest: firstName}",
            "{src: {dependencyName: d, dataKey: age, useRawData: true}, dest: age}",
            "{src: {dependencyName: d, dataKey: isActive, useRawData: true}, dest: isActive}",
            "{src: {dependencyName: d, dataKey: age}, dest: typelessAge}",
            "{src: {dependencyName: d, dataKey: isVerified}, dest: typelessIsActive}",
        ] {
            param(p).apply(&mut o, Some(&ev)).unwrap();
        }
        assert_eq!(
            o,
            json!({"firstName": "faker", "age": 100, "isActive": true, "typelessAge": "100", "typelessIsActive": "false"})
        );
    }
}
