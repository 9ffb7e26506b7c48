//! config/prometheus: the PrometheusRule's groups pass `promtool check rules`, every alert fires on
//! a synthetic failure and stays silent on healthy series (`promtool test rules` with
//! config/prometheus/tests/alerts_test.yaml), the rules use only metrics the controller exports,
//! each alert's runbook is a section of docs/operations.md, the ServiceMonitor selects the
//! controller's Service, and the real API server with the Prometheus Operator's CRDs accepts both
//! objects (server-side dry run, strict field validation).

#[path = "support/real_cluster.rs"]
mod real_cluster;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};
use provenant_testbed::tools;
use serde_json::Value;

#[path = "support/promql.rs"]
mod promql;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/prometheus");
const OPERATIONS: &str = include_str!("../../docs/operations.md");
const RUNBOOKS: &str = "https://github.com/provenant-dev/provenant/blob/main/docs/operations.md#";

fn yaml(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn rule_file() -> Result<Value> {
    yaml(&Path::new(DIR).join("prometheusrule.yaml"))
}

/// Every alerting rule of the PrometheusRule.
fn alerts() -> Result<Vec<Value>> {
    let rule = rule_file()?;
    let groups = rule["spec"]["groups"].as_array().context("spec.groups")?;
    Ok(groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter(|r| r.get("alert").is_some())
        .collect())
}

/// The PrometheusRule's `spec` (its groups) as a Prometheus rule file, in `dir`.
fn write_rules(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("rules.yaml");
    // JSON is YAML: promtool reads it as a rule file.
    std::fs::write(&path, serde_json::to_vec(&rule_file()?["spec"])?)?;
    Ok(path)
}

fn promtool(dir: &Path, args: &[&str]) -> Result<Output> {
    Command::new(tools::path("promtool")?)
        .current_dir(dir)
        .args(args)
        .output()
        .context("running promtool")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn promtool_accepts_the_rules() -> Result<()> {
    let dir = tempfile::tempdir()?;
    write_rules(dir.path())?;
    let out = promtool(dir.path(), &["check", "rules", "rules.yaml"])?;
    let found = format!("SUCCESS: {} rules found", alerts()?.len());
    assert!(
        out.status.success() && text(&out).contains(&found),
        "{}",
        text(&out)
    );
    // The check can fail: an expression that does not parse is refused.
    let mut broken = rule_file()?;
    broken["spec"]["groups"][0]["rules"][0]["expr"] = "max(provenant_leader".into();
    std::fs::write(
        dir.path().join("broken.yaml"),
        serde_json::to_vec(&broken["spec"])?,
    )?;
    let out = promtool(dir.path(), &["check", "rules", "broken.yaml"])?;
    assert!(!out.status.success(), "{}", text(&out));
    Ok(())
}

#[test]
fn every_alert_fires_on_failure_and_not_on_healthy_series() -> Result<()> {
    let dir = tempfile::tempdir()?;
    write_rules(dir.path())?;
    let tests = Path::new(DIR).join("tests/alerts_test.yaml");
    std::fs::copy(&tests, dir.path().join("alerts_test.yaml"))?;
    let out = promtool(dir.path(), &["test", "rules", "alerts_test.yaml"])?;
    assert!(out.status.success(), "{}", text(&out));

    // Each alert has a test group where it fires and one where it never does (healthy series,
    // not merely an evaluation before its `for` has passed).
    let suite = yaml(&tests)?;
    let groups = suite["tests"].as_array().context("tests")?;
    for alert in alerts()? {
        let name = alert["alert"].as_str().context("alert name")?;
        let cases = |group: &Value| -> Vec<bool> {
            group["alert_rule_test"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["alertname"] == name)
                .map(|t| t["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()))
                .collect()
        };
        let fires = groups.iter().any(|g| cases(g).contains(&true));
        let healthy = groups.iter().any(|g| {
            let c = cases(g);
            !c.is_empty() && !c.contains(&true)
        });
        assert!(fires, "no test where {name} fires");
        assert!(
            healthy,
            "no test where {name} stays silent on healthy series"
        );
    }

    // The tests can fail: with a threshold raised out of reach, the firing cases fail.
    let mut lax = rule_file()?;
    for group in lax["spec"]["groups"].as_array_mut().context("groups")? {
        for rule in group["rules"].as_array_mut().context("rules")? {
            if rule["alert"] == "ProvenantRegistryUnavailable" {
                let expr = rule["expr"]
                    .as_str()
                    .context("expr")?
                    .replace("0.25", "0.75");
                rule["expr"] = expr.into();
            }
        }
    }
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_json::to_vec(&lax["spec"])?,
    )?;
    let out = promtool(dir.path(), &["test", "rules", "alerts_test.yaml"])?;
    let failed = text(&out);
    assert!(
        !out.status.success() && failed.contains("alertname: ProvenantRegistryUnavailable"),
        "{failed}"
    );
    Ok(())
}

#[test]
fn the_rules_use_only_metrics_and_labels_the_controller_exports() -> Result<()> {
    // Every family and known label value is exported from the start (metrics.rs), so the
    // registry's text output names every sample a scrape can hold.
    let exported = promql::exported(&provenant::metrics::Metrics::new().render());
    let labels: BTreeSet<&str> = exported.values().flatten().map(String::as_str).collect();
    let mut used = BTreeSet::new();
    for alert in alerts()? {
        let expr = alert["expr"].as_str().context("expr")?;
        let names = promql::names(expr);
        for name in &names.metrics {
            // `up` is Prometheus's own series for each scrape target.
            ensure!(
                name == "up" || exported.contains_key(name),
                "{}: {name} is not exported by the controller; it exports {:?}",
                alert["alert"],
                exported.keys()
            );
            used.insert(name.clone());
        }
        for label in &names.labels {
            // `job` is the target label Prometheus adds to every series.
            ensure!(
                label == "job" || labels.contains(label.as_str()),
                "{}: label {label} is not exported; labels: {labels:?}",
                alert["alert"]
            );
        }
    }
    for name in ["provenant_leader", "provenant_provenance_backlog", "up"] {
        ensure!(used.contains(name), "no rule reads {name}: {used:?}");
    }
    Ok(())
}

/// GitHub's anchor for a heading: lower case, spaces to hyphens, other punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_is_labelled_and_has_its_runbook_in_operations_md() -> Result<()> {
    let section = OPERATIONS
        .split_once("\n## Alerts and runbooks\n")
        .and_then(|(_, rest)| rest.split("\n## ").next())
        .context("docs/operations.md has no '## Alerts and runbooks' section")?;
    let runbooks: Vec<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(anchor)
        .collect();
    let mut names = BTreeSet::new();
    for alert in alerts()? {
        let name = alert["alert"].as_str().context("alert name")?;
        ensure!(names.insert(name.to_string()), "{name} is defined twice");
        let severity = &alert["labels"]["severity"];
        ensure!(
            severity == "critical" || severity == "warning",
            "{name}: severity {severity}"
        );
        for key in ["summary", "description"] {
            ensure!(
                alert["annotations"][key]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{name}: no {key} annotation"
            );
        }
        let url = alert["annotations"]["runbook_url"]
            .as_str()
            .with_context(|| format!("{name}: no runbook_url"))?;
        let fragment = url
            .strip_prefix(RUNBOOKS)
            .with_context(|| format!("{name}: runbook_url {url} is not under {RUNBOOKS}"))?;
        ensure!(
            fragment == anchor(name) && runbooks.iter().any(|r| r == fragment),
            "{name}: {url} has no '### {name}' under '## Alerts and runbooks' (runbooks: {runbooks:?})"
        );
        // The alert table of that section lists it too.
        ensure!(
            section.contains(&format!("| [{name}](#{fragment}) |")),
            "{name} is not in the alert table"
        );
    }
    Ok(())
}

fn kubectl(kubeconfig: Option<&Path>, args: &[&str]) -> Result<Output> {
    let mut command = Command::new(tools::path("kubectl")?);
    if let Some(kubeconfig) = kubeconfig {
        command.arg("--kubeconfig").arg(kubeconfig);
    }
    command.args(args).output().context("running kubectl")
}

/// `kubectl kustomize` of a directory under config/, one JSON value per object.
fn kustomize(dir: &str) -> Result<Vec<Value>> {
    let path = format!("{}/../config/{dir}", env!("CARGO_MANIFEST_DIR"));
    let out = kubectl(None, &["kustomize", &path])?;
    ensure!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        text(&out)
    );
    String::from_utf8(out.stdout)?
        .split("\n---\n")
        .map(|doc| Ok(serde_saphyr::from_str::<Value>(doc)?))
        .collect()
}

#[test]
fn the_service_monitor_selects_the_controller_service() -> Result<()> {
    let monitoring = kustomize("prometheus")?;
    let default = kustomize("default")?;
    let monitor = monitoring
        .iter()
        .find(|o| o["kind"] == "ServiceMonitor")
        .context("no ServiceMonitor")?;
    let service = default
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "provenant-controller-metrics")
        .context("config/default has no Service provenant-controller-metrics")?;
    // No namespaceSelector: the ServiceMonitor selects Services of its own namespace.
    assert!(monitor["spec"].get("namespaceSelector").is_none());
    assert_eq!(monitor["metadata"]["namespace"], "provenant-system");
    assert_eq!(
        monitor["metadata"]["namespace"],
        service["metadata"]["namespace"]
    );
    let wanted = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .context("selector.matchLabels")?;
    assert!(!wanted.is_empty());
    for (key, value) in wanted {
        assert_eq!(&service["metadata"]["labels"][key], value, "label {key}");
    }
    let endpoints = monitor["spec"]["endpoints"]
        .as_array()
        .context("endpoints")?;
    let ports = service["spec"]["ports"].as_array().context("ports")?;
    for endpoint in endpoints {
        assert_eq!(endpoint["path"], "/metrics");
        assert!(
            ports.iter().any(|p| p["name"] == endpoint["port"]),
            "port {} is not a port of the Service",
            endpoint["port"]
        );
    }
    let rule = monitoring
        .iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .context("no PrometheusRule")?;
    assert_eq!(rule["metadata"]["namespace"], "provenant-system");
    Ok(())
}

