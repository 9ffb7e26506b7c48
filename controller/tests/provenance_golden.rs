//! The statements of a recorded run, checked three ways: against golden files (one per builder:
//! `statement_for_run`, `statement_for_local_run`), against the statement written out field by
//! field from docs/provenance.md and the fixture, and by the in-toto-attestation reference
//! library. The tests never rewrite the golden files: after an intended change of the format,
//! edit them by hand, with docs/provenance.md, and review the diff.

use std::collections::{BTreeMap, HashMap};
use std::process::Command;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use provenant::api::{AcceleratorFacts, DatasetMaterial, DatasetRef, Source, TrainingRun};
use provenant::config::ControllerConfig;
use provenant::execute::placement::{Placement, placement};
use provenant::provenance::statement::Statement;
use provenant::provenance::{self, BuilderIdentity, LocalInvocation, ProvenanceError};
use serde_json::value::RawValue;
use serde_json::{Value, json};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/statement.json");
const LOCAL_GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/golden/local-statement.json"
);

fn fixture() -> TrainingRun {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/succeeded-run.yaml"
    ))
    .unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn placement_of(run: &TrainingRun) -> Placement {
    placement(&ControllerConfig::defaults(), run.spec.accelerator.as_ref()).unwrap()
}

fn builder() -> BuilderIdentity {
    BuilderIdentity {
        id: provenance::DEFAULT_BUILDER_ID.into(),
        version: "0.1.0".into(),
    }
}

fn statement() -> Statement {
    let run = fixture();
    provenance::statement_for_run(&run, &placement_of(&run), &builder()).unwrap()
}

/// The fixture as `provenant attest` records a run on a host (`local.rs`): one worker, `local`,
/// on the host, no containers and no images, the host's GPUs as nvidia-smi gives them, the outputs
/// packaged by attest rather than reported, and the first dataset hashed on the host.
fn local_run() -> TrainingRun {
    let mut run = fixture();
    let status = run.status.as_mut().unwrap();
    let materials = status.materials.as_mut().unwrap();
    materials.images.clear();
    materials.datasets[0].sources = vec![Source::Declared, Source::Observed];
    let mut worker = status.workers[0].clone();
    worker.pod_name = "local".into();
    worker.node_name = Some("ws-1".into());
    worker.containers.clear();
    worker.accelerator = Some(AcceleratorFacts {
        product: Some("NVIDIA A100-SXM4-80GB".into()),
        count: Some("8".into()),
        memory: Some("81920".into()),
        driver_version: Some("535.104.05".into()),
        cuda_version: Some("12.2".into()),
        ..AcceleratorFacts::default()
    });
    worker.report.as_mut().unwrap().outputs.clear();
    status.workers = vec![worker];
    run
}

fn local_invocation() -> LocalInvocation {
    LocalInvocation {
        host: json!({
            "hostname": "ws-1", "os": "linux", "distribution": "Debian GNU/Linux 13 (trixie)",
            "arch": "x86_64", "cpus": 16, "kernel": "6.12.48"
        }),
        working_directory: "/home/me/train-resnet".into(),
        command: ["python", "-m", "train", "--epochs", "10"]
            .map(String::from)
            .to_vec(),
        // The working tree is at the declared revision, clean.
        code: Some((
            "https://github.com/acme/train-resnet".into(),
            "3f2c7e9a1b4d5c6e7f8091a2b3c4d5e6f7a8b9c0".into(),
            false,
        )),
    }
}

fn local_statement() -> Statement {
    let builder = BuilderIdentity {
        id: provenance::DEFAULT_LOCAL_BUILDER_ID.into(),
        version: "0.1.0".into(),
    };
    provenance::statement_for_local_run(&local_run(), &local_invocation(), &builder).unwrap()
}

/// Statement bytes as the golden files hold them: pretty-printed, every key sorted.
fn pretty(bytes: &[u8]) -> String {
    serde_json::to_string_pretty(&serde_json::from_slice::<Value>(bytes).unwrap()).unwrap() + "\n"
}

