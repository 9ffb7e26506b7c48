//! One cluster per test: the API-server double with provenant's CRDs installed, or — when
//! `E2E_KUBECONFIG` is set — the real cluster it names. Each test gets a fresh namespace, so tests
//! can share a real cluster. Also runs the real `provenant` binary as a child process against it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::apiserver::ApiServer;

/// Directory of the generated CRDs (`crds/` at the repository root).
pub fn crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds")
}

/// The user [`Cluster::tenant`] acts as.
pub const TENANT: &str = "tenant@example.com";
/// The label a test puts on its MaterialRevocations (value: the test's namespace), the only
/// ones its controller acts on (`--revocation-selector`).
pub const REVOCATION_LABEL: &str = "scenario.provenant.dev/namespace";

/// A cluster for one test.
pub struct Cluster {
    pub client: Client,
    /// The test's own namespace (where runs go).
    pub namespace: String,
    /// The controller's namespace (its Lease and Secrets): `<namespace>-system`.
    pub controller_namespace: String,
    /// The double, when not running against a real cluster.
    pub server: Option<ApiServer>,
    kubeconfig: PathBuf,
    /// What the controller process connects with: on a real cluster a token of its ServiceAccount
    /// bound by the shipped `config/rbac` ([`crate::rbac`]); on the double the admin kubeconfig.
    controller_kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Start (or connect to) a cluster, install `crds/`, create a fresh namespace: the cluster
    /// of `E2E_KUBECONFIG` when set (`make test` sets it to its local control plane), else the
    /// double.
    pub async fn start() -> Result<Cluster> {
        Self::start_on(std::env::var_os("E2E_KUBECONFIG")).await
    }

    /// The API-server double, whatever `E2E_KUBECONFIG` says: for a scenario that needs a fault
    /// a real server cannot produce on demand (expired resourceVersions, dropped watches) or its
    /// request log.
    pub async fn start_double() -> Result<Cluster> {
        Self::start_on(None).await
    }

    /// The cluster of `E2E_KUBECONFIG`, or None (with a note on stderr) when it is not set: for
    /// a scenario only a real API server can answer (CEL rules, built-in controllers). With
    /// `E2E_REQUIRE_REAL` set (`make test`, `make e2e`), a missing cluster is an error, so such a
    /// scenario can never pass without running.
    pub async fn start_real() -> Result<Option<Cluster>> {
        match std::env::var_os("E2E_KUBECONFIG") {
            Some(path) => Ok(Some(Self::start_on(Some(path)).await?)),
            None if std::env::var_os("E2E_REQUIRE_REAL").is_some() => {
                bail!(
                    "E2E_REQUIRE_REAL is set but E2E_KUBECONFIG is not: no real cluster to run on"
                )
            }
            None => {
                eprintln!(
                    "skipped: this scenario needs a real API server (E2E_KUBECONFIG; `make test` starts one)"
                );
                Ok(None)
            }
        }
    }

