//! `provenant controller`: connects to the cluster, serves the HTTP port, takes the leader Lease,
//! and while it leads runs the TrainingRun controller (kube-runtime `Controller` owning the worker
//! Pods and Services) and the MaterialRevocation controller beside it. Stops cleanly on SIGTERM /
//! Ctrl-C.

mod publishing;

use publishing::{log_repository_policy, start_publisher};

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::Client;
use kube::api::{Api, ListParams, PartialObjectMeta};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::api::{MaterialRevocation, TrainingRun};
use crate::client::{self, ClientError, RateLimit};
use crate::config::{ConfigError, ControllerConfig};
use crate::reconcile::publish;
use crate::reconcile::publisher::Publisher;
use crate::reconcile::queue::ProvenanceQueue;
use crate::reconcile::{self, Context, revocation};
use crate::{labels, server};

/// Options of `provenant controller`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Configuration file; the embedded defaults when None.
    pub config: Option<PathBuf>,
    /// Watch only this namespace; all namespaces when None.
    pub namespace: Option<String>,
    /// Address of the HTTP port (health, readiness, metrics).
    pub health_addr: SocketAddr,
    /// Client-side API rate limit.
    pub rate_limit: RateLimit,
    /// Leader election; None runs without it (a single instance).
    pub leader_election: Option<LeaderElection>,
    /// Runs reconciled at most at once (0 = unbounded).
    pub concurrency: u16,
    /// Provenance steps (resolve, sign, attach) at most at once, apart from the reconciles.
    pub provenance_workers: u16,
    /// The controller's namespace: the signing key and registry credentials Secrets.
    pub controller_namespace: String,
    /// Label selector of the MaterialRevocations this install acts on; all when None. Two
    /// installs in one cluster would otherwise both write each revocation's status, each from
    /// its own records.
    pub revocation_selector: Option<String>,
}

/// Where the leader Lease lives and who we are.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    /// Seconds a Lease stays valid without renewal.
    pub lease_duration: u64,
}

/// Why the controller could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot reach the Kubernetes API at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot listen on {addr} (--health-addr): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The task that leads and reconciles, or the HTTP server's, ended before a shutdown was
    /// asked for: a panic, or an end nothing asked for. Never a clean stop: the process exits
    /// non-zero so that it is restarted.
    #[error("the {task} task stopped unexpectedly: {reason}")]
    TaskEnded { task: &'static str, reason: String },
    #[error("--revocation-selector {selector:?} is refused by the API server: {source}")]
    RevocationSelector {
        selector: String,
        #[source]
        source: kube::Error,
    },
    #[error("leader election with Lease {namespace}/{name} failed: {source}")]
    LeaderElection {
        namespace: String,
        name: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
}

/// Run until `shutdown` resolves. Returns Ok on a clean shutdown.
pub async fn run(
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    let config = Arc::new(ControllerConfig::load(options.config.as_deref())?);
    info!(
        config = %options.config.as_ref().map_or("<embedded defaults>".into(), |p| p.display().to_string()),
        accelerator_profiles = config.accelerator_profiles.len(),
        provenance = config.provenance.enabled,
        "configuration loaded"
    );
    log_repository_policy(&config);
    let (client, url) = client::connect(options.rate_limit).await?;
    let version = client
        .apiserver_version()
        .await
        .map_err(|source| ControllerError::Connect {
            url: url.clone(),
            source,
        })?;
    info!(api = %url, server_version = %version.git_version, namespace = options.namespace.as_deref().unwrap_or("<all>"), "connected to the Kubernetes API");
    check_revocation_selector(&client, options.revocation_selector.as_deref()).await?;

    let state = Arc::new(server::State::default());
    let listener =
        server::bind(options.health_addr)
            .await
            .map_err(|source| ControllerError::Bind {
                addr: options.health_addr,
                source,
            })?;
    let addr = listener.local_addr().unwrap_or(options.health_addr);
    info!(%addr, "serving /healthz, /readyz and /metrics");

    let publisher = start_publisher(&client, &config, &options, &state);
    let (stop_tx, stop_rx) = watch::channel(false);
    let readiness = tokio::spawn(watch_crd(
        client.clone(),
        options.namespace.clone(),
        state.clone(),
        stop_rx.clone(),
    ));
    let mut server_stop = stop_rx.clone();
    let mut server = tokio::spawn(
        axum::serve(listener, server::router(state.clone()))
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|stop| *stop).await;
            })
            .into_future(),
    );
    let mut work = tokio::spawn(lead_and_reconcile(
        client,
        config,
        publisher,
        options.clone(),
        state.clone(),
        stop_rx,
    ));

    let early_exit = tokio::select! {
        () = shutdown => { info!("shutdown requested"); None }
        ended = &mut server => Some(ServerOrWork::Server(ended)),
        ended = &mut work => Some(ServerOrWork::Work(ended)),
    };
    state.set_ready(false);
    let _ = stop_tx.send(true);
    readiness.abort();
    // Let in-flight reconciles finish and the Lease be released, within reason.
    let result = early_exit_result(early_exit, addr);
    if !work.is_finished() {
        match tokio::time::timeout(Duration::from_secs(20), &mut work).await {
            Ok(Ok(Err(e))) => warn!(error = %e, "controller stopped with an error"),
            Ok(_) => {}
            Err(_) => {
                warn!("reconciles did not finish within 20s; stopping anyway");
                work.abort();
            }
        }
    }
    if !server.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut server).await;
    }
    if result.is_ok() {
        info!("stopped cleanly");
    }
    result
}