fn assert_golden(built: &Statement, path: &str) {
    let bytes = built.to_bytes().unwrap();
    assert_eq!(
        bytes,
        built.to_bytes().unwrap(),
        "same run, different bytes"
    );
    let golden = std::fs::read_to_string(path).unwrap();
    assert!(
        pretty(&bytes) == golden,
        "the statement differs from {path}:\n{}",
        pretty(&bytes)
    );
}

#[test]
fn statement_matches_the_golden_file() {
    assert_golden(&statement(), GOLDEN);
}

#[test]
fn local_statement_matches_the_golden_file() {
    assert_golden(&local_statement(), LOCAL_GOLDEN);
}

/// A run recorded by a controller from before sources were kept per digest, and signed after the
/// upgrade: its status labels the digest the workload supplied `[Declared, Reported]`. The
/// declared digest comes from the spec, so the statement is the same.
#[test]
fn a_status_recorded_before_the_upgrade_gives_the_same_statement() {
    let mut run = fixture();
    let materials = run.status.as_mut().unwrap().materials.as_mut().unwrap();
    assert_eq!(materials.datasets[1].name, "augment-cache");
    materials.datasets[1].sources = vec![Source::Declared, Source::Reported];
    let built = provenance::statement_for_run(&run, &placement_of(&run), &builder()).unwrap();
    assert_golden(&built, GOLDEN);
}

const MODEL: &str = "registry.example.com/models/resnet50-finetuned";
const MODEL_HEX: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
const IMAGE_HEX: &str = "4f1c1a8e8f0a7c1d2f3e4d5c6b7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a";
const IMAGENET_HEX: &str = "9b2f0a6e3c1d4b5a69788f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c";
const CACHE_HEX: &str = "5d41402abc4b2a76b9719d911017c592ae2b0c4e6f8a9b7c6d5e4f3a2b1c0d9e";
const BASE_HEX: &str = "1e2d3c4b5a69788f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a49";
const COMMIT: &str = "3f2c7e9a1b4d5c6e7f8091a2b3c4d5e6f7a8b9c0";
const REPORT_HEX: &str = "aa11bb22cc33dd44ee55ff66aa77bb88cc99dd00ee11ff22aa33bb44cc55dd66";

fn image() -> String {
    format!("ghcr.io/acme/train-resnet@sha256:{IMAGE_HEX}")
}

fn base_model() -> String {
    format!("registry.example.com/models/resnet50-base@sha256:{BASE_HEX}")
}

/// `subject`: the output the workload reported and the controller resolved.
fn expected_subject() -> Value {
    json!([{"name": MODEL, "digest": {"sha256": MODEL_HEX}}])
}

/// `externalParameters`: the spec as submitted; `valueFrom` as the reference, never resolved.
fn expected_external_parameters() -> Value {
    json!({
        "image": image(),
        "command": ["python", "-m", "train"],
        "args": ["--epochs", "10"],
        "env": [
            {"name": "NCCL_DEBUG", "value": "WARN"},
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
        ],
        "replicas": 2,
        "seed": 42,
        "hyperparameters": {
            "learningRate": 0.001, "batchSize": 256,
            "schedule": {"warmupSteps": 500, "decay": "cosine"}
        },
        "accelerator": {"type": "nvidia-a100-80gb", "count": 4},
        "datasets": [
            {
                "name": "imagenet-subset",
                "uri": "gs://acme-datasets/imagenet/subset-2026-10",
                "digest": format!("sha256:{IMAGENET_HEX}")
            },
            {"name": "augment-cache", "uri": "gs://acme-datasets/cache"}
        ],
        "baseModel": {"uri": base_model(), "digest": format!("sha256:{BASE_HEX}")},
        "code": {"uri": "https://github.com/acme/train-resnet", "revision": COMMIT},
        "output": {"repository": MODEL}
    })
}

