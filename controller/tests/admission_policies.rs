//! The shipped sigstore policy-controller policy (config/policies/cluster-image-policy.yaml), as
//! policy-controller decides: its own policy tester (`cmd/tester` of
//! github.com/sigstore/policy-controller v0.13.1, built by hack/tools.sh as `policy-tester`)
//! judges the models of support/admission.rs in the registry fixture. go-containerregistry
//! speaks plain HTTP to a loopback registry by itself, so the tester needs no flag for it.
//!
//! The shipped file is used as it is but for its two fields marked EDIT, the registry glob and
//! the public key. The model with the controller's provenance is admitted; every other case is
//! denied, with its reason. tests/policy_manifests.rs checks the file against the CRD.

use std::path::Path;
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
    "/../config/policies/cluster-image-policy.yaml"
);

/// What each case must come to: admitted (None), or denied with this in the errors.
fn expected(case: Case) -> Option<&'static str> {
    match case {
        Case::Attested => None,
        Case::Unattested => Some("no matching attestations"),
        // The DSSE signature does not verify with the policy's key.
        Case::OtherKey | Case::EditedPayload => {
            Some("accepted signatures do not match threshold, Found: 0, Expected 1")
        }
        // The Rego condition, with the policy's own reason.
        Case::OnlyReportedDatasets => Some(
            "no dataset:* resolved dependency has a sha256 digest that the spec declared or provenant observed",
        ),
        Case::LocalAttest => Some(
            "buildDefinition.buildType is \"https://provenant.dev/TrainingRun/local/v1\", not \"https://provenant.dev/TrainingRun/v1\"",
        ),
        // cosign's in-toto subject check: the statement is about another model.
        Case::CopiedFromAnotherModel => Some("no matching subject digest found"),
    }
}

/// The shipped ClusterImagePolicies with exactly their EDIT fields set: each glob to this
/// registry's `models/**`, each key to `public_pem`. Everything else (the authorities, the
/// predicate types, the Rego) is the shipped text.
fn shipped_policy(registry: &str, public_pem: &str) -> Result<String> {
    let text = std::fs::read_to_string(POLICY)?;
    let mut docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).context("cluster-image-policy.yaml")?;
    let names: Vec<&Value> = docs.iter().map(|d| &d["metadata"]["name"]).collect();
    ensure!(
        names
            == [
                &json!("provenant-trained-models"),
                &json!("provenant-not-revoked")
            ],
        "the shipped policies changed: {names:?}"
    );
    for doc in &mut docs {
        let spec = &mut doc["spec"];
        let [image] = spec["images"]
            .as_array_mut()
            .map(Vec::as_mut_slice)
            .unwrap_or_default()
        else {
            bail!("each shipped policy should have one spec.images entry");
        };
        ensure!(
            image["glob"] == "registry.example.com/models/**",
            "the shipped glob changed: {image}"
        );
        image["glob"] = json!(format!("{registry}/models/**"));
        let authorities = spec["authorities"].as_array_mut();
        for authority in authorities.into_iter().flatten() {
            if authority.get("static").is_some() {
                continue;
            }
            ensure!(
                authority["key"]["data"]
                    .as_str()
                    .is_some_and(|k| k.contains("REPLACE-WITH-THE-CONTROLLERS-COSIGN.PUB")),
                "the shipped key placeholder changed: {authority}"
            );
            authority["key"]["data"] = json!(public_pem);
        }
    }
    // JSON is YAML: the tester reads either, documents split by `---` lines.
    let docs: Vec<String> = docs
        .iter()
        .map(serde_json::to_string_pretty)
        .collect::<Result<_, _>>()?;
    Ok(docs.join("\n---\n"))
}

