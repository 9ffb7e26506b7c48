//! [`BodySink`]: where a registry response body is streamed instead of read into memory (a model
//! file pulled by `provenant verify --pull`, any size): to a file, hashed on the way.

/// Where a streamed `200` body goes (a model file pulled by `provenant verify --pull`): written
/// to a file as it arrives and hashed on the way, at most `limit` bytes (a registry cannot fill
/// the disk past the size the manifest gives). Restarted (emptied) by each attempt of a retry.
pub(super) struct BodySink {
    pub(super) limit: u64,
    state: std::sync::Mutex<SinkState>,
}

struct SinkState {
    file: std::fs::File,
    hasher: sha2::Sha256,
    written: u64,
}

impl BodySink {
    pub(super) fn new(file: std::fs::File, limit: u64) -> Self {
        BodySink {
            limit,
            state: std::sync::Mutex::new(SinkState {
                file,
                hasher: <sha2::Sha256 as sha2::Digest>::new(),
                written: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SinkState> {
        // A panic mid-write leaves a state the next attempt restarts anyway.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn restart(&self) -> std::io::Result<()> {
        use std::io::Seek as _;
        let mut state = self.lock();
        state.file.set_len(0)?;
        state.file.rewind()?;
        state.hasher = <sha2::Sha256 as sha2::Digest>::new();
        state.written = 0;
        Ok(())
    }

    pub(super) fn write(&self, chunk: &[u8]) -> std::io::Result<()> {
        use std::io::Write as _;
        let mut state = self.lock();
        let written = state.written.saturating_add(chunk.len() as u64);
        if written > self.limit {
            return Err(std::io::Error::other(format!(
                "the registry sent more than the {} bytes the manifest gives",
                self.limit
            )));
        }
        state.file.write_all(chunk)?;
        sha2::Digest::update(&mut state.hasher, chunk);
        state.written = written;
        Ok(())
    }

    /// `sha256:<hex>` and size of what was written.
    pub(super) fn finish(self) -> std::io::Result<(String, u64)> {
        let state = self.state.into_inner().unwrap_or_else(|p| p.into_inner());
        state.file.sync_all()?;
        let digest = sha2::Digest::finalize(state.hasher);
        Ok((format!("sha256:{}", hex::encode(digest)), state.written))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_empties_the_file_and_the_limit_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let sink = BodySink::new(std::fs::File::create(&path).unwrap(), 5);
        sink.write(b"abc").unwrap();
        // A retried request starts again from nothing.
        sink.restart().unwrap();
        sink.write(b"hello").unwrap();
        let e = sink.write(b"!").unwrap_err();
        assert!(e.to_string().contains("more than the 5 bytes"), "{e}");
        let (digest, size) = sink.finish().unwrap();
        assert_eq!(size, 5);
        assert_eq!(digest, crate::observe::sha256_digest(b"hello"));
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
    }
}
