//! The shipped Grafana dashboard (config/grafana/): a well-formed dashboard whose every panel
//! queries the data source chosen in its `datasource` variable, whose every PromQL expression the
//! real `promtool` parses, and whose ConfigMap (`kubectl apply -k config/grafana`) Grafana's
//! sidecar finds by its label. That its metric names are the ones a running controller exports:
//! test/scenarios/dashboard.rs.

#[path = "support/real_cluster.rs"]
mod real_cluster;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use provenant_testbed::tools;
use serde_json::{Value, json};

#[path = "support/dashboard.rs"]
mod dashboard;
#[path = "support/promql.rs"]
mod promql;

use dashboard::{DASHBOARD, dashboard, panels, queries, substitute};
use promql::{Names, names};

const KUSTOMIZATION: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/grafana");

#[test]
fn every_panel_has_a_title_a_query_and_the_datasource_variable() {
    let dash = dashboard();
    assert_eq!(dash["uid"], "provenant");
    assert!(
        dash["schemaVersion"].as_u64().unwrap() >= 36,
        "{}",
        dash["schemaVersion"]
    );
    let vars = dash["templating"]["list"].as_array().unwrap();
    let datasource = vars.iter().find(|v| v["name"] == "datasource");
    assert!(
        datasource.is_some_and(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "no `datasource` variable of type prometheus: {vars:?}"
    );
    let uses_variable = |ds: &Value| ds["uid"] == "${datasource}" && ds["type"] == "prometheus";
    for var in vars.iter().filter(|v| v["type"] == "query") {
        assert!(
            uses_variable(&var["datasource"]),
            "variable {}",
            var["name"]
        );
    }

    let mut ids = HashSet::new();
    let mut cells = HashSet::new();
    let mut queried = 0;
    for panel in panels(&dash) {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(
            !title.trim().is_empty(),
            "panel {} has no title",
            panel["id"]
        );
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "panel id {id} is used twice ({title})");
        // Grafana's grid: 24 columns; two panels on one cell hide each other.
        let pos = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| pos[k].as_u64().unwrap());
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: gridPos {pos}");
        for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
            assert!(
                cells.insert(cell),
                "{title} overlaps another panel at {cell:?}"
            );
        }
        if panel["type"] == "row" {
            continue;
        }
        assert!(
            uses_variable(&panel["datasource"]),
            "{title}: {}",
            panel["datasource"]
        );
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert!(!targets.is_empty(), "{title} has no targets");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(
                !expr.trim().is_empty(),
                "{title} {}: no expr",
                target["refId"]
            );
            assert!(
                uses_variable(&target["datasource"]),
                "{title} {}",
                target["refId"]
            );
            queried += 1;
        }
    }
    assert!(queried >= 20, "only {queried} queries");
}

#[test]
fn the_panels_cover_what_an_sre_watches() {
    let dash = dashboard();
    let queries = queries(&dash);
    let used: BTreeSet<String> = queries
        .iter()
        .flat_map(|q| names(&q.expr).metrics)
        .collect();
    for metric in [
        "provenant_trainingruns",
        "provenant_provenance_lag_seconds_bucket",
        "provenant_provenance_backlog",
        "provenant_attestations_total",
        "provenant_registry_request_duration_seconds_bucket",
        "provenant_registry_errors_total",
        "provenant_reconcile_duration_seconds_count",
        "provenant_reconcile_errors_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "provenant_build_info",
    ] {
        assert!(
            used.contains(metric),
            "no panel reads {metric}; the dashboard reads {used:?}"
        );
    }
    // The lag and the registry latency are shown as p50/p90/p99.
    for histogram in [
        "provenant_provenance_lag_seconds_bucket",
        "provenant_registry_request_duration_seconds_bucket",
    ] {
        let found: BTreeSet<&str> = queries
            .iter()
            .filter(|q| q.expr.contains(histogram))
            .filter_map(|q| q.expr.strip_prefix("histogram_quantile("))
            .filter_map(|rest| rest.split(',').next())
            .collect();
        let wanted: BTreeSet<&str> = ["0.5", "0.9", "0.99"].into();
        assert!(
            found.is_superset(&wanted),
            "{histogram}: quantiles {found:?}"
        );
    }
}

/// `promtool check rules` on `exprs` written as recording rules: (success, output).
fn promtool_check(dir: &Path, exprs: &[(String, String)]) -> Result<(bool, String)> {
    let rules: Vec<Value> = exprs
        .iter()
        .map(|(record, expr)| json!({"record": record, "expr": expr}))
        .collect();
    let file = dir.join("dashboard.rules.json");
    // JSON is YAML: no quoting rules of our own between the expression and promtool.
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&json!({"groups": [{"name": "dashboard", "rules": rules}]}))?,
    )?;
    let out = Command::new(tools::path("promtool")?)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .context("running promtool")?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[test]
