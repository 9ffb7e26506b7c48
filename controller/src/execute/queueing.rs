//! Priority and Kueue queueing of a run's workers. With `spec.queueName` the workers form one
//! Kueue plain-pod group (Kueue v0.17 `pod` integration): every pod names the LocalQueue and the
//! group and says how many pods the group has, and is created behind Kueue's admission gate, so
//! Kueue admits all the workers together or none, and no worker starts before that even where
//! Kueue's webhook does not watch the namespace (the run then waits, and says why).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodSchedulingGate};

use crate::api::TrainingRun;

/// Kueue's label naming the LocalQueue of a pod.
pub const QUEUE_NAME_LABEL: &str = "kueue.x-k8s.io/queue-name";
/// Kueue's label naming the pod group (and so its Workload) a pod belongs to.
pub const POD_GROUP_NAME_LABEL: &str = "kueue.x-k8s.io/pod-group-name";
/// Kueue's annotation: how many pods the group has (Kueue admits them when all exist).
pub const POD_GROUP_TOTAL_COUNT_ANNOTATION: &str = "kueue.x-k8s.io/pod-group-total-count";
/// Kueue's annotation that makes a group finish (and give its quota back) once none of its pods
/// is running and one has failed, instead of waiting for replacement pods: a failed worker fails
/// the run (the controller stops the others), nothing replaces it.
pub const RETRIABLE_IN_GROUP_ANNOTATION: &str = "kueue.x-k8s.io/retriable-in-group";
/// Kueue's scheduling gate, removed by Kueue when it admits the group.
pub const ADMISSION_GATE: &str = "kueue.x-k8s.io/admission";
/// Prefix of every key Kueue reads or writes on a pod (those provenant sets are refused in a pod
/// template: api::pod_template).
pub const KUEUE_PREFIX: &str = "kueue.x-k8s.io/";

/// Characters of the run's UID in its group name: run names are at most 48 characters (a CRD
/// rule), so the name with a later attempt's suffix (`-a200`) still fits in a label value (63).
const UID_CHARS: usize = 8;

/// The Kueue pod-group name of `run`: its name and the start of its UID, so a run deleted and
/// created again under the same name makes a new group (and Workload) instead of joining the old
/// one. Per run, not per pod: every worker of the run's first attempt is in it; a later attempt
/// (a restart, a resume) is a group of its own ([`attempt_group`]).
pub fn pod_group_name(run_name: &str, uid: &str) -> String {
    let uid: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let uid = &uid[..uid.len().min(UID_CHARS)];
    format!("{run_name}-{uid}")
}

/// The group of attempt `attempt` (≥ 1) of the run whose first group is `group`. Each attempt is
/// a group of its own because a group whose pods are `retriable-in-group: false` finishes (and
/// gives its quota back) once one has failed, and Kueue never admits new pods into a finished
/// group: a restarted run is queued again, as a JobSet restarted by Kueue is.
pub fn attempt_group(group: &str, attempt: i32) -> String {
    format!("{group}-a{attempt}")
}

/// Set the priority class, and the Kueue pod-group contract when the run names a queue, on one
/// worker pod of `run` (which has `replicas` workers).
pub fn apply(run: &TrainingRun, group: &str, replicas: i32, pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.priority_class_name = run.spec.priority_class_name.clone();
    let Some(queue) = run.spec.queue_name.as_deref() else {
        return;
    };
    spec.scheduling_gates = Some(vec![PodSchedulingGate {
        name: ADMISSION_GATE.into(),
    }]);
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(QUEUE_NAME_LABEL.into(), queue.into());
    labels.insert(POD_GROUP_NAME_LABEL.into(), group.into());
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(
        POD_GROUP_TOTAL_COUNT_ANNOTATION.into(),
        replicas.to_string(),
    );
    annotations.insert(RETRIABLE_IN_GROUP_ANNOTATION.into(), "false".into());
}

/// The pod is still held by Kueue's admission gate.
pub fn is_gated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| g.iter().any(|g| g.name == ADMISSION_GATE))
}

