//! The shipped admission policies (config/policies/) have the shape of their CRDs: the real API
//! server, with the CRDs of the pinned policy-controller and Kyverno installed, accepts each in a
//! server-side dry run with strict field validation (and refuses a misspelled copy), so they
//! cannot rot silently; so is the ClusterRole kyverno-not-revoked.yaml ships for Kyverno. What
//! they decide is tested in admission_policies.rs and admission_kyverno.rs.

#[path = "support/real_cluster.rs"]
mod real_cluster;

use anyhow::{Context, Result, ensure};
use provenant_testbed::tools;
use serde_json::{Value, json};

const CLUSTER_IMAGE_POLICY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../config/policies/cluster-image-policy.yaml"
);
const KYVERNO_POLICY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../config/policies/kyverno-cluster-policy.yaml"
);
const KYVERNO_NOT_REVOKED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../config/policies/kyverno-not-revoked.yaml"
);

/// The CRDs of the pinned policy-controller and Kyverno (copied by hack/tools.sh from their
/// modules into hack/tools/bin/crds).
const CRDS: [(&str, &str); 2] = [
    (
        "clusterimagepolicies.policy.sigstore.dev",
        "300-clusterimagepolicy.yaml",
    ),
    (
        "clusterpolicies.kyverno.io",
        "kyverno.io_clusterpolicies.yaml",
    ),
];

#[test]
fn the_shipped_policies_match_their_crds() -> Result<()> {
    let Some(kubeconfig) = real_cluster::kubeconfig()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    for (name, file) in CRDS {
        let path = tools::bin_dir().join("crds").join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: run `make tools`", path.display()))?;
        let mut crd: Value = serde_saphyr::from_str(&text)?;
        // policy-controller converts between v1alpha1 and v1beta1 with its webhook, which this
        // cluster does not run; both versions have the same schema, so the API server's own
        // conversion (apiVersion only) stands in for it.
        crd["spec"]["conversion"] = json!({"strategy": "None"});
        let patched = dir.path().join(file);
        std::fs::write(&patched, serde_json::to_vec(&crd)?)?;
        real_cluster::install_crd(&kubeconfig, name, &patched)?;
    }
    let dry_run = |file: &str| real_cluster::dry_run(&kubeconfig, std::path::Path::new(file));
    for (policy, created) in [
        (
            CLUSTER_IMAGE_POLICY,
            "clusterimagepolicy.policy.sigstore.dev/provenant-trained-models\n\
             clusterimagepolicy.policy.sigstore.dev/provenant-not-revoked",
        ),
        (
            KYVERNO_POLICY,
            "clusterpolicy.kyverno.io/provenant-trained-models",
        ),
        (
            KYVERNO_NOT_REVOKED,
            "clusterrole.rbac.authorization.k8s.io/kyverno:provenant-materialrevocations\n\
             clusterpolicy.kyverno.io/provenant-not-revoked",
        ),
    ] {
        let out = dry_run(policy)?;
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == created,
            "{policy}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The check can fail: a misspelled field is refused.
        let misspelled = dir.path().join("misspelled.yaml");
        let text = std::fs::read_to_string(policy)?;
        ensure!(text.contains("\n  rules:") || text.contains("\n  authorities:"));
        std::fs::write(
            &misspelled,
            text.replacen("\n  rules:", "\n  rulez:", 1).replacen(
                "\n  authorities:",
                "\n  authoritys:",
                1,
            ),
        )?;
        let out = dry_run(misspelled.to_str().unwrap())?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("unknown field"),
            "a misspelled copy of {policy} was accepted: {stderr}"
        );
    }
    Ok(())
}
