//! The MaterialRevocation CRD on a real kube-apiserver: each bad revocation is refused naming
//! its field, and the spec is immutable (the offline checks of the same rules are in
//! controller/tests/crd_revocation.rs; installing the CRD is what judges its CEL cost).

use anyhow::Result;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use provenant::api::MaterialRevocation;
use provenant_testbed::cluster::Cluster;
use serde_json::{Value, json};

use crate::revocation::revocation;
use crate::support::init_logs;

/// The CRD's refusals on the real API server, naming the field (the offline checks are in
/// controller/tests/crd_revocation.rs).
#[tokio::test]
async fn the_api_server_refuses_bad_revocations() -> Result<()> {
    init_logs();
    let Some(cluster) = Cluster::start_real().await? else {
        return Ok(());
    };
    // Untyped: some of these cannot even be written with the typed API.
    let resource = ApiResource::erase::<MaterialRevocation>(&());
    let api: Api<DynamicObject> = Api::all_with(cluster.client.clone(), &resource);
    let ns = &cluster.namespace;
    let good = format!("sha256:{}", "a".repeat(64));
    let object = |name: &str, spec: Value| -> Result<DynamicObject> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "provenant.dev/v1alpha1",
            "kind": "MaterialRevocation",
            "metadata": {"name": format!("{name}-{ns}")},
            "spec": spec,
        }))?)
    };
    let material = |type_: &str, digest: &str| json!({"type": type_, "digest": digest});
    for (case, spec, field) in [
        (
            "digest",
            json!({"material": material("Dataset", "sha256:abc"), "reason": "x"}),
            "spec.material.digest",
        ),
        (
            "type",
            json!({"material": material("BaseModel", &good), "reason": "x"}),
            "spec.material.type",
        ),
        (
            "reason",
            json!({"material": material("Model", &good), "reason": "  "}),
            "spec.reason",
        ),
        (
            "noreason",
            json!({"material": material("Model", &good)}),
            "spec.reason",
        ),
        (
            "http",
            json!({"material": material("Model", &good), "reason": "x", "advisory": "http://example.com"}),
            "spec.advisory",
        ),
    ] {
        let err = api
            .create(&PostParams::default(), &object(case, spec)?)
            .await
            .expect_err(case);
        assert!(err.to_string().contains(field), "{case}: {err}");
    }

    // Immutable once created.
    let typed: Api<MaterialRevocation> = Api::all(cluster.client.clone());
    let name = format!("ok-{ns}");
    let mut created = typed
        .create(
            &PostParams::default(),
            &revocation(&name, ns, "Model", &good, "x")?,
        )
        .await?;
    created.spec.reason = "another story".into();
    let err = typed
        .replace(&name, &PostParams::default(), &created)
        .await
        .expect_err("immutable");
    assert!(err.to_string().contains("immutable"), "{err}");
    typed.delete(&name, &DeleteParams::default()).await?;
    Ok(())
}
