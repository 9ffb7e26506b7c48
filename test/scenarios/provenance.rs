//! Signed SLSA provenance attached to the model in a real registry, checked with independent code
//! (Python securesystemslib and in-toto-attestation), through outages, crashes and bad outputs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::PostParams;
use provenant::api::{Phase, ProvenanceState, TrainingRun};
use provenant::lineage::pinned_digest;
use provenant_testbed::cluster::{Cluster, ControllerProcess, eventually};
use provenant_testbed::kubelet::{KubeletSim, PodOutcome, Scenario, SimNode};
use provenant_testbed::registry::{ModelRef, Registry};
use provenant_testbed::registry_proxy::{Mode, RegistryProxy};
use serde_json::{Value, json};

use crate::support::*;

pub(crate) const MODEL_REPO: &str = "models/bert";

/// `outcome`, whose worker pushes `weights of <tag>` as the model `repository:tag` before it exits
/// and reports it ([`push_and_report`]).
pub(crate) fn pushing_model(
    outcome: PodOutcome,
    registry: &Arc<Registry>,
    repository: &str,
    tag: &str,
) -> PodOutcome {
    let (registry, repository, tag) = (registry.clone(), repository.to_string(), tag.to_string());
    outcome.before_exit(move |_pod| {
        let (registry, repository, tag) = (registry.clone(), repository.clone(), tag.clone());
        async move {
            let weights = format!("weights of {tag}");
            push_and_report(&registry, &repository, &tag, &weights, json!({})).await
        }
    })
}

/// What a training worker does before it exits: push `weights` as `model.safetensors` to
/// `MODEL_REPO:tag` and report the model as its output, with `report`'s other fields (datasets,
/// metrics). Returns the termination message.
pub(crate) async fn push_and_report(
    registry: &Registry,
    repository: &str,
    tag: &str,
    weights: &str,
    mut report: Value,
) -> Result<String> {
    let model = registry
        .push_model(
            MODEL_REPO,
            tag,
            &[("model.safetensors", weights.as_bytes())],
        )
        .await?;
    report["outputs"] = json!([{"uri": format!("{repository}:{tag}@{}", model.digest)}]);
    Ok(report.to_string())
}

/// One test's world: a cluster, a registry behind a fault-injecting proxy, a signing key.
pub(crate) struct World {
    pub(crate) cluster: Cluster,
    pub(crate) registry: Arc<Registry>,
    pub(crate) proxy: RegistryProxy,
    pub(crate) public_pem: String,
    key_data: BTreeMap<String, Vec<u8>>,
}

impl World {
    pub(crate) async fn start(with_key: bool) -> Result<World> {
        init_logs();
        let cluster = Cluster::start().await?;
        let registry = Arc::new(Registry::start().await?);
        let proxy = RegistryProxy::start(&registry.url()).await?;
        let keys = provenant::signing::keys::generate(b"test-password")?;
        let key_data = BTreeMap::from([
            (
                "cosign.key".to_string(),
                keys.private_pem.clone().into_bytes(),
            ),
            ("cosign.password".to_string(), b"test-password".to_vec()),
            (
                "cosign.pub".to_string(),
                keys.public_pem.clone().into_bytes(),
            ),
        ]);
        let world = World {
            cluster,
            registry,
            proxy,
            public_pem: keys.public_pem,
            key_data,
        };
        if with_key {
            world.create_key_secret().await?;
        }
        Ok(world)
    }

