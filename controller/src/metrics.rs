//! Prometheus metrics, served on the controller's HTTP port at `/metrics`. Every series is listed
//! in docs/operations.md.

use std::time::{Duration, Instant};

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::api::{Phase, ProvenanceState, TrainingRun};
use crate::storage::op;

/// The `reason` label values of `provenant_reconcile_errors_total`, one per way a pass fails
/// (`reconcile::Error::metric_label`, `RevocationError::metric_label`). All are exported at 0 from
/// the start.
pub mod reason {
    /// HTTP 409, or a pass that read a stale cache: routine under load.
    pub const CONFLICT: &str = "Conflict";
    pub const KUBE_API: &str = "KubeApi";
    pub const NO_NAMESPACE: &str = "NoNamespace";
    pub const ENCODE: &str = "Encode";
    pub const PANIC: &str = "Panic";
    pub const REVOCATIONS_NOT_SYNCED: &str = "RevocationsNotSynced";
    pub const RECORDS: &str = "Records";
    pub const FINALIZER: &str = "Finalizer";
    pub const REVOCATION_ATTEST: &str = "RevocationAttest";
    pub const ALL: [&str; 9] = [
        CONFLICT,
        KUBE_API,
        NO_NAMESPACE,
        ENCODE,
        PANIC,
        REVOCATIONS_NOT_SYNCED,
        RECORDS,
        FINALIZER,
        REVOCATION_ATTEST,
    ];
}

/// The controller's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub reconcile_duration: Histogram,
    pub reconcile_errors: IntCounterVec,
    pub trainingruns: IntGaugeVec,
    pub workers_observed: IntCounter,
    pub attestations: IntCounterVec,
    pub signing_duration: Histogram,
    pub registry_request_duration: HistogramVec,
    pub registry_errors: IntCounterVec,
    pub provenance_lag: Histogram,
    pub provenance_backlog: IntGauge,
    pub revocations_active: IntGauge,
    pub revocation_attestations: IntCounterVec,
    pub build_info: IntGaugeVec,
    /// 1 while this replica holds the leader Lease (or runs without election), else 0.
    pub leader: IntGauge,
}

/// The commit the binary was built from (build.rs: `PROVENANT_COMMIT`, `git rev-parse HEAD`, or
/// `unknown`).
pub const COMMIT: &str = env!("PROVENANT_COMMIT");

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("static metric")
}

fn counter_vec(name: &str, help: &str, label: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &[label]).expect("static metric")
}

