//! Issue 15 (4): `provenant verify --policy FILE.rego`, run as a user runs it on real attested
//! output, with the two shipped policies (config/policies/) both ways: a model they admit, and
//! one they refuse with the policy's message. A policy never reads a statement whose signature
//! did not verify; a broken policy is a usage error (exit 2) naming the file and line.
//!
//! Two kinds of attested output: `provenant attest` into an OCI layout (a local run: datasets
//! hashed on the host), and the controller's statement for a cluster run (the test fixture, with
//! observed training images) signed by the engine and attached to a model in the registry
//! fixture (Debian's docker-registry).

#[path = "support/attested.rs"]
mod attested;

use std::process::Output;

use attested::{Keys, attest_cluster_run, policy, provenant, push_model, text};
use provenant_testbed::registry::{ModelRef, Registry};

/// `provenant verify` of a model in the registry fixture, with `extra` flags.
fn verify_in(registry: &Registry, model: &ModelRef, keys: &Keys, extra: &[&str]) -> Output {
    let public = keys.public();
    let mut args = vec![
        "verify",
        model.reference.as_str(),
        "--key",
        public.as_str(),
        "--insecure-registry",
        registry.host(),
    ];
    args.extend_from_slice(extra);
    provenant(&args)
}

/// A local run through `provenant attest`: a trivial training command, two local datasets with
/// the licenses given (`None`: declared without one). Returns the `oci:` reference, the layout's
/// temporary directory and the public key.
fn attest_local(licenses: [Option<&str>; 2]) -> (String, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let out = provenant(&["keys", "generate", "--output-dir", &path("keys")]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(path("reviews.csv"), "id,text\n1,good\n").unwrap();
    std::fs::write(path("scraped.csv"), "id,text\n1,whatever\n").unwrap();
    let dataset = |name: &str, license: Option<&str>| {
        let license = license
            .map(|l| format!("\n      license: \"{l}\""))
            .unwrap_or_default();
        format!(
            "    - name: {name}\n      uri: {}{license}\n",
            path(&format!("{name}.csv"))
        )
    };
    let run = format!(
        r#"apiVersion: provenant.dev/v1alpha1
kind: TrainingRun
metadata:
  name: license-check
spec:
  image: docker.io/library/python:3.11-slim
  command: ["sh", "-c", "printf 'weights' > \"$PROVENANT_OUTPUT_DIR/model.bin\""]
  seed: 1
  datasets:
{}{}  output:
    repository: localhost/models/license-check
"#,
        dataset("reviews", licenses[0]),
        dataset("scraped", licenses[1]),
    );
    std::fs::write(path("run.yaml"), run).unwrap();
    let out = provenant(&[
        "attest",
        "-f",
        &path("run.yaml"),
        "--key",
        &path("keys/cosign.key"),
        "--layout",
        &path("layout"),
        "--model-dir",
        &path("model"),
        "--output-digest",
        &path("digest"),
        "-q",
    ]);
    assert!(out.status.success(), "attest failed: {}", text(&out));
    let digest = std::fs::read_to_string(path("digest")).unwrap();
    let reference = format!("oci:{}@{digest}", path("layout"));
    let key = path("keys/cosign.pub");
    (reference, dir, key)
}

#[test]
fn the_dataset_license_policy_admits_licensed_datasets_and_refuses_the_others() {
    let license = policy("dataset-license.rego");

    // Every dataset declares a license: admitted, and the statement records each as declared.
    let (reference, _dir, key) = attest_local([Some("CC-BY-4.0"), Some("Apache-2.0 OR MIT")]);
    let out = provenant(&["verify", &reference, "--key", &key, "--policy", &license]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).starts_with("Verified:"), "{}", text(&out));
    let out = provenant(&["verify", &reference, "--key", &key, "--output", "json"]);
    let verdict: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let deps = &verdict["attestations"][0]["statement"]["predicate"]["buildDefinition"]["resolvedDependencies"];
    let licenses: Vec<&str> = deps
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["annotations"]["declaredLicense"].as_str())
        .collect();
    assert_eq!(licenses, ["CC-BY-4.0", "Apache-2.0 OR MIT"], "{deps}");

    // One dataset without a license, one with SPDX's "not known": refused, each named.
    let (reference, _dir, key) = attest_local([None, Some("NOASSERTION")]);
    let out = provenant(&["verify", &reference, "--key", &key, "--policy", &license]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.starts_with("NOT verified:"), "{said}");
    for reason in [
        format!(
            "    - policy {license}: dataset \"reviews\" has no declared license (spec.datasets[].license)"
        ),
        format!(
            "    - policy {license}: dataset \"scraped\" declares its license as NOASSERTION (not known)"
        ),
    ] {
        assert!(said.contains(&reason), "missing {reason:?} in\n{said}");
    }
    // The same model without the policy verifies: the refusal is the policy's.
    let out = provenant(&["verify", &reference, "--key", &key]);
    assert!(out.status.success(), "{}", text(&out));

    // With another key the signature fails, and the policy never reads that statement: the only
    // reason is the signature's.
    let other = Keys::new();
    let out = provenant(&[
        "verify",
        &reference,
        "--key",
        &other.public(),
        "--policy",
        &license,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("- signature:"), "{said}");
    assert!(
        !said.contains("policy "),
        "a policy read unverified data:\n{said}"
    );
}