/// The `dataset:*` and `baseModel` entries of `resolvedDependencies`.
fn expected_dataset_and_base_model_dependencies() -> Vec<Value> {
    vec![
        // Declared with a digest: the spec vouches for it.
        json!({
            "name": "dataset:imagenet-subset",
            "uri": "gs://acme-datasets/imagenet/subset-2026-10",
            "digest": {"sha256": IMAGENET_HEX},
            "annotations": {
                "declaredDigest": format!("sha256:{IMAGENET_HEX}"),
                "source": ["declared"]
            }
        }),
        // Declared without a digest, reported with one: only the workload vouches for it.
        json!({
            "name": "dataset:augment-cache",
            "uri": "gs://acme-datasets/cache",
            "digest": {"sha256": CACHE_HEX},
            "annotations": {
                "reportedDigest": format!("sha256:{CACHE_HEX}"),
                "source": ["reported"]
            }
        }),
        json!({
            "name": "baseModel",
            "uri": base_model(),
            "digest": {"sha256": BASE_HEX},
            "annotations": {"source": ["declared"]}
        }),
    ]
}

/// What worker 0 reported.
fn expected_report(outputs: Value) -> Value {
    json!({
        "metrics": {"top1": 0.812, "loss": 0.734},
        "datasets": [{"name": "augment-cache", "digest": format!("sha256:{CACHE_HEX}")}],
        "outputs": outputs
    })
}

/// docs/provenance.md applied to the fixture, field by field.
fn expected_statement() -> Value {
    let mut dependencies = vec![json!({
        "name": "image",
        "uri": "oci://ghcr.io/acme/train-resnet",
        "digest": {"sha256": IMAGE_HEX},
        "annotations": {"source": ["observed"], "reference": image()}
    })];
    dependencies.extend(expected_dataset_and_base_model_dependencies());
    dependencies.push(json!({
        "name": "code",
        "uri": "git+https://github.com/acme/train-resnet",
        "digest": {"gitCommit": COMMIT},
        "annotations": {"source": ["declared"]}
    }));
    let container = |image_id: bool| {
        let mut c =
            json!({"name": "trainer", "image": image(), "digest": format!("sha256:{IMAGE_HEX}")});
        if image_id {
            c["imageId"] = json!(image());
        }
        c
    };
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": expected_subject(),
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://provenant.dev/TrainingRun/v1",
                "externalParameters": expected_external_parameters(),
                "internalParameters": {
                    "namespace": "ml-team",
                    // The default framework (pytorch) on two workers: what every worker got, and
                    // the variables holding each worker's rank.
                    "rendezvous": expected_rendezvous(),
                    "serviceAccountName": "default",
                    // The default nvidia-a100-80gb profile's, merged with the spec's nodeSelector.
                    "scheduling": {
                        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "pool": "training"},
                        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                        "acceleratorResource": {"name": "nvidia.com/gpu", "countPerWorker": 4}
                    },
                    // Issue 14: no token, no privileges, the runtime's seccomp profile.
                    "workerSecurity": expected_worker_security()
                },
                "resolvedDependencies": dependencies
            },
            "runDetails": {
                "builder": {"id": "https://provenant.dev/controller/v1", "version": {"provenant": "0.1.0"}},
                "metadata": {
                    "invocationId": "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f",
                    "startedOn": "2026-11-20T10:00:00Z",
                    "finishedOn": "2026-11-20T12:30:05Z"
                },
                "byproducts": [
                    {
                        "name": "worker/resnet50-finetune-0",
                        "uri": "k8s://ml-team/pods/resnet50-finetune-0",
                        "digest": {"sha256": REPORT_HEX},
                        "mediaType": "application/json",
                        "annotations": {
                            "observed": {
                                "rank": 0, "node": "gpu-node-7", "phase": "Succeeded", "exitCode": 0,
                                "reason": "Completed",
                                "startedAt": "2026-11-20T10:00:12Z", "finishedAt": "2026-11-20T12:29:58Z",
                                "containers": [container(true)],
                                "accelerator": {
                                    "product": "NVIDIA-A100-SXM4-80GB", "count": "8", "memory": "81920",
                                    "driverVersion": "535.104.05", "cudaVersion": "12.2",
                                    "instanceType": "p4de.24xlarge",
                                    "labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.count": "8"},
                                    "allocated": 4
                                }
                            },
                            "reported": expected_report(json!([format!("{MODEL}:v3@sha256:{MODEL_HEX}")]))
                        }
                    },
                    // Reported nothing: no digest, no mediaType, no `reported`.
                    {
                        "name": "worker/resnet50-finetune-1",
                        "uri": "k8s://ml-team/pods/resnet50-finetune-1",
                        "annotations": {
                            "observed": {
                                "rank": 1, "node": "gpu-node-8", "phase": "Succeeded", "exitCode": 0,
                                "reason": "Completed",
                                "startedAt": "2026-11-20T10:00:13Z", "finishedAt": "2026-11-20T12:29:57Z",
                                "containers": [container(false)],
                                "accelerator": {"product": "NVIDIA-A100-SXM4-80GB", "count": "8", "allocated": 4}
                            }
                        }
                    }
                ]
            }
        }
    })
}

