//! The metric and label names a PromQL expression reads, from promql-parser's syntax tree, and
//! the sample names of a `/metrics` text: what the dashboard and alert tests compare. promtool
//! (the real parser) stays the judge of syntax; this only has to find the names.

#![allow(dead_code)] // each test target uses its part

use std::collections::{BTreeMap, BTreeSet};

use promql_parser::label::{Labels, Matcher};
use promql_parser::parser::{self, Expr, LabelModifier, VectorMatchCardinality, VectorSelector};
use promql_parser::util::{ExprVisitor, walk_expr};

/// The metric names and label names a PromQL expression selects.
#[derive(Debug, Default, PartialEq)]
pub struct Names {
    pub metrics: BTreeSet<String>,
    /// Names in `{...}` matchers and in `by`/`without`/`on`/`ignoring`/`group_*` lists.
    pub labels: BTreeSet<String>,
}

/// The names `expr` reads; panics (a test failure) naming the expression when it does not parse.
pub fn names(expr: &str) -> Names {
    let ast = parser::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
    let mut names = Names::default();
    let _ = walk_expr(&mut names, &ast);
    names
}

impl Names {
    fn selector(&mut self, vs: &VectorSelector) {
        self.metrics.extend(vs.name.clone());
        let or = vs.matchers.or_matchers.iter().flatten();
        for m in vs.matchers.matchers.iter().chain(or) {
            self.matcher(m);
        }
    }

    fn matcher(&mut self, m: &Matcher) {
        if m.name == "__name__" {
            self.metrics.insert(m.value.clone());
        } else {
            self.labels.insert(m.name.clone());
        }
    }

    fn list(&mut self, labels: &Labels) {
        self.labels.extend(labels.labels.iter().cloned());
    }

    fn modifier(&mut self, modifier: &LabelModifier) {
        match modifier {
            LabelModifier::Include(l) | LabelModifier::Exclude(l) => self.list(l),
        }
    }
}

impl ExprVisitor for Names {
    type Error = std::convert::Infallible;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
        match expr {
            Expr::VectorSelector(vs) => self.selector(vs),
            Expr::MatrixSelector(ms) => self.selector(&ms.vs),
            Expr::Aggregate(a) => {
                if let Some(m) = &a.modifier {
                    self.modifier(m);
                }
            }
            Expr::Binary(b) => {
                if let Some(m) = &b.modifier {
                    if let Some(matching) = &m.matching {
                        self.modifier(matching);
                    }
                    if let VectorMatchCardinality::ManyToOne(l)
                    | VectorMatchCardinality::OneToMany(l) = &m.card
                    {
                        self.list(l);
                    }
                }
            }
            _ => {}
        }
        Ok(true)
    }
}

/// The sample names of a Prometheus text exposition, each with the label names its samples carry
/// (`foo_bucket` -> {`le`, `op`}).
pub fn exported(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_string()).or_default();
        if line[end..].starts_with('{') {
            let body = &line[end + 1..line.rfind('}').unwrap_or(line.len())];
            // Label values are quoted; names are what precedes each `="`.
            for part in body.split("\",") {
                if let Some((name, _)) = part.split_once("=\"") {
                    labels.insert(name.trim_start_matches(',').trim().to_string());
                }
            }
        }
    }
    out
}
