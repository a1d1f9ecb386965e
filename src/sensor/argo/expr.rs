//! govaluate, the expression language of Argo `filters.exprs` (ARGO-COMPAT
//! §4.2), as upstream pins it (`Knetic/govaluate` @ 9aa4983, Oct 2017):
//! compiled once at load, evaluated per event over `serde_json` values.
//!
//! * Literals: numbers (always float64; `0x1F` hex), strings in `"…"` or
//!   `'…'` (either quote ends either; `\` escapes any character), `true`,
//!   `false`. A string literal that parses as a date in one of govaluate's
//!   layouts (`2006-01-02`, `2006-01-02 15:04:05`, RFC 3339, ANSIC, …) is a
//!   float64 Unix time — govaluate's quirk, kept: `t > '2026-01-01'` compares
//!   numbers. Layouts without a zone read as UTC (upstream: the sensor pod's
//!   local zone, UTC in its image).
//! * Variables: a letter, then letters, digits, `_`; `\` escapes a
//!   character (`response\-time`); `[any name]` for the rest.
//! * Operators, loosest first: `,` (lists); `?` `:` `??` (one level, left to
//!   right: `a ? b : c` is `(a ? b) : c`, where `x ? y` is `y` or null and
//!   `x : y`/`x ?? y` is `x` unless it is null); `||`; `&&`; `==` `!=` `>`
//!   `<` `>=` `<=` `=~` `!~` `in`; `&` `|` `^`; `<<` `>>`; `+` `-`; `*` `/`
//!   `%`; `**`; prefixes `-` `!` `~`; parentheses. Every level is left
//!   associative. `&&`, `||`, `?`, `:`, `??` short-circuit.
//! * Semantics: `==`/`!=` compare values deeply (`10 == 10.0`; arrays and
//!   objects too); `<`… need two numbers or two strings; `+` concatenates
//!   (Go's `%v` text) when either side is a string; `=~`/`!~` are unanchored
//!   RE2 searches (the `regex` crate), compiled at load when the pattern is
//!   a literal; `in` needs a list on the right: `x in (1, 2)` or a variable
//!   holding an array; bitwise operators work on int64 (shifts on uint64).
//!   A type mismatch or an unbound variable is an evaluation error.
//!
//! Refused at load although govaluate accepts them, because they can never
//! do what they look like: a dotted name (`a.b`: govaluate reads it as a Go
//! struct field access, which fails on event data — write `[a.b]`); a
//! missing operand before `)` (`(a ==)`: govaluate compares with null); and
//! anything after a complete expression that ends with `)`, which govaluate
//! silently drops. No functions exist (Argo registers none).
//!
//! Longer than most files: the lexer, parser and evaluator of one small
//! language belong together; about 600 of its lines are unit tests, most
//! of them upstream's `filter_expr_test` table and govaluate's own quirks,
//! kept beside the code they pin down.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use regex::Regex;
use serde_json::Value;

/// A compiled expression.
#[derive(Debug, Clone)]
pub struct Expr {
    src: String,
    root: Node,
}

impl Expr {
    /// Compiles `src`; `Err` says why it does not parse.
    pub fn parse(src: &str) -> Result<Expr, String> {
        let tokens = lex(src)?;
        check_syntax(&tokens)?;
        let mut p = Parser { tokens, pos: 0 };
        let root = p.level(0)?;
        if let Some(t) = p.tokens.get(p.pos) {
            return Err(format!(
                "unexpected {} after `)` (govaluate would silently ignore the rest of the expression)",
                t.describe()
            ));
        }
        Ok(Expr {
            src: src.to_string(),
            root,
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.src
    }

    /// Evaluates with `vars` bound. JSON numbers are float64; a result that
    /// is not a finite number (`1 / 0`) is an error, as JSON cannot hold it.
    pub fn eval(&self, vars: &HashMap<String, Value>) -> Result<Value, String> {
        to_json(&eval(&self.root, vars)?)
    }

    /// Evaluates for a filter: `true` only for the boolean `true` (Argo's
    /// `result == true`), with the result in Go's `%v` text.
    pub fn truth(&self, vars: &HashMap<String, Value>) -> Result<(bool, String), String> {
        let v = eval(&self.root, vars)?;
        Ok((matches!(v, Val::Bool(true)), go_text(&v)))
    }
}

impl std::fmt::Display for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.src)
    }
}

// ---------------------------------------------------------------- values

#[derive(Debug, Clone)]
enum Val {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Val>),
    Obj(BTreeMap<String, Val>),
    /// A literal pattern right of `=~`/`!~`, compiled at load.
    Re(Arc<Regex>),
}

fn from_json(v: &Value) -> Val {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => Val::Num(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Val::Str(s.clone()),
        Value::Array(a) => Val::Arr(a.iter().map(from_json).collect()),
        Value::Object(m) => Val::Obj(m.iter().map(|(k, v)| (k.clone(), from_json(v))).collect()),
    }
}

fn to_json(v: &Val) -> Result<Value, String> {
    Ok(match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| format!("the result {} is not a finite number", go_float(*f)))?,
        Val::Str(s) => Value::String(s.clone()),
        Val::Re(r) => Value::String(r.as_str().to_string()),
        Val::Arr(a) => Value::Array(a.iter().map(to_json).collect::<Result<_, _>>()?),
        Val::Obj(m) => Value::Object(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// Go's `fmt` `%v` of the value (string concatenation, messages).
fn go_text(v: &Val) -> String {
    match v {
        Val::Null => "<nil>".into(),
        Val::Bool(b) => b.to_string(),
        Val::Num(f) => go_float(*f),
        Val::Str(s) => s.clone(),
        Val::Re(r) => r.as_str().to_string(),
        Val::Arr(a) => format!("[{}]", a.iter().map(go_text).collect::<Vec<_>>().join(" ")),
        Val::Obj(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", go_text(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// Go's `%v` of a float64: shortest digits, exponent form when the
/// exponent is below -4 or at least 6 (`1e+06`, `1.5e-05`).
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = sign.to_string();
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if exp < 0 {
        out.push_str("0.");
        out.push_str(&"0".repeat((-exp - 1) as usize));
        out.push_str(&digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            out.push_str(&"0".repeat(int_len - digits.len()));
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

fn type_name(v: &Val) -> &'static str {
    match v {
        Val::Null => "null",
        Val::Bool(_) => "bool",
        Val::Num(_) => "number",
        Val::Str(_) => "string",
        Val::Arr(_) => "array",
        Val::Obj(_) => "object",
        Val::Re(_) => "pattern",
    }
}

/// `reflect.DeepEqual` over the values govaluate sees.
fn deep_equal(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Null, Val::Null) => true,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Num(x), Val::Num(y)) => x == y,
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Arr(x), Val::Arr(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| deep_equal(a, b))
        }
        (Val::Obj(x), Val::Obj(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| deep_equal(v, w)))
        }
        (Val::Re(x), Val::Re(y)) => Arc::ptr_eq(x, y),
        _ => false,
    }
}

// ---------------------------------------------------------------- lexer

/// govaluate's token kinds (`TokenKind.go`), which drive its syntax check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unknown,
    Prefix,
    Numeric,
    Boolean,
    Str,
    Pattern,
    Time,
    Variable,
    Comparator,
    LogicalOp,
    Modifier,
    Clause,
    ClauseClose,
    Ternary,
    Separator,
}

#[derive(Debug, Clone)]
struct Tok {
    kind: Kind,
    /// The operator, or the variable name.
    text: String,
    /// The literal's value.
    lit: Option<Val>,
}

impl Tok {
    fn op(kind: Kind, text: &str) -> Tok {
        Tok {
            kind,
            text: text.to_string(),
            lit: None,
        }
    }

    fn lit(kind: Kind, v: Val) -> Tok {
        Tok {
            kind,
            text: String::new(),
            lit: Some(v),
        }
    }

    fn describe(&self) -> String {
        match (&self.lit, self.kind) {
            (_, Kind::Clause) => "`(`".into(),
            (_, Kind::ClauseClose) => "`)`".into(),
            (_, Kind::Separator) => "`,`".into(),
            (_, Kind::Variable) => format!("variable `{}`", self.text),
            (Some(Val::Str(s)), _) => format!("string {s:?}"),
            (Some(v), _) => format!("`{}`", go_text(v)),
            (None, _) => format!("`{}`", self.text),
        }
    }
}

