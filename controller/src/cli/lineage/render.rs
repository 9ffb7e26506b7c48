//! The answers of `provenant lineage`: the JSON shape (docs/lineage.md, "Queries": field names
//! are part of the interface) and the text table. Pure: answer in, text out.

use std::fmt::Write as _;

use serde::Serialize;

use super::sources::{Rejected, SourceReport};
use crate::lineage::{Fact, ModelRef, RunRef, Step, Upstream};
use crate::provenance::revocation::{RevocationPredicate, describe};

/// What was asked.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Question {
    /// `dataset`, `image`, `baseModel`, `code` or `model`.
    pub kind: &'static str,
    /// As given (a digest, a name, a reference, a commit).
    pub value: String,
    /// `dependents` (models from a material), `descendants` (models trained from a model) or
    /// `upstream` (what went into a model).
    pub direction: &'static str,
    /// Through base models (false with `--direct`).
    pub transitive: bool,
}

/// A model that depends on what was asked about.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelAnswer {
    pub model: ModelRef,
    /// `repository@sha256:<hex>`.
    pub reference: String,
    /// Trained from it in one run, not through a base model.
    pub direct: bool,
    /// From the material to the model, one step per run.
    pub path: Vec<Step>,
    /// Revocations in force (verified revocation attestations found beside it).
    pub revoked: Vec<RevocationPredicate>,
}

/// What went into a model, recursively through its base model.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamAnswer {
    pub model: ModelRef,
    pub reference: String,
    pub run: RunRef,
    pub build_type: String,
    pub builder_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_on: Option<String>,
    pub materials: Vec<Fact>,
    pub revoked: Vec<RevocationPredicate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<Box<UpstreamAnswer>>,
}

impl UpstreamAnswer {
    pub fn new(u: Upstream, revoked: &dyn Fn(&str) -> Vec<RevocationPredicate>) -> Self {
        UpstreamAnswer {
            reference: u.model.reference(),
            revoked: revoked(&u.model.digest),
            model: u.model,
            run: u.run,
            build_type: u.build_type,
            builder_id: u.builder_id,
            finished_on: u.finished_on,
            materials: u.materials,
            base: u.base.map(|b| Box::new(UpstreamAnswer::new(*b, revoked))),
        }
    }
}

/// The whole answer (`--output json`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer<'a> {
    pub question: Question,
    /// For `dependents` and `descendants`: sorted by path length, then model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<ModelAnswer>>,
    /// For `upstream`: null when no run read produced the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Option<UpstreamAnswer>>,
    pub sources: &'a [SourceReport],
    /// Envelopes and records not counted, with the reason.
    pub rejected: &'a [Rejected],
}

/// `sha256:` and the first 12 hex digits (a commit: its first 12 characters).
pub fn short(digest: &str) -> String {
    let (prefix, rest) = match digest.strip_prefix("sha256:") {
        Some(hex) => ("sha256:", hex),
        None => ("", digest),
    };
    if rest.chars().count() <= 12 {
        return digest.to_string();
    }
    format!("{prefix}{}…", rest.chars().take(12).collect::<String>())
}

fn short_ref(model: &ModelRef) -> String {
    format!("{}@{}", model.repository, short(&model.digest))
}

/// A fact for a person: kind, name (or the code's URI), short digest.
fn fact(f: &Fact) -> String {
    let mut words = vec![f.kind.word().to_string()];
    if !f.name.is_empty() {
        words.push(f.name.clone());
    } else if let (crate::lineage::Kind::Code, Some(uri)) = (f.kind, &f.uri) {
        words.push(uri.clone());
    }
    words.push(f.digest.as_deref().map(short).unwrap_or_else(|| "-".into()));
    words.join(" ")
}

fn vouched(f: &Fact) -> String {
    if f.sources.is_empty() {
        "-".into()
    } else {
        f.sources.join("+")
    }
}

