//! Registry fixture: a real CNCF distribution registry (Debian's `docker-registry`, 2.8) on a
//! random loopback port, plus small clients for the distribution HTTP API that tests need to push
//! and inspect content. See `test/README.md` ("Registry fixture").
//!
//! The HTTP helpers are written directly against the distribution API (independent of the
//! controller's own registry code) so tests can check the controller's output from the outside.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use provenant_testbed::registry::Registry;
//! let registry = Registry::from_env_or_start().await?;
//! let model = registry.push_model("models/mnist", "v1", &[("model.safetensors", b"weights")]).await?;
//! assert!(registry.get_manifest("models/mnist", &model.digest).await?.is_some());
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// OCI image manifest media type.
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest v2 schema 2 media type.
pub const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST_MEDIA_TYPE: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI 1.1 empty descriptor media type (config of artifacts, content `{}`).
pub const OCI_EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// Content of the OCI 1.1 empty blob.
pub const OCI_EMPTY_BLOB: &[u8] = b"{}";
/// `artifactType` of the model artifacts pushed by [`Registry::push_model`].
pub const MODEL_ARTIFACT_TYPE: &str = "application/vnd.provenant.model.v1";
/// Media type of each file layer of a model artifact pushed by [`Registry::push_model`].
pub const MODEL_FILE_MEDIA_TYPE: &str = "application/octet-stream";
/// Annotation carrying a layer's file name.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";

/// Environment variable naming an external registry (`host[:port]`, plain HTTP) used by
/// [`Registry::from_env_or_start`] instead of starting one.
pub const E2E_REGISTRY_ENV: &str = "E2E_REGISTRY";
/// Environment variable overriding the path of the `docker-registry` binary.
pub const REGISTRY_BIN_ENV: &str = "PROVENANT_REGISTRY_BIN";

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// Descriptor of `bytes` with `media_type` (digest and size computed).
    pub fn of(media_type: &str, bytes: &[u8]) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest: sha256_digest(bytes),
            size: bytes.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The OCI 1.1 empty descriptor (`application/vnd.oci.empty.v1+json`, `{}`).
    pub fn empty() -> Self {
        Descriptor::of(OCI_EMPTY_MEDIA_TYPE, OCI_EMPTY_BLOB)
    }

    pub fn with_annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }

    pub fn with_artifact_type(mut self, artifact_type: &str) -> Self {
        self.artifact_type = Some(artifact_type.to_string());
        self
    }
}

/// A manifest read back from the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    /// `Content-Type` the registry served it with.
    pub media_type: String,
    /// The exact bytes stored.
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of `bytes` (checked against `Docker-Content-Digest` when present).
    pub digest: String,
}

impl FetchedManifest {
    /// The manifest parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.bytes).context("manifest is not JSON")
    }
}

/// A model artifact pushed by [`Registry::push_model`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    /// Registry host, e.g. `127.0.0.1:5000`.
    pub registry: String,
    /// Full repository, `host/repo` (what a TrainingRun's `spec.output.repository` names).
    pub repository: String,
    /// Repository path inside the registry, e.g. `models/mnist`.
    pub repo: String,
    pub tag: String,
    /// Manifest digest, `sha256:<hex>`.
    pub digest: String,
    /// `host/repo@sha256:<hex>`.
    pub reference: String,
    /// The manifest bytes pushed.
    pub manifest: Vec<u8>,
    /// One descriptor per file, in the order given (title annotation = file name).
    pub layers: Vec<Descriptor>,
}

impl ModelRef {
    /// The manifest's descriptor (e.g. as the `subject` of a referrer).
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::of(OCI_MANIFEST_MEDIA_TYPE, &self.manifest)
            .with_artifact_type(MODEL_ARTIFACT_TYPE)
    }
}

/// A distribution registry for tests: a local `docker-registry` process, or an external one
/// (`E2E_REGISTRY`).
pub struct Registry {
    host: String,
    http: reqwest::Client,
    local: Option<LocalProcess>,
}

