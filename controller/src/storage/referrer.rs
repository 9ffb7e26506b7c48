//! What the attach protocol pushes as an OCI 1.1 referrer (`attach.rs`, `attach_bundle.rs`): the
//! serialized manifest, its fallback-index entry, and its one layer blob.

use super::error::StorageError;
use super::oci::Descriptor;
use super::transport::{Blob, Transport};
use crate::observe::sha256_digest;

/// A blob that is new by construction (an envelope, a simple-signing payload, a Sigstore bundle:
/// unique per attestation), so it is uploaded without asking first: that HEAD would be a 404 in
/// practice, and re-uploading content the store has is accepted. Uploaded once per attach even
/// though two concurrent writes (the `.att` layer, the referrer) need the envelope.
pub(super) struct NewBlob<'a> {
    bytes: &'a [u8],
    pub(super) digest: String,
    stored: tokio::sync::OnceCell<()>,
}

impl<'a> NewBlob<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        NewBlob {
            bytes,
            digest: sha256_digest(bytes),
            stored: tokio::sync::OnceCell::new(),
        }
    }

    /// Uploads it unless this attach did; `again`: upload anyway (the store said it is unknown).
    pub(super) async fn store(&self, t: &dyn Transport, again: bool) -> Result<(), StorageError> {
        let upload = || t.put_blob(&self.digest, Blob::Bytes(self.bytes));
        if again {
            return upload().await;
        }
        self.stored.get_or_try_init(upload).await.map(|_| ())
    }
}

/// An OCI 1.1 referrer with one layer (a DSSE envelope, a Sigstore bundle), serialized.
pub(super) struct Referrer<'a> {
    pub(super) bytes: Vec<u8>,
    pub(super) digest: String,
    /// The subject's digest (what a store indexing the referrer reports in `OCI-Subject`).
    pub(super) subject: String,
    /// Its one layer's blob.
    pub(super) layer: &'a NewBlob<'a>,
    /// Its fallback-index entry.
    pub(super) entry: Descriptor,
}

impl<'a> Referrer<'a> {
    /// The referrer serialized as `bytes`, about `subject`, listed as `entry`.
    pub(super) fn new(
        bytes: Vec<u8>,
        subject: String,
        layer: &'a NewBlob<'a>,
        entry: Descriptor,
    ) -> Self {
        Referrer {
            digest: sha256_digest(&bytes),
            bytes,
            subject,
            layer,
            entry,
        }
    }
}
