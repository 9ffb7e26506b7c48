//! What a revocation reaches, pure: the affected models of a [`RevokedMaterial`] in the lineage
//! index, and the status that lists them (bounded in count and bytes), with each model's path
//! in words. No API calls here; mod.rs does those.

use crate::api::{AffectedModel, AffectedRun, MaterialType, PathStep, RevokedMaterial};
use crate::lineage::{Hit, LineageIndex, Query};
use crate::provenance::revocation as predicate;

/// Bytes of `affectedModels` at most: a status stays well inside etcd's 1.5 MiB request limit
/// however long the paths are (the list is cut, `truncated` set, the count kept).
pub const MAX_LISTED_BYTES: usize = 512 * 1024;

/// Every model that depends on `material`, transitively through base models, nearest first.
pub fn find(index: &LineageIndex, material: &RevokedMaterial) -> Vec<Hit> {
    let digest = material.digest.to_ascii_lowercase();
    match material.type_ {
        MaterialType::Dataset => index.find(&Query::Dataset(digest), true),
        MaterialType::Image => index.find(&Query::Image(digest), true),
        MaterialType::Model => index.model_and_descendants(&digest),
    }
}

/// The predicate's name for an API material type.
pub fn predicate_type(type_: MaterialType) -> predicate::MaterialType {
    match type_ {
        MaterialType::Dataset => predicate::MaterialType::Dataset,
        MaterialType::Image => predicate::MaterialType::Image,
        MaterialType::Model => predicate::MaterialType::Model,
    }
}

/// The path from the material to `hit.model`, in words: `dataset sha256:… → run ns/a (its
/// dataset, declared) → repo@sha256:… → …`.
pub fn path_words(material: &RevokedMaterial, hit: &Hit) -> String {
    let mut words = format!(
        "{} {}",
        predicate_type(material.type_).word(),
        material.digest
    );
    if hit.path.is_empty() {
        words.push_str(" (the revoked model itself)");
    }
    for step in &hit.path {
        words.push_str(&format!(
            " → run {} (its {}, {}) → {}",
            step.run.display(),
            step.via.kind.word(),
            step.via.sources.join("+"),
            step.model.reference()
        ));
    }
    words
}

/// The status entry of one affected model; `attached` as known.
pub fn listed(material: &RevokedMaterial, hit: &Hit, attached: bool) -> AffectedModel {
    let run = hit.path.last().map(|step| AffectedRun {
        namespace: step.run.namespace.clone(),
        name: step.run.name.clone(),
        uid: step.run.invocation_id.clone(),
    });
    AffectedModel {
        model: hit.model.reference(),
        run,
        path: path_words(material, hit),
        steps: hit
            .path
            .iter()
            .map(|step| PathStep {
                run: step.run.display(),
                via: step.via.kind.word().to_string(),
                sources: step.via.sources.clone(),
                model: step.model.reference(),
            })
            .collect(),
        attached,
    }
}

/// The listed part of `all`: at most `max` entries and [`MAX_LISTED_BYTES`]; whether it was cut.
pub fn bounded(all: Vec<AffectedModel>, max: usize) -> (Vec<AffectedModel>, bool) {
    let total = all.len();
    let mut bytes = 0;
    let mut out = Vec::new();
    for model in all.into_iter().take(max) {
        // Plain data always serializes; its length is what the API server stores.
        bytes += serde_json::to_vec(&model).map_or(0, |v| v.len());
        if bytes > MAX_LISTED_BYTES {
            break;
        }
        out.push(model);
    }
    let truncated = out.len() < total;
    (out, truncated)
}