/// govaluate's `readUntilFalse`: reads while `cond` holds, `\` escaping any
/// character. Whitespace ends a non-empty token when `break_ws`, else is
/// kept (`include_ws`) or skipped. `Ok((text, true))` when something other
/// than the end of the input stopped it.
fn read_until(
    cs: &[char],
    i: &mut usize,
    include_ws: bool,
    break_ws: bool,
    cond: impl Fn(char) -> bool,
) -> Result<(String, bool), String> {
    let mut buf = String::new();
    while *i < cs.len() {
        let c = cs[*i];
        *i += 1;
        if c == '\\' {
            let escaped = cs
                .get(*i)
                .ok_or("the expression ends with an escaping `\\`")?;
            buf.push(*escaped);
            *i += 1;
            continue;
        }
        if c.is_whitespace() {
            if break_ws && !buf.is_empty() {
                return Ok((buf, true));
            }
            if !include_ws {
                continue;
            }
        }
        if cond(c) {
            buf.push(c);
        } else {
            *i -= 1;
            return Ok((buf, true));
        }
    }
    Ok((buf, false))
}

fn is_quote(c: char) -> bool {
    c == '\'' || c == '"'
}

fn is_symbol_char(c: char) -> bool {
    !(c.is_numeric() || c.is_alphabetic() || "()[]".contains(c) || is_quote(c))
}

const PREFIXES: [&str; 3] = ["-", "!", "~"];
const MODIFIERS: [&str; 11] = ["+", "-", "*", "/", "%", "**", "&", "|", "^", ">>", "<<"];
const LOGICAL: [&str; 2] = ["&&", "||"];
const COMPARATORS: [&str; 9] = ["==", "!=", ">", ">=", "<", "<=", "=~", "!~", "in"];
const TERNARY: [&str; 3] = ["?", ":", "??"];

/// govaluate's `parseTokens` (+ `optimizeTokens`: a string literal right of
/// `=~`/`!~` becomes a compiled pattern).
fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let cs: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut out: Vec<Tok> = Vec::new();
    let mut state = Kind::Unknown;
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let tok = if c.is_ascii_digit() || c == '.' {
            if c == '0' && cs.get(i + 1) == Some(&'x') && i + 2 < cs.len() {
                i += 2;
                let (hex, _) = read_until(&cs, &mut i, false, true, |c| c.is_ascii_hexdigit())?;
                let n = u64::from_str_radix(&hex, 16)
                    .map_err(|_| format!("unable to parse hex value '0x{hex}'"))?;
                Tok::lit(Kind::Numeric, Val::Num(n as f64))
            } else {
                let (text, _) =
                    read_until(&cs, &mut i, false, true, |c| c.is_ascii_digit() || c == '.')?;
                match text.parse::<f64>() {
                    Ok(f) if f.is_finite() => Tok::lit(Kind::Numeric, Val::Num(f)),
                    _ => return Err(format!("unable to parse numeric value '{text}'")),
                }
            }
        } else if c == ',' {
            i += 1;
            Tok::op(Kind::Separator, ",")
        } else if c == '[' {
            i += 1;
            let (name, closed) = read_until(&cs, &mut i, true, false, |c| c != ']')?;
            if !closed {
                return Err("unclosed parameter bracket `[`".into());
            }
            i += 1;
            Tok::op(Kind::Variable, &name)
        } else if c.is_alphabetic() {
            let (name, _) = read_until(&cs, &mut i, false, true, |c| {
                c.is_alphabetic() || c.is_numeric() || c == '_' || c == '.'
            })?;
            match name.as_str() {
                "true" => Tok::lit(Kind::Boolean, Val::Bool(true)),
                "false" => Tok::lit(Kind::Boolean, Val::Bool(false)),
                "in" | "IN" => Tok::op(Kind::Comparator, "in"),
                _ if name.contains('.') => {
                    return Err(format!(
                        "`{name}`: govaluate reads a dotted name as a Go struct field access, which never works on event data; write [{name}]"
                    ))
                }
                _ => Tok::op(Kind::Variable, &name),
            }
        } else if is_quote(c) {
            i += 1;
            let (text, closed) = read_until(&cs, &mut i, true, false, |c| !is_quote(c))?;
            if !closed {
                return Err("unclosed string literal".into());
            }
            i += 1;
            let pattern = state == Kind::Comparator
                && matches!(out.last(), Some(t) if t.text == "=~" || t.text == "!~");
            match go_time(&text) {
                Some(unix) => Tok::lit(Kind::Time, Val::Num(unix)),
                None if pattern => {
                    let re = Regex::new(&text)
                        .map_err(|e| format!("unable to compile regexp pattern '{text}': {e}"))?;
                    Tok::lit(Kind::Pattern, Val::Re(Arc::new(re)))
                }
                None => Tok::lit(Kind::Str, Val::Str(text)),
            }
        } else if c == '(' {
            i += 1;
            Tok::op(Kind::Clause, "(")
        } else if c == ')' {
            i += 1;
            Tok::op(Kind::ClauseClose, ")")
        } else {
            let (sym, _) = read_until(&cs, &mut i, false, true, is_symbol_char)?;
            let s = sym.as_str();
            let kind = if can_follow(state, Kind::Prefix) && PREFIXES.contains(&s) {
                Kind::Prefix
            } else if MODIFIERS.contains(&s) {
                Kind::Modifier
            } else if LOGICAL.contains(&s) {
                Kind::LogicalOp
            } else if COMPARATORS.contains(&s) {
                Kind::Comparator
            } else if TERNARY.contains(&s) {
                Kind::Ternary
            } else if s.is_empty() {
                return Err(format!("invalid token `{c}`"));
            } else {
                return Err(format!("invalid token `{s}`"));
            };
            Tok::op(kind, s)
        };
        state = tok.kind;
        out.push(tok);
    }
    Ok(out)
}

/// govaluate's lexer states: which kind may follow which.
fn can_follow(state: Kind, next: Kind) -> bool {
    use Kind::*;
    let value = matches!(next, Numeric | Boolean | Variable | Str | Time | Pattern);
    match state {
        Unknown => value || matches!(next, Prefix | Clause),
        Clause => value || matches!(next, Prefix | Clause | ClauseClose),
        ClauseClose => {
            value
                || matches!(
                    next,
                    Comparator | Modifier | Clause | ClauseClose | LogicalOp | Ternary | Separator
                )
        }
        Numeric | Boolean | Str | Variable => matches!(
            next,
            Modifier | Comparator | LogicalOp | ClauseClose | Ternary | Separator
        ),
        Time | Pattern => matches!(
            next,
            Modifier | Comparator | LogicalOp | ClauseClose | Separator
        ),
        Modifier => {
            matches!(
                next,
                Prefix | Numeric | Variable | Str | Boolean | Clause | ClauseClose
            )
        }
        Comparator => value || matches!(next, Prefix | Clause | ClauseClose),
        LogicalOp => (value && next != Pattern) || matches!(next, Prefix | Clause | ClauseClose),
        Prefix => matches!(next, Numeric | Boolean | Variable | Clause | ClauseClose),
        Ternary => (value && next != Pattern) || matches!(next, Prefix | Clause | Separator),
        Separator => (value && next != Pattern) || matches!(next, Prefix | Clause),
    }
}

/// govaluate's `checkBalance` and `checkExpressionSyntax`.
fn check_syntax(tokens: &[Tok]) -> Result<(), String> {
    let mut depth = 0i64;
    for t in tokens {
        match t.kind {
            Kind::Clause => depth += 1,
            Kind::ClauseClose => depth -= 1,
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced parenthesis".into());
    }
    let deepest = tokens
        .iter()
        .scan(0i64, |d, t| {
            *d += match t.kind {
                Kind::Clause => 1,
                Kind::ClauseClose => -1,
                _ => 0,
            };
            Some(*d)
        })
        .max()
        .unwrap_or(0);
    if deepest > 100 {
        return Err("parentheses nested more than 100 deep".into());
    }
    let mut state = Kind::Unknown;
    let mut last: Option<&Tok> = None;
    for t in tokens {
        // A pattern is a string for the syntax check (govaluate compiles after it).
        let kind = if t.kind == Kind::Pattern {
            Kind::Str
        } else {
            t.kind
        };
        if !can_follow(state, kind) {
            return Err(match last {
                Some(l) if l.kind == Kind::Variable && kind == Kind::Clause => {
                    format!("undefined function {} (Argo defines no functions)", l.text)
                }
                Some(l) => format!("{} cannot follow {}", t.describe(), l.describe()),
                None => format!("the expression cannot start with {}", t.describe()),
            });
        }
        state = kind;
        last = Some(t);
    }
    let ends = matches!(
        state,
        Kind::ClauseClose
            | Kind::Numeric
            | Kind::Boolean
            | Kind::Str
            | Kind::Time
            | Kind::Pattern
            | Kind::Variable
    );
    if !ends {
        return Err("unexpected end of expression".into());
    }
    Ok(())
}

// ---------------------------------------------------------------- parser

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Sep,
    TernIf,
    TernElse,
    Coalesce,
    Or,
    And,
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Req,
    Nreq,
    In,
    BitAnd,
    BitOr,
    BitXor,
    Shl,
    Shr,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    Neg,
    Not,
    BitNot,
}

