//! The CRD's schema and CEL rules, evaluated offline as the API server would (`provenant
//! validate` and `provenant attest` use the same checks): every sample is accepted, each bad input
//! of support/runs.rs is refused with a message that names the field. The same table is put to a
//! real kube-apiserver by test/scenarios/admission.rs, which is also where the CEL cost budget is
//! checked: only the real server's estimator is authoritative (kube-cel's passed a rule the
//! server refuses).

#[path = "support/runs.rs"]
mod runs;

use provenant::api::TrainingRun;
use provenant::api::validation::{Admission, InvalidTrainingRun};
use provenant::config::ControllerConfig;
use provenant::execute::placement;
use serde_json::{Value, json};

use runs::{accepted, cpu_sample, refused, samples, started};

fn refused_by(admission: &Admission, obj: &Value, old: Option<&Value>) -> InvalidTrainingRun {
    admission
        .check(obj, old)
        .expect_err("the schema accepted a bad object")
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
        placement(&ControllerConfig::defaults(), run.spec.accelerator.as_ref())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

#[test]
fn every_bad_run_is_refused_naming_its_field() {
    let admission = Admission::new().unwrap();
    let cases = refused();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    for case in cases {
        let Err(err) = admission.check(&case.object, None) else {
            panic!("{}: accepted", case.case);
        };
        assert!(
            err.errors
                .iter()
                .any(|e| case.matches(&e.field, &e.message)),
            "{}: expected an error on {} saying one of {:?}, got: {err}",
            case.case,
            case.field,
            case.hints
        );
    }
}

#[test]
fn edge_cases_within_the_bounds_are_accepted() {
    let admission = Admission::new().unwrap();
    for case in accepted() {
        if let Err(e) = admission.check(&case.object, None) {
            panic!("{}: {e}", case.case);
        }
    }
}

#[test]
fn spec_is_immutable_once_started() {
    let admission = Admission::new().unwrap();
    let old = cpu_sample();
    let mut new = old.clone();
    new["spec"]["seed"] = json!(8);
    // Not started: the user may still fix the spec.
    admission.check(&new, Some(&old)).unwrap();

    let started_old = started(&old);
    let changed = started(&new);
    let err = refused_by(&admission, &changed, Some(&started_old));
    assert!(
        err.errors
            .iter()
            .any(|e| e.field.starts_with("spec") && e.message.contains("immutable")),
        "{err}"
    );

    // Every other field too, a new one included (failurePolicy: added, changed or removed).
    let mut with_policy = old.clone();
    with_policy["spec"]["failurePolicy"] = json!({"maxRestarts": 1});
    let mut more = with_policy.clone();
    more["spec"]["failurePolicy"]["maxRestarts"] = json!(2);
    for (before, after) in [
        (&old, &with_policy),
        (&with_policy, &more),
        (&with_policy, &old),
    ] {
        refused_by(&admission, &started(after), Some(&started(before)));
    }
    // spec.suspend alone stays changeable: a running run is suspended and resumed.
    let mut suspended = old.clone();
    suspended["spec"]["suspend"] = json!(true);
    admission
        .check(&started(&suspended), Some(&started_old))
        .unwrap();
    admission
        .check(&started_old, Some(&started(&suspended)))
        .unwrap();

    // Status-only changes after the start are the controller's business and stay allowed.
    let mut status_update = started_old.clone();
    status_update["status"]["phase"] = json!("Running");
    admission.check(&status_update, Some(&started_old)).unwrap();
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

/// Every rule compiles and carries a message or message expression (the cost budget is the real server's to judge:
/// test/scenarios/admission.rs installs the CRD there).
#[test]
fn cel_rules_compile_and_have_messages() {
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
                // A message, or an expression computing it (naming the offending key).
                let message = rule["message"]
                    .as_str()
                    .or(rule["messageExpression"].as_str())
                    .unwrap_or_default();
                assert!(!message.is_empty(), "{path}: rule {rule} has no message");
                found.push(rule["rule"].as_str().unwrap().to_string());
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
    let admission = Admission::new().unwrap();
    let mut found = vec![];
    walk(admission.schema(), "", &mut found);
    assert!(
        found.len() >= 5,
        "expected every provenant rule, found {found:?}"
    );
}