#[tokio::test]
async fn the_image_registry_policy_admits_approved_images_and_refuses_the_others() {
    let registry = Registry::start().await.unwrap();
    let keys = Keys::new();
    let images = policy("base-image-registry.rego");
    let licenses = [("imagenet-subset", "CC-BY-4.0"), ("augment-cache", "MIT")];

    // Trained in an image of the policy's default registry prefix: admitted.
    let approved = push_model(&registry, "approved", &[("model.bin", b"approved")]).await;
    attest_cluster_run(
        &registry,
        &approved,
        "registry.example.com/approved/train-resnet",
        &licenses,
        &keys.key,
    )
    .await;
    let out = verify_in(&registry, &approved, &keys, &["--policy", &images]);
    assert!(out.status.success(), "{}", text(&out));
    // Both shipped policies at once.
    let both = [
        "--policy",
        &images,
        "--policy",
        &policy("dataset-license.rego"),
    ];
    let out = verify_in(&registry, &approved, &keys, &both);
    assert!(out.status.success(), "{}", text(&out));

    // Trained in an image from elsewhere: refused with the image and the allowed prefixes.
    let elsewhere = push_model(&registry, "elsewhere", &[("model.bin", b"elsewhere")]).await;
    attest_cluster_run(
        &registry,
        &elsewhere,
        "ghcr.io/acme/train-resnet",
        &licenses,
        &keys.key,
    )
    .await;
    let out = verify_in(&registry, &elsewhere, &keys, &["--policy", &images]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let reason = format!(
        "    - policy {images}: training image \"oci://ghcr.io/acme/train-resnet\" is not from an allowed registry (allowed: registry.example.com/approved)"
    );
    assert!(
        text(&out).contains(&reason),
        "missing {reason:?} in\n{}",
        text(&out)
    );

    // The allowed prefixes from --policy-data: a prefix matches at path boundaries only.
    let data = keys.dir.path().join("registries.json");
    let data = data.to_str().unwrap();
    for (allowed, admitted) in [
        (r#"["ghcr.io/acme"]"#, true),
        (r#"["ghcr.io/acme/"]"#, true),
        (r#"["ghcr.io"]"#, true),
        (r#"["ghcr.io/acm"]"#, false),
        (r#"["ghcr.io/acme/train-resnet-v2"]"#, false),
        (r#"["ghcr.i"]"#, false),
        (r#"[]"#, false),
    ] {
        std::fs::write(
            data,
            format!(r#"{{"allowed_image_registries": {allowed}}}"#),
        )
        .unwrap();
        let out = verify_in(
            &registry,
            &elsewhere,
            &keys,
            &["--policy", &images, "--policy-data", data],
        );
        let code = if admitted { 0 } else { 1 };
        assert_eq!(out.status.code(), Some(code), "{allowed}: {}", text(&out));
    }
}

#[test]
fn a_local_run_records_no_image_and_the_image_policy_refuses_it() {
    let (reference, _dir, key) = attest_local([Some("MIT"), Some("MIT")]);
    let images = policy("base-image-registry.rego");
    let out = provenant(&["verify", &reference, "--key", &key, "--policy", &images]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("the statement records no training image"),
        "{}",
        text(&out)
    );
}

/// A policy that is broken is the user's error, not a verdict: exit 2, the file and line on
/// stderr, nothing on stdout.
#[test]
fn a_broken_policy_is_a_usage_error_with_file_and_line() {
    let (reference, dir, key) = attest_local([Some("MIT"), Some("MIT")]);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let cases = [
        (
            write(
                "syntax.rego",
                "package provenant\n\ndeny contains msg if {\n  msg := \"x\" +\n}\n",
            ),
            "syntax.rego:4:",
        ),
        (
            write(
                "divide.rego",
                "package provenant\n\ndeny contains msg if {\n  n := count(input.statement.subject) / 0\n  msg := sprintf(\"%v\", [n])\n}\n",
            ),
            "divide.rego:4:",
        ),
        (
            write(
                "package.rego",
                "package other\n\ndeny contains \"x\" if true\n",
            ),
            "is in package other: a verify policy must be in package provenant",
        ),
        (
            write("nodeny.rego", "package provenant\n\nallow := true\n"),
            "has no `deny` rule in package provenant",
        ),
        (
            write("notaset.rego", "package provenant\n\ndeny := \"no\"\n"),
            "`deny` must be a set of messages",
        ),
        (
            dir.path().join("missing.rego").display().to_string(),
            "cannot read policy",
        ),
    ];
    for (file, expected) in &cases {
        let out = provenant(&["verify", &reference, "--key", &key, "--policy", file]);
        assert_eq!(out.status.code(), Some(2), "{file}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(expected),
            "{file}: missing {expected:?} in\n{stderr}"
        );
        assert!(
            stderr.contains(file.as_str()),
            "{file} not named in\n{stderr}"
        );
        assert!(out.stdout.is_empty(), "{}", text(&out));
    }
    // A --policy-data file that is not a JSON object.
    let data = write("data.json", "[1, 2]");
    let ok = write(
        "ok.rego",
        "package provenant\n\ndeny contains \"x\" if false\n",
    );
    let out = provenant(&[
        "verify",
        &reference,
        "--key",
        &key,
        "--policy",
        &ok,
        "--policy-data",
        &data,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("must be a JSON object"),
        "{}",
        text(&out)
    );
    // A policy whose deny rule holds nowhere admits: exit 0.
    let out = provenant(&["verify", &reference, "--key", &key, "--policy", &ok]);
    assert!(out.status.success(), "{}", text(&out));
}

/// What a policy reads: the input document as docs/verify.md describes it. A policy that denies
/// with every field it can see shows them.
#[test]
fn the_input_document_holds_the_statement_artifact_and_annotations() {
    let (reference, dir, key) = attest_local([Some("MIT"), Some("MIT")]);
    let path = dir.path().join("echo.rego");
    std::fs::write(
        &path,
        r#"package provenant

deny contains sprintf("buildType=%s", [input.predicate.buildDefinition.buildType])
deny contains sprintf("same=%v", [input.statement.predicate == input.predicate])
deny contains sprintf("artifact=%s@%s", [input.artifact.name, input.artifact.digest])
deny contains sprintf("artifactType=%s", [input.artifact.artifactType])
deny contains sprintf("annotations=%v", [count(input.annotations)])
deny contains sprintf("envelope=%v", [startswith(input.attestation.envelopeDigest, "sha256:")])
deny contains {"msg": "an object's msg"}
"#,
    )
    .unwrap();
    let out = provenant(&[
        "verify",
        &reference,
        "--key",
        &key,
        "--policy",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    let digest = reference.rsplit('@').next().unwrap();
    for expected in [
        "buildType=https://provenant.dev/TrainingRun/local/v1".to_string(),
        "same=true".to_string(),
        format!("@{digest}"),
        "artifactType=application/vnd.provenant.model.v1".to_string(),
        "annotations=0".to_string(),
        "envelope=true".to_string(),
        ": an object's msg".to_string(),
    ] {
        assert!(said.contains(&expected), "missing {expected:?} in\n{said}");
    }
}

/// The model manifest's annotations reach a policy as `input.annotations` (and
/// `input.artifact.annotations`): here a manifest pushed with one, by whoever pushed the model.
#[tokio::test]
async fn the_manifests_annotations_reach_the_policy() {
    use provenant_testbed::registry::{
        Descriptor, MODEL_ARTIFACT_TYPE, MODEL_FILE_MEDIA_TYPE, OCI_EMPTY_BLOB,
        OCI_MANIFEST_MEDIA_TYPE, TITLE_ANNOTATION,
    };
    let registry = Registry::start().await.unwrap();
    let keys = Keys::new();
    let repo = "models/annotated";
    registry.push_blob(repo, OCI_EMPTY_BLOB).await.unwrap();
    registry.push_blob(repo, b"weights").await.unwrap();
    let layer = Descriptor::of(MODEL_FILE_MEDIA_TYPE, b"weights")
        .with_annotation(TITLE_ANNOTATION, "model.bin");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "artifactType": MODEL_ARTIFACT_TYPE,
        "config": Descriptor::empty(),
        "layers": [layer.clone()],
        "annotations": {"org.opencontainers.image.licenses": "MIT"},
    }))
    .unwrap();
    let digest = registry
        .push_manifest(repo, "v1", OCI_MANIFEST_MEDIA_TYPE, &manifest)
        .await
        .unwrap();
    let repository = format!("{}/{repo}", registry.host());
    let model = ModelRef {
        registry: registry.host().to_string(),
        reference: format!("{repository}@{digest}"),
        repository,
        repo: repo.to_string(),
        tag: "v1".into(),
        digest,
        manifest,
        layers: vec![layer],
    };
    attest_cluster_run(
        &registry,
        &model,
        "registry.example.com/approved/train",
        &[],
        &keys.key,
    )
    .await;
    let path = keys.dir.path().join("annotations.rego");
    std::fs::write(
        &path,
        r#"package provenant

deny contains sprintf("licenses=%s", [input.annotations["org.opencontainers.image.licenses"]])
deny contains sprintf("same=%v", [input.annotations == input.artifact.annotations])
"#,
    )
    .unwrap();
    let out = verify_in(
        &registry,
        &model,
        &keys,
        &["--policy", path.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    for expected in [": licenses=MIT", ": same=true"] {
        assert!(
            text(&out).contains(expected),
            "missing {expected:?} in\n{}",
            text(&out)
        );
    }
}