#[derive(Debug, Clone)]
enum Node {
    Lit(Val),
    Var(String),
    Prefix(Prefix, Box<Node>),
    Bin(Op, Box<Node>, Box<Node>),
}

/// The precedence levels, loosest first (govaluate's `stagePlanner.go`).
const LEVELS: [(Kind, &[(&str, Op)]); 10] = [
    (Kind::Separator, &[(",", Op::Sep)]),
    (
        Kind::Ternary,
        &[("?", Op::TernIf), (":", Op::TernElse), ("??", Op::Coalesce)],
    ),
    (Kind::LogicalOp, &[("||", Op::Or)]),
    (Kind::LogicalOp, &[("&&", Op::And)]),
    (
        Kind::Comparator,
        &[
            ("==", Op::Eq),
            ("!=", Op::Ne),
            (">", Op::Gt),
            (">=", Op::Ge),
            ("<", Op::Lt),
            ("<=", Op::Le),
            ("=~", Op::Req),
            ("!~", Op::Nreq),
            ("in", Op::In),
        ],
    ),
    (
        Kind::Modifier,
        &[("&", Op::BitAnd), ("|", Op::BitOr), ("^", Op::BitXor)],
    ),
    (Kind::Modifier, &[("<<", Op::Shl), (">>", Op::Shr)]),
    (Kind::Modifier, &[("+", Op::Add), ("-", Op::Sub)]),
    (
        Kind::Modifier,
        &[("*", Op::Mul), ("/", Op::Div), ("%", Op::Mod)],
    ),
    (Kind::Modifier, &[("**", Op::Pow)]),
];

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn level(&mut self, l: usize) -> Result<Node, String> {
        let Some((kind, ops)) = LEVELS.get(l) else {
            return self.unary();
        };
        let mut left = self.level(l + 1)?;
        while let Some(t) = self.tokens.get(self.pos) {
            let Some(op) = ops
                .iter()
                .find(|(s, _)| t.kind == *kind && t.text == *s)
                .map(|(_, op)| *op)
            else {
                break;
            };
            self.pos += 1;
            let right = self.level(l + 1)?;
            left = Node::Bin(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Node, String> {
        if let Some(t) = self.tokens.get(self.pos).filter(|t| t.kind == Kind::Prefix) {
            let op = match t.text.as_str() {
                "-" => Prefix::Neg,
                "!" => Prefix::Not,
                _ => Prefix::BitNot,
            };
            self.pos += 1;
            return Ok(Node::Prefix(op, Box::new(self.primary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Node, String> {
        let Some(t) = self.tokens.get(self.pos).cloned() else {
            return Err("unexpected end of expression".into());
        };
        self.pos += 1;
        match t.kind {
            Kind::Variable => Ok(Node::Var(t.text)),
            Kind::Clause => {
                let inner = self.level(0)?;
                match self.tokens.get(self.pos) {
                    Some(c) if c.kind == Kind::ClauseClose => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    Some(other) => Err(format!("expected `)`, found {}", other.describe())),
                    None => Err("expected `)`".into()),
                }
            }
            _ => match t.lit {
                Some(v) => Ok(Node::Lit(v)),
                None => Err(format!(
                    "a value is missing before {} (govaluate would use null)",
                    t.describe()
                )),
            },
        }
    }
}

// ---------------------------------------------------------------- evaluation

fn op_text(op: Op) -> &'static str {
    LEVELS
        .iter()
        .flat_map(|(_, ops)| ops.iter())
        .find(|(_, o)| *o == op)
        .map(|(s, _)| *s)
        .unwrap_or("?")
}

fn not_a(v: &Val, op: &str, what: &str) -> String {
    format!(
        "value '{}' ({}) cannot be used with `{op}`, it is not a {what}",
        go_text(v),
        type_name(v)
    )
}

fn num(v: &Val, op: &str) -> Result<f64, String> {
    match v {
        Val::Num(f) => Ok(*f),
        other => Err(not_a(other, op, "number")),
    }
}

fn boolean(v: &Val, op: &str) -> Result<bool, String> {
    match v {
        Val::Bool(b) => Ok(*b),
        other => Err(not_a(other, op, "bool")),
    }
}

fn eval(n: &Node, vars: &HashMap<String, Value>) -> Result<Val, String> {
    match n {
        Node::Lit(v) => Ok(v.clone()),
        Node::Var(name) => vars
            .get(name)
            .map(from_json)
            .ok_or_else(|| format!("no parameter '{name}' found")),
        Node::Prefix(op, operand) => {
            let v = eval(operand, vars)?;
            Ok(match op {
                Prefix::Neg => Val::Num(-num(&v, "-")?),
                Prefix::Not => Val::Bool(!boolean(&v, "!")?),
                Prefix::BitNot => Val::Num(!(num(&v, "~")? as i64) as f64),
            })
        }
        Node::Bin(op, l, r) => {
            let left = eval(l, vars)?;
            // Short circuits, before any type check (govaluate's order).
            match op {
                Op::And if matches!(left, Val::Bool(false)) => return Ok(Val::Bool(false)),
                Op::Or if matches!(left, Val::Bool(true)) => return Ok(Val::Bool(true)),
                Op::TernElse | Op::Coalesce if !matches!(left, Val::Null) => return Ok(left),
                Op::TernIf if matches!(left, Val::Bool(false)) => return Ok(Val::Null),
                _ => {}
            }
            let right = eval(r, vars)?;
            binary(*op, left, right)
        }
    }
}

fn binary(op: Op, left: Val, right: Val) -> Result<Val, String> {
    let sym = op_text(op);
    let nums =
        |l: &Val, r: &Val| -> Result<(f64, f64), String> { Ok((num(l, sym)?, num(r, sym)?)) };
    Ok(match op {
        Op::Sep => match left {
            Val::Arr(mut a) => {
                a.push(right);
                Val::Arr(a)
            }
            other => Val::Arr(vec![other, right]),
        },
        Op::TernIf => {
            boolean(&left, sym)?;
            right
        }
        Op::TernElse | Op::Coalesce => right,
        Op::And | Op::Or => {
            let (a, b) = (boolean(&left, sym)?, boolean(&right, sym)?);
            Val::Bool(if op == Op::And { a && b } else { a || b })
        }
        Op::Eq => Val::Bool(deep_equal(&left, &right)),
        Op::Ne => Val::Bool(!deep_equal(&left, &right)),
        Op::Gt | Op::Ge | Op::Lt | Op::Le => {
            let ord = match (&left, &right) {
                (Val::Num(a), Val::Num(b)) => a.partial_cmp(b),
                (Val::Str(a), Val::Str(b)) => Some(a.cmp(b)),
                _ => {
                    let date_string = |v: &Val| matches!(v, Val::Str(s) if go_time(s).is_some());
                    let hint = if date_string(&left) || date_string(&right) {
                        " (govaluate turns a date literal into a Unix time; a date string from the event stays a string)"
                    } else {
                        ""
                    };
                    return Err(format!(
                        "`{sym}` compares two numbers or two strings, not {} '{}' and {} '{}'{hint}",
                        type_name(&left),
                        go_text(&left),
                        type_name(&right),
                        go_text(&right)
                    ));
                }
            };
            use std::cmp::Ordering::*;
            Val::Bool(match (op, ord) {
                (_, None) => false,
                (Op::Gt, Some(o)) => o == Greater,
                (Op::Ge, Some(o)) => o != Less,
                (Op::Lt, Some(o)) => o == Less,
                (_, Some(o)) => o != Greater,
            })
        }
        Op::Req | Op::Nreq => {
            let Val::Str(text) = &left else {
                return Err(not_a(&left, sym, "string"));
            };
            let found = match &right {
                Val::Re(re) => re.is_match(text),
                Val::Str(p) => Regex::new(p)
                    .map_err(|e| format!("unable to compile regexp pattern '{p}': {e}"))?
                    .is_match(text),
                other => return Err(not_a(other, sym, "string or pattern")),
            };
            Val::Bool(found == (op == Op::Req))
        }
        Op::In => {
            let Val::Arr(list) = &right else {
                return Err(format!(
                    "`in` needs a list on its right, as in `x in (1, 2)`; got {} '{}'",
                    type_name(&right),
                    go_text(&right)
                ));
            };
            for item in list {
                if iface_equal(&left, item)? {
                    return Ok(Val::Bool(true));
                }
            }
            Val::Bool(false)
        }
        Op::BitAnd | Op::BitOr | Op::BitXor => {
            let (a, b) = nums(&left, &right)?;
            let (a, b) = (a as i64, b as i64);
            Val::Num(match op {
                Op::BitAnd => a & b,
                Op::BitOr => a | b,
                _ => a ^ b,
            } as f64)
        }
        Op::Shl | Op::Shr => {
            let (a, b) = nums(&left, &right)?;
            let (a, b) = (a as u64, b as u64);
            Val::Num(match (op, b) {
                (_, 64..) => 0,
                (Op::Shl, b) => a << b,
                (_, b) => a >> b,
            } as f64)
        }
        Op::Add => match (&left, &right) {
            (Val::Num(a), Val::Num(b)) => Val::Num(a + b),
            (Val::Str(_), _) | (_, Val::Str(_)) => {
                Val::Str(format!("{}{}", go_text(&left), go_text(&right)))
            }
            _ => {
                let bad = if matches!(left, Val::Num(_)) {
                    &right
                } else {
                    &left
                };
                return Err(not_a(bad, sym, "number or string"));
            }
        },
        Op::Sub | Op::Mul | Op::Div | Op::Mod | Op::Pow => {
            let (a, b) = nums(&left, &right)?;
            Val::Num(match op {
                Op::Sub => a - b,
                Op::Mul => a * b,
                Op::Div => a / b,
                Op::Mod => a % b,
                _ => a.powf(b),
            })
        }
    })
}

/// Go's `==` on two `interface{}` values (govaluate's `in`): scalars by
/// value; two arrays or two objects make Go panic ("comparing uncomparable
/// type") — an error here.
fn iface_equal(a: &Val, b: &Val) -> Result<bool, String> {
    match (a, b) {
        (Val::Arr(_), Val::Arr(_)) | (Val::Obj(_), Val::Obj(_)) => Err(format!(
            "`in` cannot compare {}s (upstream's Go code panics on this)",
            type_name(a)
        )),
        (Val::Arr(_) | Val::Obj(_), _) | (_, Val::Arr(_) | Val::Obj(_)) => Ok(false),
        _ => Ok(deep_equal(a, b)),
    }
}

// ---------------------------------------------------------------- dates

/// A piece of a Go time layout.
#[derive(Debug, Clone, Copy, PartialEq)]
enum L {
    Lit(&'static str),
    WeekDay,
    Month,
    UnderDay,
    ZeroDay,
    ZeroMonth,
    Year,
    Hour,
    Hour12,
    Minute,
    Second,
    Frac,
    Pm,
    Tz,
    NumTz,
    NumColonTz,
    IsoTz,
    IsoColonTz,
}

use L::*;

/// govaluate's `tryParseTime` layouts, in its order.
#[rustfmt::skip]
const LAYOUTS: [&[L]; 14] = [
    // ANSIC "Mon Jan _2 15:04:05 2006"
    &[WeekDay, Lit(" "), Month, Lit(" "), UnderDay, Lit(" "), Hour, Lit(":"), Minute, Lit(":"), Second, Lit(" "), Year],
    // UnixDate "Mon Jan _2 15:04:05 MST 2006"
    &[WeekDay, Lit(" "), Month, Lit(" "), UnderDay, Lit(" "), Hour, Lit(":"), Minute, Lit(":"), Second, Lit(" "), Tz, Lit(" "), Year],
    // RubyDate "Mon Jan 02 15:04:05 -0700 2006"
    &[WeekDay, Lit(" "), Month, Lit(" "), ZeroDay, Lit(" "), Hour, Lit(":"), Minute, Lit(":"), Second, Lit(" "), NumTz, Lit(" "), Year],
    // Kitchen "3:04PM"
    &[Hour12, Lit(":"), Minute, Pm],
    // RFC3339 "2006-01-02T15:04:05Z07:00"
    &[Year, Lit("-"), ZeroMonth, Lit("-"), ZeroDay, Lit("T"), Hour, Lit(":"), Minute, Lit(":"), Second, IsoColonTz],
    // RFC3339Nano "2006-01-02T15:04:05.999999999Z07:00"
    &[Year, Lit("-"), ZeroMonth, Lit("-"), ZeroDay, Lit("T"), Hour, Lit(":"), Minute, Lit(":"), Second, Frac, IsoColonTz],
    // "2006-01-02"
    &[Year, Lit("-"), ZeroMonth, Lit("-"), ZeroDay],
    // "2006-01-02 15:04"
    &[Year, Lit("-"), ZeroMonth, Lit("-"), ZeroDay, Lit(" "), Hour, Lit(":"), Minute],
    // "2006-01-02 15:04:05"
    &[Year, Lit("-"), ZeroMonth, Lit("-"), ZeroDay, Lit(" "), Hour, Lit(":"), Minute, Lit(":"), Second],
    // "2006-01-02 15:04:05-07:00"
    &[Year, Lit("-"), ZeroMonth, Lit("-"), ZeroDay, Lit(" "), Hour, Lit(":"), Minute, Lit(":"), Second, NumColonTz],
    // "2006-01-02T15Z0700"
    &[Year, Lit("-"), ZeroMonth, Lit("-"), ZeroDay, Lit("T"), Hour, IsoTz],
    // "2006-01-02T15:04Z0700"
    &[Year, Lit("-"), ZeroMonth, Lit("-"), ZeroDay, Lit("T"), Hour, Lit(":"), Minute, IsoTz],
    // "2006-01-02T15:04:05Z0700"
    &[Year, Lit("-"), ZeroMonth, Lit("-"), ZeroDay, Lit("T"), Hour, Lit(":"), Minute, Lit(":"), Second, IsoTz],
    // "2006-01-02T15:04:05.999999999Z0700"
    &[Year, Lit("-"), ZeroMonth, Lit("-"), ZeroDay, Lit("T"), Hour, Lit(":"), Minute, Lit(":"), Second, Frac, IsoTz],
];

/// The Unix time of a string literal that one of govaluate's date layouts
/// accepts (Go's `time.Parse` rules for these layouts; no zone ⇒ UTC).
fn go_time(s: &str) -> Option<f64> {
    LAYOUTS
        .iter()
        .find_map(|layout| parse_layout(layout, s.as_bytes()))
        .map(|unix| unix as f64)
}

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn parse_layout(layout: &[L], mut v: &[u8]) -> Option<i64> {
    let (mut year, mut month, mut day) = (0i32, 1u32, 1u32);
    let (mut hour, mut min, mut sec) = (0u32, 0u32, 0u32);
    let mut pm: Option<bool> = None;
    let mut offset: i64 = 0; // seconds east of UTC
    for (i, piece) in layout.iter().enumerate() {
        match *piece {
            Lit(s) => v = skip(v, s)?,
            Year => {
                let y = v.get(..4).filter(|d| d.iter().all(u8::is_ascii_digit))?;
                year = std::str::from_utf8(y).ok()?.parse().ok()?;
                v = &v[4..];
            }
            ZeroMonth => {
                (month, v) = getnum(v, true)?;
                if !(1..=12).contains(&month) {
                    return None;
                }
            }
            Month => {
                let (m, rest) = lookup(&MONTHS, v)?;
                (month, v) = (m as u32 + 1, rest);
            }
            WeekDay => v = lookup(&DAYS, v)?.1,
            ZeroDay => (day, v) = getnum(v, true)?,
            UnderDay => {
                if v.first() == Some(&b' ') {
                    v = &v[1..];
                }
                (day, v) = getnum(v, false)?;
            }
            Hour | Hour12 => {
                (hour, v) = getnum(v, false)?;
                if hour >= 24 || (*piece == Hour12 && hour > 12) {
                    return None;
                }
            }
            Minute | Second => {
                let (n, rest) = getnum(v, true)?;
                if n >= 60 {
                    return None;
                }
                v = rest;
                if *piece == Minute {
                    min = n;
                } else {
                    sec = n;
                    // A fraction the layout does not ask for is accepted.
                    if layout.get(i + 1) != Some(&Frac) {
                        v = fraction(v);
                    }
                }
            }
            Frac => v = fraction(v),
            Pm => {
                pm = match v.get(..2)? {
                    b"PM" => Some(true),
                    b"AM" => Some(false),
                    _ => return None,
                };
                v = &v[2..];
            }
            Tz => {
                if v.starts_with(b"UTC") {
                    v = &v[3..];
                } else {
                    let n = zone_name_len(v)?;
                    let name = std::str::from_utf8(&v[..n]).ok()?;
                    // Go fabricates a zone: offset 0 unless `GMT±h`.
                    if n > 3 && name.starts_with("GMT") {
                        offset = name[3..].parse::<i64>().ok()? * 3600;
                    }
                    v = &v[n..];
                }
            }
            NumTz | NumColonTz | IsoTz | IsoColonTz => {
                if matches!(*piece, IsoTz | IsoColonTz) && v.first() == Some(&b'Z') {
                    v = &v[1..];
                } else {
                    let colon = matches!(*piece, NumColonTz | IsoColonTz);
                    (offset, v) = numeric_zone(v, colon)?;
                }
            }
        }
    }
    if !v.is_empty() {
        return None;
    }
    match pm {
        Some(true) if hour < 12 => hour += 12,
        Some(false) if hour == 12 => hour = 0,
        _ => {}
    }
    let t = chrono::NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(hour, min, sec)?;
    Some(t.and_utc().timestamp() - offset)
}

/// Go's `skip`: a space in the layout matches any run of spaces.
fn skip<'a>(mut v: &'a [u8], lit: &str) -> Option<&'a [u8]> {
    let trim = |s: &'a [u8]| -> &'a [u8] {
        let n = s.iter().take_while(|c| **c == b' ').count();
        &s[n..]
    };
    let mut p = lit.as_bytes();
    while let Some(&c) = p.first() {
        if c == b' ' {
            if v.first().is_some_and(|c| *c != b' ') {
                return None;
            }
            let n = p.iter().take_while(|c| **c == b' ').count();
            p = &p[n..];
            v = trim(v);
            continue;
        }
        if v.first() != Some(&c) {
            return None;
        }
        p = &p[1..];
        v = &v[1..];
    }
    Some(v)
}

/// Go's `getnum`: one or two digits (exactly two when `fixed`).
fn getnum(v: &[u8], fixed: bool) -> Option<(u32, &[u8])> {
    let d0 = *v.first().filter(|c| c.is_ascii_digit())?;
    match v.get(1) {
        Some(d1) if d1.is_ascii_digit() => {
            Some((u32::from(d0 - b'0') * 10 + u32::from(d1 - b'0'), &v[2..]))
        }
        _ if fixed => None,
        _ => Some((u32::from(d0 - b'0'), &v[1..])),
    }
}

/// Go's `lookup`: a name from `tab`, case-insensitively.
fn lookup<'a>(tab: &[&str], v: &'a [u8]) -> Option<(usize, &'a [u8])> {
    tab.iter().enumerate().find_map(|(i, name)| {
        let n = name.len();
        v.get(..n)
            .filter(|p| p.eq_ignore_ascii_case(name.as_bytes()))
            .map(|_| (i, &v[n..]))
    })
}

/// `.123` or `,123` after the seconds (the value is dropped: Unix seconds).
fn fraction(v: &[u8]) -> &[u8] {
    if v.len() >= 2 && (v[0] == b'.' || v[0] == b',') && v[1].is_ascii_digit() {
        let n = 1 + v[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        &v[n..]
    } else {
        v
    }
}

/// `-0700` or `-07:00`: seconds east of UTC.
fn numeric_zone(v: &[u8], colon: bool) -> Option<(i64, &[u8])> {
    let len = if colon { 6 } else { 5 };
    if v.len() < len || (colon && v[3] != b':') {
        return None;
    }
    let (hh, _) = getnum(&v[1..3], true)?;
    let (mm, _) = getnum(if colon { &v[4..6] } else { &v[3..5] }, true)?;
    if hh > 24 || mm > 60 {
        return None;
    }
    let secs = i64::from(hh * 60 + mm) * 60;
    let offset = match v[0] {
        b'+' => secs,
        b'-' => -secs,
        _ => return None,
    };
    Some((offset, &v[len..]))
}

/// Go's `parseTimeZone`: the length of a zone abbreviation.
fn zone_name_len(v: &[u8]) -> Option<usize> {
    if v.len() < 3 {
        return None;
    }
    if v.starts_with(b"ChST") || v.starts_with(b"MeST") {
        return Some(4);
    }
    if v.starts_with(b"GMT") {
        return Some(3 + signed_offset_len(&v[3..]));
    }
    if v[0] == b'+' || v[0] == b'-' {
        return Some(signed_offset_len(v)).filter(|n| *n > 0);
    }
    let upper = v
        .iter()
        .take(6)
        .take_while(|c| c.is_ascii_uppercase())
        .count();
    match upper {
        3 => Some(3),
        4 if v[3] == b'T' || v.starts_with(b"WITA") => Some(4),
        5 if v[4] == b'T' => Some(5),
        _ => None,
    }
}

/// Go's `parseSignedOffset`: `+3`, `-11` (hours up to 23), else 0.
fn signed_offset_len(v: &[u8]) -> usize {
    if !matches!(v.first(), Some(b'+' | b'-')) {
        return 0;
    }
    let digits = v[1..].iter().take_while(|c| c.is_ascii_digit()).count();
    let ok = digits > 0
        && std::str::from_utf8(&v[1..1 + digits])
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
            .is_some_and(|h| h <= 23);
    if ok {
        1 + digits
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(v: Value) -> HashMap<String, Value> {
        v.as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    fn run(src: &str, v: Value) -> Result<Value, String> {
        Expr::parse(src)?.eval(&vars(v))
    }

    fn ok(src: &str) -> Value {
        run(src, json!({})).unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    fn with(src: &str, v: Value) -> Value {
        run(src, v).unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    fn eval_err(src: &str, v: Value) -> String {
        let e = Expr::parse(src).unwrap_or_else(|e| panic!("{src} should parse: {e}"));
        e.eval(&vars(v))
            .expect_err(&format!("{src} should fail to evaluate"))
    }

    fn parse_err(src: &str) -> String {
        Expr::parse(src)
            .map(|_| ())
            .expect_err(&format!("{src} should not parse"))
    }

    #[test]
    fn argo_compat_examples() {
        // §4.2 / filter-with-expressions.yaml, payload {"a":"b","a-longer-name":10}.
        let e = Expr::parse(r#"a == "b" || c == 10"#).unwrap();
        assert!(e.truth(&vars(json!({"a": "b", "c": 10}))).unwrap().0);
        assert!(e.truth(&vars(json!({"a": "x", "c": 10.0}))).unwrap().0);
        assert!(!e.truth(&vars(json!({"a": "x", "c": 11}))).unwrap().0);
        // §12.1: `a == "b" || c != 10` is true with a = "b".
        assert_eq!(
            with(r#"a == "b" || c != 10"#, json!({"a": "b", "c": 10})),
            json!(true)
        );
        assert_eq!(with("e == false", json!({"e": false})), json!(true));
        // Dates: the literal is a Unix time; a number compares with it.
        assert_eq!(
            with("t > '2026-01-01'", json!({"t": 1_767_225_601})),
            json!(true)
        );
        assert_eq!(
            with("t > '2026-01-01'", json!({"t": 1_767_225_600})),
            json!(false)
        );
        // ... and a string field cannot be compared with it.
        let e = eval_err("t > '2026-01-01'", json!({"t": "2026-02-01"}));
        assert!(e.contains("two numbers") && e.contains("Unix time"), "{e}");
        // Comparing mismatched types is an error; `==` is false.
        assert!(eval_err("a < 1", json!({"a": "x"})).contains("two numbers or two strings"));
        assert_eq!(with("a == 1", json!({"a": "1"})), json!(false));
    }

    #[test]
    fn literals() {
        assert_eq!(ok("1"), json!(1.0));
        assert_eq!(ok("0"), json!(0.0));
        assert_eq!(ok("0.5"), json!(0.5));
        assert_eq!(ok(".5"), json!(0.5));
        assert_eq!(ok("3.14567471"), json!(3.14567471));
        assert_eq!(ok("1234567890"), json!(1234567890.0));
        assert_eq!(ok("0x1"), json!(1.0));
        assert_eq!(ok("0x10"), json!(16.0));
        assert_eq!(ok("0xabcdef"), json!(11259375.0));
        assert_eq!(ok("0xABCDEF"), json!(11259375.0));
        assert_eq!(ok("'foo'"), json!("foo"));
        assert_eq!(ok(r#""foo""#), json!("foo"));
        assert_eq!(ok(r#""foo\'bar""#), json!("foo'bar"));
        assert_eq!(ok(r"'a\nb'"), json!("anb"), "`\\` escapes, no C escapes");
        assert_eq!(ok("'ÆŦǽഈᚥஇคٸ'"), json!("ÆŦǽഈᚥஇคٸ"));
        assert_eq!(ok("true"), json!(true));
        assert_eq!(ok("false"), json!(false));
        assert_eq!(ok("'1' + 1"), json!("11"));
    }

    #[test]
    fn date_literals() {
        assert_eq!(ok("'2014-01-02'"), json!(1388620800.0));
        assert_eq!(ok("'2014-01-02 14:12'"), json!(1388671920.0));
        assert_eq!(ok("'2014-01-02 14:12:22'"), json!(1388671942.0));
        assert_eq!(ok("'2026-01-01'"), json!(1767225600.0));
        assert_eq!(ok("'2026-01-01T10:00:00Z'"), json!(1767261600.0));
        assert_eq!(ok("'2026-01-01 10:00:00'"), json!(1767261600.0));
        assert_eq!(ok("'2026-01-01T10:00:00.123456Z'"), json!(1767261600.0));
        assert_eq!(ok("'2026-01-01T12:00:00+02:00'"), json!(1767261600.0));
        assert_eq!(ok("'2026-01-01 12:00:00+02:00'"), json!(1767261600.0));
        assert_eq!(ok("'2026-01-01T12:00:00+0200'"), json!(1767261600.0));
        assert_eq!(ok("'2026-01-01T10:00Z'"), json!(1767261600.0));
        assert_eq!(ok("'2026-01-01T10Z'"), json!(1767261600.0));
        assert_eq!(ok("'2026-01-01T10:00:00.5+0000'"), json!(1767261600.0));
        assert_eq!(ok("'Thu Jan  1 10:00:00 2026'"), json!(1767261600.0));
        assert_eq!(ok("'Thu Jan  1 10:00:00 UTC 2026'"), json!(1767261600.0));
        assert_eq!(ok("'Thu Jan 01 12:00:00 +0200 2026'"), json!(1767261600.0));
        assert_eq!(ok("'Thu Jan  1 13:00:00 GMT+3 2026'"), json!(1767261600.0));
        // Kitchen: Jan 1 of year 0.
        assert_eq!(
            ok("'3:04PM'"),
            json!(-62167219200.0 + 15.0 * 3600.0 + 240.0)
        );
        assert_eq!(ok("'12:00AM'"), json!(-62167219200.0));
        // Not dates: stay strings.
        for s in [
            "2026-1-01",
            "2026-02-30",
            "2026-13-01",
            "02/05/1970",
            "2026-01-01T25:00:00Z",
            "2026-01-01 10:00:00 ",
            "3:04pm",
            "20260101",
            "hello",
        ] {
            assert_eq!(ok(&format!("'{s}'")), json!(s), "{s}");
        }
        // govaluate: the date is a number, so equality holds and GT/LT work.
        assert_eq!(
            ok("'2014-01-02 14:12:22' == '2014-01-02 14:12:22'"),
            json!(true)
        );
        assert_eq!(
            ok("'2014-01-02 14:12:22' > '2014-01-02 12:12:22'"),
            json!(true)
        );
        assert_eq!(
            ok("'2014-01-02 14:12:22' > '2014-01-02 16:12:22'"),
            json!(false)
        );
        assert_eq!(
            ok("'2014-01-02 14:12:22' >= '2014-01-02 12:12:22'"),
            json!(true)
        );
        assert_eq!(
            ok("'2014-01-02 14:12:22' >= '2014-01-02 16:12:22'"),
            json!(false)
        );
        assert_eq!(
            ok("'2014-01-02 14:12:22' < '2014-01-02 16:12:22'"),
            json!(true)
        );
        assert_eq!(
            ok("'2014-01-02 14:12:22' < '2014-01-02 11:12:22'"),
            json!(false)
        );
        assert_eq!(
            ok("'2014-01-02 09:12:22' <= '2014-01-02 12:12:22'"),
            json!(true)
        );
        assert_eq!(
            ok("'2014-01-02 14:12:22' <= '2014-01-02 11:12:22'"),
            json!(false)
        );
        assert_eq!(ok("'foo' + '02/05/1970' == 'foobar'"), json!(false));
        assert_eq!(ok("'foo' + '02/05/1970'"), json!("foo02/05/1970"));
        // A date cannot follow a modifier (govaluate's lexer states).
        assert!(parse_err("1 + '2026-01-01'").contains("cannot follow"));
    }

    /// govaluate's `TestNoParameterEvaluation` (those without functions).
    #[test]
    fn govaluate_constant_evaluation() {
        let cases: &[(&str, Value)] = &[
            ("51 + 49", json!(100.0)),
            ("100 - 51", json!(49.0)),
            ("100 & 50", json!(32.0)),
            ("100 | 50", json!(118.0)),
            ("100 ^ 50", json!(86.0)),
            ("2 << 1", json!(4.0)),
            ("2 >> 1", json!(1.0)),
            ("~10", json!(-11.0)),
            ("5 * 20", json!(100.0)),
            ("100 / 20", json!(5.0)),
            ("100 % 2", json!(0.0)),
            ("101 % 2", json!(1.0)),
            ("10 ** 2", json!(100.0)),
            ("20 + 30 + 50", json!(100.0)),
            ("20 & 30 & 50", json!(16.0)),
            ("20 * 5 - 49", json!(51.0)),
            ("100 - (5 * 10)", json!(50.0)),
            ("50 + (5 * (15 - 5))", json!(100.0)),
            ("100 ^ (23 * (2 | 5))", json!(197.0)),
            ("(1 == 1) || (true == true)", json!(true)),
            ("(1 == 1) && (true == true)", json!(true)),
            ("2 > 1", json!(true)),
            ("5 < 10 && 1 < 5", json!(true)),
            ("1 > 10 && 11 > 10", json!(false)),
            ("true == true && false == true", json!(false)),
            ("10 < 50 && (1 != 2 && 1 > 0)", json!(true)),
            ("'foo' == 'foo'", json!(true)),
            ("'foo' != 'bar'", json!(true)),
            ("'foobar' =~ 'oba'", json!(true)),
            ("'foo' !~ 'bar'", json!(true)),
            ("5 + 10 * 2", json!(25.0)),
            ("10 * 10 * 10", json!(1000.0)),
            ("10 * 10 * 10 + 1 * 10 * 10", json!(1100.0)),
            ("1 + 101 % 2 * 5", json!(6.0)),
            ("1 + 5 ** 3 % 2 * 5", json!(6.0)),
            ("50 << 1 & 90", json!(64.0)),
            ("90 & 50 << 1", json!(64.0)),
            ("90 + 50 << 1 * 5", json!(4480.0)),
            ("1 - 2 - 4 - 8", json!(-13.0)),
            ("1 * 4 / 2 * 8", json!(16.0)),
            ("true ?? true ? 100 + 200 : 400", json!(300.0)),
            ("-1 < 0", json!(true)),
            ("'ab' < 'abc'", json!(true)),
            ("'ab' <= 'abc'", json!(true)),
            ("'aba' > 'abc'", json!(false)),
            ("'aba' >= 'abc'", json!(false)),
            ("!true == false", json!(true)),
            ("!(10 < 0)", json!(true)),
            ("10 * -10", json!(-100.0)),
            ("true ? 10", json!(10.0)),
            ("false ? 10", json!(null)),
            ("10 > 5 ? 35.50", json!(35.5)),
            ("1 > 5 ? 35.50", json!(null)),
            ("(5 * (15 - 5)) > 5 ? 35.50", json!(35.5)),
            ("true ? 35.50 > 10", json!(true)),
            ("false ? 35.50 : 50", json!(50.0)),
            ("(false ? 5 : 35.50) > 10", json!(true)),
            ("(true ? 1 : 5) < 10", json!(true)),
            ("true ? 1 : 5 > 10", json!(1.0)),
            ("(2 == 2) ? 1 : (true ? 2 : 3)", json!(1.0)),
            ("false ? 1 : (true ? 2 : 3)", json!(2.0)),
            (
                "true ? (false ? 1 : (false ? 2 : 3)) : (false ? 4 : 5)",
                json!(3.0),
            ),
            ("'foo' + 'bar' == 'foobar'", json!(true)),
            ("'foo' + 123 == 'foo123'", json!(true)),
            ("123 + 'bar' == '123bar'", json!(true)),
            ("'foo' + true == 'footrue'", json!(true)),
            ("true + 'bar' == 'truebar'", json!(true)),
            ("1 ?? 2", json!(1.0)),
            ("1 in (1, 2, 3)", json!(true)),
            ("!(1 in (1, 2, 3))", json!(false)),
            ("(true && true) || (true && false)", json!(true)),
            ("true && true || true && false", json!(true)),
            ("false || true && true || false", json!(true)),
            ("(10 * 10 * 10) > 10", json!(true)),
            ("false && true || true", json!(true)),
            ("true || false && true", json!(true)),
            ("true && true || false && false", json!(true)),
            ("(2 + 2) + 2 == 6", json!(true)),
            ("(2 + 2) >= 4", json!(true)),
        ];
        for (src, want) in cases {
            assert_eq!(&ok(src), want, "{src}");
        }
    }

    /// govaluate's `TestParameterizedEvaluation` (those without functions
    /// or struct accessors), with JSON values.
    #[test]
    fn govaluate_parameter_evaluation() {
        assert_eq!(with("foo + 2", json!({"foo": 2})), json!(4.0));
        assert_eq!(with("foo * bar", json!({"foo": 5, "bar": 2})), json!(10.0));
        assert_eq!(with("foo * foo * foo", json!({"foo": 10})), json!(1000.0));
        assert_eq!(with("foo + foo + foo", json!({"foo": 10})), json!(30.0));
        assert_eq!(
            with("foo + FoO + FOO", json!({"foo": 8, "FoO": 4, "FOO": 2})),
            json!(14.0)
        );
        assert_eq!(with("-1 < -foo", json!({"foo": -8})), json!(true));
        assert_eq!(with("foo > 1", json!({"foo": 2})), json!(true));
        assert_eq!(
            with(
                "(foo == true) || (bar == true)",
                json!({"foo": true, "bar": false})
            ),
            json!(true)
        );
        assert_eq!(
            with("foo > 10 && bar > 10", json!({"foo": 1, "bar": 11})),
            json!(false)
        );
        assert_eq!(with("'foobar' =~ foo", json!({"foo": "obar"})), json!(true));
        assert_eq!(with("'foobar' !~ foo", json!({"foo": "baz"})), json!(true));
        assert_eq!(
            with("foo =~ bar", json!({"foo": "foobar", "bar": "oba"})),
            json!(true)
        );
        assert_eq!(
            with("foo !~ bar", json!({"foo": "foobar", "bar": "baz"})),
            json!(true)
        );
        assert_eq!(
            with("commission ? 10", json!({"commission": true})),
            json!(10.0)
        );
        assert_eq!(
            with("partner == 'amazon' ? 10", json!({"partner": "amazon"})),
            json!(10.0)
        );
        assert_eq!(
            with("partner == 'amazon' ? 10", json!({"partner": "ebay"})),
            json!(null)
        );
        assert_eq!(
            with(
                "theft && period == 24 ? 60",
                json!({"theft": true, "period": 24})
            ),
            json!(60.0)
        );
        assert_eq!(
            with(
                "theft && period == 24 ? 60",
                json!({"theft": false, "period": 24})
            ),
            json!(null)
        );
        assert_eq!(with("foo + 'bar'", json!({"foo": "baz"})), json!("bazbar"));
        assert_eq!(
            with("foo + bar", json!({"foo": "baz", "bar": "quux"})),
            json!("bazquux")
        );
        assert_eq!(
            with("foo + bar", json!({"foo": "baz", "bar": 123})),
            json!("baz123")
        );
        assert_eq!(
            with("foo + 123 + 'bar' + true", json!({"foo": "baz"})),
            json!("baz123bartrue")
        );
        assert_eq!(with("foo ?? 1.0", json!({"foo": null})), json!(1.0));
        let ip =
            "(foo >= 2887057408 && foo <= 2887122943) || (foo >= 168100864 && foo <= 168118271)";
        assert_eq!(with(ip, json!({"foo": 2887057409_u64})), json!(true));
        assert_eq!(with(ip, json!({"foo": 168100865})), json!(true));
        assert_eq!(with("arr == arr", json!({"arr": [0, "1"]})), json!(true));
        assert_eq!(with("arr != arr", json!({"arr": [0, "1"]})), json!(false));
        // Short circuits: the right side is never evaluated (`x` is unbound).
        assert_eq!(ok("true || x"), json!(true));
        assert_eq!(ok("false && x"), json!(false));
        assert_eq!(ok("true ? 1 : x"), json!(1.0));
        assert_eq!(ok("'foo' ?? x"), json!("foo"));
        assert_eq!(ok("false ? x"), json!(null));
    }

    #[test]
    fn escaped_names() {
        assert_eq!(with("[foo]", json!({"foo": 1})), json!(1.0));
        assert_eq!(with("[foo bar]", json!({"foo bar": 1})), json!(1.0));
        assert_eq!(with(r"[foo[bar\]]", json!({"foo[bar]": 1})), json!(1.0));
        assert_eq!(
            with("[foo] > bar", json!({"foo": 2, "bar": 1})),
            json!(true)
        );
        assert_eq!(
            with(r"foo\ bar > bar", json!({"foo bar": 2, "bar": 1})),
            json!(true)
        );
        assert_eq!(
            with(
                r"response\-time > bar",
                json!({"response-time": 2, "bar": 1})
            ),
            json!(true)
        );
        assert_eq!(
            with("foo_bar > baz_quux", json!({"foo_bar": 2, "baz_quux": 1})),
            json!(true)
        );
        assert_eq!(with(r#""a" + [foo]"#, json!({"foo": "b"})), json!("ab"));
        assert_eq!(with("[a.b] == 1", json!({"a.b": 1})), json!(true));
        assert_eq!(with("[true]", json!({"true": 1})), json!(1.0));
        assert_eq!(with("ÆŦǽഈᚥஇคٸ", json!({"ÆŦǽഈᚥஇคٸ": 1})), json!(1.0));
        assert_eq!(with("'foo' IN ('foo', 'bar')", json!({})), json!(true));
        // A dotted name is govaluate's struct accessor: refused with a hint.
        assert!(parse_err("a.b == 1").contains("[a.b]"));
        assert!(parse_err("a.B == 1").contains("struct field"));
    }

    #[test]
    fn values_and_types() {
        // Numbers are float64: `==` by value.
        assert_eq!(with("c == 10", json!({"c": 10.0})), json!(true));
        assert_eq!(with("c == 10.0", json!({"c": 10})), json!(true));
        assert_eq!(ok("10 == 10.0"), json!(true));
        // Objects and arrays: equality only.
        let v = json!({"o": {"a": 1, "b": [1, 2]}, "p": {"b": [1.0, 2.0], "a": 1.0}, "l": [1, 2]});
        assert_eq!(with("o == p", v.clone()), json!(true));
        assert_eq!(with("l == (1, 2)", v.clone()), json!(true));
        assert_eq!(with("l != (1, 2, 3)", v.clone()), json!(true));
        assert_eq!(with("o == 1", v.clone()), json!(false));
        assert!(eval_err("o < p", v.clone()).contains("two numbers or two strings"));
        assert!(eval_err("l + 1", v.clone()).contains("not a number or string"));
        assert_eq!(with("o + ''", v.clone()), json!("map[a:1 b:[1 2]]"));
        // `in` over a bound array, and govaluate's list building.
        assert_eq!(with("2 in l", v.clone()), json!(true));
        assert_eq!(with("3 in l", v.clone()), json!(false));
        assert_eq!(
            with("3 in (l, 3)", v.clone()),
            json!(true),
            "a list value is extended"
        );
        assert_eq!(with("'x' in (1, 'x')", v.clone()), json!(true));
        assert_eq!(with("o in (1, 2)", v.clone()), json!(false));
        assert!(eval_err("l in (1, l)", v.clone()).contains("cannot compare"));
        assert!(eval_err("1 in 2", json!({})).contains("needs a list"));
        assert!(eval_err("1 in 'foo'", json!({})).contains("needs a list"));
        assert!(eval_err("1 in true", json!({})).contains("needs a list"));
        assert!(eval_err("1 in (1)", json!({})).contains("needs a list"));
        // null
        assert_eq!(with("n == n", json!({"n": null})), json!(true));
        assert_eq!(with("n ?? 'dflt'", json!({"n": null})), json!("dflt"));
        assert_eq!(with("n + ''", json!({"n": null})), json!("<nil>"));
        assert!(eval_err("n > 1", json!({"n": null})).contains("null"));
        // Unbound names.
        assert!(eval_err("x == 1", json!({})).contains("no parameter 'x' found"));
        // Go's %v for floats in concatenations.
        for (n, text) in [
            ("10", "10"),
            ("1.5", "1.5"),
            ("100000", "100000"),
            ("1000000", "1e+06"),
            ("1234567", "1.234567e+06"),
            ("0.0001", "0.0001"),
            ("0.00001", "1e-05"),
            ("0.000012", "1.2e-05"),
            ("-2.5", "-2.5"),
            ("1 / 3", "0.3333333333333333"),
            ("0 - 0", "0"),
            ("1 / 0", "+Inf"),
            ("-1 / 0", "-Inf"),
            ("0 / 0", "NaN"),
        ] {
            assert_eq!(ok(&format!("'' + ({n})")), json!(text), "{n}");
        }
        // Division by zero is no error; a non-finite result cannot be JSON.
        assert_eq!(ok("1 / 0 > 5"), json!(true));
        assert!(run("1 / 0", json!({})).unwrap_err().contains("+Inf"));
        let e = Expr::parse("1 / 0").unwrap();
        assert_eq!(
            e.truth(&HashMap::new()).unwrap(),
            (false, "+Inf".to_string())
        );
        // Bitwise on int64, shifts on uint64.
        assert_eq!(ok("5.9 & 3"), json!(1.0));
        assert_eq!(ok("1 << 64"), json!(0.0));
        assert_eq!(ok("~0"), json!(-1.0));
        assert_eq!(ok("2 ** 3 ** 2"), json!(64.0), "left associative");
        assert_eq!(ok("-2 ** 2"), json!(4.0), "prefix binds tightest");
        assert_eq!(ok("7 % -3"), json!(1.0));
        assert_eq!(ok("-7 % 3"), json!(-1.0));
        // Only the boolean `true` passes a filter.
        let t = |src: &str| Expr::parse(src).unwrap().truth(&HashMap::new()).unwrap();
        assert_eq!(t("1 == 1"), (true, "true".into()));
        assert_eq!(t("1"), (false, "1".into()));
        assert_eq!(t("'true'"), (false, "true".into()));
        assert_eq!(t("false ? true"), (false, "<nil>".into()));
    }

    #[test]
    fn regexes() {
        assert_eq!(
            with("b =~ 'start'", json!({"b": "start long string"})),
            json!(true)
        );
        assert_eq!(
            with("b !~ 'start'", json!({"b": "long string"})),
            json!(true)
        );
        assert_eq!(with("b =~ '^a.c$'", json!({"b": "abc"})), json!(true));
        assert_eq!(with("b =~ '^a.c$'", json!({"b": "xabc"})), json!(false));
        assert_eq!(with(r"b =~ '\\d+'", json!({"b": "a1"})), json!(true));
        // A literal pattern is compiled at load.
        assert!(parse_err("foo =~ '[abc'").contains("regexp"));
        // ... a pattern from a variable at evaluation.
        assert!(eval_err("'foo' =~ p", json!({"p": "[foo"})).contains("regexp"));
        assert!(eval_err("n =~ 'x'", json!({"n": 1})).contains("not a string"));
        assert!(eval_err("'x' =~ n", json!({"n": 1})).contains("string or pattern"));
        // A pattern left of `+` is its source text (Go's %v of a Regexp).
        assert_eq!(with("b =~ 'a' + 'b'", json!({"b": "xab"})), json!(true));
        // A date literal right of `=~` is a number, not a pattern.
        assert!(eval_err("b =~ '2026-01-01'", json!({"b": "x"})).contains("string or pattern"));
    }

    /// govaluate's `evaluationFailure_test.go` (type errors), with
    /// number = 1, string = "foo", bool = true.
    #[test]
    fn govaluate_evaluation_failures() {
        let p = json!({"number": 1, "string": "foo", "bool": true});
        for src in [
            "1 + true",
            "number + bool",
            "number - bool",
            "number * bool",
            "number / bool",
            "number ** bool",
            "number % bool",
            "number | bool",
            "number & bool",
            "number ^ bool",
            "number << bool",
            "number >> bool",
            "number && number",
            "number || number",
            "string && string",
            "string || string",
            "number && string",
            "number || string",
            "bool && string",
            "string || bool",
            "true > true",
            "bool > bool",
            "bool >= bool",
            "bool < bool",
            "bool <= bool",
            "number > string",
            "number >= string",
            "number < string",
            "number =~ string",
            "number =~ bool",
            "bool =~ number",
            "bool =~ string",
            "number !~ string",
            "number !~ bool",
            "bool !~ number",
            "bool !~ string",
            "1 in 2",
            "1 in 'foo'",
            "1 in true",
            "10 ? true",
            "'foo' ? true",
            "-string",
            "!number",
            "~bool",
        ] {
            let e = Expr::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert!(e.eval(&vars(p.clone())).is_err(), "{src} should fail");
        }
        // `false && …` short-circuits before the type check.
        assert_eq!(with("false && string", p.clone()), json!(false));
        assert_eq!(with("true || string", p), json!(true));
    }

    /// govaluate's `parsingFailure_test.go`, plus what tripline refuses.
    #[test]
    fn parse_failures() {
        for src in [
            "",
            "   ",
            "1 = 1",
            "1 === 1",
            "true &&& false",
            "true ||| false",
            "10 > 5 +",
            "10 + 5 >",
            "10 > 5 &&",
            "true ?",
            "'wat' =~",
            " / =~",
            "> 10",
            "+ 5",
            "&& 5 < 10",
            "10 10",
            "'foo' 'foo'",
            "10 > < 10",
            " ) ( arg2",
            "[foo bar",
            "foo == 'responseTime",
            "foo =~ '[abc'",
            "10 > (1 + 50",
            "127.0.0.1",
            "foobar()",
            "foo.Bar.",
            "foo.bar",
            "0x",
            "0x > 0",
            "0x1.1",
            "0x12g1",
            // Lexer details: operators are read greedily up to a space.
            "a>-1",
            "a ==-1",
            "- -a",
            "!!a",
            "-'x'",
            "_a",
            "a ]",
            r"a == 'x\",
            // Accepted by govaluate, refused here.
            "(a ==)",
            "()",
            "(1 +)",
            "(a) b",
            "(a == 1) (b == 2)",
            "x in ()",
        ] {
            assert!(Expr::parse(src).is_err(), "{src:?} should not parse");
        }
        assert!(parse_err("foobar()").contains("undefined function"));
        assert!(parse_err("10 10").contains("cannot follow"));
        assert!(parse_err("(a) b").contains("silently ignore"));
        assert!(parse_err("(a ==)").contains("missing"));
        assert!(parse_err("10 > (1 + 50").contains("unbalanced"));
        assert!(parse_err("'a").contains("unclosed"));
        // Spacing variants that do parse.
        assert_eq!(with("a > - 1", json!({"a": 0})), json!(true));
        assert_eq!(ok("0x 1F"), json!(31.0), "govaluate skips spaces after 0x");
        assert_eq!(ok(" ( 1 ) "), json!(1.0));
        assert_eq!(ok("1,2"), json!([1.0, 2.0]));
        let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert_eq!(ok(&deep), json!(1.0));
        assert!(parse_err(&format!("({deep})")).contains("nested"));
    }
}
