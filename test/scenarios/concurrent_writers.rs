//! Another writer on the model's tags at the moment the controller attaches its provenance: a
//! `cosign attest` / `cosign sign`, or a second controller replica that still believes it leads,
//! reads `.att`, `.sig` or the referrers fallback index before the controller's write lands and
//! writes it right after, with its own entry and without the controller's (distribution has no
//! conditional PUT). The test bed's registry proxy plays that writer, since a real registry
//! cannot produce the interleaving on demand; the controller binary, the registry and cosign are
//! the real ones. Races on the real registry without a proxy (two writers, and the real cosign
//! binary): `controller/tests/registry_store.rs`.

use anyhow::{Context, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use provenant::api::ProvenanceState;
use provenant_testbed::racing_writer::racing_entries;
use provenant_testbed::tools;
use serde_json::Value;

use crate::provenance::{MODEL_REPO, World};
use crate::support::*;

/// Runs cosign with this test's HOME; its stdout, or its exit status and output as the error.
async fn cosign(world: &World, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(tools::path("cosign")?)
        .args(args)
        .env("HOME", world.cluster.dir())
        .output()
        .await
        .context("running cosign")?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    anyhow::ensure!(
        out.status.success(),
        "cosign {}: {}\n{stdout}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

#[tokio::test]
async fn a_concurrent_writer_does_not_silently_drop_the_attached_provenance() -> Result<()> {
    let world = World::start(true).await?;
    let sim = world.kubelet(|| {}).await?;
    let _controller = world.controller("a").await?;
    // The other writer races the controller's first write of each tag of the model.
    world.proxy.race_tag_writes(1);
    create(&world.cluster, &world.run("bert")).await?;
    let run = world
        .wait_provenance("bert", ProvenanceState::Attached)
        .await?;
    assert_eq!(
        world.proxy.raced()?,
        3,
        "the .att, .sig and fallback index writes were each raced"
    );
    let digest = World::model_digest(&run);
    let envelope_digest = run
        .status
        .as_ref()
        .and_then(|s| s.provenance.as_ref())
        .and_then(|p| p.envelope_digest.clone())
        .context("no envelope digest in the status")?;

    // What a security team runs against the model the run reports attested: cosign finds the
    // controller's attestation in `.att` and its signature in `.sig`.
    let key = world.cluster.dir().join("cosign.pub");
    std::fs::write(&key, &world.public_pem)?;
    let key = key.to_str().context("key path")?;
    let reference = format!("{}@{digest}", world.repository());
    let common = ["--key", key, "--insecure-ignore-tlog=true"];
    let attestations = cosign(
        &world,
        &[
            &["verify-attestation"][..],
            &common,
            &["--type", "slsaprovenance1", &reference],
        ]
        .concat(),
    )
    .await
    .context("the run says Attached, but cosign finds no attestation of the controller's")?;
    let envelope: Value = serde_json::from_str(attestations.lines().next().unwrap_or_default())?;
    let statement: Value = serde_json::from_slice(
        &STANDARD.decode(envelope["payload"].as_str().unwrap_or_default())?,
    )?;
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        digest.trim_start_matches("sha256:")
    );
    assert!(
        world
            .att_envelopes(&digest)
            .await?
            .iter()
            .any(|e| provenant::observe::sha256_digest(e) == envelope_digest),
        "the envelope the run recorded is in .att"
    );
    let signatures = cosign(&world, &[&["verify"][..], &common, &[&reference]].concat())
        .await
        .context("the run says Attached, but cosign finds no signature of the controller's")?;
    let payloads: Value = serde_json::from_str(signatures.trim())?;
    assert_eq!(
        payloads[0]["critical"]["image"]["docker-manifest-digest"],
        digest.as_str()
    );

    // The other writer's entries are kept beside the controller's.
    for suffix in [".att", ".sig", ""] {
        let tag = World::tag(&digest, suffix);
        let doc = world
            .registry
            .get_manifest(MODEL_REPO, &tag)
            .await?
            .with_context(|| format!("no {tag}"))?
            .json()?;
        assert_eq!(
            racing_entries(&doc),
            1,
            "{tag} keeps the other writer's entry"
        );
    }
    sim.shutdown().await?;
    Ok(())
}

/// The other writer replaces the tags after every write of the controller: the run does not
/// claim an attestation that is not there. It stays pending with a condition that says why,
/// and gets its provenance attached once the other writer stops.
#[tokio::test]
async fn a_writer_that_keeps_replacing_the_tags_holds_attaching_with_a_clear_condition()
-> Result<()> {
    let world = World::start(true).await?;
    let sim = world.kubelet(|| {}).await?;
    let _controller = world.controller("a").await?;
    world.proxy.race_tag_writes(usize::MAX);
    create(&world.cluster, &world.run("bert")).await?;
    let api = world.cluster.api::<provenant::api::TrainingRun>();
    let (_, reason, message) = provenant_testbed::cluster::eventually(
        TIMEOUT,
        "the attach to be held by the concurrent writer",
        || {
            let api = api.clone();
            async move {
                let run = api.get("bert").await?;
                Ok(condition(&run, "ProvenanceAttached")
                    .filter(|c| c.0 == "Unknown" && c.2.contains("concurrent writer")))
            }
        },
    )
    .await?;
    assert_eq!(reason, "RegistryUnavailable");
    assert!(
        message.contains("was missing when the tag was read back after each of 8 writes"),
        "{message}"
    );
    let run = api.get("bert").await?;
    assert_ne!(
        run.status.and_then(|s| s.provenance).map(|p| p.state),
        Some(ProvenanceState::Attached)
    );

    world.proxy.race_tag_writes(0);
    let run = world
        .wait_provenance("bert", ProvenanceState::Attached)
        .await?;
    let envelope_digest = run
        .status
        .as_ref()
        .and_then(|s| s.provenance.as_ref())
        .and_then(|p| p.envelope_digest.clone())
        .context("no envelope digest in the status")?;
    let envelopes = world.att_envelopes(&World::model_digest(&run)).await?;
    assert!(
        envelopes
            .iter()
            .any(|e| provenant::observe::sha256_digest(e) == envelope_digest),
        "the envelope the run recorded is in .att"
    );
    sim.shutdown().await?;
    Ok(())
}
