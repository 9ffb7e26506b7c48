//! The statement of a recorded run, byte for byte against a golden file, and field by field against
//! the mapping table of DESIGN.md. Regenerate after an intended change with
//! `UPDATE_GOLDEN=1 cargo test -p provenant --test provenance_golden` and review the diff.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use provenant::api::TrainingRun;
use provenant::config::ControllerConfig;
use provenant::provenance::{self, BuilderIdentity, LocalInvocation, ProvenanceError};
use serde_json::{Value, json};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/statement.json");

fn fixture() -> TrainingRun {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/succeeded-run.yaml"
    ))
    .unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn statement() -> provenance::statement::Statement {
    let run = fixture();
    let placement = ControllerConfig::defaults()
        .placement(run.spec.accelerator.as_ref())
        .unwrap();
    let builder = BuilderIdentity {
        id: "https://provenant.dev/controller/v1".into(),
        version: "0.1.0".into(),
    };
    provenance::statement_for_run(&run, &placement, &builder).unwrap()
}

#[test]
fn statement_matches_the_golden_file() {
    let bytes = statement().to_bytes();
    assert_eq!(bytes, statement().to_bytes(), "same run, different bytes");
    let pretty = serde_json::to_string_pretty(&serde_json::from_slice::<Value>(&bytes).unwrap())
        .unwrap()
        + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(GOLDEN, &pretty).unwrap();
    }
    let golden = std::fs::read_to_string(GOLDEN).unwrap();
    assert!(
        pretty == golden,
        "statement differs from {GOLDEN}; if intended, rerun with UPDATE_GOLDEN=1 and review"
    );
}

