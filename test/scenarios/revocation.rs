//! The incident drill (issue 16), on the real control plane and a real registry: train a base
//! model, a fine-tune of it and a fine-tune of the fine-tune, plus an unrelated model; revoke the
//! base run's dataset. Within seconds the three dependent models carry a signed revocation
//! attestation (cosign verifies it with the controller's key), the revocation lists them with
//! their paths, their runs carry the `Revoked` condition and an Event, the unrelated model has
//! nothing; `provenant verify` refuses the three and accepts the fourth; a new run declaring the
//! dataset (or a revoked model as its base) is refused before any pod exists. A controller
//! restart signs nothing twice. Deleting the revocation reinstates the models and clears the
//! condition. Then the "vulnerable framework version" case: an image revocation lists the models
//! trained with it. The CRD's refusals on the real API server: revocation_admission.rs.

use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use provenant::api::{MaterialRevocation, Phase, ProvenanceState, TrainingRun};
use provenant_testbed::cluster::{Cluster, REVOCATION_LABEL, eventually};
use provenant_testbed::tools;
use serde_json::{Value, json};

use crate::provenance::{MODEL_REPO, World, own_models_kubelet as kubelet};
use crate::support::*;

const POISONED: &str = "sha256:d00dd00dd00dd00dd00dd00dd00dd00dd00dd00dd00dd00dd00dd00dd00dd00d";
const CHAT: &str = "sha256:c4a7c4a7c4a7c4a7c4a7c4a7c4a7c4a7c4a7c4a7c4a7c4a7c4a7c4a7c4a7c4a7";
const OTHER: &str = "sha256:0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e";
/// The training image with the vulnerable framework version (the unrelated run's).
const OLD_IMAGE: &str = "sha256:4444444444444444444444444444444444444444444444444444444444444444";
const PREDICATE: &str = "https://provenant.dev/revocation/v1";

/// A run of `world`'s repository with `spec` merged in.
fn training(world: &World, name: &str, spec: Value) -> TrainingRun {
    let mut full = json!({"output": {"repository": world.repository()}});
    for (k, v) in spec.as_object().cloned().unwrap_or_default() {
        full[k] = v;
    }
    run(name, full)
}

/// Create the run, wait for its provenance, return its model digest.
async fn trained(world: &World, run: TrainingRun) -> Result<String> {
    let name = run.name_any();
    create(&world.cluster, &run).await?;
    let run = world
        .wait_provenance(&name, ProvenanceState::Attached)
        .await?;
    Ok(World::model_digest(&run))
}

pub(crate) fn revocation(
    name: &str,
    ns: &str,
    type_: &str,
    digest: &str,
    reason: &str,
) -> Result<MaterialRevocation> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "provenant.dev/v1alpha1",
        "kind": "MaterialRevocation",
        "metadata": {"name": name, "labels": {REVOCATION_LABEL: ns}},
        "spec": {
            "material": {"type": type_, "digest": digest},
            "reason": reason,
            "advisory": "https://security.example.com/advisories/DS-2024-017",
        },
    }))?)
}

/// The revocation statements (payloads, as JSON) under the model's `.att` tag.
async fn revocation_statements(world: &World, digest: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for blob in world.att_envelopes(digest).await? {
        let envelope: Value = serde_json::from_slice(&blob)?;
        let payload = STANDARD.decode(envelope["payload"].as_str().unwrap_or_default())?;
        let statement: Value = serde_json::from_slice(&payload)?;
        if statement["predicateType"] == PREDICATE {
            out.push(statement);
        }
    }
    Ok(out)
}

/// `provenant verify` of the model: its exit code and output.
async fn verify(world: &World, digest: &str) -> Result<(Option<i32>, String)> {
    let key = world.cluster.dir().join("cosign.pub");
    std::fs::write(&key, &world.public_pem)?;
    let out = tokio::process::Command::new(binary())
        .args([
            "verify",
            &format!("{}@{digest}", world.repository()),
            "--key",
        ])
        .arg(&key)
        .args(["--insecure-registry", world.proxy.host()])
        .output()
        .await
        .context("provenant verify")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.code(), text))
}

/// An Event of `type_` and `reason` on run `name` whose note contains `text`.
async fn event(cluster: &Cluster, name: &str, type_: &str, reason: &str, text: &str) -> Result<()> {
    let events = cluster.api::<Event>();
    eventually(TIMEOUT, &format!("a {reason} Event on {name}"), || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await?;
            Ok(list
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.type_.as_deref() == Some(type_)
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                        && e.note.as_deref().unwrap_or_default().contains(text)
                })
                .then_some(()))
        }
    })
    .await
}

