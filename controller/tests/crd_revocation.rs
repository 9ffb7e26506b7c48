//! The MaterialRevocation CRD's schema and CEL rules, evaluated offline as the API server would:
//! the shipped sample is accepted, each bad revocation is refused with a message naming its
//! field, and the spec cannot change after creation. test/scenarios/revocation.rs puts the same
//! refusals to a real kube-apiserver (which also judges the CEL cost budget).

use kube::CustomResourceExt;
use provenant::api::MaterialRevocation;
use provenant::api::validation::Admission;
use serde_json::{Value, json};

fn admission() -> Admission {
    Admission::for_crd(&MaterialRevocation::crd()).expect("the CRD compiles")
}

fn sample() -> Value {
    let text = include_str!("../../config/samples/revocation/dataset-revocation.yaml");
    serde_saphyr::from_str(text).expect("the sample parses")
}

/// (case, spec change, field named, a word of the message)
fn refused() -> Vec<(&'static str, Value, &'static str, &'static str)> {
    let d = "sha256:".to_string() + &"a".repeat(64);
    vec![
        (
            "digest without algorithm",
            json!({"material": {"type": "Dataset", "digest": "a".repeat(64)}}),
            "spec.material.digest",
            "sha256",
        ),
        (
            "digest upper case",
            json!({"material": {"type": "Image", "digest": d.to_uppercase()}}),
            "spec.material.digest",
            "sha256",
        ),
        (
            "digest too short",
            json!({"material": {"type": "Model", "digest": "sha256:abc"}}),
            "spec.material.digest",
            "sha256",
        ),
        (
            "unknown type",
            json!({"material": {"type": "BaseModel", "digest": d}}),
            "spec.material.type",
            "Dataset",
        ),
        (
            "empty reason",
            json!({"reason": ""}),
            "spec.reason",
            "shorter",
        ),
        (
            "blank reason",
            json!({"reason": "   "}),
            "spec.reason",
            "\\S",
        ),
        (
            "long reason",
            json!({"reason": "x".repeat(1025)}),
            "spec.reason",
            "1024",
        ),
        (
            "http advisory",
            json!({"advisory": "http://example.com/a"}),
            "spec.advisory",
            "https",
        ),
        (
            "advisory with spaces",
            json!({"advisory": "https://example.com/a b"}),
            "spec.advisory",
            "https",
        ),
        (
            "long advisory",
            json!({"advisory": format!("https://e.com/{}", "a".repeat(2048))}),
            "spec.advisory",
            "2048",
        ),
    ]
}

#[test]
fn the_sample_is_accepted() {
    admission().check(&sample(), None).expect("accepted");
    let typed: MaterialRevocation = serde_json::from_value(sample()).expect("typed");
    assert_eq!(typed.spec.material.digest.len(), 71);
}

#[test]
fn every_bad_revocation_is_refused_naming_its_field() {
    let admission = admission();
    for (case, change, field, hint) in refused() {
        let mut object = sample();
        for (k, v) in change.as_object().expect("object") {
            object["spec"][k] = v.clone();
        }
        let err = admission
            .check(&object, None)
            .expect_err(&format!("{case}: accepted"));
        assert!(
            err.errors
                .iter()
                .any(|e| e.field == field && e.message.contains(hint)),
            "{case}: expected {field} saying {hint:?}, got: {err}"
        );
    }
    // A missing reason or material.
    for missing in ["reason", "material"] {
        let mut object = sample();
        object["spec"].as_object_mut().unwrap().remove(missing);
        let err = admission.check(&object, None).expect_err(missing);
        assert!(err.to_string().contains(missing), "{err}");
    }
}

#[test]
fn the_spec_is_immutable() {
    let admission = admission();
    let old = sample();
    let mut new = old.clone();
    new["spec"]["reason"] = json!("a different story");
    let err = admission.check(&new, Some(&old)).expect_err("immutable");
    assert!(
        err.errors
            .iter()
            .any(|e| e.field == "spec" && e.message.contains("immutable")),
        "{err}"
    );
    // The status is the controller's to write.
    let mut status = old.clone();
    status["status"] = json!({"affectedCount": 3});
    admission.check(&status, Some(&old)).expect("status change");
}
