//! `provenant lineage`: which models came from a dataset, an image, a base model or a commit,
//! what went into a model, and what was trained from it (docs/lineage.md, "Queries"). Reads the
//! controller's records in the cluster, or with `--registry` attestations verified with `--key`
//! (`sources`); answers with the [`LineageIndex`](crate::lineage::LineageIndex); prints a table
//! or JSON (`render`).

pub mod render;
pub mod sources;

use std::path::PathBuf;
use std::process::ExitCode;

use self::render::{Answer, ModelAnswer, Question, UpstreamAnswer};
use self::sources::{Lineage, Place};
use super::{OutputFormat, registry_options, runtime};
use crate::lineage::{Hit, Query};
use crate::signing::PublicKey;
use crate::storage::RegistryStore;
use crate::{out, outln};

/// `provenant lineage`.
#[derive(clap::Args, Debug)]
#[command(group(
    clap::ArgGroup::new("question")
        .required(true)
        .args(["dataset", "image", "base_model", "code", "model"])
))]
pub struct LineageArgs {
    /// Models trained on this dataset: `sha256:<hex>` or the dataset's name.
    #[arg(long, value_name = "sha256:…|NAME")]
    pub dataset: Option<String>,
    /// Models trained with this image: `sha256:<hex>`, a reference pinned by digest, or the
    /// reference as the spec wrote it.
    #[arg(long, value_name = "sha256:…|REF")]
    pub image: Option<String>,
    /// Models trained from this base model (`sha256:<hex>`).
    #[arg(long, value_name = "sha256:…")]
    pub base_model: Option<String>,
    /// Models trained from this source commit (the full id).
    #[arg(long, value_name = "COMMIT")]
    pub code: Option<String>,
    /// What went into this model, recursively through base models (`REF@sha256:<hex>` or
    /// `sha256:<hex>`); with --descendants, every model trained from it.
    #[arg(long, value_name = "REF@sha256:…")]
    pub model: Option<String>,
    /// With --model: the models trained from it, directly or through base models.
    #[arg(long)]
    pub descendants: bool,
    /// Only the runs that used it directly, not the models trained from those (not with
    /// --model).
    #[arg(long)]
    pub direct: bool,
    /// Read attestations here instead of the cluster: `host[:port]/path` (a repository),
    /// `host[:port]` (every repository of its catalog) or `oci:DIR` (repeatable).
    #[arg(long = "registry", value_name = "REF", requires = "key")]
    pub registries: Vec<String>,
    /// Public key (cosign.pub) the attestations must verify with (with --registry).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Also read the cluster's records when --registry is given.
    #[arg(long)]
    pub cluster: bool,
    /// Namespace of the controller, where its signed records are.
    #[arg(long, default_value = "provenant-system")]
    pub controller_namespace: String,
    /// Registries (host:port) reached over plain HTTP.
    #[arg(long = "insecure-registry")]
    pub insecure: Vec<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// A `sha256:<hex>` digest given to `flag`, lowercased.
pub fn digest_arg(flag: &str, text: &str) -> Result<String, String> {
    let lower = text.trim().to_ascii_lowercase();
    match lower.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(lower),
        _ => Err(format!(
            "{flag} {text:?}: expected a digest sha256:<64 hex digits>"
        )),
    }
}

/// `--model REF@sha256:<hex>` or `--model sha256:<hex>`: the digest.
pub fn model_arg(flag: &str, text: &str) -> Result<String, String> {
    let digest = text.rsplit_once('@').map_or(text, |(_, d)| d);
    digest_arg(flag, digest).map_err(|_| {
        format!("{flag} {text:?}: expected REF@sha256:<64 hex digits> or sha256:<64 hex digits>")
    })
}

/// What the arguments ask.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ask {
    Dependents(Query),
    Descendants(String),
    Upstream(String),
}

