//! `crds/` installs into the cluster as a user would, and the shipped samples round-trip.

use anyhow::Result;
use kube::api::PostParams;
use kube::discovery::{ApiGroup, Discovery};
use provenant::api::TrainingRun;
use provenant_testbed::cluster::Cluster;

use crate::support::init_logs;

#[tokio::test]
async fn crds_install_and_samples_round_trip() -> Result<()> {
    init_logs();
    let cluster = Cluster::start().await?;

    // Discovery serves the resource as declared: namespaced, short name `tr`, status subresource.
    let discovery = Discovery::new(cluster.client.clone())
        .filter(&["provenant.dev"])
        .run()
        .await?;
    let group: &ApiGroup = discovery.groups().next().expect("provenant.dev is served");
    let (resource, caps) = group
        .recommended_resources()
        .into_iter()
        .find(|(r, _)| r.kind == "TrainingRun")
        .expect("TrainingRun is served");
    assert_eq!(
        (resource.plural.as_str(), resource.version.as_str()),
        ("trainingruns", "v1alpha1")
    );
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(
        caps.subresources
            .iter()
            .any(|(r, _)| r.plural == "trainingruns/status" || r.plural == "status"),
        "{:?}",
        caps.subresources
    );

    let api = cluster.api::<TrainingRun>();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/samples");
    let mut count = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        // TrainingRuns only (`serving/` holds the model-serving samples: serving_samples.rs).
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let sample: TrainingRun = serde_saphyr::from_str(&std::fs::read_to_string(&path)?)?;
        let created = api.create(&PostParams::default(), &sample).await?;
        let read = api.get(&created.metadata.name.clone().unwrap()).await?;
        // The API server stores numbers normalised (docs/trainingrun.md#hyperparameters): the CPU
        // sample's `c: 1.0` comes back as `c: 1`. Everything else comes back as written.
        let mut expected = sample.spec.clone();
        if let Some(hp) = expected.hyperparameters.as_mut() {
            let mut value = serde_json::Value::Object(std::mem::take(hp));
            provenant::api::numbers::normalise(&mut value);
            *hp = serde_json::from_value(value)?;
        }
        assert_eq!(
            read.spec,
            expected,
            "{} does not round-trip",
            path.display()
        );
        if path.ends_with("cpu-trainingrun.yaml") {
            let c = &read.spec.hyperparameters.as_ref().unwrap()["c"];
            assert_eq!(serde_json::to_string(c)?, "1", "1.0 is stored as 1");
        }
        assert!(read.metadata.uid.is_some() && read.metadata.generation == Some(1));
        count += 1;
    }
    assert_eq!(count, 5);
    Ok(())
}
