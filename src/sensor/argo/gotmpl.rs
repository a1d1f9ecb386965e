//! A subset of Go's text/template with a subset of sprig, as Argo's
//! `dataTemplate`, `contextTemplate` and filter `template` use them:
//! text with `{{ pipeline }}` actions (`{{-`/`-}}` trim), where a pipeline
//! is a command followed by `| command`s; a command is `.Input.a.b`, a
//! literal, or a function with arguments (the piped value comes last).
//! Not supported (a load error says so): `if`/`range`/`with`, variables,
//! `printf`, and functions outside the list in [`FUNCTIONS`].
//!
//! Longer than most files: lexer, pipeline evaluation and the sprig
//! functions are one unit; about 70 lines are unit tests.

use base64::Engine as _;
use serde_json::Value;

/// Every function Go's text/template and sprig define: a template calling
/// one tripline lacks is tripline's limitation (a load error); calling
/// anything else is a template upstream cannot parse either.
const GO_AND_SPRIG: &[&str] = &[
    "and",
    "call",
    "html",
    "index",
    "slice",
    "js",
    "len",
    "not",
    "or",
    "print",
    "printf",
    "println",
    "urlquery",
    "eq",
    "ge",
    "gt",
    "le",
    "lt",
    "ne",
    "hello",
    "ago",
    "date",
    "date_in_zone",
    "date_modify",
    "dateInZone",
    "dateModify",
    "duration",
    "durationRound",
    "htmlDate",
    "htmlDateInZone",
    "must_date_modify",
    "mustDateModify",
    "mustToDate",
    "now",
    "toDate",
    "unixEpoch",
    "abbrev",
    "abbrevboth",
    "trunc",
    "trim",
    "upper",
    "lower",
    "title",
    "untitle",
    "substr",
    "repeat",
    "trimall",
    "trimAll",
    "trimSuffix",
    "trimPrefix",
    "nospace",
    "initials",
    "randAlphaNum",
    "randAlpha",
    "randAscii",
    "randNumeric",
    "swapcase",
    "shuffle",
    "snakecase",
    "camelcase",
    "kebabcase",
    "wrap",
    "wrapWith",
    "contains",
    "hasPrefix",
    "hasSuffix",
    "quote",
    "squote",
    "cat",
    "indent",
    "nindent",
    "replace",
    "plural",
    "sha1sum",
    "sha256sum",
    "adler32sum",
    "toString",
    "atoi",
    "int64",
    "int",
    "float64",
    "seq",
    "toDecimal",
    "split",
    "splitList",
    "splitn",
    "toStrings",
    "until",
    "untilStep",
    "add1",
    "add",
    "sub",
    "div",
    "mod",
    "mul",
    "randInt",
    "add1f",
    "addf",
    "subf",
    "divf",
    "mulf",
    "biggest",
    "max",
    "min",
    "maxf",
    "minf",
    "ceil",
    "floor",
    "round",
    "join",
    "sortAlpha",
    "default",
    "empty",
    "coalesce",
    "all",
    "any",
    "compact",
    "mustCompact",
    "fromJson",
    "toJson",
    "toPrettyJson",
    "toRawJson",
    "mustFromJson",
    "mustToJson",
    "mustToPrettyJson",
    "mustToRawJson",
    "ternary",
    "deepCopy",
    "mustDeepCopy",
    "typeOf",
    "typeIs",
    "typeIsLike",
    "kindOf",
    "kindIs",
    "deepEqual",
    "env",
    "expandenv",
    "getHostByName",
    "base",
    "dir",
    "clean",
    "ext",
    "isAbs",
    "osBase",
    "osClean",
    "osDir",
    "osExt",
    "osIsAbs",
    "b64enc",
    "b64dec",
    "b32enc",
    "b32dec",
    "tuple",
    "list",
    "dict",
    "get",
    "set",
    "unset",
    "hasKey",
    "pluck",
    "keys",
    "pick",
    "omit",
    "merge",
    "mergeOverwrite",
    "mustMerge",
    "mustMergeOverwrite",
    "values",
    "append",
    "push",
    "mustAppend",
    "mustPush",
    "prepend",
    "mustPrepend",
    "first",
    "mustFirst",
    "rest",
    "mustRest",
    "last",
    "mustLast",
    "initial",
    "mustInitial",
    "reverse",
    "mustReverse",
    "uniq",
    "mustUniq",
    "without",
    "mustWithout",
    "has",
    "mustHas",
    "mustSlice",
    "concat",
    "dig",
    "chunk",
    "mustChunk",
    "bcrypt",
    "htpasswd",
    "genPrivateKey",
    "derivePassword",
    "buildCustomCert",
    "genCA",
    "genCAWithKey",
    "genSelfSignedCert",
    "genSelfSignedCertWithKey",
    "genSignedCert",
    "genSignedCertWithKey",
    "encryptAES",
    "decryptAES",
    "randBytes",
    "uuidv4",
    "semver",
    "semverCompare",
    "fail",
    "regexMatch",
    "mustRegexMatch",
    "regexFindAll",
    "mustRegexFindAll",
    "regexFind",
    "mustRegexFind",
    "regexReplaceAll",
    "mustRegexReplaceAll",
    "regexReplaceAllLiteral",
    "mustRegexReplaceAllLiteral",
    "regexSplit",
    "mustRegexSplit",
    "regexQuoteMeta",
    "urlParse",
    "urlJoin",
];

