//! The distributed-training environment of the workers (`spec.framework`), and the TPU
//! multi-host variables, as the launchers a platform team already uses set them: torchrun /
//! Kubeflow Trainer for PyTorch, Kubeflow Trainer's JAX runtime, GKE's JobSet TPU webhook.
//!
//! Addresses are `<hostname>.<subdomain>` through the run's headless Service, never pod names:
//! a restarted worker may get a new pod name but keeps its hostname.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ServicePort};

use crate::api::Framework;
use crate::labels;

use super::placement::Placement;

/// JAX's default coordinator port (`jax.distributed`'s, and the one its TPU cluster detection uses).
pub const JAX_COORDINATOR_PORT: i32 = 8476;
/// Extended resource of TPU chips: a profile requesting it is a TPU profile.
pub const TPU_RESOURCE: &str = "google.com/tpu";

/// The rendezvous environment of one run: what every worker gets, and which variables hold the
/// worker's own rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    pub framework: Framework,
    /// Same value on every worker, in the order set on the pods.
    pub shared: Vec<(&'static str, String)>,
    /// Set to the worker's rank (0..replicas-1), in the order set on the pods.
    pub per_rank: Vec<&'static str>,
    /// The port the run's headless Service exposes.
    pub port: (&'static str, i32),
}

/// Stable DNS host name of the worker of `rank` (its pod's `hostname`).
pub fn worker_hostname(run_name: &str, rank: i32) -> String {
    format!("{run_name}-{rank}")
}

/// `<hostname>.<service>` of the worker of `rank`, resolvable in the run's namespace.
pub fn worker_address(run_name: &str, rank: i32) -> String {
    format!("{}.{run_name}", worker_hostname(run_name, rank))
}

/// Whether the run's accelerator is a TPU slice spread over several hosts.
pub fn tpu_multi_host(placement: &Placement, replicas: i32) -> bool {
    replicas > 1
        && placement
            .resource
            .as_ref()
            .is_some_and(|(r, _)| r == TPU_RESOURCE)
}

/// The rendezvous of a run named `run_name` with `replicas` workers placed by `placement`.
pub fn rendezvous(
    run_name: &str,
    replicas: i32,
    framework: Framework,
    placement: &Placement,
) -> Rendezvous {
    let replicas = replicas.max(1);
    // One worker rendezvous with itself; several through worker 0's stable name.
    let coordinator = if replicas > 1 {
        worker_address(run_name, 0)
    } else {
        "localhost".to_string()
    };
    let n = replicas.to_string();
    let (mut shared, mut per_rank, port) = match framework {
        Framework::Pytorch => {
            let port = labels::RENDEZVOUS_PORT.to_string();
            (
                vec![
                    (labels::env::WORLD_SIZE, n.clone()),
                    (labels::env::MASTER_ADDR, coordinator.clone()),
                    (labels::env::MASTER_PORT, port.clone()),
                    // One process per pod: torchrun or a multi-process workload sets its own.
                    ("LOCAL_RANK", "0".to_string()),
                    ("NNODES", n.clone()),
                    // torchrun reads PET_<OPTION> as the default of --<option>, as Kubeflow
                    // Trainer relies on: `torchrun train.py` joins the static rendezvous.
                    ("PET_NNODES", n),
                    ("PET_MASTER_ADDR", coordinator),
                    ("PET_MASTER_PORT", port),
                ],
                vec![labels::env::RANK, "NODE_RANK", "PET_NODE_RANK"],
                ("rendezvous", labels::RENDEZVOUS_PORT),
            )
        }
        Framework::Jax => (
            vec![
                (
                    "JAX_COORDINATOR_ADDRESS",
                    format!("{coordinator}:{JAX_COORDINATOR_PORT}"),
                ),
                ("JAX_NUM_PROCESSES", n),
            ],
            vec!["JAX_PROCESS_ID"],
            ("jax-coordinator", JAX_COORDINATOR_PORT),
        ),
        Framework::None => (vec![], vec![], ("rendezvous", labels::RENDEZVOUS_PORT)),
    };
    if tpu_multi_host(placement, replicas) {
        let hosts: Vec<String> = (0..replicas)
            .map(|rank| worker_address(run_name, rank))
            .collect();
        shared.push(("TPU_WORKER_HOSTNAMES", hosts.join(",")));
        per_rank.push("TPU_WORKER_ID");
    }
    Rendezvous {
        framework,
        shared,
        per_rank,
        port,
    }
}

impl Rendezvous {
    /// The variables of the worker of `rank`: its rank variables first, then the shared ones.
    pub fn env(&self, rank: i32) -> Vec<EnvVar> {
        let rank = rank.to_string();
        self.per_rank
            .iter()
            .map(|name| (*name, rank.clone()))
            .chain(self.shared.iter().map(|(n, v)| (*n, v.clone())))
            .map(|(name, value)| EnvVar {
                name: name.into(),
                value: Some(value),
                value_from: None,
            })
            .collect()
    }

    /// The shared variables by name (the provenance record).
    pub fn shared_map(&self) -> BTreeMap<&'static str, &str> {
        self.shared.iter().map(|(n, v)| (*n, v.as_str())).collect()
    }

    /// The port of the headless Service.
    pub fn service_port(&self) -> ServicePort {
        ServicePort {
            name: Some(self.port.0.into()),
            port: self.port.1,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RESERVED_ENV;

    fn tpu() -> Placement {
        Placement {
            resource: Some((TPU_RESOURCE.into(), 4)),
            ..Default::default()
        }
    }

    fn env(r: &Rendezvous, rank: i32) -> BTreeMap<String, String> {
        r.env(rank)
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect()
    }

    #[test]
    fn pytorch_gives_torchrun_and_kubeflow_names() {
        let r = rendezvous("bert", 4, Framework::Pytorch, &Placement::default());
        let e = env(&r, 2);
        for (name, value) in [
            ("RANK", "2"),
            ("NODE_RANK", "2"),
            ("PET_NODE_RANK", "2"),
            ("WORLD_SIZE", "4"),
            ("NNODES", "4"),
            ("PET_NNODES", "4"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "bert-0.bert"),
            ("PET_MASTER_ADDR", "bert-0.bert"),
            ("MASTER_PORT", "29500"),
            ("PET_MASTER_PORT", "29500"),
        ] {
            assert_eq!(e[name], value, "{name}");
        }
        assert_eq!(e.len(), 11, "{e:?}");
        assert_eq!(r.service_port().port, 29500);
        let single = env(
            &rendezvous("bert", 1, Framework::Pytorch, &Placement::default()),
            0,
        );
        assert_eq!(single["MASTER_ADDR"], "localhost");
    }

    #[test]
    fn jax_on_a_multi_host_tpu_slice_gets_the_coordinator_and_the_tpu_hosts() {
        let r = rendezvous("llm", 4, Framework::Jax, &tpu());
        let e = env(&r, 3);
        assert_eq!(e["JAX_COORDINATOR_ADDRESS"], "llm-0.llm:8476");
        assert_eq!(e["JAX_NUM_PROCESSES"], "4");
        assert_eq!(e["JAX_PROCESS_ID"], "3");
        assert_eq!(e["TPU_WORKER_ID"], "3");
        assert_eq!(
            e["TPU_WORKER_HOSTNAMES"],
            "llm-0.llm,llm-1.llm,llm-2.llm,llm-3.llm"
        );
        assert_eq!(e.len(), 5, "{e:?}");
        assert_eq!(r.service_port().port, JAX_COORDINATOR_PORT);
    }

    #[test]
    fn none_sets_nothing_but_the_tpu_hosts_and_one_host_has_no_tpu_hosts() {
        assert!(
            rendezvous("x", 4, Framework::None, &Placement::default())
                .env(1)
                .is_empty()
        );
        let e = env(&rendezvous("x", 2, Framework::None, &tpu()), 1);
        assert_eq!(
            e.keys().collect::<Vec<_>>(),
            ["TPU_WORKER_HOSTNAMES", "TPU_WORKER_ID"]
        );
        assert!(
            rendezvous("x", 1, Framework::None, &tpu())
                .env(0)
                .is_empty()
        );
    }

    #[test]
    fn every_name_set_is_reserved_in_spec_env() {
        for framework in [Framework::Pytorch, Framework::Jax, Framework::None] {
            for name in env(&rendezvous("x", 2, framework, &tpu()), 0).keys() {
                assert!(
                    RESERVED_ENV.contains(&name.as_str()),
                    "{name} is not reserved"
                );
            }
        }
    }
}