/// `internalParameters.rendezvous` of the fixture: pytorch, two workers.
fn expected_rendezvous() -> Value {
    let master = "resnet50-finetune-0.resnet50-finetune";
    json!({
        "framework": "pytorch",
        "environment": {
            "LOCAL_RANK": "0", "MASTER_ADDR": master, "MASTER_PORT": "29500", "NNODES": "2",
            "PET_MASTER_ADDR": master, "PET_MASTER_PORT": "29500", "PET_NNODES": "2",
            "WORLD_SIZE": "2"
        },
        "rankEnvironment": ["RANK", "NODE_RANK", "PET_NODE_RANK"]
    })
}

/// The local variant of docs/provenance.md applied to [`local_run`] and [`local_invocation`].
fn expected_local_statement() -> Value {
    let mut dependencies = expected_dataset_and_base_model_dependencies();
    // Hashed by attest to the declared digest: declared and observed.
    dependencies[0]["annotations"] = json!({
        "declaredDigest": format!("sha256:{IMAGENET_HEX}"),
        "observedDigest": format!("sha256:{IMAGENET_HEX}"),
        "source": ["declared", "observed"]
    });
    // The working tree's HEAD, which the spec also declares; no image (the command ran on the
    // host).
    dependencies.push(json!({
        "name": "code",
        "uri": "git+https://github.com/acme/train-resnet",
        "digest": {"gitCommit": COMMIT},
        "annotations": {"source": ["declared", "observed"], "dirty": false}
    }));
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": expected_subject(),
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://provenant.dev/TrainingRun/local/v1",
                "externalParameters": expected_external_parameters(),
                "internalParameters": {
                    "host": local_invocation().host,
                    "workingDirectory": "/home/me/train-resnet",
                    "command": ["python", "-m", "train", "--epochs", "10"]
                },
                "resolvedDependencies": dependencies
            },
            "runDetails": {
                "builder": {"id": "https://provenant.dev/attest/v1", "version": {"provenant": "0.1.0"}},
                "metadata": {
                    "invocationId": "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f",
                    "startedOn": "2026-11-20T10:00:00Z",
                    "finishedOn": "2026-11-20T12:30:05Z"
                },
                "byproducts": [{
                    "name": "worker/local",
                    "uri": "local://ws-1/local",
                    "digest": {"sha256": REPORT_HEX},
                    "mediaType": "application/json",
                    "annotations": {
                        "observed": {
                            "rank": 0, "node": "ws-1", "phase": "Succeeded", "exitCode": 0,
                            "reason": "Completed",
                            "startedAt": "2026-11-20T10:00:12Z", "finishedAt": "2026-11-20T12:29:58Z",
                            "containers": [],
                            "accelerator": {
                                "product": "NVIDIA A100-SXM4-80GB", "count": "8", "memory": "81920",
                                "driverVersion": "535.104.05", "cudaVersion": "12.2"
                            }
                        },
                        "reported": expected_report(json!([]))
                    }
                }]
            }
        }
    })
}

