//! Reading a layout someone else wrote (`provenant verify oci:<dir>`): its digests, file types and
//! sizes are input. A digest becomes a path only once it is `sha256:` and 64 lowercase hex
//! digits; `blobs/` and `blobs/sha256/` must be directories of the layout, not links out of it;
//! files are opened without following a symbolic link (`O_NOFOLLOW`) and without blocking
//! (`O_NONBLOCK`: opening a FIFO for reading would wait for a writer forever), then must be
//! regular files; a file that is parsed is refused from its size, before it is read, when larger
//! than its limit.

use std::fs::File;
use std::io::{self, Read as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::storage::oci;

/// The largest `index.json` read (it lists every tag and referrer of the layout: tens of
/// thousands of entries fit).
pub const MAX_INDEX_BYTES: u64 = 32 << 20;

/// The largest manifest or other document blob read (DSSE envelopes, signatures): the registry
/// store's limit on a response.
pub const MAX_DOCUMENT_BYTES: u64 = crate::storage::transport::MAX_DOCUMENT_BYTES as u64;

/// Why a digest names no blob: the text every refusal shares.
pub const BAD_DIGEST: &str = "not sha256: and 64 lowercase hex digits";

/// The path of the blob `digest` under the layout `root`, once the digest is known to be one
/// (`sha256:<64 lowercase hex>`: no `/`, no `..`, nothing absolute).
pub fn blob_path(root: &Path, digest: &str) -> Result<PathBuf, String> {
    let hex = oci::sha256_hex(digest)
        .ok_or_else(|| format!("invalid digest {:?}: {BAD_DIGEST}", truncated(digest)))?;
    Ok(root.join("blobs").join("sha256").join(hex))
}

/// `blobs` and `blobs/sha256` are directories inside the layout (not symbolic links), so a blob
/// path never leads out of it.
pub fn check_blob_dirs(root: &Path) -> io::Result<()> {
    for dir in [root.join("blobs"), root.join("blobs").join("sha256")] {
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(m) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: not a directory of the layout ({}); refusing to read through it",
                        dir.display(),
                        kind_of(&m.file_type())
                    ),
                ));
            }
            // A layout without blobs has no blob to read: the read that follows says so.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
        }
    }
    Ok(())
}

/// Opens `path` for reading if it is a regular file (not a symbolic link, FIFO, socket, device
/// or directory). The error names what it is instead.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            // ELOOP is what O_NOFOLLOW answers for a symbolic link.
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "is a symbolic link; refusing to follow it out of the layout",
                )
            } else {
                e
            }
        })?;
    let file_type = file.metadata()?.file_type();
    if !file_type.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "not a regular file ({}); refusing to read it",
                kind_of(&file_type)
            ),
        ));
    }
    Ok(file)
}

/// `path`'s content, if it is a regular file of at most `limit` bytes. A larger file is refused
/// from its size, unread. `Ok(None)` when there is no such file.
pub fn read_capped(path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let file = match open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = file.metadata()?.len();
    let too_large = |size: u64| {
        io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("{size} bytes, over the limit of {limit} bytes for this file; not read"),
        )
    };
    if size > limit {
        return Err(too_large(size));
    }
    // The file may grow while it is read: never read past the limit either.
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(Some(bytes))
}

fn kind_of(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a file"
    }
}

/// At most 100 characters of an untrusted string, for an error message.
fn truncated(s: &str) -> String {
    let mut out: String = s.chars().take(100).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256_digests_become_paths() {
        let root = Path::new("/layout");
        let ok = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            blob_path(root, &ok).unwrap(),
            root.join("blobs/sha256").join("a".repeat(64))
        );
        for bad in [
            "sha256:../../etc/passwd",
            "sha256:/etc/passwd",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}/..", "a".repeat(61)),
            &format!("sha512:{}", "a".repeat(64)),
            "",
        ] {
            let e = blob_path(root, bad).unwrap_err();
            assert!(e.contains(BAD_DIGEST), "{bad}: {e}");
        }
    }

    #[test]
    fn special_files_and_links_are_refused_and_large_files_unread() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"12345").unwrap();
        assert_eq!(read_capped(&file, 5).unwrap().unwrap(), b"12345");
        let e = read_capped(&file, 4).unwrap_err();
        assert!(e.to_string().contains("over the limit of 4 bytes"), "{e}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let e = read_capped(&link, 5).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = read_capped(dir.path(), 5).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let e = open_regular(Path::new("/dev/null")).unwrap_err();
        assert!(e.to_string().contains("a device"), "{e}");
        assert!(
            read_capped(&dir.path().join("absent"), 5)
                .unwrap()
                .is_none()
        );
    }
}