    pub(crate) async fn create_key_secret(&self) -> Result<()> {
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("provenant-signing-key".into()),
                ..Default::default()
            },
            data: Some(
                self.key_data
                    .iter()
                    .map(|(k, v)| (k.clone(), ByteString(v.clone())))
                    .collect(),
            ),
            ..Default::default()
        };
        self.cluster
            .controller_api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await?;
        Ok(())
    }

    /// The repository as the controller and the workload see it (through the proxy).
    pub(crate) fn repository(&self) -> String {
        format!("{}/{MODEL_REPO}", self.proxy.host())
    }

    pub(crate) async fn controller(&self, identity: &str) -> Result<ControllerProcess> {
        self.controller_with(identity, &[]).await
    }

    pub(crate) async fn controller_with(
        &self,
        identity: &str,
        extra: &[&str],
    ) -> Result<ControllerProcess> {
        let provenance = format!(
            "provenance:\n  enabled: true\n  registry:\n    insecure: [\"{}\"]\n    attempts: 2\n",
            self.proxy.host()
        );
        let config = controller_config(&self.cluster, "provenance", &provenance);
        let flag = format!("--config={}", config.display());
        let mut flags = vec![flag.as_str()];
        flags.extend_from_slice(extra);
        let mut controller = ControllerProcess::start(binary(), &self.cluster, identity, &flags)?;
        controller.wait_ready(Duration::from_secs(30)).await?;
        Ok(controller)
    }

    /// A kubelet whose rank-0 worker pushes a real model and reports it (plus a dataset digest and
    /// metrics); `after_push` runs right after the push, before the pod terminates.
    pub(crate) async fn kubelet(
        &self,
        after_push: impl Fn() + Send + Sync + 'static,
    ) -> Result<KubeletSim> {
        self.kubelet_running(Duration::from_millis(200), after_push)
            .await
    }

    /// [`World::kubelet`] with workers that run for `run_for` before they finish.
    pub(crate) async fn kubelet_running(
        &self,
        run_for: Duration,
        after_push: impl Fn() + Send + Sync + 'static,
    ) -> Result<KubeletSim> {
        let registry = self.registry.clone();
        let repository = self.repository();
        let after_push = Arc::new(after_push);
        let scenario = Scenario::new()
            .namespace(&self.cluster.namespace)
            .nodes(2, |i| {
                SimNode::nvidia(format!("gpu-{i}"), "NVIDIA-H100-80GB-HBM3", 8)
            })
            .outcome_fn(move |pod| {
                let rank0 = pod
                    .labels()
                    .get("provenant.dev/rank")
                    .is_some_and(|r| r == "0");
                let outcome = PodOutcome::succeed()
                    .after(run_for)
                    .image_digest("trainer", IMAGE_DIGEST);
                if !rank0 {
                    return outcome.message(
                        json!({"datasets": [{"name": "wiki", "digest": DATA_DIGEST}]}).to_string(),
                    );
                }
                let registry = registry.clone();
                let repository = repository.clone();
                let after_push = after_push.clone();
                outcome.before_exit(move |pod| {
                    let registry = registry.clone();
                    let repository = repository.clone();
                    let after_push = after_push.clone();
                    async move {
                        let weights = format!("weights of {}", pod.name_any());
                        let report = json!({
                            "datasets": [{"name": "wiki", "digest": DATA_DIGEST}],
                            "metrics": {"accuracy": 0.93},
                        });
                        let message =
                            push_and_report(&registry, &repository, "v1", &weights, report).await?;
                        after_push();
                        Ok(message)
                    }
                })
            });
        KubeletSim::start(self.cluster.client.clone(), scenario).await
    }

    pub(crate) fn run(&self, name: &str) -> TrainingRun {
        run(
            name,
            json!({
                "replicas": 2,
                "accelerator": {"type": "nvidia-h100-80gb", "count": 4},
                "hyperparameters": {"lr": 0.0003, "optimizer": {"name": "adamw", "betas": [0.9, 0.95]}},
                "seed": 1234,
                "datasets": [
                    {"name": "wiki", "uri": "gs://data/wiki"},
                    {"name": "books", "uri": "gs://data/books", "digest": DATA_DIGEST}
                ],
                "output": {"repository": self.repository()},
            }),
        )
    }

    pub(crate) async fn wait_provenance(
        &self,
        name: &str,
        state: ProvenanceState,
    ) -> Result<TrainingRun> {
        let api = self.cluster.api::<TrainingRun>();
        eventually(
            TIMEOUT,
            &format!("provenance of {name} to be {state:?}"),
            || {
                let api = api.clone();
                async move {
                    let run = api.get(name).await?;
                    let current = run
                        .status
                        .as_ref()
                        .and_then(|s| s.provenance.as_ref())
                        .map(|p| p.state);
                    Ok((current == Some(state)).then_some(run))
                }
            },
        )
        .await
    }

    /// The model digest the run recorded.
    pub(crate) fn model_digest(run: &TrainingRun) -> String {
        run.status.as_ref().unwrap().outputs[0].digest.clone()
    }

    pub(crate) fn tag(digest: &str, suffix: &str) -> String {
        format!("{}{suffix}", digest.replace(':', "-"))
    }

    /// Every DSSE layer blob under the model's `.att` tag.
    pub(crate) async fn att_envelopes(&self, digest: &str) -> Result<Vec<Vec<u8>>> {
        let manifest = self
            .registry
            .get_manifest(MODEL_REPO, &Self::tag(digest, ".att"))
            .await?
            .context("no .att")?;
        let mut out = Vec::new();
        for layer in manifest.json()?["layers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if layer["mediaType"] == "application/vnd.dsse.envelope.v1+json" {
                let blob = self
                    .registry
                    .get_blob(MODEL_REPO, layer["digest"].as_str().unwrap())
                    .await?
                    .context("layer blob")?;
                out.push(blob);
            }
        }
        Ok(out)
    }
}

