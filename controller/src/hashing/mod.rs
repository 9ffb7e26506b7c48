//! Content digests of local files and directories (datasets, model directories), streamed and
//! spread over all cores. Used by `provenant attest`.
//!
//! A file's digest is `sha256:` + the hex `sha256sum` prints for it. A directory's digest
//! ([`tree_digest`]) is the SHA-256 of the `sha256sum` listing of its regular files sorted by
//! path, so anyone can recompute it with coreutils (docs/local-materials.md):
//!
//! ```text
//! cd DIR && find -L . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum \
//!   | LC_ALL=C sed 's|  \./|  |' | sha256sum
//! ```

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::{self, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use sha2_hw::{Digest, Sha256};

mod stream;
use stream::{Cores, digest_file, digest_opened};

/// Read size of the streaming hash: as fast as larger buffers on files and trees, and little
/// memory per worker (docs/benchmarks.md, hashing).
pub const BUFFER_SIZE: usize = 1 << 20;

/// What hashing reports while it works, from its worker threads (progress bars).
pub trait HashObserver: Sync {
    /// The walk found `files` regular files, `bytes` in all.
    fn walked(&self, _files: usize, _bytes: u64) {}
    /// `path` (relative to the root), `size` bytes, is about to be hashed.
    fn file(&self, _path: &Path, _size: u64) {}
    /// `bytes` more were hashed.
    fn hashed(&self, _bytes: u64) {}
}

/// Nothing to report to.
impl HashObserver for () {}

/// A closure told of each file before it is hashed.
impl<F: Fn(&Path, u64) + Sync> HashObserver for F {
    fn file(&self, path: &Path, size: u64) {
        self(path, size)
    }
}

/// The digest of one regular file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileDigest {
    /// Path relative to the hashed root (`/`-separated), or the file name for a single file.
    pub path: PathBuf,
    /// `sha256:<64 lowercase hex>` of the content.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

/// Why a file or tree could not be hashed. Every variant names the path (as given, joined with
/// the relative path inside the tree).
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {reason}", .path.display())]
    Symlink { path: PathBuf, reason: String },
    #[error("{}: is a {kind}, not a regular file or directory", .path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{}: changed while being hashed ({expected} bytes when opened, {read} read)", .path.display())]
    Changed {
        path: PathBuf,
        expected: u64,
        read: u64,
    },
    #[error("{}: directory loop (already visited through another path)", .path.display())]
    Loop { path: PathBuf },
}

impl HashError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            HashError::Io { path, .. }
            | HashError::Symlink { path, .. }
            | HashError::NotRegular { path, .. }
            | HashError::Changed { path, .. }
            | HashError::Loop { path } => path,
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> HashError + '_ {
    move |source| HashError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a non-regular, non-directory file is, for error messages.
fn kind_of(meta: &Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "fifo";
        }
        if t.is_socket() {
            return "socket";
        }
        if t.is_block_device() {
            return "block device";
        }
        if t.is_char_device() {
            return "character device";
        }
    }
    if meta.is_dir() {
        "directory"
    } else if meta.file_type().is_symlink() {
        "symlink"
    } else {
        "special file"
    }
}

/// The bytes of a path, as `sha256sum` and `sort` see them.
fn path_bytes(path: &Path) -> Cow<'_, [u8]> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Cow::Borrowed(path.as_os_str().as_bytes())
    }
    #[cfg(not(unix))]
    {
        Cow::Owned(path.to_string_lossy().replace('\\', "/").into_bytes())
    }
}

/// Byte order of the `/`-joined path (what `LC_ALL=C sort` does). Not `Path`'s `Ord`, which
/// compares component-wise and puts `a/b` before `a-b`.
fn by_path_bytes(a: &Path, b: &Path) -> std::cmp::Ordering {
    path_bytes(a).cmp(&path_bytes(b))
}

/// Hash one file (a symlink is followed), streaming it through a fixed buffer. The entry is
/// named after the file (its last path component).
pub fn hash_file(path: &Path) -> Result<FileDigest, HashError> {
    hash_file_with(path, &())
}

/// [`hash_file`], reporting to `observer`.
pub fn hash_file_with(path: &Path, observer: &dyn HashObserver) -> Result<FileDigest, HashError> {
    // Checked before opening: opening a fifo would block.
    let meta = fs::metadata(path).map_err(io_error(path))?;
    if !meta.is_file() {
        return Err(HashError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(&meta),
        });
    }
    observer.walked(1, meta.len());
    let mut buf = vec![0u8; BUFFER_SIZE];
    let (digest, size) = digest_file(path, &mut buf, &Cores::new(1), observer)?;
    let name = path
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| path.to_path_buf());
    Ok(FileDigest {
        path: name,
        digest,
        size,
    })
}