#[test]
fn statement_carries_every_recorded_fact() {
    let s: Value = serde_json::from_slice(&statement().to_bytes()).unwrap();
    assert_eq!(s["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(s["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(
        s["subject"],
        json!([{"name": "registry.example.com/models/resnet50-finetuned", "digest": {"sha256": "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"}}])
    );
    let def = &s["predicate"]["buildDefinition"];
    assert_eq!(def["buildType"], "https://provenant.dev/TrainingRun/v1");
    let ext = &def["externalParameters"];
    assert_eq!(ext["seed"], 42);
    assert_eq!(ext["replicas"], 2);
    assert_eq!(ext["hyperparameters"]["schedule"]["decay"], "cosine");
    assert_eq!(
        ext["accelerator"],
        json!({"type": "nvidia-a100-80gb", "count": 4})
    );
    assert_eq!(
        ext["env"][1]["valueFrom"]["secretKeyRef"]["name"], "hf",
        "secret references, never values"
    );
    let int = &def["internalParameters"];
    assert_eq!(int["namespace"], "ml-team");
    assert_eq!(
        int["scheduling"]["nodeSelector"]["nvidia.com/gpu.product"],
        "NVIDIA-A100-SXM4-80GB"
    );
    assert_eq!(int["scheduling"]["nodeSelector"]["pool"], "training");
    let deps = def["resolvedDependencies"].as_array().unwrap();
    let dep = |name: &str| {
        deps.iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(
        dep("image")["digest"]["sha256"],
        "4f1c1a8e8f0a7c1d2f3e4d5c6b7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a"
    );
    assert_eq!(dep("image")["annotations"]["source"], json!(["observed"]));
    assert_eq!(
        dep("dataset:imagenet-subset")["annotations"]["source"],
        json!(["declared"])
    );
    assert_eq!(
        dep("dataset:augment-cache")["annotations"]["source"],
        json!(["declared", "reported"])
    );
    assert_eq!(
        dep("dataset:augment-cache")["digest"]["sha256"],
        "5d41402abc4b2a76b9719d911017c592ae2b0c4e6f8a9b7c6d5e4f3a2b1c0d9e"
    );
    assert_eq!(
        dep("code")["digest"]["gitCommit"],
        "3f2c7e9a1b4d5c6e7f8091a2b3c4d5e6f7a8b9c0"
    );
    assert_eq!(
        dep("code")["uri"],
        "git+https://github.com/acme/train-resnet"
    );
    assert_eq!(
        dep("baseModel")["digest"]["sha256"],
        "1e2d3c4b5a69788f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a49"
    );
    let run = &s["predicate"]["runDetails"];
    assert_eq!(run["builder"]["id"], "https://provenant.dev/controller/v1");
    assert_eq!(
        run["metadata"]["invocationId"],
        "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"
    );
    assert_eq!(run["metadata"]["startedOn"], "2026-11-20T10:00:00Z");
    assert_eq!(run["metadata"]["finishedOn"], "2026-11-20T12:30:05Z");
    let w0 = &run["byproducts"][0];
    assert_eq!(w0["name"], "worker/resnet50-finetune-0");
    assert_eq!(w0["annotations"]["observed"]["node"], "gpu-node-7");
    assert_eq!(
        w0["annotations"]["observed"]["accelerator"]["product"],
        "NVIDIA-A100-SXM4-80GB"
    );
    assert_eq!(
        w0["annotations"]["observed"]["accelerator"]["driverVersion"],
        "535.104.05"
    );
    assert_eq!(w0["annotations"]["observed"]["exitCode"], 0);
    assert_eq!(w0["annotations"]["reported"]["metrics"]["top1"], 0.812);
    assert_eq!(
        w0["digest"]["sha256"],
        "aa11bb22cc33dd44ee55ff66aa77bb88cc99dd00ee11ff22aa33bb44cc55dd66"
    );
    assert!(
        run["byproducts"][1]["annotations"]
            .get("reported")
            .is_none(),
        "rank 1 reported nothing"
    );
}

fn placement_of(run: &TrainingRun) -> provenant::config::Placement {
    ControllerConfig::defaults()
        .placement(run.spec.accelerator.as_ref())
        .unwrap()
}

fn builder() -> BuilderIdentity {
    BuilderIdentity {
        id: "https://provenant.dev/controller/v1".into(),
        version: "0.1.0".into(),
    }
}

fn time(text: &str) -> Time {
    Time(text.parse::<jiff::Timestamp>().unwrap())
}

/// The fixture with `n` workers (copies of worker 0 with their own rank, pod and node), as the
/// engine benchmark builds it.
fn with_workers(run: &TrainingRun, n: usize) -> TrainingRun {
    let mut run = run.clone();
    let status = run.status.as_mut().unwrap();
    let first = status.workers[0].clone();
    status.workers = (0..n)
        .map(|i| {
            let mut w = first.clone();
            w.rank = i as i32;
            w.pod_name = format!("resnet50-finetune-{i}");
            w.node_name = Some(format!("gpu-node-{i}"));
            w.report_digest = Some(format!("sha256:{:064x}", i + 1));
            w
        })
        .collect();
    run.spec.replicas = n as i32;
    run
}

/// Every optional field of the spec and of the workers absent.
fn minimal(run: &TrainingRun) -> TrainingRun {
    let mut run = run.clone();
    let spec = &mut run.spec;
    spec.command.clear();
    spec.args.clear();
    spec.env.clear();
    spec.accelerator = None;
    spec.hyperparameters = None;
    spec.datasets.clear();
    spec.base_model = None;
    spec.code = None;
    spec.node_selector = None;
    let status = run.status.as_mut().unwrap();
    status.start_time = None;
    status.completion_time = None;
    status.materials = None;
    for w in &mut status.workers {
        w.node_name = None;
        w.phase = None;
        w.exit_code = None;
        w.reason = None;
        w.started_at = None;
        w.finished_at = None;
        w.containers.clear();
        w.accelerator = None;
        w.report_digest = None;
        w.report = None;
    }
    run
}

/// Every optional field present, odd strings and numbers, and timestamps with fractions and
/// unusual years.
fn maximal(run: &TrainingRun) -> TrainingRun {
    let mut run = run.clone();
    let spec = &mut run.spec;
    spec.accelerator.as_mut().unwrap().topology = Some("2x2".into());
    spec.active_deadline_seconds = Some(86_400);
    spec.service_account_name = Some("trainer".into());
    spec.node_selector = Some(BTreeMap::from([
        ("zone".to_string(), "eu\"west\\1".to_string()),
        ("pool".to_string(), "override".to_string()),
    ]));
    spec.tolerations = Some(vec![Toleration {
        key: Some("dedicated".into()),
        operator: Some("Equal".into()),
        value: Some("ml".into()),
        effect: Some("NoExecute".into()),
        toleration_seconds: Some(30),
    }]);
    spec.resources = Some(ResourceRequirements {
        limits: Some(BTreeMap::from([
            ("memory".to_string(), Quantity("64Gi".into())),
            ("cpu".to_string(), Quantity("8".into())),
        ])),
        requests: Some(BTreeMap::from([("cpu".to_string(), Quantity("4".into()))])),
        ..Default::default()
    });
    spec.code.as_mut().unwrap().uri = "git+https://example.com/x".into();
    spec.datasets[1].digest = Some("sha256:00".into());
    let status = run.status.as_mut().unwrap();
    status.start_time = Some(time("0999-01-02T03:04:05.123456789Z"));
    status.completion_time = Some(Time(
        jiff::Timestamp::new(253_402_000_000, 999_000_000).unwrap(),
    ));
    let w = &mut status.workers[1];
    w.pod_name = "pod-\u{e9}-\u{1F680}-\"q\"-\t".into();
    w.node_name = Some("node\nline\u{7}".into());
    w.exit_code = Some(-1);
    w.started_at = Some(Time(jiff::Timestamp::from_second(-62_200_000_000).unwrap()));
    w.finished_at = Some(time("1000-01-01T00:00:00.5Z"));
    w.report_error = Some("refused".into());
    let acc = w.accelerator.as_mut().unwrap();
    acc.tpu_topology = Some("4x4".into());
    acc.memory = Some("16384".into());
    acc.labels.insert("Z-upper".into(), "1".into());
    acc.labels.insert("a_lower".into(), "2".into());
    w.containers.push(w.containers[0].clone());
    w.containers[1].name = "sidecar".into();
    w.containers[1].digest = None;
    w.containers[1].image_id = Some("docker.io/x@sha256:11".into());
    let mut report = status.workers[0].report.clone().unwrap();
    report.metrics.insert("nan".into(), f64::NAN);
    report.metrics.insert("inf".into(), f64::INFINITY);
    report.metrics.insert("tiny".into(), 1e-300);
    report.metrics.insert("whole".into(), 3.0);
    report.metrics.insert("negative zero".into(), -0.0);
    report.datasets.push(provenant::api::NamedDigest {
        name: "b".into(),
        digest: "sha256:01".into(),
    });
    status.workers[1].report = Some(report);
    status.workers[0].report.as_mut().unwrap().outputs.clear();
    status.workers[0].report.as_mut().unwrap().metrics.clear();
    run
}

#[test]
fn typed_builders_give_the_reference_bytes() {
    let fixture = fixture();
    let cpu = provenant::config::Placement {
        resource: None,
        node_selector: BTreeMap::new(),
        tolerations: Vec::new(),
    };
    let variants = [
        ("fixture", fixture.clone(), placement_of(&fixture)),
        (
            "64 workers",
            with_workers(&fixture, 64),
            placement_of(&fixture),
        ),
        ("minimal", minimal(&fixture), placement_of(&fixture)),
        ("minimal on CPU", minimal(&fixture), cpu.clone()),
        ("maximal", maximal(&fixture), placement_of(&fixture)),
        ("maximal on CPU", maximal(&fixture), cpu),
    ];
    for (name, run, placement) in &variants {
        let built = provenance::statement_for_run(run, placement, &builder()).unwrap();
        let bytes = built.to_bytes();
        // The objects written from typed views, byte for byte against the reference builder (the
        // rest of the statement is plain serde structs, pinned by the golden file).
        let namespace = run.metadata.namespace.as_deref().unwrap();
        let status = run.status.as_ref().unwrap();
        let definition = &built.predicate.build_definition;
        let pairs = [
            (
                "externalParameters".to_string(),
                definition.external_parameters.get().to_string(),
                reference::external_parameters(&run.spec),
            ),
            (
                "internalParameters".to_string(),
                definition.internal_parameters.get().to_string(),
                reference::internal_parameters(&run.spec, namespace, placement),
            ),
        ];
        let workers = built
            .predicate
            .run_details
            .byproducts
            .iter()
            .zip(reference::worker_annotations(status))
            .enumerate()
            .map(|(i, (b, r))| {
                (
                    format!("byproducts[{i}]"),
                    b.annotations.get().to_string(),
                    r,
                )
            });
        assert_eq!(
            built.predicate.run_details.byproducts.len(),
            status.workers.len(),
            "{name}"
        );
        for (field, typed, expected) in pairs.into_iter().chain(workers) {
            let expected = serde_json::to_string(&expected).unwrap();
            assert!(
                typed == expected,
                "{name}: {field} differs from the reference\n typed: {typed}\n   ref: {expected}"
            );
            assert!(
                String::from_utf8_lossy(&bytes).contains(&typed),
                "{name}: {field} is not in the statement as built"
            );
        }
        assert!(
            built.size_hint() >= bytes.len(),
            "{name}: size hint {} < {} bytes",
            built.size_hint(),
            bytes.len()
        );
        // serde_json writes the same bytes (the pre-serialized objects verbatim), and its Value
        // serializer reads them as JSON.
        assert!(
            serde_json::to_vec(&built).unwrap() == bytes,
            "{name}: serde_json writes other bytes"
        );
        assert_eq!(
            serde_json::to_value(&built).unwrap(),
            serde_json::from_slice::<Value>(&bytes).unwrap(),
            "{name}"
        );
        // Read back, the same statement (now plain JSON objects) gives the same bytes again.
        let parsed: provenance::statement::Statement = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            parsed.to_bytes(),
            bytes,
            "{name}: parsed statement re-serializes differently"
        );
    }
}

#[test]
fn typed_local_builder_gives_the_reference_bytes() {
    let fixture = fixture();
    let host = json!({"hostname": "ws-1", "os": "linux", "arch": "x86_64", "cpus": 16});
    let declared = fixture
        .spec
        .code
        .as_ref()
        .unwrap()
        .revision
        .clone()
        .unwrap();
    let invocations = [
        LocalInvocation {
            host: host.clone(),
            working_directory: "/home/me/train".into(),
            command: vec!["python".into(), "train.py".into()],
            code: None,
        },
        LocalInvocation {
            host: host.clone(),
            working_directory: "/w".into(),
            command: vec![],
            code: Some((
                "https://github.com/acme/train-resnet".into(),
                declared,
                false,
            )),
        },
        LocalInvocation {
            host: json!({"os": "linux"}),
            working_directory: "/w".into(),
            command: vec!["sh".into()],
            code: Some(("git+ssh://git@host/x".into(), "0123".into(), true)),
        },
    ];
    for run in [fixture.clone(), minimal(&fixture), maximal(&fixture)] {
        for local in &invocations {
            let built = provenance::statement_for_local_run(&run, local, &builder()).unwrap();
            let bytes = String::from_utf8(built.to_bytes()).unwrap();
            let definition = &built.predicate.build_definition;
            // Sorted keys, as a `serde_json::Value` map writes them.
            let internal = serde_json::to_string(&json!({
                "host": local.host,
                "workingDirectory": local.working_directory,
                "command": local.command,
            }))
            .unwrap();
            let external =
                serde_json::to_string(&reference::external_parameters(&run.spec)).unwrap();
            for (field, typed, expected) in [
                (
                    "internalParameters",
                    definition.internal_parameters.get(),
                    internal,
                ),
                (
                    "externalParameters",
                    definition.external_parameters.get(),
                    external,
                ),
            ] {
                assert!(
                    typed == expected,
                    "local {field} differs from the reference\n typed: {typed}\n   ref: {expected}"
                );
                assert!(bytes.contains(&format!("\"{field}\":{typed}")), "{bytes}");
            }
            let status = run.status.as_ref().unwrap();
            for (b, r) in built
                .predicate
                .run_details
                .byproducts
                .iter()
                .zip(reference::worker_annotations(status))
            {
                assert_eq!(b.annotations.get(), serde_json::to_string(&r).unwrap());
            }
        }
    }
}

#[test]
fn runs_without_outputs_or_success_are_not_attested() {
    let mut run = fixture();
    let placement = ControllerConfig::defaults()
        .placement(run.spec.accelerator.as_ref())
        .unwrap();
    let builder = BuilderIdentity::controller(provenance::DEFAULT_BUILDER_ID, Some("prod-eu1"));
    assert_eq!(builder.id, "https://provenant.dev/controller/v1/prod-eu1");
    run.status.as_mut().unwrap().outputs.clear();
    assert_eq!(
        provenance::statement_for_run(&run, &placement, &builder).unwrap_err(),
        ProvenanceError::NoOutputs
    );
    run.status.as_mut().unwrap().phase = Some(provenant::api::Phase::Failed);
    assert_eq!(
        provenance::statement_for_run(&run, &placement, &builder).unwrap_err(),
        ProvenanceError::NotSucceeded
    );
}

/// Independent check: the in-toto-attestation reference library parses the statement strictly into
/// the Statement v1 and SLSA Provenance v1 protobufs and validates it.
#[test]
fn in_toto_attestation_accepts_the_statement() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("statement.json");
    std::fs::write(&path, statement().to_bytes()).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../test/python/check_statement.py"
    );
    let out = std::process::Command::new("python3")
        .args([script, path.to_str().unwrap()])
        .output()
        .expect("python3 is needed for the interop checks");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "in-toto-attestation is not installed: pip install -r test/python/requirements.txt\n{stderr}"
    );
    assert!(
        out.status.success(),
        "in-toto-attestation refused the statement: {stdout}{stderr}"
    );
}