fn ask(args: &LineageArgs) -> Result<(Ask, Question), String> {
    // Checked here, not by clap: its `requires` does not hold beside the question group.
    if args.descendants && args.model.is_none() {
        return Err(
            "--descendants: only with --model (the model whose descendants to list)".into(),
        );
    }
    if args.direct && args.model.is_some() {
        return Err(
            "--direct: not with --model (upstream and descendants follow base models)".into(),
        );
    }
    let named = |flag: &str, text: &str| -> Result<String, String> {
        if text.trim().is_empty() {
            return Err(format!("{flag}: empty"));
        }
        if text.starts_with("sha256:") {
            return digest_arg(flag, text);
        }
        Ok(text.to_string())
    };
    let question = |kind, value: &str, direction| Question {
        kind,
        value: value.to_string(),
        direction,
        transitive: !args.direct,
    };
    let (ask, q) = if let Some(d) = &args.dataset {
        let key = named("--dataset", d)?;
        (
            Ask::Dependents(Query::Dataset(key.clone())),
            question("dataset", &key, "dependents"),
        )
    } else if let Some(i) = &args.image {
        let key = named("--image", i)?;
        (
            Ask::Dependents(Query::Image(key.clone())),
            question("image", &key, "dependents"),
        )
    } else if let Some(b) = &args.base_model {
        let key = digest_arg("--base-model", b)?;
        (
            Ask::Dependents(Query::BaseModel(key.clone())),
            question("baseModel", &key, "dependents"),
        )
    } else if let Some(c) = &args.code {
        let commit = c.trim().to_ascii_lowercase();
        if !matches!(commit.len(), 40 | 64) || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "--code {c:?}: expected a full commit id (40 or 64 hex digits)"
            ));
        }
        (
            Ask::Dependents(Query::Code(commit.clone())),
            question("code", &commit, "dependents"),
        )
    } else if let Some(m) = &args.model {
        let digest = model_arg("--model", m)?;
        if args.descendants {
            let mut q = question("model", &digest, "descendants");
            q.transitive = true;
            (Ask::Descendants(digest), q)
        } else {
            let mut q = question("model", &digest, "upstream");
            q.transitive = true;
            (Ask::Upstream(digest), q)
        }
    } else {
        return Err(
            "give one question: --dataset, --image, --base-model, --code or --model".into(),
        );
    };
    Ok((ask, q))
}

/// The `--registry` arguments, checked.
pub fn places(registries: &[String]) -> Result<Vec<Place>, String> {
    registries.iter().map(|r| Place::parse(r)).collect()
}

/// Read every source the arguments name.
pub async fn read(
    places: &[Place],
    key: Option<&PublicKey>,
    cluster: Option<&str>,
    insecure: &[String],
) -> Result<Lineage, String> {
    let mut lineage = Lineage::default();
    if let Some(namespace) = cluster {
        lineage.read_cluster(namespace).await?;
    }
    if !places.is_empty() {
        let key = key.ok_or("--key is required with --registry")?;
        let store = RegistryStore::new(registry_options(insecure));
        for place in places {
            lineage.read_place(place, &store, key).await?;
        }
    }
    Ok(lineage)
}

/// The public key file given to `--key`.
pub fn public_key(path: &std::path::Path) -> Result<PublicKey, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read key {}: {e}", path.display()))?;
    PublicKey::from_pem_named(&path.display().to_string(), &pem).map_err(|e| e.to_string())
}

fn model_answers(hits: Vec<Hit>, lineage: &Lineage) -> Vec<ModelAnswer> {
    hits.into_iter()
        .map(|h| ModelAnswer {
            reference: h.model.reference(),
            direct: h.direct(),
            revoked: lineage.revoked(&h.model.digest),
            model: h.model,
            path: h.path,
        })
        .collect()
}

/// `provenant lineage`: 0 answered (also when nothing matches), 2 usage or a source unreadable.
pub fn lineage(args: LineageArgs) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = rt.block_on(async {
        let (ask, question) = ask(&args)?;
        let places = places(&args.registries)?;
        let key = args.key.as_deref().map(public_key).transpose()?;
        let cluster = (args.registries.is_empty() || args.cluster)
            .then_some(args.controller_namespace.as_str());
        let lineage = read(&places, key.as_ref(), cluster, &args.insecure).await?;
        Ok::<_, String>((ask, question, lineage))
    });
    let (ask, question, lineage) = match result {
        Ok(read) => read,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let index = &lineage.index;
    let revoked = |d: &str| lineage.revoked(d);
    let (models, upstream) = match &ask {
        Ask::Dependents(query) => (
            Some(model_answers(index.find(query, !args.direct), &lineage)),
            None,
        ),
        Ask::Descendants(digest) => (
            Some(model_answers(index.descendants(digest), &lineage)),
            None,
        ),
        Ask::Upstream(digest) => (
            None,
            Some(
                index
                    .upstream(digest)
                    .map(|u| UpstreamAnswer::new(u, &revoked)),
            ),
        ),
    };
    let answer = Answer {
        question,
        models,
        upstream,
        sources: &lineage.sources,
        rejected: &lineage.rejected,
    };
    match args.output {
        OutputFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        ),
        OutputFormat::Text => {
            eprint!("{}", render::notes(&lineage.sources, &lineage.rejected));
            out!("{}", render::text(&answer));
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_commits_are_checked_naming_the_flag() {
        let d = format!("sha256:{}", "A".repeat(64));
        assert_eq!(digest_arg("--x", &d), Ok(d.to_ascii_lowercase()));
        assert!(
            digest_arg("--base-model", "sha256:abc")
                .unwrap_err()
                .starts_with("--base-model")
        );
        let hex = "b".repeat(64);
        assert_eq!(
            model_arg("--model", &format!("reg.io/m@sha256:{hex}")),
            Ok(format!("sha256:{hex}"))
        );
        assert!(
            model_arg("--model", "reg.io/m:v1")
                .unwrap_err()
                .starts_with("--model")
        );
    }
}
