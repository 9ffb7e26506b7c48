//! Hashing of local datasets and model directories against coreutils: every digest is what
//! `sha256sum` prints, and the directory digest is what the shell pipeline documented in
//! docs/local-materials.md prints. Unix only (fifos, sockets, symlinks, /proc).
#![cfg(unix)]

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use provenant::hashing::{
    FileDigest, HashError, dataset_digest, hash_file, hash_tree, hash_tree_with, sha256sums,
    tree_digest,
};

/// The one-liner of docs/local-materials.md, verbatim (the test checks the doc still says it).
const PIPELINE: &str = "cd DIR && find -L . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum | LC_ALL=C sed 's|  \\./|  |' | sha256sum";

/// Deterministic pseudo-random bytes (xorshift), so large files do not compress or repeat.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn write(root: &Path, rel: impl AsRef<Path>, content: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// A tree with the awkward cases: nesting, an empty file and directory, files around and above
/// the buffer and pipelining sizes, unicode, spaces, a leading dash, names sha256sum escapes,
/// a non-UTF-8 name, `a-b` vs `a/b` ordering, a hidden file and an in-tree symlink.
fn awkward_tree(root: &Path) {
    for i in 0..40 {
        write(
            root,
            format!("shards/{:02}/part-{i}.jsonl", i % 7),
            &noise(i * 37, i as u64),
        );
    }
    write(root, "empty", b"");
    write(root, "a-b", b"dash");
    write(root, "a/b", b"slash");
    write(root, ".hidden", b"h");
    write(root, "données/été 2024.csv", b"x,y\n1,2\n");
    write(root, "with space.txt", b"space");
    write(root, "-leading-dash", b"dash");
    write(root, "back\\slash", b"backslash");
    write(root, "line\nbreak", b"newline");
    write(root, OsStr::from_bytes(b"latin1-\xe9t\xe9"), b"bytes");
    write(root, "big/one-mebibyte", &noise(1 << 20, 1));
    write(root, "big/weights.bin", &noise(9 * (1 << 20) + 12345, 2));
    fs::create_dir_all(root.join("empty-dir/nested")).unwrap();
    symlink("../big/one-mebibyte", root.join("shards/link-to-big")).unwrap();
}

fn sh(script: &str, dir: &Path) -> Vec<u8> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(dir)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn sha256sum_hex(output: &[u8]) -> String {
    let line = String::from_utf8_lossy(output);
    line.split_whitespace().next().unwrap().to_string()
}

#[test]
fn tree_matches_sha256sum_and_the_documented_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    awkward_tree(root);
    let files = hash_tree(root).expect("hash tree");
    assert_eq!(files.len(), 40 + 13);

    // The listing is line for line what sha256sum prints (order, escaping, digests)...
    let listing = PIPELINE
        .strip_suffix(" | sha256sum")
        .unwrap()
        .replace("DIR", "\"$1\"");
    assert_eq!(
        String::from_utf8_lossy(&sha256sums(&files)),
        String::from_utf8_lossy(&sh(&listing, root))
    );
    // ...and the directory digest is the documented one-liner's output.
    let pipeline = sh(&PIPELINE.replace("DIR", "\"$1\""), root);
    let digest = tree_digest(&files);
    assert_eq!(digest, format!("sha256:{}", sha256sum_hex(&pipeline)));
    assert_eq!(dataset_digest(root).unwrap(), (digest, files.clone()));

    // Independently of find/sort: `sha256sum -c` accepts the listing as a SHA256SUMS file.
    let sums = tempfile::NamedTempFile::new().unwrap();
    fs::write(sums.path(), sha256sums(&files)).unwrap();
    let check = Command::new("sha256sum")
        .args(["-c", "--quiet", "--strict"])
        .arg(sums.path())
        .current_dir(root)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");

    let big = files
        .iter()
        .find(|f| f.path == Path::new("big/weights.bin"))
        .unwrap();
    assert_eq!(big.size, 9 * (1 << 20) + 12345);
    let link = files
        .iter()
        .find(|f| f.path == Path::new("shards/link-to-big"))
        .unwrap();
    let target = files
        .iter()
        .find(|f| f.path == Path::new("big/one-mebibyte"))
        .unwrap();
    assert_eq!(
        (&link.digest, link.size),
        (&target.digest, target.size),
        "an in-tree symlink is hashed as its target"
    );
    let doc = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/local-materials.md"
    ))
    .expect("docs/local-materials.md");
    assert!(
        doc.contains(PIPELINE),
        "docs/local-materials.md must show the pipeline the test runs"
    );
}

