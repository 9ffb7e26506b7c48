//! Prometheus metrics, served on the health port at `/metrics`. Every series is listed in
//! docs/operations.md.

use std::time::Instant;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::api::{Phase, TrainingRun};

/// The controller's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub reconcile_duration: Histogram,
    pub reconcile_errors: IntCounterVec,
    pub trainingruns: IntGaugeVec,
    pub workers_observed: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "provenant_reconcile_duration_seconds",
                "Duration of one TrainingRun reconcile",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("static metric");
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "provenant_reconcile_errors_total",
                "Reconciles that failed, by reason",
            ),
            &["reason"],
        )
        .expect("static metric");
        let trainingruns = IntGaugeVec::new(
            Opts::new(
                "provenant_trainingruns",
                "TrainingRuns known to the controller, by phase",
            ),
            &["phase"],
        )
        .expect("static metric");
        let workers_observed = IntCounter::new(
            "provenant_workers_observed_total",
            "Worker pods whose termination was recorded into a run's status",
        )
        .expect("static metric");
        for collector in [
            Box::new(reconcile_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconcile_errors.clone()),
            Box::new(trainingruns.clone()),
            Box::new(workers_observed.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        // Known reasons are exported at 0 from the start, so alerts see the series before the first error.
        for reason in ["KubeApi", "NoNamespace"] {
            reconcile_errors.with_label_values(&[reason]);
        }
        Metrics {
            registry,
            reconcile_duration,
            reconcile_errors,
            trainingruns,
            workers_observed,
        }
    }

    /// Start timing a reconcile; the duration is observed when the guard drops.
    pub fn reconcile_timer(&self) -> ReconcileTimer {
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.reconcile_duration.clone(),
        }
    }

    /// Recount runs per phase from the controller's cache (called at scrape time, so the gauge
    /// can never drift from what the cache holds).
    pub fn count_phases<'a>(&self, runs: impl Iterator<Item = &'a TrainingRun>) {
        let mut counts = [0i64; 4];
        for run in runs {
            let phase = run
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .unwrap_or_default();
            counts[phase_index(phase)] += 1;
        }
        for phase in [
            Phase::Pending,
            Phase::Running,
            Phase::Succeeded,
            Phase::Failed,
        ] {
            self.trainingruns
                .with_label_values(&[phase_name(phase)])
                .set(counts[phase_index(phase)]);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = encoder.encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

fn phase_index(phase: Phase) -> usize {
    match phase {
        Phase::Pending => 0,
        Phase::Running => 1,
        Phase::Succeeded => 2,
        Phase::Failed => 3,
    }
}

/// Label value of a phase.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Pending => "Pending",
        Phase::Running => "Running",
        Phase::Succeeded => "Succeeded",
        Phase::Failed => "Failed",
    }
}

/// Observes the reconcile duration on drop.
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series() {
        let m = Metrics::new();
        drop(m.reconcile_timer());
        m.reconcile_errors.with_label_values(&["Kube"]).inc();
        m.workers_observed.inc();
        m.count_phases(std::iter::empty());
        let text = m.render();
        for series in [
            "provenant_reconcile_duration_seconds_count 1",
            "provenant_reconcile_errors_total{reason=\"Kube\"} 1",
            "provenant_trainingruns{phase=\"Pending\"} 0",
            "provenant_workers_observed_total 1",
        ] {
            assert!(text.contains(series), "missing {series} in\n{text}");
        }
    }
}