/// The functions available (sprig names).
pub const FUNCTIONS: [&str; 22] = [
    "substr",
    "title",
    "nospace",
    "lower",
    "upper",
    "trim",
    "trimPrefix",
    "trimSuffix",
    "replace",
    "contains",
    "hasPrefix",
    "hasSuffix",
    "default",
    "b64enc",
    "b64dec",
    "toJson",
    "quote",
    "trunc",
    "add",
    "sub",
    "len",
    "print",
];

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Action(Vec<Command>),
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Field(Vec<String>),
    Str(String),
    Num(f64),
}

#[derive(Debug, Clone, PartialEq)]
enum Command {
    Arg(Arg),
    Call(String, Vec<Arg>),
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Piece>);

impl Template {
    pub fn parse(src: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = src;
        while let Some(start) = rest.find("{{") {
            let mut text = rest[..start].to_string();
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or("an action `{{` is not closed by `}}`")?;
            let mut action = &after[..end];
            rest = &after[end + 2..];
            if let Some(a) = action.strip_prefix('-') {
                text = text.trim_end().to_string();
                action = a;
            }
            if let Some(a) = action.strip_suffix('-') {
                rest = rest.trim_start();
                action = a;
            }
            if !text.is_empty() {
                pieces.push(Piece::Text(text));
            }
            pieces.push(Piece::Action(parse_pipeline(action.trim())?));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template(pieces))
    }

    /// Executes with `.Input` = `input`. A field that does not exist prints
    /// `<no value>`, as Go does with a map.
    pub fn execute(&self, input: &Value) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Action(cmds) => out.push_str(&print(&run(cmds, input)?)),
            }
        }
        Ok(out)
    }
}

