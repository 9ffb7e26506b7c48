//! The tools security teams already run accept what the controller attached to a model in a real
//! registry (distribution 2.8, no referrers API): `cosign verify` (the `.sig`), `cosign
//! verify-attestation --type slsaprovenance1` (the `.att`), `cosign tree`, and `oras discover`
//! (the OCI 1.1 referrer, through the fallback tag). Every check also fails on a tampered layer,
//! and the signature checks on a wrong key. docs/verify.md shows these commands and their output.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::ResourceExt;
use provenant::api::ProvenanceState;
use provenant_testbed::registry::{Descriptor, sha256_digest};
use provenant_testbed::tools;
use serde_json::{Value, json};

use crate::provenance::{MODEL_REPO, World};
use crate::support::*;

const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const IN_TOTO: &str = "application/vnd.in-toto+json";

/// What the checks expect of one attached model.
struct Expected {
    /// `host/repo@sha256:...` of the model.
    reference: String,
    digest: String,
    /// Digest of the DSSE envelope the controller signed and recorded in the run's status.
    envelope_digest: String,
    /// The run's UID: the statement's `invocationId`.
    invocation_id: String,
    /// HOME of the tools.
    home: PathBuf,
}

/// Why a check refused: the tool's exit status and output, or what its output lacked.
type Refusal = String;