/// The Value-based builder the statement bytes were first defined by (before the typed predicate
/// structs), kept as the reference: the typed builders must give the same bytes for any run.
#[allow(dead_code, clippy::all)]
/// The objects the typed views of `provenance/fields.rs` write, as the first builder made them:
/// `serde_json::Value` maps, whose keys are sorted. The typed views must give the same bytes.
mod reference {
    use std::collections::BTreeMap;

    use provenant::api::{TrainingRunSpec, TrainingRunStatus};
    use provenant::config::Placement;
    use serde_json::{Value, json};

    /// The run as submitted: everything the user controls.
    pub fn external_parameters(spec: &TrainingRunSpec) -> BTreeMap<String, Value> {
        let mut p = BTreeMap::new();
        p.insert("image".into(), json!(spec.image));
        if !spec.command.is_empty() {
            p.insert("command".into(), json!(spec.command));
        }
        if !spec.args.is_empty() {
            p.insert("args".into(), json!(spec.args));
        }
        if !spec.env.is_empty() {
            // Values as written; `valueFrom` is recorded as the reference, never resolved.
            p.insert("env".into(), json!(spec.env));
        }
        p.insert("replicas".into(), json!(spec.replicas));
        p.insert("seed".into(), json!(spec.seed));
        p.insert(
            "hyperparameters".into(),
            Value::Object(spec.hyperparameters.clone().unwrap_or_default()),
        );
        if let Some(acc) = &spec.accelerator {
            p.insert("accelerator".into(), json!(acc));
        }
        if !spec.datasets.is_empty() {
            p.insert("datasets".into(), json!(spec.datasets));
        }
        if let Some(base) = &spec.base_model {
            p.insert("baseModel".into(), json!(base));
        }
        if let Some(code) = &spec.code {
            p.insert("code".into(), json!(code));
        }
        p.insert("output".into(), json!(spec.output));
        if let Some(secs) = spec.active_deadline_seconds {
            p.insert("activeDeadlineSeconds".into(), json!(secs));
        }
        p
    }

