//! Merge what the spec declared, what the controller observed and what the workers reported into
//! the run's materials. Each dataset's `sources` are exactly the parties that gave its recorded
//! digest: a report may supply a digest the spec left out, but then only the workload vouches for
//! it, and it never contradicts a declared digest.

use std::collections::BTreeMap;

use crate::api::{
    DatasetMaterial, DatasetRef, ImageMaterial, Materials, OutputRecord, Source, WorkerRecord,
};

use super::report::{OutputRef, ReportedDataset};

/// A reported fact contradicts another one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaterialsError {
    #[error(
        "dataset {name:?}: worker {pod} reported digest {reported}, but spec.datasets declares {declared}"
    )]
    DeclaredDigestContradicted {
        name: String,
        declared: String,
        reported: String,
        pod: String,
    },
    #[error(
        "dataset {name:?}: workers reported different digests ({first} by {first_pod}, {second} by {second_pod})"
    )]
    ReportsDisagree {
        name: String,
        first: String,
        first_pod: String,
        second: String,
        second_pod: String,
    },
}

impl MaterialsError {
    /// Condition reason (CamelCase, stable).
    pub fn reason(&self) -> &'static str {
        "DatasetDigestMismatch"
    }
}

/// What one worker reported, attributed to its pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerReport {
    pub pod: String,
    pub datasets: Vec<ReportedDataset>,
    pub outputs: Vec<OutputRef>,
}

/// The reports kept in the worker records (validated when they were recorded).
pub fn reports_of(workers: &[WorkerRecord]) -> Vec<WorkerReport> {
    workers
        .iter()
        .filter_map(|w| {
            let report = w.report.as_ref()?;
            Some(WorkerReport {
                pod: w.pod_name.clone(),
                datasets: report
                    .datasets
                    .iter()
                    .map(|d| ReportedDataset {
                        name: d.name.clone(),
                        digest: d.digest.clone(),
                    })
                    .collect(),
                outputs: report
                    .outputs
                    .iter()
                    .filter_map(|o| super::report::parse_output(o))
                    .collect(),
            })
        })
        .collect()
}

/// A dataset as the spec declares it: named by the spec, and its digest (when the spec gives one)
/// vouched for by the spec.
pub fn declared_material(d: &DatasetRef) -> DatasetMaterial {
    DatasetMaterial {
        name: d.name.clone(),
        uri: Some(d.uri.clone()),
        digest: d.digest.clone(),
        sources: vec![Source::Declared],
    }
}

/// `source` vouches for `digest` as the digest of `material`. The sources stay exactly the
/// parties that gave the recorded digest: on a material without a digest (a dataset the spec only
/// named) `source` becomes the only one, so a digest the workload supplies is never labelled
/// declared. A different digest is refused: `Err` holds the one already recorded.
pub fn vouch(material: &mut DatasetMaterial, source: Source, digest: &str) -> Result<(), String> {
    match &material.digest {
        Some(recorded) if recorded != digest => Err(recorded.clone()),
        Some(_) => {
            if !material.sources.contains(&source) {
                material.sources.push(source);
            }
            Ok(())
        }
        None => {
            material.digest = Some(digest.to_string());
            material.sources = vec![source];
            Ok(())
        }
    }
}

/// Merge declared datasets with the workers' reports, and collect the images the workers ran.
pub fn merge(
    declared: &[DatasetRef],
    workers: &[WorkerRecord],
    reports: &[WorkerReport],
) -> Result<Materials, MaterialsError> {
    // name → (digest, pod) of the first report, to catch workers that disagree.
    let mut reported: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    for r in reports {
        for d in &r.datasets {
            match reported.get(d.name.as_str()) {
                Some((digest, pod)) if *digest != d.digest => {
                    return Err(MaterialsError::ReportsDisagree {
                        name: d.name.clone(),
                        first: digest.to_string(),
                        first_pod: pod.to_string(),
                        second: d.digest.clone(),
                        second_pod: r.pod.clone(),
                    });
                }
                Some(_) => {}
                None => {
                    reported.insert(&d.name, (&d.digest, &r.pod));
                }
            }
        }
    }

    let mut datasets = Vec::new();
    for d in declared {
        let mut material = declared_material(d);
        if let Some((rep, pod)) = reported.remove(d.name.as_str()) {
            vouch(&mut material, Source::Reported, rep).map_err(|declared| {
                MaterialsError::DeclaredDigestContradicted {
                    name: d.name.clone(),
                    declared,
                    reported: rep.to_string(),
                    pod: pod.to_string(),
                }
            })?;
        }
        datasets.push(material);
    }
    // Reported but not declared: recorded, marked as reported only.
    for (name, (digest, _)) in reported {
        datasets.push(DatasetMaterial {
            name: name.to_string(),
            uri: None,
            digest: Some(digest.to_string()),
            sources: vec![Source::Reported],
        });
    }

    // Every distinct (image, digest) the kubelets reported; a tag that moved mid-run shows twice.
    let mut images: Vec<ImageMaterial> = workers
        .iter()
        .flat_map(|w| &w.containers)
        .filter_map(|c| {
            Some(ImageMaterial {
                image: c.image.clone(),
                digest: c.digest.clone()?,
            })
        })
        .collect();
    images.sort_by(|a, b| (&a.image, &a.digest).cmp(&(&b.image, &b.digest)));
    images.dedup();

    Ok(Materials { datasets, images })
}

