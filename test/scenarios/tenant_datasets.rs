//! A tenant vouching for its own dataset (issue 13, item 3; docs/security.md). The tenant submits
//! a TrainingRun that names a dataset without a digest, and its workload — which the tenant
//! controls — reports the digest of the dataset the security team approved, whatever it trained
//! on. The run succeeds and the controller signs and attaches its provenance; the security team
//! then runs `provenant verify --require-dataset` on the model, as it would, and must be told that
//! only the workload vouched for that digest.

use std::process::Output;
use std::time::Duration;

use anyhow::Result;
use kube::ResourceExt;
use provenant::api::ProvenanceState;
use provenant_testbed::kubelet::{KubeletSim, PodOutcome, Scenario, SimNode};
use serde_json::json;

use crate::provenance::{World, push_and_report};
use crate::support::*;

/// The digest of the corpus the security team approved.
const APPROVED: &str = "sha256:a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9";
/// The digest of the evaluation set, declared in the spec.
const EVAL: &str = "sha256:e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7";

/// The tenant's workload: it pushes a model, then reports the approved corpus' digest for
/// `corpus` (and the evaluation set's, as declared).
async fn tenant_workload(world: &World) -> Result<KubeletSim> {
    let registry = world.registry.clone();
    let repository = world.repository();
    let scenario = Scenario::new()
        .namespace(&world.cluster.namespace)
        .node(SimNode::new("cpu-0"))
        .default_outcome(
            PodOutcome::succeed()
                .after(Duration::from_millis(200))
                .before_exit(move |pod| {
                    let registry = registry.clone();
                    let repository = repository.clone();
                    async move {
                        let weights = format!("trained on anything, by {}", pod.name_any());
                        let report = json!({"datasets": [
                            {"name": "corpus", "digest": APPROVED},
                            {"name": "eval", "digest": EVAL}
                        ]});
                        push_and_report(&registry, &repository, "v1", &weights, report).await
                    }
                }),
        );
    KubeletSim::start(world.cluster.client.clone(), scenario).await
}

fn said(out: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn a_dataset_digest_only_the_tenants_workload_reported_does_not_pass_verify() -> Result<()> {
    let world = World::start(true).await?;
    let sim = tenant_workload(&world).await?;
    let _controller = world.controller("a").await?;

    // The tenant's run: `corpus` named without a digest, `eval` declared with one.
    let spec = run(
        "tenant-run",
        json!({
            "datasets": [
                {"name": "corpus", "uri": "gs://tenant-bucket/whatever"},
                {"name": "eval", "uri": "gs://tenant-bucket/eval", "digest": EVAL}
            ],
            "output": {"repository": world.repository()},
        }),
    );
    create(&world.cluster, &spec).await?;
    let run = world
        .wait_provenance("tenant-run", ProvenanceState::Attached)
        .await?;
    let reference = format!("{}@{}", world.repository(), World::model_digest(&run));

    // The security team, with the controller's public key and the real CLI.
    let pubkey = world.cluster.dir().join("team-cosign.pub");
    std::fs::write(&pubkey, &world.public_pem)?;
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "verify".to_string(),
            reference.clone(),
            "--key".into(),
            pubkey.display().to_string(),
            "--insecure-registry".into(),
            world.proxy.host().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        // tokio's Command: the registry proxy serves from this test's runtime.
        async move {
            tokio::process::Command::new(binary())
                .args(&args)
                .output()
                .await
                .expect("run provenant verify")
        }
    };
    let only_reported = "the digest of dataset \"corpus\" was only reported by the training \
                         workload, not declared in the spec nor observed";

    // The approved digest, as the policy names it: refused.
    let out = verify(&["--require-dataset", APPROVED]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify accepted a dataset digest only the tenant's workload reported:\n{}",
        said(&out)
    );
    assert!(
        said(&out).contains(only_reported)
            && said(&out).contains("accepted only with --allow-reported-datasets"),
        "{}",
        said(&out)
    );

    // Bound to the dataset's name, next to a declared one: only `corpus` is refused.
    let out = verify(&[
        "--require-dataset",
        &format!("corpus={APPROVED}"),
        "--require-dataset",
        &format!("eval={EVAL}"),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let text = said(&out);
    assert!(
        text.contains(&format!(
            "required dataset corpus={APPROVED}: {only_reported}"
        )),
        "{text}"
    );
    assert!(!text.contains("required dataset eval="), "{text}");

    // The declared digest meets the policy.
    let out = verify(&["--require-dataset", &format!("eval={EVAL}")]).await;
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains(&format!("dataset       corpus {APPROVED} (reported)"))
            && said(&out).contains(&format!("dataset       eval {EVAL} (declared+reported)")),
        "{}",
        said(&out)
    );

    // Only when the team explicitly accepts the workload's word.
    let out = verify(&[
        "--require-dataset",
        &format!("corpus={APPROVED}"),
        "--allow-reported-datasets",
    ])
    .await;
    assert!(out.status.success(), "{}", said(&out));
    sim.shutdown().await?;
    Ok(())
}
