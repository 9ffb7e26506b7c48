//! `provenant lineage` reading the controller's signed records from a real API server
//! (`hack/with-cluster.sh`; skipped without `E2E_KUBECONFIG`, failed under `E2E_REQUIRE_REAL`):
//! record ConfigMaps written as the controller writes them (`record::encode`) into the
//! controller's namespace, read back with their run names; a record whose lineage cannot be read
//! is reported, and other ConfigMaps are not records.

#[path = "support/attest_cmd.rs"]
mod attest_cmd;
#[path = "support/lineage_chain.rs"]
mod chain;

use std::collections::BTreeMap;

use chain::{DATASET_D, model_names, provenant_env, stdout_json, text};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use provenant::lineage::records::ANNOTATION;
use provenant::reconcile::publish::record;
use provenant::signing::CosignKey;
use provenant_testbed::cluster::Cluster;

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

#[tokio::test]
async fn lineage_reads_the_controllers_records_in_the_cluster() {
    let Some(cluster) = Cluster::start_real().await.unwrap() else {
        return;
    };
    let key = CosignKey::ephemeral().unwrap();
    let runs = chain::chain(
        ['1', '2', '3', '9'].map(|c| (format!("reg.example.com/models/m{c}"), digest(c))),
    );
    let api = cluster.controller_api::<ConfigMap>();
    let ns = cluster.controller_namespace.clone();
    for run in &runs {
        let cm = record::encode(&run.training_run(), &ns, &run.signed(&key)).unwrap();
        assert!(
            cm.metadata
                .annotations
                .as_ref()
                .unwrap()
                .contains_key(ANNOTATION)
        );
        api.create(&PostParams::default(), &cm).await.unwrap();
    }
    // A record whose annotation is not a lineage entry, and a ConfigMap that is no record.
    let mut broken = record::encode(&runs[0].training_run(), &ns, &runs[0].signed(&key)).unwrap();
    broken.metadata.name = Some("provenance-broken".into());
    broken
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(ANNOTATION.into(), "{not json".into());
    api.create(&PostParams::default(), &broken).await.unwrap();
    let mut unrelated = ConfigMap::default();
    unrelated.metadata.name = Some("settings".into());
    unrelated.data = Some(BTreeMap::from([("a".into(), "b".into())]));
    api.create(&PostParams::default(), &unrelated)
        .await
        .unwrap();

    let kubeconfig = cluster.kubeconfig().to_path_buf();
    let env = [("KUBECONFIG", kubeconfig.as_path())];
    let out = provenant_env(
        &[
            "lineage",
            "--controller-namespace",
            &ns,
            "--dataset",
            DATASET_D,
            "--output",
            "json",
        ],
        &env,
    );
    let answer = stdout_json(&out);
    assert_eq!(model_names(&answer), ["m1", "m2", "m3"]);
    let last = &answer["models"][2]["path"];
    let names: Vec<&str> = (0..3)
        .map(|i| last[i]["run"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["base", "ft", "ftft"]);
    assert_eq!(last[0]["run"]["namespace"], "ml-team");
    assert_eq!(answer["sources"][0]["source"], format!("cluster:{ns}"));
    assert_eq!(answer["sources"][0]["provenance"], 4);
    let rejected = answer["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(
        rejected[0]["at"],
        format!("configmap {ns}/provenance-broken")
    );

    let out = provenant_env(
        &[
            "lineage",
            "--controller-namespace",
            &ns,
            "--model",
            &runs[0].reference(),
            "--descendants",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("2 models from model"), "{stdout}");
    assert!(stdout.contains("ml-team/ftft"), "{stdout}");

    // A namespace with no records: an empty answer, not an error.
    let out = provenant_env(
        &[
            "lineage",
            "--controller-namespace",
            &cluster.namespace,
            "--dataset",
            DATASET_D,
        ],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("no model from dataset"),
        "{}",
        text(&out)
    );
}
