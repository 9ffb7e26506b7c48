//! config/default, rendered by kustomize as `kubectl apply -k` would, agrees with the binary: the
//! flags it passes exist, the probes hit the health port, the mounted configuration loads, and the
//! pod runs non-root on a read-only root filesystem.

use std::process::Command;

use provenant::config::ControllerConfig;
use serde_json::Value;

fn rendered() -> Vec<Value> {
    // The pinned kubectl (hack/tools), the version the suite's kube-apiserver runs.
    let kubectl = provenant_testbed::tools::path("kubectl").unwrap();
    let out = Command::new(kubectl)
        .args([
            "kustomize",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../config/default"),
        ])
        .output()
        .expect("running kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.split("\n---\n")
        .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

#[test]
fn default_renders_every_piece() {
    let objects = rendered();
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
    ] {
        assert!(
            !find(&objects, kind).is_empty(),
            "config/default renders no {kind}"
        );
    }
    for o in &objects {
        if o["kind"] != "Namespace"
            && o["kind"] != "CustomResourceDefinition"
            && !o["kind"].as_str().unwrap().starts_with("Cluster")
        {
            assert_eq!(
                o["metadata"]["namespace"], "provenant-system",
                "{}",
                o["metadata"]["name"]
            );
        }
    }
}

#[test]
fn deployment_matches_the_binary() {
    let objects = rendered();
    let deployment = find(&objects, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "controller");

    // The flags parse: ask the binary itself.
    let help = Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args(["controller", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for arg in &args[1..] {
        let flag = arg.split('=').next().unwrap();
        assert!(
            help.contains(flag),
            "the Deployment passes {flag}, which `provenant controller` does not know"
        );
    }

    // Probes on the port the controller serves.
    let health_port = args
        .iter()
        .find_map(|a| a.strip_prefix("--health-addr="))
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap();
    let port = &container["ports"][0];
    assert_eq!(
        port["containerPort"].as_u64().unwrap().to_string(),
        health_port
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], port["name"]);

    // The configuration file the controller is told to read is the mounted ConfigMap, and it loads.
    let config_path = args
        .iter()
        .find_map(|a| a.strip_prefix("--config="))
        .unwrap();
    let (dir, file) = config_path.rsplit_once('/').unwrap();
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap();
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let cm_name = volume["configMap"]["name"].as_str().unwrap();
    let cm = find(&objects, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == cm_name)
        .unwrap();
    let text = cm["data"][file].as_str().unwrap();
    let config = ControllerConfig::from_yaml(text, "config/default").unwrap();
    assert_eq!(
        config,
        ControllerConfig::defaults(),
        "the shipped ConfigMap and the embedded defaults differ"
    );

    // Non-root, read-only root filesystem, nothing extra.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert_eq!(pod["serviceAccountName"], "provenant-controller");
}

#[test]
fn secrets_are_readable_only_in_the_controller_namespace() {
    let objects = rendered();
    for role in find(&objects, "ClusterRole") {
        for rule in role["rules"].as_array().unwrap() {
            let resources = rule["resources"].as_array().unwrap();
            assert!(
                !resources.iter().any(|r| r == "secrets"),
                "a ClusterRole grants secrets: {rule}"
            );
            assert!(
                !rule["verbs"].as_array().unwrap().iter().any(|v| v == "*"),
                "wildcard verb: {rule}"
            );
        }
    }
    let role = find(&objects, "Role")[0];
    let secrets = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"][0] == "secrets")
        .unwrap();
    let verbs: Vec<&str> = secrets["verbs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(verbs, ["get", "list", "watch"]);
}

#[test]
fn two_replicas_elect_a_leader_in_their_namespace() {
    let objects = rendered();
    let deployment = find(&objects, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    let field = |name: &str| {
        env.iter().find(|e| e["name"] == name).unwrap()["valueFrom"]["fieldRef"]["fieldPath"]
            .clone()
    };
    assert_eq!(field("POD_NAMESPACE"), "metadata.namespace");
    assert_eq!(field("POD_NAME"), "metadata.name");
    // The binary reads exactly these variables for the Lease namespace and identity.
    let help = Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args(["controller", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.contains("[env: POD_NAMESPACE=") && help.contains("[env: POD_NAME="),
        "{help}"
    );
    // The Role lets it manage that Lease.
    let role = find(&objects, "Role")[0];
    assert!(
        role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["resources"][0] == "leases")
    );
}