/// The message of the `Revoked` condition of a run whose model is affected.
pub fn run_message(name: &str, reason: &str, advisory: Option<&str>, path: &str) -> String {
    let advisory = advisory.map(|a| format!(" ({a})")).unwrap_or_default();
    format!("revoked by MaterialRevocation {name}: {reason}{advisory}; path: {path}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lineage::{Fact, Kind, LineageEntry, ModelRef, RunRef};

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn entry(name: &str, model: char, facts: Vec<Fact>) -> LineageEntry {
        LineageEntry {
            run: RunRef {
                namespace: "ml".into(),
                name: name.into(),
                invocation_id: format!("uid-{name}"),
            },
            build_type: String::new(),
            builder_id: String::new(),
            finished_on: None,
            models: vec![ModelRef {
                repository: "reg.io/models/m".into(),
                digest: digest(model),
            }],
            materials: facts,
            envelope_digest: None,
        }
    }

    fn fact(kind: Kind, d: &str) -> Fact {
        Fact {
            kind,
            name: String::new(),
            uri: None,
            digest: Some(d.to_string()),
            sources: vec!["declared".into()],
        }
    }

    /// base (dataset d, image i) → tuned (base model a) → tuned2 (base model b); other (dataset e).
    fn index() -> LineageIndex {
        LineageIndex::new([
            entry(
                "base",
                'a',
                vec![
                    fact(Kind::Dataset, &digest('d')),
                    fact(Kind::Image, &digest('9')),
                ],
            ),
            entry("tuned", 'b', vec![fact(Kind::BaseModel, &digest('a'))]),
            entry("tuned2", 'c', vec![fact(Kind::BaseModel, &digest('b'))]),
            entry("other", 'f', vec![fact(Kind::Dataset, &digest('e'))]),
        ])
    }

    fn material(type_: MaterialType, c: char) -> RevokedMaterial {
        RevokedMaterial {
            type_,
            digest: digest(c),
        }
    }

    #[test]
    fn a_dataset_reaches_the_fine_tunes_of_its_models_and_nothing_else() {
        let hits = find(&index(), &material(MaterialType::Dataset, 'd'));
        let models: Vec<_> = hits.iter().map(|h| h.model.digest.clone()).collect();
        assert_eq!(models, [digest('a'), digest('b'), digest('c')]);
        let words = path_words(&material(MaterialType::Dataset, 'd'), &hits[2]);
        assert_eq!(
            words,
            format!(
                "dataset {} → run ml/base (its dataset, declared) → reg.io/models/m@{} → run ml/tuned (its baseModel, declared) → reg.io/models/m@{} → run ml/tuned2 (its baseModel, declared) → reg.io/models/m@{}",
                digest('d'),
                digest('a'),
                digest('b'),
                digest('c')
            )
        );
        let listed = listed(&material(MaterialType::Dataset, 'd'), &hits[2], false);
        assert_eq!(listed.run.as_ref().map(|r| r.name.as_str()), Some("tuned2"));
        assert_eq!(listed.steps.len(), 3);
        assert_eq!(listed.steps[1].via, "baseModel");
    }

    #[test]
    fn an_image_and_a_model_reach_what_they_should() {
        let image = find(&index(), &material(MaterialType::Image, '9'));
        assert_eq!(image.len(), 3);
        let model = find(&index(), &material(MaterialType::Model, 'b'));
        let models: Vec<_> = model.iter().map(|h| h.model.digest.clone()).collect();
        assert_eq!(models, [digest('b'), digest('c')]);
        assert!(model[0].path.is_empty());
        let own = listed(&material(MaterialType::Model, 'b'), &model[0], true);
        assert!(own.run.is_none());
        assert!(
            own.path.ends_with("(the revoked model itself)"),
            "{}",
            own.path
        );
        assert!(find(&index(), &material(MaterialType::Dataset, '7')).is_empty());
    }

    #[test]
    fn the_list_is_bounded_in_count_and_bytes() {
        let one = AffectedModel {
            model: "reg.io/m@sha256:x".into(),
            path: "p".repeat(1000),
            ..Default::default()
        };
        let (list, cut) = bounded(vec![one.clone(); 3], 2);
        assert_eq!((list.len(), cut), (2, true));
        let (list, cut) = bounded(vec![one.clone(); 3], 10);
        assert_eq!((list.len(), cut), (3, false));
        let (list, cut) = bounded(vec![one; 2000], 2000);
        assert!(cut);
        assert!(list.len() < 600 && list.len() > 400, "{}", list.len());
    }
}
