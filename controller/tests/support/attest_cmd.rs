//! The `provenant` binary as a user runs it from the repository root (the demo's relative paths
//! resolve), with the test keys' password; shared by the CLI tests (`attest`, `lineage`,
//! `revoke`). The command, its output and exit code go to the test's output (`-- --nocapture`).
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
    provenant_env(args, &[])
}

/// With extra environment variables (a kubeconfig, a registry auth file).
pub fn provenant_env(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_provenant"));
    command
        .args(args)
        .current_dir(repo_root())
        .env("COSIGN_PASSWORD", "test");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    eprintln!(
        "$ provenant {}\n{}$ echo $?\n{}\n",
        args.join(" "),
        text(&out),
        out.status.code().unwrap_or(-1)
    );
    out
}

/// stdout then stderr, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
