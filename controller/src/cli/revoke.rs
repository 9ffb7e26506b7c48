//! `provenant revoke`: the local counterpart of a MaterialRevocation (docs/lineage.md,
//! "provenant revoke"), for registries and layouts no controller watches. Finds the models that
//! depend on a dataset, an image or a model in the lineage read from `--registry` (verified with
//! the key's public key, as `provenant lineage` reads it), signs one revocation statement per
//! model and attaches it beside the model's provenance, where that was found.

use std::process::ExitCode;

use jiff::Timestamp;
use serde::Serialize;

use super::lineage::sources::{Lineage, Location, Rejected, SourceReport};
use super::lineage::{digest_arg, model_arg, places, read, render};
use super::{OutputFormat, registry_options, runtime};
use crate::engine::revocation;
use crate::lineage::{Hit, Query, Step};
use crate::provenance::revocation::{
    Material, MaterialType, RevocationRef, RevocationStatement, State,
};
use crate::signing::CosignKey;
use crate::storage::{AttestationStore, LayoutStore, RegistryStore, Subject};
use crate::{out, outln};

/// `issuer` of the statements `provenant revoke` signs.
pub const ISSUER: &str = "https://provenant.dev/revoke/v1";

/// `provenant revoke`.
#[derive(clap::Args, Debug)]
#[command(group(
    clap::ArgGroup::new("material")
        .required(true)
        .args(["dataset", "image", "model"])
))]
pub struct RevokeArgs {
    /// Revoke the models trained on this dataset (`sha256:<hex>`), through base models.
    #[arg(long, value_name = "sha256:…")]
    pub dataset: Option<String>,
    /// Revoke the models trained with this image (`sha256:<hex>`), through base models.
    #[arg(long, value_name = "sha256:…")]
    pub image: Option<String>,
    /// Revoke this model (`REF@sha256:<hex>` or `sha256:<hex>`) and every model trained from it.
    #[arg(long, value_name = "REF@sha256:…")]
    pub model: Option<String>,
    /// Why (recorded in each statement).
    #[arg(long)]
    pub reason: String,
    /// URL of the advisory.
    #[arg(long, value_name = "URL")]
    pub advisory: Option<String>,
    /// Name of the revocation (default: revoke-<type>-<first 12 hex digits>).
    #[arg(long)]
    pub name: Option<String>,
    /// Cosign private key (cosign.key): signs the revocations; its public key verifies the
    /// lineage read.
    #[arg(long)]
    pub key: std::path::PathBuf,
    /// Environment variable holding the key's password (empty when unset).
    #[arg(long, default_value = "COSIGN_PASSWORD")]
    pub password_env: String,
    /// Where the models' provenance is, and where the revocations go: `host[:port]/path`,
    /// `host[:port]` (its catalog) or `oci:DIR` (repeatable, at least one).
    #[arg(long = "registry", value_name = "REF", required = true)]
    pub registries: Vec<String>,
    /// Registries (host:port) reached over plain HTTP.
    #[arg(long = "insecure-registry")]
    pub insecure: Vec<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// One model revoked (or not).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revoked {
    pub reference: String,
    pub path: Vec<Step>,
    /// Where the statement was attached.
    pub attached: Vec<String>,
    /// Why it could not be attached (somewhere).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    revocation: &'a RevocationRef,
    material: &'a Material,
    issuer: &'static str,
    time: &'a str,
    models: Vec<Revoked>,
    sources: &'a [SourceReport],
    rejected: &'a [Rejected],
}

fn material(args: &RevokeArgs) -> Result<Material, String> {
    let (type_, digest) = match (&args.dataset, &args.image, &args.model) {
        (Some(d), _, _) => (MaterialType::Dataset, digest_arg("--dataset", d)?),
        (_, Some(i), _) => (MaterialType::Image, digest_arg("--image", i)?),
        (_, _, Some(m)) => (MaterialType::Model, model_arg("--model", m)?),
        _ => return Err("give one of --dataset, --image, --model".into()),
    };
    Ok(Material { type_, digest })
}

fn revocation_ref(args: &RevokeArgs, material: &Material) -> Result<RevocationRef, String> {
    let reason = args.reason.trim();
    if reason.is_empty() {
        return Err("--reason: empty (say why the material is revoked)".into());
    }
    if let Some(a) = &args.advisory
        && !(a.starts_with("https://") || a.starts_with("http://"))
    {
        return Err(format!("--advisory {a:?}: expected an http(s) URL"));
    }
    let hex = material.digest.trim_start_matches("sha256:");
    let name = match &args.name {
        Some(n) if n.trim().is_empty() => return Err("--name: empty".into()),
        Some(n) => n.trim().to_string(),
        None => format!("revoke-{}-{}", material.type_.word(), &hex[..12]),
    };
    Ok(RevocationRef {
        name,
        uid: uuid::Uuid::new_v4().to_string(),
        reason: reason.to_string(),
        advisory: args.advisory.clone(),
    })
}

