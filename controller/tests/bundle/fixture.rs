//! The fixture of `bundle.rs`: a registry, the controller's store on it, the signing key, the
//! tools (cosign, `provenant verify`) run as a user runs them, and alterations of a bundle.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use provenant::api::TrainingRun;
use provenant::config::ControllerConfig;
use provenant::engine::{self, SignedRecord};
use provenant::provenance::{self, BuilderIdentity, digest_map};
use provenant::signing::{CosignKey, Signer};
use provenant::storage::{AttestationStore, BundleAttestation, RegistryOptions, RegistryStore};
use provenant_testbed::registry::{ModelRef, Registry};
use provenant_testbed::tools;
use serde_json::Value;

/// A registry, the controller's store on it, the signing key, and a directory for the tools'
/// HOME and the public keys.
pub struct Fixture {
    pub registry: Registry,
    pub store: Arc<dyn AttestationStore>,
    /// Every request the store made (op names, `storage::op`).
    pub requests: Arc<Mutex<Vec<String>>>,
    pub key: CosignKey,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub async fn start() -> Result<Fixture> {
        let registry = Registry::start().await?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let store = RegistryStore::new(RegistryOptions {
            insecure_registries: vec![registry.host().to_string()],
            observer: Some(Arc::new(move |op: &str, _, _| {
                log.lock().unwrap().push(op.to_string())
            })),
            ..RegistryOptions::default()
        });
        let dir = tempfile::tempdir()?;
        let key = CosignKey::ephemeral()?;
        std::fs::write(dir.path().join("cosign.pub"), key.public_key_pem())?;
        let other = CosignKey::ephemeral()?;
        std::fs::write(dir.path().join("other.pub"), other.public_key_pem())?;
        Ok(Fixture {
            registry,
            store: Arc::new(store),
            requests,
            key,
            dir,
        })
    }

    /// The requests since the last call, counted by op.
    pub fn take_requests(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for op in std::mem::take(&mut *self.requests.lock().unwrap()) {
            *counts.entry(op).or_default() += 1;
        }
        counts
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A model, and the record of a run that produced it (the statement the controller makes of
    /// the fixture run, about this model), signed with the fixture's key.
    pub async fn signed_model(&self, name: &str) -> Result<(ModelRef, SignedRecord)> {
        let model = self
            .registry
            .push_model(
                &format!("models/{name}"),
                "v1",
                &[("model.safetensors", format!("weights of {name}").as_bytes())],
            )
            .await?;
        let run: TrainingRun = serde_saphyr::from_str(&std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/succeeded-run.yaml"
        ))?)?;
        let placement = provenant::execute::placement::placement(
            &ControllerConfig::defaults(),
            run.spec.accelerator.as_ref(),
        )?;
        let builder = BuilderIdentity::controller(provenance::DEFAULT_BUILDER_ID, None);
        let mut statement = provenance::statement_for_run(&run, &placement, &builder)?;
        statement.subject.truncate(1);
        statement.subject[0].name = Some(model.repository.clone());
        statement.subject[0].digest = digest_map(&model.digest);
        Ok((model, engine::sign(&statement, &self.key)?))
    }

    /// `cosign verify-attestation` with what a key-only setup needs: the key, no transparency
    /// log, a plain-HTTP registry, the bundle format (or the legacy `.att` with `false`), SLSA v1.
    pub fn cosign(&self, reference: &str, key: &str, new_bundle_format: bool) -> Output {
        let key = self.path(key);
        let bundle_flag = format!("--new-bundle-format={new_bundle_format}");
        let args = [
            "verify-attestation",
            "--key",
            key.to_str().unwrap(),
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            &bundle_flag,
            "--type",
            "slsaprovenance1",
            reference,
        ];
        let out = Command::new(tools::path("cosign").unwrap_or_else(|e| panic!("{e:#}")))
            .args(args)
            .env("HOME", self.dir.path())
            .output()
            .expect("run cosign");
        eprintln!("$ cosign {}\n{}", args.join(" "), text(&out));
        out
    }