enum ServerOrWork {
    Server(Result<std::io::Result<()>, tokio::task::JoinError>),
    Work(Result<Result<(), ControllerError>, tokio::task::JoinError>),
}

/// What the process ends with. Only a requested shutdown (`None`) is a clean stop: a task that
/// ended by itself, by an error, a panic or just returning, is an error, so the process exits
/// non-zero and is restarted (before, a panic in the reconcile task exited 0).
fn early_exit_result(
    early_exit: Option<ServerOrWork>,
    addr: SocketAddr,
) -> Result<(), ControllerError> {
    let ended = |task: &'static str, joined: Result<(), tokio::task::JoinError>| {
        let reason = match joined {
            Ok(()) => "it returned while no shutdown was requested".to_string(),
            Err(e) if e.is_panic() => format!(
                "panic: {}",
                reconcile::contain::panic_message(e.into_panic().as_ref())
            ),
            Err(e) => e.to_string(),
        };
        Err(ControllerError::TaskEnded { task, reason })
    };
    match early_exit {
        None => Ok(()),
        Some(ServerOrWork::Work(Ok(Err(e)))) => Err(e),
        Some(ServerOrWork::Work(Ok(Ok(())))) => ended("reconcile", Ok(())),
        Some(ServerOrWork::Work(Err(e))) => ended("reconcile", Err(e)),
        Some(ServerOrWork::Server(Ok(Err(source)))) => Err(ControllerError::Serve { addr, source }),
        Some(ServerOrWork::Server(Ok(Ok(())))) => ended("HTTP server", Ok(())),
        Some(ServerOrWork::Server(Err(e))) => ended("HTTP server", Err(e)),
    }
}