struct LocalProcess {
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl LocalProcess {
    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }
    fn storage_path(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    fn write_config(&self) -> Result<()> {
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  formatter: text\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: provenant-testbed-not-a-secret\n\
             health:\n  storagedriver:\n    enabled: false\n",
            storage = self.storage_path().display(),
            port = self.port,
        );
        std::fs::write(self.config_path(), config).context("writing registry config.yml")
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening registry log file")?;
        let child = Command::new(&self.binary)
            .arg("serve")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills the process by its own PID and reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn log_tail(&self, max_bytes: u64) -> String {
        let Ok(mut f) = File::open(self.log_path()) else {
            return String::from("<no log>");
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(max_bytes)));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn find_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(REGISTRY_BIN_ENV) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("{REGISTRY_BIN_ENV}={} does not exist", p.display());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let candidates = std::env::split_paths(&path)
        .map(|d| d.join("docker-registry"))
        .chain([PathBuf::from("/usr/bin/docker-registry")]);
    for c in candidates {
        if c.is_file() {
            return Ok(c);
        }
    }
    bail!(
        "the `docker-registry` binary (CNCF distribution 2.8) was not found in $PATH or /usr/bin; \
         install it with .ci/install-registry.sh (Debian package docker-registry), \
         or set {E2E_REGISTRY_ENV}=host:port to use an external registry"
    )
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    Ok(l.local_addr()?.port())
}

fn http_client(proxy: bool) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(120));
    if !proxy {
        b = b.no_proxy();
    }
    b.build().context("building HTTP client")
}

async fn error_text(resp: reqwest::Response) -> String {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let mut body = body.trim().to_string();
    if body.len() > 2000 {
        body.truncate(2000);
        body.push('…');
    }
    format!("HTTP {status}: {body}")
}

