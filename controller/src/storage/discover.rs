//! The read side of `provenant verify`: what the stores find about a subject
//! ([`ArtifactStore::attestations`](super::ArtifactStore::attestations)).

use std::fmt;

/// How an attestation was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    /// A DSSE layer of the cosign tag `sha256-<hex>.att`.
    Att,
    /// An OCI 1.1 referrer with `artifactType` `application/vnd.in-toto+json`, listed by the
    /// referrers API or, without one, the fallback index `sha256-<hex>`.
    Referrer,
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Via::Att => "cosign .att",
            Via::Referrer => "OCI referrer",
        })
    }
}

/// One DSSE envelope found about a subject. The same envelope reached both ways (provenant
/// writes both) is one entry with both [`Via`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundAttestation {
    /// The envelope's exact bytes (checked against the digest they were stored under).
    pub envelope: Vec<u8>,
    /// `sha256:` of `envelope`.
    pub digest: String,
    /// From the layer's annotation (`predicateType`, `in-toto.io/predicate-type`), if any. Only
    /// a hint: the signed statement inside the envelope is what counts.
    pub predicate_type: Option<String>,
    /// Every way it was found, in the order found (`.att` first).
    pub via: Vec<Via>,
    /// Where it was found first: `REPO:sha256-<hex>.att`, or `REPO@<referrer digest>`.
    pub reference: String,
}
