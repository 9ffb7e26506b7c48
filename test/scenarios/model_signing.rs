//! The controller signs each model's files in the OpenSSF model-signing format next to its
//! provenance: a security team pulls the model and its `model.sig` with `oras` from the
//! registry the run wrote to, and `model_signing verify key` (PyPI model-signing) accepts them
//! with the controller's public key — and refuses them once one byte of one file changed.
//! `provenant verify --require-model-signature` accepts the model.

use std::process::Command;

use anyhow::{Context, Result};
use provenant::api::ProvenanceState;

use crate::model_signing_support::{
    MODEL_SIGNATURE_ARTIFACT_TYPE, Place, describe, flip_one_byte, model_signing_verify,
    pull_model_and_signature,
};
use crate::provenance::{MODEL_REPO, World};
use crate::support::*;

#[tokio::test]
async fn model_signing_verifies_the_model_the_controller_attested() -> Result<()> {
    let world = World::start(true).await?;
    let sim = world.kubelet(|| {}).await?;
    let _controller = world.controller("a").await?;
    create(&world.cluster, &world.run("bert")).await?;
    let run = world
        .wait_provenance("bert", ProvenanceState::Attached)
        .await?;
    let digest = World::model_digest(&run);
    let home = world.cluster.dir();
    // The tools below block this thread: they reach the registry directly, not through the
    // proxy the controller uses (it is served by this test's runtime).
    let repository = format!("{}/{MODEL_REPO}", world.registry.host());

    // The run's status lists the model signature's referrer with the other references.
    let attached = &run
        .status
        .as_ref()
        .unwrap()
        .provenance
        .as_ref()
        .unwrap()
        .attestations;
    let place = Place::Registry {
        repository: &repository,
    };
    let referrers = place
        .model_signature_referrers(home, &digest)
        .map_err(anyhow::Error::msg)?;
    let [referrer] = referrers.as_slice() else {
        anyhow::bail!("{MODEL_SIGNATURE_ARTIFACT_TYPE} referrers: {referrers:?}");
    };
    let listed = format!("{}@{referrer}", world.repository());
    assert!(attached.contains(&listed), "{listed} not in {attached:?}");

    let key = home.join("cosign.pub");
    std::fs::write(&key, &world.public_pem)?;
    let dir = pull_model_and_signature(&place, home, &digest, home, "bert");
    let signature = dir.join("model.sig");
    let out = model_signing_verify(&signature, &key, &dir);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    flip_one_byte(&dir.join("model.safetensors"));
    let out = model_signing_verify(&signature, &key, &dir);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("model.safetensors"),
        "{}",
        describe(&out)
    );

    let out = Command::new(binary())
        .args(["verify", &format!("{repository}@{digest}"), "--key"])
        .arg(&key)
        .args(["--insecure-registry", world.registry.host()])
        .arg("--require-model-signature")
        .output()
        .context("provenant verify")?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        text.contains("model.sig     verified (OpenSSF model signing, 1 files)"),
        "{text}"
    );
    sim.shutdown().await?;
    Ok(())
}
