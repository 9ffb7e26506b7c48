//! The Kubeflow Pipelines component (kubeflow/provenant_kfp) and the sample pipeline
//! (kubeflow/samples/train_pipeline.py) compile with the real `kfp` SDK into the IR YAML a KFP v2
//! backend runs, with the inputs and outputs docs/pipelines.md promises. Running the component
//! against a cluster: test/scenarios/pipelines/kfp.rs.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

const INSTALL_HINT: &str = "pip install -r test/python/requirements.txt";

fn kubeflow_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kubeflow")
}

/// `python3 args...` with the package importable (as `pip install ./kubeflow` makes it); the IR
/// it wrote to `out`, parsed.
fn compile(args: &[&str], out: &Path) -> Value {
    let output = match Command::new("python3")
        .args(args)
        .arg(out)
        .env("PYTHONPATH", kubeflow_dir())
        .output()
    {
        Ok(output) => output,
        Err(e) => panic!("cannot run python3 ({e}): install Python 3, then {INSTALL_HINT}"),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "the kfp SDK is missing: {INSTALL_HINT}\n{stderr}"
    );
    assert!(output.status.success(), "compiling failed:\n{stderr}");
    let text = std::fs::read_to_string(out).expect("the compiler wrote the IR");
    assert!(text.starts_with("# PIPELINE DEFINITION"), "{text}");
    serde_saphyr::from_str(&text).expect("the IR is YAML")
}

const COMPILE_COMPONENT: &str = "import sys\n\
from kfp import compiler\n\
from provenant_kfp import train_model\n\
compiler.Compiler().compile(train_model, sys.argv[1])\n";

#[test]
fn the_component_compiles_with_its_documented_interface() {
    let dir = tempfile::tempdir().unwrap();
    let ir = compile(
        &["-c", COMPILE_COMPONENT],
        &dir.path().join("component.yaml"),
    );
    let component = &ir["components"]["comp-train-model"];
    let inputs = &component["inputDefinitions"]["parameters"];
    // (name, type, default or null when required)
    let expected = [
        ("image", "STRING", Value::Null),
        ("output_repository", "STRING", Value::Null),
        ("seed", "NUMBER_INTEGER", Value::Null),
        ("command", "LIST", json!([])),
        ("args", "LIST", json!([])),
        ("datasets", "LIST", json!([])),
        ("hyperparameters", "STRUCT", json!({})),
        ("accelerator_type", "STRING", json!("")),
        ("accelerator_count", "NUMBER_INTEGER", json!(1.0)),
        ("accelerator_topology", "STRING", json!("")),
        ("replicas", "NUMBER_INTEGER", json!(1.0)),
        ("namespace", "STRING", json!("")),
        ("run_name", "STRING", json!("")),
        ("pipeline_run_id", "STRING", json!("")),
        ("pipeline_task_name", "STRING", json!("")),
        ("timeout_seconds", "NUMBER_INTEGER", json!(86400.0)),
        ("require_provenance", "BOOLEAN", json!(true)),
    ];
    for (name, type_, default) in &expected {
        let input = &inputs[name];
        assert_eq!(
            input["parameterType"],
            json!(type_),
            "input {name}: {input}"
        );
        assert_eq!(&input["defaultValue"], default, "input {name}");
        assert_eq!(
            input["isOptional"].as_bool(),
            (!default.is_null()).then_some(true)
        );
    }
    assert_eq!(
        inputs.as_object().unwrap().len(),
        expected.len(),
        "{inputs:#}"
    );

    let outputs = &component["outputDefinitions"];
    assert_eq!(
        outputs["artifacts"]["model"]["artifactType"]["schemaTitle"],
        "system.Model"
    );
    for name in ["digest", "run_name", "namespace"] {
        assert_eq!(
            outputs["parameters"][name]["parameterType"], "STRING",
            "{name}"
        );
    }

    // The step's container: the base image, the Kubernetes client installed, the function run.
    let container = &ir["deploymentSpec"]["executors"]["exec-train-model"]["container"];
    assert_eq!(container["image"], "python:3.11-slim");
    let command = container["command"].to_string();
    assert!(command.contains("kubernetes>=30.1"), "{command}");
    assert!(command.contains("def train_model("), "{command}");
}

#[test]
fn the_sample_pipeline_compiles_and_wires_the_model_through() {
    let dir = tempfile::tempdir().unwrap();
    let sample = kubeflow_dir().join("samples/train_pipeline.py");
    let ir = compile(
        &[sample.to_str().unwrap()],
        &dir.path().join("pipeline.yaml"),
    );
    assert_eq!(ir["pipelineInfo"]["name"], "provenant-train");
    let root = &ir["root"];
    let train = &root["dag"]["tasks"]["train-model"]["inputs"]["parameters"];
    // The run is named after the KFP run and task, filled in by the backend.
    assert_eq!(
        train["pipeline_run_id"]["runtimeValue"]["constant"],
        "{{$.pipeline_job_uuid}}"
    );
    assert_eq!(
        train["pipeline_task_name"]["runtimeValue"]["constant"],
        "{{$.pipeline_task_name}}"
    );
    for name in [
        "image",
        "output_repository",
        "datasets",
        "hyperparameters",
        "seed",
    ] {
        assert_eq!(train[name]["componentInputParameter"], name, "{name}");
    }
    // Pipeline parameters keep their JSON types (a learning rate stays a number).
    let params = &root["inputDefinitions"]["parameters"];
    assert_eq!(params["hyperparameters"]["parameterType"], "STRUCT");
    assert_eq!(
        params["hyperparameters"]["defaultValue"]["learningRate"],
        json!(0.0003)
    );
    assert_eq!(params["datasets"]["parameterType"], "LIST");

    // The next step gets the model artifact and the digest from the training step.
    let next = &root["dag"]["tasks"]["announce-model"]["inputs"];
    assert_eq!(
        next["artifacts"]["model"]["taskOutputArtifact"],
        json!({"outputArtifactKey": "model", "producerTask": "train-model"})
    );
    assert_eq!(
        next["parameters"]["digest"]["taskOutputParameter"],
        json!({"outputParameterKey": "digest", "producerTask": "train-model"})
    );
    // And the pipeline's own output is that model.
    assert_eq!(
        root["outputDefinitions"]["artifacts"]["Output"]["artifactType"]["schemaTitle"],
        "system.Model"
    );
}