impl Registry {
    /// Starts `docker-registry` on a random free loopback port with filesystem storage in a temp
    /// dir, and waits until `GET /v2/` answers 200.
    pub async fn start() -> Result<Registry> {
        let binary = find_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("provenant-registry-")
            .tempdir()
            .context("creating registry temp dir")?;
        let mut local = LocalProcess {
            binary,
            dir,
            port: 0,
            child: None,
        };
        let mut last_err = None;
        // The port is probed free then handed to the registry: retry if someone took it meanwhile.
        for _ in 0..5 {
            local.port = free_port()?;
            local.write_config()?;
            let mut reg = Registry {
                host: format!("127.0.0.1:{}", local.port),
                http: http_client(false)?,
                local: None,
            };
            local.spawn()?;
            reg.local = Some(local);
            match reg.wait_ready().await {
                Ok(()) => {
                    tracing::debug!(host = %reg.host, "registry started");
                    return Ok(reg);
                }
                Err(e) => {
                    let mut l = reg.local.take().expect("set above");
                    l.kill();
                    let in_use = l.log_tail(4096).contains("address already in use");
                    last_err = Some(e);
                    if !in_use {
                        break;
                    }
                    local = l;
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("registry did not start")))
    }

    /// Uses the external registry named by `E2E_REGISTRY` (`host[:port]`, plain HTTP) if set,
    /// otherwise [`Registry::start`]s one.
    pub async fn from_env_or_start() -> Result<Registry> {
        match std::env::var(E2E_REGISTRY_ENV) {
            Ok(host) if !host.trim().is_empty() => Registry::external(&host).await,
            _ => Registry::start().await,
        }
    }

    /// An already running registry at `host[:port]` (plain HTTP); checks `GET /v2/`.
    pub async fn external(host: &str) -> Result<Registry> {
        let host = host
            .trim()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let reg = Registry {
            host,
            http: http_client(true)?,
            local: None,
        };
        let resp = reg
            .http
            .get(reg.v2(""))
            .send()
            .await
            .with_context(|| format!("external registry {} unreachable", reg.host))?;
        if resp.status() != StatusCode::OK {
            bail!(
                "external registry {}: GET /v2/ -> {}",
                reg.host,
                error_text(resp).await
            );
        }
        Ok(reg)
    }

    /// `host:port`, e.g. `127.0.0.1:41234`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }

    /// Whether this registry was started by the fixture (false for `E2E_REGISTRY`).
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// Whether the local registry process is running (always true for an external registry).
    pub fn is_running(&mut self) -> bool {
        match &mut self.local {
            None => true,
            Some(l) => l.child.is_some() && l.exited().is_none(),
        }
    }

    /// The HTTP client used by the helpers (no proxy for the local registry), for raw requests.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Storage directory of the local registry.
    pub fn storage_dir(&self) -> Option<PathBuf> {
        self.local.as_ref().map(|l| l.storage_path())
    }

    /// Path of the local registry's log file.
    pub fn log_path(&self) -> Option<PathBuf> {
        self.local.as_ref().map(|l| l.log_path())
    }

    /// The last few KiB of the local registry's log.
    pub fn log_tail(&self) -> String {
        self.local
            .as_ref()
            .map(|l| l.log_tail(8192))
            .unwrap_or_default()
    }

    /// Makes the registry unavailable: kills the local process (connections are then refused).
    /// Storage and port are kept for [`Registry::restart`].
    pub async fn stop(&mut self) -> Result<()> {
        let Some(l) = &mut self.local else {
            bail!("cannot stop an external registry ({})", self.host);
        };
        if let Some(child) = &mut l.child {
            let _ = child.kill();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    bail!("registry pid {} did not exit after SIGKILL", child.id());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            l.child = None;
        }
        Ok(())
    }

    /// Starts the local registry again on the same port with the same storage (stops it first
    /// if it is running) and waits until it answers.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        let l = self.local.as_mut().expect("checked by stop");
        l.spawn()?;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = self.v2("");
        loop {
            if let Some(l) = &mut self.local
                && let Some(status) = l.exited()
            {
                l.child = None;
                bail!(
                    "docker-registry exited ({status}) before answering on {}; log tail:\n{}",
                    self.host,
                    self.log_tail()
                );
            }
            match self.http.get(&url).send().await {
                Ok(r) if r.status() == StatusCode::OK => return Ok(()),
                _ if Instant::now() > deadline => {
                    bail!(
                        "docker-registry did not answer 200 on {url} within {READY_TIMEOUT:?}; log tail:\n{}",
                        self.log_tail()
                    );
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn v2(&self, path: &str) -> String {
        format!("http://{}/v2/{}", self.host, path)
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("http://{}{}", self.host, location)
        }
    }

    /// Whether blob `digest` exists in `repo`.
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        let resp = self
            .http
            .head(self.v2(&format!("{repo}/blobs/{digest}")))
            .send()
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => bail!("HEAD blob {repo}@{digest}: {}", error_text(resp).await),
        }
    }

    /// Uploads a blob (POST + monolithic PUT; skipped when it already exists); returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Result<String> {
        let digest = sha256_digest(bytes);
        if self.blob_exists(repo, &digest).await? {
            return Ok(digest);
        }
        let resp = self
            .http
            .post(self.v2(&format!("{repo}/blobs/uploads/")))
            .header(CONTENT_LENGTH, "0")
            .send()
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            bail!("starting upload to {repo}: {}", error_text(resp).await);
        }
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow!("upload to {repo}: no Location header"))?;
        let mut url = self.absolute(location);
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("digest=");
        url.push_str(&digest);
        let resp = self
            .http
            .put(url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, bytes.len())
            .body(bytes.to_vec())
            .send()
            .await?;
        if resp.status() != StatusCode::CREATED {
            bail!(
                "finishing upload of {digest} to {repo}: {}",
                error_text(resp).await
            );
        }
        Ok(digest)
    }

    /// Downloads a blob; `None` when it does not exist. The content is checked against `digest`.
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Result<Option<Vec<u8>>> {
        let resp = self
            .http
            .get(self.v2(&format!("{repo}/blobs/{digest}")))
            .send()
            .await?;
        match resp.status() {
            StatusCode::OK => {
                let bytes = resp.bytes().await?.to_vec();
                let actual = sha256_digest(&bytes);
                if actual != digest {
                    bail!("blob {repo}@{digest}: content hashes to {actual}");
                }
                Ok(Some(bytes))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => bail!("GET blob {repo}@{digest}: {}", error_text(resp).await),
        }
    }

    /// Puts a manifest under `reference` (a tag or its digest); returns its digest (sha256 of
    /// `bytes`, checked against the registry's `Docker-Content-Digest`).
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String> {
        let digest = sha256_digest(bytes);
        let resp = self
            .http
            .put(self.v2(&format!("{repo}/manifests/{reference}")))
            .header(CONTENT_TYPE, media_type)
            .body(bytes.to_vec())
            .send()
            .await?;
        if resp.status() != StatusCode::CREATED {
            bail!(
                "PUT manifest {repo}:{reference}: {}",
                error_text(resp).await
            );
        }
        if let Some(served) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            && served != digest
        {
            bail!(
                "PUT manifest {repo}:{reference}: registry says digest {served}, expected {digest}"
            );
        }
        Ok(digest)
    }

    /// Reads a manifest by tag or digest; `None` when it does not exist.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<FetchedManifest>> {
        let resp = self
            .http
            .get(self.v2(&format!("{repo}/manifests/{reference}")))
            .header(ACCEPT, MANIFEST_ACCEPT)
            .send()
            .await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => bail!(
                "GET manifest {repo}:{reference}: {}",
                error_text(resp).await
            ),
        }
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let served = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await?.to_vec();
        let digest = sha256_digest(&bytes);
        if let Some(served) = served
            && served != digest
        {
            bail!(
                "manifest {repo}:{reference}: registry says digest {served}, content is {digest}"
            );
        }
        if reference.starts_with("sha256:") && reference != digest {
            bail!("manifest {repo}@{reference}: content hashes to {digest}");
        }
        Ok(Some(FetchedManifest {
            media_type,
            bytes,
            digest,
        }))
    }

    /// The digest a tag points to (HEAD), `None` when the tag does not exist.
    pub async fn resolve(&self, repo: &str, reference: &str) -> Result<Option<String>> {
        let resp = self
            .http
            .head(self.v2(&format!("{repo}/manifests/{reference}")))
            .header(ACCEPT, MANIFEST_ACCEPT)
            .send()
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)),
            StatusCode::NOT_FOUND => Ok(None),
            s => bail!("HEAD manifest {repo}:{reference}: HTTP {s}"),
        }
    }

    /// Deletes a manifest by digest; false when it did not exist.
    pub async fn delete_manifest(&self, repo: &str, digest: &str) -> Result<bool> {
        let resp = self
            .http
            .delete(self.v2(&format!("{repo}/manifests/{digest}")))
            .send()
            .await?;
        match resp.status() {
            StatusCode::ACCEPTED | StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => bail!(
                "DELETE manifest {repo}@{digest}: {}",
                error_text(resp).await
            ),
        }
    }

    /// Tags of `repo`, sorted; empty when the repository does not exist.
    pub async fn list_tags(&self, repo: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let mut url = self.v2(&format!("{repo}/tags/list"));
        let mut tags = Vec::new();
        loop {
            let resp = self.http.get(&url).send().await?;
            match resp.status() {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND => return Ok(Vec::new()),
                _ => bail!("GET tags of {repo}: {}", error_text(resp).await),
            }
            // Pagination: `Link: </v2/<repo>/tags/list?last=..&n=..>; rel="next"`.
            let next = resp
                .headers()
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.split(';').next())
                .map(|l| {
                    l.trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_string()
                });
            let list: TagList = resp.json().await.context("tag list is not JSON")?;
            tags.extend(list.tags.unwrap_or_default());
            match next {
                Some(n) if !n.is_empty() => url = self.absolute(&n),
                _ => break,
            }
        }
        tags.sort();
        Ok(tags)
    }

    /// Pushes a model as an OCI 1.1 artifact and tags it: an OCI image manifest with
    /// `artifactType` [`MODEL_ARTIFACT_TYPE`], the empty config (`application/vnd.oci.empty.v1+json`,
    /// `{}`), one [`MODEL_FILE_MEDIA_TYPE`] layer per file annotated with
    /// `org.opencontainers.image.title` = file name. The manifest is deterministic (no timestamps):
    /// the same files give the same digest.
    pub async fn push_model(
        &self,
        repo: &str,
        tag: &str,
        files: &[(&str, &[u8])],
    ) -> Result<ModelRef> {
        // Concurrent first pushes of the same blob to a fresh repository race in distribution 2.8:
        // the manifest PUT can then fail with MANIFEST_BLOB_UNKNOWN although every upload
        // succeeded. Pushing the blobs again settles it (many pods finishing at once do this).
        let mut attempt = 1;
        let (layers, manifest, digest) = loop {
            self.push_blob(repo, OCI_EMPTY_BLOB).await?;
            let mut layers = Vec::with_capacity(files.len());
            for (name, bytes) in files {
                self.push_blob(repo, bytes).await?;
                layers.push(
                    Descriptor::of(MODEL_FILE_MEDIA_TYPE, bytes)
                        .with_annotation(TITLE_ANNOTATION, name),
                );
            }
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST_MEDIA_TYPE,
                "artifactType": MODEL_ARTIFACT_TYPE,
                "config": Descriptor::empty(),
                "layers": layers,
            });
            let manifest = serde_json::to_vec(&manifest)?;
            match self
                .push_manifest(repo, tag, OCI_MANIFEST_MEDIA_TYPE, &manifest)
                .await
            {
                Ok(digest) => break (layers, manifest, digest),
                Err(e) if attempt < 5 && format!("{e:#}").contains("MANIFEST_BLOB_UNKNOWN") => {
                    tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        Ok(ModelRef {
            registry: self.host.clone(),
            repository: format!("{}/{repo}", self.host),
            repo: repo.to_string(),
            tag: tag.to_string(),
            reference: format!("{}/{repo}@{digest}", self.host),
            digest,
            manifest,
            layers,
        })
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("host", &self.host)
            .field(
                "local",
                &self.local.as_ref().map(|l| l.dir.path().to_path_buf()),
            )
            .finish()
    }
}
