//! The statement of a recorded run, byte for byte against a golden file, and field by field against
//! the mapping table of DESIGN.md. Regenerate after an intended change with
//! `UPDATE_GOLDEN=1 cargo test -p provenant --test provenance_golden` and review the diff.

use provenant::api::TrainingRun;
use provenant::config::ControllerConfig;
use provenant::provenance::{self, BuilderIdentity, ProvenanceError};
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