#[test]
fn the_api_server_accepts_the_monitoring_objects() -> Result<()> {
    let Some(kubeconfig) = real_cluster::kubeconfig()? else {
        return Ok(());
    };
    real_cluster::install_monitoring_crds(&kubeconfig)?;
    // A namespace of this test's own (a dry run in a namespace that does not exist is refused).
    let namespace = format!("monitoring-dry-run-{}", std::process::id());
    let out = kubectl(Some(&kubeconfig), &["create", "namespace", &namespace])?;
    ensure!(out.status.success(), "{}", text(&out));
    let result = dry_runs(&kubeconfig, &namespace);
    let _ = kubectl(
        Some(&kubeconfig),
        &["delete", "namespace", &namespace, "--wait=false"],
    );
    result
}

fn dry_runs(kubeconfig: &Path, namespace: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let dry_run = |objects: &[Value]| -> Result<Output> {
        let path = dir.path().join("objects.json");
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
        std::fs::write(&path, serde_json::to_vec(&list)?)?;
        real_cluster::dry_run(kubeconfig, &path)
    };
    let mut objects = kustomize("prometheus")?;
    for object in &mut objects {
        object["metadata"]["namespace"] = namespace.into();
    }
    let out = dry_run(&objects)?;
    assert!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).trim()
                == "prometheusrule.monitoring.coreos.com/provenant-alerts\n\
                    servicemonitor.monitoring.coreos.com/provenant-controller",
        "{}",
        text(&out)
    );
    // The check can fail: a misspelled field, and an invalid `for` duration, are refused.
    for (kind, field, bad) in [
        ("ServiceMonitor", "endpoints", "endpoint"),
        ("PrometheusRule", "groups", "group"),
    ] {
        let mut broken = objects.clone();
        let object = broken
            .iter_mut()
            .find(|o| o["kind"] == kind)
            .context("kind")?;
        let spec = object["spec"].as_object_mut().context("spec")?;
        let value = spec.remove(field).context("field")?;
        spec.insert(bad.to_string(), value);
        let out = dry_run(&broken)?;
        assert!(
            !out.status.success()
                && text(&out).contains("unknown field")
                && text(&out).contains(&format!("\"{bad}\"")),
            "{kind} with spec.{bad}: {}",
            text(&out)
        );
    }
    let mut broken = objects.clone();
    let rule = broken
        .iter_mut()
        .find(|o| o["kind"] == "PrometheusRule")
        .context("PrometheusRule")?;
    rule["spec"]["groups"][0]["rules"][0]["for"] = "five minutes".into();
    let out = dry_run(&broken)?;
    assert!(!out.status.success(), "{}", text(&out));
    Ok(())
}