fn python(script: &str, args: &[&Path]) -> Result<(bool, String)> {
    let path = format!("{}/../test/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .context("python3 is needed")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("ModuleNotFoundError") && out.status.code() != Some(3),
        "Python packages missing: pip install -r test/python/requirements.txt\n{text}"
    );
    Ok((out.status.success(), text))
}

#[tokio::test]
async fn provenance_is_attached_and_verifies_with_independent_tools() -> Result<()> {
    let world = World::start(true).await?;
    let sim = world.kubelet(|| {}).await?;
    let controller = world.controller("a").await?;
    let created = create(&world.cluster, &world.run("bert")).await?;
    let run = world
        .wait_provenance("bert", ProvenanceState::Attached)
        .await?;
    let status = run.status.clone().unwrap();
    let digest = World::model_digest(&run);
    assert!(status.outputs[0].verified);
    let p = status.provenance.clone().unwrap();
    assert_eq!(
        p.predicate_type.as_deref(),
        Some("https://slsa.dev/provenance/v1")
    );
    // .att, .sig, the in-toto referrer and the model signature's referrer (model_signing.rs).
    assert_eq!(p.attestations.len(), 4, "{:?}", p.attestations);
    assert!(p.signed_at.is_some() && p.attached_at.is_some());
    for c in ["ProvenanceSigned", "ProvenanceAttached"] {
        assert_eq!(condition(&run, c).unwrap().0, "True", "{c}");
    }

    // The registry holds the .att, the .sig and the referrer fallback index for the model.
    let tags = world.registry.list_tags(MODEL_REPO).await?;
    for tag in [
        World::tag(&digest, ".att"),
        World::tag(&digest, ".sig"),
        World::tag(&digest, ""),
    ] {
        assert!(tags.contains(&tag), "no tag {tag} in {tags:?}");
    }
    let index = world
        .registry
        .get_manifest(MODEL_REPO, &World::tag(&digest, ""))
        .await?
        .unwrap()
        .json()?;
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/vnd.in-toto+json"
    );

    // The envelope, pulled from the registry, is the one persisted in the cluster...
    let envelopes = world.att_envelopes(&digest).await?;
    assert_eq!(envelopes.len(), 1);
    let envelope = &envelopes[0];
    assert_eq!(
        p.envelope_digest.as_deref(),
        Some(provenant::observe::sha256_digest(envelope).as_str())
    );
    // (kept in the controller's namespace, gzip-compressed: docs/operations.md)
    let cm = world
        .cluster
        .controller_api::<ConfigMap>()
        .get(p.envelope_config_map.as_deref().unwrap())
        .await?;
    let gz = &cm.binary_data.unwrap()["envelope.json.gz"];
    let mut persisted = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(gz.0.as_slice()),
        &mut persisted,
    )?;
    assert_eq!(persisted, *envelope);

    // ...and verifies with securesystemslib (DSSE) and in-toto-attestation (Statement, SLSA v1).
    let dir = world.cluster.dir();
    std::fs::write(dir.join("envelope.json"), envelope)?;
    std::fs::write(dir.join("cosign.pub"), &world.public_pem)?;
    let (ok, out) = python(
        "verify_dsse.py",
        &[&dir.join("envelope.json"), &dir.join("cosign.pub")],
    )?;
    assert!(ok, "securesystemslib refused the envelope: {out}");
    let (ok, out) = python("check_statement.py", &[&dir.join("envelope.json")])?;
    assert!(ok, "in-toto-attestation refused the statement: {out}");
    let statement: Value = serde_json::from_str(out.trim())?;

    // The statement, field by field.
    assert_eq!(statement["subject"][0]["name"], world.repository());
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        digest.trim_start_matches("sha256:")
    );
    let ext = &statement["predicate"]["buildDefinition"]["externalParameters"];
    assert_eq!(ext["seed"], 1234);
    assert_eq!(
        ext["hyperparameters"],
        json!({"lr": 0.0003, "optimizer": {"name": "adamw", "betas": [0.9, 0.95]}})
    );
    let deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let dep = |name: &str| {
        deps.iter()
            .find(|d| d["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {deps:?}"))
    };
    assert_eq!(
        dep("dataset:wiki")["digest"]["sha256"],
        DATA_DIGEST.trim_start_matches("sha256:")
    );
    // wiki is declared without a digest: the digest is the workload's word only.
    assert_eq!(
        dep("dataset:wiki")["annotations"],
        json!({"reportedDigest": DATA_DIGEST, "source": ["reported"]})
    );
    assert_eq!(
        dep("dataset:books")["annotations"],
        json!({"declaredDigest": DATA_DIGEST, "source": ["declared"]})
    );
    assert_eq!(
        dep("image")["digest"]["sha256"],
        IMAGE_DIGEST.trim_start_matches("sha256:")
    );
    let run_details = &statement["predicate"]["runDetails"];
    assert_eq!(
        run_details["metadata"]["invocationId"],
        created.uid().unwrap()
    );
    assert_eq!(
        run_details["builder"]["id"],
        "https://provenant.dev/controller/v1"
    );
    let byproducts = run_details["byproducts"].as_array().unwrap();
    assert_eq!(byproducts.len(), 2);
    for b in byproducts {
        let acc = &b["annotations"]["observed"]["accelerator"];
        assert_eq!(acc["product"], "NVIDIA-H100-80GB-HBM3", "{b}");
        assert_eq!(acc["allocated"], 4);
        assert!(
            sim.node_names()
                .iter()
                .any(|n| b["annotations"]["observed"]["node"] == n.as_str())
        );
    }
    assert_eq!(
        byproducts[0]["annotations"]["reported"]["metrics"]["accuracy"],
        0.93
    );

    // `provenant verify` accepts what the controller attached, with policy flags...
    let reference = format!("{}@{digest}", world.repository());
    let pubkey = dir.join("cosign.pub");
    // (tokio's Command: the proxy lives on this test's runtime and must keep serving.)
    let verify = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "verify",
            reference.as_str(),
            "--key",
            pubkey.to_str().unwrap(),
            "--insecure-registry",
            world.proxy.host(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        async move {
            tokio::process::Command::new(binary())
                .args(&args)
                .output()
                .await
                .unwrap()
        }
    };
    let out = verify(&[
        "--builder-id",
        "https://provenant.dev/controller/v1",
        "--require-dataset",
        DATA_DIGEST,
        "--require-image",
        IMAGE_DIGEST,
    ])
    .await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "verify failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("seed          1234") && text.contains("NVIDIA-H100-80GB-HBM3"),
        "{text}"
    );
    // ...and refuses an unmet policy with exit code 1.
    let out = verify(&[
        "--builder-id",
        "https://provenant.dev/controller/v1/other-cluster",
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The finalizer is released once attached; metrics tell the story.
    let api = world.cluster.api::<TrainingRun>();
    eventually(TIMEOUT, "finalizer released", || {
        let api = api.clone();
        async move { Ok(api.get("bert").await?.finalizers().is_empty().then_some(())) }
    })
    .await?;
    let text = controller.metrics().await?;
    assert_eq!(
        metric(&text, "provenant_attestations_total{result=\"attached\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "provenant_provenance_lag_seconds_count"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "provenant_provenance_backlog"),
        Some(0.0),
        "{text}"
    );
    assert!(metric(&text, "provenant_signing_duration_seconds_count").unwrap() >= 1.0);
    assert!(
        metric(
            &text,
            "provenant_registry_request_duration_seconds_count{op=\"manifest_put\"}"
        )
        .unwrap()
            >= 3.0,
        "{text}"
    );
    sim.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn registry_down_when_the_run_finishes_then_back() -> Result<()> {
    let world = World::start(true).await?;
    let sim = world.kubelet(|| {}).await?;
    let controller = world.controller("a").await?;
    // Down for the controller from the start; the workload pushes straight to the registry.
    world.proxy.set_mode(Mode::Down);
    create(&world.cluster, &world.run("bert")).await?;
    let run = wait_phase(&world.cluster, "bert", Phase::Succeeded).await?;
    assert_eq!(
        run.status.unwrap().provenance.unwrap().state,
        ProvenanceState::Pending
    );
    let pending = eventually(TIMEOUT, "RegistryUnavailable reported", || {
        let api = world.cluster.api::<TrainingRun>();
        async move {
            let run = api.get("bert").await?;
            Ok(condition(&run, "ProvenanceSigned")
                .filter(|c| c.1 == "RegistryUnavailable")
                .map(|_| run))
        }
    })
    .await?;
    assert!(world.proxy.refused() > 0);
    assert_eq!(
        pending.status.unwrap().provenance.unwrap().state,
        ProvenanceState::Pending
    );
    eventually(TIMEOUT, "backlog of 1", || {
        let c = &controller;
        async move {
            Ok(
                (metric(&c.metrics().await?, "provenant_provenance_backlog") == Some(1.0))
                    .then_some(()),
            )
        }
    })
    .await?;

    world.proxy.set_mode(Mode::Pass);
    let run = world
        .wait_provenance("bert", ProvenanceState::Attached)
        .await?;
    assert_eq!(
        world.att_envelopes(&World::model_digest(&run)).await?.len(),
        1
    );
    eventually(TIMEOUT, "backlog back to 0", || {
        let c = &controller;
        async move {
            Ok(
                (metric(&c.metrics().await?, "provenant_provenance_backlog") == Some(0.0))
                    .then_some(()),
            )
        }
    })
    .await?;
    sim.shutdown().await?;
    Ok(())
}

/// Registry I/O runs on the provenance workers: a registry that hangs (no answer at all) must not
/// keep other runs from being executed and recorded, even with one reconcile at a time.
#[tokio::test]
async fn a_hung_registry_does_not_hold_up_other_runs() -> Result<()> {
    let world = World::start(true).await?;
    let sim = world.kubelet(|| {}).await?;
    let _controller = world
        .controller_with("a", &["--concurrency=1", "--provenance-workers=1"])
        .await?;
    world.proxy.set_mode(Mode::Stall);
    create(&world.cluster, &world.run("first")).await?;
    wait_phase(&world.cluster, "first", Phase::Succeeded).await?;
    eventually(
        TIMEOUT,
        "the controller's registry requests to hang",
        || {
            let proxy = &world.proxy;
            async move { Ok((proxy.stalled() > 0).then_some(())) }
        },
    )
    .await?;

    // While the only provenance worker waits on the registry, a second run is created, run and
    // recorded: the reconciler never waits for the registry.
    create(&world.cluster, &world.run("second")).await?;
    let second = wait_phase(&world.cluster, "second", Phase::Succeeded).await?;
    let status = second.status.unwrap();
    assert_eq!(status.workers.len(), 2, "both workers recorded");
    assert_eq!(status.provenance.unwrap().state, ProvenanceState::Pending);
    let first = world.cluster.api::<TrainingRun>().get("first").await?;
    assert_eq!(
        first.status.unwrap().provenance.unwrap().state,
        ProvenanceState::Pending,
        "the first run's provenance is still waiting on the hung registry"
    );

    // The registry answers again: both runs get their provenance, each attached once.
    world.proxy.set_mode(Mode::Pass);
    for name in ["first", "second"] {
        let run = world
            .wait_provenance(name, ProvenanceState::Attached)
            .await?;
        assert_eq!(
            world.att_envelopes(&World::model_digest(&run)).await?.len(),
            1,
            "{name}: one attestation"
        );
    }
    sim.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_crash_between_signing_and_attaching_attaches_the_same_envelope() -> Result<()> {
    let world = World::start(true).await?;
    let sim = world.kubelet(|| {}).await?;
    let first = world.controller("first").await?;
    // Writes refused: resolve works, signing and persisting happen, attaching cannot.
    world.proxy.set_mode(Mode::RefuseWrites);
    create(&world.cluster, &world.run("bert")).await?;
    let signed = world
        .wait_provenance("bert", ProvenanceState::Signed)
        .await?;
    let p = signed.status.clone().unwrap().provenance.unwrap();
    let digest_before = p.envelope_digest.clone().unwrap();
    assert!(
        world
            .cluster
            .controller_api::<ConfigMap>()
            .get_opt(p.envelope_config_map.as_deref().unwrap())
            .await?
            .is_some(),
        "envelope persisted"
    );
    eventually(TIMEOUT, "attach pending on the registry", || {
        let api = world.cluster.api::<TrainingRun>();
        async move {
            let run = api.get("bert").await?;
            Ok(condition(&run, "ProvenanceAttached")
                .filter(|c| c.1 == "RegistryUnavailable")
                .map(|_| ()))
        }
    })
    .await?;
    first.kill()?;

    world.proxy.set_mode(Mode::Pass);
    let _second = world.controller("second").await?;
    let run = world
        .wait_provenance("bert", ProvenanceState::Attached)
        .await?;
    let p = run.status.clone().unwrap().provenance.unwrap();
    assert_eq!(
        p.envelope_digest.as_deref(),
        Some(digest_before.as_str()),
        "a new signature was made"
    );
    let envelopes = world.att_envelopes(&World::model_digest(&run)).await?;
    assert_eq!(envelopes.len(), 1, "exactly one layer");
    assert_eq!(
        provenant::observe::sha256_digest(&envelopes[0]),
        digest_before
    );
    sim.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_foreign_attestation_layer_is_kept() -> Result<()> {
    let world = World::start(true).await?;
    // Another tool attested the model first: we know the model's digest because its bytes are
    // deterministic (the workload pushes the same files).
    let model: ModelRef = world
        .registry
        .push_model(
            MODEL_REPO,
            "v1",
            &[("model.safetensors", b"weights of bert-0")],
        )
        .await?;
    let foreign =
        br#"{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[]}"#;
    let blob = world.registry.push_blob(MODEL_REPO, foreign).await?;
    let config = world.registry.push_blob(MODEL_REPO, b"{}").await?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.dsse.envelope.v1+json", "digest": blob, "size": foreign.len(),
            "annotations": {"dev.cosignproject.cosign/signature": "", "predicateType": "https://example.com/other/v1"}}]
    });
    world
        .registry
        .push_manifest(
            MODEL_REPO,
            &World::tag(&model.digest, ".att"),
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest)?,
        )
        .await?;

    let sim = world.kubelet(|| {}).await?;
    let _controller = world.controller("a").await?;
    create(&world.cluster, &world.run("bert")).await?;
    let run = world
        .wait_provenance("bert", ProvenanceState::Attached)
        .await?;
    assert_eq!(World::model_digest(&run), model.digest);
    let att = world
        .registry
        .get_manifest(MODEL_REPO, &World::tag(&model.digest, ".att"))
        .await?
        .unwrap()
        .json()?;
    let layers = att["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{att}");
    assert_eq!(
        layers[0]["digest"], blob,
        "the foreign layer is kept, first"
    );
    assert_eq!(
        layers[1]["annotations"]["predicateType"],
        "https://slsa.dev/provenance/v1"
    );
    sim.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn bad_outputs_and_a_missing_key_get_their_reasons() -> Result<()> {
    let world = World::start(false).await?;
    let registry = world.registry.clone();
    let repository = world.repository();
    let missing = "sha256:9999999999999999999999999999999999999999999999999999999999999999";
    let report = |uri: String| json!({"outputs": [{"uri": uri}]}).to_string();
    let scenario = Scenario::new()
        .namespace(&world.cluster.namespace)
        .node(SimNode::new("cpu-0"))
        .pod(
            "missing-0",
            PodOutcome::succeed()
                .after(Duration::from_millis(200))
                .message(report(format!("{repository}@{missing}"))),
        )
        .default_outcome({
            let repository = repository.clone();
            PodOutcome::succeed()
                .after(Duration::from_millis(200))
                .before_exit(move |pod| {
                    let registry = registry.clone();
                    let repository = repository.clone();
                    async move {
                        let model = registry
                            .push_model(
                                MODEL_REPO,
                                &pod.name_any(),
                                &[("m", pod.name_any().as_bytes())],
                            )
                            .await?;
                        Ok(
                            json!({"outputs": [{"uri": format!("{repository}@{}", model.digest)}]})
                                .to_string(),
                        )
                    }
                })
        });
    let sim = KubeletSim::start(world.cluster.client.clone(), scenario).await?;
    let _controller = world.controller("a").await?;
    let spec = |name: &str| run(name, json!({"output": {"repository": repository}}));

    // No key yet: the run waits with SigningKeyUnavailable, then signs once the Secret exists.
    create(&world.cluster, &spec("nokey")).await?;
    let waiting = eventually(TIMEOUT, "SigningKeyUnavailable", || {
        let api = world.cluster.api::<TrainingRun>();
        async move {
            Ok(condition(&api.get("nokey").await?, "ProvenanceSigned")
                .filter(|c| c.1 == "SigningKeyUnavailable"))
        }
    })
    .await?;
    assert!(waiting.2.contains("provenant-signing-key"), "{}", waiting.2);
    world.create_key_secret().await?;
    world
        .wait_provenance("nokey", ProvenanceState::Attached)
        .await?;

    // An output the registry does not have.
    create(&world.cluster, &spec("missing")).await?;
    let failed = world
        .wait_provenance("missing", ProvenanceState::Failed)
        .await?;
    assert_eq!(
        condition(&failed, "ProvenanceAttached").unwrap().1,
        "OutputNotFound"
    );

    // A registry that serves other bytes than the digest says.
    world.proxy.set_mode(Mode::TamperManifests);
    create(&world.cluster, &spec("tampered")).await?;
    let failed = world
        .wait_provenance("tampered", ProvenanceState::Failed)
        .await?;
    let (_, reason, message) = condition(&failed, "ProvenanceAttached").unwrap();
    assert_eq!(reason, "OutputDigestMismatch", "{message}");
    sim.shutdown().await?;
    Ok(())
}

/// Every permanent refusal and the lost record, each with its condition reason, Event and count:
/// a run that reported no model, a registry that denies reads, one that denies pushes, and the
/// record deleted while the attach waits (a record planted or edited: tenant_records.rs).
#[tokio::test]
async fn refusals_conflicts_and_lost_records_get_their_reasons() -> Result<()> {
    let world = World::start(true).await?;
    let registry = world.registry.clone();
    let repository = world.repository();
    let scenario = Scenario::new()
        .namespace(&world.cluster.namespace)
        .node(SimNode::new("cpu-0"))
        // Trains, reports metrics, names no model.
        .pod(
            "noout-0",
            PodOutcome::succeed().message(r#"{"metrics": {"loss": 0.1}}"#),
        )
        .default_outcome({
            let repository = repository.clone();
            PodOutcome::succeed().before_exit(move |pod| {
                let registry = registry.clone();
                let repository = repository.clone();
                async move {
                    let files = [("m", pod.name_any().into_bytes())];
                    let files: Vec<(&str, &[u8])> =
                        files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
                    let model = registry
                        .push_model(MODEL_REPO, &pod.name_any(), &files)
                        .await?;
                    Ok(
                        json!({"outputs": [{"uri": format!("{repository}@{}", model.digest)}]})
                            .to_string(),
                    )
                }
            })
        });
    let sim = KubeletSim::start(world.cluster.client.clone(), scenario).await?;
    let controller = world.controller("a").await?;
    let spec = |name: &str| run(name, json!({"output": {"repository": repository}}));
    let failed_with = |name: &'static str| {
        let world = &world;
        async move {
            let run = world.wait_provenance(name, ProvenanceState::Failed).await?;
            anyhow::Ok((
                condition(&run, "ProvenanceSigned").unwrap(),
                condition(&run, "ProvenanceAttached").unwrap(),
            ))
        }
    };

    // A run that names no model: nothing to attest.
    create(&world.cluster, &spec("noout")).await?;
    let (signed, _) = failed_with("noout").await?;
    assert_eq!(signed.1, "NoOutputs");
    assert!(signed.2.contains("docs/workload-report.md"), "{}", signed.2);

    // Reads denied (403): tried a bounded number of times (credentials may be rotating:
    // fairness.rs), then failed for good.
    world.proxy.set_mode(Mode::DenyAll);
    create(&world.cluster, &spec("denied")).await?;
    let (signed, _) = failed_with("denied").await?;
    assert_eq!(signed.1, "RegistryUnauthorized");
    assert!(signed.2.contains("DENIED"), "{}", signed.2);

    // Pushes denied: signed, then refused by the registry, likewise.
    world.proxy.set_mode(Mode::DenyWrites);
    create(&world.cluster, &spec("rejected")).await?;
    let (signed, attached) = failed_with("rejected").await?;
    assert_eq!(signed.1, "Signed", "signed before the registry refused");
    assert_eq!(attached.1, "RegistryUnauthorized");
    assert!(
        attached.2.contains("refused the controller's credentials"),
        "{}",
        attached.2
    );
    world.proxy.set_mode(Mode::Pass);
    let text = controller.metrics().await?;
    assert!(
        metric(&text, "provenant_attestations_total{result=\"failed\"}").unwrap_or(0.0) >= 3.0,
        "{text}"
    );
    let registry_errors: f64 = text
        .lines()
        .filter(|l| l.starts_with("provenant_registry_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        registry_errors >= 2.0,
        "denied requests are counted:\n{text}"
    );

    // The record deleted while the attach waits: told, signed anew, attached.
    world.proxy.set_mode(Mode::RefuseWrites);
    create(&world.cluster, &spec("lost")).await?;
    let signed = world
        .wait_provenance("lost", ProvenanceState::Signed)
        .await?;
    let record_name = format!("provenance-{}", signed.uid().unwrap());
    let first = signed.status.unwrap().provenance.unwrap().envelope_digest;
    world
        .cluster
        .controller_api::<ConfigMap>()
        .delete(&record_name, &Default::default())
        .await?;
    warning_event(&world.cluster, "ProvenanceRecordLost", "").await?;
    world.proxy.set_mode(Mode::Pass);
    let attached = world
        .wait_provenance("lost", ProvenanceState::Attached)
        .await?;
    let second = attached.status.unwrap().provenance.unwrap().envelope_digest;
    assert_ne!(
        first, second,
        "signed anew: ECDSA signatures are randomized"
    );
    assert!(
        world
            .cluster
            .controller_api::<ConfigMap>()
            .get_opt(&record_name)
            .await?
            .is_some()
    );
    sim.shutdown().await?;
    Ok(())
}

/// Runs whose name starts with this fail under [`own_models_kubelet`]: their worker exits 3.
pub(crate) const BROKEN: &str = "broken-";

/// A kubelet whose workers push a model tagged with their run's name and report it, having run
/// the image digest their spec pinned; runs named [`BROKEN`]`*` fail (exit 3).
pub(crate) async fn own_models_kubelet(world: &World) -> Result<KubeletSim> {
    let registry = world.registry.clone();
    let repository = world.repository();
    let scenario = Scenario::new()
        .namespace(&world.cluster.namespace)
        .nodes(1, |i| SimNode::new(format!("cpu-{i}")))
        .outcome_fn(move |pod| {
            let run = pod.labels().get("provenant.dev/run").cloned();
            let run = run.unwrap_or_default();
            let image = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.as_deref())
                .and_then(pinned_digest)
                .unwrap_or_else(|| IMAGE_DIGEST.to_string());
            if run.starts_with(BROKEN) {
                return PodOutcome::fail(3)
                    .after(Duration::from_millis(100))
                    .image_digest("trainer", &image);
            }
            let outcome = PodOutcome::succeed()
                .after(Duration::from_millis(100))
                .image_digest("trainer", &image);
            pushing_model(outcome, &registry, &repository, &run)
        });
    KubeletSim::start(world.cluster.client.clone(), scenario).await
}
