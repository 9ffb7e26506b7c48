//! The API-server double, exercised only through a real `kube::Client` built from its
//! kubeconfig: each test checks what a kube-rs user (a controller) would rely on.
//! Every test starts its own server, so they are independent and run in parallel.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams,
    PostParams, Preconditions,
};
use kube::core::{GroupVersionKind, PartialObjectMeta, Status};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use provenant_testbed::apiserver::ApiServer;
use serde_json::{Value, json};

async fn setup() -> (ApiServer, Client) {
    let server = ApiServer::start().await.expect("start API-server double");
    let client = server.client().await.expect("client from kubeconfig");
    (server, client)
}

/// The `Status` of a failed call.
fn status(err: kube::Error) -> Box<Status> {
    match err {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn cm(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        },
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
    }))
    .unwrap()
}

fn names<K: Resource>(items: &[K]) -> Vec<String> {
    items
        .iter()
        .map(|o| o.meta().name.clone().unwrap())
        .collect()
}

/// A compact view of watcher events, for asserting sequences.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Init,
    InitApply(String),
    InitDone,
    Apply(String, Option<String>),
    Delete(String),
}

fn seen(ev: watcher::Event<ConfigMap>) -> Seen {
    match ev {
        watcher::Event::Init => Seen::Init,
        watcher::Event::InitApply(o) => Seen::InitApply(o.name_any()),
        watcher::Event::InitDone => Seen::InitDone,
        watcher::Event::Apply(o) => {
            let v = o.data.as_ref().and_then(|d| d.get("v").cloned());
            Seen::Apply(o.name_any(), v)
        }
        watcher::Event::Delete(o) => Seen::Delete(o.name_any()),
    }
}

/// Next non-error watcher event (errors such as a 410 are expected and skipped).
async fn next<S>(stream: &mut S) -> Seen
where
    S: Stream<Item = Result<watcher::Event<ConfigMap>, watcher::Error>> + Unpin,
{
    loop {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("watcher event within 10s")
            .expect("watcher stream ended");
        if let Ok(ev) = item {
            return seen(ev);
        }
    }
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.dev
spec:
  group: example.dev
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    shortNames: [wd]
  versions:
    - name: v1
      served: true
      storage: true
      subresources:
        status: {}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [size]
              properties:
                size: {type: integer}
                color: {type: string, default: blue}
                tags:
                  type: object
                  additionalProperties: {type: string}
                extra:
                  type: object
                  x-kubernetes-preserve-unknown-fields: true
            status:
              type: object
              properties:
                phase: {type: string}
                observedGeneration: {type: integer}
"#;

/// Installs the Widget CRD from YAML exactly as a user would, and returns an API for widgets in
/// `default`, resolved through discovery.
async fn install_widgets(client: &Client) -> Api<DynamicObject> {
    let value: Value = serde_saphyr::from_str(WIDGET_CRD).unwrap();
    let crd: CustomResourceDefinition = serde_json::from_value(value).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let created = crds.create(&PostParams::default(), &crd).await.unwrap();
    let conditions = created.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );
    let gvk = GroupVersionKind::gvk("example.dev", "v1", "Widget");
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
    assert_eq!(ar.plural, "widgets");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    Api::namespaced_with(client.clone(), "default", &ar)
}

fn widget(name: &str, spec: Value) -> DynamicObject {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("example.dev", "v1", "Widget"));
    let mut w = DynamicObject::new(name, &ar);
    w.data = json!({"spec": spec});
    w
}

