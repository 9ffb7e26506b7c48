//! The local control plane of `hack/cluster.sh` does what test/README.md says the scenarios rely
//! on: the controller-manager's garbage collector removes owned objects, its namespace controller
//! deletes namespaces, its serviceaccount controller creates `default` ServiceAccounts. Real
//! cluster only (`make test` runs it there).

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Resource, ResourceExt};
use provenant_testbed::cluster::{Cluster, eventually};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn garbage_collection_namespace_deletion_and_default_service_accounts() -> Result<()> {
    let Some(cluster) = Cluster::start_real().await? else {
        return Ok(());
    };
    let configmaps = cluster.api::<ConfigMap>();
    let owner: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "owner"}}))?;
    let owner = configmaps.create(&PostParams::default(), &owner).await?;
    let dependent: ConfigMap = serde_json::from_value(json!({"metadata": {
        "name": "dependent",
        "ownerReferences": [owner.controller_owner_ref(&()).unwrap()],
    }}))?;
    configmaps
        .create(&PostParams::default(), &dependent)
        .await?;
    configmaps.delete("owner", &DeleteParams::default()).await?;
    eventually(TIMEOUT, "the dependent to be garbage collected", || {
        let configmaps = configmaps.clone();
        async move {
            Ok(configmaps
                .get_opt("dependent")
                .await?
                .is_none()
                .then_some(()))
        }
    })
    .await?;

    // A new namespace gets its `default` ServiceAccount from the controller-manager...
    let namespaces = Api::<Namespace>::all(cluster.client.clone());
    let name = format!("{}-gone", cluster.namespace);
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    namespaces.create(&PostParams::default(), &ns).await?;
    let accounts = Api::<ServiceAccount>::namespaced(cluster.client.clone(), &name);
    eventually(TIMEOUT, "the default ServiceAccount", || {
        let accounts = accounts.clone();
        async move { Ok(accounts.get_opt("default").await?.map(|sa| sa.name_any())) }
    })
    .await?;
    // ...and is deleted with its contents.
    namespaces.delete(&name, &DeleteParams::default()).await?;
    eventually(TIMEOUT, "the namespace to be deleted", || {
        let namespaces = namespaces.clone();
        let name = name.clone();
        async move { Ok(namespaces.get_opt(&name).await?.is_none().then_some(())) }
    })
    .await?;
    Ok(())
}

/// A ConfigMap holds at most 1 MiB (data values plus decoded binaryData): the real server refuses
/// one byte more with 422 "Too long", and so does the double, so that a record too large for a
/// real cluster fails on the double too.
#[tokio::test]
async fn configmaps_are_limited_to_one_mebibyte_on_the_double_as_on_the_real_server() -> Result<()>
{
    const MAX: usize = 1024 * 1024;
    let real = Cluster::start_real().await?;
    let double = Cluster::start_double().await?;
    for cluster in real.iter().chain([&double]) {
        let configmaps = cluster.api::<ConfigMap>();
        let sized = |name: &str, text: usize, binary: usize| -> Result<ConfigMap> {
            use base64::Engine as _;
            let binary = base64::engine::general_purpose::STANDARD.encode(vec![7u8; binary]);
            Ok(serde_json::from_value(json!({
                "metadata": {"name": name},
                "data": {"a": "x".repeat(text)},
                "binaryData": {"b": binary},
            }))?)
        };
        configmaps
            .create(&PostParams::default(), &sized("fits", 1024, MAX - 1024)?)
            .await?;
        let err = configmaps
            .create(&PostParams::default(), &sized("over", 1025, MAX - 1024)?)
            .await
            .expect_err("one byte over");
        match err {
            kube::Error::Api(s) => {
                assert_eq!(s.code, 422, "{}", s.message);
                assert!(s.message.contains("Too long"), "{}", s.message);
            }
            other => panic!("{other}"),
        }
    }
    Ok(())
}
