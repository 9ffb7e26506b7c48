//! The controller's shipped RBAC (`config/rbac/`), installed for one test's controller namespace,
//! and a kubeconfig that carries a token of the controller's ServiceAccount: on a real cluster the
//! tests' controller runs with exactly what an installation grants it, never as cluster-admin, so
//! a rule the code needs but `config/rbac` lacks fails a scenario (and so does a rule removed).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, Kubeconfig, NamedAuthInfo};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cluster::eventually;

/// The ServiceAccount `config/rbac/service_account.yaml` ships.
pub const SERVICE_ACCOUNT: &str = "provenant-controller";

/// `config/rbac/` at the repository root.
pub fn rbac_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rbac")
}

/// Every object of `config/rbac/*.yaml` (but the kustomization), as JSON.
fn shipped_objects() -> Result<Vec<Value>> {
    let mut objects = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(rbac_dir())?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    paths.sort();
    for path in paths {
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
        if !file.ends_with(".yaml") || file == "kustomization.yaml" {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("parsing {}", path.display()))?;
        objects.extend(docs.into_iter().filter(|d| !d.is_null()));
    }
    Ok(objects)
}

fn typed<T: DeserializeOwned>(value: Value) -> Result<T> {
    Ok(serde_json::from_value(value)?)
}

/// Create `object`, or leave the one already there (a second controller of the same test).
async fn create<K>(api: Api<K>, object: &K) -> Result<()>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Install `config/rbac` for a controller living in `namespace`, exactly as kustomize would with
/// `namespace: <namespace>`, except that the ClusterRoleBinding is named per namespace (tests
/// share one API server). Then write, under `dir`, a kubeconfig that authenticates as the
/// ServiceAccount with a token from the TokenRequest API, and wait until its rules apply.
pub async fn install_controller_rbac(
    client: &Client,
    namespace: &str,
    admin_kubeconfig: &Path,
    dir: &Path,
) -> Result<PathBuf> {
    let mut seen = (false, false);
    for mut object in shipped_objects()? {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        if let Some(subjects) = object["subjects"].as_array_mut() {
            for subject in subjects
                .iter_mut()
                .filter(|s| s["kind"] == "ServiceAccount")
            {
                subject["namespace"] = Value::from(namespace);
            }
        }
        match kind.as_str() {
            "ServiceAccount" => {
                seen.0 = true;
                create(
                    Api::namespaced(client.clone(), namespace),
                    &typed::<ServiceAccount>(object)?,
                )
                .await
            }
            "Role" => {
                create(
                    Api::namespaced(client.clone(), namespace),
                    &typed::<Role>(object)?,
                )
                .await
            }
            "RoleBinding" => {
                create(
                    Api::namespaced(client.clone(), namespace),
                    &typed::<RoleBinding>(object)?,
                )
                .await
            }
            "ClusterRole" => {
                seen.1 = true;
                let role: ClusterRole = typed(object)?;
                let name = role.metadata.name.clone().unwrap_or_default();
                // Shared by every test of the API server: applied, so a changed rule takes effect.
                Api::<ClusterRole>::all(client.clone())
                    .patch(
                        &name,
                        &PatchParams::apply("provenant-tests").force(),
                        &Patch::Apply(&role),
                    )
                    .await
                    .map(|_| ())
                    .map_err(Into::into)
            }
            "ClusterRoleBinding" => {
                let name = format!(
                    "{}-{namespace}",
                    object["metadata"]["name"].as_str().unwrap_or("")
                );
                object["metadata"]["name"] = Value::from(name);
                create(
                    Api::all(client.clone()),
                    &typed::<ClusterRoleBinding>(object)?,
                )
                .await
            }
            other => bail!("config/rbac: unexpected kind {other:?}"),
        }
        .with_context(|| format!("installing the shipped {kind} in {namespace}"))?;
    }
    if seen != (true, true) {
        bail!("config/rbac must ship the controller's ServiceAccount and ClusterRole");
    }

    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(24 * 3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(SERVICE_ACCOUNT, &PostParams::default(), &request)
        .await
        .context("requesting a token of the controller's ServiceAccount")?
        .status
        .and_then(|s| s.token)
        .context("the TokenRequest has no token")?;
    let mut kubeconfig = Kubeconfig::read_from(admin_kubeconfig)?;
    let user = format!("system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}");
    kubeconfig.auth_infos = vec![NamedAuthInfo {
        name: user.clone(),
        auth_info: Some(AuthInfo {
            token: Some(token.into()),
            ..Default::default()
        }),
        other: Default::default(),
    }];
    for context in kubeconfig
        .contexts
        .iter_mut()
        .filter_map(|c| c.context.as_mut())
    {
        context.user = Some(user.clone());
    }
    let path = dir.join("kubeconfig-controller");
    std::fs::write(&path, serde_json::to_vec_pretty(&kubeconfig)?)?;

    // The authorizer learns of new bindings through a watch: wait until both roles apply.
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let as_controller = Client::try_from(config)?;
    let leases = Api::<Lease>::namespaced(as_controller.clone(), namespace);
    let pods = Api::<Pod>::all(as_controller);
    eventually(
        Duration::from_secs(20),
        "the controller's shipped RBAC to apply",
        || {
            let (leases, pods) = (leases.clone(), pods.clone());
            async move {
                let lease = leases.get_opt("provenant-controller").await;
                let listed = pods.list_metadata(&ListParams::default().limit(1)).await;
                Ok((lease.is_ok() && listed.is_ok()).then_some(()))
            }
        },
    )
    .await?;
    Ok(path)
}

/// Add `names` to the Secrets the controller of `namespace` may read, as an operator edits
/// `resourceNames` in `config/rbac/role.yaml` for each Secret the configuration names
/// (docs/operations.md, "RBAC"); then wait until the authorizer applies it.
pub async fn allow_controller_secrets(
    client: &Client,
    namespace: &str,
    controller_kubeconfig: &Path,
    names: &[&str],
) -> Result<()> {
    let roles = Api::<Role>::namespaced(client.clone(), namespace);
    let mut role = roles.get("provenant-controller").await?;
    let rule = role
        .rules
        .iter_mut()
        .flatten()
        .find(|r| r.resources.iter().flatten().any(|r| r == "secrets"))
        .context("the shipped Role has no rule on Secrets")?;
    let allowed = rule.resource_names.get_or_insert_with(Vec::new);
    allowed.extend(names.iter().map(|n| n.to_string()));
    roles
        .replace("provenant-controller", &PostParams::default(), &role)
        .await?;
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(controller_kubeconfig)?,
        &Default::default(),
    )
    .await?;
    let secrets =
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(Client::try_from(config)?, namespace);
    for name in names {
        eventually(
            Duration::from_secs(20),
            "the controller's access to a named Secret",
            || {
                let secrets = secrets.clone();
                async move {
                    // Ok(None) (404) is allowed; 403 is not yet.
                    Ok(secrets.get_opt(name).await.ok().map(|_| ()))
                }
            },
        )
        .await?;
    }
    Ok(())
}
