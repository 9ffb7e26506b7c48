//! The Argo Workflows sample (config/samples/pipelines/argo-workflow.yaml): a server-side dry run
//! against Argo's own Workflow CRD, its TrainingRun created and run, its success and failure
//! conditions and its output JSONPaths read from real runs.

use anyhow::{Context, Result, bail};
use provenant::api::{Phase, ProvenanceState};
use provenant_testbed::cluster::eventually;
use provenant_testbed::tools;
use serde_json::{Value, json};

use super::{BROKEN, kubectl, kubelet, real_world, repo_file, tenant_kubeconfig, text};
use crate::provenance::World;
use crate::support::*;

/// A field of `object` by Argo's dotted path (what its resource conditions read).
fn field<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(object, |v, key| v.get(key))
}

/// Argo's resource condition (a label selector over dotted paths; `,` is AND), for the forms the
/// sample uses: `path == value`, `path != value`, `path in (a,b)`. Anything else is an error, so
/// a change of the sample's conditions needs a look here.
fn argo_condition(condition: &str, object: &Value) -> Result<bool> {
    let mut requirements = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in condition.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                requirements.push(&condition[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    requirements.push(&condition[start..]);
    for requirement in requirements {
        let words: Vec<&str> = requirement.split_whitespace().collect();
        let actual = |path: &str| {
            field(object, path).map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        };
        let holds = match words.as_slice() {
            [path, "==", value] => actual(path).as_deref() == Some(*value),
            [path, "!=", value] => actual(path).as_deref() != Some(*value),
            [path, "in", set @ ..] => {
                let set = set.concat();
                let set = set.trim_start_matches('(').trim_end_matches(')');
                actual(path).is_some_and(|a| set.split(',').any(|v| v == a))
            }
            _ => bail!("an Argo condition this test does not read: {requirement:?}"),
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The sample's TrainingRun manifest with the Workflow's parameter defaults (and
/// `output-repository` = `repository`) put in, as Argo does before it creates it.
fn sample_run(workflow: &Value, repository: &str) -> Result<(String, Value)> {
    let template = workflow["spec"]["templates"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["resource"].is_object()))
        .context("the sample has a resource template")?;
    let mut manifest = template["resource"]["manifest"]
        .as_str()
        .context("resource.manifest")?
        .replace("{{workflow.name}}", "train-with-provenance-test");
    for parameter in workflow["spec"]["arguments"]["parameters"]
        .as_array()
        .context("spec.arguments.parameters")?
    {
        let name = parameter["name"].as_str().unwrap_or_default();
        let value = match name {
            "output-repository" => repository,
            _ => parameter["value"].as_str().unwrap_or_default(),
        };
        manifest = manifest.replace(&format!("{{{{workflow.parameters.{name}}}}}"), value);
    }
    assert!(!manifest.contains("{{"), "a parameter is left: {manifest}");
    Ok((manifest, template["resource"].clone()))
}

#[tokio::test]
async fn the_argo_workflow_sample_is_valid_and_its_conditions_read_real_runs() -> Result<()> {
    let Some(world) = real_world().await? else {
        return Ok(());
    };
    let cluster = &world.cluster;
    let admin = cluster.kubeconfig();
    // Argo's own CRD (hack/tools.sh copies it from the pinned module), applied as Argo's install
    // says: server-side (it is too large for a client-side apply's annotation).
    let crd = tools::path("crds/argoproj.io_workflows.yaml")?;
    let crd = crd.to_string_lossy();
    let out = kubectl(
        admin,
        &["apply", "--server-side", "--force-conflicts", "-f", &crd],
        None,
    )
    .await?;
    assert!(out.status.success(), "{}", text(&out));
    // Until the CRD is established and in kubectl's discovery (`kubectl wait` right after the
    // apply may find no conditions yet, a dry run no mapping yet).
    let sample = repo_file("config/samples/pipelines/argo-workflow.yaml");
    let sample_text = std::fs::read_to_string(&sample)?;
    let dry_run = ["create", "--dry-run=server", "-o", "name", "-f", "-"];
    let out = eventually(TIMEOUT, "the Workflow CRD to be served", || {
        let sample_text = sample_text.clone();
        async move {
            let out = kubectl(admin, &dry_run, Some(&sample_text)).await?;
            let mapping = text(&out).contains("no matches for kind");
            Ok((!mapping).then_some(out))
        }
    })
    .await?;
    // The Workflow passes the API server's validation against that schema ...
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).starts_with("workflow.argoproj.io/train-with-provenance-"));
    // ... which does check it: a resource template with a field of the wrong type is refused.
    let workflow: Value = serde_saphyr::from_str(&sample_text)?;
    let mut broken = workflow.clone();
    let templates = broken["spec"]["templates"]
        .as_array_mut()
        .context("templates")?;
    for t in templates.iter_mut().filter(|t| t["resource"].is_object()) {
        t["resource"]["setOwnerReference"] = json!("no");
    }
    let out = kubectl(admin, &dry_run, Some(&broken.to_string())).await?;
    assert!(!out.status.success());
    let refusal = "resource.setOwnerReference in body must be of type boolean";
    assert!(text(&out).contains(refusal), "{}", text(&out));

    // Its TrainingRun, created by a team member, for real, and one that fails.
    let _sim = kubelet(&world).await?;
    let _controller = world.controller("a").await?;
    let tenant = tenant_kubeconfig(cluster).await?;
    let (manifest, resource) = sample_run(&workflow, &world.repository())?;
    let mut names = Vec::new();
    for broken in [false, true] {
        let mut run: Value = serde_saphyr::from_str(&manifest)?;
        if broken {
            run["metadata"]["generateName"] = json!(BROKEN);
        }
        let out = kubectl(
            &tenant,
            &["create", "-o", "name", "-f", "-"],
            Some(&run.to_string()),
        )
        .await?;
        assert!(out.status.success(), "{}", text(&out));
        let name = String::from_utf8_lossy(&out.stdout);
        let name = name.trim().trim_start_matches("trainingrun.provenant.dev/");
        names.push(name.to_string());
    }
    let succeeded = world
        .wait_provenance(&names[0], ProvenanceState::Attached)
        .await?;
    let failed = wait_phase(cluster, &names[1], Phase::Failed).await?;

    let success = resource["successCondition"]
        .as_str()
        .context("successCondition")?;
    let failure = resource["failureCondition"]
        .as_str()
        .context("failureCondition")?;
    let good = serde_json::to_value(&succeeded)?;
    // A failed run's provenance state is written with its phase (Disabled: nothing to sign).
    let bad = serde_json::to_value(&failed)?;
    assert!(argo_condition(success, &good)?, "{success} on {good:#}");
    assert!(!argo_condition(failure, &good)?, "{failure}");
    assert!(argo_condition(failure, &bad)?, "{failure} on {bad:#}");
    assert!(!argo_condition(success, &bad)?, "{success}");
    // The same succeeded run as it was before its provenance was attached: Argo keeps waiting.
    let mut signing = good.clone();
    signing["status"]["provenance"]["state"] = json!("Signed");
    assert!(!argo_condition(success, &signing)? && !argo_condition(failure, &signing)?);

    // The output parameters' JSONPaths, read by kubectl as Argo's executor does.
    let template = workflow["spec"]["templates"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["resource"].is_object()))
        .context("resource template")?;
    let digest = World::model_digest(&succeeded);
    let attestations = succeeded
        .status
        .as_ref()
        .and_then(|s| s.provenance.as_ref())
        .map(|p| p.attestations.clone())
        .unwrap_or_default();
    let expected = [
        ("run", names[0].clone()),
        ("repository", world.repository()),
        ("digest", digest),
        ("attestations", serde_json::to_string(&attestations)?),
    ];
    for (name, want) in expected {
        let path = template["outputs"]["parameters"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == name))
            .and_then(|p| p["valueFrom"]["jsonPath"].as_str())
            .with_context(|| format!("output parameter {name}"))?;
        let jsonpath = format!("jsonpath={path}");
        let target = format!("trainingrun/{}", names[0]);
        let out = kubectl(&tenant, &["get", &target, "-o", &jsonpath], None).await?;
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "output {name}");
    }
    assert!(!attestations.is_empty());
    assert!(
        failed
            .metadata
            .name
            .as_deref()
            .unwrap_or_default()
            .starts_with(BROKEN)
    );
    Ok(())
}
