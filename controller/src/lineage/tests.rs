use serde_json::{Value, json};

use super::*;

fn hex(c: char) -> String {
    c.to_string().repeat(64)
}

fn digest(c: char) -> String {
    format!("sha256:{}", hex(c))
}

/// A controller statement: `run` (its UID) produced `model` (in reg.io/<name>) from `dataset`,
/// `image`, and optionally a base model.
fn statement(run: &str, model: char, dataset: char, image: char, base: Option<char>) -> Value {
    let mut deps = vec![
        json!({"name": "image", "uri": "oci://reg.io/train", "digest": {"sha256": hex(image)},
               "annotations": {"reference": format!("reg.io/train@{}", digest(image)), "source": ["observed"]}}),
        json!({"name": "dataset:corpus", "uri": "gs://d/corpus", "digest": {"sha256": hex(dataset)},
               "annotations": {"declaredDigest": digest(dataset), "source": ["declared"]}}),
        json!({"name": "code", "uri": "git+https://git/x", "digest": {"gitCommit": "a".repeat(40)},
               "annotations": {"source": ["declared"]}}),
    ];
    let mut external = json!({"image": "reg.io/train:v1",
        "datasets": [{"name": "corpus", "uri": "gs://d/corpus", "digest": digest(dataset)}]});
    if let Some(b) = base {
        deps.push(
            json!({"name": "baseModel", "uri": format!("reg.io/m{b}@{}", digest(b)),
            "digest": {"sha256": hex(b)}, "annotations": {"source": ["declared"]}}),
        );
        external["baseModel"] = json!({"uri": format!("reg.io/m{b}"), "digest": digest(b)});
    }
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": format!("reg.io/m{model}"), "digest": {"sha256": hex(model)}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://provenant.dev/TrainingRun/v1",
                "externalParameters": external,
                "internalParameters": {"namespace": "ml"},
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": "https://provenant.dev/controller/v1"},
                "metadata": {"invocationId": run, "finishedOn": "2026-12-01T00:00:00Z"},
            }
        }
    })
}

fn entry(run: &str, model: char, dataset: char, image: char, base: Option<char>) -> LineageEntry {
    LineageEntry::from_statement(&statement(run, model, dataset, image, base)).expect("an entry")
}

/// base (1) ← ft (2) ← ft-of-ft (3) from dataset d; unrelated (9) from dataset e.
fn drill() -> LineageIndex {
    LineageIndex::new([
        entry("u-base", '1', 'd', '5', None),
        entry("u-ft", '2', 'e', '5', Some('1')),
        entry("u-ftft", '3', 'e', '6', Some('2')),
        entry("u-other", '9', 'e', '6', None),
    ])
}

fn models(hits: &[Hit]) -> Vec<String> {
    hits.iter().map(|h| h.model.reference()).collect()
}

#[test]
fn an_entry_keeps_each_fact_with_who_vouched_for_it() {
    let e = entry("u", '1', 'd', '5', Some('b'));
    assert_eq!(e.run.namespace, "ml");
    assert_eq!(e.run.invocation_id, "u");
    assert_eq!(
        e.models,
        vec![ModelRef {
            repository: "reg.io/m1".into(),
            digest: digest('1')
        }]
    );
    let dataset = e.facts(Kind::Dataset).next().expect("dataset");
    assert_eq!(
        (
            dataset.name.as_str(),
            dataset.digest.clone(),
            dataset.sources.clone()
        ),
        ("corpus", Some(digest('d')), vec!["declared".to_string()])
    );
    let image = e.facts(Kind::Image).next().expect("image");
    assert_eq!(image.sources, vec!["observed"]);
    assert_eq!(
        e.facts(Kind::BaseModel)
            .next()
            .and_then(|f| f.digest.clone()),
        Some(digest('b'))
    );
    assert_eq!(
        e.facts(Kind::Code).next().and_then(|f| f.digest.clone()),
        Some("a".repeat(40))
    );
}

#[test]
fn a_statement_that_is_not_provenance_gives_no_entry() {
    let mut s = statement("u", '1', 'd', '5', None);
    s["predicateType"] = json!("https://provenant.dev/revocation/v1");
    assert!(matches!(
        LineageEntry::from_statement(&s),
        Err(EntryError::NotProvenance(_))
    ));
    let mut s = statement("u", '1', 'd', '5', None);
    s["subject"] = json!([]);
    assert!(LineageEntry::from_statement(&s).is_err());
}

