//! Issue 14 (5): no tenant starves the others. One team's dead registry (a blackhole: it accepts
//! connections and never answers) must not hold the shared provenance workers, and a registry
//! that refuses the controller's credentials is retried a bounded number of times (credentials
//! may be rotating), then the run fails for good with `RegistryUnauthorized` naming the host.

use std::time::{Duration, Instant};

use anyhow::Result;
use kube::ResourceExt;
use provenant::api::{Phase, ProvenanceState, TrainingRun};
use provenant_testbed::blackhole::Blackhole;
use provenant_testbed::cluster::{ControllerProcess, eventually};
use provenant_testbed::kubelet::{KubeletSim, PodOutcome, Scenario, SimNode};
use provenant_testbed::registry_proxy::Mode;
use serde_json::json;

use crate::provenance::{World, push_and_report};
use crate::support::*;

/// Runs named `dead-*` report a model in the blackholed registry; every other run pushes a real
/// model to the test bed's registry (through the world's proxy) and reports it.
async fn kubelet(world: &World, dead_host: &str) -> Result<KubeletSim> {
    let registry = world.registry.clone();
    let repository = world.repository();
    let dead_host = dead_host.to_string();
    let scenario = Scenario::new()
        .namespace(&world.cluster.namespace)
        .node(SimNode::new("cpu-0"))
        .outcome_fn(move |pod| {
            let name = pod.name_any();
            if name.starts_with("dead-") {
                let uri = format!("{dead_host}/models/dead@{MODEL_DIGEST}");
                return PodOutcome::succeed()
                    .message(json!({"outputs": [{"uri": uri}]}).to_string());
            }
            let registry = registry.clone();
            let repository = repository.clone();
            PodOutcome::succeed().before_exit(move |pod| {
                let registry = registry.clone();
                let repository = repository.clone();
                async move {
                    let name = pod.name_any();
                    push_and_report(&registry, &repository, &name, &name, json!({})).await
                }
            })
        });
    KubeletSim::start(world.cluster.client.clone(), scenario).await
}

async fn controller(world: &World, dead_host: &str, flags: &[&str]) -> Result<ControllerProcess> {
    // Only keys that exist before issue 14 (5): the fairness bounds hold by default.
    let provenance = format!(
        "provenance:\n  enabled: true\n  registry:\n    insecure: [\"{}\", \"{dead_host}\"]\n    attempts: 2\n",
        world.proxy.host()
    );
    let config = controller_config(&world.cluster, "fairness", &provenance);
    let flag = format!("--config={}", config.display());
    let mut all = vec![flag.as_str()];
    all.extend_from_slice(flags);
    let mut controller = ControllerProcess::start(binary(), &world.cluster, "a", &all)?;
    controller.wait_ready(Duration::from_secs(30)).await?;
    Ok(controller)
}

fn provenance_state(run: &TrainingRun) -> Option<ProvenanceState> {
    run.status.as_ref()?.provenance.as_ref().map(|p| p.state)
}

/// Four runs of one team point at a registry that never answers, as many as there are provenance
/// workers. Another team's runs, finished after them, still get their provenance attached within
/// seconds: the dead host holds at most its share of the workers, and its runs wait without one.
#[tokio::test]
async fn a_blackholed_registry_does_not_starve_other_tenants() -> Result<()> {
    let world = World::start(true).await?;
    let dead = Blackhole::start().await?;
    let sim = kubelet(&world, &dead.host).await?;
    let _controller = controller(&world, &dead.host, &["--provenance-workers=4"]).await?;
    let dead_spec = json!({"output": {"repository": format!("{}/models/dead", dead.host)}});
    let live_spec = json!({"output": {"repository": world.repository()}});

    for i in 0..4 {
        create(
            &world.cluster,
            &run(&format!("dead-{i}"), dead_spec.clone()),
        )
        .await?;
    }
    for i in 0..4 {
        wait_phase(&world.cluster, &format!("dead-{i}"), Phase::Succeeded).await?;
    }
    eventually(TIMEOUT, "the controller to reach the dead registry", || {
        let dead = &dead;
        async move { Ok((dead.accepted() > 0).then_some(())) }
    })
    .await?;

    // The other team's runs finish now; their registry is healthy.
    let started = Instant::now();
    for name in ["live-0", "live-1"] {
        create(&world.cluster, &run(name, live_spec.clone())).await?;
    }
    let api = world.cluster.api::<TrainingRun>();
    let bound = Duration::from_secs(30);
    for name in ["live-0", "live-1"] {
        let attached = eventually(bound, &format!("{name} attached"), || {
            let api = api.clone();
            async move {
                let run = api.get(name).await?;
                Ok((provenance_state(&run) == Some(ProvenanceState::Attached)).then_some(run))
            }
        })
        .await;
        assert!(
            attached.is_ok(),
            "{name}: provenance not attached within {bound:?} of its creation while another \
             tenant's registry is blackholed (elapsed {:?}): {:?}",
            started.elapsed(),
            attached.err()
        );
    }

    // The blackholed team's runs are still waiting (not failed), and say why once an attempt
    // has timed out.
    for i in 0..4 {
        let run = api.get(&format!("dead-{i}")).await?;
        assert_eq!(
            provenance_state(&run),
            Some(ProvenanceState::Pending),
            "dead-{i}"
        );
    }
    // The host's one slot (a quarter of 4 workers) takes the dead runs in turn, each pass up to
    // attempts × requestTimeoutSeconds (40 s): whichever went first says so.
    let waiting = eventually(
        Duration::from_secs(90),
        "a dead run to say its registry is unavailable",
        || {
            let api = api.clone();
            async move {
                for i in 0..4 {
                    let run = api.get(&format!("dead-{i}")).await?;
                    let said = condition(&run, "ProvenanceSigned")
                        .filter(|c| c.1 == "RegistryUnavailable");
                    if said.is_some() {
                        return Ok(said);
                    }
                }
                Ok(None)
            }
        },
    )
    .await?;
    assert!(waiting.2.contains(&dead.host), "{}", waiting.2);
    sim.shutdown().await?;
    Ok(())
}

