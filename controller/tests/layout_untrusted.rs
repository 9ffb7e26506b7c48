//! Issue 14 (7): `provenant verify` on an OCI image layout someone else wrote. The layout is
//! input: its digests, its file types and its file sizes are the writer's choice. `verify` must
//! never read outside the layout, never block on a special file, and never read an unbounded
//! file; each refusal says which file and why (exit codes as docs/verify.md: 1 not verified,
//! 2 an error). Each test starts from a copy of a real attested layout
//! (`tests/fixtures/legacy-0.1.0/attest`, which verifies) and makes it hostile in one way.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/legacy-0.1.0/attest"
);
/// The fixture's model manifest and its one model file (`model.bin`).
const MODEL: &str = "sha256:1f0d3405a6f9ded404eff2372f3c3c5712089adb9f8dbefd0e3567653fa29eee";
const MODEL_FILE: &str = "1b465fa6b6bcbc06a3199e3d2d8aec35d37494a712f888b6d5536684dd89d0f0";
/// The DSSE envelope under the model's `.att` tag.
const ENVELOPE: &str = "078194ce01e9ac7c8aed4535f0701ba3a7c85265e7ad597ab6f484320b3bc587";

/// A copy of the fixture in a temporary directory, with a sibling directory outside the layout.
struct Layout {
    dir: tempfile::TempDir,
}