/// `built`, read as JSON, equals `expected`; on failure, the first differing field is named.
fn assert_same_json(built: &Statement, expected: &Value) {
    let actual: Value = serde_json::from_slice(&built.to_bytes().unwrap()).unwrap();
    if &actual == expected {
        return;
    }
    fn first_difference(path: String, a: &Value, e: &Value) -> String {
        match (a, e) {
            (Value::Object(a), Value::Object(e)) => {
                for key in a.keys().chain(e.keys()) {
                    let (x, y) = (a.get(key), e.get(key));
                    if x != y {
                        let (x, y) = (x.unwrap_or(&Value::Null), y.unwrap_or(&Value::Null));
                        return first_difference(format!("{path}.{key}"), x, y);
                    }
                }
                path
            }
            (Value::Array(a), Value::Array(e)) if a.len() == e.len() => a
                .iter()
                .zip(e)
                .enumerate()
                .find(|(_, (x, y))| x != y)
                .map(|(i, (x, y))| first_difference(format!("{path}[{i}]"), x, y))
                .unwrap_or(path),
            _ => format!("{path}: built {a}, expected {e}"),
        }
    }
    panic!(
        "the statement differs from the documented one at {}",
        first_difference(String::new(), &actual, expected)
    );
}

#[test]
fn statement_is_the_documented_mapping_of_the_fixture() {
    assert_same_json(&statement(), &expected_statement());
}

#[test]
fn local_statement_is_the_documented_local_variant() {
    assert_same_json(&local_statement(), &expected_local_statement());
}

/// The keys of the JSON object `text` in the order they are written (a `serde_json::Value` sorts
/// them), each with its value's text.
fn entries(text: &str) -> Vec<(String, &str)> {
    let map: HashMap<String, &RawValue> = serde_json::from_str(text).unwrap();
    let mut entries: Vec<(String, &str)> = map.into_iter().map(|(k, v)| (k, v.get())).collect();
    // Each value is a slice of `text`: its address gives its position.
    entries.sort_by_key(|(_, value)| value.as_ptr() as usize);
    entries
}

fn keys(text: &str) -> Vec<String> {
    entries(text).into_iter().map(|(k, _)| k).collect()
}

fn field<'a>(text: &'a str, name: &str) -> &'a str {
    entries(text)
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .1
}

fn first(array: &str) -> &str {
    serde_json::from_str::<Vec<&RawValue>>(array).unwrap()[0].get()
}

