//! The shipped Kyverno policies, as Kyverno decides, with the Kyverno CLI (`kyverno apply`,
//! github.com/kyverno/kyverno v1.19.1, built by hack/tools.sh).
//!
//! kyverno-cluster-policy.yaml: the CLI runs the policy's verifyImages rule offline — no cluster
//! — on a pod that serves each model of support/admission.rs, fetching the attestations from the
//! registry fixture as the admission controller would. The shipped file is used as it is but for
//! its two fields marked EDIT, the image references and the public key. The model with the
//! controller's provenance is admitted; every other case is denied, with its reason.
//!
//! kyverno-not-revoked.yaml, as shipped: the CLI with `--cluster` evaluates its API call on the
//! MaterialRevocations of the real API server (`hack/with-cluster.sh`), as a user with the
//! namespace's `view` (to list the workloads) and, for MaterialRevocations, only the
//! RBAC Kyverno's admission controller gets from the file, over workloads serving models of a
//! lineage the controller's own code resolves.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use provenant::api::revocation::MAX_LISTED;
use provenant::api::{
    AffectedModel, MaterialRevocation, MaterialRevocationStatus, MaterialType, RevokedMaterial,
};
use provenant::lineage::LineageIndex;
use provenant::reconcile::revocation::{FINALIZER, affected};
use provenant::signing::Signer;
use provenant_testbed::cluster::{Cluster, eventually};
use provenant_testbed::registry::ModelRef;
use provenant_testbed::tools;
use serde_json::{Value, json};

#[path = "support/admission.rs"]
mod admission;
use admission::{Bed, Case, DATASET, lineage_entry};
#[path = "support/kyverno_cluster.rs"]
mod kyverno_cluster;
use kyverno_cluster::{NOT_REVOKED, Results, all_pass, another_dataset, model, scan, workloads};

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

// kyverno-not-revoked.yaml: cluster state, on the real API server.

