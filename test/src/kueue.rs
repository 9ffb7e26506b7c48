//! The real Kueue manager (v0.17.0, `hack/tools/bin/kueue`, built by `hack/tools.sh`) against the
//! test control plane, for the queueing scenarios. One Kueue serves the whole cluster (every
//! scenario test of a binary shares the API server): the first test that asks starts it; it is
//! stopped when the test process exits.
//!
//! Kueue runs as a process on the test machine, not in a pod, so its webhooks are registered with
//! `clientConfig.url` `https://127.0.0.1:PORT/...` and the `caBundle` of a self-signed certificate
//! made here (`internalCertManagement` off). Its pod webhooks only see namespaces labelled
//! [`NAMESPACE_LABEL`], as does its `managedJobsNamespaceSelector`, so the other scenarios' pods
//! never pass through it. Only the `pod` integration is enabled.
//!
//! Kueue v0.17 reads its metrics certificate from the fixed path `/etc/kueue/metrics/certs` when
//! it does not manage certificates itself; the manager is started in a user and mount namespace
//! of its own (`unshare`) with a tmpfs on `/etc` holding that certificate, so nothing on the
//! machine is touched.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::cluster::free_port;
use crate::tools;

/// The namespace label that puts a namespace under Kueue (value `true`).
pub const NAMESPACE_LABEL: &str = "scenario.provenant.dev/kueue";

/// The names of Kueue's MutatingWebhookConfiguration and ValidatingWebhookConfiguration here.
const WEBHOOK_CONFIGURATIONS: [&str; 2] = [
    "kueue-mutating-webhook-configuration",
    "kueue-validating-webhook-configuration",
];

/// The running Kueue manager.
#[derive(Debug)]
pub struct Kueue {
    dir: PathBuf,
}

impl Kueue {
    /// Everything Kueue logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("kueue.log")).unwrap_or_default()
    }
}

static SHARED: OnceCell<Kueue> = OnceCell::const_new();

/// The cluster's Kueue, started on first use against the cluster of `kubeconfig` (which must be
/// the local control plane: Kueue's CRDs and webhooks are cluster-wide).
pub async fn shared(kubeconfig: &Path) -> Result<&'static Kueue> {
    SHARED.get_or_try_init(|| start(kubeconfig)).await
}

async fn start(kubeconfig: &Path) -> Result<Kueue> {
    let binary = tools::path("kueue")?;
    let dir = std::env::temp_dir().join(format!("provenant-kueue-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("certs"))?;
    let kubeconfig = std::fs::canonicalize(kubeconfig)?;
    for file in crd_files()? {
        kubectl(
            &kubeconfig,
            &["apply", "--server-side", "-f", path_str(&file)?],
        )?;
    }
    for file in crd_files()? {
        let name = file
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(|f| f.strip_suffix(".yaml"))
            .and_then(|f| f.split_once('_'))
            .map(|(group, plural)| format!("{plural}.{group}"))
            .context("CRD file name")?;
        kubectl(
            &kubeconfig,
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=30s",
                &format!("crd/{name}"),
            ],
        )?;
    }
    let certs = dir.join("certs");
    let openssl = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(certs.join("tls.key"))
        .arg("-out")
        .arg(certs.join("tls.crt"))
        .stderr(Stdio::piped())
        .output()
        .context("running openssl")?;
    ensure!(
        openssl.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&openssl.stderr)
    );

    let (webhook_port, health_port) = (free_port()?, free_port()?);
    let config = dir.join("config.yaml");
    std::fs::write(&config, configuration(&certs, webhook_port, health_port))?;
    let log = std::fs::File::create(dir.join("kueue.log"))?;
    // Runs Kueue with the metrics certificate at the path it insists on, and when the test
    // process that started it is gone stops it, unregisters its webhooks (whose failurePolicy is
    // Fail: Kueue objects could no longer be written) and removes `dir`.
    let script = r#"
        mount -t tmpfs tmpfs /etc && mkdir -p /etc/kueue/metrics/certs \
            && cp "$1"/certs/tls.crt "$1"/certs/tls.key /etc/kueue/metrics/certs/ || exit 1
        "$2" --config "$1/config.yaml" --kubeconfig "$3" --zap-log-level=2 &
        kueue=$!
        while [ -d "/proc/$4" ] && kill -0 "$kueue" 2>/dev/null; do sleep 1; done
        "$5" --kubeconfig "$3" delete --ignore-not-found --wait=false \
            "mutatingwebhookconfiguration/$6" "validatingwebhookconfiguration/$7"
        kill "$kueue" 2>/dev/null; wait "$kueue"; rm -rf "$1"
    "#;
    Command::new("unshare")
        .args(namespaces()?)
        .args(["sh", "-c", script, "kueue"])
        .arg(&dir)
        .arg(&binary)
        .arg(&kubeconfig)
        .arg(std::process::id().to_string())
        .arg(tools::path("kubectl")?)
        .args(WEBHOOK_CONFIGURATIONS)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting Kueue under unshare (user and mount namespaces)")?;
    let kueue = Kueue { dir: dir.clone() };
    wait_ready(&kueue, health_port).await?;

    let ca = std::fs::read(certs.join("tls.crt"))?;
    let webhooks = dir.join("webhooks.json");
    std::fs::write(
        &webhooks,
        webhook_configurations(&ca, webhook_port)?.to_string(),
    )?;
    kubectl(&kubeconfig, &["apply", "-f", path_str(&webhooks)?])?;
    Ok(kueue)
}

