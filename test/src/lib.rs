//! Test bed for provenant's integration and e2e suites. Test-support code only: it is a separate
//! crate that the `provenant` binary never links.
//!
//! - [`apiserver`]: an in-process Kubernetes API-server double served over HTTP.
//! - [`blackhole`]: a registry host that accepts connections and never answers (fairness).
//! - [`kubelet`]: a kubelet simulator that drives pods through their phases via the public API.
//! - [`kueue`]: the real Kueue manager against the test control plane (queueing scenarios).
//! - [`cluster`]: one cluster per test (the double with `crds/` installed, or `E2E_KUBECONFIG`'s),
//!   and the real `provenant` binary run against it.
//! - [`registry`]: a real CNCF distribution registry (`docker-registry`) on a loopback port.
//! - [`registry_proxy`]: a fault-injecting proxy in front of it (refuse writes, be down), and
//!   [`racing_writer`]: another writer racing the tag updates that go through it.
//! - [`rbac`]: the controller's shipped RBAC, installed per test; the controller of the tests
//!   runs on a real cluster under its ServiceAccount with exactly those rules.
//! - [`tools`]: where the pinned Go tools (kubectl, cosign, oras) are.

pub mod apiserver;
pub mod blackhole;
pub mod cluster;
pub mod kubelet;
pub mod kueue;
pub mod racing_writer;
pub mod rbac;
pub mod registry;
pub mod registry_proxy;
pub mod tools;
