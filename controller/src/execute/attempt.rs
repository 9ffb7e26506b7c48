//! The workers of a later attempt (a restart, a resume): the pods of [`super::plan`] under new
//! names, so a new attempt's pods never collide with an earlier one's (kept, terminated, as
//! evidence) and each has its own recorded UID. Attempt 0 keeps `<run>-<rank>`; attempt k ≥ 1 is
//! `<run>-<rank>-a<k>` (run names are ≤ 48 characters, ranks < 1024, attempts ≤ 200: ≤ 58; the
//! suffix keeps it apart from every name of another run: a rank is digits only, so `bert-0-a1`
//! is no worker of a run `bert-0` nor of a run `bert-a1`). The
//! hostname and subdomain stay those of attempt 0, so the rendezvous DNS names
//! (`<run>-0.<run>`) do not change; two attempts never run at once (reconcile/restart.rs).

use kube::ResourceExt;

use super::WorkerPlan;

/// Label on worker pods: the attempt the worker belongs to (informational: the controller reads
/// the attempt from the pod's name, which cannot be edited).
pub const ATTEMPT_LABEL: &str = "provenant.dev/attempt";

/// The name of the worker of `rank` in attempt `attempt`.
pub fn pod_name(run: &str, attempt: i32, rank: i32) -> String {
    if attempt == 0 {
        super::worker_pod_name(run, rank)
    } else {
        format!("{run}-{rank}-a{attempt}")
    }
}

/// The attempt and rank of the worker pod `pod` of run `run`, if it is named as one.
pub fn of_pod(run: &str, pod: &str) -> Option<(i32, i32)> {
    let rest = pod.strip_prefix(run)?.strip_prefix('-')?;
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match rest.split_once('-') {
        Some((rank, attempt)) => Some((number(attempt.strip_prefix('a')?)?, number(rank)?)),
        None => Some((0, number(rest)?)),
    }
}

/// `plan` (attempt 0) as attempt `attempt`: renamed pods; `deadline_left`, the seconds left of
/// the run's `activeDeadlineSeconds`, becomes each pod's own deadline (the kubelet counts from the
/// pod's start, the run's deadline from its first attempt).
pub fn for_attempt(mut plan: WorkerPlan, attempt: i32, deadline_left: Option<i64>) -> WorkerPlan {
    for pod in &mut plan.pods {
        let run = pod
            .labels()
            .get(crate::labels::RUN)
            .cloned()
            .unwrap_or_default();
        let Some((_, rank)) = of_pod(&run, &pod.name_any()) else {
            continue;
        };
        pod.metadata.name = Some(pod_name(&run, attempt, rank));
        pod.labels_mut()
            .insert(ATTEMPT_LABEL.into(), attempt.to_string());
        // A queued run's attempt is a Kueue pod group of its own (queueing::attempt_group).
        if attempt > 0
            && let Some(group) = pod
                .labels_mut()
                .get_mut(super::queueing::POD_GROUP_NAME_LABEL)
        {
            *group = super::queueing::attempt_group(group, attempt);
        }
        // The hostname stays `<run>-<rank>` (set by plan for distributed runs).
        if let (Some(spec), Some(left)) = (pod.spec.as_mut(), deadline_left) {
            spec.active_deadline_seconds = Some(left.max(1));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::TrainingRun;
    use crate::config::ControllerConfig;

    fn plan(name: &str) -> WorkerPlan {
        let run: TrainingRun = serde_json::from_value(json!({
            "apiVersion": "provenant.dev/v1alpha1", "kind": "TrainingRun",
            "metadata": {"name": name, "namespace": "ns", "uid": "run-uid"},
            "spec": {"image": "reg.io/train:1", "seed": 1, "replicas": 2,
                     "activeDeadlineSeconds": 3600,
                     "output": {"repository": "reg.io/models/bert"}},
        }))
        .expect("a run");
        super::super::plan(&run, &ControllerConfig::defaults()).expect("a plan")
    }

    #[test]
    fn attempts_are_named_apart_and_keep_their_rendezvous_names() {
        let first = plan("bert");
        assert_eq!(first.pods[1].name_any(), "bert-1");
        let second = for_attempt(first.clone(), 2, Some(100));
        let pod = &second.pods[1];
        assert_eq!(pod.name_any(), "bert-1-a2");
        assert_eq!(pod.labels()[ATTEMPT_LABEL], "2");
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some("bert-1"));
        assert_eq!(spec.subdomain.as_deref(), Some("bert"));
        assert_eq!(spec.active_deadline_seconds, Some(100));
        // Everything else as planned.
        assert_eq!(
            pod.spec.as_ref().map(|s| &s.containers),
            first.pods[1].spec.as_ref().map(|s| &s.containers)
        );
        assert_eq!(for_attempt(first.clone(), 0, None).pods, {
            let mut p = first.pods.clone();
            for pod in &mut p {
                pod.labels_mut().insert(ATTEMPT_LABEL.into(), "0".into());
            }
            p
        });
    }

    #[test]
    fn names_read_back_and_fit_a_label() {
        let run = "r".repeat(48);
        let longest = pod_name(&run, crate::api::MAX_ATTEMPTS as i32, 1023);
        assert!(longest.len() <= 63, "{longest}");
        assert_eq!(of_pod(&run, &longest), Some((201, 1023)));
        assert_eq!(of_pod("bert", "bert-3"), Some((0, 3)));
        assert_eq!(of_pod("bert", "bert-0-a1"), Some((1, 0)));
        // Another run's workers, whatever its name.
        assert_eq!(of_pod("bert", "bert-a1-0"), None);
        assert_eq!(of_pod("bert", "bert-0-1-a1"), None);
        assert_ne!(pod_name("bert", 1, 0), pod_name("bert-a1", 0, 0));
        // Another run whose name extends this one's, or no rank: not a worker name.
        assert_eq!(of_pod("bert", "bert-large-0"), None);
        assert_eq!(of_pod("bert", "bert-0-b1"), None);
        assert_eq!(of_pod("bert", "bert-"), None);
        assert_eq!(of_pod("bert", "bert-0-a"), None);
    }

    #[test]
    fn a_queued_runs_later_attempt_is_a_kueue_group_of_its_own() {
        let run: TrainingRun = serde_json::from_value(json!({
            "apiVersion": "provenant.dev/v1alpha1", "kind": "TrainingRun",
            "metadata": {"name": "bert", "namespace": "ns", "uid": "0c2f7d1e-5b1a"},
            "spec": {"image": "reg.io/train:1", "seed": 1, "replicas": 2, "queueName": "team-a",
                     "output": {"repository": "reg.io/models/bert"}},
        }))
        .expect("a run");
        let first = super::super::plan(&run, &ControllerConfig::defaults()).expect("a plan");
        let group = |p: &WorkerPlan, rank: usize| {
            p.pods[rank].labels()[super::super::queueing::POD_GROUP_NAME_LABEL].clone()
        };
        assert_eq!(group(&first, 1), "bert-0c2f7d1e");
        assert_eq!(
            group(&for_attempt(first.clone(), 0, None), 1),
            "bert-0c2f7d1e"
        );
        let third = for_attempt(first, 2, None);
        assert_eq!(
            [group(&third, 0), group(&third, 1)],
            ["bert-0c2f7d1e-a2"; 2]
        );
    }
}