/// As [`hash_file_with`], of a file the caller opened (and checked: e.g. opened without
/// following a link, `storage::oci_layout::untrusted`), so the bytes hashed are that file's even
/// if `path` is replaced meanwhile. `path` names it in the result and in errors.
pub fn hash_opened_file_with(
    file: fs::File,
    path: &Path,
    observer: &dyn HashObserver,
) -> Result<FileDigest, HashError> {
    let meta = file.metadata().map_err(io_error(path))?;
    observer.walked(1, meta.len());
    let mut buf = vec![0u8; BUFFER_SIZE];
    let (digest, size) = digest_opened(file, path, &mut buf, &Cores::new(1), observer)?;
    let name = path
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| path.to_path_buf());
    Ok(FileDigest {
        path: name,
        digest,
        size,
    })
}

/// A regular file found by the walk.
struct Entry {
    /// Relative to the root.
    rel: PathBuf,
    /// The root as given, joined with `rel` (what is opened and named in errors).
    full: PathBuf,
    size: u64,
}

/// Every regular file below `root` (a directory), with the symlink and special-file rules of
/// [`hash_tree`]. Symlinks to directories are never followed, so the walk cannot loop through
/// links; a directory reached twice (bind mounts) is an error.
fn walk(root: &Path) -> Result<Vec<Entry>, HashError> {
    let canonical_root = fs::canonicalize(root).map_err(io_error(root))?;
    let mut files = Vec::new();
    // (device, inode) of every directory walked.
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let dir = root.join(&rel_dir);
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let meta = fs::metadata(&dir).map_err(io_error(&dir))?;
            if !seen.insert((meta.dev(), meta.ino())) {
                return Err(HashError::Loop { path: dir });
            }
        }
        #[cfg(not(unix))]
        let _ = &mut seen;
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))? {
            let entry = entry.map_err(io_error(&dir))?;
            let rel = rel_dir.join(entry.file_name());
            let full = root.join(&rel);
            let file_type = entry.file_type().map_err(io_error(&full))?;
            if file_type.is_dir() {
                stack.push(rel);
            } else if file_type.is_file() {
                let size = entry.metadata().map_err(io_error(&full))?.len();
                files.push(Entry { rel, full, size });
            } else if file_type.is_symlink() {
                let size = symlink_target_size(&full, &canonical_root)?;
                files.push(Entry { rel, full, size });
            } else {
                let meta = entry.metadata().map_err(io_error(&full))?;
                return Err(HashError::NotRegular {
                    path: full,
                    kind: kind_of(&meta),
                });
            }
        }
    }
    Ok(files)
}

/// A symlink inside the tree is hashed as the file it points to, if that is a regular file
/// inside the root; returns its size.
fn symlink_target_size(link: &Path, canonical_root: &Path) -> Result<u64, HashError> {
    let symlink_error = |reason: String| HashError::Symlink {
        path: link.to_path_buf(),
        reason,
    };
    // canonicalize fails on dangling links and on link cycles (ELOOP).
    let target = fs::canonicalize(link)
        .map_err(|e| symlink_error(format!("symlink cannot be resolved: {e}")))?;
    if !target.starts_with(canonical_root) {
        return Err(symlink_error(format!(
            "symlink points outside the hashed directory (to {})",
            target.display()
        )));
    }
    let meta = fs::metadata(&target).map_err(io_error(link))?;
    if meta.is_dir() {
        return Err(symlink_error(format!(
            "symlink to a directory ({}) is not followed",
            target.display()
        )));
    }
    if !meta.is_file() {
        return Err(symlink_error(format!(
            "symlink to a {} ({})",
            kind_of(&meta),
            target.display()
        )));
    }
    Ok(meta.len())
}

/// Hash every regular file below `root`, sorted by relative path (byte order of the `/`-joined
/// path), in parallel on all cores. A file `root` gives one entry named after the file.
///
/// - A symlink inside the tree to a regular file inside the root is hashed as that file, under
///   the symlink's path. A symlink that is dangling, cyclic, points outside the root, or points
///   to a directory is an error. `root` itself may be a symlink (it is what the user named).
/// - Sockets, fifos and devices are errors. Empty directories contribute nothing.
/// - Errors name the path and the reason. Hashing stops at the first failure; if several
///   workers failed meanwhile, the error of the first path in order is returned.
pub fn hash_tree(root: &Path) -> Result<Vec<FileDigest>, HashError> {
    hash_tree_with(root, 0, &())
}