#[test]
fn a_file_is_its_content_digest() {
    let dir = tempfile::tempdir().unwrap();
    for (name, len) in [("empty.bin", 0), ("small.txt", 100), ("large.bin", 9 << 20)] {
        let path = dir.path().join(name);
        fs::write(&path, noise(len, len as u64)).unwrap();
        let expected = format!(
            "sha256:{}",
            sha256sum_hex(
                &Command::new("sha256sum")
                    .arg(&path)
                    .output()
                    .unwrap()
                    .stdout
            )
        );
        let file = hash_file(&path).unwrap();
        assert_eq!(
            file,
            FileDigest {
                path: PathBuf::from(name),
                digest: expected.clone(),
                size: len as u64
            }
        );
        assert_eq!(hash_tree(&path).unwrap(), vec![file.clone()]);
        assert_eq!(dataset_digest(&path).unwrap(), (expected, vec![file]));
    }
}

#[test]
fn empty_directories_contribute_nothing() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("a/b/c")).unwrap();
    assert_eq!(hash_tree(dir.path()).unwrap(), vec![]);
    let (digest, files) = dataset_digest(dir.path()).unwrap();
    assert!(files.is_empty());
    let pipeline = sh(&PIPELINE.replace("DIR", "\"$1\""), dir.path());
    assert_eq!(digest, format!("sha256:{}", sha256sum_hex(&pipeline)));

    write(dir.path(), "a/data", b"1");
    let before = tree_digest(&hash_tree(dir.path()).unwrap());
    fs::create_dir_all(dir.path().join("z/empty")).unwrap();
    assert_eq!(tree_digest(&hash_tree(dir.path()).unwrap()), before);
}

fn symlink_error(root: &Path) -> (PathBuf, String) {
    match hash_tree(root) {
        Err(e @ HashError::Symlink { .. }) => (e.path().to_path_buf(), e.to_string()),
        other => panic!("expected a symlink error, got {other:?}"),
    }
}

#[test]
fn symlink_rules() {
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret", b"outside");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    write(&root, "real/file", b"in");

    // A symlinked root is followed: it is what the user named.
    let alias = dir.path().join("alias");
    symlink(&root, &alias).unwrap();
    assert_eq!(hash_tree(&alias).unwrap(), hash_tree(&root).unwrap());

    let cases: [(&str, PathBuf, &str); 4] = [
        ("dangling", root.join("nowhere"), "cannot be resolved"),
        ("outside", outside.path().join("secret"), "outside"),
        ("dir-link", root.join("real"), "directory"),
        ("loop", root.join("loop"), "cannot be resolved"),
    ];
    for (name, target, reason) in cases {
        let link = root.join(name);
        symlink(&target, &link).unwrap();
        let (path, message) = symlink_error(&root);
        assert_eq!(path, link, "{name}");
        assert!(
            message.contains(reason) && message.contains(&*link.to_string_lossy()),
            "{name}: {message}"
        );
        fs::remove_file(&link).unwrap();
    }
    // The remaining tree hashes again.
    assert_eq!(hash_tree(&root).unwrap().len(), 1);
}

#[test]
fn special_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    write(&root, "ok", b"fine");

    let fifo = root.join("pipe");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    let err = hash_tree(&root).unwrap_err();
    assert!(
        matches!(&err, HashError::NotRegular { path, kind: "fifo" } if *path == fifo),
        "{err}"
    );
    assert!(err.to_string().contains("pipe"), "{err}");
    // Never opened: opening a fifo with no writer would block.
    let err = hash_file(&fifo).unwrap_err();
    assert!(matches!(err, HashError::NotRegular { kind: "fifo", .. }));
    assert!(dataset_digest(&fifo).is_err());
    assert!(started.elapsed() < Duration::from_secs(5));
    fs::remove_file(&fifo).unwrap();

    let socket = root.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let err = hash_tree(&root).unwrap_err();
    assert!(
        matches!(&err, HashError::NotRegular { path, kind: "socket" } if *path == socket),
        "{err}"
    );
    drop(_listener);
    fs::remove_file(&socket).unwrap();

    // A device reached through an in-tree path is refused too.
    symlink("/dev/null", root.join("null")).unwrap();
    assert!(hash_tree(&root).is_err());
    fs::remove_file(root.join("null")).unwrap();

    let missing = root.join("missing");
    let err = hash_tree(&missing).unwrap_err();
    assert!(
        matches!(&err, HashError::Io { path, .. } if *path == missing),
        "{err}"
    );
}

