//! The `provenant` binary as a user runs it: exit codes and messages.

use std::process::{Command, Output};

fn provenant(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args(args)
        .output()
        .unwrap()
}

fn samples_dir() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../config/samples").to_string()
}

#[test]
fn validate_accepts_the_samples() {
    let dir = samples_dir();
    let files: Vec<String> = ["cpu", "gpu", "tpu-multihost"]
        .iter()
        .map(|s| format!("{dir}/{s}-trainingrun.yaml"))
        .collect();
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let out = provenant(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches(": ok").count(), 3, "{stdout}");
}

#[test]
fn validate_refuses_with_the_field_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(format!("{}/cpu-trainingrun.yaml", samples_dir())).unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        text.replace("seed: 7", "seed: 7\n  replicas: 0")
            .replace("digest: sha256:e3b0", "digest: sha256:zzzz"),
    )
    .unwrap();
    let out = provenant(&["validate", bad.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("refused"), "{stdout}");
    assert!(stdout.contains("spec.replicas:"), "{stdout}");
    assert!(stdout.contains("spec.datasets[0].digest:"), "{stdout}");

    let unknown = dir.path().join("unknown-accelerator.yaml");
    std::fs::write(
        &unknown,
        text.replace(
            "  seed: 7",
            "  seed: 7\n  accelerator: {type: nvidia-b300, count: 8}",
        ),
    )
    .unwrap();
    let out = provenant(&["validate", unknown.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("spec.accelerator.type: unknown accelerator type \"nvidia-b300\""),
        "{stdout}"
    );
}

#[test]
fn missing_file_and_bad_config_are_usage_errors() {
    let out = provenant(&["validate", "/nonexistent/run.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/run.yaml"));

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "acceleratorProfiles:\n  gpu: {resourceName: gpu}\n").unwrap();
    let out = provenant(&["config", "check", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("acceleratorProfiles.gpu.resourceName"),
        "{stderr}"
    );
}

#[test]
fn crds_prints_the_committed_crd() {
    let out = provenant(&["crds"]);
    assert!(out.status.success());
    let committed = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/trainingruns.provenant.dev.yaml"
    ))
    .unwrap();
    assert_eq!(out.stdout, committed);
}

/// Runs the binary with its stdout's reader already gone, as `provenant ... | head` ends: the
/// first write gets EPIPE.
fn with_closed_stdout(args: &[&str]) -> Output {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args(args)
        .env("COSIGN_PASSWORD", "pipe-test")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn every_printing_subcommand_ends_quietly_when_the_reader_goes_away() {
    let sample = format!("{}/cpu-trainingrun.yaml", samples_dir());
    for args in [
        vec!["crds"],
        vec!["config", "defaults"],
        vec!["validate", sample.as_str()],
        vec!["keys", "generate", "--secret", "provenant-signing-key"],
    ] {
        let out = with_closed_stdout(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "provenant {}: {:?}\n{stderr}",
            args.join(" "),
            out.status
        );
    }
    // The verdict of a refusal is kept: exit 1, still without a word about the pipe.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: provenant.dev/v1alpha1\nkind: TrainingRun\n",
    )
    .unwrap();
    let out = with_closed_stdout(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}
