//! TrainingRuns the CRD must refuse, each with the field the refusal must name, and edge cases it
//! must accept. One table for two judges: the generated schema evaluated offline
//! (controller/tests/crd_validation.rs) and a real kube-apiserver through kubectl
//! (test/scenarios/admission.rs).

#![allow(dead_code)] // each test target uses its part

use serde_json::{Value, json};

/// The shipped samples: (path, YAML text), sorted by path.
pub fn samples() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/samples");
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 3, "expected the GPU, TPU and CPU samples");
    out
}

/// config/samples/cpu-trainingrun.yaml as JSON.
pub fn cpu_sample() -> Value {
    let (_, text) = samples()
        .into_iter()
        .find(|(p, _)| p.ends_with("cpu-trainingrun.yaml"))
        .unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

/// A bad run: the refusal must name a field starting with `field`, and `field: message` must
/// contain one of `hints` (none: anything). Hints never repeat the field's own name, or they
/// would hold for any refusal of that field.
pub struct Refused {
    pub case: String,
    pub object: Value,
    pub field: &'static str,
    pub hints: &'static [&'static str],
}

impl Refused {
    /// Whether a refusal of `field` saying `message` is the one this case expects.
    pub fn matches(&self, field: &str, message: &str) -> bool {
        let text = format!("{field}: {message}");
        field.starts_with(self.field)
            && (self.hints.is_empty() || self.hints.iter().any(|h| text.contains(h)))
    }
}

/// A run at the edge of what the schema allows.
pub struct Accepted {
    pub case: String,
    pub object: Value,
}

fn with(case: impl Into<String>, edit: impl FnOnce(&mut Value)) -> (String, Value) {
    let mut object = cpu_sample();
    edit(&mut object);
    (case.into(), object)
}

fn refused_case(
    (case, object): (String, Value),
    field: &'static str,
    hints: &'static [&'static str],
) -> Refused {
    Refused {
        case,
        object,
        field,
        hints,
    }
}