/// `policy-tester --policy POLICY --image MODEL`: Ok(None) when admitted, Ok(Some(errors)) when
/// denied (exit 1 with `{"errors": [...]}` on stdout).
fn decide(bed: &Bed, policy: &Path, model: &ModelRef) -> Result<Option<String>> {
    let out = Command::new(tools::path("policy-tester")?)
        .args(["--policy".as_ref(), policy.as_os_str()])
        .args(["--image", &model.reference])
        // The default keychain reads $HOME/.docker/config.json: this test's, empty.
        .env("HOME", bed.dir.path())
        .env_remove("DOCKER_CONFIG")
        .output()
        .context("running policy-tester")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // What docs/verify.md quotes (`-- --nocapture`).
    eprintln!(
        "$ policy-tester --policy {} --image {}\n{stderr}{stdout}exit {}\n",
        policy.display(),
        model.reference,
        out.status.code().unwrap_or(-1)
    );
    match out.status.code() {
        Some(0) => {
            ensure!(
                stderr.contains("Verification was successful"),
                "policy-tester exited 0 without saying so:\n{stderr}"
            );
            Ok(None)
        }
        Some(1) => {
            let Ok(report) = serde_json::from_str::<Value>(stdout.trim()) else {
                bail!("policy-tester failed before deciding:\n{stdout}{stderr}");
            };
            let errors: Vec<&str> = report["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            ensure!(
                !errors.is_empty(),
                "policy-tester denied without errors: {report}"
            );
            Ok(Some(errors.join("\n")))
        }
        _ => bail!("policy-tester: {}\n{stdout}{stderr}", out.status),
    }
}

#[tokio::test]
async fn only_the_controllers_provenance_is_admitted() -> Result<()> {
    let bed = Bed::start().await?;
    let policy = bed.dir.path().join("cluster-image-policy.yaml");
    std::fs::write(
        &policy,
        shipped_policy(bed.registry.host(), bed.key.public_key_pem())?,
    )?;
    let mut wrong = Vec::new();
    for case in Case::ALL {
        let model = bed.prepare(case).await?;
        let decision = decide(&bed, &policy, &model)?;
        match (expected(case), &decision) {
            (None, None) => {}
            (Some(reason), Some(errors)) if errors.contains(reason) => {}
            (want, got) => wrong.push(format!("{case:?}: expected {want:?}, got {got:?}")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

#[tokio::test]
async fn the_unedited_policy_is_refused_until_the_key_is_set() -> Result<()> {
    // As shipped, the key is a placeholder: policy-controller refuses the policy itself (its
    // webhook runs the same validation), so it cannot be installed by mistake unconfigured.
    let bed = Bed::start().await?;
    let model = bed.prepare(Case::Attested).await?;
    let out = Command::new(tools::path("policy-tester")?)
        .args(["--policy", POLICY, "--image", &model.reference])
        .env("HOME", bed.dir.path())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("CIP is invalid") && stderr.contains("spec.authorities[0].key.data"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn a_revoked_model_is_refused_with_the_reason_and_stays_refused() -> Result<()> {
    let bed = Bed::start().await?;
    let policy = bed.dir.path().join("cluster-image-policy.yaml");
    std::fs::write(
        &policy,
        shipped_policy(bed.registry.host(), bed.key.public_key_pem())?,
    )?;
    let model = bed.prepare(Case::Attested).await?;
    ensure!(decide(&bed, &policy, &model)?.is_none(), "admitted before");

    // A revocation signed by another key is no revocation.
    let forger = provenant::signing::CosignKey::ephemeral()?;
    bed.revoke(&model, "uid-forged", State::Revoked, &forger)
        .await?;
    ensure!(
        decide(&bed, &policy, &model)?.is_none(),
        "a forged revocation refused the model"
    );

    bed.revoke(&model, "uid-1", State::Revoked, &bed.key)
        .await?;
    let errors = decide(&bed, &policy, &model)?.context("admitted after the revocation")?;
    // The tester prints the first error only (the webhook reports them all): the reason.
    let reason = "the model is revoked by poisoned-imagenet: label poisoning (https://example.com/advisories/7); path: dataset sha256:9b2f";
    ensure!(errors.contains(reason), "missing {reason:?} in {errors}");

    // policy-controller cannot match a reinstatement to its revocation (docs/lineage.md,
    // "Verify and admission policies"): the model stays refused, on the side of caution. (Its
    // reason authority now matches the reinstatement, so the tester, which prints only the
    // first error, shows the policy's own message.)
    bed.revoke(&model, "uid-1", State::Reinstated, &bed.key)
        .await?;
    let errors = decide(&bed, &policy, &model)?.context("admitted after the reinstatement")?;
    ensure!(errors.contains("the model is revoked"), "{errors}");
    Ok(())
}