fn tokens(src: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = src.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '|' {
            chars.next();
            out.push("|".into());
        } else if c == '"' || c == '`' {
            chars.next();
            let mut s = String::from('"');
            loop {
                match chars.next() {
                    None => return Err("a string literal is not closed".into()),
                    Some('\\') if c == '"' => {
                        let n = chars.next().ok_or("bad escape")?;
                        s.push(match n {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                    }
                    Some(x) if x == c => break,
                    Some(x) => s.push(x),
                }
            }
            out.push(s);
        } else if c == '(' || c == ')' {
            return Err("parenthesised pipelines are not supported by tripline yet".into());
        } else {
            let mut w = String::new();
            while let Some(&x) = chars.peek() {
                if x.is_whitespace() || x == '|' {
                    break;
                }
                w.push(x);
                chars.next();
            }
            out.push(w);
        }
    }
    Ok(out)
}

fn parse_arg(t: &str) -> Result<Arg, String> {
    if let Some(s) = t.strip_prefix('"') {
        return Ok(Arg::Str(s.to_string()));
    }
    if let Some(field) = t.strip_prefix('.') {
        let parts: Vec<String> = if field.is_empty() {
            Vec::new()
        } else {
            field.split('.').map(str::to_string).collect()
        };
        return Ok(Arg::Field(parts));
    }
    if let Ok(n) = t.parse::<f64>() {
        return Ok(Arg::Num(n));
    }
    if t.starts_with('$') {
        return Err(format!(
            "`{t}`: template variables are not supported by tripline yet"
        ));
    }
    Err(format!(
        "`{t}` is not a field (`.Input…`), a literal or a known function"
    ))
}

fn parse_pipeline(src: &str) -> Result<Vec<Command>, String> {
    let toks = tokens(src)?;
    if let Some(first) = toks.first() {
        if [
            "if", "range", "with", "else", "end", "define", "template", "block",
        ]
        .contains(&first.as_str())
        {
            return Err(format!(
                "`{first}` actions are not supported by tripline yet"
            ));
        }
    }
    let mut cmds = Vec::new();
    for group in toks.split(|t| t == "|") {
        let Some((head, args)) = group.split_first() else {
            return Err("an empty command in a pipeline".into());
        };
        if head.starts_with('.') || head.starts_with('"') || head.parse::<f64>().is_ok() {
            if !args.is_empty() {
                return Err(format!("`{head}` is not a function"));
            }
            cmds.push(Command::Arg(parse_arg(head)?));
        } else if FUNCTIONS.contains(&head.as_str()) {
            let args = args
                .iter()
                .map(|a| parse_arg(a))
                .collect::<Result<_, _>>()?;
            cmds.push(Command::Call(head.clone(), args));
        } else if GO_AND_SPRIG.contains(&head.as_str()) {
            return Err(format!(
                "function `{head}` is not available in tripline (available: {})",
                FUNCTIONS.join(", ")
            ));
        } else {
            // Go's own wording.
            return Err(format!("function \"{head}\" not defined"));
        }
    }
    Ok(cmds)
}

fn eval_arg(a: &Arg, input: &Value) -> Value {
    match a {
        Arg::Str(s) => Value::String(s.clone()),
        Arg::Num(n) => serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number),
        Arg::Field(parts) => {
            // `.Input` is the root; anything else (`.Foo`) is absent.
            let Some((first, rest)) = parts.split_first() else {
                return Value::Null;
            };
            if first != "Input" {
                return Value::Null;
            }
            let mut cur = input;
            for p in rest {
                cur = match cur {
                    Value::Object(m) => match m.get(p) {
                        Some(v) => v,
                        None => return Value::Null,
                    },
                    _ => return Value::Null,
                };
            }
            cur.clone()
        }
    }
}

fn run(cmds: &[Command], input: &Value) -> Result<Value, String> {
    let mut piped: Option<Value> = None;
    for c in cmds {
        piped = Some(match c {
            Command::Arg(a) => eval_arg(a, input),
            Command::Call(f, args) => {
                let mut vals: Vec<Value> = args.iter().map(|a| eval_arg(a, input)).collect();
                if let Some(p) = piped.take() {
                    vals.push(p);
                }
                call(f, &vals)?
            }
        });
    }
    Ok(piped.unwrap_or(Value::Null))
}