/// docs/provenance.md: "compact JSON, fields in the order below, object keys sorted".
#[test]
fn statement_fields_are_in_the_documented_order() {
    for built in [statement(), local_statement()] {
        let bytes = built.to_bytes().unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(!text.contains('\n') && !text.contains(": "), "compact");
        assert_eq!(
            keys(text),
            ["_type", "subject", "predicateType", "predicate"]
        );
        assert_eq!(keys(first(field(text, "subject"))), ["name", "digest"]);
        let predicate = field(text, "predicate");
        assert_eq!(keys(predicate), ["buildDefinition", "runDetails"]);
        let definition = field(predicate, "buildDefinition");
        assert_eq!(
            keys(definition),
            [
                "buildType",
                "externalParameters",
                "internalParameters",
                "resolvedDependencies"
            ]
        );
        let dependency = first(field(definition, "resolvedDependencies"));
        assert_eq!(keys(dependency), ["name", "uri", "digest", "annotations"]);
        let details = field(predicate, "runDetails");
        assert_eq!(keys(details), ["builder", "metadata", "byproducts"]);
        assert_eq!(keys(field(details, "builder")), ["id", "version"]);
        assert_eq!(
            keys(field(details, "metadata")),
            ["invocationId", "startedOn", "finishedOn"]
        );
        let byproduct = first(field(details, "byproducts"));
        assert_eq!(
            keys(byproduct),
            ["name", "uri", "digest", "mediaType", "annotations"]
        );
        // The objects whose content is provenant's own: sorted keys, at every depth.
        for object in [
            field(definition, "externalParameters"),
            field(definition, "internalParameters"),
            field(dependency, "annotations"),
            field(byproduct, "annotations"),
            field(field(byproduct, "annotations"), "observed"),
            field(
                field(field(byproduct, "annotations"), "observed"),
                "accelerator",
            ),
        ] {
            let keys = keys(object);
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(keys, sorted, "{object}");
        }
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

fn cpu() -> Placement {
    Placement {
        resource: None,
        node_selector: BTreeMap::new(),
        tolerations: Vec::new(),
    }
}

/// Same run, same bytes; read back, the statement writes the same bytes again.
fn assert_reproducible(name: &str, built: &Statement) {
    let bytes = built.to_bytes().unwrap();
    assert_eq!(bytes, built.to_bytes().unwrap(), "{name}");
    let parsed: Statement = serde_json::from_slice(&bytes).unwrap();
    assert!(
        parsed.to_bytes().unwrap() == bytes,
        "{name}: the statement read back writes other bytes"
    );
}

#[test]
fn statements_of_every_shape_are_reproducible() {
    let fixture = fixture();
    let placement = placement_of(&fixture);
    for (name, run, placement) in [
        ("fixture", fixture.clone(), placement.clone()),
        ("64 workers", with_workers(&fixture, 64), placement.clone()),
        ("minimal", minimal(&fixture), placement.clone()),
        ("minimal on CPU", minimal(&fixture), cpu()),
        ("maximal", maximal(&fixture), placement.clone()),
        ("maximal on CPU", maximal(&fixture), cpu()),
    ] {
        let built = provenance::statement_for_run(&run, &placement, &builder()).unwrap();
        assert_reproducible(name, &built);
        for local in [
            local_invocation(),
            LocalInvocation {
                host: json!({"os": "linux"}),
                working_directory: "/w".into(),
                command: vec![],
                code: Some(("git+ssh://git@host/x".into(), "0123".into(), true)),
            },
        ] {
            let built = provenance::statement_for_local_run(&run, &local, &builder()).unwrap();
            assert_reproducible(name, &built);
        }
    }
    assert_eq!(
        provenance::statement_for_run(&with_workers(&fixture, 64), &placement, &builder())
            .unwrap()
            .predicate
            .run_details
            .byproducts
            .len(),
        64
    );
}

fn json_of(built: &Statement) -> Value {
    serde_json::from_slice(&built.to_bytes().unwrap()).unwrap()
}

/// docs/provenance.md, "Who vouched for a dataset's digest": one row per kind of dataset.
#[test]
fn each_dataset_digest_says_who_gave_it() {
    let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let mut run = fixture();
    run.spec.datasets = ["named", "hashed", "all"]
        .iter()
        .map(|name| DatasetRef {
            name: name.to_string(),
            uri: format!("data/{name}"),
            digest: (*name == "all").then(|| digest('c')),
            license: None,
        })
        .collect();
    let material =
        |name: &str, uri: bool, d: Option<String>, sources: Vec<Source>| DatasetMaterial {
            name: name.into(),
            uri: uri.then(|| format!("data/{name}")),
            digest: d,
            sources,
        };
    run.status
        .as_mut()
        .unwrap()
        .materials
        .as_mut()
        .unwrap()
        .datasets = vec![
        material("named", true, None, vec![Source::Declared]),
        material("hashed", true, Some(digest('b')), vec![Source::Observed]),
        material(
            "all",
            true,
            Some(digest('c')),
            vec![Source::Declared, Source::Observed, Source::Reported],
        ),
        material("extra", false, Some(digest('e')), vec![Source::Reported]),
    ];
    let s = json_of(&provenance::statement_for_run(&run, &placement_of(&run), &builder()).unwrap());
    let deps = s["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let dep = |name: &str| {
        deps.iter()
            .find(|d| d["name"] == format!("dataset:{name}"))
            .unwrap()
            .clone()
    };
    assert_eq!(
        dep("named"),
        json!({"name": "dataset:named", "uri": "data/named", "annotations": {"source": ["declared"]}})
    );
    assert_eq!(
        dep("hashed")["annotations"],
        json!({"observedDigest": digest('b'), "source": ["observed"]})
    );
    assert_eq!(
        dep("all")["annotations"],
        json!({
            "declaredDigest": digest('c'), "observedDigest": digest('c'),
            "reportedDigest": digest('c'), "source": ["declared", "observed", "reported"]
        })
    );
    assert_eq!(
        dep("extra"),
        json!({
            "name": "dataset:extra",
            "digest": {"sha256": "e".repeat(64)},
            "annotations": {"reportedDigest": digest('e'), "source": ["reported"]}
        })
    );
}

#[test]
fn absent_optional_fields_are_omitted() {
    let run = minimal(&fixture());
    let s = json_of(&provenance::statement_for_run(&run, &cpu(), &builder()).unwrap());
    let definition = &s["predicate"]["buildDefinition"];
    assert_eq!(
        definition["externalParameters"],
        json!({
            "image": image(), "replicas": 2, "seed": 42, "hyperparameters": {},
            "output": {"repository": MODEL}
        })
    );
    assert_eq!(
        definition["internalParameters"],
        json!({"namespace": "ml-team", "serviceAccountName": "default", "scheduling": {},
               "rendezvous": expected_rendezvous(),
               "workerSecurity": expected_worker_security()})
    );
    assert!(definition.get("resolvedDependencies").is_none(), "{s}");
    let details = &s["predicate"]["runDetails"];
    assert_eq!(
        details["metadata"],
        json!({"invocationId": "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"})
    );
    assert_eq!(
        details["byproducts"][1],
        json!({
            "name": "worker/resnet50-finetune-1",
            "uri": "k8s://ml-team/pods/resnet50-finetune-1",
            "annotations": {"observed": {"rank": 1, "containers": []}}
        })
    );
}

#[test]
fn odd_values_are_written_as_documented() {
    let fixture = fixture();
    let run = maximal(&fixture);
    let s =
        json_of(&provenance::statement_for_run(&run, &placement_of(&fixture), &builder()).unwrap());
    let definition = &s["predicate"]["buildDefinition"];
    let scheduling = &definition["internalParameters"]["scheduling"];
    // The run's nodeSelector wins over the profile's; tolerations: the profile's, then the run's.
    assert_eq!(
        scheduling["nodeSelector"],
        json!({"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "pool": "override", "zone": "eu\"west\\1"})
    );
    assert_eq!(
        scheduling["tolerations"],
        json!([
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute", "tolerationSeconds": 30}
        ])
    );
    assert_eq!(
        scheduling["resources"],
        json!({"limits": {"cpu": "8", "memory": "64Gi"}, "requests": {"cpu": "4"}})
    );
    assert_eq!(
        definition["internalParameters"]["serviceAccountName"],
        "trainer"
    );
    assert_eq!(
        definition["externalParameters"]["accelerator"],
        json!({"type": "nvidia-a100-80gb", "count": 4, "topology": "2x2"})
    );
    assert_eq!(
        definition["externalParameters"]["activeDeadlineSeconds"],
        86_400
    );
    // A code URI already starting with git+ is kept as it is.
    let code = definition["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "code")
        .unwrap();
    assert_eq!(code["uri"], "git+https://example.com/x");
    // Timestamps: whole seconds, UTC, `Z`.
    let details = &s["predicate"]["runDetails"];
    assert_eq!(details["metadata"]["startedOn"], "0999-01-02T03:04:05Z");
    assert_eq!(details["metadata"]["finishedOn"], "9999-12-28T12:26:40Z");
    let worker = &details["byproducts"][1];
    assert_eq!(
        worker["uri"],
        "k8s://ml-team/pods/pod-\u{e9}-\u{1F680}-\"q\"-\t"
    );
    let observed = &worker["annotations"]["observed"];
    assert_eq!(observed["finishedAt"], "1000-01-01T00:00:00Z");
    assert_eq!(observed["exitCode"], -1);
    assert_eq!(observed["accelerator"]["labels"]["Z-upper"], "1");
    assert_eq!(
        observed["containers"][1]["imageId"],
        "docker.io/x@sha256:11"
    );
    // Metrics: non-finite values as null, the others as the numbers they are.
    let metrics = &worker["annotations"]["reported"]["metrics"];
    assert_eq!(metrics["nan"], Value::Null);
    assert_eq!(metrics["inf"], Value::Null);
    assert_eq!(metrics["tiny"], 1e-300);
    assert_eq!(metrics["whole"], 3.0);
    assert_eq!(
        details["byproducts"][0]["annotations"]["reported"],
        json!({"metrics": {}, "datasets": [{"name": "augment-cache", "digest": format!("sha256:{CACHE_HEX}")}], "outputs": []})
    );
}

#[test]
fn runs_without_outputs_or_success_are_not_attested() {
    let mut run = fixture();
    let placement = placement_of(&run);
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

/// `test/python/check_statement.py` on a statement: whether it accepts it, and what it said.
fn check_statement(statement: &[u8]) -> (bool, String) {
    check_statement_with(&[], statement)
}

fn check_statement_with(flags: &[&str], statement: &[u8]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("statement.json");
    std::fs::write(&path, statement).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../test/python/check_statement.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .args(flags)
        .arg(&path)
        .output()
        .expect("python3 is needed for the interop checks");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !said.contains("ModuleNotFoundError"),
        "in-toto-attestation is not installed: pip install -r test/python/requirements.txt\n{said}"
    );
    (out.status.success(), said)
}

/// Independent check: the in-toto-attestation reference library parses each statement strictly
/// into the Statement v1 and SLSA Provenance v1 protobufs and validates it.
#[test]
fn in_toto_attestation_accepts_the_statements() {
    for built in [statement(), local_statement()] {
        let (ok, said) = check_statement(&built.to_bytes().unwrap());
        assert!(ok, "in-toto-attestation refused the statement: {said}");
    }
}

/// The expected statement of the fixture, written by hand from docs/provenance.md, is also what
/// the in-toto-attestation library builds again from provenant's bytes (its Statement v1 and SLSA
/// Provenance v1 messages, serialized by protobuf): two independent readings of one statement.
#[test]
fn in_toto_attestation_rebuilds_the_documented_statement() {
    let (ok, said) = check_statement_with(&["--rebuilt"], &statement().to_bytes().unwrap());
    assert!(ok, "in-toto-attestation refused the statement: {said}");
    let rebuilt: Value = serde_json::from_str(said.trim()).unwrap();
    // Protobuf's JSON has every number of a Struct as a double: compare numbers as f64.
    fn numbers_as_f64(v: &Value) -> Value {
        match v {
            Value::Number(n) => json!(n.as_f64()),
            Value::Array(a) => Value::Array(a.iter().map(numbers_as_f64).collect()),
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
                .collect(),
            other => other.clone(),
        }
    }
    assert_eq!(
        numbers_as_f64(&rebuilt),
        numbers_as_f64(&expected_statement())
    );
}

/// The same check shown bad statements: each must be refused, for its own reason.
#[test]
fn in_toto_attestation_refuses_bad_statements() {
    let good: Value = json_of(&statement());
    let mut unknown_field = good.clone();
    unknown_field["unexpectedField"] = json!(1);
    let mut unknown_predicate_field = good.clone();
    unknown_predicate_field["predicate"]["runDetails"]["unexpectedField"] = json!(1);
    let mut subject_without_digest = good.clone();
    subject_without_digest["subject"][0]
        .as_object_mut()
        .unwrap()
        .remove("digest");
    for (case, statement, reason) in [
        ("an unknown field", unknown_field, "unexpectedField"),
        (
            "an unknown field in the predicate",
            unknown_predicate_field,
            "unexpectedField",
        ),
        (
            "a subject without a digest",
            subject_without_digest,
            "digest required",
        ),
    ] {
        let (ok, said) = check_statement(&serde_json::to_vec(&statement).unwrap());
        assert!(!ok, "{case}: accepted\n{said}");
        assert!(
            said.starts_with("invalid:") && said.contains(reason),
            "{case}: {said}"
        );
    }
}

/// `internalParameters.workerSecurity` of a run that asks for nothing: the defaults applied.
fn expected_worker_security() -> Value {
    json!({
        "automountServiceAccountToken": false,
        "containerSecurityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
        "podSecurityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "volumeTypes": []
    })
}
