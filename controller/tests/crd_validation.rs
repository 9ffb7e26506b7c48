//! The CRD's schema and CEL rules, evaluated as the API server would: every sample is accepted,
//! each bad input is refused with a message that names the field.

use provenant::api::TrainingRun;
use provenant::api::validation::{Admission, InvalidTrainingRun};
use provenant::config::ControllerConfig;
use serde_json::{Value, json};

fn samples() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/samples");
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 3, "expected the GPU, TPU and CPU samples");
    out
}

fn cpu_sample() -> Value {
    let (_, text) = samples()
        .into_iter()
        .find(|(p, _)| p.ends_with("cpu-trainingrun.yaml"))
        .unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn refused(admission: &Admission, obj: &Value, old: Option<&Value>) -> InvalidTrainingRun {
    admission
        .check(obj, old)
        .expect_err("the schema accepted a bad object")
}

/// The refusal names `field` and says something containing `hint`.
fn assert_refused(obj: Value, field: &str, hint: &str) {
    let admission = Admission::new().unwrap();
    let err = refused(&admission, &obj, None);
    assert!(
        err.errors
            .iter()
            .any(|e| e.field.starts_with(field) && e.to_string().contains(hint)),
        "expected an error on {field} mentioning {hint:?}, got: {err}"
    );
}

#[test]
fn samples_deserialize_and_pass_admission() {
    let admission = Admission::new().unwrap();
    for (path, text) in samples() {
        let run: TrainingRun =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        let value: Value = serde_saphyr::from_str(&text).unwrap();
        admission
            .check(&value, None)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        admission
            .check_run(&run, None)
            .unwrap_or_else(|e| panic!("{path} (typed): {e}"));
        // And the controller can place it with the shipped accelerator profiles.
        ControllerConfig::defaults()
            .placement(run.spec.accelerator.as_ref())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

#[test]
fn malformed_digests_are_refused() {
    for bad in [
        "sha256:abc",
        "sha512:".to_string().as_str(),
        "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
    ] {
        let mut obj = cpu_sample();
        obj["spec"]["datasets"][0]["digest"] = json!(bad);
        assert_refused(obj, "spec.datasets[0].digest", "sha256");

        let mut obj = cpu_sample();
        obj["spec"]["baseModel"] = json!({"uri": "hf://acme/base", "digest": bad});
        assert_refused(obj, "spec.baseModel.digest", "sha256");
    }
}

#[test]
fn replicas_must_be_between_1_and_256() {
    for bad in [0, -1, 257] {
        let mut obj = cpu_sample();
        obj["spec"]["replicas"] = json!(bad);
        assert_refused(obj, "spec.replicas", "");
    }
    let admission = Admission::new().unwrap();
    for good in [1, 256] {
        let mut obj = cpu_sample();
        obj["spec"]["replicas"] = json!(good);
        admission.check(&obj, None).unwrap();
    }
}

#[test]
fn code_revision_must_be_a_full_hex_commit() {
    for bad in [
        "main",
        "v1.2.3",
        "3f2c7e9",
        "3F2C7E9A1B4D5C6E7F8091A2B3C4D5E6F7A8B9C0",
        "3f2c7e9a1b4d5c6e7f8091a2b3c4d5e6f7a8b9cz",
    ] {
        let mut obj = cpu_sample();
        obj["spec"]["code"] = json!({"uri": "https://github.com/acme/x", "revision": bad});
        assert_refused(obj, "spec.code.revision", "");
    }
    let admission = Admission::new().unwrap();
    let mut obj = cpu_sample();
    obj["spec"]["code"] = json!({"uri": "https://github.com/acme/x", "revision": "a".repeat(64)});
    admission.check(&obj, None).unwrap();
}

#[test]
fn output_repository_takes_no_tag_or_digest() {
    for bad in [
        "registry.example.com/models/churn:v1",
        "registry.example.com/models/churn@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "registry.example.com/Models/Churn",
        "https://registry.example.com/models/churn",
        "registry.example.com/models/churn/",
        "",
    ] {
        let mut obj = cpu_sample();
        obj["spec"]["output"]["repository"] = json!(bad);
        assert_refused(obj, "spec.output.repository", "");
    }
    let admission = Admission::new().unwrap();
    for good in [
        "localhost:5000/models/churn",
        "models/churn",
        "ghcr.io/acme/churn_logreg",
        "registry.example.com:443/a/b-c/d.e",
    ] {
        let mut obj = cpu_sample();
        obj["spec"]["output"]["repository"] = json!(good);
        admission
            .check(&obj, None)
            .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
}

#[test]
fn missing_required_fields_are_named() {
    let mut obj = cpu_sample();
    obj["spec"].as_object_mut().unwrap().remove("output");
    assert_refused(obj, "spec", "output");
    let mut obj = cpu_sample();
    obj["spec"].as_object_mut().unwrap().remove("seed");
    assert_refused(obj, "spec", "seed");
    let mut obj = cpu_sample();
    obj["spec"]["seed"] = json!(-3);
    assert_refused(obj, "spec.seed", "");
}

#[test]
fn accelerator_shape_is_checked() {
    let mut obj = cpu_sample();
    obj["spec"]["accelerator"] = json!({"type": "nvidia-l4", "count": 0});
    assert_refused(obj, "spec.accelerator.count", "");
    let mut obj = cpu_sample();
    obj["spec"]["accelerator"] = json!({"type": "NVIDIA L4", "count": 1});
    assert_refused(obj, "spec.accelerator.type", "");
    let mut obj = cpu_sample();
    obj["spec"]["accelerator"] = json!({"type": "tpu-v5e", "count": 4, "topology": "4by4"});
    assert_refused(obj, "spec.accelerator.topology", "");
}

#[test]
fn reserved_env_cannot_be_overridden() {
    for name in [
        "RANK",
        "MASTER_ADDR",
        "PROVENANT_SEED",
        "PROVENANT_ANYTHING",
    ] {
        let mut obj = cpu_sample();
        obj["spec"]["env"] =
            json!([{"name": "NCCL_DEBUG", "value": "INFO"}, {"name": name, "value": "1"}]);
        assert_refused(obj, "spec.env", "cannot be overridden");
    }
    let mut obj = cpu_sample();
    obj["spec"]["env"] = json!([{"name": "MY_RANK", "value": "1"}]);
    Admission::new().unwrap().check(&obj, None).unwrap();
}

#[test]
fn dataset_names_are_unique_and_mounts_name_volumes() {
    let mut obj = cpu_sample();
    obj["spec"]["datasets"] =
        json!([{"name": "a", "uri": "s3://x"}, {"name": "a", "uri": "s3://y"}]);
    assert_refused(obj, "spec.datasets", "unique");
    let mut obj = cpu_sample();
    obj["spec"]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
    assert_refused(obj, "spec.volumeMounts", "volume");
}

#[test]
fn unknown_fields_are_refused() {
    let mut obj = cpu_sample();
    obj["spec"]["replica"] = json!(2);
    assert_refused(obj, "spec", "replica");
}

#[test]
fn run_name_must_fit_pod_and_service_names() {
    let mut obj = cpu_sample();
    obj["metadata"]["name"] = json!("a".repeat(49));
    assert_refused(obj, "", "metadata.name");
    let mut obj = cpu_sample();
    obj["metadata"]["name"] = json!("1-run");
    assert_refused(obj, "", "metadata.name");
}

#[test]
fn spec_is_immutable_once_started() {
    let admission = Admission::new().unwrap();
    let old = cpu_sample();
    let mut new = old.clone();
    new["spec"]["seed"] = json!(8);
    // Not started: the user may still fix the spec.
    admission.check(&new, Some(&old)).unwrap();

    let mut started = old.clone();
    started["status"] = json!({"phase": "Pending", "startTime": "2026-11-22T04:00:00Z"});
    let mut changed = new.clone();
    changed["status"] = started["status"].clone();
    assert_refused_update(&admission, &changed, &started, "spec", "immutable");

    // Status-only changes after the start are the controller's business and stay allowed.
    let mut status_update = started.clone();
    status_update["status"]["phase"] = json!("Running");
    admission.check(&status_update, Some(&started)).unwrap();
}

fn assert_refused_update(admission: &Admission, new: &Value, old: &Value, field: &str, hint: &str) {
    let err = refused(admission, new, Some(old));
    assert!(
        err.errors
            .iter()
            .any(|e| e.field.starts_with(field) && e.message.contains(hint)),
        "expected an error on {field} mentioning {hint:?}, got: {err}"
    );
}

#[test]
fn committed_crd_matches_the_code() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/trainingruns.provenant.dev.yaml"
    ))
    .unwrap();
    let generated = provenant::crdgen::crds_yaml().unwrap();
    assert!(
        committed == generated,
        "crds/ is stale: run `make crds` and commit the result"
    );
}

/// The API server refuses a CRD whose rules may cost more than its budget; the rules here iterate
/// only over bounded lists and strings.
#[test]
fn cel_rules_compile_and_fit_the_cost_budget() {
    fn walk(node: &Value, path: &str, found: &mut Vec<String>) {
        let Some(map) = node.as_object() else { return };
        if let Some(rules) = map
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        {
            let compiled = kube_cel::compile_schema(node);
            assert!(
                !compiled.has_errors(),
                "{path}: {:?}",
                compiled.compilation_errors()
            );
            for rule in rules {
                let rule = rule["rule"].as_str().unwrap();
                assert!(
                    rule_has_message(node, rule),
                    "{path}: rule {rule:?} has no message"
                );
                // Cost only: the scope analysis of kube-cel 0.8 mistakes comprehension variables for free ones.
                let warnings = kube_cel::estimate_rule_cost(rule, &compiled);
                assert!(warnings.is_empty(), "{path}: {rule}: {warnings:?}");
                found.push(rule.to_string());
            }
        }
        if let Some(props) = map.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                walk(v, &format!("{path}.{k}"), found);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(child) = map.get(key) {
                walk(child, &format!("{path}[]"), found);
            }
        }
    }
    fn rule_has_message(node: &Value, rule: &str) -> bool {
        node["x-kubernetes-validations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule"] == rule && r["message"].as_str().is_some_and(|m| !m.is_empty()))
    }
    let admission = Admission::new().unwrap();
    let mut found = vec![];
    walk(admission.schema(), "", &mut found);
    assert!(
        found.len() >= 5,
        "expected every provenant rule, found {found:?}"
    );
}