/// The models the revocation reaches.
fn affected(lineage: &Lineage, material: &Material) -> Vec<Hit> {
    let index = &lineage.index;
    match material.type_ {
        MaterialType::Dataset => index.find(&Query::Dataset(material.digest.clone()), true),
        MaterialType::Image => index.find(&Query::Image(material.digest.clone()), true),
        MaterialType::Model => index.model_and_descendants(&material.digest),
    }
}

async fn revoke_one(
    statement: &RevocationStatement,
    key: &CosignKey,
    locations: &[Location],
    registry: &RegistryStore,
) -> (Vec<String>, Vec<String>) {
    let (mut attached, mut errors) = (Vec::new(), Vec::new());
    if locations.is_empty() {
        errors.push("its provenance was not found in the --registry sources: not attached".into());
        return (attached, errors);
    }
    let signed = match revocation::sign(statement, key) {
        Ok(signed) => signed,
        Err(e) => return (attached, vec![e.to_string()]),
    };
    for location in locations {
        // Beside the model's provenance: the repository it was found in, whatever the name in
        // the statement (a model copied to another registry keeps its signed name).
        let mut attestation = signed.clone();
        attestation.subject = Subject::new(location.repository(), signed.subject.digest.clone());
        let result = match location {
            Location::Layout(dir) => {
                let layout = LayoutStore::new(dir.clone());
                revocation::attach(&attestation, &layout as &dyn AttestationStore).await
            }
            Location::Repository(_) => revocation::attach(&attestation, registry).await,
        };
        match result {
            Ok(references) => attached.extend(references),
            Err(e) => errors.push(format!("{}: {e}", location.repository())),
        }
    }
    (attached, errors)
}

/// `provenant revoke`: 0 every affected model revoked (or none affected), 2 usage, a source
/// unreadable, or a revocation not attached.
pub fn revoke(args: RevokeArgs) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = rt.block_on(async {
        let material = material(&args)?;
        let revocation = revocation_ref(&args, &material)?;
        let places = places(&args.registries)?;
        let pem = std::fs::read(&args.key)
            .map_err(|e| format!("cannot read key {}: {e}", args.key.display()))?;
        let password = std::env::var(&args.password_env).unwrap_or_default();
        let key = CosignKey::from_pem(&args.key.display().to_string(), &pem, password.as_bytes())
            .map_err(|e| e.to_string())?;
        let lineage = read(&places, Some(key.public_key()), None, &args.insecure).await?;
        let time = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let registry = RegistryStore::new(registry_options(&args.insecure));
        let mut models = Vec::new();
        for hit in affected(&lineage, &material) {
            let statement = RevocationStatement::new(
                &hit,
                State::Revoked,
                revocation.clone(),
                material.clone(),
                ISSUER,
                &time,
            );
            let locations = lineage
                .locations
                .get(&hit.model.digest)
                .cloned()
                .unwrap_or_default();
            let (attached, errors) = revoke_one(&statement, &key, &locations, &registry).await;
            models.push(Revoked {
                reference: hit.model.reference(),
                path: hit.path,
                attached,
                errors,
            });
        }
        Ok::<_, String>((material, revocation, time, lineage, models))
    });
    let (material, revocation, time, lineage, models) = match result {
        Ok(done) => done,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let failed = models.iter().any(|m| !m.errors.is_empty());
    let report = Report {
        revocation: &revocation,
        material: &material,
        issuer: ISSUER,
        time: &time,
        models,
        sources: &lineage.sources,
        rejected: &lineage.rejected,
    };
    match args.output {
        OutputFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        OutputFormat::Text => {
            eprint!("{}", render::notes(&lineage.sources, &lineage.rejected));
            out!("{}", text(&report));
        }
    }
    if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn text(report: &Report) -> String {
    let what = format!(
        "{} {}",
        report.material.type_.word(),
        report.material.digest
    );
    if report.models.is_empty() {
        return format!("no model depends on {what}: nothing to revoke\n");
    }
    let mut out = format!(
        "revocation {} (uid {}): {what}: {}\n",
        report.revocation.name, report.revocation.uid, report.revocation.reason
    );
    for m in &report.models {
        let state = if m.errors.is_empty() {
            "revoked"
        } else {
            "NOT REVOKED"
        };
        out.push_str(&format!("{state:<12}{}\n", m.reference));
        for r in &m.attached {
            out.push_str(&format!("            attached {r}\n"));
        }
        for e in &m.errors {
            out.push_str(&format!("            error: {e}\n"));
        }
    }
    out
}
