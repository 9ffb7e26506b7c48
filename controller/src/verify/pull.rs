//! `provenant verify --pull DIR`: once the verdict says verified, the model's files are written
//! into DIR ([`storage::pull`]); a model whose files cannot be written as attested is not
//! verified after all.

use std::path::Path;

use super::Verdict;
use crate::storage::{self, ArtifactStore, ManifestBytes, PullError, Subject};

/// Pulls the model of `subject` (its manifest `manifest`, read by the verified digest) into `dir`
/// when `verdict` is verified; a refused file fails the verdict. `Err`: DIR or the store failed.
pub async fn if_verified(
    verdict: Verdict,
    store: &dyn ArtifactStore,
    subject: &Subject,
    manifest: &ManifestBytes,
    dir: &Path,
) -> Result<Verdict, String> {
    if !verdict.verified {
        return Ok(verdict);
    }
    match storage::pull::pull_model(store, subject, &manifest.bytes, dir).await {
        Ok(pulled) => {
            let bytes: u64 = pulled.files.iter().map(|f| f.size).sum();
            let (n, dir) = (pulled.files.len(), dir.display());
            // On stderr: stdout is the verdict (`--output json` stays one document).
            if pulled.already_there {
                eprintln!(
                    "{dir} already holds this model: {n} files ({bytes} bytes) re-checked, nothing written"
                );
            } else {
                eprintln!("pulled {n} files ({bytes} bytes) into {dir}");
            }
            Ok(verdict)
        }
        Err(PullError::Refused(why)) => Ok(verdict.with_content_failures(vec![why])),
        Err(e) => Err(e.to_string()),
    }
}
