//! Kubernetes API-server double (see test/README.md, section "API-server double").
//!
//! No kube-apiserver can run where provenant's integration tests run, so this module serves the
//! Kubernetes REST API (JSON) over real HTTP on a loopback port, faithfully enough that kube-rs
//! (`Client`, `Api`, `watcher`, `Controller`, `Recorder`) and kube-lease-manager work against it
//! unchanged: clients are built from a kubeconfig, exactly as for a cluster.
//!
//! Layout: [`ApiServer`] (this file) is the public edge; `routes` parses REST paths; `store`
//! holds objects, resourceVersions and the watch history (`store/write.rs`: admission, create,
//! update, patch, binding; `store/delete.rs`: deletion and garbage collection); `watch` streams
//! events; `selectors`,
//! `patch`, `schema` (CRD pruning/defaulting/validation), `discovery`, `resources` (built-in and
//! CRD-defined types), `meta` and `errors` (Kubernetes `Status`) are the pieces.

mod discovery;
mod errors;
mod meta;
mod patch;
mod resources;
mod routes;
mod schema;
mod selectors;
mod store;
mod watch;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{oneshot, watch as tokio_watch};
use tokio::task::JoinHandle;

use store::Store;

/// Tunables of an [`ApiServer`]; the defaults suit tests.
#[derive(Debug, Clone)]
pub struct ApiServerOptions {
    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK (a real server: ~1 min).
    pub bookmark_interval: Duration,
    /// Watch events retained for resuming watches; older resourceVersions get 410 Expired.
    pub history_limit: usize,
    /// How long a watch without `timeoutSeconds` stays open.
    pub watch_timeout: Duration,
}

impl Default for ApiServerOptions {
    fn default() -> Self {
        ApiServerOptions {
            bookmark_interval: Duration::from_secs(1),
            history_limit: 10_000,
            watch_timeout: Duration::from_secs(1800),
        }
    }
}

/// One request the server answered (for assertions and benchmarks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// Raw query string (still percent-encoded), `""` when absent.
    pub query: String,
    pub user_agent: String,
    pub status: u16,
    /// Time to the response head (for a watch: until the stream started).
    pub elapsed: Duration,
}

/// State shared by the HTTP handlers and watch tasks.
pub(crate) struct Shared {
    store: Mutex<Store>,
    /// Latest resourceVersion; every write bumps it, which wakes the watch tasks.
    rv_tx: tokio_watch::Sender<u64>,
    /// Bumped by `close_watches()` and shutdown: every open watch ends.
    close_tx: tokio_watch::Sender<u64>,
    shutting_down: AtomicBool,
    requests: Mutex<Vec<RequestRecord>>,
    options: ApiServerOptions,
    addr: SocketAddr,
}

impl Shared {
    /// The store lock. A panic elsewhere cannot leave the store half-written (writes are
    /// committed at their end), so a poisoned lock is still usable.
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, r: RequestRecord) {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r);
    }

    fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    fn close_watches(&self) {
        self.close_tx.send_modify(|epoch| *epoch += 1);
    }
}

/// An in-process Kubernetes API server on `127.0.0.1:<random port>`. Shuts down on drop.
pub struct ApiServer {
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Starts a server with the default options, namespaces `default`, `kube-system` and
    /// `kube-public` already created.
    pub async fn start() -> anyhow::Result<ApiServer> {
        Self::start_with(ApiServerOptions::default()).await
    }

    pub async fn start_with(options: ApiServerOptions) -> anyhow::Result<ApiServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the API-server double to 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let (rv_tx, _) = tokio_watch::channel(0u64);
        let (close_tx, _) = tokio_watch::channel(0u64);
        let store = Store::new(options.history_limit, rv_tx.clone());
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            rv_tx,
            close_tx,
            shutting_down: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
            options,
            addr,
        });
        let app = axum::Router::new()
            .fallback(routes::handle)
            .with_state(shared.clone());
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = shutdown_rx.await;
                })
                .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "API-server double stopped with an error");
            }
        });
        tracing::debug!(%addr, "API-server double listening");
        Ok(ApiServer {
            shared,
            shutdown: Some(shutdown_tx),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A kubeconfig with one cluster/user/context (`provenant-double`, namespace `default`)
    /// pointing at [`url`](Self::url).
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: provenant-double
  cluster:
    server: {url}
users:
- name: provenant-double
  user:
    token: provenant-double-token
contexts:
- name: provenant-double
  context:
    cluster: provenant-double
    user: provenant-double
    namespace: default
current-context: provenant-double
preferences: {{}}
",
            url = self.url()
        )
    }

    pub fn write_kubeconfig(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
            .with_context(|| format!("writing kubeconfig {}", path.display()))
    }

    /// A client built from [`kubeconfig_yaml`](Self::kubeconfig_yaml), by the same code path as
    /// for a real cluster.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml())?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Drops the watch-event history: a watch or a list `continue` from any resourceVersion
    /// handed out before now gets 410 Expired (watches already streaming are not affected;
    /// combine with [`close_watches`](Self::close_watches) to make clients resume and fail).
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Ends every open watch stream; clients then resume from their last resourceVersion.
    pub fn close_watches(&self) {
        self.shared.close_watches();
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the request log (e.g. between benchmark phases).
    pub fn clear_requests(&self) {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().current_rv()
    }

    /// Stops accepting connections, ends all watches and waits (up to 5 s) for the server to
    /// finish.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    fn begin_shutdown(&mut self) {
        self.shared.shutting_down.store(true, Ordering::Relaxed);
        self.shared.close_watches();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.begin_shutdown();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