/// Outputs reported by all workers, de-duplicated, not yet verified against the registry.
pub fn outputs(reports: &[WorkerReport]) -> Vec<OutputRecord> {
    let mut out: Vec<OutputRecord> = reports
        .iter()
        .flat_map(|r| &r.outputs)
        .map(|o| OutputRecord {
            uri: o.uri.clone(),
            repository: o.repository.clone(),
            digest: o.digest.clone(),
            verified: false,
        })
        .collect();
    out.sort_by(|a, b| (&a.repository, &a.digest).cmp(&(&b.repository, &b.digest)));
    out.dedup_by(|a, b| a.repository == b.repository && a.digest == b.digest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ContainerRecord;

    fn d(n: char) -> String {
        format!("sha256:{}", n.to_string().repeat(64))
    }

    fn declared(name: &str, digest: Option<String>) -> DatasetRef {
        DatasetRef {
            name: name.into(),
            uri: format!("gs://data/{name}"),
            digest,
            license: None,
        }
    }

    fn report(pod: &str, datasets: &[(&str, String)]) -> WorkerReport {
        WorkerReport {
            pod: pod.into(),
            datasets: datasets
                .iter()
                .map(|(n, dg)| ReportedDataset {
                    name: n.to_string(),
                    digest: dg.clone(),
                })
                .collect(),
            outputs: vec![],
        }
    }

    #[test]
    fn declared_and_reported_merge_with_sources() {
        let spec = [
            declared("a", Some(d('a'))),
            declared("b", None),
            declared("c", None),
        ];
        let reports = [
            report("w-0", &[("a", d('a')), ("b", d('b')), ("extra", d('e'))]),
            report("w-1", &[("b", d('b'))]),
        ];
        let m = merge(&spec, &[], &reports).unwrap();
        let by_name: BTreeMap<_, _> = m.datasets.iter().map(|x| (x.name.as_str(), x)).collect();
        // Declared with a digest and reported with the same: both vouch for it.
        assert_eq!(by_name["a"].sources, [Source::Declared, Source::Reported]);
        assert_eq!(by_name["a"].digest, Some(d('a')));
        // Declared without a digest, reported with one: only the workload vouches for it.
        assert_eq!(by_name["b"].sources, [Source::Reported]);
        assert_eq!(by_name["b"].digest, Some(d('b')));
        assert_eq!(by_name["b"].uri.as_deref(), Some("gs://data/b"));
        assert_eq!(
            (
                by_name["c"].sources.as_slice(),
                by_name["c"].digest.as_ref()
            ),
            ([Source::Declared].as_slice(), None)
        );
        assert_eq!(by_name["extra"].sources, [Source::Reported]);
        assert_eq!(by_name["extra"].uri, None);
    }

    #[test]
    fn vouching_keeps_exactly_who_gave_the_digest() {
        let mut m = declared_material(&declared("x", None));
        assert_eq!(
            (m.digest.as_ref(), m.sources.as_slice()),
            (None, [Source::Declared].as_slice())
        );
        vouch(&mut m, Source::Observed, &d('1')).unwrap();
        assert_eq!(m.sources, [Source::Observed]);
        vouch(&mut m, Source::Reported, &d('1')).unwrap();
        vouch(&mut m, Source::Reported, &d('1')).unwrap();
        assert_eq!(m.sources, [Source::Observed, Source::Reported]);
        assert_eq!(vouch(&mut m, Source::Reported, &d('2')), Err(d('1')));
        assert_eq!(m.digest, Some(d('1')));

        let mut m = declared_material(&declared("y", Some(d('3'))));
        vouch(&mut m, Source::Observed, &d('3')).unwrap();
        assert_eq!(m.sources, [Source::Declared, Source::Observed]);
    }

    #[test]
    fn a_report_cannot_override_a_declared_digest() {
        let err = merge(
            &[declared("a", Some(d('a')))],
            &[],
            &[report("w-0", &[("a", d('f'))])],
        )
        .unwrap_err();
        assert_eq!(err.reason(), "DatasetDigestMismatch");
        assert!(err.to_string().contains("spec.datasets declares"), "{err}");
        let err = merge(
            &[],
            &[],
            &[
                report("w-0", &[("a", d('a'))]),
                report("w-1", &[("a", d('b'))]),
            ],
        )
        .unwrap_err();
        assert!(
            matches!(err, MaterialsError::ReportsDisagree { .. }),
            "{err}"
        );
    }

    #[test]
    fn images_are_distinct_observed_digests() {
        let worker = |digest: Option<String>| WorkerRecord {
            containers: vec![ContainerRecord {
                name: "trainer".into(),
                image: "reg.io/t:v1".into(),
                digest,
                image_id: None,
            }],
            ..Default::default()
        };
        let m = merge(
            &[],
            &[
                worker(Some(d('1'))),
                worker(Some(d('1'))),
                worker(Some(d('2'))),
                worker(None),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(m.images.len(), 2);
    }
}