/// Rows as aligned columns.
fn table(header: &[&str], rows: &[Vec<String>], indent: &str) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = indent.to_string();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                let _ = write!(line, "{cell}{}  ", " ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// What the question names, in words.
fn subject(q: &Question) -> String {
    let value = if q.value.starts_with("sha256:") {
        short(&q.value)
    } else {
        q.value.clone()
    };
    let kind = match q.kind {
        "baseModel" => "base model",
        other => other,
    };
    format!("{kind} {value}")
}

/// The text answer (stdout).
pub fn text(answer: &Answer) -> String {
    let q = &answer.question;
    let mut out = String::new();
    if let Some(models) = &answer.models {
        let how = match (q.direction, q.transitive) {
            ("descendants", _) => "trained from it, directly or through base models",
            (_, true) => "transitively through base models",
            (_, false) => "directly, not through base models",
        };
        match models.len() {
            0 => {
                let _ = writeln!(out, "no model from {} ({how})", subject(q));
                return out;
            }
            1 => {
                let _ = writeln!(out, "1 model from {} ({how})\n", subject(q));
            }
            n => {
                let _ = writeln!(out, "{n} models from {} ({how})\n", subject(q));
            }
        }
        let mut rows = Vec::new();
        let mut notes = Vec::new();
        for m in models {
            for (i, step) in m.path.iter().rev().enumerate() {
                let model = if i == 0 {
                    short_ref(&m.model)
                } else {
                    format!("  ← {}", short_ref(&step.model))
                };
                rows.push(vec![
                    model,
                    step.run.display(),
                    fact(&step.via),
                    vouched(&step.via),
                ]);
            }
            if m.path.is_empty() {
                let row = [short_ref(&m.model), "-".into(), "-".into(), "-".into()];
                rows.push(row.into());
            }
            for p in &m.revoked {
                notes.push(format!("REVOKED {}: {}", short_ref(&m.model), describe(p)));
            }
        }
        out.push_str(&table(&["MODEL", "RUN", "VIA", "VOUCHED"], &rows, ""));
        for note in notes {
            let _ = writeln!(out, "\n{note}");
        }
    }
    if let Some(upstream) = &answer.upstream {
        match upstream {
            None => {
                let _ = writeln!(out, "no run read produced {}", subject(q));
            }
            Some(u) => upstream_text(u, 0, &mut out),
        }
    }
    out
}

fn upstream_text(u: &UpstreamAnswer, depth: usize, out: &mut String) {
    let indent = "    ".repeat(depth);
    let finished = u
        .finished_on
        .as_deref()
        .map(|f| format!(", finished {f}"))
        .unwrap_or_default();
    let _ = writeln!(out, "{indent}{}", u.reference);
    let _ = writeln!(
        out,
        "{indent}  run {} (builder {}{finished})",
        u.run.display(),
        u.builder_id
    );
    for p in &u.revoked {
        let _ = writeln!(out, "{indent}  REVOKED {}", describe(p));
    }
    let rows: Vec<Vec<String>> = u
        .materials
        .iter()
        .map(|f| {
            let name = if f.name.is_empty() {
                f.uri.clone().unwrap_or_default()
            } else {
                f.name.clone()
            };
            // A reference pinned by digest: the digest is in its own column.
            let name = match name.rsplit_once('@') {
                Some((repository, digest)) if digest.starts_with("sha256:") => {
                    format!("{repository}@{}", short(digest))
                }
                _ => name,
            };
            vec![
                f.kind.word().to_string(),
                name,
                f.digest.as_deref().map(short).unwrap_or_else(|| "-".into()),
                vouched(f),
            ]
        })
        .collect();
    out.push_str(&table(
        &["KIND", "NAME", "DIGEST", "VOUCHED"],
        &rows,
        &format!("{indent}  "),
    ));
    if let Some(base) = &u.base {
        let _ = writeln!(out, "{indent}  base model:");
        upstream_text(base, depth + 1, out);
    }
}

fn count(n: usize, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// What was read and what was not counted (stderr): a rejected envelope is never silent.
pub fn notes(sources: &[SourceReport], rejected: &[Rejected]) -> String {
    let mut out = String::new();
    for s in sources {
        let unit = if s.source.starts_with("cluster:") {
            "record"
        } else {
            "subject"
        };
        let _ = writeln!(
            out,
            "read {}: {}, {} provenance, {}, {} other, {} not counted",
            s.source,
            count(s.read, unit),
            s.provenance,
            count(s.revocations, "revocation"),
            s.ignored,
            s.rejected
        );
    }
    for r in rejected {
        let envelope = r
            .envelope
            .as_deref()
            .map(|e| format!(" (envelope {e})"))
            .unwrap_or_default();
        let _ = writeln!(out, "not counted: {}{envelope}: {}", r.at, r.reason);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_shortened_for_people_only() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(short(&d), "sha256:abababababab…");
        assert_eq!(short("0123456789abcdef"), "0123456789ab…");
        assert_eq!(short("v1"), "v1");
        assert_eq!(short("ééééééééééééééé"), "éééééééééééé…");
    }

    #[test]
    fn columns_align() {
        let rows = vec![
            vec!["a".into(), "bb".into()],
            vec!["ccc".into(), "d".into()],
        ];
        assert_eq!(table(&["X", "Y"], &rows, ""), "X    Y\na    bb\nccc  d\n");
    }
}