impl Layout {
    fn new() -> Layout {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(Path::new(FIXTURE), dir.path());
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        Layout { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("layout")
    }

    fn blob(&self, hex: &str) -> PathBuf {
        self.root().join("blobs/sha256").join(hex)
    }

    fn outside(&self, name: &str) -> PathBuf {
        self.dir.path().join("outside").join(name)
    }

    /// Moves a blob out of the layout and leaves a symbolic link to it in its place: the
    /// content is exactly what the layout should hold, only it is not in the layout.
    fn symlink_out(&self, hex: &str) {
        let out = self.outside(hex);
        std::fs::rename(self.blob(hex), &out).unwrap();
        symlink(&out, self.blob(hex)).unwrap();
    }

    /// Stores a manifest in the layout under its own digest; returns the digest.
    fn put_manifest(&self, manifest: &serde_json::Value) -> String {
        let bytes = serde_json::to_vec(manifest).unwrap();
        let hex = hex::encode(Sha256::digest(&bytes));
        std::fs::write(self.blob(&hex), &bytes).unwrap();
        format!("sha256:{hex}")
    }

    /// `provenant verify oci:<layout>@<digest>` with the fixture's key, killed after `limit`.
    fn verify(&self, digest: &str, limit: Duration) -> Verdict {
        self.verify_with(
            &format!("oci:{}@{digest}", self.root().display()),
            None,
            limit,
        )
    }

    /// As [`Layout::verify`]; `memory_kib` caps the process's address space (`ulimit -v`), so a
    /// regression that reads a huge file whole fails instead of eating the machine's memory.
    fn verify_with(&self, reference: &str, memory_kib: Option<u64>, limit: Duration) -> Verdict {
        let key = self.dir.path().join("cosign.pub");
        let binary = env!("CARGO_BIN_EXE_provenant");
        let mut command = match memory_kib {
            Some(kib) => {
                let mut c = Command::new("sh");
                c.args([
                    "-c",
                    &format!("ulimit -v {kib} && exec \"$0\" \"$@\""),
                    binary,
                ]);
                c
            }
            None => Command::new(binary),
        };
        let mut child = command
            .args(["verify", reference, "--key", key.to_str().unwrap(), "-q"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let code = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("provenant verify {reference} still running after {limit:?}: it hangs");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = child.wait_with_output().unwrap();
        Verdict {
            code,
            text: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

struct Verdict {
    code: Option<i32>,
    text: String,
}

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

const QUICK: Duration = Duration::from_secs(30);

#[test]
fn the_untouched_fixture_verifies() {
    let layout = Layout::new();
    let v = layout.verify(MODEL, QUICK);
    assert_eq!(v.code, Some(0), "{}", v.text);
}

/// A model manifest whose layer digests climb out of the layout (`../`) or name an absolute
/// path: before, `verify` hashed `/etc/passwd` and printed its digest and size.
#[test]
fn layer_digests_that_name_paths_outside_the_layout_are_refused() {
    let layout = Layout::new();
    let passwd = std::fs::read("/etc/passwd").unwrap();
    let passwd_digest = hex::encode(Sha256::digest(&passwd));
    let layer = |digest: &str, title: &str| {
        serde_json::json!({
            "mediaType": "application/octet-stream",
            "digest": digest,
            "size": passwd.len(),
            "annotations": {"org.opencontainers.image.title": title},
        })
    };
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.provenant.model.v1",
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "size": 2,
        },
        "layers": [
            layer("sha256:../../../../../../../../../../../../etc/passwd", "climbs"),
            layer("sha256:/etc/passwd", "absolute"),
        ],
    });
    let digest = layout.put_manifest(&manifest);
    let v = layout.verify(&digest, QUICK);
    assert_eq!(v.code, Some(1), "not verified: {}", v.text);
    assert!(
        !v.text.contains(&passwd_digest) && !v.text.contains("hashes to"),
        "verify read a file outside the layout:\n{}",
        v.text
    );
    for title in ["climbs", "absolute"] {
        assert!(
            v.text
                .contains(&format!("model file {title} has an invalid digest"))
                && v.text.contains("not sha256: and 64 lowercase hex digits"),
            "the refusal names the layer {title} and why:\n{}",
            v.text
        );
    }
}

/// Layer sizes are the writer's numbers: sizes that overflow when added up must be refused, not
/// crash `verify` (before: `attempt to add with overflow`, exit 101).
#[test]
fn layer_sizes_that_overflow_are_a_failure_not_a_crash() {
    let layout = Layout::new();
    let model: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.blob(&MODEL[7..])).unwrap()).unwrap();
    let mut manifest = model.clone();
    let mut big = model["layers"][0].clone();
    big["size"] = serde_json::json!(u64::MAX);
    manifest["layers"] = serde_json::json!([big.clone(), big]);
    let digest = layout.put_manifest(&manifest);
    let v = layout.verify(&digest, QUICK);
    assert_eq!(v.code, Some(1), "not verified, no crash: {}", v.text);
    assert!(
        v.text
            .contains("model file model.bin was modified in the layout"),
        "{}",
        v.text
    );
}

/// A model file replaced by a symbolic link to a file outside the layout with the same content:
/// before, `verify` followed it and said "Verified".
#[test]
fn a_model_file_symlinked_out_of_the_layout_is_refused() {
    let layout = Layout::new();
    layout.symlink_out(MODEL_FILE);
    let v = layout.verify(MODEL, QUICK);
    assert_eq!(v.code, Some(1), "not verified: {}", v.text);
    assert!(
        v.text
            .contains("model file model.bin (sha256:1b465fa6b6bcbc06a3199e3d2d8aec35d37494a712f888b6d5536684dd89d0f0) cannot be read")
            && v.text.contains("is a symbolic link"),
        "{}",
        v.text
    );
}

/// The DSSE envelope (what `verify` parses) as a symbolic link out of the layout: refused with
/// an error (exit 2) naming the file, where before it was read and verified.
#[test]
fn an_envelope_symlinked_out_of_the_layout_is_refused() {
    let layout = Layout::new();
    layout.symlink_out(ENVELOPE);
    let v = layout.verify(MODEL, QUICK);
    assert_eq!(v.code, Some(2), "an error: {}", v.text);
    assert!(
        v.text.contains(ENVELOPE) && v.text.contains("is a symbolic link"),
        "{}",
        v.text
    );
}

/// `blobs/sha256` itself a symbolic link to a directory elsewhere: nothing is read through it.
#[test]
fn a_blobs_directory_symlinked_out_of_the_layout_is_refused() {
    let layout = Layout::new();
    let out = layout.outside("sha256");
    std::fs::rename(layout.root().join("blobs/sha256"), &out).unwrap();
    symlink(&out, layout.root().join("blobs/sha256")).unwrap();
    let v = layout.verify(MODEL, QUICK);
    assert_eq!(v.code, Some(2), "an error: {}", v.text);
    assert!(
        v.text.contains("blobs/sha256") && v.text.contains("not a directory of the layout"),
        "{}",
        v.text
    );
}

/// A FIFO in place of the model manifest: opening it for reading would wait for a writer
/// forever (before: `verify` hung).
#[test]
fn a_fifo_in_place_of_a_manifest_does_not_hang() {
    let layout = Layout::new();
    let blob = layout.blob(&MODEL[7..]);
    std::fs::remove_file(&blob).unwrap();
    let status = Command::new("mkfifo").arg(&blob).status().unwrap();
    assert!(status.success(), "mkfifo");
    let v = layout.verify(MODEL, QUICK);
    assert_eq!(v.code, Some(2), "an error: {}", v.text);
    assert!(
        v.text.contains(&MODEL[7..]) && v.text.contains("not a regular file (a FIFO)"),
        "{}",
        v.text
    );
}

/// A 10 GB (sparse) `index.json`: refused from its size, without reading it, with the limit
/// named (before: read whole; under a 4 GiB address-space cap, "memory allocation failed").
#[test]
fn a_huge_index_json_is_refused_without_reading_it() {
    let layout = Layout::new();
    let index = std::fs::OpenOptions::new()
        .write(true)
        .open(layout.root().join("index.json"))
        .unwrap();
    index.set_len(10 << 30).unwrap();
    drop(index);
    let start = Instant::now();
    let reference = format!("oci:{}:legacy", layout.root().display());
    let v = layout.verify_with(&reference, Some(4 << 20), QUICK);
    assert_eq!(v.code, Some(2), "an error: {}", v.text);
    assert!(
        v.text.contains("index.json")
            && v.text.contains("10737418240 bytes")
            && v.text.contains("limit of 33554432 bytes"),
        "the error names the file, its size and the limit: {}",
        v.text
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
}