#[tokio::test]
async fn models_a_material_revocation_lists_are_refused_until_it_is_deleted() -> Result<()> {
    let Some(cluster) = Cluster::start_real().await? else {
        return Ok(());
    };
    let ns = cluster.namespace.clone();
    let kubectl = |args: &[&str], input: Option<&Value>| -> Result<()> {
        let mut cmd = Command::new(tools::path("kubectl")?);
        cmd.arg("--kubeconfig").arg(cluster.kubeconfig()).args(args);
        if let Some(input) = input {
            let file = cluster.dir().join("input.json");
            std::fs::write(&file, serde_json::to_vec(input)?)?;
            cmd.arg("-f").arg(file);
        }
        let out = cmd.output().context("running kubectl")?;
        ensure!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };

    // What the controller lists for a revocation of DATASET: the base model, read on it, and its
    // fine-tune; not the unrelated model.
    let (base, ft, other) = (model("base"), model("ft"), model("other"));
    let entries = [
        lineage_entry(&base, |run| {
            run["metadata"]["name"] = json!("base");
            run["metadata"]["uid"] = json!("uid-base");
        })?,
        lineage_entry(&ft, |run| {
            another_dataset("ft")(run);
            run["spec"]["baseModel"] = json!({"uri": base.reference, "digest": base.digest});
        })?,
        lineage_entry(&other, another_dataset("other"))?,
    ];
    let index = LineageIndex::new(entries);
    let material = RevokedMaterial {
        type_: MaterialType::Dataset,
        digest: DATASET.into(),
    };
    let hits = affected::find(&index, &material);
    let listed = hits.iter().map(|h| affected::listed(&material, h, true));
    let (affected_models, truncated) = affected::bounded(listed.collect(), MAX_LISTED);
    let models: Vec<&str> = affected_models.iter().map(|m| m.model.as_str()).collect();
    ensure!(
        models == [base.reference.as_str(), ft.reference.as_str()],
        "{models:?}"
    );
    let status = MaterialRevocationStatus {
        affected_count: Some(affected_models.len() as i64),
        affected_models: affected_models.clone(),
        truncated,
        observed_generation: Some(1),
        ..Default::default()
    };

    kubectl(&["-n", &ns, "create"], Some(&workloads(&base, &ft, &other)))?;

    // Kyverno's admission controller, as the test user: the namespace's `view` (the CLI lists
    // the workloads) and, later, Kyverno's aggregated role.
    let user = format!("kyverno-{ns}");
    let kubeconfig = cluster.dir().join("kyverno.kubeconfig");
    let mut config: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(cluster.kubeconfig())?)?;
    for entry in config["users"].as_array_mut().into_iter().flatten() {
        entry["user"]["as"] = json!(user);
    }
    std::fs::write(&kubeconfig, serde_json::to_vec(&config)?)?;
    let view = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "kyverno-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    });
    kubectl(&["-n", &ns, "create"], Some(&view))?;

    // Without the shipped role, the API call is forbidden: every workload errs, which Kyverno's
    // webhook (failurePolicy Fail) turns into a refusal.
    eventually(
        Duration::from_secs(60),
        "the view role to apply",
        || async {
            let results = scan(&kubeconfig, &ns)?;
            Ok((results.len() == 5
                && results
                    .values()
                    .all(|(r, m)| r == "error" && m.contains("permission denied")))
            .then_some(()))
        },
    )
    .await?;

    // Kyverno's admission-controller role as its chart defines it (charts/kyverno/templates/
    // admission-controller/clusterrole.yaml, v1.19.1: rules only by aggregation), bound to the
    // user; and the shipped file's ClusterRole, which its label aggregates into it (named for
    // this test, so that it leaves the cluster as it found it).
    let role = format!("kyverno:admission-controller:{ns}");
    let rbac = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": role},
         "aggregationRule": {"clusterRoleSelectors": [
             {"matchLabels": {"rbac.kyverno.io/aggregate-to-admission-controller": "true"}}]}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": role},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]},
    ]});
    kubectl(&["create"], Some(&rbac))?;
    let text = std::fs::read_to_string(NOT_REVOKED)?;
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).context("kyverno-not-revoked.yaml")?;
    let mut shipped = docs
        .into_iter()
        .find(|d| d["kind"] == "ClusterRole")
        .context("kyverno-not-revoked.yaml ships no ClusterRole")?;
    let shipped_role = format!(
        "{}-{ns}",
        shipped["metadata"]["name"].as_str().unwrap_or_default()
    );
    shipped["metadata"]["name"] = json!(shipped_role);
    kubectl(&["create"], Some(&shipped))?;

    // No revocation: everything admitted.
    eventually(
        Duration::from_secs(60),
        "the aggregated role to apply",
        || async { Ok(all_pass(&scan(&kubeconfig, &ns)?).then_some(())) },
    )
    .await?;

    // A revocation the controller has not searched yet (no status): nothing listed, nothing
    // refused. It carries the controller's finalizer, as the controller adds it.
    let api = Api::<MaterialRevocation>::all(cluster.client.clone());
    let name = format!("poisoned-{ns}");
    let revocation: MaterialRevocation = serde_json::from_value(json!({
        "apiVersion": "provenant.dev/v1alpha1", "kind": "MaterialRevocation",
        "metadata": {"name": name, "finalizers": [FINALIZER]},
        "spec": {"material": {"type": "Dataset", "digest": DATASET}, "reason": "label poisoning",
                 "advisory": "https://example.com/advisories/7"},
    }))?;
    api.create(&PostParams::default(), &revocation).await?;
    ensure!(
        all_pass(&scan(&kubeconfig, &ns)?),
        "refused before any model was listed"
    );

    // The status, written as the controller writes it (through the status subresource): the
    // base model and its fine-tune are refused wherever they appear, each with the revocation,
    // its reason, its advisory and the model's path; the unrelated model is admitted.
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await?;
    let refusal = |m: &AffectedModel| {
        format!(
            "the model is revoked by MaterialRevocation {name}: label poisoning \
             (https://example.com/advisories/7); {} path: {}",
            m.model, m.path
        )
    };
    let (on_base, on_ft) = (refusal(&affected_models[0]), refusal(&affected_models[1]));
    let fail = |m: &str| ("fail".to_string(), m.to_string());
    let expected = Results::from([
        ("Pod/serve-base".into(), fail(&on_base)),
        ("Deployment/serve-base".into(), fail(&on_base)),
        ("Pod/warm-ft".into(), fail(&on_ft)),
        ("Pod/mount-ft".into(), fail(&on_ft)),
        (
            "Pod/serve-other".into(),
            (
                "pass".into(),
                "validation rule 'model-not-revoked' passed.".into(),
            ),
        ),
    ]);
    assert_eq!(scan(&kubeconfig, &ns)?, expected);

    // Deleted (a false alarm): while the controller signs the reinstatements (its finalizer
    // holds the object, deletionTimestamp set) and once it is gone, everything is admitted.
    api.delete(&name, &DeleteParams::default()).await?;
    let deleting = api.get(&name).await?;
    ensure!(deleting.metadata.deletion_timestamp.is_some());
    ensure!(
        all_pass(&scan(&kubeconfig, &ns)?),
        "refused while being deleted"
    );
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    ensure!(api.get_opt(&name).await?.is_none(), "{name} still there");
    ensure!(
        all_pass(&scan(&kubeconfig, &ns)?),
        "refused after the deletion"
    );

    kubectl(&["delete", "clusterrolebinding", &role], None)?;
    kubectl(&["delete", "clusterrole", &role, &shipped_role], None)?;
    Ok(())
}
