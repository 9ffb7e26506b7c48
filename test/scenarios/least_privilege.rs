//! Least privilege, checked: what the controller's ServiceAccount may do under the shipped
//! `config/rbac`, asked of the real API server's authorizer with `kubectl auth can-i` as an SRE
//! would. Every other scenario runs the controller under that same ServiceAccount (the test bed's
//! `Cluster::controller_kubeconfig`), so a rule the code needs and the RBAC lacks fails them; this
//! one fails when the RBAC grants more than the code uses.

use anyhow::{Context, Result};
use provenant_testbed::cluster::Cluster;
use provenant_testbed::tools;

use crate::support::init_logs;

/// `kubectl auth can-i <args>` as the controller: true for "yes".
async fn controller_can(cluster: &Cluster, args: &[&str]) -> Result<bool> {
    can_i(cluster.controller_kubeconfig(), args).await
}

async fn can_i(kubeconfig: &std::path::Path, args: &[&str]) -> Result<bool> {
    let out = tokio::process::Command::new(tools::path("kubectl")?)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["auth", "can-i"])
        .args(args)
        .output()
        .await
        .context("running kubectl auth can-i")?;
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match answer.as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => anyhow::bail!(
            "kubectl auth can-i {}: {answer} {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[tokio::test]
async fn the_controllers_service_account_may_do_only_what_the_code_needs() -> Result<()> {
    init_logs();
    let Some(cluster) = Cluster::start_real().await? else {
        return Ok(());
    };
    let tenant = cluster.namespace.as_str();
    let system = cluster.controller_namespace.as_str();
    let mut wrong = Vec::new();
    let needed: &[&[&str]] = &[
        // Secrets the configuration names, by name (get, and the single-name watch).
        &["get", "secrets/provenant-signing-key", "-n", system],
        &["watch", "secrets/provenant-signing-key", "-n", system],
        &["get", "secrets/registry-credentials", "-n", system],
        // Execute: workers and the rendezvous Service in any tenant namespace.
        &["create", "pods", "-n", tenant],
        &["delete", "pods", "-n", tenant],
        &["create", "services", "-n", tenant],
        // Signed records and the leader Lease in its own namespace.
        &["create", "configmaps", "-n", system],
        &["delete", "configmaps", "-n", system],
        &["update", "leases/provenant-controller", "-n", system],
        // Finalizer and status: patches.
        &["patch", "trainingruns.provenant.dev", "-n", tenant],
        &[
            "patch",
            "trainingruns.provenant.dev",
            "--subresource=status",
            "-n",
            tenant,
        ],
        &["get", "nodes/gpu-node-1"],
        // Revocations: watched cluster-wide, finalizer and status patched; records' metadata
        // watched so a new record re-runs them.
        &["watch", "materialrevocations.provenant.dev"],
        &["patch", "materialrevocations.provenant.dev"],
        &[
            "patch",
            "materialrevocations.provenant.dev",
            "--subresource=status",
        ],
        &["watch", "configmaps", "-n", system],
    ];
    for args in needed {
        if !controller_can(&cluster, args).await? {
            wrong.push(format!("cannot {}", args.join(" ")));
        }
    }
    let excess: &[&[&str]] = &[
        // Any other Secret, in its namespace or a tenant's; listing all of them.
        &["get", "secrets/someone-elses", "-n", system],
        &["list", "secrets", "-n", system],
        &["get", "secrets/provenant-signing-key", "-n", tenant],
        &["create", "secrets", "-n", system],
        // Records only in its own namespace.
        &["create", "configmaps", "-n", tenant],
        &["get", "configmaps", "-n", tenant],
        // Nothing the code does not do.
        &["update", "trainingruns.provenant.dev", "-n", tenant],
        &[
            "update",
            "trainingruns.provenant.dev",
            "--subresource=status",
            "-n",
            tenant,
        ],
        &["delete", "trainingruns.provenant.dev", "-n", tenant],
        &["create", "trainingruns.provenant.dev", "-n", tenant],
        &["delete", "services", "-n", tenant],
        &["list", "nodes"],
        &["update", "pods", "-n", tenant],
        &["create", "pods", "--subresource=exec", "-n", tenant],
        &["update", "leases/another-lease", "-n", system],
        &["create", "rolebindings", "-n", tenant],
        // Revocations are the security team's to create and withdraw, never the controller's.
        &["create", "materialrevocations.provenant.dev"],
        &["delete", "materialrevocations.provenant.dev"],
        &["watch", "configmaps", "-n", tenant],
    ];
    for args in excess {
        if controller_can(&cluster, args).await? {
            wrong.push(format!("can {}", args.join(" ")));
        }
    }
    assert!(
        wrong.is_empty(),
        "the shipped config/rbac does not match what the controller needs:\n{}",
        wrong.join("\n")
    );
    Ok(())
}

/// The shipped `provenant-edit` / `provenant-view` ClusterRoles extend the built-in roles a team
/// gets in its namespace: `edit` submits and deletes runs, `view` reads them, and neither may write
/// a run's status (only the controller does: what the status says becomes signed fact), nor raise,
/// withdraw or edit a MaterialRevocation.
#[tokio::test]
async fn team_members_submit_runs_but_never_write_their_status() -> Result<()> {
    init_logs();
    let Some(cluster) = Cluster::start_real().await? else {
        return Ok(());
    };
    let ns = cluster.namespace.as_str();
    // Binds the tenant to `edit` in the test namespace and waits for it.
    cluster.tenant().await?;
    let tenant = format!("--as={}", provenant_testbed::cluster::TENANT);
    let admin = cluster.kubeconfig();
    let mut wrong = Vec::new();
    let allowed: &[&[&str]] = &[
        &["create", "trainingruns.provenant.dev"],
        &["delete", "trainingruns.provenant.dev"],
        &["list", "trainingruns.provenant.dev"],
    ];
    let refused: &[&[&str]] = &[
        &[
            "patch",
            "trainingruns.provenant.dev",
            "--subresource=status",
        ],
        &[
            "update",
            "trainingruns.provenant.dev",
            "--subresource=status",
        ],
        // A revocation quarantines models across every namespace: only `provenant-revoker`
        // (bound by a cluster admin) may raise or withdraw one, or write what it found.
        &["create", "materialrevocations.provenant.dev"],
        &["delete", "materialrevocations.provenant.dev"],
        &["patch", "materialrevocations.provenant.dev"],
        &[
            "patch",
            "materialrevocations.provenant.dev",
            "--subresource=status",
        ],
    ];
    // Aggregation into `edit` is done by the controller-manager: allow it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        wrong.clear();
        for (args, expected) in allowed
            .iter()
            .map(|a| (a, true))
            .chain(refused.iter().map(|a| (a, false)))
        {
            let full: Vec<&str> = args.iter().copied().chain(["-n", ns, &tenant]).collect();
            if can_i(admin, &full).await? != expected {
                wrong.push(format!("{}: expected {expected}", full.join(" ")));
            }
        }
        if wrong.is_empty() || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(
        wrong.is_empty(),
        "a team member's rights on TrainingRuns:\n{}",
        wrong.join("\n")
    );
    Ok(())
}
