use std::path::Path;

use serde_json::json;

use super::*;

fn policy(text: &str) -> RegoPolicy {
    RegoPolicy::from_source(Path::new("test.rego"), text.to_string(), &[]).unwrap()
}

fn shipped(name: &str, data: &[(PathBuf, Value)]) -> RegoPolicy {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/policies")
        .join(name);
    RegoPolicy::load(&path, data).unwrap()
}

fn checked(statement: Option<Value>, failures: &[&str]) -> Checked {
    Checked {
        found_at: "test".into(),
        envelope_digest: format!("sha256:{}", "e".repeat(64)),
        failures: failures.iter().map(|f| f.to_string()).collect(),
        kind: statement
            .as_ref()
            .map(|_| crate::verify::AttestationKind::Provenance),
        statement,
    }
}

fn statement(deps: Value) -> Value {
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "r/m", "digest": {"sha256": "a".repeat(64)}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"buildDefinition": {"buildType": "t", "resolvedDependencies": deps}},
    })
}

fn deny(policy: &RegoPolicy, deps: Value) -> Vec<String> {
    let verdict = Verdict {
        artifact: "r/m".into(),
        digest: format!("sha256:{}", "a".repeat(64)),
        verified: true,
        content_failures: vec![],
        attestations: vec![],
        revoked: vec![],
        reinstated: 0,
        summary: None,
        model_signature: None,
    };
    let s = statement(deps);
    let input = input(
        &verdict,
        &checked(Some(s.clone()), &[]),
        &s,
        &ArtifactFacts::default(),
    );
    policy.deny(&input, "sha256:e").unwrap()
}

#[test]
fn a_policy_reads_only_statements_whose_signature_verified() {
    let always = policy("package provenant\n\ndeny contains \"refused\" if true\n");
    let verdict = Verdict {
        artifact: "r/m".into(),
        digest: format!("sha256:{}", "a".repeat(64)),
        verified: true,
        content_failures: vec![],
        attestations: vec![
            // The signature failed: no statement, the policy never sees it.
            checked(None, &["signature: invalid"]),
            checked(Some(statement(json!([]))), &[]),
        ],
        revoked: vec![],
        reinstated: 0,
        summary: None,
        model_signature: None,
    };
    let mut other = statement(json!([]));
    other["predicateType"] = json!("https://model_signing/signature/v1.0");
    let mut verdict = verdict;
    verdict
        .attestations
        .push(checked(Some(other), &["predicateType is ..."]));
    let verdict = apply(verdict, &[always], &ArtifactFacts::default()).unwrap();
    assert_eq!(verdict.attestations[0].failures, ["signature: invalid"]);
    // Not provenance: not a policy's business (refused for its type already).
    assert_eq!(verdict.attestations[2].failures, ["predicateType is ..."]);
    assert_eq!(
        verdict.attestations[1].failures,
        ["policy test.rego: refused"]
    );
    assert!(!verdict.verified);
    assert!(verdict.summary.is_none());

    // An error in a policy is never swallowed: not over a verified statement...
    let broken = policy("package provenant\n\ndeny contains x if { x := 1 / 0 }\n");
    let verdict = Verdict {
        attestations: vec![checked(Some(statement(json!([]))), &[])],
        ..verdict
    };
    let e = apply(
        verdict.clone(),
        std::slice::from_ref(&broken),
        &ArtifactFacts::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("test.rego:3:"), "{e}");
    // ...while one whose signature failed is not evaluated at all.
    let unsigned = Verdict {
        attestations: vec![checked(None, &["signature: invalid"])],
        ..verdict
    };
    let settled = apply(unsigned, &[broken], &ArtifactFacts::default()).unwrap();
    assert!(!settled.verified);
}

#[test]
fn a_passing_policy_keeps_the_verdict() {
    let never = policy("package provenant\n\ndeny contains \"no\" if false\n");
    let verdict = Verdict {
        artifact: "r/m".into(),
        digest: "sha256:a".into(),
        verified: true,
        content_failures: vec![],
        attestations: vec![checked(Some(statement(json!([]))), &[])],
        revoked: vec![],
        reinstated: 0,
        summary: None,
        model_signature: None,
    };
    let verdict = apply(verdict, &[never], &ArtifactFacts::default()).unwrap();
    assert!(verdict.verified);
    assert!(verdict.summary.is_some());
}

