//! The controller's HTTP port: liveness (`/healthz`), readiness (`/readyz`) and Prometheus
//! metrics (`/metrics`). The Deployment's probes and the metrics Service point here.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kube::runtime::reflector::Store;

use crate::api::TrainingRun;
use crate::metrics::Metrics;

/// Shared state the endpoints read.
#[derive(Default)]
pub struct State {
    ready: AtomicBool,
    pub metrics: Metrics,
    /// The controller's cache of runs, while this instance leads.
    runs: Mutex<Option<Store<TrainingRun>>>,
}

impl State {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    pub fn set_runs(&self, store: Option<Store<TrainingRun>>) {
        if store.is_none() {
            // A standby reports no runs: two replicas must not both count them.
            self.metrics.count_phases(std::iter::empty());
        }
        if let Ok(mut runs) = self.runs.lock() {
            *runs = store;
        }
    }
}

/// The router; public so tests can serve it on an ephemeral port.
pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(AxumState(state): AxumState<Arc<State>>) -> (StatusCode, &'static str) {
    if state.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the Kubernetes API and the TrainingRun CRD",
        )
    }
}

async fn metrics(AxumState(state): AxumState<Arc<State>>) -> impl IntoResponse {
    // Phase counts come from the cache at scrape time; a standby instance reports none.
    let store = state.runs.lock().ok().and_then(|s| s.clone());
    if let Some(store) = store {
        let runs = store.state();
        state.metrics.count_phases(runs.iter().map(|r| r.as_ref()));
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Bind the port (failing fast with the address in the error) and return the listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
