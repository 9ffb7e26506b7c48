//! The streaming hash of one file: read through a fixed buffer, or, when a core is spare and
//! enough is left, with a reader thread filling buffers while this thread hashes.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use sha2_hw::{Digest, Sha256};

use super::{BUFFER_SIZE, HashError, HashObserver, io_error, kind_of};

/// While a core is idle (one big file, or the last big file of a tree), the rest of a file is
/// read on a helper thread while the worker hashes (double buffering): the page-cache copy then
/// overlaps the hashing instead of adding to it. With every core hashing, the extra thread only
/// costs, so it is not used then; nor for less than this much left to read, not worth a thread
/// (docs/benchmarks.md, hashing).
const PIPELINE_MIN: u64 = 8 * BUFFER_SIZE as u64;

/// Buffers in flight per pipelined file: one being read, one being hashed, one queued.
const PIPELINE_BUFFERS: usize = 3;

/// Cores busy hashing or reading, out of those available: a worker takes a spare one for a
/// reader thread.
pub(super) struct Cores {
    busy: AtomicUsize,
    total: usize,
}

impl Cores {
    pub(super) fn new(busy: usize) -> Self {
        Cores {
            busy: AtomicUsize::new(busy),
            total: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    fn try_take(&self) -> bool {
        // Plain load first: this runs once per buffer, and is almost always false in a tree.
        self.busy.load(Ordering::Relaxed) < self.total
            && self
                .busy
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |b| {
                    (b < self.total).then_some(b + 1)
                })
                .is_ok()
    }

    pub(super) fn release(&self) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Stream one opened regular file through SHA-256. The size is what was read; a file that grows
/// or shrinks while being read is an error rather than a digest of a state that never existed.
pub(super) fn digest_file(
    path: &Path,
    buf: &mut [u8],
    cores: &Cores,
    observer: &dyn HashObserver,
) -> Result<(String, u64), HashError> {
    let file = File::open(path).map_err(io_error(path))?;
    digest_opened(file, path, buf, cores, observer)
}

/// [`digest_file`] of a file already open (`path` names it in errors).
pub(super) fn digest_opened(
    mut file: File,
    path: &Path,
    buf: &mut [u8],
    cores: &Cores,
    observer: &dyn HashObserver,
) -> Result<(String, u64), HashError> {
    let meta = file.metadata().map_err(io_error(path))?;
    if !meta.is_file() {
        // Swapped between the walk and the open.
        return Err(HashError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(&meta),
        });
    }
    let mut hasher = Sha256::new();
    let read = digest_stream(&mut file, meta.len(), &mut hasher, buf, cores, observer)
        .map_err(io_error(path))?;
    if read != meta.len() {
        return Err(HashError::Changed {
            path: path.to_path_buf(),
            expected: meta.len(),
            read,
        });
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), read))
}

/// Read into `buf`, retrying interrupted reads; 0 at the end.
fn read_some(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Hash the file from its current position to its end; switches to a reader thread for the rest
/// as soon as a core is spare and enough is left. Returns the bytes read.
fn digest_stream(
    file: &mut File,
    len: u64,
    hasher: &mut Sha256,
    buf: &mut [u8],
    cores: &Cores,
    observer: &dyn HashObserver,
) -> io::Result<u64> {
    let mut read = 0u64;
    loop {
        if len.saturating_sub(read) >= PIPELINE_MIN && cores.try_take() {
            let rest = digest_pipelined(file, hasher, buf.len(), observer);
            cores.release();
            return Ok(read + rest?);
        }
        let n = read_some(file, buf)?;
        if n == 0 {
            return Ok(read);
        }
        hasher.update(&buf[..n]);
        observer.hashed(n as u64);
        read += n as u64;
    }
}

fn digest_pipelined(
    file: &mut File,
    hasher: &mut Sha256,
    buf_size: usize,
    observer: &dyn HashObserver,
) -> io::Result<u64> {
    let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<(Vec<u8>, usize)>>(PIPELINE_BUFFERS);
    let (empty_tx, empty_rx) = mpsc::sync_channel::<Vec<u8>>(PIPELINE_BUFFERS);
    for _ in 0..PIPELINE_BUFFERS {
        // Cannot fail: the channel has room for all of them and the receiver is alive.
        let _ = empty_tx.send(vec![0u8; buf_size]);
    }
    // `move`: the hasher's channel ends drop when it returns, so the reader can never be left
    // waiting for a buffer while the scope joins it.
    std::thread::scope(move |s| {
        s.spawn(move || {
            // Ends when the file ends, on an error, or when the hasher hangs up.
            while let Ok(mut buf) = empty_rx.recv() {
                match read_some(file, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if full_tx.send(Ok((buf, n))).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = full_tx.send(Err(e));
                        break;
                    }
                }
            }
        });
        let mut read = 0u64;
        for chunk in full_rx {
            let (buf, n) = chunk?;
            hasher.update(&buf[..n]);
            observer.hashed(n as u64);
            read += n as u64;
            let _ = empty_tx.send(buf);
        }
        Ok(read)
    })
}