/// Go's `%v` of a decoded JSON value (numbers are float64).
pub fn print(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_float(n.as_f64().unwrap_or(0.0)),
        Value::Array(a) => format!("[{}]", a.iter().map(print).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", print(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// `strconv.FormatFloat(f, 'g', -1, 64)`: `2`, `1.5`, `1e+06`.
pub fn go_float(f: f64) -> String {
    if f == 0.0 {
        return "0".into();
    }
    // Shortest form; the exponent form when the exponent is < -4 or >= 6.
    let exp: i32 = format!("{f:e}")
        .split_once('e')
        .and_then(|(_, e)| e.parse().ok())
        .unwrap_or(0);
    if !(-4..6).contains(&exp) {
        sci(f)
    } else {
        format!("{f}")
    }
}

fn sci(f: f64) -> String {
    let s = format!("{f:e}");
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    format!("{mant}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => print(other),
    }
}

fn as_int(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => Ok(n.as_f64().unwrap_or(0.0) as i64),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a number")),
        _ => Ok(0),
    }
}

/// Go's `base64.StdEncoding.DecodeString` (what sprig's `b64dec` calls):
/// padding required, CR/LF ignored, trailing bits not checked; `Err` is the
/// offset Go's `CorruptInputError` reports.
fn go_base64_decode(src: &[u8]) -> Result<Vec<u8>, usize> {
    let sextet = |c: u8| -> Option<u32> {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        Some(u32::from(v))
    };
    let newline = |c: u8| c == b'\n' || c == b'\r';
    let mut out = Vec::with_capacity(src.len() / 4 * 3);
    let mut si = 0;
    loop {
        let (mut quantum, mut j, mut len) = ([0u32; 4], 0, 4);
        let mut trailing = None;
        while j < 4 {
            let Some(&c) = src.get(si) else {
                if j == 0 {
                    return Ok(out);
                }
                return Err(si - j);
            };
            si += 1;
            if let Some(v) = sextet(c) {
                quantum[j] = v;
                j += 1;
                continue;
            }
            if newline(c) {
                continue;
            }
            if c != b'=' || j < 2 {
                return Err(si - 1);
            }
            if j == 2 {
                while src.get(si).is_some_and(|c| newline(*c)) {
                    si += 1;
                }
                match src.get(si) {
                    None => return Err(src.len()),
                    Some(b'=') => si += 1,
                    Some(_) => return Err(si - 1),
                }
            }
            while src.get(si).is_some_and(|c| newline(*c)) {
                si += 1;
            }
            if si < src.len() {
                trailing = Some(si);
            }
            len = j;
            break;
        }
        let v = quantum[0] << 18 | quantum[1] << 12 | quantum[2] << 6 | quantum[3];
        out.extend_from_slice(&[(v >> 16) as u8, (v >> 8) as u8, v as u8][..len - 1]);
        if let Some(at) = trailing {
            return Err(at);
        }
    }
}

fn call(f: &str, a: &[Value]) -> Result<Value, String> {
    let need = |n: usize| {
        if a.len() == n {
            Ok(())
        } else {
            Err(format!("`{f}` takes {n} argument(s), got {}", a.len()))
        }
    };
    let s = |i: usize| as_text(&a[i]);
    let text = |t: String| Ok(Value::String(t));
    match f {
        "substr" => {
            need(3)?;
            let chars: Vec<char> = s(2).chars().collect();
            let (start, end) = (as_int(&a[0])?, as_int(&a[1])?);
            // sprig: start < 0 → 0; end < 0 or past the end → the end.
            let start = start.max(0) as usize;
            let end = if end < 0 || end as usize > chars.len() {
                chars.len()
            } else {
                end as usize
            };
            text(
                chars
                    .get(start.min(end)..end)
                    .map(|c| c.iter().collect())
                    .unwrap_or_default(),
            )
        }
        "title" => {
            need(1)?;
            text(
                s(0).split(' ')
                    .map(|w| {
                        let mut c = w.chars();
                        c.next()
                            .map(|x| x.to_uppercase().collect::<String>() + c.as_str())
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        }
        "nospace" => {
            need(1)?;
            text(s(0).chars().filter(|c| !c.is_whitespace()).collect())
        }
        "lower" => {
            need(1)?;
            text(s(0).to_lowercase())
        }
        "upper" => {
            need(1)?;
            text(s(0).to_uppercase())
        }
        "trim" => {
            need(1)?;
            text(s(0).trim().to_string())
        }
        "trimPrefix" => {
            need(2)?;
            text(
                s(1).strip_prefix(&s(0))
                    .map(str::to_string)
                    .unwrap_or_else(|| s(1)),
            )
        }
        "trimSuffix" => {
            need(2)?;
            text(
                s(1).strip_suffix(&s(0))
                    .map(str::to_string)
                    .unwrap_or_else(|| s(1)),
            )
        }
        "replace" => {
            need(3)?;
            text(s(2).replace(&s(0), &s(1)))
        }
        "contains" => {
            need(2)?;
            Ok(Value::Bool(s(1).contains(&s(0))))
        }
        "hasPrefix" => {
            need(2)?;
            Ok(Value::Bool(s(1).starts_with(&s(0))))
        }
        "hasSuffix" => {
            need(2)?;
            Ok(Value::Bool(s(1).ends_with(&s(0))))
        }
        "default" => {
            need(2)?;
            let empty = matches!(&a[1], Value::Null | Value::Bool(false))
                || a[1].as_str() == Some("")
                || a[1].as_f64() == Some(0.0);
            Ok(if empty { a[0].clone() } else { a[1].clone() })
        }
        "b64enc" => {
            need(1)?;
            text(base64::engine::general_purpose::STANDARD.encode(s(0)))
        }
        "b64dec" => {
            need(1)?;
            // sprig returns Go's error text in place of bad input.
            text(match go_base64_decode(s(0).as_bytes()) {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(at) => format!("illegal base64 data at input byte {at}"),
            })
        }
        "toJson" => {
            need(1)?;
            text(a[0].to_string())
        }
        "quote" => {
            need(1)?;
            text(format!("{:?}", s(0)))
        }
        "trunc" => {
            need(2)?;
            let n = as_int(&a[0])?;
            let chars: Vec<char> = s(1).chars().collect();
            let out: String = if n >= 0 {
                chars.iter().take(n as usize).collect()
            } else {
                chars
                    .iter()
                    .skip(chars.len().saturating_sub(n.unsigned_abs() as usize))
                    .collect()
            };
            text(out)
        }
        "add" => Ok(Value::from(a.iter().map(as_int).sum::<Result<i64, _>>()?)),
        "sub" => {
            need(2)?;
            Ok(Value::from(as_int(&a[0])? - as_int(&a[1])?))
        }
        "len" => {
            need(1)?;
            Ok(Value::from(match &a[0] {
                Value::String(x) => x.chars().count(),
                Value::Array(x) => x.len(),
                Value::Object(x) => x.len(),
                _ => 0,
            }))
        }
        "print" => text(a.iter().map(as_text).collect::<Vec<_>>().join("")),
        other => Err(format!("function `{other}` is not available")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(src: &str, input: Value) -> String {
        Template::parse(src).unwrap().execute(&input).unwrap()
    }

    #[test]
    fn the_upstream_examples_render() {
        let input = json!({"body": {"pull_request": {"number": 2, "head": {"sha": "ec26c3e57ca3a959ca5aad62de7213c562f8c821"}}, "name": "John Doe", "n": 1000000}});
        assert_eq!(
            run(
                "{{ .Input.body.pull_request.head.sha | substr 0 7 }}",
                input.clone()
            ),
            "ec26c3e"
        );
        assert_eq!(
            run("{{ .Input.body.pull_request.number }}-{{ .Input.body.pull_request.head.sha | substr 0 7 }}", input.clone()),
            "2-ec26c3e"
        );
        assert_eq!(
            run("{{ .Input.body.name | nospace | lower }}-", input.clone()),
            "johndoe-"
        );
        assert_eq!(
            run(
                "{{ .Input.body.name | title }}",
                json!({"body": {"name": "hello world"}})
            ),
            "Hello World"
        );
        assert_eq!(run("{{ .Input.body.n }}", input.clone()), "1e+06");
        assert_eq!(
            run("{{ .Input.body.missing }}", input.clone()),
            "<no value>"
        );
        assert_eq!(run("{{- \" a \" | trim -}} x", json!({})), "ax");
        assert_eq!(run("{{ b64dec .Input }}", json!("aGVsbG8=")), "hello");
        // sprig: bad input renders Go's error text; Go's decoder details.
        assert_eq!(
            run("{{ b64dec .Input }}", json!("aGVsbG8gd29ybGQ")),
            "illegal base64 data at input byte 12"
        );
        assert_eq!(
            run("{{ b64dec .Input }}", json!("aGVs*G8=")),
            "illegal base64 data at input byte 4"
        );
        assert_eq!(
            run("{{ b64dec .Input }}", json!("aGVsbG8=x")),
            "illegal base64 data at input byte 8"
        );
        assert_eq!(run("{{ b64dec .Input }}", json!("aGVs\nbG8=")), "hello");
        assert_eq!(
            run("{{ b64dec .Input }}", json!("YR==")),
            "a",
            "trailing bits"
        );
        assert_eq!(run("{{ b64dec .Input }}", json!("")), "");
        assert_eq!(run("{{ b64dec .Input }}", json!("aGk=")), "hi");
        assert!(Template::parse("{{ if .Input }}x{{ end }}")
            .unwrap_err()
            .contains("not supported"));
        // Not in sprig: Go's own error. In sprig but not here: tripline's.
        assert_eq!(
            Template::parse("{{ .Input | truncate 3 }}").unwrap_err(),
            "function \"truncate\" not defined"
        );
        assert!(Template::parse("{{ .Input | sha256sum }}")
            .unwrap_err()
            .contains("not available in tripline"));
        assert_eq!(go_float(2.0), "2");
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(1.5), "1.5");
        assert_eq!(go_float(1234567.0), "1.234567e+06");
    }
}
