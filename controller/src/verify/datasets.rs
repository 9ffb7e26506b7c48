//! Who vouched for each dataset digest of a statement, and the `--require-dataset` policy over it.
//!
//! A digest counts when the spec declared it or provenant observed it; one only the workload
//! reported counts only with `--allow-reported-datasets`. Statements written before each party's
//! digest had a field of its own (docs/provenance.md, "Migration") label a digest the workload
//! supplied for a dataset declared without one `["declared", "reported"]`: there, as everywhere, a
//! `declared` digest counts only when `externalParameters.datasets` declares that same digest.

use std::fmt;

use serde_json::Value;

/// Who gave a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// `spec.datasets[].digest`.
    Declared,
    /// Hashed by provenant itself (`provenant attest`).
    Observed,
    /// Said by the training workload.
    Reported,
}

impl Party {
    const ALL: [Party; 3] = [Party::Declared, Party::Observed, Party::Reported];

    pub fn word(self) -> &'static str {
        match self {
            Party::Declared => "declared",
            Party::Observed => "observed",
            Party::Reported => "reported",
        }
    }
}

/// One `dataset:*` dependency as the verifier reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetEvidence {
    pub name: String,
    /// The descriptor's digest, `sha256:<hex>`.
    pub digest: Option<String>,
    /// Each party's digest, as the statement records it and the spec confirms it.
    pub vouched: Vec<(Party, String)>,
    /// A digest labelled `declared` that `externalParameters.datasets` does not declare.
    pub unconfirmed_declared: Option<String>,
    /// The `source` annotation as written (for a dataset without a digest: who named it).
    pub source: Vec<String>,
}

impl DatasetEvidence {
    /// Who vouched for `digest`, or the `source` as written when nobody vouched for any digest.
    pub fn sources(&self) -> String {
        if self.vouched.is_empty() {
            return self.source.join("+");
        }
        let parties: Vec<&str> = self
            .vouched
            .iter()
            .filter(|(_, d)| Some(d) == self.digest.as_ref())
            .map(|(p, _)| p.word())
            .collect();
        parties.join("+")
    }

    fn vouches(&self, digest: &str, party: Party) -> bool {
        self.vouched.iter().any(|(p, d)| *p == party && d == digest)
    }
}

/// The `dataset:*` dependencies of a statement (best effort: what is malformed is left out, so it
/// satisfies no requirement).
pub fn evidence(statement: &Value) -> Vec<DatasetEvidence> {
    let definition = &statement["predicate"]["buildDefinition"];
    let spec_digest = |name: &str| -> Option<String> {
        definition["externalParameters"]["datasets"]
            .as_array()?
            .iter()
            .find(|d| d["name"] == name)?["digest"]
            .as_str()
            .map(String::from)
    };
    let mut out = Vec::new();
    for dep in definition["resolvedDependencies"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(name) = dep["name"]
            .as_str()
            .and_then(|n| n.strip_prefix("dataset:"))
        else {
            continue;
        };
        let digest = dep["digest"]["sha256"]
            .as_str()
            .map(|hex| format!("sha256:{hex}"));
        let annotations = &dep["annotations"];
        let source: Vec<String> = annotations["source"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect();
        let field = |party: Party| format!("{}Digest", party.word());
        let per_party = Party::ALL
            .iter()
            .any(|p| annotations.get(field(*p)).is_some());
        let claimed: Vec<(Party, String)> = if per_party {
            Party::ALL
                .into_iter()
                .filter_map(|p| Some((p, annotations[field(p)].as_str()?.to_string())))
                .collect()
        } else {
            // The format before per-party fields: `source` names who gave `digest`.
            Party::ALL
                .into_iter()
                .filter(|p| source.iter().any(|s| s == p.word()))
                .filter_map(|p| Some((p, digest.clone()?)))
                .collect()
        };
        let declared = spec_digest(name);
        let mut unconfirmed_declared = None;
        let vouched = claimed
            .into_iter()
            .filter(|(party, d)| {
                let confirmed = *party != Party::Declared || declared.as_ref() == Some(d);
                if !confirmed {
                    unconfirmed_declared = Some(d.clone());
                }
                confirmed
            })
            .collect();
        out.push(DatasetEvidence {
            name: name.to_string(),
            digest,
            vouched,
            unconfirmed_declared,
            source,
        });
    }
    out
}

/// `--require-dataset [NAME=]sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRequirement {
    /// The dataset that must have the digest; any dataset when absent.
    pub name: Option<String>,
    /// `sha256:<hex>`.
    pub digest: String,
}

