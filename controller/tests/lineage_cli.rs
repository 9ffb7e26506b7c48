//! `provenant lineage` as a user runs it (the real binary) over a base → fine-tune →
//! fine-tune-of-the-fine-tune chain and an unrelated model, recorded in an OCI layout and in a
//! real registry (distribution 2.8: fallback tags, a catalog): every question, text and JSON,
//! envelopes signed by another key reported and not counted, bad flags (of `revoke` too) refused
//! naming the flag. `revoke_cli.rs`: `provenant revoke`. docs/lineage.md shows what these tests
//! print (`-- --nocapture`).

#[path = "support/attest_cmd.rs"]
mod attest_cmd;
#[path = "support/lineage_chain.rs"]
mod chain;

use chain::{
    COMMIT, DATASET_D, DATASET_E, IMAGE, Keys, Run, ask, in_layout, in_registry, model_names, path,
    provenant, stdout_json, text,
};
use provenant::engine;
use provenant::signing::CosignKey;
use provenant::storage::{Encoding, LayoutStore};
use provenant_testbed::registry::Registry;
use serde_json::Value;

fn invocations(model: &Value) -> Vec<String> {
    model["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["run"]["invocationId"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_layout_answers_every_question_through_base_models() {
    let keys = Keys::generate();
    let dir = tempfile::tempdir().unwrap();
    let [base, ft, ftft, _other] = in_layout(dir.path(), &keys.key).await;
    let layout = format!("oci:{}", path(dir.path()));
    let src = ["--registry", layout.as_str()];

    let answer = ask(&src, &keys, &["--dataset", DATASET_D]);
    assert_eq!(model_names(&answer), ["base", "ft", "ftft"]);
    let models = answer["models"].as_array().unwrap();
    assert_eq!(invocations(&models[2]), ["uid-base", "uid-ft", "uid-ftft"]);
    assert_eq!(
        models
            .iter()
            .map(|m| m["direct"].as_bool().unwrap())
            .collect::<Vec<_>>(),
        [true, false, false]
    );
    let first = &models[2]["path"][0]["via"];
    assert_eq!(first["kind"], "dataset");
    assert_eq!(first["digest"], DATASET_D);
    assert_eq!(first["sources"], serde_json::json!(["declared"]));
    assert_eq!(models[2]["path"][1]["via"]["kind"], "baseModel");
    assert_eq!(answer["question"]["direction"], "dependents");
    assert_eq!(answer["sources"][0]["provenance"], 4);
    assert_eq!(answer["rejected"], serde_json::json!([]));

    let direct = ask(&src, &keys, &["--dataset", DATASET_D, "--direct"]);
    assert_eq!(model_names(&direct), ["base"]);
    assert_eq!(direct["question"]["transitive"], false);
    let e = ask(&src, &keys, &["--dataset", DATASET_E, "--direct"]);
    assert_eq!(model_names(&e), ["ft", "ftft", "other"]);
    // By name, image and commit: every run of the chain used them.
    for q in [
        ["--dataset", "imagenet-subset"],
        ["--image", IMAGE],
        ["--code", COMMIT],
    ] {
        assert_eq!(model_names(&ask(&src, &keys, &q)).len(), 4, "{q:?}");
    }
    let from_base = ask(&src, &keys, &["--base-model", &base.digest]);
    assert_eq!(model_names(&from_base), ["ft", "ftft"]);
    let direct = ask(&src, &keys, &["--base-model", &base.digest, "--direct"]);
    assert_eq!(model_names(&direct), ["ft"]);
    let descendants = ask(
        &src,
        &keys,
        &["--model", &base.reference(), "--descendants"],
    );
    assert_eq!(model_names(&descendants), ["ft", "ftft"]);
    assert_eq!(descendants["question"]["direction"], "descendants");

    let up = ask(&src, &keys, &["--model", &ftft.reference()]);
    let up = &up["upstream"];
    assert_eq!(up["reference"], ftft.reference());
    assert_eq!(up["run"]["invocationId"], "uid-ftft");
    assert_eq!(up["base"]["reference"], ft.reference());
    assert_eq!(up["base"]["base"]["run"]["invocationId"], "uid-base");
    assert!(up["base"]["base"].get("base").is_none());
    let dataset = up["materials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "dataset" && f["name"] == "augment-cache")
        .expect("the reported dataset");
    assert_eq!(dataset["sources"], serde_json::json!(["reported"]));
    let unknown = format!("sha256:{}", "7".repeat(64));
    let none = ask(&src, &keys, &["--model", &unknown]);
    assert_eq!(none["upstream"], Value::Null);

    // The table: one row per run on the path, who vouched for each fact.
    let pub_key = keys.public();
    let out = provenant(&[
        "lineage",
        "--registry",
        &layout,
        "--key",
        &pub_key,
        "--dataset",
        DATASET_D,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(
            "3 models from dataset sha256:dddddddddddd… (transitively through base models)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("MODEL") && stdout.contains("VOUCHED"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  ← reg.example.com/models/ft@"),
        "the path of ftft: {stdout}"
    );
    assert!(
        stdout.contains("dataset imagenet-subset sha256:dddddddddddd…  declared"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("4 subjects, 4 provenance"), "{stderr}");
    let out = provenant(&[
        "lineage",
        "--registry",
        &layout,
        "--key",
        &pub_key,
        "--model",
        &ftft.reference(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("  base model:"), "{stdout}");
    assert!(
        stdout.contains("augment-cache") && stdout.contains("reported"),
        "{stdout}"
    );
    let out = provenant(&[
        "lineage",
        "--registry",
        &layout,
        "--key",
        &pub_key,
        "--dataset",
        &unknown,
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("no model from dataset"));
}

#[tokio::test]
async fn an_envelope_signed_by_another_key_is_reported_and_not_counted() {
    let keys = Keys::generate();
    let dir = tempfile::tempdir().unwrap();
    let [_, _, _, other] = in_layout(dir.path(), &keys.key).await;
    // Someone else's key claims that `other` was trained on dataset D.
    let forged = Run {
        uid: "uid-forged".into(),
        dataset: DATASET_D,
        ..other.clone()
    };
    let stranger = CosignKey::ephemeral().unwrap();
    engine::attach(
        &forged.signed(&stranger),
        &LayoutStore::new(dir.path()),
        Encoding::Dsse,
    )
    .await
    .unwrap();
    let layout = format!("oci:{}", path(dir.path()));
    let answer = ask(&["--registry", &layout], &keys, &["--dataset", DATASET_D]);
    assert_eq!(model_names(&answer), ["base", "ft", "ftft"]);
    let rejected = answer["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("signature"),
        "{rejected:?}"
    );
    assert!(
        rejected[0]["at"]
            .as_str()
            .unwrap()
            .contains(&other.digest.replace(':', "-"))
    );
    assert_eq!(answer["sources"][0]["rejected"], 1);
    let public = keys.public();
    let out = provenant(&[
        "lineage",
        "--registry",
        &layout,
        "--key",
        &public,
        "--dataset",
        DATASET_D,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 not counted") && stderr.contains("not counted: oci:"),
        "{stderr}"
    );

    // With the stranger's key only the forged statement counts.
    let stranger_pub = dir.path().join("stranger.pub");
    std::fs::write(&stranger_pub, stranger.public_key().pem()).unwrap();
    let out = provenant(&[
        "lineage",
        "--registry",
        &layout,
        "--key",
        &path(&stranger_pub),
        "--dataset",
        DATASET_D,
        "--output",
        "json",
    ]);
    let answer = stdout_json(&out);
    assert_eq!(model_names(&answer), ["other"]);
    assert_eq!(answer["rejected"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn a_registry_is_read_by_repository_and_by_its_catalog() {
    let registry = Registry::from_env_or_start().await.unwrap();
    let keys = Keys::generate();
    let [base, ..] = in_registry(&registry, &keys.key).await;
    let host = registry.host().to_string();
    let repos: Vec<String> = chain::NAMES
        .iter()
        .map(|n| format!("{host}/models/{n}"))
        .collect();
    let mut src: Vec<&str> = Vec::new();
    for r in &repos {
        src.extend_from_slice(&["--registry", r]);
    }
    src.extend_from_slice(&["--insecure-registry", &host]);
    let answer = ask(&src, &keys, &["--dataset", DATASET_D]);
    assert_eq!(model_names(&answer), ["base", "ft", "ftft"]);
    assert_eq!(answer["sources"].as_array().unwrap().len(), 4);

    let catalog = ask(
        &["--registry", &host, "--insecure-registry", &host],
        &keys,
        &["--model", &base.reference(), "--descendants"],
    );
    assert_eq!(model_names(&catalog), ["ft", "ftft"]);
    // Only the base model's repository: the fine-tunes are not found there.
    let one = ask(
        &["--registry", &repos[0], "--insecure-registry", &host],
        &keys,
        &["--dataset", DATASET_D],
    );
    assert_eq!(model_names(&one), ["base"]);
}

#[test]
fn bad_flags_are_refused_naming_the_flag() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["lineage"], "--dataset"),
        (vec!["lineage", "--dataset", "x", "--image", "y"], "--image"),
        (
            vec!["lineage", "--dataset", "x", "--descendants"],
            "--model",
        ),
        (vec!["lineage", "--base-model", "sha256:12"], "--base-model"),
        (vec!["lineage", "--model", "reg.io/m:v1"], "--model"),
        (vec!["lineage", "--code", "abc"], "--code"),
        (vec!["lineage", "--dataset", "sha256:xyz"], "--dataset"),
        (
            vec!["lineage", "--dataset", "x", "--registry", "oci:d"],
            "--key",
        ),
        (
            vec![
                "lineage",
                "--dataset",
                "x",
                "--registry",
                "reg.io/a:v1",
                "--key",
                "k",
            ],
            "--registry",
        ),
        (
            vec![
                "revoke",
                "--dataset",
                &digest,
                "--key",
                "k",
                "--registry",
                "oci:d",
            ],
            "--reason",
        ),
        (
            vec![
                "revoke",
                "--dataset",
                "corpus",
                "--reason",
                "r",
                "--key",
                "k",
                "--registry",
                "oci:d",
            ],
            "--dataset",
        ),
        (
            vec![
                "revoke",
                "--dataset",
                &digest,
                "--reason",
                " ",
                "--key",
                "k",
                "--registry",
                "oci:d",
            ],
            "--reason",
        ),
        (
            vec![
                "revoke",
                "--dataset",
                &digest,
                "--reason",
                "r",
                "--advisory",
                "ftp://x",
                "--key",
                "k",
                "--registry",
                "oci:d",
            ],
            "--advisory",
        ),
        (
            vec![
                "revoke",
                "--dataset",
                &digest,
                "--reason",
                "r",
                "--key",
                "k",
            ],
            "--registry",
        ),
    ];
    for (args, flag) in cases {
        let out = provenant(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(flag),
            "{args:?} should name {flag}: {stderr}"
        );
    }
}
