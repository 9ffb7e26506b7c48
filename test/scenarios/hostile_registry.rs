//! Issue 14 (1): a registry a tenant controls cannot stop the controller. A run's
//! `spec.output.repository` may name any registry; this one answers the token request with
//! `"expires_in": 18446744073709551615`. Before, `Instant::now() + lifetime` panicked in the
//! publish worker, the panic ended the task every run is reconciled in, and the process exited 0
//! ("stopped cleanly"): no run of any team was reconciled until someone noticed. The registry is
//! a double (a real one never sends such a number); everything else is real.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kube::ResourceExt;
use provenant::api::ProvenanceState;
use provenant_testbed::cluster::{ControllerProcess, eventually};
use provenant_testbed::kubelet::{KubeletSim, PodOutcome, Scenario, SimNode};
use serde_json::json;

use crate::provenance::{World, push_and_report};
use crate::support::*;

/// What the hostile token endpoint answers.
const HOSTILE_TOKEN: &str = r#"{"token":"x","expires_in":18446744073709551615}"#;

/// A registry that asks for a bearer token, hands out one with a lifetime no `Instant` can hold,
/// then knows no manifest.
struct HostileRegistry {
    host: String,
    tokens: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl HostileRegistry {
    async fn start() -> Result<HostileRegistry> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let host = listener.local_addr()?.to_string();
        let tokens = Arc::new(AtomicUsize::new(0));
        let realm = format!("Bearer realm=\"http://{host}/token\",service=\"hostile\"");
        let counted = tokens.clone();
        let app = axum::Router::new()
            .route(
                "/token",
                axum::routing::get(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async move {
                        ([(header::CONTENT_TYPE, "application/json")], HOSTILE_TOKEN)
                            .into_response()
                    }
                }),
            )
            .fallback(move |headers: HeaderMap| {
                let realm = realm.clone();
                async move { registry_answer(&headers, &realm) }
            });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(HostileRegistry {
            host,
            tokens,
            server,
        })
    }
}

impl Drop for HostileRegistry {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Without the token: 401 and the challenge. With it: no such manifest.
fn registry_answer(headers: &HeaderMap, realm: &str) -> Response {
    if headers.get(header::AUTHORIZATION) == Some(&HeaderValue::from_static("Bearer x")) {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        )
            .into_response();
    }
    let mut response = StatusCode::UNAUTHORIZED.into_response();
    if let Ok(value) = HeaderValue::from_str(realm) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// Workers that succeed; rank 0 of `bert` pushes a real model to the world's registry, rank 0 of
/// `evil` reports a model in the hostile registry.
async fn kubelet(world: &World, hostile: &str) -> Result<KubeletSim> {
    let registry = world.registry.clone();
    let repository = world.repository();
    let evil_output = format!("{hostile}/models/evil:v1@{MODEL_DIGEST}");
    let scenario = Scenario::new()
        .namespace(&world.cluster.namespace)
        .nodes(2, |i| {
            SimNode::nvidia(format!("gpu-{i}"), "NVIDIA-H100-80GB-HBM3", 8)
        })
        .outcome_fn(move |pod| {
            let outcome = PodOutcome::succeed()
                .after(Duration::from_millis(200))
                .image_digest("trainer", IMAGE_DIGEST);
            let labels = pod.labels();
            if labels.get("provenant.dev/rank").is_none_or(|r| r != "0") {
                return outcome;
            }
            if labels.get("provenant.dev/run").is_some_and(|r| r == "evil") {
                return outcome.message(json!({"outputs": [{"uri": evil_output}]}).to_string());
            }
            let registry = registry.clone();
            let repository = repository.clone();
            outcome.before_exit(move |pod| {
                let registry = registry.clone();
                let repository = repository.clone();
                async move {
                    let weights = format!("weights of {}", pod.name_any());
                    push_and_report(&registry, &repository, "v1", &weights, json!({})).await
                }
            })
        });
    KubeletSim::start(world.cluster.client.clone(), scenario).await
}

fn training_run(name: &str, repository: &str) -> provenant::api::TrainingRun {
    run(
        name,
        json!({
            "replicas": 1,
            "accelerator": {"type": "nvidia-h100-80gb", "count": 1},
            "output": {"repository": repository},
        }),
    )
}

/// The controller must still be running; the failure message carries its log.
fn still_running(controller: &mut ControllerProcess, when: &str) -> Result<()> {
    if let Some(status) = controller.try_wait()? {
        panic!(
            "the controller exited ({status}) {when}; its log:\n{}",
            controller.log_text()
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_token_lifetime_no_clock_can_hold_does_not_stop_the_controller() -> Result<()> {
    let world = World::start(true).await?;
    let hostile = HostileRegistry::start().await?;
    let provenance = format!(
        "provenance:\n  enabled: true\n  registry:\n    insecure: [\"{}\", \"{}\"]\n    attempts: 2\n",
        world.proxy.host(),
        hostile.host
    );
    let config = controller_config(&world.cluster, "hostile", &provenance);
    let flag = format!("--config={}", config.display());
    let mut controller = ControllerProcess::start(
        binary(),
        &world.cluster,
        "a",
        &[flag.as_str(), "--log-format=json"],
    )?;
    controller.wait_ready(Duration::from_secs(30)).await?;
    let _sim = kubelet(&world, &hostile.host).await?;

    // A tenant's run whose output is in the hostile registry: the controller resolves it there.
    let evil_repository = format!("{}/models/evil", hostile.host);
    create_as_tenant(&world.cluster, &training_run("evil", &evil_repository)).await?;
    let tokens = hostile.tokens.clone();
    eventually(
        TIMEOUT,
        "the controller to ask the hostile registry for a token",
        || {
            let tokens = tokens.clone();
            async move { Ok((tokens.load(Ordering::SeqCst) > 0).then_some(())) }
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    still_running(&mut controller, "after the hostile token response")?;

    // Another team's run, afterwards, still gets its provenance.
    create(&world.cluster, &training_run("bert", &world.repository())).await?;
    let attached = world
        .wait_provenance("bert", ProvenanceState::Attached)
        .await
        .context("another team's run is attached")?;
    assert!(!World::model_digest(&attached).is_empty());
    still_running(&mut controller, "while other runs were attached")?;

    // The tenant's run fails on its own registry's answer (no such model), with a condition
    // naming it; no panic anywhere.
    let evil = world
        .wait_provenance("evil", ProvenanceState::Failed)
        .await?;
    let (_, reason, message) =
        condition(&evil, "ProvenanceAttached").context("a ProvenanceAttached condition")?;
    assert!(message.contains(&evil_repository), "{reason}: {message}");
    let metrics = controller.metrics().await?;
    assert_eq!(
        metric(
            &metrics,
            "provenant_reconcile_errors_total{reason=\"Panic\"}"
        ),
        Some(0.0),
        "{metrics}"
    );
    assert!(
        !controller.log_text().contains("panicked"),
        "{}",
        controller.log_text()
    );
    let status = controller.terminate(Duration::from_secs(30)).await?;
    assert!(status.success(), "a requested stop is clean: {status}");
    Ok(())
}
