//! Watch streams: newline-delimited JSON `WatchEvent`s over a chunked 200 response.
//!
//! Each watch is a task that follows the store's history ring (see `store.rs`): it wakes when the
//! global resourceVersion moves, takes the records newer than what it has sent, filters them by
//! resource, namespace and selectors, and writes them to the response body. Selector transitions
//! are translated like the real watch cache does (an object that stops matching is sent as
//! DELETED, one that starts matching as ADDED). Too old a resourceVersion is not an HTTP error but
//! an `ERROR` event carrying a 410 `Status`, because that is what kube's watcher needs to re-list.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Shared;
use super::errors::ApiError;
use super::resources::ResourceType;
use super::selectors::Selectors;
use super::store::{EventType, Record, WatchStart};

pub(crate) struct WatchRequest {
    pub rt: Arc<ResourceType>,
    pub version: String,
    pub namespace: Option<String>,
    pub selectors: Selectors,
    /// `None` for "" and "0" (initial ADDED events first).
    pub resource_version: Option<u64>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub timeout: Duration,
    pub meta_only: bool,
}

impl WatchRequest {
    /// Serializes an object as this watch presents it (API version of the request,
    /// `PartialObjectMetadata` when asked for metadata only).
    fn render(&self, obj: &Value) -> Bytes {
        let bytes = if self.meta_only {
            serde_json::to_vec(&partial_metadata(obj))
        } else {
            let av = self.rt.api_version(&self.version);
            if obj.get("apiVersion").and_then(Value::as_str) == Some(av.as_str()) {
                serde_json::to_vec(obj)
            } else {
                let mut o = obj.clone();
                o["apiVersion"] = av.into();
                serde_json::to_vec(&o)
            }
        };
        Bytes::from(bytes.unwrap_or_default())
    }

    fn render_record(&self, rec: &Record) -> Bytes {
        let av = self.rt.api_version(&self.version);
        if !self.meta_only
            && rec.object.get("apiVersion").and_then(Value::as_str) == Some(av.as_str())
        {
            rec.object_json()
        } else {
            self.render(&rec.object)
        }
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let (kind, api_version) = if self.meta_only {
            (
                "PartialObjectMetadata".to_string(),
                "meta.k8s.io/v1".to_string(),
            )
        } else {
            (self.rt.kind.clone(), self.rt.api_version(&self.version))
        };
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": kind, "apiVersion": api_version, "metadata": metadata});
        line("BOOKMARK", Bytes::from(obj.to_string()))
    }

    /// The event (if any) this watcher sends for a record.
    fn convert(&self, rec: &Record) -> Option<Bytes> {
        if self.selectors.is_empty() {
            return Some(line(type_name(rec.kind), self.render_record(rec)));
        }
        let sel = &self.selectors;
        match rec.kind {
            EventType::Added => sel
                .matches(&rec.object)
                .then(|| line("ADDED", self.render_record(rec))),
            EventType::Deleted => sel
                .matches(rec.prev.as_deref().unwrap_or(&rec.object))
                .then(|| line("DELETED", self.render_record(rec))),
            EventType::Modified => {
                let now = sel.matches(&rec.object);
                let before = rec.prev.as_deref().is_some_and(|p| sel.matches(p));
                match (before, now) {
                    (true, true) => Some(line("MODIFIED", self.render_record(rec))),
                    (false, true) => Some(line("ADDED", self.render_record(rec))),
                    (true, false) => {
                        // the previous content, at the event's resourceVersion
                        let mut prev = rec.prev.as_deref().cloned().unwrap_or(Value::Null);
                        if let Some(m) = prev.get_mut("metadata").and_then(Value::as_object_mut) {
                            m.insert("resourceVersion".into(), rec.rv.to_string().into());
                        }
                        Some(line("DELETED", self.render(&prev)))
                    }
                    (false, false) => None,
                }
            }
        }
    }
}

pub(crate) fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn type_name(kind: EventType) -> &'static str {
    match kind {
        EventType::Added => "ADDED",
        EventType::Modified => "MODIFIED",
        EventType::Deleted => "DELETED",
    }
}

fn line(ty: &str, object: Bytes) -> Bytes {
    let mut out = Vec::with_capacity(object.len() + ty.len() + 24);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(ty.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(&object);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn error_line(err: &ApiError) -> Bytes {
    line("ERROR", Bytes::from(err.to_status().to_string()))
}

/// Starts a watch and returns the streaming response.
pub(crate) fn serve(shared: Arc<Shared>, req: WatchRequest) -> Response {
    // Subscribe before reading the starting point so that no write in between is missed.
    let rv_rx = shared.rv_tx.subscribe();
    let close_rx = shared.close_tx.subscribe();
    let start = shared.store().watch_start(
        &req.rt,
        req.namespace.as_deref(),
        &req.selectors,
        req.resource_version,
    );
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(run(shared, req, start, tx, rv_rx, close_rx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

async fn run(
    shared: Arc<Shared>,
    req: WatchRequest,
    start: Result<WatchStart, ApiError>,
    tx: mpsc::Sender<Bytes>,
    mut rv_rx: tokio::sync::watch::Receiver<u64>,
    mut close_rx: tokio::sync::watch::Receiver<u64>,
) {
    let now = tokio::time::Instant::now();
    let deadline = now
        .checked_add(req.timeout)
        .unwrap_or(now + Duration::from_secs(7 * 24 * 3600));
    let mut after = match start {
        Err(e) => {
            let _ = tx.send(error_line(&e)).await;
            return;
        }
        Ok(start) => {
            for obj in &start.initial {
                if tx.send(line("ADDED", req.render(obj))).await.is_err() {
                    return;
                }
            }
            if req.send_initial_events && tx.send(req.bookmark(start.after, true)).await.is_err() {
                return;
            }
            start.after
        }
    };
    // a zero period would make tokio panic
    let interval = shared
        .options
        .bookmark_interval
        .max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if shared.is_shutting_down() {
            return;
        }
        let batch = shared
            .store()
            .events_after(&req.rt.key, req.namespace.as_deref(), after);
        match batch {
            Err(e) => {
                let _ = tx.send(error_line(&e)).await;
                return;
            }
            Ok((records, new_after, served)) => {
                for rec in &records {
                    if let Some(event) = req.convert(rec)
                        && tx.send(event).await.is_err()
                    {
                        return;
                    }
                }
                if !served {
                    return;
                }
                after = new_after;
            }
        }
        tokio::select! {
            changed = rv_rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = ticker.tick(), if req.bookmarks => {
                if tx.send(req.bookmark(after, false)).await.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return,
            _ = close_rx.changed() => return,
            _ = tx.closed() => return,
        }
    }
}