impl DatasetRequirement {
    /// Parse `sha256:<hex>` or `NAME=sha256:<hex>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, digest) = match text.rsplit_once('=') {
            Some((name, digest)) => (Some(name), digest),
            None => (None, text),
        };
        if name.is_some_and(str::is_empty) {
            return Err(format!(
                "{text:?}: the dataset name before '=' is empty (give NAME=sha256:<hex> or sha256:<hex>)"
            ));
        }
        let hex = digest.strip_prefix("sha256:").unwrap_or_default();
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!(
                "{text:?}: the digest must be sha256: and 64 lowercase hex digits (give NAME=sha256:<hex> or sha256:<hex>)"
            ));
        }
        Ok(DatasetRequirement {
            name: name.map(String::from),
            digest: digest.to_string(),
        })
    }
}

impl fmt::Display for DatasetRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name}={}", self.digest),
            None => f.write_str(&self.digest),
        }
    }
}

/// Why `want` is not met by `datasets`, or `None` when it is.
pub fn unmet(
    want: &DatasetRequirement,
    datasets: &[DatasetEvidence],
    allow_reported: bool,
) -> Option<String> {
    let digest = want.digest.as_str();
    let candidates: Vec<&DatasetEvidence> = datasets
        .iter()
        .filter(|d| want.name.as_ref().is_none_or(|n| n == &d.name))
        .collect();
    let accepted = |d: &DatasetEvidence| {
        d.vouches(digest, Party::Declared)
            || d.vouches(digest, Party::Observed)
            || (allow_reported && d.vouches(digest, Party::Reported))
    };
    if candidates.iter().any(|d| accepted(d)) {
        return None;
    }
    let only_reported = candidates.iter().find(|d| {
        d.vouches(digest, Party::Reported) || d.unconfirmed_declared.as_deref() == Some(digest)
    });
    if let Some(d) = only_reported {
        let legacy = if d.unconfirmed_declared.as_deref() == Some(digest) {
            " (the statement labels it declared, but externalParameters.datasets does not declare \
             it: in statements written before each source had its own digest field, \
             [\"declared\", \"reported\"] also meant a digest the workload supplied)"
        } else {
            ""
        };
        return Some(format!(
            "required dataset {want}: the digest of dataset {:?} was only reported by the training \
             workload, not declared in the spec nor observed{legacy}; a reported digest is accepted \
             only with --allow-reported-datasets",
            d.name
        ));
    }
    let listed = |d: &DatasetEvidence| {
        format!(
            "{} {} ({})",
            d.name,
            d.digest.as_deref().unwrap_or("no digest"),
            d.sources()
        )
    };
    let message = match (&want.name, candidates.first()) {
        (Some(name), Some(_)) => format!(
            "required dataset {want}: dataset {name:?} is recorded as {}",
            candidates
                .iter()
                .map(|d| listed(d))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (Some(name), None) => format!(
            "required dataset {want}: the statement has no dataset {name:?} ({})",
            list(datasets.iter().map(listed).collect())
        ),
        (None, _) => {
            let kinds = if allow_reported {
                "declared, observed or reported"
            } else {
                "declared or observed"
            };
            let digests: Vec<String> = datasets
                .iter()
                .filter(|d| {
                    d.vouched
                        .iter()
                        .any(|(p, _)| allow_reported || *p != Party::Reported)
                })
                .map(listed)
                .collect();
            format!(
                "required dataset {want} is not among the {kinds} datasets ({})",
                list(digests)
            )
        }
    };
    Some(message)
}

fn list(items: Vec<String>) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn hex(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn statement(declared: Value, deps: Value) -> Value {
        json!({"predicate": {"buildDefinition": {
            "externalParameters": {"datasets": declared},
            "resolvedDependencies": deps,
        }}})
    }

    fn req(text: &str) -> DatasetRequirement {
        DatasetRequirement::parse(text).unwrap()
    }

    #[test]
    fn requirements_parse_and_bad_ones_say_why() {
        assert_eq!(
            req(&format!("wiki={}", d('a'))),
            DatasetRequirement {
                name: Some("wiki".into()),
                digest: d('a')
            }
        );
        assert_eq!(req(&d('a')).name, None);
        for (bad, why) in [
            (format!("={}", d('a')), "name before '=' is empty"),
            ("wiki=sha256:abc".to_string(), "64 lowercase hex"),
            (hex('a'), "must be sha256:"),
            (format!("wiki={}", d('A')), "64 lowercase hex"),
        ] {
            let err = DatasetRequirement::parse(&bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn per_party_digests_are_read_as_written() {
        let s = statement(
            json!([{"name": "a", "digest": d('a')}, {"name": "b"}]),
            json!([
                {"name": "dataset:a", "digest": {"sha256": hex('a')},
                 "annotations": {"declaredDigest": d('a'), "reportedDigest": d('a'), "source": ["declared", "reported"]}},
                {"name": "dataset:b", "digest": {"sha256": hex('b')},
                 "annotations": {"reportedDigest": d('b'), "source": ["reported"]}},
                {"name": "dataset:c", "digest": {"sha256": hex('c')},
                 "annotations": {"observedDigest": d('c'), "source": ["observed"]}},
                {"name": "image", "digest": {"sha256": hex('i')}}
            ]),
        );
        let e = evidence(&s);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].sources(), "declared+reported");
        assert_eq!(e[1].sources(), "reported");
        assert_eq!(e[2].sources(), "observed");
        assert_eq!(unmet(&req(&format!("a={}", d('a'))), &e, false), None);
        assert_eq!(unmet(&req(&d('c')), &e, false), None);
        let refused = unmet(&req(&format!("b={}", d('b'))), &e, false).unwrap();
        assert!(
            refused.contains("dataset \"b\" was only reported by the training workload")
                && refused.contains("--allow-reported-datasets")
                && !refused.contains("labels it declared"),
            "{refused}"
        );
        assert_eq!(unmet(&req(&d('b')), &e, true), None);
        // The name binds the digest to that dataset.
        let wrong = unmet(&req(&format!("a={}", d('c'))), &e, false).unwrap();
        assert!(wrong.contains("dataset \"a\" is recorded as a"), "{wrong}");
        let missing = unmet(&req(&format!("z={}", d('a'))), &e, false).unwrap();
        assert!(missing.contains("has no dataset \"z\""), "{missing}");
        let absent = unmet(&req(&d('f')), &e, false).unwrap();
        assert!(
            absent.contains("is not among the declared or observed datasets")
                && !absent.contains(&d('b')),
            "{absent}"
        );
    }

    /// The format before per-party fields: `["declared", "reported"]` was written both when the
    /// spec declared the digest the workload reported and when the workload supplied the digest
    /// of a dataset declared without one; only the spec can tell them apart.
    #[test]
    fn the_old_merged_label_counts_as_declared_only_when_the_spec_declares_it() {
        let s = statement(
            json!([{"name": "a", "digest": d('a')}, {"name": "b", "uri": "gs://b"}]),
            json!([
                {"name": "dataset:a", "digest": {"sha256": hex('a')}, "annotations": {"source": ["declared", "reported"]}},
                {"name": "dataset:b", "digest": {"sha256": hex('b')}, "annotations": {"source": ["declared", "reported"]}},
                {"name": "dataset:c", "annotations": {"source": ["declared"]}},
                {"name": "dataset:d", "digest": {"sha256": hex('d')}}
            ]),
        );
        let e = evidence(&s);
        assert_eq!(e[0].sources(), "declared+reported");
        assert_eq!(e[1].sources(), "reported");
        assert_eq!(e[1].unconfirmed_declared, Some(d('b')));
        assert_eq!(e[2].sources(), "declared");
        assert!(e[3].vouched.is_empty(), "no source: nobody vouched");
        assert_eq!(unmet(&req(&d('a')), &e, false), None);
        let refused = unmet(&req(&d('b')), &e, false).unwrap();
        assert!(
            refused.contains("dataset \"b\" was only reported")
                && refused.contains("labels it declared"),
            "{refused}"
        );
        assert_eq!(unmet(&req(&d('b')), &e, true), None);
        assert!(unmet(&req(&d('d')), &e, true).is_some());
    }
}