#[tokio::test]
async fn configmap_crud() {
    let (_server, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());

    let created = api
        .create(
            &PostParams::default(),
            &cm("app", &[("a", "1")], &[("k", "v")]),
        )
        .await
        .unwrap();
    let meta = &created.metadata;
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    assert!(meta.uid.is_some() && meta.resource_version.is_some());
    assert_eq!(meta.generation, Some(1));
    let ts = meta.creation_timestamp.as_ref().unwrap();
    assert!(ts.0.to_string().ends_with('Z'));

    let got = api.get("app").await.unwrap();
    assert_eq!(got.data.as_ref().unwrap()["k"], "v");

    let err = status(
        api.create(&PostParams::default(), &cm("app", &[], &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(err.message, "configmaps \"app\" already exists");

    let mut changed = got.clone();
    changed.data = Some(BTreeMap::from([("k".to_string(), "w".to_string())]));
    let replaced = api
        .replace("app", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(replaced.data.unwrap()["k"], "w");
    assert_eq!(replaced.metadata.uid, meta.uid);
    assert_ne!(replaced.metadata.resource_version, meta.resource_version);

    let patched = api
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"x": "y"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap().len(), 2);

    let generated = api
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    generate_name: Some("gen-".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let name = generated.name_any();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    let err = status(
        api.create(&PostParams::default(), &cm("Bad_Name", &[], &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));

    let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "nope");
    let err = status(
        elsewhere
            .create(&PostParams::default(), &cm("x", &[], &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (404, "namespaces \"nope\" not found")
    );

    // dryRun persists nothing
    let dry = api
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &cm("dry", &[], &[]),
        )
        .await
        .unwrap();
    assert_eq!(dry.name_any(), "dry");
    assert!(api.get_opt("dry").await.unwrap().is_none());

    // deleted at once: a Status Success naming it (a pending deletion returns the object)
    let done = api.delete("app", &DeleteParams::default()).await.unwrap();
    let done = done.right().expect("Status for a completed deletion");
    assert_eq!(done.details.unwrap().name, "app");
    let err = status(api.get("app").await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(err.message, "configmaps \"app\" not found");
}

#[tokio::test]
async fn pods_with_label_and_field_selectors() {
    let (_server, client) = setup().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &Namespace {
            metadata: ObjectMeta {
                name: Some("other".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let default: Api<Pod> = Api::default_namespaced(client.clone());
    let other: Api<Pod> = Api::namespaced(client.clone(), "other");
    let pp = PostParams::default();
    let web = default
        .create(&pp, &pod("web", &[("app", "web"), ("tier", "fe")]))
        .await
        .unwrap();
    assert_eq!(web.status.unwrap().phase.as_deref(), Some("Pending"));
    default
        .create(&pp, &pod("db", &[("app", "db")]))
        .await
        .unwrap();
    default.create(&pp, &pod("plain", &[])).await.unwrap();
    other
        .create(&pp, &pod("web", &[("app", "web")]))
        .await
        .unwrap();

    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "db"},
                         "target": {"kind": "Node", "name": "node-1"}});
    let _: Value = default
        .create_subresource("binding", "db", &pp, &binding)
        .await
        .unwrap();

    let list = |api: &Api<Pod>, lp: ListParams| {
        let api = api.clone();
        async move { names(&api.list(&lp).await.unwrap().items) }
    };
    let lp = ListParams::default;
    assert_eq!(list(&default, lp().labels("app=web")).await, ["web"]);
    assert_eq!(list(&default, lp().labels("app==web,tier")).await, ["web"]);
    assert_eq!(
        list(&default, lp().labels("app!=web")).await,
        ["db", "plain"]
    );
    assert_eq!(
        list(&default, lp().labels("app in (web,db)")).await,
        ["db", "web"]
    );
    assert_eq!(
        list(&default, lp().labels("app notin (web)")).await,
        ["db", "plain"]
    );
    assert_eq!(list(&default, lp().labels("app")).await, ["db", "web"]);
    assert_eq!(list(&default, lp().labels("!app")).await, ["plain"]);
    assert_eq!(
        list(&default, lp().fields("metadata.name=db")).await,
        ["db"]
    );
    assert_eq!(
        list(&default, lp().fields("spec.nodeName=node-1")).await,
        ["db"]
    );
    assert_eq!(
        list(&default, lp().fields("spec.nodeName=")).await,
        ["plain", "web"]
    );
    assert_eq!(
        list(
            &default,
            lp().fields("status.phase==Pending,metadata.name!=plain")
        )
        .await,
        ["db", "web"]
    );

    // across all namespaces
    let all: Api<Pod> = Api::all(client.clone());
    let everywhere = all.list(&lp().labels("app=web")).await.unwrap();
    let where_: Vec<_> = everywhere
        .items
        .iter()
        .map(|p| format!("{}/{}", p.namespace().unwrap(), p.name_any()))
        .collect();
    assert_eq!(where_, ["default/web", "other/web"]);
    assert!(everywhere.metadata.resource_version.is_some());
    let err = status(all.list(&lp().fields("spec.color=red")).await.unwrap_err());
    assert_eq!(err.code, 400);
    let err = status(all.list(&lp().labels("app in (web")).await.unwrap_err());
    assert_eq!(err.code, 400);
}

#[tokio::test]
async fn cluster_scoped_node() {
    let (_server, client) = setup().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "node-1", "labels": {"pool": "gpu"}},
        "status": {"capacity": {"nvidia.com/gpu": "8"}},
    }))
    .unwrap();
    let created = nodes.create(&PostParams::default(), &node).await.unwrap();
    assert_eq!(created.metadata.namespace, None);
    // nodes keep the status they are registered with
    assert!(created.status.is_some());

    let patched = nodes
        .patch_status(
            "node-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})),
        )
        .await
        .unwrap();
    let conds = patched.status.unwrap().conditions.unwrap();
    assert_eq!(conds[0].type_, "Ready");

    let listed = nodes
        .list(&ListParams::default().labels("pool=gpu"))
        .await
        .unwrap();
    assert_eq!(names(&listed.items), ["node-1"]);

    nodes
        .delete("node-1", &DeleteParams::default())
        .await
        .unwrap();
    assert!(nodes.get_opt("node-1").await.unwrap().is_none());
}

#[tokio::test]
async fn pagination_with_limit_and_continue() {
    let (_server, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for i in 0..25 {
        api.create(
            &PostParams::default(),
            &cm(&format!("cm-{i:02}"), &[("n", "x")], &[]),
        )
        .await
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    let mut first_rv = None;
    loop {
        let mut lp = ListParams::default().limit(10).labels("n=x");
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        let rv = page.metadata.resource_version.clone().unwrap();
        // all pages of one list are at the resourceVersion of the first page
        assert_eq!(first_rv.get_or_insert(rv.clone()), &rv);
        seen.extend(names(&page.items));
        token = page.metadata.continue_.filter(|c| !c.is_empty());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..25).map(|i| format!("cm-{i:02}")).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn watcher_sees_changes_in_order() {
    let (server, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &cm("before", &[], &[]))
        .await
        .unwrap();
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    assert_eq!(next(&mut stream).await, Seen::Init);
    assert_eq!(next(&mut stream).await, Seen::InitApply("before".into()));
    assert_eq!(next(&mut stream).await, Seen::InitDone);

    api.create(&PostParams::default(), &cm("a", &[], &[("v", "1")]))
        .await
        .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        next(&mut stream).await,
        Seen::Apply("a".into(), Some("1".into()))
    );
    assert_eq!(
        next(&mut stream).await,
        Seen::Apply("a".into(), Some("2".into()))
    );
    assert_eq!(next(&mut stream).await, Seen::Delete("a".into()));

    // streaming lists (sendInitialEvents + the initial-events-end bookmark) work too
    let mut streaming = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    assert_eq!(next(&mut streaming).await, Seen::Init);
    assert_eq!(next(&mut streaming).await, Seen::InitApply("before".into()));
    assert_eq!(next(&mut streaming).await, Seen::InitDone);
    api.create(&PostParams::default(), &cm("b", &[], &[]))
        .await
        .unwrap();
    assert_eq!(next(&mut streaming).await, Seen::Apply("b".into(), None));
    assert_eq!(next(&mut stream).await, Seen::Apply("b".into(), None));

    // shutdown ends open watches and completes promptly
    tokio::time::timeout(Duration::from_secs(6), server.shutdown())
        .await
        .expect("shutdown within 6s");
    assert!(api.get("before").await.is_err());
}

#[tokio::test]
async fn watch_with_selector_sees_objects_enter_and_leave() {
    let (_server, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let config = watcher::Config::default().labels("team=ml");
    let mut stream = watcher(api.clone(), config).boxed();
    assert_eq!(next(&mut stream).await, Seen::Init);
    assert_eq!(next(&mut stream).await, Seen::InitDone);
    api.create(&PostParams::default(), &cm("x", &[("team", "web")], &[]))
        .await
        .unwrap();
    let label = |team: &str| Patch::Merge(json!({"metadata": {"labels": {"team": team}}}));
    api.patch("x", &PatchParams::default(), &label("ml"))
        .await
        .unwrap();
    api.patch("x", &PatchParams::default(), &label("web"))
        .await
        .unwrap();
    assert_eq!(next(&mut stream).await, Seen::Apply("x".into(), None));
    assert_eq!(next(&mut stream).await, Seen::Delete("x".into()));
}

#[tokio::test]
async fn expired_watch_relists_and_recovers() {
    let (server, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    assert_eq!(next(&mut stream).await, Seen::Init);
    assert_eq!(next(&mut stream).await, Seen::InitDone);
    api.create(&PostParams::default(), &cm("one", &[], &[]))
        .await
        .unwrap();
    assert_eq!(next(&mut stream).await, Seen::Apply("one".into(), None));

    server.compact();
    server.close_watches();
    // The watcher resumes from its last resourceVersion, gets 410 Expired, and re-lists.
    assert_eq!(next(&mut stream).await, Seen::Init);
    assert_eq!(next(&mut stream).await, Seen::InitApply("one".into()));
    assert_eq!(next(&mut stream).await, Seen::InitDone);
    api.create(&PostParams::default(), &cm("two", &[], &[]))
        .await
        .unwrap();
    assert_eq!(next(&mut stream).await, Seen::Apply("two".into(), None));

    let expired = server
        .requests()
        .iter()
        .filter(|r| r.query.contains("watch=true"))
        .count();
    assert!(
        expired >= 3,
        "initial watch, resumed watch (410), watch after re-list"
    );
}

#[tokio::test]
async fn stale_resource_version_conflicts() {
    let (_server, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let original = api
        .create(&PostParams::default(), &cm("c", &[], &[]))
        .await
        .unwrap();
    let mut first = original.clone();
    first.data = Some(BTreeMap::from([("who".to_string(), "first".to_string())]));
    api.replace("c", &PostParams::default(), &first)
        .await
        .unwrap();

    let mut second = original.clone();
    second.data = Some(BTreeMap::from([("who".to_string(), "second".to_string())]));
    let err = status(
        api.replace("c", &PostParams::default(), &second)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Operation cannot be fulfilled on configmaps \"c\": the object has been modified; \
         please apply your changes to the latest version and try again"
    );
    // a resourceVersion in a patch is a precondition too
    let stale = original.metadata.resource_version.unwrap();
    let err = status(
        api.patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"resourceVersion": stale}, "data": {"who": "third"}}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert_eq!(api.get("c").await.unwrap().data.unwrap()["who"], "first");
}

#[tokio::test]
async fn finalizer_delays_deletion() {
    let (_server, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let mut obj = cm("held", &[], &[]);
    obj.metadata.finalizers = Some(vec!["example.dev/cleanup".into()]);
    api.create(&PostParams::default(), &obj).await.unwrap();
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    assert_eq!(next(&mut stream).await, Seen::Init);
    assert_eq!(next(&mut stream).await, Seen::InitApply("held".into()));
    assert_eq!(next(&mut stream).await, Seen::InitDone);

    let deleting = api.delete("held", &DeleteParams::default()).await.unwrap();
    let deleting = deleting.left().expect("object still there, not a Status");
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert_eq!(deleting.metadata.deletion_grace_period_seconds, Some(0));
    assert_eq!(next(&mut stream).await, Seen::Apply("held".into(), None));
    let still = api.get("held").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());

    // no new finalizers while deleting
    let err = status(
        api.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.dev/cleanup", "other"]}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);

    // the finalizer helper's JSON patch: test + remove
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers/0", "value": "example.dev/cleanup"},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]))
    .unwrap();
    api.patch("held", &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .unwrap();
    assert_eq!(next(&mut stream).await, Seen::Delete("held".into()));
    assert!(api.get_opt("held").await.unwrap().is_none());
}

fn owned_by(owner: &ConfigMap) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: owner.name_any(),
        uid: owner.uid().unwrap(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

#[tokio::test]
async fn cascading_delete_through_owner_references() {
    let (_server, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();
    let owner = api.create(&pp, &cm("owner", &[], &[])).await.unwrap();
    let mut child = cm("child", &[], &[]);
    child.metadata.owner_references = Some(vec![owned_by(&owner)]);
    let child = api.create(&pp, &child).await.unwrap();
    let mut grandchild = cm("grandchild", &[], &[]);
    grandchild.metadata.owner_references = Some(vec![owned_by(&child)]);
    api.create(&pp, &grandchild).await.unwrap();

    // wrong uid precondition: nothing happens
    let wrong = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("not-the-uid".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    assert_eq!(
        status(api.delete("owner", &wrong).await.unwrap_err()).code,
        409
    );

    api.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    for gone in ["owner", "child", "grandchild"] {
        assert!(api.get_opt(gone).await.unwrap().is_none(), "{gone} deleted");
    }

    // Orphan: the dependent stays, without the reference
    let owner = api.create(&pp, &cm("owner2", &[], &[])).await.unwrap();
    let mut dep = cm("dep2", &[], &[]);
    dep.metadata.owner_references = Some(vec![owned_by(&owner)]);
    api.create(&pp, &dep).await.unwrap();
    api.delete("owner2", &DeleteParams::orphan()).await.unwrap();
    let dep = api.get("dep2").await.unwrap();
    assert!(dep.metadata.owner_references.unwrap_or_default().is_empty());

    // an object whose owner does not exist is garbage-collected
    let mut orphan = cm("dangling", &[], &[]);
    orphan.metadata.owner_references = Some(vec![OwnerReference {
        uid: "0000-gone".into(),
        ..owned_by(&owner)
    }]);
    api.create(&pp, &orphan).await.unwrap();
    assert!(api.get_opt("dangling").await.unwrap().is_none());
    // ... unless the owner's kind is not served here (the real GC cannot resolve it either)
    let mut foreign = cm("foreign", &[], &[]);
    foreign.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: "job".into(),
        uid: "1111-job".into(),
        ..Default::default()
    }]);
    api.create(&pp, &foreign).await.unwrap();
    assert!(api.get_opt("foreign").await.unwrap().is_some());
}

#[tokio::test]
async fn crd_from_yaml_is_served_with_status_subresource_rules() {
    let (_server, client) = setup().await;
    let widgets = install_widgets(&client).await;

    // discovery: group listed, short names and the status subresource advertised
    let resources = client
        .list_api_group_resources("example.dev/v1")
        .await
        .unwrap();
    let main = resources
        .resources
        .iter()
        .find(|r| r.name == "widgets")
        .unwrap();
    assert_eq!(main.short_names.as_deref(), Some(&["wd".to_string()][..]));
    assert!(main.namespaced);
    assert!(
        resources
            .resources
            .iter()
            .any(|r| r.name == "widgets/status")
    );
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    assert!(discovery.has_group("example.dev"));
    let aggregated = kube::Discovery::new(client.clone())
        .run_aggregated()
        .await
        .unwrap();
    assert!(aggregated.has_group("example.dev"));

    // create: status in the body is dropped, defaults applied, unknown fields pruned
    let mut w = widget("w1", json!({"size": 1, "bogus": true}));
    w.data["status"] = json!({"phase": "Faked"});
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.data["spec"], json!({"size": 1, "color": "blue"}));
    assert!(created.data.get("status").is_none());
    assert_eq!(created.metadata.generation, Some(1));

    // /status changes only status; undeclared status fields are pruned
    let pp = PatchParams::default();
    let st = widgets
        .patch_status(
            "w1",
            &pp,
            &Patch::Merge(
                json!({"spec": {"size": 99}, "status": {"phase": "Ready", "undeclared": 1}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"], json!({"phase": "Ready"}));
    assert_eq!(st.data["spec"]["size"], 1);
    assert_eq!(st.metadata.generation, Some(1));

    // the main resource ignores status; generation follows spec only
    let labelled = widgets
        .patch(
            "w1",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(1));
    let respec = widgets
        .patch(
            "w1",
            &pp,
            &Patch::Merge(json!({"spec": {"size": 2}, "status": {"phase": "Hacked"}})),
        )
        .await
        .unwrap();
    assert_eq!(respec.metadata.generation, Some(2));
    assert_eq!(respec.data["status"]["phase"], "Ready");
    assert_eq!(respec.data["spec"]["size"], 2);

    // a no-op write does not bump the resourceVersion
    let again = widgets
        .patch("w1", &pp, &Patch::Merge(json!({"spec": {"size": 2}})))
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        respec.metadata.resource_version
    );

    // PUT without resourceVersion is refused for custom resources; with it, status is kept
    let mut put = widgets.get("w1").await.unwrap();
    put.data["spec"]["size"] = json!(3);
    put.data["status"] = json!({"phase": "Ignored"});
    let replaced = widgets
        .replace("w1", &PostParams::default(), &put)
        .await
        .unwrap();
    assert_eq!(replaced.data["status"]["phase"], "Ready");
    assert_eq!(replaced.metadata.generation, Some(3));
    put.metadata.resource_version = None;
    assert_eq!(
        status(
            widgets
                .replace("w1", &PostParams::default(), &put)
                .await
                .unwrap_err()
        )
        .code,
        422
    );

    // fieldValidation=Strict: unknown fields are an error instead of being pruned
    let strict = PatchParams {
        field_validation: Some(kube::api::ValidationDirective::Strict),
        ..Default::default()
    };
    let err = status(
        widgets
            .patch("w1", &strict, &Patch::Merge(json!({"spec": {"bogus": 1}})))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 400);
    assert!(
        err.message.contains("unknown field \"spec.bogus\""),
        "{}",
        err.message
    );

    // type checks and required fields
    let err = status(
        widgets
            .create(
                &PostParams::default(),
                &widget("w2", json!({"size": "big"})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(err.message.contains("spec.size"), "{}", err.message);
    let err = status(
        widgets
            .create(
                &PostParams::default(),
                &widget("w3", json!({"color": "red"})),
            )
            .await
            .unwrap_err(),
    );
    assert!(
        err.message.contains("spec.size: Required value"),
        "{}",
        err.message
    );

    // deleting the CRD removes its objects and its endpoint
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("widgets.example.dev", &DeleteParams::default())
        .await
        .unwrap();
    let err = status(widgets.get("w1").await.unwrap_err());
    assert_eq!(err.code, 404);
}

#[tokio::test]
async fn server_side_apply_and_patch_types() {
    let (server, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1"}});

    let err = status(
        api.patch("ssa", &PatchParams::default(), &Patch::Apply(&applied))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 400);
    assert!(err.message.contains("fieldManager"), "{}", err.message);

    // apply creates, then updates
    let created = api
        .patch(
            "ssa",
            &PatchParams::apply("tester"),
            &Patch::Apply(&applied),
        )
        .await
        .unwrap();
    assert_eq!(created.data.unwrap()["a"], "1");
    let applied2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"b": "2"}});
    let updated = api
        .patch(
            "ssa",
            &PatchParams::apply("tester").force(),
            &Patch::Apply(&applied2),
        )
        .await
        .unwrap();
    assert_eq!(updated.data.unwrap()["b"], "2");

    // strategic merge patch is accepted (as a merge patch)
    let smp = api
        .patch(
            "ssa",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"c": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(smp.data.unwrap()["c"], "3");

    // JSON patch `test` failure is 422 Invalid and changes nothing
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/a", "value": "wrong"},
        {"op": "replace", "path": "/data/a", "value": "changed"},
    ]))
    .unwrap();
    let err = status(
        api.patch("ssa", &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(api.get("ssa").await.unwrap().data.unwrap()["a"], "1");

    // patching something missing is 404; an unknown patch content type 415
    let err = status(
        api.patch("missing", &PatchParams::default(), &Patch::Merge(json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 404);
    let req = axum::http::Request::patch("/api/v1/namespaces/default/configmaps/ssa")
        .header("content-type", "text/plain")
        .body(b"{}".to_vec())
        .unwrap();
    let err = status(client.request::<Value>(req).await.unwrap_err());
    assert_eq!(
        (err.code, err.reason.as_str()),
        (415, "UnsupportedMediaType")
    );
    let req = axum::http::Request::put("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(b"{}".to_vec())
        .unwrap();
    let err = status(client.request::<Value>(req).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (405, "MethodNotAllowed"));

    // apply with a YAML body (as kubectl sends it)
    let req = axum::http::Request::patch(
        "/api/v1/namespaces/default/configmaps/yaml?fieldManager=kubectl",
    )
    .header("content-type", "application/apply-patch+yaml")
    .body(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: yaml\ndata:\n  k: v\n".to_vec())
    .unwrap();
    let cm: ConfigMap = client.request(req).await.unwrap();
    assert_eq!(cm.data.unwrap()["k"], "v");
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.method == "PATCH" && r.status == 201)
    );
}

#[tokio::test]
async fn pod_binding_and_graceful_deletion() {
    let (_server, client) = setup().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();
    let bind = |node: &str| {
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
               "target": {"kind": "Node", "name": node}})
    };
    let mut p = pod("p", &[]);
    p.spec.as_mut().unwrap().termination_grace_period_seconds = Some(7);
    pods.create(&pp, &p).await.unwrap();
    let _: Value = pods
        .create_subresource("binding", "p", &pp, &bind("node-a"))
        .await
        .unwrap();
    let bound = pods.get("p").await.unwrap();
    assert_eq!(bound.spec.unwrap().node_name.as_deref(), Some("node-a"));
    let conds = bound.status.unwrap().conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True")
    );
    let err = status(
        pods.create_subresource::<_, Value>("binding", "p", &pp, &bind("node-b"))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));

    // the legacy bindings collection works the same way
    pods.create(&pp, &pod("legacy", &[])).await.unwrap();
    let req = axum::http::Request::post("/api/v1/namespaces/default/bindings")
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(
                &json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "legacy"},
                                       "target": {"kind": "Node", "name": "node-b"}}),
            )
            .unwrap(),
        )
        .unwrap();
    let _: Value = client.request(req).await.unwrap();
    let legacy = pods.get("legacy").await.unwrap();
    assert_eq!(legacy.spec.unwrap().node_name.as_deref(), Some("node-b"));

    // bound and running: graceful
    let deleting = pods
        .delete("p", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert_eq!(deleting.metadata.deletion_grace_period_seconds, Some(7));
    assert!(pods.get_opt("p").await.unwrap().is_some());
    // the kubelet finishes it with grace 0
    pods.delete(
        "p",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(pods.get_opt("p").await.unwrap().is_none());

    // unbound: removed at once
    pods.create(&pp, &pod("unbound", &[])).await.unwrap();
    pods.delete("unbound", &DeleteParams::default())
        .await
        .unwrap();
    assert!(pods.get_opt("unbound").await.unwrap().is_none());

    // bound but terminal: removed at once
    pods.create(&pp, &pod("done", &[])).await.unwrap();
    let body = json!({"metadata": {"name": "done"}, "target": {"kind": "Node", "name": "node-a"}});
    let _: Value = pods
        .create_subresource("binding", "done", &pp, &body)
        .await
        .unwrap();
    pods.patch_status(
        "done",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
    )
    .await
    .unwrap();
    pods.delete("done", &DeleteParams::default()).await.unwrap();
    assert!(pods.get_opt("done").await.unwrap().is_none());

    // pod spec is immutable apart from images and a few fields
    pods.create(&pp, &pod("imm", &[])).await.unwrap();
    let err = status(
        pods.patch(
            "imm",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"restartPolicy": "Never"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);
}

#[tokio::test]
async fn namespace_deletion_and_delete_collection() {
    let (_server, client) = setup().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("tmp".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let created = nss.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "tmp");
    for i in 0..3 {
        let labels: &[(&str, &str)] = if i < 2 { &[("batch", "1")] } else { &[] };
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), labels, &[]))
            .await
            .unwrap();
    }
    let deleted = cms
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("batch=1"),
        )
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(names(&deleted.items), ["c0", "c1"]);
    assert_eq!(
        names(&cms.list(&ListParams::default()).await.unwrap().items),
        ["c2"]
    );

    nss.delete("tmp", &DeleteParams::default()).await.unwrap();
    assert!(nss.get_opt("tmp").await.unwrap().is_none());
    assert!(
        cms.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn discovery_health_events_leases_and_request_log() {
    let (server, client) = setup().await;
    let info = client.apiserver_version().await.unwrap();
    assert_eq!(info.major, "1");
    let core = client.list_core_api_resources("v1").await.unwrap();
    assert!(core.resources.iter().any(|r| r.name == "pods/binding"));
    let req = axum::http::Request::get("/readyz").body(vec![]).unwrap();
    assert_eq!(client.request_text(req).await.unwrap(), "ok");

    // kube's event Recorder: create, then a series patch on repeat
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let target = cms
        .create(&PostParams::default(), &cm("evt", &[], &[]))
        .await
        .unwrap();
    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: "double-test".into(),
            instance: None,
        },
    );
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Normal,
        reason: "Tested".into(),
        note: Some("hello".into()),
        action: "Test".into(),
        secondary: None,
    };
    recorder
        .publish(&event, &target.object_ref(&()))
        .await
        .unwrap();
    recorder
        .publish(&event, &target.object_ref(&()))
        .await
        .unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(client.clone());
    let listed = events.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].reason.as_deref(), Some("Tested"));
    assert_eq!(listed[0].series.as_ref().map(|s| s.count), Some(2));

    // leases, as leader election uses them
    let leases: Api<Lease> = Api::default_namespaced(client.clone());
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                       "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}});
    leases
        .patch("leader", &PatchParams::apply("me"), &Patch::Apply(&lease))
        .await
        .unwrap();
    let held = leases.get("leader").await.unwrap();
    assert_eq!(held.spec.unwrap().holder_identity.as_deref(), Some("me"));

    let log = server.requests();
    let get = log
        .iter()
        .find(|r| r.method == "GET" && r.path == "/api/v1/namespaces/default/leases/leader");
    assert!(get.is_none(), "leases live in coordination.k8s.io");
    let get = log
        .iter()
        .find(|r| {
            r.method == "GET"
                && r.path == "/apis/coordination.k8s.io/v1/namespaces/default/leases/leader"
        })
        .unwrap();
    assert_eq!(get.status, 200);
    // kube-rs sends no User-Agent of its own; others are recorded
    let req = axum::http::Request::get("/healthz")
        .header("user-agent", "kubectl/v1.34.0")
        .body(vec![])
        .unwrap();
    client.request_text(req).await.unwrap();
    let health = server.requests().into_iter().last().unwrap();
    assert_eq!(
        (health.path.as_str(), health.user_agent.as_str()),
        ("/healthz", "kubectl/v1.34.0")
    );
    assert!(
        log.iter().any(
            |r| r.path == "/apis/events.k8s.io/v1/namespaces/default/events" && r.status == 201
        )
    );
}

#[tokio::test]
async fn metadata_watcher_and_bookmarks() {
    let (_server, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &cm("m", &[], &[("secret", "x")]))
        .await
        .unwrap();
    let meta_api: Api<PartialObjectMeta<ConfigMap>> = Api::default_namespaced(client.clone());
    let events: Vec<_> = watcher(meta_api, watcher::Config::default())
        .take(3)
        .try_collect()
        .await
        .unwrap();
    match &events[1] {
        watcher::Event::InitApply(m) => assert_eq!(m.name_any(), "m"),
        other => panic!("unexpected {other:?}"),
    }

    // a raw watch with bookmarks gets BOOKMARK events carrying the current resourceVersion
    let wp = kube::api::WatchParams::default().timeout(3);
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut stream = api.watch(&wp, &rv).await.unwrap().boxed();
    let first = tokio::time::timeout(Duration::from_secs(3), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match first {
        kube::api::WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

/// What the controller test's reconciler did, for assertions.
#[derive(Default)]
struct Ctx {
    client: Option<Client>,
    cleanups: std::sync::atomic::AtomicUsize,
}

async fn reconcile_cm(
    cm: std::sync::Arc<ConfigMap>,
    ctx: std::sync::Arc<Ctx>,
) -> Result<Action, kube::runtime::finalizer::Error<kube::Error>> {
    let client = ctx.client.clone().unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &cm.namespace().unwrap());
    kube::runtime::finalizer::finalizer(&api, "example.dev/cleanup", cm, |event| async {
        match event {
            kube::runtime::finalizer::Event::Apply(cm) => {
                let secrets: Api<Secret> = Api::namespaced(client, &cm.namespace().unwrap());
                let owner = cm.controller_owner_ref(&()).unwrap();
                let secret = json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": format!("{}-secret", cm.name_any()), "ownerReferences": [owner]},
                    "stringData": {"token": "s3cr3t"},
                });
                secrets
                    .patch(
                        &format!("{}-secret", cm.name_any()),
                        &PatchParams::apply("test-controller").force(),
                        &Patch::Apply(&secret),
                    )
                    .await?;
                Ok(Action::await_change())
            }
            kube::runtime::finalizer::Event::Cleanup(_) => {
                ctx.cleanups.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(Action::await_change())
            }
        }
    })
    .await
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_controller_with_finalizer_and_owned_objects() {
    let (_server, client) = setup().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let ctx = std::sync::Arc::new(Ctx {
        client: Some(client.clone()),
        ..Default::default()
    });
    let controller = Controller::new(cms.clone(), watcher::Config::default())
        .owns(secrets.clone(), watcher::Config::default())
        .run(
            reconcile_cm,
            |_, _, _| Action::requeue(Duration::from_millis(50)),
            ctx.clone(),
        )
        .for_each(|_| async {});
    let controller = tokio::spawn(controller);

    cms.create(&PostParams::default(), &cm("cfg", &[], &[]))
        .await
        .unwrap();
    eventually("the owned secret", || async {
        secrets.get_opt("cfg-secret").await.unwrap().is_some()
    })
    .await;
    let secret = secrets.get("cfg-secret").await.unwrap();
    // stringData is folded into data, as a real server does
    assert_eq!(secret.data.unwrap()["token"].0, b"s3cr3t");
    let with_finalizer = cms.get("cfg").await.unwrap();
    assert_eq!(with_finalizer.finalizers(), ["example.dev/cleanup"]);

    cms.delete("cfg", &DeleteParams::default()).await.unwrap();
    eventually("the finalizer to run and the configmap to go", || async {
        cms.get_opt("cfg").await.unwrap().is_none()
    })
    .await;
    assert_eq!(ctx.cleanups.load(std::sync::atomic::Ordering::SeqCst), 1);
    // the owned secret went with its owner
    assert!(secrets.get_opt("cfg-secret").await.unwrap().is_none());
    controller.abort();
}

/// Load check (run with `--ignored`): 10,000 custom resources and 10,000 pods, a watcher on
/// each, a forced re-list. Prints timings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test; run explicitly"]
async fn load_10k_custom_resources_and_pods() {
    let (server, client) = setup().await;
    let widgets = install_widgets(&client).await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let count_events = |stream: futures::stream::BoxStream<
        'static,
        Result<watcher::Event<DynamicObject>, watcher::Error>,
    >| {
        tokio::spawn(async move {
            stream
                .filter(|e| futures::future::ready(matches!(e, Ok(watcher::Event::Apply(_)))))
                .take(10_000)
                .count()
                .await
        })
    };
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("example.dev", "v1", "Widget"));
    let watched = count_events(watcher(widgets.clone(), watcher::Config::default()).boxed());
    let pod_watch = watcher(pods.clone(), watcher::Config::default().labels("load=yes"));
    let pod_count = tokio::spawn(
        pod_watch
            .filter(|e| futures::future::ready(matches!(e, Ok(watcher::Event::Apply(_)))))
            .take(10_000)
            .count(),
    );
    let started = std::time::Instant::now();
    futures::stream::iter(0..10_000)
        .map(|i| {
            let widgets = widgets.clone();
            let pods = pods.clone();
            let ar = ar.clone();
            async move {
                let mut w = DynamicObject::new(&format!("w-{i:05}"), &ar);
                w.data = json!({"spec": {"size": i}});
                widgets.create(&PostParams::default(), &w).await.unwrap();
                pods.create(
                    &PostParams::default(),
                    &pod(&format!("p-{i:05}"), &[("load", "yes")]),
                )
                .await
                .unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<()>()
        .await;
    let created = started.elapsed();
    let seen = tokio::time::timeout(Duration::from_secs(120), watched)
        .await
        .unwrap()
        .unwrap();
    let seen_pods = tokio::time::timeout(Duration::from_secs(120), pod_count)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((seen, seen_pods), (10_000, 10_000));
    let watched_all = started.elapsed();

    let t = std::time::Instant::now();
    let listed: Vec<_> = watcher(widgets.clone(), watcher::Config::default())
        .take_while(|e| futures::future::ready(!matches!(e, Ok(watcher::Event::InitDone))))
        .collect()
        .await;
    assert_eq!(listed.len(), 10_001);
    let relist = t.elapsed();
    let t = std::time::Instant::now();
    let selected = pods
        .list(
            &ListParams::default()
                .labels("load=yes")
                .fields("status.phase=Pending"),
        )
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 10_000);
    let select = t.elapsed();
    let log = server.requests();
    let posts: Vec<_> = log.iter().filter(|r| r.method == "POST").collect();
    let server_time: Duration = posts.iter().map(|r| r.elapsed).sum();
    eprintln!(
        "20k creates: {created:?} (server time per create: {:?}); all watch events: {watched_all:?}; \
         10k paginated re-list: {relist:?}; 10k selector list: {select:?}; requests: {}",
        server_time / posts.len() as u32,
        log.len()
    );
}

#[tokio::test]
async fn bad_input_is_a_status_not_a_panic() {
    let (_server, client) = setup().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &cm("x", &[], &[]))
        .await
        .unwrap();
    let cases: &[(&str, &str, &str, &str, u16)] = &[
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            "not json",
            400,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            "[1,2]",
            400,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            r#"{"metadata":"x"}"#,
            400,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            r#"{"metadata":{"name":"y","labels":{"a":1}}}"#,
            400,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            r#"{"kind":"Pod","metadata":{"name":"y"}}"#,
            400,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            r#"{"metadata":{}}"#,
            422,
        ),
        (
            "POST",
            "/api/v1/configmaps",
            "application/json",
            r#"{"metadata":{"name":"y"}}"#,
            405,
        ),
        (
            "PUT",
            "/api/v1/namespaces/default/configmaps/x",
            "application/json",
            r#"{"metadata":{"name":"other"}}"#,
            400,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/configmaps/x",
            "application/json-patch+json",
            r#"[{"op":"replace","path":"","value":5}]"#,
            400,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/configmaps/x",
            "application/json-patch+json",
            "{}",
            400,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/configmaps/x",
            "application/json-patch+json",
            r#"[{"op":"remove","path":"/nope/0"}]"#,
            422,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/configmaps/x",
            "application/merge-patch+json",
            "[1]",
            400,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/configmaps/x",
            "application/merge-patch+json",
            r#"{"metadata":{"finalizers":"f"}}"#,
            400,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/configmaps/x?fieldManager=m",
            "application/apply-patch+yaml",
            ": : :\n  - [",
            400,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/configmaps/x?fieldManager=m",
            "application/apply-patch+yaml",
            "data: {}",
            400,
        ),
        (
            "GET",
            "/api/v1/pods?labelSelector=%E2%9C%93%20in%20(",
            "",
            "",
            400,
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods?limit=abc",
            "",
            "",
            400,
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps?continue=zz",
            "",
            "",
            400,
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=abc",
            "",
            "",
            400,
        ),
        ("GET", "/api/v2/pods", "", "", 404),
        ("GET", "/apis/nope.dev/v1/things", "", "", 404),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps/x/status",
            "",
            "",
            404,
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps/x/y/z",
            "",
            "",
            404,
        ),
        (
            "DELETE",
            "/api/v1/namespaces/default/configmaps/x",
            "application/json",
            r#"{"gracePeriodSeconds":"x"}"#,
            400,
        ),
        (
            "DELETE",
            "/api/v1/namespaces/default/configmaps/x",
            "application/json",
            r#"{"propagationPolicy":"Sideways"}"#,
            400,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods/x/binding",
            "application/json",
            r#"{"target":{}}"#,
            404,
        ),
        (
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            "application/json",
            r#"{"metadata":{"name":"a.b.c"},"spec":{}}"#,
            422,
        ),
    ];
    for (method, path, ct, body, code) in cases {
        let mut req = axum::http::Request::builder().method(*method).uri(*path);
        if !ct.is_empty() {
            req = req.header("content-type", *ct);
        }
        let req = req.body(body.as_bytes().to_vec()).unwrap();
        let err = client.request::<Value>(req).await.unwrap_err();
        let err = status(err);
        assert_eq!(err.code, *code, "{method} {path} {body}: {}", err.message);
        assert!(!err.reason.is_empty());
    }
    // still serving, and nothing was changed
    let x = cms.get("x").await.unwrap();
    assert_eq!(x.metadata.generation, Some(1));
}
