use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::api::TrainingRunStatus;

/// The labels GPU feature discovery and the GPU operator put on an H100 node (41 of them, ~2 KB),
/// `nvidia.com/gfd.timestamp` differing from node to node as it does in a cluster.
fn gfd_labels(node: usize) -> BTreeMap<String, String> {
    let fixed = [
        ("nvidia.com/cuda.driver-version.full", "550.54.15"),
        ("nvidia.com/cuda.driver-version.major", "550"),
        ("nvidia.com/cuda.driver-version.minor", "54"),
        ("nvidia.com/cuda.driver-version.revision", "15"),
        ("nvidia.com/cuda.driver.major", "550"),
        ("nvidia.com/cuda.driver.minor", "54"),
        ("nvidia.com/cuda.driver.rev", "15"),
        ("nvidia.com/cuda.runtime-version.full", "12.4"),
        ("nvidia.com/cuda.runtime-version.major", "12"),
        ("nvidia.com/cuda.runtime-version.minor", "4"),
        ("nvidia.com/cuda.runtime.major", "12"),
        ("nvidia.com/cuda.runtime.minor", "4"),
        ("nvidia.com/gpu.compute.major", "9"),
        ("nvidia.com/gpu.compute.minor", "0"),
        ("nvidia.com/gpu.count", "8"),
        ("nvidia.com/gpu.family", "hopper"),
        ("nvidia.com/gpu.machine", "p5.48xlarge"),
        ("nvidia.com/gpu.memory", "81559"),
        ("nvidia.com/gpu.mode", "compute"),
        ("nvidia.com/gpu.present", "true"),
        ("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3"),
        ("nvidia.com/gpu.replicas", "1"),
        ("nvidia.com/gpu.sharing-strategy", "none"),
        ("nvidia.com/mig.capable", "true"),
        ("nvidia.com/mig.config", "all-disabled"),
        ("nvidia.com/mig.config.state", "success"),
        ("nvidia.com/mig.strategy", "single"),
        ("nvidia.com/mps.capable", "false"),
        ("nvidia.com/vgpu.present", "false"),
        ("nvidia.com/gpu.deploy.container-toolkit", "true"),
        ("nvidia.com/gpu.deploy.dcgm", "true"),
        ("nvidia.com/gpu.deploy.dcgm-exporter", "true"),
        ("nvidia.com/gpu.deploy.device-plugin", "true"),
        ("nvidia.com/gpu.deploy.driver", "true"),
        ("nvidia.com/gpu.deploy.gpu-feature-discovery", "true"),
        ("nvidia.com/gpu.deploy.mig-manager", "true"),
        ("nvidia.com/gpu.deploy.node-status-exporter", "true"),
        ("nvidia.com/gpu.deploy.operator-validator", "true"),
        ("nvidia.com/gpu-driver-upgrade-state", "upgrade-done"),
        ("node.kubernetes.io/instance-type", "p5.48xlarge"),
    ];
    let mut labels: BTreeMap<String, String> = fixed
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.insert(
        "nvidia.com/gfd.timestamp".into(),
        (1_732_099_200 + node * 37).to_string(),
    );
    labels
}

/// Worker `rank` of a 1,024-worker H100 run as the controller records it (one worker per node),
/// every worker reporting metrics, rank 0 the model too.
fn gpu_worker(rank: usize) -> WorkerRecord {
    let image = format!(
        "registry.example.com/acme/llm-train@sha256:{}",
        "4f".repeat(32)
    );
    let mut report = json!({"metrics": {"loss": 1.0 + rank as f64 / 1000.0}});
    if rank == 0 {
        report["outputs"] = json!([format!(
            "registry.example.com/models/llm:v1@sha256:{}",
            "c0".repeat(32)
        )]);
    }
    serde_json::from_value(json!({
        "podName": format!("llm-pretrain-{rank}"),
        "rank": rank,
        "nodeName": format!("ip-10-0-{}-{}.ec2.internal", rank / 256, rank % 256),
        "phase": "Succeeded",
        "exitCode": 0,
        "reason": "Completed",
        "startedAt": format!("2026-11-20T10:00:{:02}Z", rank % 60),
        "finishedAt": format!("2026-11-20T12:29:{:02}Z", (rank * 7) % 60),
        "containers": [{"name": "trainer", "image": image, "digest": format!("sha256:{}", "4f".repeat(32)), "imageId": image}],
        "accelerator": {
            "product": "NVIDIA-H100-80GB-HBM3", "count": "8", "memory": "81559",
            "driverVersion": "550.54.15", "cudaVersion": "12.4", "instanceType": "p5.48xlarge",
            "allocated": 8, "labels": gfd_labels(rank),
        },
        "reportDigest": format!("sha256:{rank:064x}"),
        "report": report,
    }))
    .expect("a worker record")
}

