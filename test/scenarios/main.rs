//! End-to-end scenarios: the real `provenant` binary against the API-server double (or the cluster
//! named by `E2E_KUBECONFIG`), with the kubelet simulator moving pods. Run by `make test`, and by
//! `make e2e` against a real cluster.

mod admission;
mod bundle_encoding;
mod concurrent_writers;
mod dashboard;
#[path = "../../controller/tests/support/dashboard.rs"]
mod dashboard_support;
mod fairness;
mod frameworks;
mod hostile_registry;
mod install;
mod interop;
mod large_runs;
mod least_privilege;
mod lifecycle;
mod model_signing;
#[path = "../../controller/tests/support/model_signing.rs"]
mod model_signing_support;
mod pipelines;
mod pod_errors;
mod process;
#[path = "../../controller/tests/support/promql.rs"]
mod promql;
mod provenance;
mod queueing;
mod restarts;
mod revocation;
mod revocation_admission;
#[path = "../../controller/tests/support/runs.rs"]
mod runs;
mod samples;
mod serving_samples;
mod support;
mod tenant_datasets;
mod tenant_pods;
mod tenant_records;
mod tenant_repositories;
mod worker_security;
