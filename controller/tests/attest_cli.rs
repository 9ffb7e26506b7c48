//! `provenant attest` and `provenant verify` as a user runs them, on the demo's TrainingRun:
//! attest into an OCI layout, verify it (and fail for the right reasons), read it with
//! independent tools (securesystemslib, skopeo).

#[path = "support/attest_cmd.rs"]
mod attest_cmd;
use attest_cmd::{provenant, repo_root, text};

use std::process::Command;

struct Attested {
    dir: tempfile::TempDir,
    digest: String,
}

impl Attested {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn attest_demo() -> Attested {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let out = provenant(&["keys", "generate", "--output-dir", keys.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let digest_file = dir.path().join("digest");
    let out = provenant(&[
        "attest",
        "-f",
        "hack/demo/trainingrun.yaml",
        "--key",
        keys.join("cosign.key").to_str().unwrap(),
        "--layout",
        dir.path().join("layout").to_str().unwrap(),
        "--model-dir",
        dir.path().join("model").to_str().unwrap(),
        "--output-digest",
        digest_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "attest failed: {}", text(&out));
    let digest = std::fs::read_to_string(digest_file).unwrap();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    Attested { dir, digest }
}

#[test]
fn attest_then_verify_and_refuse_for_the_right_reasons() {
    let a = attest_demo();
    let reference = format!("oci:{}@{}", a.path("layout"), a.digest);
    let key = a.path("keys/cosign.pub");
    let data_digest = {
        let out = Command::new("sha256sum")
            .arg(repo_root().join("hack/demo/data/churn.csv"))
            .output()
            .unwrap();
        format!(
            "sha256:{}",
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .unwrap()
        )
    };

    // Verified, with the dataset hashed on this host recorded as observed (declared without a
    // digest: the spec only named it).
    let out = provenant(&[
        "verify",
        &reference,
        "--key",
        &key,
        "--require-dataset",
        &data_digest,
        "--builder-id",
        "https://provenant.dev/attest/v1",
        "--max-age",
        "1h",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let summary = text(&out);
    let dataset_line = format!("dataset       churn {data_digest} (observed)");
    for expected in [
        "Verified:",
        "seed          7",
        dataset_line.as_str(),
        "accuracy",
        "https://provenant.dev/TrainingRun/local/v1",
    ] {
        assert!(
            summary.contains(expected),
            "missing {expected:?} in\n{summary}"
        );
    }
    let out = provenant(&["verify", &reference, "--key", &key, "--output", "json"]);
    let verdict: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["verified"], true);

    // A wrong key.
    let other = a.dir.path().join("other");
    assert!(
        provenant(&["keys", "generate", "--output-dir", other.to_str().unwrap()])
            .status
            .success()
    );
    let out = provenant(&[
        "verify",
        &reference,
        "--key",
        other.join("cosign.pub").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("signature:"), "{}", text(&out));

    // A policy not satisfied.
    let missing = "sha256:5555555555555555555555555555555555555555555555555555555555555555";
    let out = provenant(&[
        "verify",
        &reference,
        "--key",
        &key,
        "--require-dataset",
        missing,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("required dataset"), "{}", text(&out));

    // A swapped (tampered) model: another artifact in the same layout has no attestation.
    let tampered = a.dir.path().join("tampered");
    std::fs::create_dir_all(&tampered).unwrap();
    std::fs::write(tampered.join("model.json"), b"{\"weights\": [\"0.0\"]}\n").unwrap();
    let out = provenant(&[
        "package",
        tampered.to_str().unwrap(),
        "--layout",
        &a.path("layout"),
        "--repository",
        "localhost/demo/churn-logreg",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let other_digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = provenant(&[
        "verify",
        &format!("oci:{}@{other_digest}", a.path("layout")),
        "--key",
        &key,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("no attestation found"),
        "{}",
        text(&out)
    );

    // A model file changed in place in the layout: the attestation is intact, the model is not.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            a.dir
                .path()
                .join("layout/blobs/sha256")
                .join(a.digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let blob = a.dir.path().join("layout/blobs/sha256").join(layer);
    let mut perms = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let out = provenant(&["verify", &reference, "--key", &key]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("was modified in the layout"),
        "{}",
        text(&out)
    );

    // Usage errors are 2.
    let out = provenant(&["verify", &reference, "--key", "/nonexistent/cosign.pub"]);
    assert_eq!(out.status.code(), Some(2));
    let out = provenant(&["verify", "not a reference", "--key", &key]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn the_same_seed_gives_the_same_model_digest() {
    assert_eq!(attest_demo().digest, attest_demo().digest);
}

#[test]
fn independent_tools_read_the_layout_and_the_envelope() {
    let a = attest_demo();
    // skopeo reads the layout (the model is tagged with the run's name).
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            &format!("oci:{}:churn-demo", a.path("layout")),
        ])
        .output()
        .expect("install skopeo (.ci/install-registry.sh)");
    assert!(out.status.success(), "skopeo: {}", text(&out));
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.provenant.model.v1"
    );

    // securesystemslib verifies the envelope stored in the layout.
    let tag = a.digest.replace(':', "-") + ".att";
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            &format!("oci:{}:{tag}", a.path("layout")),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo .att: {}", text(&out));
    let att: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let blob = att["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .replace("sha256:", "");
    let envelope = a.dir.path().join("layout/blobs/sha256").join(blob);
    let script = repo_root().join("test/python/verify_dsse.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&envelope)
        .arg(a.path("keys/cosign.pub"))
        .output()
        .unwrap();
    assert!(out.status.success(), "securesystemslib: {}", text(&out));
    let script = repo_root().join("test/python/check_statement.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&envelope)
        .output()
        .unwrap();
    assert!(out.status.success(), "in-toto-attestation: {}", text(&out));
}

/// `--registry`: the model and its attestations go to the registry of spec.output.repository,
/// and `provenant verify` reads them back from there.
#[tokio::test]
async fn attest_into_a_registry_and_verify_from_it() {
    let registry = provenant_testbed::registry::Registry::start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    assert!(
        provenant(&["keys", "generate", "--output-dir", keys.to_str().unwrap()])
            .status
            .success()
    );
    let yaml = std::fs::read_to_string(repo_root().join("hack/demo/trainingrun.yaml"))
        .unwrap()
        .replace(
            "localhost/demo/churn-logreg",
            &format!("{}/demo/churn-logreg", registry.host()),
        );
    let file = dir.path().join("run.yaml");
    std::fs::write(&file, yaml).unwrap();
    let digest_file = dir.path().join("digest");
    // tokio's Command: the registry fixture's process is independent, but keep the runtime free.
    let run = |args: Vec<String>| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_provenant"))
            .args(&args)
            .current_dir(repo_root())
            .env("COSIGN_PASSWORD", "test")
            .output()
            .await
            .unwrap()
    };
    let s = |v: &str| v.to_string();
    let out = run(vec![
        s("attest"),
        s("-f"),
        file.display().to_string(),
        s("--key"),
        keys.join("cosign.key").display().to_string(),
        s("--registry"),
        s("--insecure-registry"),
        s(registry.host()),
        s("--model-dir"),
        dir.path().join("model").display().to_string(),
        s("--output-digest"),
        digest_file.display().to_string(),
    ])
    .await;
    assert!(out.status.success(), "attest --registry: {}", text(&out));
    let digest = std::fs::read_to_string(&digest_file).unwrap();
    let tags = registry.list_tags("demo/churn-logreg").await.unwrap();
    assert!(
        tags.contains(&format!("{}.att", digest.replace(':', "-"))),
        "{tags:?}"
    );
    let out = run(vec![
        s("verify"),
        format!("{}/demo/churn-logreg@{digest}", registry.host()),
        s("--key"),
        keys.join("cosign.pub").display().to_string(),
        s("--insecure-registry"),
        s(registry.host()),
    ])
    .await;
    assert!(
        out.status.success(),
        "verify from the registry: {}",
        text(&out)
    );
    // The tag written by attest (the run's name) resolves too.
    let out = run(vec![
        s("verify"),
        format!("{}/demo/churn-logreg:churn-demo", registry.host()),
        s("--key"),
        keys.join("cosign.pub").display().to_string(),
        s("--insecure-registry"),
        s(registry.host()),
    ])
    .await;
    assert!(out.status.success(), "verify by tag: {}", text(&out));
}