fn round_trip(records: &[WorkerRecord]) -> Vec<WorkerRecord> {
    let text = serde_json::to_string(&Workers::compact(records).expect("compacts")).expect("json");
    serde_json::from_str::<Workers>(&text)
        .expect("reads")
        .expand()
        .expect("expands")
}

#[test]
fn records_read_back_exactly_as_written() {
    let base = gpu_worker(3);
    let mut no_accelerator = gpu_worker(4);
    no_accelerator.accelerator = None;
    let mut other_driver = gpu_worker(5);
    let facts = other_driver.accelerator.as_mut().expect("facts");
    facts.driver_version = Some("535.104.05".into());
    facts.labels.remove("nvidia.com/cuda.driver-version.full");
    facts.labels.insert("nvidia.com/extra".into(), "x".into());
    let mut failed = gpu_worker(6);
    failed.exit_code = Some(137);
    failed.reason = Some("OOMKilled".into());
    failed.report = None;
    failed.report_error = Some("InvalidWorkloadReport: report is not valid JSON".into());
    failed.containers.push(crate::api::ContainerRecord {
        name: "sidecar".into(),
        image: "busybox".into(),
        digest: None,
        image_id: None,
    });
    let bare = WorkerRecord {
        pod_name: "llm-pretrain-7".into(),
        rank: 7,
        ..Default::default()
    };
    let bare_too = WorkerRecord {
        pod_name: "llm-pretrain-8".into(),
        rank: 8,
        ..Default::default()
    };
    let cases: Vec<Vec<WorkerRecord>> = vec![
        vec![],
        vec![base.clone()],
        vec![base.clone(), gpu_worker(1)],
        vec![base.clone(), base.clone()],
        vec![base.clone(), no_accelerator.clone(), gpu_worker(9)],
        vec![base.clone(), other_driver.clone(), gpu_worker(9)],
        vec![base.clone(), failed.clone(), other_driver, no_accelerator],
        vec![base.clone(), bare.clone()],
        vec![bare, bare_too],
        (0..64).map(gpu_worker).collect(),
    ];
    for records in cases {
        assert_eq!(round_trip(&records), records, "{} records", records.len());
    }
}

#[test]
fn what_every_record_shares_is_written_once() {
    let records: Vec<WorkerRecord> = (0..4).map(gpu_worker).collect();
    let written = Workers::compact(&records).expect("compacts");
    let common = written.worker_common.as_ref().expect("a common part");
    assert_eq!(common["exitCode"], 0);
    assert_eq!(
        common["accelerator"]["labels"]["nvidia.com/gpu.product"],
        "NVIDIA-H100-80GB-HBM3"
    );
    assert!(common.get("podName").is_none() && common.get("rank").is_none());
    // Each record keeps what is its own: name, rank, node, times, its node's GFD timestamp.
    let second = &written.workers[1];
    assert_eq!(second["podName"], "llm-pretrain-1");
    assert_eq!(second["rank"], 1);
    assert_eq!(second["nodeName"], "ip-10-0-0-1.ec2.internal");
    assert_eq!(
        second["accelerator"],
        json!({"labels": {"nvidia.com/gfd.timestamp": "1732099237"}})
    );
    assert!(second.get("exitCode").is_none() && second.get("containers").is_none());
}

