//! The storage seam: resolving model artifacts and attaching signed attestations to them in the
//! cosign-compatible and OCI 1.1 layouts (DESIGN.md "Registry layout", docs/registry-layout.md),
//! in an OCI registry or an OCI image layout directory; pushing model directories as artifacts;
//! reading attestations back for `verify`.
//!
//! The controller holds an `Arc<dyn AttestationStore>`; the CLI an `Arc<dyn ArtifactStore>` from
//! [`open_store`]. Imports point one way, from the stores down:
//!
//! - `registry/` ([`RegistryStore`]) and `oci_layout/` ([`LayoutStore`]): the two stores, each a
//!   `Transport` the protocols below run over;
//! - `attach.rs` (the write protocol), `attach_bundle.rs` (a Sigstore bundle referrer),
//!   `discover.rs` (the read side), `listing.rs` (the subjects attestation tags name), `model.rs` (model packaging and push), `pull.rs` (a verified
//!   model's files into a directory): written once over a transport, so both stores write and
//!   read the same bytes;
//! - `referrer.rs` (a referrer and its layer as pushed), `transport.rs`, `reference.rs`: the
//!   transport trait, references;
//! - `store.rs` (the traits and their values), `oci.rs` and `sigstore_bundle.rs` (the formats),
//!   `encoding.rs` (which formats to write), `error.rs`, `op.rs`.

mod attach;
mod attach_bundle;
mod discover;
mod encoding;
mod error;
pub mod listing;
pub mod model;
pub mod model_files;
pub mod model_signature;
pub mod oci;
pub mod oci_layout;
pub mod op;
pub mod pull;
pub mod reference;
mod referrer;
pub mod registry;
pub mod sigstore_bundle;
mod store;
mod transport;

use std::sync::Arc;

pub use encoding::Encoding;
pub use error::{ErrorKind, StorageError};
pub use model::ModelArtifact;
pub use model_files::{ModelLayer, model_layers};
pub use oci_layout::LayoutStore;
pub use pull::{ManifestBytes, PullError, Pulled, PulledFile};
pub use reference::{Location, Reference, parse_reference};
pub use registry::{
    Credential, DockerConfig, Observer, RegistryOptions, RegistryStore, RetryPolicy,
};
pub use store::{
    ArtifactStore, Attached, Attestation, AttestationStore, BundleAttestation, FoundAttestation,
    FoundModelSignature, ResolvedArtifact, SimpleSignature, Subject, Via,
};

/// The store a reference lives in: a [`LayoutStore`] on its directory, or a [`RegistryStore`]
/// with `options`.
pub fn open_store(reference: &Reference, options: RegistryOptions) -> Arc<dyn ArtifactStore> {
    match &reference.location {
        Location::Layout(dir) => Arc::new(LayoutStore::new(dir.clone())),
        Location::Registry(_) => Arc::new(RegistryStore::new(options)),
    }
}
