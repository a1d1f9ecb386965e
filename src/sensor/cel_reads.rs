//! What a CEL program reads of the envelope, found once at load, and the
//! activation that holds only that: a filter such as
//! `body.commits.exists(c, …)` gets `body` with just `commits` in it, not the
//! whole 6 KB push converted into CEL values per event.
//!
//! The analysis walks the program's syntax tree. A field chain from an
//! envelope variable (`body.repository.name`) is a path, and so is
//! `has(body.a.b)` (the copy keeps `b` exactly when it is there); a
//! variable used any other way (`size(body)`, `headers['x']`, `type(body)`,
//! passed to a function) is read whole. Reading more than needed is always
//! safe; the copy keeps what makes an absent field or a wrong type fail
//! the same way (see [`prune`](crate::event::reads::prune)).

use std::collections::BTreeMap;

use cel::common::ast::{EntryExpr, Expr, IdedExpr};

use crate::event::ROOTS;

/// How much of one envelope variable a program reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Reads {
    Whole,
    /// Only these field paths under it (none a prefix of another).
    Paths(Vec<Vec<String>>),
}

/// The envelope variables a program reads, by name, and how much of each.
pub fn of(program: &cel::Program) -> BTreeMap<&'static str, Reads> {
    let mut found: BTreeMap<&'static str, Option<Vec<Vec<String>>>> = BTreeMap::new();
    walk(program.expression(), &mut found);
    found
        .into_iter()
        .map(|(root, paths)| {
            let reads = match paths {
                None => Reads::Whole,
                Some(paths) => Reads::Paths(crate::event::outermost(paths)),
            };
            (root, reads)
        })
        .collect()
}

/// `Some((root, path under it))` for `root.f1.f2…` (field selections only).
fn chain(e: &Expr) -> Option<(&'static str, Vec<String>)> {
    match e {
        Expr::Ident(name) => ROOTS
            .iter()
            .find(|r| **r == name.as_str())
            .map(|r| (*r, Vec::new())),
        Expr::Select(s) if !s.test => {
            let (root, mut path) = chain(&s.operand.expr)?;
            path.push(s.field.clone());
            Some((root, path))
        }
        _ => None,
    }
}

fn walk(e: &IdedExpr, found: &mut BTreeMap<&'static str, Option<Vec<Vec<String>>>>) {
    let mut note = |root: &'static str, path: Vec<String>| {
        let entry = found.entry(root).or_insert_with(|| Some(Vec::new()));
        match (entry, path.is_empty()) {
            (entry @ Some(_), true) => *entry = None,
            (Some(paths), false) => paths.push(path),
            (None, _) => {}
        }
    };
    match &e.expr {
        Expr::Ident(_) => {
            if let Some((root, _)) = chain(&e.expr) {
                note(root, Vec::new());
            }
        }
        // `has(x.f)` too: the copy keeps `f` when it is there (see `prune`).
        Expr::Select(s) => match chain(&s.operand.expr) {
            Some((root, mut path)) => {
                path.push(s.field.clone());
                note(root, path);
            }
            None => walk(&s.operand, found),
        },
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                walk(t, found);
            }
            for a in &c.args {
                walk(a, found);
            }
        }
        Expr::Comprehension(c) => {
            for part in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                walk(part, found);
            }
        }
        Expr::List(l) => l.elements.iter().for_each(|x| walk(x, found)),
        Expr::Map(m) => walk_entries(&m.entries, found),
        Expr::Struct(s) => walk_entries(&s.entries, found),
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn walk_entries(
    entries: &[cel::common::ast::IdedEntryExpr],
    found: &mut BTreeMap<&'static str, Option<Vec<Vec<String>>>>,
) {
    for entry in entries {
        match &entry.expr {
            EntryExpr::MapEntry(me) => {
                walk(&me.key, found);
                walk(&me.value, found);
            }
            EntryExpr::StructField(sf) => walk(&sf.value, found),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(expr: &str) -> BTreeMap<&'static str, Reads> {
        of(&cel::Program::compile(expr).unwrap())
    }

    fn paths(list: &[&str]) -> Reads {
        Reads::Paths(
            list.iter()
                .map(|p| p.split('.').map(str::to_string).collect())
                .collect(),
        )
    }

    #[test]
    fn field_chains_are_paths_anything_else_reads_the_whole_variable() {
        let r = reads(
            "body.commits.exists(c, c.modified.exists(f, f.startsWith('models/'))) && body.ref == 'x'",
        );
        assert_eq!(r.len(), 1);
        assert_eq!(r["body"], paths(&["body.commits", "body.ref"]).strip_root());
        let r = reads("has(body.pull_request.merged) && headers['x-github-event'] == 'pr'");
        assert_eq!(r["body"], paths(&["body.pull_request.merged"]).strip_root());
        assert_eq!(r["headers"], Reads::Whole);
        assert_eq!(reads("size(body) > 2")["body"], Reads::Whole);
        assert_eq!(reads("type(body) == map")["body"], Reads::Whole);
        // A path under another is covered by it.
        assert_eq!(
            reads("body.a == 1 || body.a.b == 2")["body"],
            paths(&["body.a"]).strip_root()
        );
        // Index calls stop the chain: `body.commits` is read whole.
        assert_eq!(
            reads("body.commits[0].id == 'x'")["body"],
            paths(&["body.commits"]).strip_root()
        );
        // A comprehension variable that shadows a root reads it whole (safe).
        assert_eq!(reads("[1].exists(body, body > 0)")["body"], Reads::Whole);
        assert!(!reads("1 == 1").contains_key("body"));
    }

    impl Reads {
        /// `body.x` written in tests → `x` under the variable.
        fn strip_root(self) -> Reads {
            match self {
                Reads::Paths(p) => Reads::Paths(p.into_iter().map(|p| p[1..].to_vec()).collect()),
                whole => whole,
            }
        }
    }
}