#[test]
fn a_1024_worker_gpu_run_fits_etcd_with_room_to_spare() {
    let records: Vec<WorkerRecord> = (0..1024).map(gpu_worker).collect();
    let whole = serde_json::to_vec(&records).expect("json").len();
    let written = serde_json::to_vec(&Workers::compact(&records).expect("compacts"))
        .expect("json")
        .len();
    // etcd refuses a request over 1.5 MiB: the records whole would not fit, written compactly they
    // leave more than three quarters of it (measured: 2,583,099 bytes whole, 357,107 written).
    assert!(whole > 3 * 1024 * 1024 / 2, "whole: {whole} bytes");
    assert!(written < 512 * 1024, "written: {written} bytes");
    assert_eq!(round_trip(&records), records);
}

/// A restart keeps the first attempt's workers: a 1,024-worker run that restarted once still fits
/// (its second attempt's records carry `attempt`, both attempts list their pods, and
/// `workerPods` holds the 2,048 pods created).
#[test]
fn a_restarted_1024_worker_run_still_fits_etcd() {
    let mut records: Vec<WorkerRecord> = (0..1024).map(gpu_worker).collect();
    records.extend((0..1024).map(|rank| WorkerRecord {
        pod_name: format!("llm-pretrain-{rank}-a1"),
        attempt: 1,
        ..gpu_worker(rank)
    }));
    let attempts = (0..2)
        .map(|k| crate::api::Attempt {
            index: k,
            pods: (0..1024)
                .map(|r| crate::execute::attempt::pod_name("llm-pretrain", k, r))
                .collect(),
            ..Default::default()
        })
        .collect();
    let image = format!(
        "trainer=registry.example.com/acme/llm-train@sha256:{}",
        "4f".repeat(32)
    );
    let worker_pods = records
        .iter()
        .enumerate()
        .map(|(i, r)| crate::api::CreatedPod {
            name: r.pod_name.clone(),
            uid: format!("{i:08x}-0000-4000-8000-000000000000"),
            images: vec![image.clone()],
        })
        .collect();
    let status = TrainingRunStatus {
        workers: records,
        attempts,
        worker_pods,
        ..Default::default()
    };
    let written = serde_json::to_vec(&status).expect("json").len();
    // Measured: 1,185,819 bytes, under etcd's 1.5 MiB; a third attempt of this size would not
    // fit, hence `MAX_RECORDED_PODS`.
    assert_eq!(
        status.worker_pods.len(),
        crate::api::MAX_RECORDED_PODS as usize
    );
    assert!(written < 3 * 1024 * 1024 / 2, "written: {written} bytes");
    let back: TrainingRunStatus =
        serde_json::from_slice(&serde_json::to_vec(&status).unwrap()).unwrap();
    assert_eq!(back, status);
}

#[test]
fn a_status_round_trips_through_json_and_yaml() {
    let status = TrainingRunStatus {
        workers: (0..3).map(gpu_worker).collect(),
        ..Default::default()
    };
    let value = serde_json::to_value(&status).expect("json");
    assert!(value.get("workerCommon").is_some(), "{value}");
    let back: TrainingRunStatus = serde_json::from_value(value.clone()).expect("reads");
    assert_eq!(back, status);
    let yaml = serde_saphyr::to_string(&value).expect("yaml");
    let back: TrainingRunStatus = serde_saphyr::from_str(&yaml).expect("reads yaml");
    assert_eq!(back, status);
    // A status written before `workerCommon` existed reads as it always did.
    let old = json!({"workers": [serde_json::to_value(gpu_worker(0)).expect("json")]});
    let back: TrainingRunStatus = serde_json::from_value(old).expect("reads");
    assert_eq!(back.workers, vec![gpu_worker(0)]);
}

#[test]
fn only_the_name_and_rank_of_a_record_are_required() {
    // `compact` never leaves out `OWN`; any other required field could be left out of a record,
    // which the API server would then refuse.
    let schema = schemars::schema_for!(WorkerRecord);
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(required, OWN);
}