/// Wait for leadership, reconcile while leading, stand by again when the Lease is lost.
async fn lead_and_reconcile(
    client: Client,
    config: Arc<ControllerConfig>,
    publisher: Option<Arc<Publisher>>,
    options: Options,
    state: Arc<server::State>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ControllerError> {
    let Some(election) = options.leader_election.clone() else {
        // The only instance: it leads for as long as it runs.
        state.metrics.leader.set(1);
        run_controller(client, config, publisher, &options, state.clone(), stop).await;
        state.metrics.leader.set(0);
        return Ok(());
    };
    let lease_error = |source| ControllerError::LeaderElection {
        namespace: election.namespace.clone(),
        name: election.lease_name.clone(),
        source,
    };
    let manager = LeaseManagerBuilder::new(client.clone(), &election.lease_name)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(election.lease_duration)
        .with_grace(election.lease_duration.div_ceil(3).max(1))
        .with_field_manager(reconcile::FIELD_MANAGER)
        .build()
        .await
        .map_err(lease_error)?;
    let (mut leading, lease_task) = manager.watch().await;
    info!(lease = %format!("{}/{}", election.namespace, election.lease_name), identity = %election.identity, "waiting for leadership");
    loop {
        // Standby until we lead (or are told to stop).
        tokio::select! {
            changed = leading.wait_for(|l| *l) => if changed.is_err() { break; },
            _ = stop.wait_for(|s| *s) => break,
        }
        info!(identity = %election.identity, "became the leader");
        state.metrics.leader.set(1);
        let (lost_tx, lost_rx) = watch::channel(false);
        let mut leading_watch = leading.clone();
        let watch_loss = tokio::spawn(async move {
            let _ = leading_watch.wait_for(|l| !*l).await;
            let _ = lost_tx.send(true);
        });
        let mut stop_only = stop.clone();
        let halt = async move {
            let _ = stop_only.wait_for(|s| *s).await;
        };
        let mut lost = lost_rx.clone();
        // A shutdown lets in-flight reconciles finish; a lost Lease drops them at once, so two
        // instances never act together.
        tokio::select! {
            () = run_controller_until(
                client.clone(),
                config.clone(),
                publisher.clone(),
                &options,
                state.clone(),
                halt,
            ) => {}
            _ = lost.wait_for(|l| *l) => {
                state.set_runs(None);
            }
        }
        watch_loss.abort();
        state.metrics.leader.set(0);
        if *stop.borrow() {
            break;
        }
        warn!(identity = %election.identity, "lost leadership; standing by");
    }
    // Dropping the receiver makes the lease task release the Lease.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => info!("released the leader Lease"),
        Ok(Ok(Err(e))) => warn!(error = %e, "could not release the leader Lease"),
        _ => {}
    }
    Ok(())
}

async fn run_controller(
    client: Client,
    config: Arc<ControllerConfig>,
    publisher: Option<Arc<Publisher>>,
    options: &Options,
    state: Arc<server::State>,
    mut stop: watch::Receiver<bool>,
) {
    let halt = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    run_controller_until(client, config, publisher, options, state, halt).await;
}

fn revocation_watch(selector: Option<&str>) -> watcher::Config {
    match selector {
        Some(selector) => watcher::Config::default().labels(selector),
        None => watcher::Config::default(),
    }
}

/// A malformed selector would otherwise only show as a watch retried forever: ask the API
/// server once at start (it is the parser of record). Other errors (the CRD not installed yet)
/// are left to the readiness check and the watch.
async fn check_revocation_selector(
    client: &Client,
    selector: Option<&str>,
) -> Result<(), ControllerError> {
    let Some(selector) = selector else {
        return Ok(());
    };
    let params = ListParams::default().labels(selector).limit(1);
    match Api::<MaterialRevocation>::all(client.clone())
        .list_metadata(&params)
        .await
    {
        Err(source) if matches!(&source, kube::Error::Api(s) if s.code == 400) => {
            Err(ControllerError::RevocationSelector {
                selector: selector.to_string(),
                source,
            })
        }
        _ => {
            info!(
                selector,
                "acting only on MaterialRevocations with these labels"
            );
            Ok(())
        }
    }
}