    /// What the controller decided around the run: where and as whom it ran.
    pub fn internal_parameters(
        spec: &TrainingRunSpec,
        namespace: &str,
        placement: &Placement,
    ) -> BTreeMap<String, Value> {
        let mut p = BTreeMap::new();
        p.insert("namespace".into(), json!(namespace));
        p.insert(
            "serviceAccountName".into(),
            json!(
                spec.service_account_name
                    .clone()
                    .unwrap_or_else(|| "default".into())
            ),
        );
        // The scheduling constraints actually applied: the profile's merged with the run's own.
        let mut node_selector = placement.node_selector.clone();
        node_selector.extend(spec.node_selector.clone().unwrap_or_default());
        let mut tolerations = placement.tolerations.clone();
        tolerations.extend(spec.tolerations.clone().unwrap_or_default());
        let mut scheduling = serde_json::Map::new();
        if !node_selector.is_empty() {
            scheduling.insert("nodeSelector".into(), json!(node_selector));
        }
        if !tolerations.is_empty() {
            scheduling.insert("tolerations".into(), json!(tolerations));
        }
        if let Some((resource, count)) = &placement.resource {
            scheduling.insert(
                "acceleratorResource".into(),
                json!({"name": resource, "countPerWorker": count}),
            );
        }
        if let Some(resources) = &spec.resources {
            scheduling.insert("resources".into(), json!(resources));
        }
        p.insert("scheduling".into(), Value::Object(scheduling));
        p
    }

