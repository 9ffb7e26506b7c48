//! The Grafana dashboard (config/grafana/provenant.json) reads only what a running controller
//! exports: a real controller on the real control plane trains one run whose provenance is
//! attached (after a registry outage, so the registry-error panel has its series too), and every
//! metric name of every dashboard query, with the labels the query groups or filters by, is among
//! the samples of its `/metrics`. The dashboard's structure and PromQL syntax:
//! controller/tests/dashboard.rs.

use std::collections::BTreeSet;

use anyhow::Result;
use provenant::api::{Phase, ProvenanceState};
use provenant_testbed::cluster::eventually;
use provenant_testbed::registry_proxy::Mode;

use crate::dashboard_support::{dashboard, queries};
use crate::promql::{exported, names};
use crate::provenance::World;
use crate::support::*;

/// Labels Prometheus adds to every series of a target when it scrapes it.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

#[tokio::test]
async fn every_dashboard_query_reads_series_the_controller_exports() -> Result<()> {
    let world = World::start(true).await?;
    let sim = world.kubelet(|| {}).await?;
    let controller = world.controller("a").await?;
    world.proxy.set_mode(Mode::Down);
    create(&world.cluster, &world.run("bert")).await?;
    wait_phase(&world.cluster, "bert", Phase::Succeeded).await?;
    eventually(TIMEOUT, "a registry error counted", || {
        let c = &controller;
        async move {
            let text = c.metrics().await?;
            Ok(text
                .lines()
                .any(|l| l.starts_with("provenant_registry_errors_total{"))
                .then_some(()))
        }
    })
    .await?;
    world.proxy.set_mode(Mode::Pass);
    world
        .wait_provenance("bert", ProvenanceState::Attached)
        .await?;

    let text = controller.metrics().await?;
    let samples = exported(&text);
    let mut missing = Vec::new();
    for query in queries(&dashboard()) {
        let names = names(&query.expr);
        assert!(
            !names.metrics.is_empty(),
            "{}: no metric in {}",
            query.origin,
            query.raw
        );
        let mut labels: BTreeSet<&str> = TARGET_LABELS.into();
        for metric in &names.metrics {
            match samples.get(metric) {
                Some(found) => labels.extend(found.iter().map(String::as_str)),
                None => missing.push(format!("{}: metric {metric}", query.origin)),
            }
        }
        for label in &names.labels {
            if !labels.contains(label.as_str()) {
                missing.push(format!(
                    "{}: label {label} on {:?}",
                    query.origin, names.metrics
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard reads what the controller does not export:\n{}\n\n/metrics:\n{text}",
        missing.join("\n")
    );
    // The panels show this run: it was counted, attached, and its lag observed.
    assert_eq!(
        metric(&text, "provenant_trainingruns{phase=\"Succeeded\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "provenant_attestations_total{result=\"attached\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "provenant_provenance_lag_seconds_count"),
        Some(1.0)
    );
    sim.shutdown().await?;
    Ok(())
}