/// [`hash_tree`] with `threads` workers (0: one per available core), reporting to `observer`
/// on the worker threads: the walk's totals, each file just before it is hashed, the bytes as
/// they are hashed.
pub fn hash_tree_with(
    root: &Path,
    threads: usize,
    observer: &dyn HashObserver,
) -> Result<Vec<FileDigest>, HashError> {
    let meta = fs::metadata(root).map_err(io_error(root))?;
    if meta.is_file() {
        observer.file(root.file_name().map(Path::new).unwrap_or(root), meta.len());
        return hash_file_with(root, observer).map(|f| vec![f]);
    }
    if !meta.is_dir() {
        return Err(HashError::NotRegular {
            path: root.to_path_buf(),
            kind: kind_of(&meta),
        });
    }

    let mut entries = walk(root)?;
    observer.walked(entries.len(), entries.iter().map(|e| e.size).sum());
    // Largest first, so that one big file starts early instead of finishing last.
    entries.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.rel.cmp(&b.rel)));

    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let workers = threads.min(entries.len());
    let next = AtomicUsize::new(0);
    let cores = Cores::new(workers);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<(usize, Result<FileDigest, HashError>)>> =
        Mutex::new(Vec::with_capacity(entries.len()));

    let work = || {
        let mut buf = vec![0u8; BUFFER_SIZE];
        let mut local = Vec::new();
        while !failed.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(entry) = entries.get(i) else {
                break;
            };
            observer.file(&entry.rel, entry.size);
            let result =
                digest_file(&entry.full, &mut buf, &cores, observer).map(|(digest, size)| {
                    FileDigest {
                        path: entry.rel.clone(),
                        digest,
                        size,
                    }
                });
            if result.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            local.push((i, result));
        }
        // This worker's core is now spare: a worker still on a big file may take it.
        cores.release();
        // A poisoned lock only means another worker panicked; its panic propagates from scope.
        results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(local);
    };
    std::thread::scope(|s| {
        for _ in 1..workers {
            s.spawn(work);
        }
        // The calling thread is one of the workers.
        if workers > 0 {
            work();
        }
    });

    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut digests = Vec::with_capacity(results.len());
    let mut first_error: Option<(usize, HashError)> = None;
    for (i, result) in results {
        match result {
            Ok(d) => digests.push(d),
            Err(e) => {
                let earlier = first_error
                    .as_ref()
                    .is_none_or(|(j, _)| by_path_bytes(&entries[i].rel, &entries[*j].rel).is_lt());
                if earlier {
                    first_error = Some((i, e));
                }
            }
        }
    }
    if let Some((_, e)) = first_error {
        return Err(e);
    }
    digests.sort_by(|a, b| by_path_bytes(&a.path, &b.path));
    Ok(digests)
}

/// One line of `sha256sum` output for `file`, exactly as GNU coreutils (9.x) prints it: a name
/// containing `\`, LF or CR is escaped (`\\`, `\n`, `\r`) and the line starts with `\`.
fn sha256sum_line(file: &FileDigest, out: &mut Vec<u8>) {
    let hex = file.digest.strip_prefix("sha256:").unwrap_or(&file.digest);
    let name = path_bytes(&file.path);
    let escape = name.iter().any(|b| matches!(b, b'\\' | b'\n' | b'\r'));
    if escape {
        out.push(b'\\');
    }
    out.extend_from_slice(hex.as_bytes());
    out.extend_from_slice(b"  ");
    for &b in name.iter() {
        match b {
            b'\\' if escape => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
    out.push(b'\n');
}

/// The `sha256sum` listing of `files` in path byte order (a `SHA256SUMS` file that
/// `sha256sum -c` checks from inside the directory). Its SHA-256 is [`tree_digest`].
pub fn sha256sums(files: &[FileDigest]) -> Vec<u8> {
    let mut sorted: Vec<&FileDigest> = files.iter().collect();
    sorted.sort_by(|a, b| by_path_bytes(&a.path, &b.path));
    let mut out = Vec::with_capacity(files.len() * 100);
    for file in sorted {
        sha256sum_line(file, &mut out);
    }
    out
}

/// The digest of a directory: `sha256:` + SHA-256 of its [`sha256sums`] listing, i.e. of the
/// lines `"<hex>  <relative path>\n"` sorted by path bytes. An empty directory has the digest of
/// the empty string.
pub fn tree_digest(files: &[FileDigest]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(sha256sums(files))))
}

/// The digest of a dataset (or model) path: a file's content digest, or a directory's
/// [`tree_digest`]; with the files hashed.
pub fn dataset_digest(path: &Path) -> Result<(String, Vec<FileDigest>), HashError> {
    dataset_digest_with(path, &())
}

/// [`dataset_digest`], reporting to `observer`.
pub fn dataset_digest_with(
    path: &Path,
    observer: &dyn HashObserver,
) -> Result<(String, Vec<FileDigest>), HashError> {
    let meta = fs::metadata(path).map_err(io_error(path))?;
    if meta.is_file() {
        let file = hash_file_with(path, observer)?;
        return Ok((file.digest.clone(), vec![file]));
    }
    let files = hash_tree_with(path, 0, observer)?;
    Ok((tree_digest(&files), files))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd(path: &str, digest: &str) -> FileDigest {
        FileDigest {
            path: PathBuf::from(path),
            digest: format!("sha256:{digest}"),
            size: 0,
        }
    }

    #[test]
    fn listing_is_in_byte_order_not_component_order() {
        let files = [fd("a/b", "22"), fd("a-b", "11"), fd("B", "00")];
        assert_eq!(sha256sums(&files), b"00  B\n11  a-b\n22  a/b\n");
    }

    #[test]
    fn listing_escapes_like_coreutils() {
        let files = [fd("x\\y", "aa"), fd("p\nq", "bb"), fd("c\rd", "cc")];
        assert_eq!(
            String::from_utf8(sha256sums(&files)).unwrap(),
            "\\cc  c\\rd\n\\bb  p\\nq\n\\aa  x\\\\y\n"
        );
    }

    #[test]
    fn empty_tree_has_the_empty_digest() {
        assert_eq!(
            tree_digest(&[]),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
