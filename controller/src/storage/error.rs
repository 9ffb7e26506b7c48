//! [`StorageError`] and its [`ErrorKind`], shared by every store.

use std::fmt;
use std::time::Duration;

/// What kind of failure a [`StorageError`] is; drives the caller's retry decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The registry says the manifest (or repository) does not exist.
    NotFound,
    /// The registry served content that does not hash to the digest asked for.
    DigestMismatch,
    /// Worth retrying later: connection failures, timeouts, 5xx, 408, 429 (after the store's own
    /// retries were exhausted).
    Transient,
    /// Retrying will not help: bad input, 4xx, unauthorized, malformed registry data.
    Permanent,
    /// Our entry kept disappearing from a tag we updated: another writer (cosign, another
    /// controller replica) kept replacing the tag with a copy read before our write (a registry
    /// has no conditional PUT). Nothing of ours is lost but that listing, and attaching again
    /// adds it back: worth retrying later, like [`Transient`](ErrorKind::Transient).
    Contended,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::DigestMismatch => "digest mismatch",
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Contended => "lost to a concurrent writer",
        })
    }
}

/// A storage failure: which step (`op`, one of [`op`](super::op) or a local step such as
/// `credentials`), on what (`target`), its kind, and the registry's own message (`CODE: message`
/// from its JSON error body) or the transport error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op} {target}: {message} ({kind})")]
pub struct StorageError {
    op: &'static str,
    target: String,
    kind: ErrorKind,
    status: Option<u16>,
    message: String,
    /// The registry's `Retry-After` on a 429/503, honoured by the store's own retries.
    retry_after: Option<Duration>,
    /// A manifest PUT refused because a blob (or manifest) it references is unknown to the
    /// registry (`MANIFEST_BLOB_UNKNOWN`, `BLOB_UNKNOWN`): the store stores it again and retries.
    blob_unknown: bool,
}

impl StorageError {
    pub fn new(
        op: &'static str,
        target: impl Into<String>,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> Self {
        StorageError {
            op,
            target: target.into(),
            kind,
            status: None,
            message: printable(&message.into(), MAX_MESSAGE_CHARS),
            retry_after: None,
            blob_unknown: false,
        }
    }

    pub(crate) fn permanent(
        op: &'static str,
        target: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        StorageError::new(op, target, ErrorKind::Permanent, message)
    }

    pub(crate) fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub(crate) fn with_message(mut self, message: String) -> Self {
        self.message = printable(&message, MAX_MESSAGE_CHARS);
        self
    }

    pub(crate) fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    pub(crate) fn with_blob_unknown(mut self, blob_unknown: bool) -> Self {
        self.blob_unknown = blob_unknown;
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Worth retrying later: [`ErrorKind::Transient`] or [`ErrorKind::Contended`].
    pub fn is_transient(&self) -> bool {
        matches!(self.kind, ErrorKind::Transient | ErrorKind::Contended)
    }

    /// The registry refused a manifest because something it references does not exist there.
    pub(crate) fn is_blob_unknown(&self) -> bool {
        self.blob_unknown
    }

    /// How long the registry asked us to wait before retrying, if it said.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The step that failed, e.g. `manifest_get`.
    pub fn op(&self) -> &'static str {
        self.op
    }

    /// What it failed on, e.g. `host/repo:sha256-<hex>.att`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The registry's message (`HTTP 404 MANIFEST_UNKNOWN: manifest unknown`) or the transport
    /// error.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// HTTP status of the failing response, if there was one.
    pub fn status(&self) -> Option<u16> {
        self.status
    }
}

// ----- messages a tenant reads (issue 14, point 2) -----

/// The longest message a [`StorageError`] carries: it ends up in run conditions and Events,
/// which tenants read and which must stay small.
pub(crate) const MAX_MESSAGE_CHARS: usize = 512;

/// `text` as one short printable line: control characters (newlines, escapes, NUL) become
/// spaces, runs of whitespace one space, and it is cut at `max` characters (marked `…`).
/// Registry answers and transport errors are the registry's words: they may be anything.
pub(crate) fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max + 4));
    let mut chars = 0;
    let mut space = false;
    for c in text.chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' {
            if space || out.is_empty() {
                continue;
            }
            space = true;
        } else {
            space = false;
        }
        if chars == max {
            let trimmed = out.trim_end().len();
            out.truncate(trimmed);
            out.push('…');
            return out;
        }
        out.push(c);
        chars += 1;
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_short_printable_line() {
        assert_eq!(printable("a\n\r\tb\u{1b}[31m  c\0", 100), "a b [31m c");
        assert_eq!(printable("  x  ", 100), "x");
        assert_eq!(printable("abcdef", 3), "abc…");
        assert_eq!(printable("ab cdef", 3), "ab…");
        assert_eq!(printable("ééé", 3), "ééé");
        let e = StorageError::permanent("x", "r", "line1\nline2".repeat(1000));
        assert!(e.message().chars().count() <= MAX_MESSAGE_CHARS + 1);
        assert!(!e.message().contains('\n'));
    }
}
