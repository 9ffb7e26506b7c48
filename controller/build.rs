//! Stamps the commit the binary was built from into `provenant_build_info{commit}` (metrics.rs):
//! `PROVENANT_COMMIT` when the build sets it (an image built without `.git`), else
//! `git rev-parse HEAD` of the checkout, else `unknown`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PROVENANT_COMMIT");
    let git = Path::new("../.git");
    if git.is_dir() {
        // A new commit moves the branch's ref; a checkout moves HEAD.
        println!("cargo:rerun-if-changed=../.git/HEAD");
        if let Ok(head) = std::fs::read_to_string(git.join("HEAD"))
            && let Some(reference) = head.trim().strip_prefix("ref: ")
        {
            println!("cargo:rerun-if-changed=../.git/{reference}");
        }
    }
    let commit = std::env::var("PROVENANT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "HEAD"])
                .output()
                .ok()?;
            let text = String::from_utf8(out.stdout).ok()?;
            let commit = text.trim();
            (out.status.success() && !commit.is_empty()).then(|| commit.to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=PROVENANT_COMMIT={commit}");
}