async fn wait_revocation(
    api: &Api<MaterialRevocation>,
    name: &str,
    what: &str,
    done: impl Fn(&MaterialRevocation) -> bool,
) -> Result<MaterialRevocation> {
    eventually(Duration::from_secs(30), what, || {
        let api = api.clone();
        let done = &done;
        async move {
            let r = api.get(name).await?;
            Ok(done(&r).then_some(r))
        }
    })
    .await
}

fn attested(r: &MaterialRevocation, count: i64) -> bool {
    r.status.as_ref().is_some_and(|s| {
        s.affected_count == Some(count)
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Attested" && c.status == "True")
    })
}

#[tokio::test]
async fn the_incident_drill() -> Result<()> {
    let world = World::start(true).await?;
    let sim = kubelet(&world).await?;
    let controller = world.controller("a").await?;
    let ns = world.cluster.namespace.clone();

    let dataset = |name: &str, digest: &str| json!([{"name": name, "uri": format!("gs://data/{name}"), "digest": digest}]);
    let old_image = format!("registry.example.com/train@{OLD_IMAGE}");
    let unrelated = trained(
        &world,
        training(
            &world,
            "unrelated",
            json!({"datasets": dataset("other", OTHER), "image": old_image}),
        ),
    );
    let base = trained(
        &world,
        training(
            &world,
            "base",
            json!({"datasets": dataset("wiki", POISONED)}),
        ),
    );
    let (unrelated, base) = tokio::try_join!(unrelated, base)?;
    let base_model =
        |digest: &str| json!({"uri": format!("oci://{}", world.repository()), "digest": digest});
    let tune = trained(
        &world,
        training(
            &world,
            "tune",
            json!({"datasets": dataset("chat", CHAT), "baseModel": base_model(&base)}),
        ),
    )
    .await?;
    let tune2 = trained(
        &world,
        training(&world, "tune2", json!({"baseModel": base_model(&tune)})),
    )
    .await?;

    // The security team revokes the base run's dataset. A revocation outside this install's
    // --revocation-selector (another install's) is left alone.
    let revocations: Api<MaterialRevocation> = Api::all(world.cluster.client.clone());
    let foreign = format!("other-install-{ns}");
    let mut unlabelled = revocation(&foreign, &ns, "Dataset", POISONED, "not ours")?;
    unlabelled.metadata.labels = None;
    revocations
        .create(&PostParams::default(), &unlabelled)
        .await?;
    let name = format!("poisoned-{ns}");
    let created = revocations
        .create(
            &PostParams::default(),
            &revocation(
                &name,
                &ns,
                "Dataset",
                POISONED,
                "label-flipping poison in 0.3% of samples",
            )?,
        )
        .await?;
    let started = std::time::Instant::now();
    let found = wait_revocation(&revocations, &name, "the three models attested", |r| {
        attested(r, 3)
    })
    .await?;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let status = found.status.clone().unwrap();
    let ignored = revocations.get(&foreign).await?;
    assert!(
        ignored.finalizers().is_empty() && ignored.status.is_none(),
        "{ignored:?}"
    );
    revocations
        .delete(&foreign, &DeleteParams::default())
        .await?;
    let listed: Vec<&str> = status
        .affected_models
        .iter()
        .map(|m| m.model.as_str())
        .collect();
    let reference = |d: &str| format!("{}@{d}", world.repository());
    assert_eq!(
        listed,
        [reference(&base), reference(&tune), reference(&tune2)]
    );
    assert!(status.affected_models.iter().all(|m| m.attached));
    let deepest = &status.affected_models[2];
    assert_eq!(deepest.steps.len(), 3);
    assert_eq!(deepest.run.as_ref().map(|r| r.name.as_str()), Some("tune2"));
    assert!(
        deepest.path.starts_with(&format!(
            "dataset {POISONED} → run {ns}/base (its dataset, declared)"
        )) && deepest
            .path
            .contains(&format!("run {ns}/tune (its baseModel, declared)")),
        "{}",
        deepest.path
    );

    // Each dependent model carries one signed revocation statement naming the path; cosign
    // verifies it with the controller's key.
    for (digest, depth) in [(&base, 1), (&tune, 2), (&tune2, 3)] {
        let statements = revocation_statements(&world, digest).await?;
        let [statement] = statements.as_slice() else {
            anyhow::bail!("{digest}: {statements:?}");
        };
        let predicate = &statement["predicate"];
        assert_eq!(predicate["state"], "revoked");
        assert_eq!(predicate["revocation"]["uid"], created.uid().unwrap());
        assert_eq!(
            predicate["material"],
            json!({"type": "dataset", "digest": POISONED})
        );
        assert_eq!(predicate["path"].as_array().map(Vec::len), Some(depth));
    }
    let key = world.cluster.dir().join("cosign.pub");
    std::fs::write(&key, &world.public_pem)?;
    let out = tokio::process::Command::new(tools::path("cosign")?)
        .args(["verify-attestation", "--key"])
        .arg(&key)
        .args(["--insecure-ignore-tlog=true", "--type", PREDICATE])
        .arg(format!("{}/{MODEL_REPO}@{tune2}", world.registry.host()))
        .env("HOME", world.cluster.dir())
        .output()
        .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The unrelated model has none.
    assert!(revocation_statements(&world, &unrelated).await?.is_empty());

    // The runs carry the condition and an Event; the unrelated one neither.
    let runs = world.cluster.api::<TrainingRun>();
    for run in ["base", "tune", "tune2"] {
        let marked = eventually(TIMEOUT, &format!("{run} marked Revoked"), || {
            let runs = runs.clone();
            async move {
                let r = runs.get(run).await?;
                Ok(condition(&r, "Revoked").filter(|c| c.0 == "True"))
            }
        })
        .await?;
        assert_eq!(marked.1, "MaterialRevoked");
        assert!(
            marked
                .2
                .contains(&format!("MaterialRevocation {name}: label-flipping")),
            "{}",
            marked.2
        );
        event(&world.cluster, run, "Warning", "MaterialRevoked", &name).await?;
    }
    assert!(condition(&runs.get("unrelated").await?, "Revoked").is_none());

    // `provenant verify` refuses the three and accepts the unrelated model (C's part; fails
    // until verify honours revocations).
    for digest in [&base, &tune, &tune2] {
        let (code, text) = verify(&world, digest).await?;
        assert_eq!(code, Some(1), "{digest}: {text}");
        assert!(text.contains(&name), "{text}");
    }
    let (code, text) = verify(&world, &unrelated).await?;
    assert_eq!(code, Some(0), "{text}");

    // New runs declaring the dataset, or a revoked model as their base, never start.
    for (run, spec) in [
        ("again", json!({"datasets": dataset("wiki", POISONED)})),
        ("from-tune", json!({"baseModel": base_model(&tune)})),
    ] {
        create(&world.cluster, &training(&world, run, spec)).await?;
        let failed = wait_phase(&world.cluster, run, Phase::Failed).await?;
        let (_, reason, message) = condition(&failed, "Succeeded").context("Succeeded")?;
        assert_eq!(reason, "MaterialRevoked", "{message}");
        assert!(
            message.contains(&format!("MaterialRevocation {name}")),
            "{message}"
        );
        assert!(
            pods_of(&world.cluster, run).await?.is_empty(),
            "{run}: a pod was created"
        );
    }

    // A restart (a new leader, a crash) signs nothing twice.
    let searched = status.found_at.clone();
    controller.kill()?;
    let _controller = world.controller("b").await?;
    wait_revocation(&revocations, &name, "the new leader to search again", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.found_at != searched && attested(r, 3))
    })
    .await?;
    for digest in [&base, &tune, &tune2] {
        assert_eq!(
            revocation_statements(&world, digest).await?.len(),
            1,
            "{digest}"
        );
    }

    // A false alarm: deleting the revocation reinstates the models and clears the condition.
    revocations.delete(&name, &DeleteParams::default()).await?;
    eventually(Duration::from_secs(30), "the revocation to be gone", || {
        let revocations = revocations.clone();
        let name = name.clone();
        async move { Ok(revocations.get_opt(&name).await?.is_none().then_some(())) }
    })
    .await?;
    for digest in [&base, &tune, &tune2] {
        let states: Vec<Value> = revocation_statements(&world, digest)
            .await?
            .iter()
            .map(|s| s["predicate"]["state"].clone())
            .collect();
        assert_eq!(states, [json!("revoked"), json!("reinstated")], "{digest}");
    }
    for run in ["base", "tune", "tune2"] {
        let (value, reason, _) = condition(&runs.get(run).await?, "Revoked").context("Revoked")?;
        assert_eq!(
            (value.as_str(), reason.as_str()),
            ("False", "MaterialReinstated")
        );
        event(&world.cluster, run, "Normal", "MaterialReinstated", &name).await?;
    }
    let (code, text) = verify(&world, &tune2).await?;
    assert_eq!(code, Some(0), "reinstated: {text}");

    // The vulnerable framework version: the models trained with that image are listed.
    let image = format!("image-{ns}");
    revocations
        .create(
            &PostParams::default(),
            &revocation(
                &image,
                &ns,
                "Image",
                OLD_IMAGE,
                "CVE-2024-0001 in the framework",
            )?,
        )
        .await?;
    let found = wait_revocation(&revocations, &image, "the image's models", |r| {
        attested(r, 1)
    })
    .await?;
    let listed = &found.status.unwrap().affected_models;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].model, reference(&unrelated));
    assert!(
        listed[0].path.starts_with(&format!(
            "image {OLD_IMAGE} → run {ns}/unrelated (its image, "
        )),
        "{}",
        listed[0].path
    );
    revocations.delete(&image, &DeleteParams::default()).await?;
    sim.shutdown().await?;
    Ok(())
}