    fn rfc3339(t: &jiff::Timestamp) -> String {
        // Whole seconds, UTC, `Z`: what the API server stores and what every verifier parses.
        t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    /// Each worker's byproduct annotations: what the controller observed (node, accelerator
    /// facts, exit code, timings, images) apart from what the workload reported.
    pub fn worker_annotations(status: &TrainingRunStatus) -> Vec<BTreeMap<String, Value>> {
        status
            .workers
            .iter()
            .map(|w| {
                let mut observed = serde_json::Map::new();
                observed.insert("rank".into(), json!(w.rank));
                if let Some(node) = &w.node_name {
                    observed.insert("node".into(), json!(node));
                }
                if let Some(phase) = &w.phase {
                    observed.insert("phase".into(), json!(phase));
                }
                if let Some(code) = w.exit_code {
                    observed.insert("exitCode".into(), json!(code));
                }
                if let Some(reason) = &w.reason {
                    observed.insert("reason".into(), json!(reason));
                }
                if let Some(t) = &w.started_at {
                    observed.insert("startedAt".into(), json!(rfc3339(&t.0)));
                }
                if let Some(t) = &w.finished_at {
                    observed.insert("finishedAt".into(), json!(rfc3339(&t.0)));
                }
                if let Some(acc) = &w.accelerator {
                    observed.insert("accelerator".into(), json!(acc));
                }
                observed.insert("containers".into(), json!(w.containers));
                let mut annotations =
                    BTreeMap::from([("observed".to_string(), Value::Object(observed))]);
                if let Some(report) = &w.report {
                    annotations.insert(
                        "reported".into(),
                        json!({"metrics": report.metrics, "datasets": report.datasets, "outputs": report.outputs}),
                    );
                }
                annotations
            })
            .collect()
    }
}
