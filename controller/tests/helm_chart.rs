//! charts/provenant, rendered by the pinned helm: it lints, installs what config/default installs
//! (every difference is listed below with its reason, any other fails), its configuration loads
//! in the binary, its optional objects render as documented, and bad values are refused naming
//! the field. The server-side dry run is helm_dry_run.rs.

#[path = "support/helm.rs"]
mod helm;

use std::process::Command;

use helm::{
    CHART, FULL_VALUES, ROOT, differences, drop_empty, find, helm, key, kustomize_default, objects,
    one, remove, template,
};
use provenant::config::ControllerConfig;
use serde_json::{Value, json};

fn default_chart() -> Vec<Value> {
    let text = template("provenant", "provenant-system", None, &["--include-crds"]).unwrap();
    objects(&text)
}

fn full_chart() -> Vec<Value> {
    objects(&template("prod", "provenant-system", Some(FULL_VALUES), &[]).unwrap())
}

#[test]
fn the_chart_crds_are_the_crds_byte_for_byte() {
    let file = "trainingruns.provenant.dev.yaml";
    let chart = std::fs::read(format!("{CHART}/crds/{file}")).unwrap();
    let crds = std::fs::read(format!("{ROOT}/crds/{file}")).unwrap();
    assert!(
        chart == crds,
        "charts/provenant/crds/{file} differs from crds/{file}: cp crds/{file} charts/provenant/crds/"
    );
}

