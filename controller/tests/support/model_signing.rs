//! What a security team runs on a model provenant attested, shared by the model-signature tests:
//! `oras` (the pinned one in hack/tools/bin) pulls the model's files and its `model.sig` into a
//! directory, and the OpenSSF `model_signing verify key` (PyPI `model-signing`, test/python/
//! requirements.txt) checks them. Missing tools fail the test with how to get them: never a skip.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub const INSTALL_HINT: &str = "pip install -r test/python/requirements.txt";
/// `artifactType` of a model signature referrer (model-transparency's).
pub const MODEL_SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.model-signing.signature.v0.1";

/// Exit status and everything printed, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `python3 -m model_signing verify key --signature SIG --public_key KEY DIR`, as documented in
/// docs/verify.md. A missing interpreter or package fails with the install command.
pub fn model_signing_verify(signature: &Path, public_key: &Path, dir: &Path) -> Output {
    let out = Command::new("python3")
        .args(["-m", "model_signing", "verify", "key", "--signature"])
        .arg(signature)
        .arg("--public_key")
        .arg(public_key)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): install Python 3, then {INSTALL_HINT}")
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named model_signing"),
        "model_signing is missing: {INSTALL_HINT}\n{stderr}"
    );
    out
}

/// The pinned oras, with a HOME of the test's (no user config).
pub fn oras(home: &Path, args: &[&str]) -> Output {
    let path = provenant_testbed::tools::path("oras").unwrap_or_else(|e| panic!("{e:#}"));
    Command::new(path)
        .args(args)
        .env("HOME", home)
        .output()
        .unwrap_or_else(|e| panic!("running oras: {e}"))
}

/// Where a model lives for oras: a registry reached over plain HTTP, or an OCI image layout.
pub enum Place<'a> {
    Registry { repository: &'a str },
    Layout { dir: &'a Path },
}

impl Place<'_> {
    fn target(&self, digest: &str) -> String {
        match self {
            Place::Registry { repository } => format!("{repository}@{digest}"),
            Place::Layout { dir } => format!("{}@{digest}", dir.display()),
        }
    }

    fn flag(&self) -> &'static str {
        match self {
            Place::Registry { .. } => "--plain-http",
            Place::Layout { .. } => "--oci-layout",
        }
    }

    fn run(&self, home: &Path, args: &[&str]) -> Result<String, String> {
        let out = oras(home, args);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("oras {}: {}", args.join(" "), describe(&out)))
        }
    }

    /// `oras discover`: the digests of the model's model signature referrers.
    pub fn model_signature_referrers(
        &self,
        home: &Path,
        model: &str,
    ) -> Result<Vec<String>, String> {
        let target = self.target(model);
        let args = ["discover", self.flag(), "--format", "json", &target];
        let text = self.run(home, &args)?;
        let tree: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        Ok(tree["referrers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["artifactType"] == MODEL_SIGNATURE_ARTIFACT_TYPE)
            .filter_map(|r| r["digest"].as_str().map(String::from))
            .collect())
    }

    /// `oras pull` of `digest` (the model, or its signature referrer) into `dir`: each layer is
    /// written as its title.
    pub fn pull(&self, home: &Path, digest: &str, dir: &Path) -> Result<(), String> {
        let target = self.target(digest);
        let out = dir.to_str().expect("UTF-8 path");
        self.run(home, &["pull", self.flag(), "-o", out, &target])
            .map(|_| ())
    }
}

/// The model's files and its model.sig pulled into a new directory `<parent>/<name>`, as a user
/// would before running model_signing. Returns the directory.
pub fn pull_model_and_signature(
    place: &Place,
    home: &Path,
    model: &str,
    parent: &Path,
    name: &str,
) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let referrers = place
        .model_signature_referrers(home, model)
        .unwrap_or_else(|e| panic!("{e}"));
    let [referrer] = referrers.as_slice() else {
        panic!("expected one model signature referrer, oras discover found {referrers:?}");
    };
    place
        .pull(home, referrer, &dir)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        dir.join("model.sig").is_file(),
        "oras pull did not write model.sig"
    );
    place
        .pull(home, model, &dir)
        .unwrap_or_else(|e| panic!("{e}"));
    dir
}

/// Flip the low bit of the byte in the middle of `path`.
pub fn flip_one_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    assert!(!bytes.is_empty(), "{} is empty", path.display());
    let i = bytes.len() / 2;
    bytes[i] ^= 1;
    std::fs::write(path, bytes).unwrap();
}
