//! `provenant attest` (local mode, the demo's TrainingRun into an OCI layout) also signs the
//! model's files in the OpenSSF model-signing format: `oras pull --oci-layout` gets the files and
//! `model.sig` out of the layout, the real `model_signing verify key` accepts them and refuses a
//! changed file, and `provenant verify --require-model-signature` accepts the layout.

#[path = "support/model_signing.rs"]
mod support;

#[path = "support/attest_cmd.rs"]
mod attest_cmd;
use attest_cmd::{provenant, text};

use support::{Place, describe, flip_one_byte, model_signing_verify, pull_model_and_signature};

#[test]
fn attest_writes_a_model_signature_that_model_signing_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let path = |name: &str| tmp.path().join(name).display().to_string();
    let out = provenant(&["keys", "generate", "--output-dir", &path("keys")]);
    assert!(out.status.success(), "{}", text(&out));
    let out = provenant(&[
        "attest",
        "-f",
        "hack/demo/trainingrun.yaml",
        "--key",
        &path("keys/cosign.key"),
        "--layout",
        &path("layout"),
        "--model-dir",
        &path("model"),
        "--output-digest",
        &path("digest"),
    ]);
    assert!(out.status.success(), "attest failed: {}", text(&out));
    let digest = std::fs::read_to_string(path("digest")).unwrap();
    // attest lists the model signature's referrer with the other references.
    assert!(
        text(&out).contains("model.sig"),
        "attest does not mention the model signature:\n{}",
        text(&out)
    );

    let layout = tmp.path().join("layout");
    let place = Place::Layout { dir: &layout };
    let dir = pull_model_and_signature(&place, tmp.path(), &digest, tmp.path(), "churn-logreg");
    // The pulled files are the ones the training wrote.
    for entry in std::fs::read_dir(tmp.path().join("model")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        assert_eq!(
            std::fs::read(entry.path()).unwrap(),
            std::fs::read(dir.join(&name)).unwrap(),
            "{name:?}"
        );
    }
    let public_key = tmp.path().join("keys/cosign.pub");
    let signature = dir.join("model.sig");
    let out = model_signing_verify(&signature, &public_key, &dir);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().is_some_and(|n| n != "model.sig") && p.is_file())
        .unwrap();
    flip_one_byte(&file);
    let out = model_signing_verify(&signature, &public_key, &dir);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Hash mismatch for") && stderr.contains(&name),
        "{}",
        describe(&out)
    );

    let reference = format!("oci:{}@{digest}", layout.display());
    let key = public_key.display().to_string();
    let out = provenant(&[
        "verify",
        &reference,
        "--key",
        &key,
        "--require-model-signature",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("model.sig     verified (OpenSSF model signing,"),
        "{}",
        text(&out)
    );
}