/// Runs a tool; Ok(stdout) on exit 0, else the exit status and everything it printed. A tool
/// that cannot be started fails the test. (tokio's Command: the registry proxy lives on this
/// test's runtime and must keep serving.)
async fn run_tool(e: &Expected, name: &str, args: &[&str]) -> Result<String, Refusal> {
    let path = tools::path(name).unwrap_or_else(|e| panic!("{e:#}"));
    let out = tokio::process::Command::new(path)
        .args(args)
        // cosign's cache and oras's config: this test's, nothing of the user's.
        .env("HOME", &e.home)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() {
        return Ok(stdout);
    }
    Err(format!(
        "{name} {}: {}\n{stdout}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn json(what: &str, text: &str) -> Result<Value, Refusal> {
    serde_json::from_str(text).map_err(|e| format!("{what}: not JSON ({e}): {text}"))
}

/// `cosign verify`: the simple signing `.sig` over the model verifies with `key` and names it.
async fn cosign_verify(e: &Expected, key: &Path) -> Result<(), Refusal> {
    let key = key.to_str().unwrap();
    let args = [
        "verify",
        "--key",
        key,
        "--insecure-ignore-tlog=true",
        &e.reference,
    ];
    let payloads = json("cosign verify", run_tool(e, "cosign", &args).await?.trim())?;
    let signed = &payloads[0]["critical"]["image"]["docker-manifest-digest"];
    if signed != e.digest.as_str() {
        return Err(format!(
            "cosign verify: signed digest {signed}, expected {}",
            e.digest
        ));
    }
    Ok(())
}

/// `cosign verify-attestation --type slsaprovenance1`: the `.att` verifies with `key`, and the
/// statement it prints is the run's SLSA v1 provenance for the model.
async fn cosign_verify_attestation(e: &Expected, key: &Path) -> Result<(), Refusal> {
    let key = key.to_str().unwrap();
    let args = [
        "verify-attestation",
        "--key",
        key,
        "--insecure-ignore-tlog=true",
        "--type",
        "slsaprovenance1",
        &e.reference,
    ];
    let out = run_tool(e, "cosign", &args).await?;
    let envelope = json(
        "cosign verify-attestation",
        out.lines().next().unwrap_or_default(),
    )?;
    let payload = STANDARD
        .decode(envelope["payload"].as_str().unwrap_or_default())
        .map_err(|err| format!("payload is not base64: {err}"))?;
    let statement = json("the statement", &String::from_utf8_lossy(&payload))?;
    let subject = &statement["subject"][0]["digest"]["sha256"];
    let invocation = &statement["predicate"]["runDetails"]["metadata"]["invocationId"];
    if subject != e.digest.trim_start_matches("sha256:")
        || invocation != e.invocation_id.as_str()
        || statement["predicateType"] != "https://slsa.dev/provenance/v1"
    {
        return Err(format!(
            "cosign verify-attestation: statement for {subject}, invocation {invocation}"
        ));
    }
    Ok(())
}

/// `cosign tree`: lists the `.att` (with the recorded envelope), the `.sig`, and the envelope as
/// an OCI referrer.
async fn cosign_tree(e: &Expected) -> Result<(), Refusal> {
    let out = run_tool(e, "cosign", &["tree", &e.reference]).await?;
    // Every `🍒 sha256:...` entry, under the section header line above it.
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for line in out.lines() {
        let entry = line.trim_start_matches([' ', '│', '└', '├', '─']).trim();
        match (entry.strip_prefix("🍒 "), sections.last_mut()) {
            (Some(digest), Some((_, entries))) => entries.push(digest.to_string()),
            _ if line.starts_with("└── ") => sections.push((line.to_string(), Vec::new())),
            _ => {}
        }
    }
    let section = |header: &str| -> Vec<String> {
        sections
            .iter()
            .filter(|(h, _)| h.contains(header))
            .flat_map(|(_, entries)| entries.clone())
            .collect()
    };
    let att = section("Attestations for an image tag");
    let sig = section("Signatures for an image tag");
    // (The model signature, model_signing.rs, is another referrer section.)
    let referrer = section("application/vnd.in-toto+json artifacts via OCI referrer");
    let envelope = [e.envelope_digest.clone()];
    if att != envelope || sig.len() != 1 || referrer != envelope {
        return Err(format!(
            "cosign tree: .att {att:?}, .sig {sig:?}, referrer {referrer:?}; expected the \
             envelope {}:\n{out}",
            e.envelope_digest
        ));
    }
    Ok(())
}

/// `oras discover`: finds the in-toto referrer of the model (through the fallback tag, the
/// registry has no referrers API), and `oras manifest fetch` shows it holds the recorded envelope.
async fn oras_discover(e: &Expected) -> Result<(), Refusal> {
    let args = ["discover", "--plain-http", "--format", "json", &e.reference];
    let tree = json("oras discover", &run_tool(e, "oras", &args).await?)?;
    let referrers: Vec<&Value> = tree["referrers"]
        .as_array()
        .map(|r| r.iter().filter(|r| r["artifactType"] == IN_TOTO).collect())
        .unwrap_or_default();
    let [referrer] = referrers.as_slice() else {
        return Err(format!("oras discover: in-toto referrers {referrers:?}"));
    };
    let repository = e.reference.split('@').next().unwrap();
    let manifest = format!("{repository}@{}", referrer["digest"].as_str().unwrap_or(""));
    let args = ["manifest", "fetch", "--plain-http", &manifest];
    let fetched = json("oras manifest fetch", &run_tool(e, "oras", &args).await?)?;
    let layer = &fetched["layers"][0];
    if layer["mediaType"] != DSSE
        || layer["digest"] != e.envelope_digest.as_str()
        || fetched["subject"]["digest"] != e.digest.as_str()
    {
        return Err(format!(
            "oras: referrer {manifest} holds {layer}, subject {}",
            fetched["subject"]
        ));
    }
    Ok(())
}

/// Every check, by name.
async fn checks(e: &Expected, key: &Path) -> Vec<(&'static str, Result<(), Refusal>)> {
    vec![
        ("cosign verify", cosign_verify(e, key).await),
        (
            "cosign verify-attestation",
            cosign_verify_attestation(e, key).await,
        ),
        ("cosign tree", cosign_tree(e).await),
        ("oras discover", oras_discover(e).await),
    ]
}

/// An attacker with push rights to the repository rewrites `reference` (a tag or a digest) with
/// its first layer of `media_type` replaced by `edit(layer)`; the rest of the manifest, the
/// signature annotation included, is kept. Returns the new manifest's descriptor.
async fn replace_layer(
    world: &World,
    reference: &str,
    media_type: &str,
    edit: impl Fn(&[u8]) -> Result<Vec<u8>>,
) -> Result<Descriptor> {
    let registry = &world.registry;
    let fetched = registry
        .get_manifest(MODEL_REPO, reference)
        .await?
        .with_context(|| format!("no manifest {reference}"))?;
    let mut manifest = fetched.json()?;
    let layer = manifest["layers"]
        .as_array_mut()
        .and_then(|layers| layers.iter_mut().find(|l| l["mediaType"] == media_type))
        .with_context(|| format!("{reference} has no {media_type} layer"))?;
    let blob = registry
        .get_blob(MODEL_REPO, layer["digest"].as_str().unwrap())
        .await?
        .context("layer blob")?;
    let tampered = edit(&blob)?;
    layer["digest"] = json!(registry.push_blob(MODEL_REPO, &tampered).await?);
    layer["size"] = json!(tampered.len());
    let bytes = serde_json::to_vec(&manifest)?;
    let tag = if reference.starts_with("sha256:") {
        sha256_digest(&bytes)
    } else {
        reference.to_string()
    };
    registry
        .push_manifest(MODEL_REPO, &tag, &fetched.media_type, &bytes)
        .await?;
    Ok(Descriptor::of(&fetched.media_type, &bytes))
}

/// The statement says seed 9999; the signature is the controller's, over the original.
fn tamper_envelope(blob: &[u8]) -> Result<Vec<u8>> {
    let mut envelope: Value = serde_json::from_slice(blob)?;
    let mut statement: Value =
        serde_json::from_slice(&STANDARD.decode(envelope["payload"].as_str().unwrap_or(""))?)?;
    statement["predicate"]["buildDefinition"]["externalParameters"]["seed"] = json!(9999);
    envelope["payload"] = json!(STANDARD.encode(serde_json::to_vec(&statement)?));
    Ok(serde_json::to_vec(&envelope)?)
}

/// The simple signing payload claims another image; the signature annotation is unchanged.
fn tamper_simple_signing(blob: &[u8]) -> Result<Vec<u8>> {
    let mut payload: Value = serde_json::from_slice(blob)?;
    payload["critical"]["identity"]["docker-reference"] = json!("attacker.example/models/bert");
    Ok(serde_json::to_vec(&payload)?)
}

/// Tamper with all three records of the model: the `.att` and `.sig` tags, and the referrer
/// (a new manifest with the tampered envelope, swapped into the fallback index).
async fn tamper(world: &World, digest: &str) -> Result<()> {
    replace_layer(world, &World::tag(digest, ".att"), DSSE, tamper_envelope).await?;
    replace_layer(
        world,
        &World::tag(digest, ".sig"),
        SIMPLE_SIGNING,
        tamper_simple_signing,
    )
    .await?;
    let index_tag = World::tag(digest, "");
    let fetched = world
        .registry
        .get_manifest(MODEL_REPO, &index_tag)
        .await?
        .context("no fallback index")?;
    let mut index = fetched.json()?;
    let entry = index["manifests"]
        .as_array_mut()
        .and_then(|m| m.iter_mut().find(|d| d["artifactType"] == IN_TOTO))
        .context("no in-toto referrer in the index")?;
    let referrer = entry["digest"].as_str().unwrap().to_string();
    let replaced = replace_layer(world, &referrer, DSSE, tamper_envelope).await?;
    entry["digest"] = json!(replaced.digest);
    entry["size"] = json!(replaced.size);
    world
        .registry
        .push_manifest(
            MODEL_REPO,
            &index_tag,
            &fetched.media_type,
            &serde_json::to_vec(&index)?,
        )
        .await?;
    Ok(())
}

fn write_key(dir: &Path, name: &str, pem: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, pem)?;
    Ok(path)
}

#[tokio::test]
async fn cosign_and_oras_accept_the_attached_provenance_and_refuse_tampering() -> Result<()> {
    let world = World::start(true).await?;
    let sim = world.kubelet(|| {}).await?;
    let _controller = world.controller("a").await?;
    let created = create(&world.cluster, &world.run("bert")).await?;
    let run = world
        .wait_provenance("bert", ProvenanceState::Attached)
        .await?;
    let digest = World::model_digest(&run);
    let expected = Expected {
        reference: format!("{}@{digest}", world.repository()),
        digest: digest.clone(),
        envelope_digest: run
            .status
            .as_ref()
            .unwrap()
            .provenance
            .as_ref()
            .unwrap()
            .envelope_digest
            .clone()
            .context("no envelope digest")?,
        invocation_id: created.uid().unwrap(),
        home: world.cluster.dir().to_path_buf(),
    };
    let dir = world.cluster.dir();
    let key = write_key(dir, "cosign.pub", &world.public_pem)?;
    let other = provenant::signing::keys::generate(b"other")?;
    let wrong_key = write_key(dir, "other.pub", &other.public_pem)?;

    for (name, result) in checks(&expected, &key).await {
        if let Err(e) = result {
            bail!("{name} refused what the controller attached: {e}");
        }
    }

    // A key that did not sign: both signature checks refuse.
    let wrong = [
        ("cosign verify", cosign_verify(&expected, &wrong_key).await),
        (
            "cosign verify-attestation",
            cosign_verify_attestation(&expected, &wrong_key).await,
        ),
    ];
    for (name, result) in wrong {
        let error = result
            .err()
            .with_context(|| format!("{name} accepted a wrong key"))?;
        assert!(error.contains("no matching"), "{name}: {error}");
    }

    // Tampered layers under the same tags: every check refuses, for that reason.
    tamper(&world, &digest).await?;
    let reasons = [
        "no matching signatures: invalid signature",
        "no matching attestations",
        "expected the envelope",
        "holds",
    ];
    for ((name, result), reason) in checks(&expected, &key).await.into_iter().zip(reasons) {
        let error = result
            .err()
            .with_context(|| format!("{name} accepted tampered records"))?;
        assert!(error.contains(reason), "{name}: {error}");
    }
    sim.shutdown().await?;
    Ok(())
}
