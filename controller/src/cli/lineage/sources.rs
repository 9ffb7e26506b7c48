//! Where `provenant lineage` and `provenant revoke` read lineage from (docs/lineage.md, "Where
//! lineage comes from"): the signed records the controller keeps in its namespace, and
//! attestations in registry repositories, whole registries (their catalog) and OCI layouts.
//! A registry envelope counts only once it verifies with the key and is a statement about the
//! subject it is attached to (`crate::verify`); every other one is reported, never used.

use std::collections::HashMap;
use std::path::PathBuf;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use serde::Serialize;
use serde_json::Value;

use crate::client::{self, RateLimit};
use crate::lineage::{LineageEntry, LineageIndex};
use crate::provenance::revocation::{RevocationPredicate, RevocationStatement, Revocations};
use crate::provenance::statement::{SLSA_PROVENANCE_V1, STATEMENT_TYPE};
use crate::reconcile::publish::record;
use crate::signing::PublicKey;
use crate::signing::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE, verify_envelope};
use crate::storage::{
    self, ArtifactStore, FoundAttestation, LayoutStore, RegistryStore, Subject, listing,
};
use crate::verify::{self, Policy};

/// Subjects whose attestations are read at once.
const READ_CONCURRENCY: usize = 8;

/// A `--registry` argument: where to look for attestations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// `host[:port]/path`: one repository.
    Repository(String),
    /// `host[:port]`: every repository of the registry's catalog.
    Registry(String),
    /// `oci:DIR`: an OCI image layout.
    Layout(PathBuf),
}

impl Place {
    pub fn parse(text: &str) -> Result<Place, String> {
        let bad = |why: &str| {
            format!("--registry {text:?}: {why} (want host[:port], host[:port]/path or oci:DIR)")
        };
        if let Some(dir) = text.strip_prefix(storage::reference::LAYOUT_PREFIX) {
            if dir.is_empty() {
                return Err(bad("no directory after oci:"));
            }
            return Ok(Place::Layout(PathBuf::from(dir)));
        }
        if !text.contains('/') {
            // A registry host: checked as the host of a repository would be.
            storage::parse_reference(&format!("{text}/catalog")).map_err(|e| bad(e.message()))?;
            return Ok(Place::Registry(text.to_string()));
        }
        let reference = storage::parse_reference(text).map_err(|e| bad(e.message()))?;
        if reference.tag.is_some() || reference.digest.is_some() {
            return Err(bad("a repository, not a tag or digest, is read whole"));
        }
        Ok(Place::Repository(reference.repository()))
    }
}

/// Where a model's provenance was found: where a revocation of it is attached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    Repository(String),
    Layout(PathBuf),
}

impl Location {
    /// The repository as a [`Subject`] names it.
    pub fn repository(&self) -> String {
        match self {
            Location::Repository(r) => r.clone(),
            Location::Layout(dir) => {
                format!("{}{}", storage::reference::LAYOUT_PREFIX, dir.display())
            }
        }
    }
}

/// What was read from one source.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceReport {
    /// `cluster:<namespace>`, `oci:<dir>`, `host/path` or `host` (a catalog).
    pub source: String,
    /// Subjects with attestation tags (registries and layouts) or records (cluster) read.
    pub read: usize,
    /// Provenance statements that count (verified, or the controller's own records).
    pub provenance: usize,
    /// Verified revocation statements.
    pub revocations: usize,
    /// Envelopes that verify but carry another predicate type (SBOMs, ...): not lineage.
    pub ignored: usize,
    /// Envelopes or records not counted (listed in [`Lineage::rejected`]).
    pub rejected: usize,
}

/// An envelope or record that does not count, and why.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejected {
    /// Where it was found.
    pub at: String,
    /// `sha256:` of the envelope, when one was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envelope: Option<String>,
    pub reason: String,
}

/// Everything read: the index over the provenance that counts, the revocations in force by
/// model digest, and where each model's provenance was found.
#[derive(Debug, Default)]
pub struct Lineage {
    pub index: LineageIndex,
    pub revocations: HashMap<String, Revocations>,
    pub locations: HashMap<String, Vec<Location>>,
    pub sources: Vec<SourceReport>,
    pub rejected: Vec<Rejected>,
}

