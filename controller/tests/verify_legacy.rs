//! `provenant verify`, as a user runs it, on a model attested before each party's dataset digest
//! had a field of its own (`tests/fixtures/legacy-0.1.0/attest`, written by `provenant attest`
//! 0.1.0 and kept as it was). It still verifies; its merged label `["declared", "reported"]`
//! counts as declared only where `externalParameters.datasets` declares that digest.

use std::path::Path;
use std::process::{Command, Output};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/legacy-0.1.0/attest"
);
/// Declared with this digest; the workload reported the same.
const APPROVED: &str = "sha256:a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
/// Declared without a digest; the workload supplied this one.
const CORPUS: &str = "sha256:c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";
/// `data.csv`, hashed by attest.
const LOCAL_DATA: &str = "sha256:bd478b7a29bb9458e5409ec846358dee6e300a0ec98509dafc6e3b1f06555963";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `provenant verify` on a copy of the fixture (the fixture itself stays untouched).
fn verify(extra: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(Path::new(FIXTURE), dir.path());
    let digest = std::fs::read_to_string(dir.path().join("model-digest")).unwrap();
    let reference = format!(
        "oci:{}@{}",
        dir.path().join("layout").display(),
        digest.trim()
    );
    let key = dir.path().join("cosign.pub");
    let out: Output = Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args(["verify", &reference, "--key", key.to_str().unwrap(), "-q"])
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn an_attestation_from_before_the_change_still_verifies() {
    let (code, text) = verify(&[
        "--require-dataset",
        &format!("approved={APPROVED}"),
        "--require-dataset",
        LOCAL_DATA,
        "--builder-id",
        "https://provenant.dev/attest/v1",
    ]);
    assert_eq!(code, Some(0), "{text}");
    // Each dataset shown as what the old label proves.
    for line in [
        format!("dataset       approved {APPROVED} (declared+reported)"),
        format!("dataset       corpus {CORPUS} (reported)"),
        format!("dataset       local-data {LOCAL_DATA} (observed)"),
    ] {
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn its_merged_label_does_not_make_a_reported_digest_declared() {
    for want in [CORPUS.to_string(), format!("corpus={CORPUS}")] {
        let (code, text) = verify(&["--require-dataset", &want]);
        assert_eq!(code, Some(1), "{want}: {text}");
        assert!(
            text.contains(&format!(
                "required dataset {want}: the digest of dataset \"corpus\" was only reported by the training workload"
            )) && text.contains("the statement labels it declared")
                && text.contains("--allow-reported-datasets"),
            "{text}"
        );
        let (code, text) = verify(&["--require-dataset", &want, "--allow-reported-datasets"]);
        assert_eq!(code, Some(0), "{want}: {text}");
    }
}
