//! The CRD on a real kube-apiserver, as a user meets it through kubectl: it installs (its CEL
//! rules fit the server's cost budget), every bad run of controller/tests/support/runs.rs is
//! refused naming the same field as the offline check, the edge cases are accepted, and the spec
//! is immutable once the run has started. The double evaluates no CEL or OpenAPI bounds, so this
//! runs on a real server only.

use std::process::{Output, Stdio};

use anyhow::{Context, Result};
use provenant_testbed::cluster::Cluster;
use provenant_testbed::tools;
use serde_json::{Value, json};

use crate::runs::{Accepted, accepted, cpu_sample, refused};
use crate::support::init_logs;

/// `kubectl <args>` against the cluster, with `stdin` (JSON) as its input when given.
async fn kubectl(cluster: &Cluster, args: &[&str], stdin: Option<&Value>) -> Result<Output> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(tools::path("kubectl")?)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(["--namespace", &cluster.namespace])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running kubectl")?;
    if let Some(stdin) = stdin {
        let mut input = child.stdin.take().context("kubectl stdin")?;
        input.write_all(&serde_json::to_vec(stdin)?).await?;
    }
    Ok(child.wait_with_output().await?)
}

/// The fields kubectl names in a refusal, each with its message: `* field: message` lines (or one
/// `is invalid: field: message`), and `unknown field "field"` from strict decoding.
fn refused_fields(stderr: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let body = stderr
        .split_once("is invalid: ")
        .map_or("", |(_, rest)| rest);
    for cause in body.split("\n* ").map(str::trim) {
        let cause = cause.trim_start_matches("* ");
        if let Some((field, message)) = cause.split_once(": ") {
            let field = if field == "<nil>" { "" } else { field };
            out.push((field.to_string(), message.to_string()));
        }
    }
    for part in stderr.split("unknown field \"").skip(1) {
        if let Some((field, _)) = part.split_once('"') {
            out.push((field.to_string(), format!("unknown field \"{field}\"")));
        }
    }
    out
}

fn named(object: &Value, index: usize) -> Value {
    let mut object = object.clone();
    // Cases about the name keep theirs.
    if object["metadata"]["name"] == cpu_sample()["metadata"]["name"] {
        object["metadata"]["name"] = json!(format!("case-{index}"));
    }
    object
}

#[tokio::test]
async fn the_api_server_refuses_each_bad_run_on_the_same_field() -> Result<()> {
    init_logs();
    let Some(cluster) = Cluster::start_real().await? else {
        return Ok(());
    };
    let mut failures = Vec::new();
    for (i, case) in refused().into_iter().enumerate() {
        let out = kubectl(
            &cluster,
            &["create", "-f", "-"],
            Some(&named(&case.object, i)),
        )
        .await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            failures.push(format!("{}: accepted", case.case));
            continue;
        }
        let fields = refused_fields(&stderr);
        if !fields
            .iter()
            .any(|(field, message)| case.matches(field, message))
        {
            failures.push(format!(
                "{}: expected {} saying one of {:?}, kubectl said: {stderr}",
                case.case, case.field, case.hints
            ));
        }
    }
    for (i, Accepted { case, object }) in accepted().into_iter().enumerate() {
        let out = kubectl(
            &cluster,
            &["create", "-f", "-"],
            Some(&named(&object, 1000 + i)),
        )
        .await?;
        if !out.status.success() {
            failures.push(format!(
                "{case}: refused: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// `kubectl patch tr NAME --type=merge -p BODY` (on `subresource` when given): Ok(()) or the
/// refusal kubectl printed.
async fn merge_patch(
    cluster: &Cluster,
    name: &str,
    subresource: Option<&str>,
    body: Value,
) -> Result<Result<(), String>> {
    let body = serde_json::to_string(&body)?;
    let subresource = subresource.map(|s| format!("--subresource={s}"));
    let mut args = vec!["patch", "tr", name, "--type=merge", "-p", &body];
    args.extend(subresource.as_deref());
    let out = kubectl(cluster, &args, None).await?;
    Ok(if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    })
}

#[tokio::test]
async fn the_spec_is_immutable_on_the_api_server_once_started() -> Result<()> {
    init_logs();
    let Some(cluster) = Cluster::start_real().await? else {
        return Ok(());
    };
    let run = cpu_sample();
    let name = run["metadata"]["name"].as_str().unwrap();
    let out = kubectl(&cluster, &["create", "-f", "-"], Some(&run)).await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Not started: the spec may still be fixed.
    merge_patch(&cluster, name, None, json!({"spec": {"seed": 8}}))
        .await?
        .map_err(anyhow::Error::msg)?;
    // The controller records the start (status subresource)...
    let start = json!({"status": {"phase": "Pending", "startTime": "2026-11-22T04:00:00Z"}});
    merge_patch(&cluster, name, Some("status"), start)
        .await?
        .map_err(anyhow::Error::msg)?;
    // ...and from then on a spec change is refused, naming spec.
    let refusal = merge_patch(&cluster, name, None, json!({"spec": {"seed": 9}}))
        .await?
        .err()
        .context("a started run's spec changed")?;
    assert!(
        refused_fields(&refusal)
            .iter()
            .any(|(f, m)| f == "spec" && m.contains("immutable")),
        "{refusal}"
    );
    // The field-by-field rule passes the server's cost budget (the CRD was installed) and
    // leaves spec.suspend, and only it, changeable.
    for suspend in [true, false] {
        merge_patch(&cluster, name, None, json!({"spec": {"suspend": suspend}}))
            .await?
            .map_err(anyhow::Error::msg)?;
    }
    let policy = json!({"spec": {"suspend": true, "failurePolicy": {"maxRestarts": 3}}});
    let refusal = merge_patch(&cluster, name, None, policy)
        .await?
        .err()
        .context("a started run's failurePolicy changed")?;
    assert!(refusal.contains("immutable"), "{refusal}");
    Ok(())
}
