//! The `provenant` binary as a user runs it from the repository root (the demo's relative paths
//! resolve), with the test keys' password; shared by the `attest` CLI tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

pub fn provenant(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args(args)
        .current_dir(repo_root())
        .env("COSIGN_PASSWORD", "test")
        .output()
        .unwrap()
}

/// stdout then stderr, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