#[test]
fn messages_are_strings_objects_with_msg_or_their_json() {
    let p = policy(
        "package provenant\n\ndeny contains \"text\"\ndeny contains {\"msg\": \"from msg\"}\ndeny contains {\"code\": 7}\ndeny contains 3\n",
    );
    let mut got = deny(&p, json!([]));
    got.sort();
    assert_eq!(got, ["3", "from msg", "text", "{\"code\":7}"]);
}

#[test]
fn the_license_policy_refuses_every_dataset_without_a_declared_license() {
    let p = shipped("dataset-license.rego", &[]);
    let ok = json!([
        {"name": "image", "uri": "oci://x"},
        {"name": "dataset:a", "annotations": {"declaredLicense": "CC-BY-4.0", "source": ["declared"]}},
    ]);
    assert!(deny(&p, ok).is_empty());
    let got = deny(
        &p,
        json!([
            // Only reported by the workload: no annotations a license could be in.
            {"name": "dataset:reported", "digest": {"sha256": "b"}},
            {"name": "dataset:unknown", "annotations": {"declaredLicense": "NOASSERTION"}},
            {"name": "dataset:licensed", "annotations": {"declaredLicense": "MIT"}},
        ]),
    );
    assert_eq!(
        got,
        [
            "dataset \"reported\" has no declared license (spec.datasets[].license)",
            "dataset \"unknown\" declares its license as NOASSERTION (not known)",
        ]
    );
}

#[test]
fn the_image_policy_refuses_images_it_cannot_place() {
    let p = shipped("base-image-registry.rego", &[]);
    let image = |uri: Value| json!([{"name": "image", "uri": uri, "digest": {"sha256": "c"}}]);
    assert!(
        deny(
            &p,
            image(json!("oci://registry.example.com/approved/train"))
        )
        .is_empty()
    );
    for bad in [
        json!("oci://registry.example.com/approved-not/train"),
        json!("oci://registry.example.com/approve"),
        json!("registry.example.com/approved/train"),
        json!(7),
    ] {
        assert_eq!(deny(&p, image(bad.clone())).len(), 1, "{bad}");
    }
    // No uri at all is refused, not skipped.
    let got = deny(&p, json!([{"name": "image", "digest": {"sha256": "c"}}]));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("\"\""), "{got:?}");
    // Data replaces the default prefixes.
    let data = [(
        PathBuf::from("d.json"),
        json!({"allowed_image_registries": ["ghcr.io/acme"]}),
    )];
    let p = shipped("base-image-registry.rego", &data);
    assert!(deny(&p, image(json!("oci://ghcr.io/acme/x"))).is_empty());
    assert_eq!(
        deny(
            &p,
            image(json!("oci://registry.example.com/approved/train"))
        ),
        [
            "training image \"oci://registry.example.com/approved/train\" is not from an allowed registry (allowed: ghcr.io/acme)"
        ]
    );
}

#[test]
fn a_policy_that_runs_too_long_is_an_error() {
    let slow = policy(
        "package provenant\n\ndeny contains x if {\n  some i in numbers.range(1, 5000)\n  some j in numbers.range(1, 5000)\n  x := i * j\n  x < 0\n}\n",
    )
    .with_time_limit(std::time::Duration::from_millis(200));
    let started = std::time::Instant::now();
    let s = statement(json!([]));
    let verdict = Verdict {
        artifact: "r/m".into(),
        digest: "sha256:a".into(),
        verified: true,
        content_failures: vec![],
        attestations: vec![checked(Some(s), &[])],
        revoked: vec![],
        reinstated: 0,
        summary: None,
        model_signature: None,
    };
    let e = apply(verdict, &[slow], &ArtifactFacts::default()).unwrap_err();
    assert!(e.to_string().contains("time limit"), "{e}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