fn every_expression_parses_with_promtool() -> Result<()> {
    let dash = dashboard();
    let dir = tempfile::tempdir()?;
    let queries = queries(&dash);
    let exprs: Vec<(String, String)> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| (format!("dashboard:query_{i}"), q.expr.clone()))
        .collect();
    let (ok, output) = promtool_check(dir.path(), &exprs)?;
    let legend: Vec<String> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| format!("dashboard:query_{i} = {}: {}", q.origin, q.raw))
        .collect();
    assert!(
        ok,
        "promtool refused the dashboard's PromQL:\n{output}\n{}",
        legend.join("\n")
    );
    assert!(
        output.contains(&format!("{} rules found", exprs.len())),
        "{output}"
    );

    // The check can fail: one missing parenthesis is refused.
    let broken = queries[0].expr.replacen(')', "", 1);
    let (ok, output) = promtool_check(dir.path(), &[("dashboard:broken".into(), broken)])?;
    ensure!(
        !ok && output.contains("parse error"),
        "promtool accepted a broken query: {output}"
    );
    Ok(())
}

#[test]
fn grafana_variables_are_replaced_and_unknown_ones_refused() {
    let dash = dashboard();
    assert_eq!(
        substitute(
            r#"rate(x{job="$job",instance=~"${instance}"}[$__rate_interval]) [[job]] ${job:regex} $__interval_ms"#,
            &dash
        )
        .unwrap(),
        r#"rate(x{job="provenant",instance=~".*"}[1m]) provenant provenant 30000"#
    );
    let err = substitute("rate(x[$window])", &dash).unwrap_err();
    assert!(err.contains("$window"), "{err}");
}

#[test]
fn names_finds_metrics_and_labels_and_nothing_else() {
    let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    let cases = [
        (
            r#"histogram_quantile(0.99, sum by (le, op) (rate(a_bucket{job="j", x=~"by(y)"}[5m])))"#,
            &["a_bucket"][..],
            &["le", "op", "job", "x"][..],
        ),
        (
            "sum(rate(a_total[1m] offset 5m)) / on (instance) group_left (version) b_info > bool 1e3",
            &["a_total", "b_info"],
            &["instance", "version"],
        ),
        (
            "time() - process_start_time_seconds and up > Inf",
            &["process_start_time_seconds", "up"],
            &[],
        ),
        (
            "sum without (pod) (c) unless d:recorded",
            &["c", "d:recorded"],
            &["pod"],
        ),
    ];
    for (expr, metrics, labels) in cases {
        assert_eq!(
            names(expr),
            Names {
                metrics: set(metrics),
                labels: set(labels)
            },
            "{expr}"
        );
    }
}

/// `kubectl kustomize dir`, parsed.
fn kustomize(dir: &Path) -> Vec<Value> {
    let out = Command::new(tools::path("kubectl").unwrap())
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("running kubectl kustomize");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split("\n---\n")
        .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap())
        .collect()
}

#[test]
fn kustomize_renders_the_sidecar_configmap() {
    let objects = kustomize(Path::new(KUSTOMIZATION));
    assert_eq!(objects.len(), 1, "{objects:?}");
    let cm = &objects[0];
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "provenant-dashboard");
    assert_eq!(cm["metadata"]["namespace"], "provenant-system");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped = std::fs::read_to_string(DASHBOARD).unwrap();
    assert_eq!(
        cm["data"]["provenant.json"].as_str(),
        Some(shipped.as_str())
    );
}

/// `dir` relative to `base`, both absolute (kustomize refuses absolute resource paths).
fn relative(dir: &Path, base: &Path) -> PathBuf {
    let up = base.components().count() - 1;
    let mut out: PathBuf = std::iter::repeat_n("..", up).collect();
    out.push(dir.strip_prefix("/").unwrap());
    out
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(tools::path("kubectl")?)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .context("running kubectl")?;
    ensure!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// `kubectl apply -k` on the real API server, through an overlay that moves it to another
/// namespace (as docs/operations.md tells users whose Grafana watches one namespace), then found
/// as the sidecar finds it: by its label.
#[test]
fn apply_k_installs_a_configmap_the_sidecar_finds() -> Result<()> {
    let Some(kubeconfig) = real_cluster::kubeconfig()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let namespace = format!("grafana-{}", std::process::id());
    let base = Path::new(KUSTOMIZATION).canonicalize()?;
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             namespace: {namespace}\nresources:\n  - {}\n",
            relative(&base, &dir.path().canonicalize()?).display()
        ),
    )?;
    kubectl(&kubeconfig, &["create", "namespace", &namespace])?;
    let result = (|| -> Result<()> {
        let applied = kubectl(&kubeconfig, &["apply", "-k", dir.path().to_str().unwrap()])?;
        ensure!(
            applied.contains("configmap/provenant-dashboard created"),
            "{applied}"
        );
        let found: Value = serde_json::from_str(&kubectl(
            &kubeconfig,
            &[
                "get",
                "configmaps",
                "-n",
                &namespace,
                "-l",
                "grafana_dashboard=1",
                "-o",
                "json",
            ],
        )?)?;
        let items = found["items"].as_array().context("items")?;
        ensure!(items.len() == 1, "{found}");
        let stored = items[0]["data"]["provenant.json"]
            .as_str()
            .unwrap_or_default();
        ensure!(
            stored == std::fs::read_to_string(DASHBOARD)?,
            "the stored dashboard differs"
        );
        // What Grafana loads: a dashboard with our uid.
        ensure!(serde_json::from_str::<Value>(stored)?["uid"] == "provenant");
        Ok(())
    })();
    kubectl(
        &kubeconfig,
        &["delete", "namespace", &namespace, "--wait=false"],
    )?;
    result
}