/// `unshare` flags that give Kueue a mount namespace of its own: a user namespace too where the
/// user may create one (no privilege needed), else a mount namespace alone (root).
fn namespaces() -> Result<&'static [&'static str]> {
    const CHOICES: [&[&str]; 2] = [&["--user", "--map-root-user", "--mount"], &["--mount"]];
    for flags in CHOICES {
        let probe = Command::new("unshare")
            .args(flags)
            .args(["sh", "-c", "mount -t tmpfs tmpfs /etc"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if probe.is_ok_and(|s| s.success()) {
            return Ok(flags);
        }
    }
    bail!(
        "cannot run Kueue: `unshare --user --map-root-user --mount` and `unshare --mount` both \
         failed (no user namespaces and no CAP_SYS_ADMIN?); Kueue v0.17 needs its metrics \
         certificate at /etc/kueue/metrics/certs, which the test bed mounts in a namespace of its own"
    )
}

/// Kueue's CRD files, copied by hack/tools.sh from the Kueue module.
fn crd_files() -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(tools::bin_dir().join("crds"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with("kueue.x-k8s.io_"))
        })
        .collect();
    files.sort();
    ensure!(
        !files.is_empty(),
        "no Kueue CRDs in {}/crds: run `make tools`",
        tools::bin_dir().display()
    );
    Ok(files)
}

/// Kueue's configuration: the `pod` integration for labelled namespaces, webhooks on loopback
/// with our certificate, no leader election, no metrics or visibility server (nothing reads them).
fn configuration(certs: &Path, webhook_port: u16, health_port: u16) -> String {
    format!(
        r#"apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
namespace: kueue-system
health:
  healthProbeBindAddress: 127.0.0.1:{health_port}
metrics:
  bindAddress: "0"
webhook:
  host: 127.0.0.1
  port: {webhook_port}
  certDir: {certs}
leaderElection:
  leaderElect: false
internalCertManagement:
  enable: false
managedJobsNamespaceSelector:
  matchLabels:
    {NAMESPACE_LABEL}: "true"
integrations:
  frameworks: ["pod"]
featureGates:
  VisibilityOnDemand: false
"#,
        certs = certs.display()
    )
}

/// Kueue's own webhook configurations (config/components/webhook/manifests.yaml of v0.17.0) for
/// pods and Kueue's resources, pointed at the local manager, the pod ones limited to the
/// labelled namespaces.
fn webhook_configurations(ca: &[u8], port: u16) -> Result<Value> {
    let path = tools::bin_dir().join("kueue-webhooks.yaml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: run `make tools`", path.display()))?;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    let mut items = Vec::new();
    for mut doc in serde_saphyr::from_multiple::<Value>(&text)? {
        let name = match doc["kind"].as_str() {
            Some("MutatingWebhookConfiguration") => WEBHOOK_CONFIGURATIONS[0],
            Some("ValidatingWebhookConfiguration") => WEBHOOK_CONFIGURATIONS[1],
            other => bail!("{}: unexpected {other:?}", path.display()),
        };
        doc["metadata"] = json!({"name": name});
        let mut kept = Vec::new();
        for mut webhook in doc["webhooks"].as_array().cloned().unwrap_or_default() {
            let groups: Vec<&str> = webhook["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["apiGroups"].as_array().into_iter().flatten())
                .filter_map(Value::as_str)
                .collect();
            let pods = groups.iter().all(|g| g.is_empty())
                && webhook["rules"][0]["resources"] == json!(["pods"]);
            if !pods && !groups.iter().all(|g| *g == "kueue.x-k8s.io") {
                continue; // another integration (Jobs, JobSets, ...): not enabled
            }
            let path = webhook["clientConfig"]["service"]["path"]
                .as_str()
                .context("webhook path")?
                .to_string();
            webhook["clientConfig"] =
                json!({"url": format!("https://127.0.0.1:{port}{path}"), "caBundle": ca});
            if pods {
                webhook["namespaceSelector"] = json!({"matchLabels": {NAMESPACE_LABEL: "true"}});
            }
            kept.push(webhook);
        }
        doc["webhooks"] = Value::Array(kept);
        items.push(doc);
    }
    Ok(json!({"apiVersion": "v1", "kind": "List", "items": items}))
}

async fn wait_ready(kueue: &Kueue, health_port: u16) -> Result<()> {
    let url = format!("http://127.0.0.1:{health_port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(&url).await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("Kueue not ready after 60 s:\n{}", kueue.log_text());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().context("non-UTF-8 path")
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(tools::path("kubectl")?)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()?;
    ensure!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
