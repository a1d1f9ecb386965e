//! Trigger conditions: `when: "code && (data || !manual)"` over dependency names.
//!
//! Parsed once at load into a small AST whose leaves are dependency indices;
//! evaluation is a walk over a `&[bool]` (which dependencies are satisfied).

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Dep(usize),
    Not(Box<Condition>),
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConditionError {
    #[error("empty condition")]
    Empty,
    #[error("unexpected {found} at column {col} (expected {expected})")]
    Unexpected {
        found: String,
        col: usize,
        expected: &'static str,
    },
    #[error("unknown dependency `{name}` at column {col} (known: {known})")]
    UnknownDependency {
        name: String,
        col: usize,
        known: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    And,
    Or,
    Not,
    Open,
    Close,
}

impl Condition {
    /// Parses `src`, resolving names against `deps` (the sensor's dependency names).
    pub fn parse(src: &str, deps: &[&str]) -> Result<Condition, ConditionError> {
        let toks = lex(src)?;
        if toks.is_empty() {
            return Err(ConditionError::Empty);
        }
        let mut p = Parser {
            toks,
            pos: 0,
            deps,
            end: src.len() + 1,
        };
        let c = p.or()?;
        if let Some((t, col)) = p.toks.get(p.pos) {
            return Err(ConditionError::Unexpected {
                found: describe(t),
                col: *col,
                expected: "`&&`, `||` or the end",
            });
        }
        Ok(c)
    }

    /// All of `deps` joined with `&&`: the default when a trigger has no `when`.
    pub fn all_of(n: usize) -> Condition {
        (1..n).fold(Condition::Dep(0), |acc, i| {
            Condition::And(Box::new(acc), Box::new(Condition::Dep(i)))
        })
    }

    pub fn eval(&self, satisfied: &[bool]) -> bool {
        match self {
            Condition::Dep(i) => satisfied[*i],
            Condition::Not(c) => !c.eval(satisfied),
            Condition::And(a, b) => a.eval(satisfied) && b.eval(satisfied),
            Condition::Or(a, b) => a.eval(satisfied) || b.eval(satisfied),
        }
    }

    /// Indices of the dependencies this condition mentions, sorted, unique.
    pub fn deps(&self) -> Vec<usize> {
        fn go(c: &Condition, out: &mut Vec<usize>) {
            match c {
                Condition::Dep(i) => out.push(*i),
                Condition::Not(c) => go(c, out),
                Condition::And(a, b) | Condition::Or(a, b) => {
                    go(a, out);
                    go(b, out);
                }
            }
        }
        let mut out = Vec::new();
        go(self, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("`{s}`"),
        Tok::And => "`&&`".into(),
        Tok::Or => "`||`".into(),
        Tok::Not => "`!`".into(),
        Tok::Open => "`(`".into(),
        Tok::Close => "`)`".into(),
    }
}

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, ConditionError> {
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        let col = at + 1;
        let two = |next: char| chars.get(i + 1).map(|(_, c)| *c) == Some(next);
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((Tok::Open, col));
                i += 1;
            }
            ')' => {
                out.push((Tok::Close, col));
                i += 1;
            }
            '!' => {
                out.push((Tok::Not, col));
                i += 1;
            }
            '&' if two('&') => {
                out.push((Tok::And, col));
                i += 2;
            }
            '|' if two('|') => {
                out.push((Tok::Or, col));
                i += 2;
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].1.is_ascii_alphanumeric() || matches!(chars[i].1, '_' | '-' | '.'))
                {
                    i += 1;
                }
                let name: String = chars[start..i].iter().map(|(_, c)| c).collect();
                out.push((Tok::Ident(name), col));
            }
            other => {
                return Err(ConditionError::Unexpected {
                    found: format!("`{other}`"),
                    col,
                    expected: "a dependency name, `!`, `(`, `&&` or `||`",
                })
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    deps: &'a [&'a str],
    end: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn or(&mut self) -> Result<Condition, ConditionError> {
        let mut left = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            left = Condition::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Condition, ConditionError> {
        let mut left = self.unary()?;
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            left = Condition::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Condition, ConditionError> {
        let Some((tok, col)) = self.toks.get(self.pos).cloned() else {
            return Err(ConditionError::Unexpected {
                found: "the end".into(),
                col: self.end,
                expected: "a dependency name, `!` or `(`",
            });
        };
        self.pos += 1;
        match tok {
            Tok::Not => Ok(Condition::Not(Box::new(self.unary()?))),
            Tok::Open => {
                let inner = self.or()?;
                match self.toks.get(self.pos) {
                    Some((Tok::Close, _)) => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    Some((t, col)) => Err(ConditionError::Unexpected {
                        found: describe(t),
                        col: *col,
                        expected: "`)`",
                    }),
                    None => Err(ConditionError::Unexpected {
                        found: "the end".into(),
                        col: self.end,
                        expected: "`)`",
                    }),
                }
            }
            Tok::Ident(name) => match self.deps.iter().position(|d| *d == name) {
                Some(i) => Ok(Condition::Dep(i)),
                None => Err(ConditionError::UnknownDependency {
                    name,
                    col,
                    known: self.deps.join(", "),
                }),
            },
            other => Err(ConditionError::Unexpected {
                found: describe(&other),
                col,
                expected: "a dependency name, `!` or `(`",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPS: [&str; 4] = ["a", "b", "c", "data-file"];

    fn parse(s: &str) -> Condition {
        Condition::parse(s, &DEPS).unwrap()
    }

    fn truth(s: &str, set: [bool; 4]) -> bool {
        parse(s).eval(&set)
    }

    #[test]
    fn and_binds_tighter_than_or() {
        // a || b && c  ==  a || (b && c)
        assert!(truth("a || b && c", [true, false, false, false]));
        assert!(!truth("a || b && c", [false, true, false, false]));
        assert_eq!(parse("a || b && c"), parse("a || (b && c)"));
        assert_ne!(parse("(a || b) && c"), parse("a || b && c"));
        assert!(!truth("(a || b) && c", [true, false, false, false]));
    }

    #[test]
    fn not_binds_tightest() {
        assert_eq!(parse("!a && b"), parse("(!a) && b"));
        assert!(truth("a && (b || !c)", [true, false, false, false]));
        assert!(!truth("a && (b || !c)", [true, false, true, false]));
        assert!(truth("!!a", [true, false, false, false]));
    }

    #[test]
    fn names_with_dashes_and_deps_listing() {
        assert!(truth("data-file", [false, false, false, true]));
        assert_eq!(parse("c && a || c").deps(), vec![0, 2]);
        assert_eq!(Condition::all_of(3).deps(), vec![0, 1, 2]);
        assert!(Condition::all_of(2).eval(&[true, true]));
        assert!(!Condition::all_of(2).eval(&[true, false]));
    }

    #[test]
    fn syntax_errors_say_where() {
        let err = |s: &str| Condition::parse(s, &DEPS).unwrap_err();
        assert_eq!(err(""), ConditionError::Empty);
        assert_eq!(err("   "), ConditionError::Empty);
        assert_eq!(
            err("a &&"),
            ConditionError::Unexpected {
                found: "the end".into(),
                col: 5,
                expected: "a dependency name, `!` or `(`"
            }
        );
        assert!(matches!(
            err("(a || b"),
            ConditionError::Unexpected {
                expected: "`)`",
                ..
            }
        ));
        assert!(matches!(
            err("a b"),
            ConditionError::Unexpected { col: 3, .. }
        ));
        assert!(matches!(
            err("a & b"),
            ConditionError::Unexpected { col: 3, .. }
        ));
        assert!(matches!(err("a )"), ConditionError::Unexpected { .. }));
        assert_eq!(
            err("a && nope").to_string(),
            "unknown dependency `nope` at column 6 (known: a, b, c, data-file)"
        );
    }
}