impl Lineage {
    /// The revocations in force for the model `digest`.
    pub fn revoked(&self, digest: &str) -> Vec<RevocationPredicate> {
        self.revocations
            .get(digest)
            .map(|r| r.active().into_iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Add the controller's records in `namespace` (kubeconfig as `kubectl` finds it). Records
    /// are the controller's own (tenants cannot write there): they count as they are.
    pub async fn read_cluster(&mut self, namespace: &str) -> Result<(), String> {
        let limit = RateLimit {
            qps: 50.0,
            burst: 100,
        };
        let (client, url) = client::connect(limit).await.map_err(|e| e.to_string())?;
        let api: Api<ConfigMap> = Api::namespaced(client, namespace);
        let (entries, unreadable) = record::lineage_entries(&api).await.map_err(|e| {
            let hint = if e.to_string().to_ascii_lowercase().contains("forbidden") {
                format!(
                    " (reading lineage needs list and get on configmaps in {namespace}: bind the provenant-lineage-reader Role)"
                )
            } else {
                String::new()
            };
            format!("cannot read the provenance records in {namespace} on {url}: {e}{hint}")
        })?;
        let report = SourceReport {
            source: format!("cluster:{namespace}"),
            read: entries.len() + unreadable.len(),
            provenance: entries.len(),
            rejected: unreadable.len(),
            ..SourceReport::default()
        };
        for (name, why) in unreadable {
            self.rejected.push(Rejected {
                at: format!("configmap {namespace}/{name}"),
                envelope: None,
                reason: why,
            });
        }
        for entry in entries {
            self.index.insert(entry);
        }
        self.sources.push(report);
        Ok(())
    }

    /// Add the attestations at `place`, verified with `key`.
    pub async fn read_place(
        &mut self,
        place: &Place,
        registry: &RegistryStore,
        key: &PublicKey,
    ) -> Result<(), String> {
        match place {
            Place::Layout(dir) => {
                let layout = LayoutStore::new(dir.clone());
                let tags = layout.tags().await.map_err(|e| e.to_string())?;
                let location = Location::Layout(dir.clone());
                self.read_subjects(&layout, &location, &tags, key).await;
            }
            Place::Repository(repository) => {
                let tags = registry.tags(repository).await.map_err(|e| e.to_string())?;
                let location = Location::Repository(repository.clone());
                self.read_subjects(registry, &location, &tags, key).await;
            }
            Place::Registry(host) => {
                let repositories = registry
                    .repositories(host)
                    .await
                    .map_err(|e| e.to_string())?;
                for repository in repositories {
                    let tags = registry
                        .tags(&repository)
                        .await
                        .map_err(|e| e.to_string())?;
                    let location = Location::Repository(repository);
                    self.read_subjects(registry, &location, &tags, key).await;
                }
            }
        }
        Ok(())
    }

    /// Read and check the attestations of every subject the tags name.
    async fn read_subjects(
        &mut self,
        store: &dyn ArtifactStore,
        location: &Location,
        tags: &[String],
        key: &PublicKey,
    ) {
        let repository = location.repository();
        let subjects = listing::attested_subjects(tags);
        let mut report = SourceReport {
            source: repository.clone(),
            read: subjects.len(),
            ..SourceReport::default()
        };
        let mut reads = futures::stream::iter(subjects.into_iter().map(|digest| {
            let subject = Subject::new(repository.clone(), digest);
            async move {
                let found = store.attestations(&subject).await;
                (subject, found)
            }
        }))
        .buffered(READ_CONCURRENCY);
        let now = Timestamp::now();
        while let Some((subject, found)) = reads.next().await {
            let found = match found {
                Ok(found) => found,
                Err(e) => {
                    report.rejected += 1;
                    self.rejected.push(Rejected {
                        at: subject.to_string(),
                        envelope: None,
                        reason: format!("its attestations cannot be read: {e}"),
                    });
                    continue;
                }
            };
            for attestation in &found {
                match check(&subject, attestation, key, now) {
                    Outcome::Provenance(entry) => {
                        report.provenance += 1;
                        let at = self.locations.entry(subject.digest.clone()).or_default();
                        if !at.contains(location) {
                            at.push(location.clone());
                        }
                        self.index.insert(*entry);
                    }
                    Outcome::Revocation(predicate) => {
                        report.revocations += 1;
                        self.revocations
                            .entry(subject.digest.clone())
                            .or_default()
                            .add(*predicate);
                    }
                    Outcome::Ignored => report.ignored += 1,
                    Outcome::Rejected(reason) => {
                        report.rejected += 1;
                        self.rejected.push(Rejected {
                            at: attestation.found_at(),
                            envelope: Some(attestation.digest.clone()),
                            reason,
                        });
                    }
                }
            }
        }
        self.sources.push(report);
    }
}

/// What one envelope found about a subject is.
enum Outcome {
    Provenance(Box<LineageEntry>),
    Revocation(Box<RevocationPredicate>),
    /// Verified, but neither provenance nor a revocation.
    Ignored,
    Rejected(String),
}

fn check(subject: &Subject, found: &FoundAttestation, key: &PublicKey, now: Timestamp) -> Outcome {
    let envelope = match Envelope::from_json(&found.envelope) {
        Ok(envelope) => envelope,
        Err(e) => return Outcome::Rejected(format!("not a DSSE envelope: {e}")),
    };
    // The signature first: nothing unverified is even parsed for its predicate type.
    let payload = match verify_envelope(&envelope, key) {
        Ok(payload) => payload,
        Err(e) => return Outcome::Rejected(format!("signature: {e}")),
    };
    if let Some(parsed) = RevocationStatement::parse(&payload) {
        return match parsed {
            Err(e) => Outcome::Rejected(format!("not a revocation statement: {e}")),
            Ok(_) if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE => Outcome::Rejected(format!(
                "payloadType is {:?}, not {IN_TOTO_PAYLOAD_TYPE}",
                envelope.payload_type
            )),
            Ok(s) if s.type_ != STATEMENT_TYPE => {
                Outcome::Rejected(format!("_type is {:?}, not {STATEMENT_TYPE}", s.type_))
            }
            Ok(s) if !s.is_about(&subject.digest) => Outcome::Rejected(format!(
                "the revocation is about another model than {}",
                subject.digest
            )),
            Ok(s) => Outcome::Revocation(Box::new(s.predicate)),
        };
    }
    let predicate_type = serde_json::from_slice::<Value>(&payload)
        .ok()
        .and_then(|v| v["predicateType"].as_str().map(String::from));
    if predicate_type.as_deref() != Some(SLSA_PROVENANCE_V1) {
        return Outcome::Ignored;
    }
    // The provenance checks `provenant verify` makes (signature, shape, subject), no policy.
    let verdict = verify::verify(
        &subject.repository,
        &subject.digest,
        &[(found.found_at(), found.envelope.clone())],
        key,
        &Policy::default(),
        now,
    );
    let Some(checked) = verdict.attestations.first() else {
        return Outcome::Rejected("not checked".into());
    };
    if !checked.verified() {
        return Outcome::Rejected(checked.failures.join("; "));
    }
    let Some(statement) = &checked.statement else {
        return Outcome::Rejected("no statement".into());
    };
    match LineageEntry::from_statement(statement) {
        Ok(mut entry) => {
            entry.envelope_digest = Some(found.digest.clone());
            Outcome::Provenance(Box::new(entry))
        }
        Err(e) => Outcome::Rejected(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_arguments() {
        assert_eq!(
            Place::parse("oci:out/layout"),
            Ok(Place::Layout("out/layout".into()))
        );
        assert_eq!(
            Place::parse("127.0.0.1:5000"),
            Ok(Place::Registry("127.0.0.1:5000".into()))
        );
        assert_eq!(
            Place::parse("reg.example.com/models/a"),
            Ok(Place::Repository("reg.example.com/models/a".into()))
        );
        for bad in [
            "oci:",
            "reg.example.com/a:v1",
            "models",
            "reg.example.com/UP",
        ] {
            let e = Place::parse(bad).unwrap_err();
            assert!(e.starts_with(&format!("--registry {bad:?}")), "{e}");
        }
    }
}