pub fn refused() -> Vec<Refused> {
    let mut out = Vec::new();
    for bad in [
        "sha256:abc",
        "sha512:",
        "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
    ] {
        out.push(refused_case(
            with(format!("dataset digest {bad:?}"), |o| {
                o["spec"]["datasets"][0]["digest"] = json!(bad)
            }),
            "spec.datasets[0].digest",
            &["sha256"],
        ));
        out.push(refused_case(
            with(format!("base model digest {bad:?}"), |o| {
                o["spec"]["baseModel"] = json!({"uri": "hf://acme/base", "digest": bad})
            }),
            "spec.baseModel.digest",
            &["sha256"],
        ));
    }
    for bad in [0, -1, 1025] {
        out.push(refused_case(
            with(format!("replicas {bad}"), |o| {
                o["spec"]["replicas"] = json!(bad)
            }),
            "spec.replicas",
            &[],
        ));
    }
    for bad in [
        "main",
        "v1.2.3",
        "3f2c7e9",
        "3F2C7E9A1B4D5C6E7F8091A2B3C4D5E6F7A8B9C0",
        "3f2c7e9a1b4d5c6e7f8091a2b3c4d5e6f7a8b9cz",
    ] {
        out.push(refused_case(
            with(format!("code revision {bad:?}"), |o| {
                o["spec"]["code"] = json!({"uri": "https://github.com/acme/x", "revision": bad})
            }),
            "spec.code.revision",
            &[],
        ));
    }
    for bad in ["", "MIT; rm -rf /", " MIT", "MIT  OR Apache-2.0", "MIT\n"] {
        out.push(refused_case(
            with(format!("dataset license {bad:?}"), |o| {
                o["spec"]["datasets"][0]["license"] = json!(bad)
            }),
            "spec.datasets[0].license",
            &[],
        ));
    }
    for bad in [
        "registry.example.com/models/churn:v1",
        "registry.example.com/models/churn@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "registry.example.com/Models/Churn",
        "https://registry.example.com/models/churn",
        "registry.example.com/models/churn/",
        "",
    ] {
        out.push(refused_case(
            with(format!("output repository {bad:?}"), |o| {
                o["spec"]["output"]["repository"] = json!(bad)
            }),
            "spec.output.repository",
            &[],
        ));
    }
    out.push(refused_case(
        with("no output", |o| {
            o["spec"].as_object_mut().unwrap().remove("output");
        }),
        "spec",
        &[
            "\"output\" is a required property",
            "spec.output: Required value",
        ],
    ));
    out.push(refused_case(
        with("no seed", |o| {
            o["spec"].as_object_mut().unwrap().remove("seed");
        }),
        "spec",
        &[
            "\"seed\" is a required property",
            "spec.seed: Required value",
        ],
    ));
    out.push(refused_case(
        with("negative seed", |o| o["spec"]["seed"] = json!(-3)),
        "spec.seed",
        &[],
    ));
    out.push(refused_case(
        with("accelerator count 0", |o| {
            o["spec"]["accelerator"] = json!({"type": "nvidia-l4", "count": 0})
        }),
        "spec.accelerator.count",
        &[],
    ));
    out.push(refused_case(
        with("accelerator type with spaces", |o| {
            o["spec"]["accelerator"] = json!({"type": "NVIDIA L4", "count": 1})
        }),
        "spec.accelerator.type",
        &[],
    ));
    out.push(refused_case(
        with("TPU topology 4by4", |o| {
            o["spec"]["accelerator"] = json!({"type": "tpu-v5e", "count": 4, "topology": "4by4"})
        }),
        "spec.accelerator.topology",
        &[],
    ));
    for name in [
        "RANK",
        "MASTER_ADDR",
        "PROVENANT_SEED",
        "PROVENANT_ANYTHING",
        "LOCAL_RANK",
        "PET_NNODES",
        "JAX_PROCESS_ID",
        "JAX_COORDINATOR_ADDRESS",
        "TPU_WORKER_ID",
        "TPU_WORKER_HOSTNAMES",
    ] {
        out.push(refused_case(
            with(format!("env {name}"), |o| {
                o["spec"]["env"] =
                    json!([{"name": "NCCL_DEBUG", "value": "INFO"}, {"name": name, "value": "1"}])
            }),
            "spec.env",
            &["cannot be overridden"],
        ));
    }
    for (kind, key, hints) in [
        ("labels", "provenant.dev/rank", &["set by provenant"][..]),
        (
            "annotations",
            "provenant.dev/run-uid",
            &["set by provenant"][..],
        ),
        ("labels", "team.provenant.dev/x", &["set by provenant"][..]),
        (
            "labels",
            "kueue.x-k8s.io/queue-name",
            &["use spec.queueName"][..],
        ),
        (
            "labels",
            "kueue.x-k8s.io/pod-group-name",
            &["use spec.queueName"][..],
        ),
        (
            "annotations",
            "kueue.x-k8s.io/pod-group-total-count",
            &["use spec.queueName"][..],
        ),
        (
            "labels",
            "app.kubernetes.io/managed-by",
            &["set by provenant"][..],
        ),
        (
            "annotations",
            "container.apparmor.security.beta.kubernetes.io/trainer",
            &["workerSecurity"][..],
        ),
        (
            "annotations",
            "seccomp.security.alpha.kubernetes.io/pod",
            &["workerSecurity"][..],
        ),
        (
            "annotations",
            "container.seccomp.security.alpha.kubernetes.io/trainer",
            &["workerSecurity"][..],
        ),
        (
            "annotations",
            "io.kubernetes.cri-o.Devices",
            &["workerSecurity"][..],
        ),
        (
            "annotations",
            "io.katacontainers.config.hypervisor.kernel_params",
            &["workerSecurity"][..],
        ),
    ] {
        let field = if kind == "labels" {
            "spec.podTemplate.metadata.labels"
        } else {
            "spec.podTemplate.metadata.annotations"
        };
        out.push(refused_case(
            with(format!("podTemplate {kind} {key}"), |o| {
                o["spec"]["podTemplate"] =
                    json!({"metadata": {kind: {"team": "nlp", key: "unconfined"}}})
            }),
            field,
            hints,
        ));
    }
    out.push(refused_case(
        with("65 podTemplate labels", |o| {
            let labels: serde_json::Map<String, Value> =
                (0..65).map(|i| (format!("l{i}"), json!("v"))).collect();
            o["spec"]["podTemplate"] = json!({"metadata": {"labels": labels}})
        }),
        "spec.podTemplate.metadata.labels",
        &[],
    ));
    out.push(refused_case(
        with("framework tensorflow", |o| {
            o["spec"]["framework"] = json!("tensorflow")
        }),
        "spec.framework",
        &[],
    ));
    out.push(refused_case(
        with(
            "duplicate dataset names",
            |o| {
                o["spec"]["datasets"] =
                    json!([{"name": "a", "uri": "s3://x"}, {"name": "a", "uri": "s3://y"}])
            },
        ),
        "spec.datasets",
        // The CEL rule's message offline; the server's own list-map check says it first.
        &["names must be unique", "Duplicate value"],
    ));
    out.push(refused_case(
        with("a mount without its volume", |o| {
            o["spec"]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}])
        }),
        "spec.volumeMounts",
        &["must name a volume declared in spec.volumes"],
    ));
    out.push(refused_case(
        with("more than 100 restarts", |o| {
            o["spec"]["failurePolicy"] = json!({"maxRestarts": 101})
        }),
        "spec.failurePolicy.maxRestarts",
        &["100"],
    ));
    out.push(refused_case(
        with("a non-retriable exit code 0", |o| {
            o["spec"]["failurePolicy"] = json!({"maxRestarts": 1, "nonRetriableExitCodes": [0]})
        }),
        "spec.failurePolicy.nonRetriableExitCodes[0]",
        &["1"],
    ));
    out.push(refused_case(
        with("a non-retriable exit code past 255", |o| {
            o["spec"]["failurePolicy"] = json!({"nonRetriableExitCodes": [256]})
        }),
        "spec.failurePolicy.nonRetriableExitCodes[0]",
        &["255"],
    ));
    out.push(refused_case(
        with("a mount naming another volume", |o| {
            o["spec"]["volumes"] = json!([{"name": "cache", "emptyDir": {}}]);
            o["spec"]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}])
        }),
        "spec.volumeMounts",
        &["must name a volume declared in spec.volumes"],
    ));
    out.push(refused_case(
        with("a volume name longer than a DNS label", |o| {
            let name = "v".repeat(64);
            o["spec"]["volumes"] = json!([{"name": name, "emptyDir": {}}]);
        }),
        "spec.volumes[0].name",
        &[],
    ));
    out.push(refused_case(
        with("a hostPath volume among others", |o| {
            o["spec"]["volumes"] = json!([
                {"name": "cache", "emptyDir": {}},
                {"name": "root", "hostPath": {"path": "/"}}
            ]);
        }),
        "spec.volumes",
        &["hostPath volumes are not allowed"],
    ));
    out.push(refused_case(
        with("unknown field spec.replica", |o| {
            o["spec"]["replica"] = json!(2)
        }),
        "spec",
        &["'replica' was unexpected", "unknown field \"spec.replica\""],
    ));
    // Kueue's queue-name label (a label value, ≤ 63) names a LocalQueue (a DNS subdomain).
    for bad in ["Team-A", "team_a", "-a"] {
        out.push(refused_case(
            with(format!("queueName {bad:?}"), |o| {
                o["spec"]["queueName"] = json!(bad)
            }),
            "spec.queueName",
            &["match"],
        ));
        out.push(refused_case(
            with(format!("priorityClassName {bad:?}"), |o| {
                o["spec"]["priorityClassName"] = json!(bad)
            }),
            "spec.priorityClassName",
            &["match"],
        ));
    }
    out.push(refused_case(
        with("queueName of 64 characters", |o| {
            o["spec"]["queueName"] = json!("q".repeat(64))
        }),
        "spec.queueName",
        &["63"],
    ));
    out.push(refused_case(
        with("priorityClassName of 254 characters", |o| {
            o["spec"]["priorityClassName"] = json!("p".repeat(254))
        }),
        "spec.priorityClassName",
        &["253"],
    ));
    out.push(refused_case(
        with("name of 49 characters", |o| {
            o["metadata"]["name"] = json!("a".repeat(49))
        }),
        "",
        &["metadata.name"],
    ));
    out.push(refused_case(
        with("name starting with a digit", |o| {
            o["metadata"]["name"] = json!("1-run")
        }),
        "",
        &["metadata.name"],
    ));
    out
}