impl Metrics {
    pub fn new() -> Self {
        let m = Metrics {
            registry: Registry::new(),
            reconcile_duration: histogram(
                "provenant_reconcile_duration_seconds",
                "Duration of one TrainingRun reconcile",
                &[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            reconcile_errors: counter_vec(
                "provenant_reconcile_errors_total",
                "Reconciles that failed, by reason",
                "reason",
            ),
            trainingruns: IntGaugeVec::new(
                Opts::new(
                    "provenant_trainingruns",
                    "TrainingRuns known to the controller, by phase",
                ),
                &["phase"],
            )
            .expect("static metric"),
            workers_observed: IntCounter::new(
                "provenant_workers_observed_total",
                "Worker pods whose termination was recorded into a run's status",
            )
            .expect("static metric"),
            attestations: counter_vec(
                "provenant_attestations_total",
                "Provenance attestations by result (attached, failed)",
                "result",
            ),
            signing_duration: histogram(
                "provenant_signing_duration_seconds",
                "Time to sign one run's provenance (envelope and simple signatures)",
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
            ),
            registry_request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "provenant_registry_request_duration_seconds",
                    "Registry HTTP requests by operation",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
                &["op"],
            )
            .expect("static metric"),
            registry_errors: counter_vec(
                "provenant_registry_errors_total",
                "Registry requests that failed, by operation",
                "op",
            ),
            provenance_lag: histogram(
                "provenant_provenance_lag_seconds",
                "From a run's completion to its attestation attached in the registry",
                &[
                    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                ],
            ),
            provenance_backlog: IntGauge::new(
                "provenant_provenance_backlog",
                "Succeeded runs whose provenance is not attached yet (Pending or Signed)",
            )
            .expect("static metric"),
            revocations_active: IntGauge::new(
                "provenant_revocations_active",
                "MaterialRevocations in force (not being deleted)",
            )
            .expect("static metric"),
            revocation_attestations: counter_vec(
                "provenant_revocation_attestations_total",
                "Revocation statements attached to models, by result (revoked, reinstated, failed)",
                "result",
            ),
            build_info: IntGaugeVec::new(
                Opts::new(
                    "provenant_build_info",
                    "Always 1; the labels say which build of provenant is running",
                ),
                &["version", "commit"],
            )
            .expect("static metric"),
            leader: IntGauge::new(
                "provenant_leader",
                "1 while this replica leads (holds the Lease, or runs without leader election)",
            )
            .expect("static metric"),
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), COMMIT])
            .set(1);
        // Every label value is known and bounded, so each series is exported (at 0) from the
        // start: a `rate()` alert and a dashboard see the series before the first event.
        for reason in reason::ALL {
            m.reconcile_errors.with_label_values(&[reason]);
        }
        for op in op::ALL {
            m.registry_errors.with_label_values(&[op]);
            m.registry_request_duration.with_label_values(&[op]);
        }
        m.count_phases(std::iter::empty());
        for result in ["attached", "failed"] {
            m.attestations.with_label_values(&[result]);
        }
        for result in ["revoked", "reinstated", "failed"] {
            m.revocation_attestations.with_label_values(&[result]);
        }
        let collectors: [Box<dyn Collector>; 14] = [
            Box::new(m.reconcile_duration.clone()),
            Box::new(m.reconcile_errors.clone()),
            Box::new(m.trainingruns.clone()),
            Box::new(m.workers_observed.clone()),
            Box::new(m.attestations.clone()),
            Box::new(m.signing_duration.clone()),
            Box::new(m.registry_request_duration.clone()),
            Box::new(m.registry_errors.clone()),
            Box::new(m.provenance_lag.clone()),
            Box::new(m.provenance_backlog.clone()),
            Box::new(m.revocations_active.clone()),
            Box::new(m.revocation_attestations.clone()),
            Box::new(m.build_info.clone()),
            Box::new(m.leader.clone()),
        ];
        for collector in collectors {
            m.registry
                .register(collector)
                .expect("metric names are unique");
        }
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds,
        // process_max_fds, process_virtual_memory_bytes, process_start_time_seconds, read from
        // /proc at scrape time (the names every Prometheus client library exports).
        #[cfg(target_os = "linux")]
        m.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("metric names are unique");
        m
    }

    /// Start timing a reconcile; the duration is observed when the guard drops.
    pub fn reconcile_timer(&self) -> ReconcileTimer {
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.reconcile_duration.clone(),
        }
    }

    /// Feed one registry request into the registry metrics (the storage observer).
    pub fn observe_registry(&self, op: &str, elapsed: Duration, ok: bool) {
        self.registry_request_duration
            .with_label_values(&[op])
            .observe(elapsed.as_secs_f64());
        if !ok {
            self.registry_errors.with_label_values(&[op]).inc();
        }
    }

    /// Recount runs per phase, and the provenance backlog, from the controller's cache (called at
    /// scrape time, so the gauges can never drift from what the cache holds).
    pub fn count_phases<'a>(&self, runs: impl Iterator<Item = &'a TrainingRun>) {
        let mut counts = [0i64; 4];
        let mut backlog = 0;
        for run in runs {
            let status = run.status.as_ref();
            let phase = status.and_then(|s| s.phase).unwrap_or_default();
            counts[phase_index(phase)] += 1;
            let pending = status.and_then(|s| s.provenance.as_ref()).is_some_and(|p| {
                matches!(p.state, ProvenanceState::Pending | ProvenanceState::Signed)
            });
            if phase == Phase::Succeeded && pending {
                backlog += 1;
            }
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
        self.provenance_backlog.set(backlog);
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
        m.observe_registry("manifest_put", Duration::from_millis(3), false);
        m.count_phases(std::iter::empty());
        let text = m.render();
        for series in [
            "provenant_reconcile_duration_seconds_count 1",
            "provenant_reconcile_errors_total{reason=\"Kube\"} 1",
            "provenant_trainingruns{phase=\"Pending\"} 0",
            "provenant_workers_observed_total 1",
            "provenant_attestations_total{result=\"attached\"} 0",
            "provenant_registry_request_duration_seconds_count{op=\"manifest_put\"} 1",
            "provenant_registry_errors_total{op=\"manifest_put\"} 1",
            "provenant_provenance_backlog 0",
            "provenant_signing_duration_seconds_count 0",
            "provenant_provenance_lag_seconds_count 0",
            "provenant_revocations_active 0",
            "provenant_revocation_attestations_total{result=\"revoked\"} 0",
        ] {
            assert!(text.contains(series), "missing {series} in\n{text}");
        }
    }

    /// The `provenant_*` families of docs/operations.md's Metrics table.
    fn documented_families() -> Vec<String> {
        let doc = include_str!("../../docs/operations.md");
        let table = doc
            .split_once("\n### Metrics\n")
            .and_then(|(_, rest)| rest.split("\n#").next())
            .expect("docs/operations.md has a ### Metrics section");
        table
            .lines()
            .filter_map(|l| l.strip_prefix("| `provenant_"))
            .map(|l| {
                let name = l.split(['`', '{']).next().unwrap_or_default();
                format!("provenant_{name}")
            })
            .collect()
    }

    #[test]
    fn every_documented_family_and_label_value_is_exported_from_the_start() {
        let text = Metrics::new().render();
        let exported: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE provenant_"))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let documented = documented_families();
        assert!(documented.len() >= 14, "{documented:?}");
        for family in &documented {
            let name = family.trim_start_matches("provenant_");
            assert!(exported.contains(&name), "{family} not in\n{text}");
        }
        for name in &exported {
            let family = format!("provenant_{name}");
            assert!(documented.contains(&family), "{family} is not documented");
        }
        for reason in reason::ALL {
            let series = format!("provenant_reconcile_errors_total{{reason=\"{reason}\"}} 0");
            assert!(text.contains(&series), "missing {series}");
        }
        for op in op::ALL {
            for series in [
                format!("provenant_registry_errors_total{{op=\"{op}\"}} 0"),
                format!("provenant_registry_request_duration_seconds_count{{op=\"{op}\"}} 0"),
            ] {
                assert!(text.contains(&series), "missing {series}");
            }
        }
        for series in [
            "provenant_attestations_total{result=\"failed\"} 0",
            "provenant_revocation_attestations_total{result=\"failed\"} 0",
            "provenant_trainingruns{phase=\"Running\"} 0",
            "provenant_leader 0",
        ] {
            assert!(text.contains(series), "missing {series}");
        }
    }

    #[test]
    fn process_metrics_and_build_info_are_exported() {
        let text = Metrics::new().render();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        };
        #[cfg(target_os = "linux")]
        {
            assert!(value("process_resident_memory_bytes") > 1e6);
            assert!(value("process_open_fds") >= 3.0);
            assert!(value("process_cpu_seconds_total") >= 0.0);
            let start = value("process_start_time_seconds");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs_f64();
            assert!(
                start > now - 3600.0 && start <= now + 1.0,
                "{start} vs {now}"
            );
        }
        let info = format!(
            "provenant_build_info{{commit=\"{COMMIT}\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&info), "missing {info} in\n{text}");
        // Built from a checkout: the commit is a full git id, not `unknown`.
        assert!(
            COMMIT.len() == 40 && COMMIT.bytes().all(|b| b.is_ascii_hexdigit())
                || COMMIT == "unknown",
            "{COMMIT}"
        );
    }
}