#[test]
fn workers_pull_largest_first_on_several_threads() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..8u64 {
        write(
            dir.path(),
            format!("f{i}"),
            &noise(1000 * (i as usize + 1), i),
        );
    }

    // One worker: the queue order is exactly largest first.
    let order = Mutex::new(Vec::new());
    let files = hash_tree_with(dir.path(), 1, &|path: &Path, size| {
        order.lock().unwrap().push((path.to_path_buf(), size));
    })
    .unwrap();
    let sizes: Vec<u64> = order.lock().unwrap().iter().map(|(_, s)| *s).collect();
    assert_eq!(sizes, vec![8000, 7000, 6000, 5000, 4000, 3000, 2000, 1000]);

    // Two workers: the first two files are held until both are taken, which only happens if two
    // threads pull from the queue at once (a single thread would time out here).
    let arrived = Mutex::new(0usize);
    let both = Condvar::new();
    let threads = Mutex::new(HashSet::new());
    let parallel = hash_tree_with(dir.path(), 2, &|_: &Path, _| {
        threads.lock().unwrap().insert(std::thread::current().id());
        let mut n = arrived.lock().unwrap();
        *n += 1;
        if *n <= 2 {
            both.notify_all();
            let (n, timeout) = both
                .wait_timeout_while(n, Duration::from_secs(10), |n| *n < 2)
                .unwrap();
            assert!(!timeout.timed_out(), "only {} worker took a file", *n);
        }
    })
    .unwrap();
    assert_eq!(threads.lock().unwrap().len(), 2);
    assert_eq!(parallel, files);
    assert_eq!(parallel, hash_tree(dir.path()).unwrap());
}

const HWM_ENV: &str = "PROVENANT_TEST_HWM_FILE";

fn vm_hwm_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Run by `memory_stays_flat` in a fresh process, so that other tests running in parallel do
/// not move this process's high-water mark.
#[test]
#[ignore = "run by memory_stays_flat in a child process"]
fn memory_child() {
    let Some(path) = std::env::var_os(HWM_ENV) else {
        return;
    };
    let path = PathBuf::from(path);
    let before = vm_hwm_kib();
    let file = hash_file(&path).unwrap();
    let tree = hash_tree(path.parent().unwrap()).unwrap();
    let after = vm_hwm_kib();
    assert_eq!(file.size, 256 << 20);
    assert_eq!(tree[0].digest, file.digest);
    println!("HWM_GROWTH_KIB={}", after - before);
}

#[cfg(target_os = "linux")]
#[test]
fn memory_stays_flat() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("256mib.bin");
    let mut out = fs::File::create(&path).unwrap();
    let chunk = noise(1 << 20, 7);
    for i in 0..=255u8 {
        let mut c = chunk.clone();
        c[0] = i;
        out.write_all(&c).unwrap();
    }
    drop(out);

    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "memory_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HWM_ENV, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&child.stderr)
    );
    // libtest prints `test memory_child ... ` on the same line first.
    let growth: u64 = stdout
        .split_once("HWM_GROWTH_KIB=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .expect("the child ran")
        .parse()
        .unwrap();
    assert!(
        growth < 32 * 1024,
        "hashing 256 MiB grew VmHWM by {growth} KiB"
    );
    eprintln!("VmHWM growth hashing 256 MiB: {growth} KiB");
}

/// A progress bar sees the walk's total first and then every byte hashed, on the pipelined path
/// (a file large enough for a reader thread) as on the plain one.
#[test]
fn the_observer_sees_the_total_and_every_byte() {
    use std::sync::atomic::{AtomicU64, Ordering};
    #[derive(Default)]
    struct Count {
        total: AtomicU64,
        hashed: AtomicU64,
    }
    impl provenant::hashing::HashObserver for Count {
        fn walked(&self, _files: usize, bytes: u64) {
            assert_eq!(
                self.hashed.load(Ordering::SeqCst),
                0,
                "total before any byte"
            );
            self.total.store(bytes, Ordering::SeqCst);
        }
        fn hashed(&self, bytes: u64) {
            self.hashed.fetch_add(bytes, Ordering::SeqCst);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "big", &noise(20 << 20, 1));
    write(dir.path(), "small", &noise(3000, 2));
    for threads in [1, 2] {
        let count = Count::default();
        let files = hash_tree_with(dir.path(), threads, &count).unwrap();
        let size: u64 = files.iter().map(|f| f.size).sum();
        assert_eq!(count.total.load(Ordering::SeqCst), size);
        assert_eq!(count.hashed.load(Ordering::SeqCst), size);
    }
}
