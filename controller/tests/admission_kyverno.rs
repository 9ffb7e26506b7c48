//! The shipped Kyverno policy (config/policies/kyverno-cluster-policy.yaml), as Kyverno decides:
//! the Kyverno CLI (`kyverno apply`, github.com/kyverno/kyverno v1.19.1, built by hack/tools.sh)
//! runs the policy's verifyImages rule offline — no cluster — on a pod that serves each model of
//! support/admission.rs, fetching the attestations from the registry fixture as the admission
//! controller would.
//!
//! The shipped file is used as it is but for its two fields marked EDIT, the image references and
//! the public key. The model with the controller's provenance is admitted; every other case is
//! denied, with its reason.

use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use provenant::signing::Signer;
use provenant_testbed::registry::ModelRef;
use provenant_testbed::tools;
use serde_json::{Value, json};

#[path = "support/admission.rs"]
mod admission;
use admission::{Bed, Case};
use provenant::provenance::revocation::State;

const POLICY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../config/policies/kyverno-cluster-policy.yaml"
);

/// What each case must come to: admitted (None), or denied with this in the output.
fn expected(case: Case) -> Option<&'static str> {
    match case {
        Case::Attested => None,
        Case::Unattested => Some("no matching attestations"),
        Case::OtherKey | Case::EditedPayload => {
            Some("accepted signatures do not match threshold, Found: 0, Expected 1")
        }
        // The policy's own condition messages.
        Case::OnlyReportedDatasets => Some(
            "no dataset:* resolved dependency has a sha256 digest that the spec declared or provenant observed",
        ),
        Case::LocalAttest => {
            Some("buildDefinition.buildType is not https://provenant.dev/TrainingRun/v1")
        }
        Case::CopiedFromAnotherModel => Some("no matching subject digest found"),
    }
}

/// The shipped ClusterPolicy with exactly its two EDIT fields set: the image references to this
/// registry's `models/*`, the key to `public_pem`.
fn shipped_policy(registry: &str, public_pem: &str) -> Result<String> {
    let text = std::fs::read_to_string(POLICY)?;
    let mut doc: Value = serde_saphyr::from_str(&text).context("kyverno-cluster-policy.yaml")?;
    let [rule] = doc["spec"]["rules"]
        .as_array_mut()
        .map(Vec::as_mut_slice)
        .unwrap_or_default()
    else {
        bail!("the shipped policy should have one rule");
    };
    let verify = &mut rule["verifyImages"][0];
    ensure!(
        verify["imageReferences"] == json!(["registry.example.com/models/*"]),
        "the shipped image references changed: {verify}"
    );
    verify["imageReferences"] = json!([format!("{registry}/models/*")]);
    let keys = &mut verify["attestations"][0]["attestors"][0]["entries"][0]["keys"];
    ensure!(
        keys["publicKeys"]
            .as_str()
            .is_some_and(|k| k.contains("REPLACE-WITH-THE-CONTROLLERS-COSIGN.PUB")),
        "the shipped key placeholder changed: {keys}"
    );
    keys["publicKeys"] = json!(public_pem);
    Ok(serde_json::to_string_pretty(&doc)?)
}

/// `kyverno apply POLICY --resource POD` for a pod serving `model`: Ok(None) when the pod is
/// admitted, Ok(Some(output)) when the policy fails it.
fn decide(bed: &Bed, policy: &str, model: &ModelRef) -> Result<Option<String>> {
    let pod = bed.dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        serde_json::to_vec(&json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "serve", "namespace": "default"},
            "spec": {"containers": [{"name": "model", "image": model.reference}]},
        }))?,
    )?;
    let pod = pod.to_str().unwrap();
    let out = Command::new(tools::path("kyverno")?)
        .args(["apply", policy, "--resource", pod])
        // The registry client's keychain reads $HOME/.docker/config.json: this test's, empty.
        .env("HOME", bed.dir.path())
        .env_remove("DOCKER_CONFIG")
        .output()
        .context("running kyverno")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "$ kyverno apply {policy} --resource {pod}    # image: {}\n{stdout}{stderr}exit {}\n",
        model.reference,
        out.status.code().unwrap_or(-1)
    );
    // `pass: 2, fail: 0, warn: 0, error: 0, skip: 0`: the verifyImages rule and the check that
    // the pod names the verified digest.
    let count = |what: &str| -> Option<u32> {
        let line = stdout.lines().find(|l| l.starts_with("pass: "))?;
        let field = line.split(", ").find_map(|f| f.trim().strip_prefix(what))?;
        field.parse().ok()
    };
    match (
        out.status.code(),
        count("pass: "),
        count("fail: "),
        count("error: "),
    ) {
        (Some(0), Some(1..), Some(0), Some(0)) => Ok(None),
        (Some(1), _, Some(1..), Some(0)) => Ok(Some(stdout.to_string())),
        (code, ..) => bail!("kyverno apply: exit {code:?}\n{stdout}{stderr}"),
    }
}

#[tokio::test]
async fn only_the_controllers_provenance_is_admitted() -> Result<()> {
    let bed = Bed::start().await?;
    let policy = bed.dir.path().join("kyverno-cluster-policy.yaml");
    std::fs::write(
        &policy,
        shipped_policy(bed.registry.host(), bed.key.public_key_pem())?,
    )?;
    let policy = policy.to_str().unwrap();
    let mut wrong = Vec::new();
    for case in Case::ALL {
        let model = bed.prepare(case).await?;
        let decision = decide(&bed, policy, &model)?;
        match (expected(case), &decision) {
            (None, None) => {}
            (Some(reason), Some(output)) if output.contains(reason) => {}
            (want, got) => wrong.push(format!("{case:?}: expected {want:?}, got {got:?}")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

/// What the Kyverno ClusterPolicy does with a revoked model: it still admits it. Its
/// verifyImages attestations cannot refuse on a statement being present (docs/lineage.md,
/// "Verify and admission policies", gives the source lines); this pins the documented gap, so
/// that the documentation changes when Kyverno's behaviour does.
#[tokio::test]
async fn a_revoked_model_is_still_admitted_by_the_kyverno_policy() -> Result<()> {
    let bed = Bed::start().await?;
    let policy = bed.dir.path().join("kyverno-cluster-policy.yaml");
    std::fs::write(
        &policy,
        shipped_policy(bed.registry.host(), bed.key.public_key_pem())?,
    )?;
    let policy = policy.to_str().unwrap();
    let model = bed.prepare(Case::Attested).await?;
    bed.revoke(&model, "uid-1", State::Revoked, &bed.key)
        .await?;
    let decision = decide(&bed, policy, &model)?;
    ensure!(
        decision.is_none(),
        "Kyverno now refuses a revoked model: {decision:?}"
    );
    Ok(())
}
