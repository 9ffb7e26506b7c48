//! Lineage (DESIGN.md "Lineage and revocation", docs/lineage.md): which models came from which
//! datasets, images, base models and commits, read from the provenance provenant signed. An
//! [`LineageEntry`] is one run's inputs and models, derived from its signed statement; the
//! [`LineageIndex`] answers questions over all of them, transitively through base models.

pub mod entry;
pub mod index;
pub mod records;

pub use entry::{EntryError, Fact, Kind, LineageEntry, ModelRef, RunRef, pinned_digest};
pub use index::{Hit, LineageIndex, Query, Step, Upstream};

#[cfg(test)]
mod tests;