    async fn start_on(kubeconfig_path: Option<std::ffi::OsString>) -> Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        let (client, server) = match kubeconfig_path {
            Some(path) => {
                std::fs::copy(&path, &kubeconfig).with_context(|| {
                    format!("reading E2E_KUBECONFIG={}", path.to_string_lossy())
                })?;
                let config = kube::Config::from_custom_kubeconfig(
                    kube::config::Kubeconfig::read_from(&kubeconfig)?,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await?;
                (Client::try_from(config)?, None)
            }
            None => {
                let server = ApiServer::start().await?;
                server.write_kubeconfig(&kubeconfig)?;
                (server.client().await?, Some(server))
            }
        };
        install_crds(&client).await?;
        let namespace = format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let controller_namespace = format!("{namespace}-system");
        for name in [&namespace, &controller_namespace] {
            let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
            Api::<Namespace>::all(client.clone())
                .create(&PostParams::default(), &ns)
                .await
                .context("creating the test namespaces")?;
        }
        // A real API server without a controller-manager has no `default` ServiceAccount, and the
        // ServiceAccount admission plugin refuses pods without it.
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "default"}}))?;
        match Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
            .create(&PostParams::default(), &sa)
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let controller_kubeconfig = if server.is_none() {
            crate::rbac::install_controller_rbac(
                &client,
                &controller_namespace,
                &kubeconfig,
                dir.path(),
            )
            .await
            .context("installing the controller's shipped RBAC")?
        } else {
            kubeconfig.clone()
        };
        Ok(Cluster {
            client,
            namespace,
            controller_namespace,
            server,
            kubeconfig,
            controller_kubeconfig,
            dir,
        })
    }

    /// True when running against a real cluster (`E2E_KUBECONFIG`).
    pub fn is_real(&self) -> bool {
        self.server.is_none()
    }

    /// True on the throwaway control plane `hack/with-cluster.sh` started for this run (not a
    /// cluster someone else named with `E2E_KUBECONFIG`).
    pub fn is_local_control_plane(&self) -> bool {
        self.is_real() && std::env::var("E2E_LOCAL_CONTROL_PLANE").is_ok_and(|v| v == "1")
    }

    /// Pods created in the test namespace, counted from the API server's own record: the
    /// double's request log, or on a real cluster the audit log of `E2E_AUDIT_LOG` (which
    /// `hack/cluster.sh` writes). None on a real cluster without one.
    pub fn pod_creates(&self) -> Result<Option<usize>> {
        let path = format!("/namespaces/{}/pods", self.namespace);
        if let Some(server) = &self.server {
            return Ok(Some(
                server
                    .requests()
                    .iter()
                    .filter(|r| r.method == "POST" && r.path.ends_with(&path) && r.status == 201)
                    .count(),
            ));
        }
        let Some(log) = std::env::var_os("E2E_AUDIT_LOG") else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(&log)
            .with_context(|| format!("reading E2E_AUDIT_LOG={}", log.to_string_lossy()))?;
        let mut count = 0;
        // Whole lines only: other tests' pod creates may be being written right now.
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let event: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("an audit event of {}", log.to_string_lossy()))?;
            let created = event["verb"] == "create"
                && event["stage"] == "ResponseComplete"
                && event["objectRef"]["resource"] == "pods"
                && event["objectRef"]["subresource"].is_null()
                && event["objectRef"]["namespace"] == self.namespace.as_str()
                && event["responseStatus"]["code"] == 201;
            count += usize::from(created);
        }
        Ok(Some(count))
    }

    /// A client acting as a tenant of the test namespace, as anyone with the namespace's `edit`
    /// role would: on a real cluster the user [`TENANT`], bound there to the built-in `edit`
    /// ClusterRole and impersonated, so the API server enforces exactly what such a user may do;
    /// on the double (which has no authorization), the same client as everyone else.
    pub async fn tenant(&self) -> Result<Client> {
        if !self.is_real() {
            return Ok(self.client.clone());
        }
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "tenant-edit"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": TENANT}],
        }))?;
        match Api::<RoleBinding>::namespaced(self.client.clone(), &self.namespace)
            .create(&PostParams::default(), &binding)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e).context("binding the tenant to the edit role"),
        }
        let mut config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&self.kubeconfig)?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        config.auth_info.impersonate = Some(TENANT.to_string());
        let client = Client::try_from(config)?;
        // The authorizer learns of the binding through a watch: wait until it applies.
        let probe = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
            client.clone(),
            &self.namespace,
        );
        eventually(
            Duration::from_secs(10),
            "the tenant's edit role to apply",
            || {
                let probe = probe.clone();
                async move {
                    // `edit` gets its rules from the controller-manager's aggregation controller.
                    Ok(probe.list(&Default::default()).await.ok().map(|_| ()))
                }
            },
        )
        .await?;
        Ok(client)
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Let the controller read the Secrets `names` of its namespace besides those the shipped Role
    /// names, as an operator would for Secrets its configuration names (no-op on the double).
    pub async fn allow_controller_secrets(&self, names: &[&str]) -> Result<()> {
        if !self.is_real() {
            return Ok(());
        }
        crate::rbac::allow_controller_secrets(
            &self.client,
            &self.controller_namespace,
            &self.controller_kubeconfig,
            names,
        )
        .await
    }

    /// The kubeconfig [`ControllerProcess`] runs with: on a real cluster the controller's
    /// ServiceAccount under the shipped RBAC, never the admin.
    pub fn controller_kubeconfig(&self) -> &Path {
        &self.controller_kubeconfig
    }

    /// An API in the controller's namespace.
    pub fn controller_api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.controller_namespace)
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// A scratch directory that lives as long as the cluster.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Install (or update) every CRD in `crds/`, exactly as `kubectl apply -f crds/` would, and wait
/// until they are established.
pub async fn install_crds(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(crds_dir())? {
        let path = entry?.path();
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        if !file.ends_with(".yaml") || file == "kustomization.yaml" {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        // One file may hold several CRDs (TrainingRun and MaterialRevocation).
        let crds: Vec<CustomResourceDefinition> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("parsing {}", path.display()))?;
        for crd in crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            api.patch(
                &name,
                &PatchParams::apply("provenant-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .with_context(|| format!("installing {name} from {}", path.display()))?;
            names.push(name);
        }
    }
    for name in names {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let crd = api.get(&name).await?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if Instant::now() > deadline {
                bail!("CRD {name} not established after 30s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// A free loopback port (bound and released; good enough for tests on one machine).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The `provenant controller` binary running against a cluster.
pub struct ControllerProcess {
    child: Option<Child>,
    pub port: u16,
    pub log: PathBuf,
    pub identity: String,
}

impl ControllerProcess {
    /// Start `binary controller` with the cluster's kubeconfig, acting on the test namespace, with
    /// its Lease and Secrets in the controller namespace. `extra` adds flags.
    pub fn start(
        binary: &Path,
        cluster: &Cluster,
        identity: &str,
        extra: &[&str],
    ) -> Result<ControllerProcess> {
        let port = free_port()?;
        let log = cluster.dir().join(format!("controller-{identity}.log"));
        let stderr = std::fs::File::create(&log)?;
        // `extra` may name another namespace to watch.
        let namespace = if extra.iter().any(|a| a.starts_with("--namespace")) {
            None
        } else {
            Some(format!("--namespace={}", cluster.namespace))
        };
        // Every test's controller watches all MaterialRevocations (cluster-scoped): without a
        // selector, concurrent tests' controllers would all write each revocation's status.
        let revocations =
            (!extra.iter().any(|a| a.starts_with("--revocation-selector"))).then(|| {
                format!(
                    "--revocation-selector={REVOCATION_LABEL}={}",
                    cluster.namespace
                )
            });
        let child = Command::new(binary)
            .arg("controller")
            .args(namespace)
            .args(revocations)
            .arg(format!("--health-addr=127.0.0.1:{port}"))
            .arg(format!(
                "--controller-namespace={}",
                cluster.controller_namespace
            ))
            .arg(format!("--leader-election-identity={identity}"))
            .arg("--lease-duration-seconds=3")
            .args(extra)
            .env("KUBECONFIG", cluster.controller_kubeconfig())
            .env(
                "RUST_LOG",
                std::env::var("PROVENANT_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_NAME")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(ControllerProcess {
            child: Some(child),
            port,
            log,
            identity: identity.to_string(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// GET a path of the controller's HTTP port: (status, body).
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        let response = reqwest::get(self.url(path)).await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    /// Wait until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = self.get("/readyz").await {
                return Ok(());
            }
            if let Some(status) = self.try_wait()? {
                bail!(
                    "controller exited with {status} before it was ready:\n{}",
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "controller not ready after {timeout:?}:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The Prometheus exposition text.
    pub async fn metrics(&self) -> Result<String> {
        Ok(self.get("/metrics").await?.1)
    }

    /// Everything the controller logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => bail!("controller already reaped"),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Send SIGTERM (what the kubelet does) and wait for the exit.
    pub async fn terminate(mut self, timeout: Duration) -> Result<ExitStatus> {
        let pid = self.pid().context("no child")?;
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "controller did not exit within {timeout:?} of SIGTERM:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: a crash, nothing gets to clean up.
    pub fn kill(mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Poll `check` every 100 ms until it returns Some, or fail after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() > deadline {
            match last_error {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