/// The kube-runtime Controller: TrainingRuns, plus the Pods and Services they own.
async fn run_controller_until(
    client: Client,
    config: Arc<ControllerConfig>,
    publisher: Option<Arc<Publisher>>,
    options: &Options,
    state: Arc<server::State>,
    halt: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (runs, pods, services): (Api<TrainingRun>, Api<Pod>, Api<Service>) =
        match &options.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        };
    let owned =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    let reporter = Reporter {
        controller: "provenant".into(),
        instance: options.leader_election.as_ref().map(|l| l.identity.clone()),
    };
    let (provenance_queue, queued) = ProvenanceQueue::new();
    // MaterialRevocations: cluster-scoped, watched whatever --namespace says (a revocation
    // reaches models of every namespace). Re-run whenever a signed record appears: a run that
    // was already running when a revocation was created is found once it has its record.
    let records = watcher(
        Api::<PartialObjectMeta<ConfigMap>>::namespaced(
            client.clone(),
            &options.controller_namespace,
        ),
        watcher::Config::default().labels(&format!("{}=provenance", labels::COMPONENT)),
    )
    .default_backoff()
    .filter_map(|event| {
        futures::future::ready(matches!(event, Ok(watcher::Event::Apply(_))).then_some(()))
    });
    let revocations = Controller::new(
        Api::<MaterialRevocation>::all(client.clone()),
        revocation_watch(options.revocation_selector.as_deref()),
    )
    .reconcile_all_on(records)
    .with_config(kube::runtime::controller::Config::default().debounce(Duration::from_secs(1)));
    let context = Arc::new(Context {
        client: client.clone(),
        config,
        recorder: Recorder::new(client, reporter),
        metrics: state.metrics.clone(),
        publisher,
        controller_namespace: options.controller_namespace.clone(),
        queue: provenance_queue,
        revocations: revocation::Watched::new(revocations.store()),
    });
    let halt = halt.shared();
    let controller = Controller::new(runs, watcher::Config::default())
        .owns(pods, owned.clone())
        .owns(services, owned)
        .with_config(kube::runtime::controller::Config::default().concurrency(options.concurrency));
    state.set_runs(Some(controller.store()));
    let provenance_workers = publish::work(
        queued,
        context.clone(),
        controller.store(),
        usize::from(options.provenance_workers),
        halt.clone(),
    );
    let sweeper = publish::sweep_records(
        context.clone(),
        controller.store(),
        options.namespace.clone(),
        halt.clone(),
    );
    info!(
        reconcilers = options.concurrency,
        provenance_workers = options.provenance_workers,
        "reconciling TrainingRuns"
    );
    let reconcilers = controller
        .graceful_shutdown_on(halt.clone())
        .run(
            reconcile::reconcile,
            reconcile::error_policy,
            context.clone(),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                match e {
                    kube::runtime::controller::Error::ReconcilerFailed(..) => {} // logged by error_policy
                    other => warn!(error = %other, "controller event"),
                }
            }
        });
    let revocations = revocations
        .graceful_shutdown_on(halt.clone())
        .run(revocation::reconcile, revocation::error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                match e {
                    kube::runtime::controller::Error::ReconcilerFailed(..) => {} // logged by error_policy
                    other => warn!(error = %other, "revocation controller event"),
                }
            }
        });
    // All live in this future: a lost Lease drops them together.
    tokio::join!(reconcilers, revocations, provenance_workers, sweeper);
    state.set_runs(None);
    info!("stopped reconciling");
}

/// Readiness: the TrainingRun API must be served. A missing CRD is reported, then re-checked, so
/// installing the CRD after the controller needs no restart.
async fn watch_crd(
    client: Client,
    namespace: Option<String>,
    state: Arc<server::State>,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<TrainingRun> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let mut reported = false;
    loop {
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => {
                if !state.is_ready() {
                    info!("TrainingRun API is served; ready");
                }
                state.set_ready(true);
                reported = false;
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                state.set_ready(false);
                if !reported {
                    error!(
                        "the TrainingRun CRD is not installed (trainingruns.provenant.dev): apply crds/ with `kubectl apply -f crds/`"
                    );
                    reported = true;
                }
            }
            Err(e) => {
                state.set_ready(false);
                warn!(error = %e, "cannot list TrainingRuns; will retry");
            }
        }
        // Re-check quickly while unready, rarely once ready.
        let pause = if state.is_ready() { 10 } else { 2 };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(pause)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8080))
    }

    #[tokio::test]
    async fn only_a_requested_shutdown_is_a_clean_stop() {
        assert!(early_exit_result(None, addr()).is_ok());

        // The reconcile task panicked (before: "stopped cleanly", exit 0).
        let panicked = tokio::spawn(async {
            let _ = std::time::Instant::now() + Duration::from_secs(u64::MAX);
            Ok::<(), ControllerError>(())
        })
        .await;
        let error = early_exit_result(Some(ServerOrWork::Work(panicked)), addr()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the reconcile task stopped unexpectedly: panic: overflow when adding duration to instant"
        );

        // It returned by itself (the Lease manager's channel closed, a stream ended).
        let error = early_exit_result(Some(ServerOrWork::Work(Ok(Ok(())))), addr()).unwrap_err();
        assert!(
            matches!(
                error,
                ControllerError::TaskEnded {
                    task: "reconcile",
                    ..
                }
            ),
            "{error}"
        );

        let server = tokio::spawn(async { panic!("listener gone") }).await;
        let error = early_exit_result(Some(ServerOrWork::Server(server)), addr()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the HTTP server task stopped unexpectedly: panic: listener gone"
        );
    }
}
