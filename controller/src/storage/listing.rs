//! The subjects a store holds attestations about, read off its tag names (`provenant lineage`):
//! cosign's `sha256-<hex>.att` and the OCI 1.1 referrers fallback index `sha256-<hex>`
//! (docs/registry-layout.md). The tags list where to look; what counts is the attestations read
//! and verified there, never the tag names themselves.

use super::oci;

/// The subject digest a tag names, if it is an attestation or fallback-index tag.
pub fn attested_subject(tag: &str) -> Option<String> {
    let rest = tag.strip_prefix("sha256-")?;
    let hex = rest.strip_suffix(".att").unwrap_or(rest);
    let digest = format!("sha256:{hex}");
    oci::sha256_hex(&digest).is_some().then_some(digest)
}

/// The subject digests the tags name, sorted, each once.
pub fn attested_subjects<'a>(tags: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut subjects: Vec<String> = tags
        .into_iter()
        .filter_map(|t| attested_subject(t))
        .collect();
    subjects.sort();
    subjects.dedup();
    subjects
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attestation_and_fallback_tags_name_their_subject() {
        let hex = "ab".repeat(32);
        let tags: Vec<String> = [
            format!("sha256-{hex}.att"),
            format!("sha256-{hex}"),
            format!("sha256-{hex}.sig"),
            "v1".into(),
            format!("sha256-{}.att", "AB".repeat(32)),
            "sha256-abc.att".into(),
        ]
        .into();
        assert_eq!(attested_subjects(&tags), vec![format!("sha256:{hex}")]);
    }
}