pub fn accepted() -> Vec<Accepted> {
    let mut out = Vec::new();
    let mut push = |(case, object): (String, Value)| out.push(Accepted { case, object });
    for good in [1, 1024] {
        push(with(format!("replicas {good}"), |o| {
            o["spec"]["replicas"] = json!(good)
        }));
    }
    push(with(
        "a 64-hex (SHA-256) commit",
        |o| {
            o["spec"]["code"] =
                json!({"uri": "https://github.com/acme/x", "revision": "a".repeat(64)})
        },
    ));
    for good in [
        "localhost:5000/models/churn",
        "models/churn",
        "ghcr.io/acme/churn_logreg",
        "registry.example.com:443/a/b-c/d.e",
    ] {
        push(with(format!("output repository {good:?}"), |o| {
            o["spec"]["output"]["repository"] = json!(good)
        }));
    }
    for good in [
        "CC-BY-4.0",
        "Apache-2.0 OR MIT",
        "(MIT AND BSD-3-Clause) WITH LLVM-exception",
        "LicenseRef-acme:internal-1.0",
        "NOASSERTION",
    ] {
        push(with(format!("dataset license {good:?}"), |o| {
            o["spec"]["datasets"][0]["license"] = json!(good)
        }));
    }
    for framework in ["pytorch", "jax", "none"] {
        push(with(format!("framework {framework}"), |o| {
            o["spec"]["framework"] = json!(framework)
        }));
    }
    push(with(
        "64 podTemplate labels and annotations, the GCS FUSE annotation, affinity, spread",
        |o| {
            let mut labels: serde_json::Map<String, Value> =
                (0..64).map(|i| (format!("l{i}"), json!("v"))).collect();
            labels.insert("l0".into(), json!("x".repeat(63)));
            let mut annotations = labels.clone();
            annotations.insert("gke-gcsfuse/volumes".into(), json!("true"));
            annotations.remove("l63");
            o["spec"]["podTemplate"] = json!({
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "zone", "operator": "In", "values": ["a", "b"]}]}]}}},
                    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": {"matchLabels": {"provenant.dev/run": "churn-logreg"}}}]
                }
            })
        },
    ));
    push(with(
        "queueName of 63 characters, priorityClassName of 253 with dots",
        |o| {
            o["spec"]["queueName"] = json!(format!("team.{}", "a".repeat(58)));
            let labels = [
                "p".repeat(63),
                "q".repeat(63),
                "r".repeat(63),
                "s".repeat(61),
            ];
            o["spec"]["priorityClassName"] = json!(labels.join("."));
        },
    ));
    push(with("env MY_RANK", |o| {
        o["spec"]["env"] = json!([{"name": "MY_RANK", "value": "1"}])
    }));
    push(with(
        "the service account token and a non-root user asked for",
        |o| {
            o["spec"]["automountServiceAccountToken"] = json!(true);
            o["spec"]["runAsNonRoot"] = json!(true);
        },
    ));
    push(with(
        "64 volumes, each mounted, names of 63 characters",
        |o| {
            let names: Vec<String> = (0..64).map(|i| format!("{i:0>63}")).collect();
            o["spec"]["volumes"] = names
                .iter()
                .map(|n| json!({"name": n, "emptyDir": {}}))
                .collect();
            o["spec"]["volumeMounts"] = names
                .iter()
                .map(|n| json!({"name": n, "mountPath": format!("/v/{}", &n[60..])}))
                .collect();
        },
    ));
    out
}

/// The run `object` with its status saying it started, for the immutability rule.
pub fn started(object: &Value) -> Value {
    let mut started = object.clone();
    started["status"] = json!({"phase": "Pending", "startTime": "2026-11-22T04:00:00Z"});
    started
}