/// Credentials being rotated: the registry refuses them (403 `DENIED`) for a while, then accepts
/// the new ones. The run is retried with backoff meanwhile, saying why, and gets attached.
#[tokio::test]
async fn refused_credentials_are_retried_while_they_rotate() -> Result<()> {
    let world = World::start(true).await?;
    let dead = Blackhole::start().await?;
    let sim = kubelet(&world, &dead.host).await?;
    let _controller = controller(&world, &dead.host, &[]).await?;
    world.proxy.set_mode(Mode::DenyAll);
    create(
        &world.cluster,
        &run(
            "rotating",
            json!({"output": {"repository": world.repository()}}),
        ),
    )
    .await?;
    let api = world.cluster.api::<TrainingRun>();
    let retrying = eventually(TIMEOUT, "the refusal to be reported as retried", || {
        let api = api.clone();
        async move {
            let run = api.get("rotating").await?;
            let state = provenance_state(&run);
            assert_ne!(
                state,
                Some(ProvenanceState::Failed),
                "failed at the first refusal: {:?}",
                condition(&run, "ProvenanceSigned")
            );
            Ok(condition(&run, "ProvenanceSigned").filter(|c| c.1 == "RegistryUnauthorized"))
        }
    })
    .await?;
    assert_eq!(retrying.0, "Unknown", "{retrying:?}");
    assert!(retrying.2.contains(world.proxy.host()), "{}", retrying.2);

    // The new credentials are in place.
    world.proxy.set_mode(Mode::Pass);
    let run = world
        .wait_provenance("rotating", ProvenanceState::Attached)
        .await?;
    assert_eq!(condition(&run, "ProvenanceAttached").unwrap().0, "True");
    sim.shutdown().await?;
    Ok(())
}

/// A registry that keeps refusing the credentials (401 without usable credentials): the run is
/// tried a bounded number of times, then fails for good with `RegistryUnauthorized`, naming the
/// registry host — never retried forever.
#[tokio::test]
async fn a_registry_refusing_credentials_fails_the_run_after_bounded_retries() -> Result<()> {
    let world = World::start(true).await?;
    let dead = Blackhole::start().await?;
    let sim = kubelet(&world, &dead.host).await?;
    let _controller = controller(&world, &dead.host, &[]).await?;
    world.proxy.set_mode(Mode::Unauthorized);
    create(
        &world.cluster,
        &run(
            "denied",
            json!({"output": {"repository": world.repository()}}),
        ),
    )
    .await?;
    wait_phase(&world.cluster, "denied", Phase::Succeeded).await?;
    let failed = world
        .wait_provenance("denied", ProvenanceState::Failed)
        .await?;
    let (status, reason, message) = condition(&failed, "ProvenanceSigned").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "RegistryUnauthorized"),
        "{message}"
    );
    assert!(message.contains(world.proxy.host()), "{message}");
    assert!(message.contains("HTTP 401"), "{message}");
    // Tried more than once (the default allows 5 passes), each pass's request answered 401.
    assert!(
        world.proxy.refused() >= 5,
        "{} refusals",
        world.proxy.refused()
    );
    sim.shutdown().await?;
    Ok(())
}