    /// `cosign verify` (the model's signature) with the same key-only flags.
    pub fn cosign_verify(&self, reference: &str, new_bundle_format: bool) -> Output {
        let key = self.path("cosign.pub");
        let bundle_flag = format!("--new-bundle-format={new_bundle_format}");
        let args = [
            "verify",
            "--key",
            key.to_str().unwrap(),
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            &bundle_flag,
            reference,
        ];
        let out = Command::new(tools::path("cosign").unwrap_or_else(|e| panic!("{e:#}")))
            .args(args)
            .env("HOME", self.dir.path())
            .output()
            .expect("run cosign");
        eprintln!("$ cosign {}\n{}", args.join(" "), text(&out));
        out
    }

    /// `provenant verify REFERENCE --key cosign.pub` (`--output json` when `json`).
    pub fn provenant_verify(&self, reference: &str, json: bool) -> Output {
        let key = self.path("cosign.pub");
        let mut args = vec![
            "verify",
            reference,
            "--key",
            key.to_str().unwrap(),
            "--insecure-registry",
            self.registry.host(),
        ];
        if json {
            args.extend(["--output", "json"]);
        }
        let out = Command::new(env!("CARGO_BIN_EXE_provenant"))
            .args(&args)
            .output()
            .expect("run provenant");
        eprintln!("$ provenant {}\n{}", args.join(" "), text(&out));
        out
    }

    /// A manifest as JSON; its exact bytes are printed (the examples in docs/registry-layout.md
    /// are these, pretty-printed).
    pub async fn manifest(&self, model: &ModelRef, reference: &str) -> Result<Value> {
        let fetched = self
            .registry
            .get_manifest(&model.repo, reference)
            .await?
            .ok_or_else(|| anyhow!("{}:{reference} does not exist", model.repo))?;
        eprintln!(
            "{}:{reference}\n{}",
            model.repo,
            String::from_utf8_lossy(&fetched.bytes)
        );
        fetched.json()
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn hex(model: &ModelRef) -> &str {
    model.digest.trim_start_matches("sha256:")
}

pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap()
}

/// The statement inside the first envelope cosign prints (one JSON envelope per line).
pub fn cosign_statement(out: &Output) -> Result<Value> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let envelope: Value = serde_json::from_str(stdout.lines().next().unwrap_or_default())
        .with_context(|| format!("cosign printed no envelope: {stdout}"))?;
    let payload = STANDARD.decode(envelope["payload"].as_str().unwrap_or_default())?;
    Ok(serde_json::from_slice(&payload)?)
}

/// The digest and type of the first claim `cosign verify` prints.
pub fn signed_claim(out: &Output) -> Result<(String, String)> {
    let claims: Value = serde_json::from_slice(&out.stdout).context("cosign verify output")?;
    let critical = &claims[0]["critical"];
    Ok((
        critical["image"]["docker-manifest-digest"]
            .as_str()
            .unwrap_or_default()
            .into(),
        critical["type"].as_str().unwrap_or_default().into(),
    ))
}

/// An edit of a bundle's JSON.
pub type Alteration = fn(&mut Value);

/// The model's bundle attestation with its bundle changed by `alter` (a registry writer, not
/// the controller, edited it).
pub fn altered(record: &SignedRecord, alter: Alteration) -> Result<BundleAttestation> {
    let mut attestation = record.bundle_attestations()?.remove(0);
    let mut bundle: Value = serde_json::from_slice(&attestation.bundle)?;
    alter(&mut bundle);
    attestation.bundle = serde_json::to_vec(&bundle)?;
    Ok(attestation)
}

pub fn altered_signature(bundle: &mut Value) {
    let sig = &mut bundle["dsseEnvelope"]["signatures"][0]["sig"];
    let mut der = STANDARD.decode(sig.as_str().unwrap()).unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    *sig = STANDARD.encode(der).into();
}

pub fn altered_payload(bundle: &mut Value) {
    let payload = &mut bundle["dsseEnvelope"]["payload"];
    let statement = STANDARD.decode(payload.as_str().unwrap()).unwrap();
    let statement = String::from_utf8(statement).unwrap().replacen(
        "https://provenant.dev/controller/v1",
        "https://provenant.dev/controller/v2",
        1,
    );
    *payload = STANDARD.encode(statement).into();
}