/// The `Succeeded=Unknown` reason and message of a run whose workers wait for Kueue, if any does.
pub fn waiting_for_admission(
    run: &TrainingRun,
    pods: &BTreeMap<String, Pod>,
) -> Option<(String, String)> {
    let queue = run.spec.queue_name.as_deref()?;
    let gated = pods.values().filter(|p| is_gated(p)).count();
    (gated > 0).then(|| {
        (
            "WaitingForAdmission".to_string(),
            format!(
                "{gated} of {} workers waiting for admission by Kueue queue {queue:?} (LocalQueue \
                 in this namespace): Kueue admits all the workers together when its ClusterQueue \
                 has quota for all of them; without a Kueue that manages this namespace and that \
                 LocalQueue, they wait until the run is deleted or its deadline passes",
                run.spec.replicas
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ControllerConfig;

    #[test]
    fn group_name_is_per_run_uid_and_a_valid_label_value() {
        let a = pod_group_name("bert", "0c2f7d1e-5b1a-4a4e-9f0e-3c3c1d2b9a10");
        assert_eq!(a, "bert-0c2f7d1e");
        let again = pod_group_name("bert", "7a000000-0000-4000-8000-000000000000");
        assert_ne!(
            a, again,
            "a run created again under its name is a new group"
        );
        let long = "a".repeat(48);
        let g = pod_group_name(&long, "0C2F7D1E-5B1A-4A4E-9F0E-3C3C1D2B9A10");
        assert_eq!(g.len(), 57);
        assert!(g.ends_with("-0c2f7d1e"), "{g}");
        assert_eq!(
            attempt_group(&g, 200).len(),
            62,
            "the last attempt's group fits a label"
        );
    }

    fn run(extra: &str) -> TrainingRun {
        let yaml = format!(
            "image: reg.io/train@sha256:aa\nseed: 1\noutput: {{repository: reg.io/m}}\nreplicas: 4\n{extra}"
        );
        let mut run = TrainingRun::new("bert", serde_saphyr::from_str(&yaml).unwrap());
        run.metadata.namespace = Some("ml".into());
        run.metadata.uid = Some("0c2f7d1e-5b1a-4a4e-9f0e-3c3c1d2b9a10".into());
        run
    }

    #[test]
    fn queued_workers_form_one_gated_kueue_group_with_the_priority_class() {
        let r = run("queueName: team-a\npriorityClassName: high\n");
        let plan = crate::execute::plan(&r, &ControllerConfig::defaults()).unwrap();
        let mut pods = BTreeMap::new();
        for pod in &plan.pods {
            let spec = pod.spec.as_ref().unwrap();
            assert_eq!(spec.priority_class_name.as_deref(), Some("high"));
            assert!(is_gated(pod));
            let labels = pod.metadata.labels.as_ref().unwrap();
            assert_eq!(labels[QUEUE_NAME_LABEL], "team-a");
            assert_eq!(labels[POD_GROUP_NAME_LABEL], "bert-0c2f7d1e");
            let annotations = pod.metadata.annotations.as_ref().unwrap();
            assert_eq!(annotations[POD_GROUP_TOTAL_COUNT_ANNOTATION], "4");
            assert_eq!(annotations[RETRIABLE_IN_GROUP_ANNOTATION], "false");
            pods.insert(pod.metadata.name.clone().unwrap(), pod.clone());
        }
        let (reason, message) = waiting_for_admission(&r, &pods).unwrap();
        assert_eq!(reason, "WaitingForAdmission");
        assert!(
            message.starts_with("4 of 4 workers waiting for admission by Kueue queue \"team-a\""),
            "{message}"
        );
        // Admitted: Kueue removed the gates.
        for pod in pods.values_mut() {
            pod.spec.as_mut().unwrap().scheduling_gates = None;
        }
        assert_eq!(waiting_for_admission(&r, &pods), None);
    }

    #[test]
    fn without_a_queue_no_kueue_keys_and_no_gate() {
        let r = run("");
        let plan = crate::execute::plan(&r, &ControllerConfig::defaults()).unwrap();
        for pod in &plan.pods {
            assert!(!is_gated(pod));
            assert!(pod.metadata.annotations.is_none());
            let labels = pod.metadata.labels.as_ref().unwrap();
            assert!(
                labels.keys().all(|k| !k.starts_with(KUEUE_PREFIX)),
                "{labels:?}"
            );
            assert_eq!(pod.spec.as_ref().unwrap().priority_class_name, None);
        }
    }
}
