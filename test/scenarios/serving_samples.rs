//! Issue 15 (5): the serving Deployment sample (config/samples/serving/deployment.yaml, whose init
//! container runs `provenant verify --pull` before the server reads the model) is a valid object
//! for a real kube-apiserver: `kubectl apply --dry-run=server` accepts it as shipped, and refuses
//! a copy whose init container mounts a volume the pod does not declare. The KServe sample needs
//! KServe's CRD, which is not installed here: controller/tests/pull.rs checks it (and runs the
//! init container's command against the registry fixture).

use std::process::Output;

use anyhow::{Context, Result};
use provenant_testbed::cluster::Cluster;
use provenant_testbed::tools;
use serde_json::Value;

use crate::support::init_logs;

fn dry_run(cluster: &Cluster, file: &std::path::Path) -> Result<Output> {
    std::process::Command::new(tools::path("kubectl")?)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(["--namespace", &cluster.namespace])
        .args(["apply", "--dry-run=server", "-f"])
        .arg(file)
        .output()
        .context("running kubectl")
}

#[tokio::test]
async fn the_serving_deployment_sample_is_accepted_by_the_api_server() -> Result<()> {
    init_logs();
    let Some(cluster) = Cluster::start_real().await? else {
        return Ok(());
    };
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/samples/serving/deployment.yaml");
    let out = dry_run(&cluster, &sample)?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("deployment.apps/resnet50-serving created (server dry run)"),
        "{said}"
    );

    // The same sample without the shared emptyDir: the server refuses the init container's mount.
    let mut broken: Value = serde_saphyr::from_str(&std::fs::read_to_string(&sample)?)?;
    let volumes = broken["spec"]["template"]["spec"]["volumes"]
        .as_array_mut()
        .context("volumes")?;
    volumes.retain(|v| v["name"] != "model");
    let file = cluster.dir().join("broken-deployment.json");
    std::fs::write(&file, serde_json::to_vec(&broken)?)?;
    let out = dry_run(&cluster, &file)?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a pod mounting an undeclared volume was accepted"
    );
    assert!(
        said.contains(
            "spec.template.spec.initContainers[0].volumeMounts[0].name: Not found: \"model\""
        ),
        "{said}"
    );
    Ok(())
}