#[test]
fn a_dataset_reaches_every_model_trained_from_it_through_base_models() {
    let index = drill();
    let hits = index.find(&Query::Dataset(digest('d')), true);
    assert_eq!(
        models(&hits),
        vec![
            format!("reg.io/m1@{}", digest('1')),
            format!("reg.io/m2@{}", digest('2')),
            format!("reg.io/m3@{}", digest('3')),
        ]
    );
    let runs: Vec<String> = hits[2]
        .path
        .iter()
        .map(|s| s.run.invocation_id.clone())
        .collect();
    assert_eq!(runs, ["u-base", "u-ft", "u-ftft"]);
    assert_eq!(hits[2].path[0].via.kind, Kind::Dataset);
    assert_eq!(hits[2].path[1].via.kind, Kind::BaseModel);
    // Without transitivity only the direct one; by name as well as by digest.
    assert_eq!(
        models(&index.find(&Query::Dataset("corpus".into()), false)).len(),
        4
    );
    assert_eq!(index.find(&Query::Dataset(digest('d')), false).len(), 1);
    assert!(index.find(&Query::Dataset(digest('f')), true).is_empty());
}

#[test]
fn images_match_by_digest_and_by_pinned_reference() {
    let index = drill();
    let by_digest = models(&index.find(&Query::Image(digest('6')), true));
    assert_eq!(by_digest.len(), 2, "{by_digest:?}");
    let by_ref = models(&index.find(&Query::Image(format!("reg.io/train@{}", digest('5'))), true));
    assert_eq!(
        by_ref.len(),
        3,
        "base and ft ran image i; ft-of-ft descends from them: {by_ref:?}"
    );
}

#[test]
fn descendants_and_upstream_follow_base_models_both_ways() {
    let index = drill();
    assert_eq!(models(&index.descendants(&digest('1'))).len(), 2);
    assert_eq!(
        models(&index.model_and_descendants(&digest('2'))),
        vec![
            format!("reg.io/m2@{}", digest('2')),
            format!("reg.io/m3@{}", digest('3')),
        ]
    );
    let up = index.upstream(&digest('3')).expect("recorded");
    assert_eq!(up.run.invocation_id, "u-ftft");
    let base = up.base.as_ref().expect("ft");
    assert_eq!(base.run.invocation_id, "u-ft");
    assert_eq!(
        base.base.as_ref().expect("base").run.invocation_id,
        "u-base"
    );
    assert!(index.upstream(&digest('7')).is_none());
}

#[test]
fn a_cycle_of_forged_base_models_ends() {
    let index = LineageIndex::new([
        entry("a", '1', 'd', '5', Some('2')),
        entry("b", '2', 'd', '5', Some('1')),
    ]);
    assert_eq!(index.descendants(&digest('1')).len(), 2);
    let up = index.upstream(&digest('1')).expect("recorded");
    assert!(up.base.as_ref().expect("b").base.is_none());
}

#[test]
fn the_same_statement_twice_is_one_entry() {
    let e = entry("u", '1', 'd', '5', None);
    let index = LineageIndex::new([e.clone(), e]);
    assert_eq!(index.len(), 1);
}

#[test]
fn a_listed_page_gives_each_records_entry_and_says_which_it_could_not_read() {
    let e = entry("u-1", '1', 'd', '5', None);
    let body = json!({
        "kind": "PartialObjectMetadataList",
        "metadata": {"continue": "next-page"},
        "items": [
            {"metadata": {"name": "provenance-u-1", "managedFields": [{"manager": "x"}],
                "labels": {"provenant.dev/run": "base", "provenant.dev/run-namespace": "ml", "other": "y"},
                "annotations": {"provenant.dev/lineage": serde_json::to_string(&e).expect("json"),
                                "provenant.dev/key-id": "k"}}},
            {"metadata": {"name": "provenance-old", "labels": {"provenant.dev/run": "old"}}},
            {"metadata": {"name": "provenance-bad", "labels": null, "annotations": {"provenant.dev/lineage": "{"}}},
        ]
    });
    let bytes = serde_json::to_vec(&body).expect("json");
    assert_eq!(records::next_page(&bytes), Ok(Some("next-page".into())));
    let page = records::page(&bytes).expect("reads");
    assert_eq!(page.next.as_deref(), Some("next-page"));
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].run.name, "base");
    assert_eq!(page.entries[0].models, e.models);
    assert_eq!(page.unannotated.len(), 1);
    assert_eq!(page.unannotated[0].0, "provenance-old");
    assert_eq!(page.unannotated[0].1["provenant.dev/run"], "old");
    assert_eq!(page.unreadable.len(), 1);
    assert!(
        page.unreadable[0].1.contains("provenant.dev/lineage"),
        "{:?}",
        page.unreadable
    );
    let last =
        serde_json::to_vec(&json!({"metadata": {"continue": ""}, "items": []})).expect("json");
    assert_eq!(records::page(&last).expect("reads").next, None);
    assert!(records::page(b"not json").is_err());
}
