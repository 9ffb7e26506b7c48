//! `provenance.encoding: both` in the controller's configuration: the controller attaches a
//! succeeded run's provenance as the cosign `.att` / `.sig`, the in-toto referrer and a Sigstore
//! bundle referrer, lists all of them in the run's status, and the real cosign v3 verifies the
//! model from the bundle (its default) and from the `.att` (`--new-bundle-format=false`).
//! `controller/tests/bundle.rs` checks the bundle itself and the refusals.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use provenant::api::ProvenanceState;
use provenant_testbed::cluster::ControllerProcess;
use provenant_testbed::tools;
use serde_json::Value;

use crate::provenance::World;
use crate::support::*;

#[tokio::test]
async fn the_controller_attaches_both_encodings_and_cosign_v3_verifies_each() -> Result<()> {
    let world = World::start(true).await?;
    let sim = world.kubelet(|| {}).await?;
    let provenance = format!(
        "provenance:\n  enabled: true\n  encoding: both\n  registry:\n    insecure: [\"{}\"]\n",
        world.proxy.host()
    );
    let config = controller_config(&world.cluster, "encoding-both", &provenance);
    let flag = format!("--config={}", config.display());
    let mut controller = ControllerProcess::start(binary(), &world.cluster, "a", &[&flag])?;
    controller.wait_ready(Duration::from_secs(30)).await?;

    create(&world.cluster, &world.run("bert")).await?;
    let run = world
        .wait_provenance("bert", ProvenanceState::Attached)
        .await?;
    let digest = World::model_digest(&run);
    let model = format!("{}@{digest}", world.repository());
    let hex = digest.trim_start_matches("sha256:");
    let attestations = &run
        .status
        .as_ref()
        .unwrap()
        .provenance
        .as_ref()
        .unwrap()
        .attestations;
    let repository = world.repository();
    // .att, .sig, in-toto referrer, bundle referrer, and the model signature (model_signing.rs).
    assert_eq!(attestations.len(), 5, "{attestations:?}");
    assert_eq!(attestations[0], format!("{repository}:sha256-{hex}.att"));
    assert_eq!(attestations[1], format!("{repository}:sha256-{hex}.sig"));
    let bundle_referrer = attestations[3].rsplit_once('@').context("a digest")?.1;
    let manifest = world
        .registry
        .get_manifest(crate::provenance::MODEL_REPO, bundle_referrer)
        .await?
        .context("the bundle referrer")?
        .json()?;
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    assert_eq!(manifest["subject"]["digest"], digest);

    let key = world.cluster.dir().join("cosign.pub");
    std::fs::write(&key, &world.public_pem)?;
    for new_bundle_format in [true, false] {
        let bundle_flag = format!("--new-bundle-format={new_bundle_format}");
        let args = [
            "verify-attestation",
            "--key",
            key.to_str().unwrap(),
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            &bundle_flag,
            "--type",
            "slsaprovenance1",
            &model,
        ];
        let out = tokio::process::Command::new(tools::path("cosign")?)
            .args(args)
            .env("HOME", world.cluster.dir())
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "cosign {}: {}\n{stdout}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let envelope: Value = serde_json::from_str(stdout.lines().next().unwrap_or_default())?;
        let statement: Value = serde_json::from_slice(
            &STANDARD.decode(envelope["payload"].as_str().unwrap_or_default())?,
        )?;
        assert_eq!(statement["subject"][0]["digest"]["sha256"], hex);
        assert_eq!(
            statement["predicate"]["runDetails"]["metadata"]["invocationId"],
            run.metadata.uid.clone().unwrap_or_default()
        );
    }
    sim.shutdown().await?;
    Ok(())
}