#[test]
fn lint_strict_passes_with_default_and_every_optional_value() {
    let dir = tempfile::tempdir().unwrap();
    let full = helm::values_file(dir.path(), FULL_VALUES);
    for extra in [vec![], vec!["--values", full.as_str()]] {
        let mut args = vec!["lint", "--strict", CHART];
        args.extend(&extra);
        let out = helm(&args);
        assert!(
            out.status.success(),
            "helm {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The intended differences between the chart with default values and config/default: each
/// takes its difference out of `chart` or `kustomize` and says whether it found it (a difference
/// that no longer exists must leave this list).
type Difference = (&'static str, fn(&mut Vec<Value>, &mut Vec<Value>) -> bool);

const DIFFERENCES: &[Difference] = &[
    (
        "no Namespace: Helm installs into --namespace (--create-namespace), the chart never owns it",
        |_, k| {
            let before = k.len();
            k.retain(|o| o["kind"] != "Namespace");
            k.len() < before
        },
    ),
    (
        "the ConfigMap is provenant-config without kustomize's content hash: a checksum/config \
         annotation on the pod template rolls the Deployment instead",
        |c, k| {
            let mut found = false;
            for o in k.iter_mut() {
                let name = o["metadata"]["name"].as_str().unwrap_or("").to_owned();
                if o["kind"] == "ConfigMap" && name.starts_with("provenant-config-") {
                    o["metadata"]["name"] = json!("provenant-config");
                    found = true;
                }
                if o["kind"] == "Deployment" {
                    o["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] =
                        json!("provenant-config");
                }
            }
            for o in c.iter_mut().filter(|o| o["kind"] == "Deployment") {
                let meta = &mut o["spec"]["template"]["metadata"];
                found &= remove(&mut meta["annotations"], "checksum/config");
                drop_empty(meta, "annotations");
            }
            found
        },
    ),
    (
        "config.yaml is values.config through toYaml (no comments, sorted keys): compared parsed",
        |c, k| {
            let mut texts = vec![];
            for o in c.iter_mut().chain(k.iter_mut()) {
                if o["kind"] == "ConfigMap" {
                    let text = o["data"]["config.yaml"].as_str().unwrap().to_owned();
                    o["data"]["config.yaml"] = serde_saphyr::from_str(&text).unwrap();
                    texts.push(text);
                }
            }
            texts.len() == 2 && texts[0] != texts[1]
        },
    ),
    (
        "Helm's standard labels (instance, managed-by, version, helm.sh/chart) on every object, \
         and app.kubernetes.io/name on the ConfigMap too (kustomize's generated one has none)",
        |c, _| {
            let mut found = false;
            for o in c
                .iter_mut()
                .filter(|o| o["kind"] != "CustomResourceDefinition")
            {
                let labels = &mut o["metadata"]["labels"];
                for l in ["instance", "managed-by", "version"] {
                    found |= remove(labels, &format!("app.kubernetes.io/{l}"));
                }
                found |= remove(labels, "helm.sh/chart");
                if o["kind"] == "ConfigMap" {
                    remove(&mut o["metadata"]["labels"], "app.kubernetes.io/name");
                }
            }
            found
        },
    ),
    (
        "the CRDs carry no part-of label: the chart's crds/ is a byte-for-byte copy of crds/",
        |_, k| {
            let mut found = false;
            for o in k
                .iter_mut()
                .filter(|o| o["kind"] == "CustomResourceDefinition")
            {
                found |= remove(&mut o["metadata"]["labels"], "app.kubernetes.io/part-of");
                drop_empty(&mut o["metadata"], "labels");
            }
            found
        },
    ),
    (
        "the pod selector has app.kubernetes.io/instance: two releases in one namespace stay apart",
        |c, _| {
            let mut found = false;
            for o in c.iter_mut() {
                let instance = "app.kubernetes.io/instance";
                if o["kind"] == "Deployment" {
                    found |= remove(&mut o["spec"]["selector"]["matchLabels"], instance);
                    remove(&mut o["spec"]["template"]["metadata"]["labels"], instance);
                }
                if o["kind"] == "Service" {
                    remove(&mut o["spec"]["selector"], instance);
                }
            }
            found
        },
    ),
    (
        "imagePullPolicy IfNotPresent is explicit (image.pullPolicy); the API server defaults a \
         tagged image to the same",
        |c, _| {
            c.iter_mut().filter(|o| o["kind"] == "Deployment").any(|o| {
                let container = &mut o["spec"]["template"]["spec"]["containers"][0];
                container["imagePullPolicy"] == "IfNotPresent"
                    && remove(container, "imagePullPolicy")
            })
        },
    ),
    (
        "--leader-election-lease is passed: the Lease is named after the release (the Role names it)",
        |c, _| {
            c.iter_mut().filter(|o| o["kind"] == "Deployment").any(|o| {
                let args = o["spec"]["template"]["spec"]["containers"][0]["args"]
                    .as_array_mut()
                    .unwrap();
                let before = args.len();
                args.retain(|a| a != "--leader-election-lease=provenant-controller");
                args.len() < before
            })
        },
    ),
    (
        "the Role's Secret names come from the configuration: registry-credentials only once \
         provenance.registry.credentialsSecret names it",
        |_, k| {
            k.iter_mut()
                .filter(|o| o["kind"] == "Role" && o["metadata"]["name"] == "provenant-controller")
                .any(|o| {
                    let names = o["rules"][0]["resourceNames"].as_array_mut().unwrap();
                    let before = names.len();
                    names.retain(|n| n != "registry-credentials");
                    names.len() < before
                })
        },
    ),
    (
        "a PodDisruptionBudget (maxUnavailable 1), since replicas is 2",
        |c, _| {
            let before = c.len();
            c.retain(|o| o["kind"] != "PodDisruptionBudget");
            c.len() < before
        },
    ),
];

#[test]
fn default_values_render_what_config_default_renders() {
    let mut chart = default_chart();
    let mut kustomize = kustomize_default();
    let missing: Vec<&str> = DIFFERENCES
        .iter()
        .filter(|(_, apply)| !apply(&mut chart, &mut kustomize))
        .map(|(what, _)| *what)
        .collect();
    assert!(
        missing.is_empty(),
        "intended differences that no longer exist (remove them from DIFFERENCES and the docs): {missing:#?}"
    );
    let keys = |objects: &[Value]| -> Vec<String> {
        let mut keys: Vec<String> = objects.iter().map(key).collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&chart), keys(&kustomize), "chart vs config/default");
    for expected in &kustomize {
        let got = chart.iter().find(|o| key(o) == key(expected)).unwrap();
        let mut paths = vec![];
        differences(got, expected, String::new(), &mut paths);
        assert!(
            paths.is_empty(),
            "{} differs from config/default at:\n{}",
            key(expected),
            paths.join("\n")
        );
    }
}

fn config_of(objects: &[Value], configmap: &str) -> ControllerConfig {
    let cm = one(objects, "ConfigMap", configmap);
    let text = cm["data"]["config.yaml"].as_str().unwrap();
    ControllerConfig::from_yaml(text, "the chart's ConfigMap").unwrap()
}

fn args_of(deployment: &Value) -> Vec<String> {
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap();
    args.iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_configuration_and_flags_load_in_the_binary() {
    let help = Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args(["controller", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();

    let chart = default_chart();
    assert_eq!(
        config_of(&chart, "provenant-config"),
        ControllerConfig::defaults()
    );
    let full = full_chart();
    let config = config_of(&full, "prod-provenant-config");
    assert_eq!(config.provenance.signing_key_secret, "prod-signing-key");
    assert_eq!(
        config.provenance.registry.credentials_secret.as_deref(),
        Some("prod-registry")
    );
    let deployment = one(&full, "Deployment", "prod-provenant-controller");
    let args = args_of(deployment);
    assert!(args.contains(&"--revocation-selector=provenant.dev/install=prod".to_owned()));
    assert!(args.contains(&"--leader-election-lease=prod-provenant-controller".to_owned()));
    for arg in &args[1..] {
        let flag = arg.split('=').next().unwrap();
        assert!(
            help.contains(flag),
            "the chart passes {flag}, unknown to the binary"
        );
    }
    // The Role lets it read exactly the Secrets the configuration names, and its own Lease.
    let role = one(&full, "Role", "prod-provenant-controller");
    assert_eq!(
        role["rules"][0]["resourceNames"],
        json!([
            "prod-signing-key",
            "prod-registry",
            "team-a-registry",
            "spare-credentials"
        ])
    );
    assert_eq!(
        role["rules"][3]["resourceNames"],
        json!(["prod-provenant-controller"])
    );
    let binding = one(&full, "ClusterRoleBinding", "prod-provenant-controller");
    assert_eq!(binding["subjects"][0]["namespace"], "provenant-system");
    // A configuration change rolls the pods.
    let checksum = |objects: &[Value], name: &str| {
        one(objects, "Deployment", name)["spec"]["template"]["metadata"]["annotations"]
            ["checksum/config"]
            .clone()
    };
    assert_ne!(
        checksum(&chart, "provenant-controller"),
        checksum(&full, "prod-provenant-controller")
    );
}

#[test]
fn optional_objects_render_as_documented() {
    let full = full_chart();
    let deployment = one(&full, "Deployment", "prod-provenant-controller");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        "registry.example.com/provenant:v9.9.9@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    assert_eq!(container["imagePullPolicy"], "Always");
    assert_eq!(container["resources"]["limits"]["memory"], "1Gi");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let selector = &deployment["spec"]["selector"]["matchLabels"];

    let pdb = one(&full, "PodDisruptionBudget", "prod-provenant-controller");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector);

    let policy = one(&full, "NetworkPolicy", "prod-provenant-controller");
    assert_eq!(&policy["spec"]["podSelector"]["matchLabels"], selector);
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        policy["spec"]["ingress"],
        json!([{"ports": [{"port": 8080, "protocol": "TCP"}],
                "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}])
    );
    let egress = policy["spec"]["egress"].as_array().unwrap();
    let tcp = |ports: &[u16]| -> Value {
        ports
            .iter()
            .map(|p| json!({"port": p, "protocol": "TCP"}))
            .collect()
    };
    assert_eq!(
        egress[0],
        json!({"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}, {"ipBlock": {"cidr": "172.18.0.2/32"}}],
               "ports": tcp(&[443, 6443])})
    );
    assert_eq!(
        egress[1],
        json!({"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}], "ports": tcp(&[443, 5000])})
    );
    assert_eq!(
        egress[2]["to"][0]["podSelector"]["matchLabels"]["k8s-app"],
        "kube-dns"
    );
    assert_eq!(
        egress[2]["ports"],
        json!([{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}])
    );
    assert_eq!(egress.len(), 3);

    let monitor = one(&full, "ServiceMonitor", "prod-provenant-controller");
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let service = one(&full, "Service", "prod-provenant-controller-metrics");
    assert_eq!(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["spec"]["selector"]
    );
    // The alerts look for the job Prometheus names after this release's Service.
    let rule = one(&full, "PrometheusRule", "prod-provenant-alerts");
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    let down = rules
        .iter()
        .find(|r| r["alert"] == "ProvenantControllerDown")
        .unwrap();
    let job = format!("job=\"{}\"", service["metadata"]["name"].as_str().unwrap());
    assert!(down["expr"].as_str().unwrap().contains(&job), "{down}");
    assert!(
        !serde_json::to_string(rule)
            .unwrap()
            .contains("job=\\\"provenant-")
    );

    // Off by default; the PodDisruptionBudget follows the replicas unless forced.
    let chart = default_chart();
    for kind in ["NetworkPolicy", "ServiceMonitor", "PrometheusRule"] {
        assert!(find(&chart, kind).is_empty(), "{kind} rendered by default");
    }
    let single = template("provenant", "ns", None, &["--set", "replicas=1"]).unwrap();
    assert!(find(&objects(&single), "PodDisruptionBudget").is_empty());
    let forced = [
        "--set",
        "replicas=1",
        "--set",
        "podDisruptionBudget.enabled=true",
    ];
    let forced = template("provenant", "ns", None, &forced).unwrap();
    assert_eq!(find(&objects(&forced), "PodDisruptionBudget").len(), 1);
}

/// With monitoring on, the chart's ServiceMonitor and PrometheusRule specs are those of
/// config/prometheus (the selector also names the release, as every chart selector does).
#[test]
fn monitoring_objects_match_config_prometheus() {
    let dir = format!("{ROOT}/config/prometheus");
    if !std::path::Path::new(&dir).exists() {
        eprintln!("skipped: config/prometheus does not exist in this branch yet");
        return;
    }
    let on = [
        "--set",
        "monitoring.serviceMonitor.enabled=true",
        "--set",
        "monitoring.prometheusRule.enabled=true",
    ];
    let chart = objects(&template("provenant", "provenant-system", None, &on).unwrap());
    for (kind, file) in [
        ("ServiceMonitor", "servicemonitor.yaml"),
        ("PrometheusRule", "prometheusrule.yaml"),
    ] {
        let shipped = objects(&std::fs::read_to_string(format!("{dir}/{file}")).unwrap());
        let shipped = find(&shipped, kind)[0];
        let mut rendered = find(&chart, kind)[0].clone();
        if kind == "ServiceMonitor" {
            let labels = &mut rendered["spec"]["selector"]["matchLabels"];
            remove(labels, "app.kubernetes.io/instance");
        }
        let mut paths = vec![];
        differences(
            &rendered["spec"],
            &shipped["spec"],
            String::new(),
            &mut paths,
        );
        assert!(
            paths.is_empty(),
            "the chart's {kind} spec differs from config/prometheus/{file} (copy it into \
             charts/provenant/files/prometheus-rules.yaml, or templates/servicemonitor.yaml) at:\n{}",
            paths.join("\n")
        );
    }
}

#[test]
fn bad_values_are_refused_naming_the_field() {
    for (set, expected) in [
        ("replicas=-1", vec!["/replicas", "minimum"]),
        ("replica=2", vec!["'replica' not allowed"]),
        (
            "config.provenance.signingKeySecret=x",
            vec!["/config/provenance", "'signingKeySecret' not allowed"],
        ),
        (
            "image.digest=latest",
            vec!["/image/digest", "does not match"],
        ),
        (
            "networkPolicy.enabled=true",
            vec!["networkPolicy.apiServer.cidrs: empty"],
        ),
    ] {
        let err = template("provenant", "ns", None, &["--set", set]).unwrap_err();
        for part in expected {
            assert!(err.contains(part), "--set {set}: {err}");
        }
    }
    let no_registry = [
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.apiServer.cidrs={10.0.0.1/32}",
    ];
    let err = template("provenant", "ns", None, &no_registry).unwrap_err();
    assert!(
        err.contains("networkPolicy.registries.cidrs: empty"),
        "{err}"
    );
}
