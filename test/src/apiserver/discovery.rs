//! Discovery documents, generated from the same resource table the request router uses, so a
//! CRD is discoverable the moment it is served. Both the classic documents (`/api`, `/apis`,
//! `/api/v1`, `/apis/{group}/{version}`) and aggregated discovery v2 (when the `Accept` header
//! asks for `as=APIGroupDiscoveryList`) are served.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::resources::{Builtin, ResourceType, VERBS, version_order};

pub(crate) const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

pub(crate) fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "34",
        "gitVersion": "v1.34.0-provenant-double",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub(crate) fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// group -> its served versions, preferred first.
fn groups(types: &[Arc<ResourceType>]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in types.iter().filter(|t| !t.group.is_empty()) {
        let versions = out.entry(t.group.clone()).or_default();
        for v in &t.versions {
            if !versions.contains(&v.name) {
                versions.push(v.name.clone());
            }
        }
    }
    for versions in out.values_mut() {
        versions.sort_by(|a, b| version_order(a, b));
    }
    out
}

fn api_group(name: &str, versions: &[String]) -> Value {
    let gv = |v: &String| json!({"groupVersion": format!("{name}/{v}"), "version": v});
    json!({
        "name": name,
        "versions": versions.iter().map(gv).collect::<Vec<_>>(),
        "preferredVersion": versions.first().map(gv).unwrap_or(Value::Null),
    })
}

pub(crate) fn api_group_list(types: &[Arc<ResourceType>]) -> Value {
    let groups = groups(types)
        .iter()
        .map(|(name, versions)| api_group(name, versions))
        .collect::<Vec<_>>();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub(crate) fn api_group_doc(types: &[Arc<ResourceType>], group: &str) -> Option<Value> {
    let groups = groups(types);
    let versions = groups.get(group)?;
    let mut doc = api_group(group, versions);
    doc["kind"] = "APIGroup".into();
    doc["apiVersion"] = "v1".into();
    Some(doc)
}

fn in_group_version<'a>(
    types: &'a [Arc<ResourceType>],
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'a Arc<ResourceType>> {
    let mut matching: Vec<&Arc<ResourceType>> = types
        .iter()
        .filter(|t| t.group == group && t.version(version).is_some())
        .collect();
    matching.sort_by(|a, b| a.plural.cmp(&b.plural));
    matching.into_iter()
}

/// `(subresource, kind, verbs)` of a type at a version.
fn subresources(
    t: &ResourceType,
    version: &str,
) -> Vec<(&'static str, String, &'static [&'static str])> {
    let mut out = Vec::new();
    if t.version(version).is_some_and(|v| v.status) {
        out.push(("status", t.kind.clone(), &["get", "patch", "update"][..]));
    }
    if t.builtin == Builtin::Pod {
        out.push(("binding", "Binding".to_string(), &["create"][..]));
    }
    out
}

/// `APIResourceList` for `/api/v1` or `/apis/{group}/{version}`; `None` if nothing is served there.
pub(crate) fn api_resource_list(
    types: &[Arc<ResourceType>],
    group: &str,
    version: &str,
) -> Option<Value> {
    let mut resources = Vec::new();
    for t in in_group_version(types, group, version) {
        let mut r = json!({
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": VERBS,
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        for (sub, kind, verbs) in subresources(t, version) {
            resources.push(json!({
                "name": format!("{}/{sub}", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": kind,
                "verbs": verbs,
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

fn aggregated_version(types: &[Arc<ResourceType>], group: &str, version: &str) -> Value {
    let resources = in_group_version(types, group, version)
        .map(|t| {
            let gvk = |kind: &str| json!({"group": group, "version": version, "kind": kind});
            let mut r = json!({
                "resource": t.plural,
                "responseKind": gvk(&t.kind),
                "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": t.singular,
                "verbs": VERBS,
            });
            if !t.short_names.is_empty() {
                r["shortNames"] = json!(t.short_names);
            }
            if !t.categories.is_empty() {
                r["categories"] = json!(t.categories);
            }
            let subs = subresources(t, version)
                .into_iter()
                .map(|(sub, kind, verbs)| {
                    json!({"subresource": sub, "responseKind": gvk(&kind), "verbs": verbs})
                })
                .collect::<Vec<_>>();
            if !subs.is_empty() {
                r["subresources"] = subs.into();
            }
            r
        })
        .collect::<Vec<_>>();
    json!({"version": version, "resources": resources, "freshness": "Current"})
}

/// Aggregated discovery (`APIGroupDiscoveryList`) for `/api` (`core = true`) or `/apis`.
pub(crate) fn aggregated(types: &[Arc<ResourceType>], core: bool) -> Value {
    let items = if core {
        vec![json!({"metadata": {}, "versions": [aggregated_version(types, "", "v1")]})]
    } else {
        groups(types)
            .iter()
            .map(|(name, versions)| {
                json!({
                    "metadata": {"name": name},
                    "versions": versions.iter().map(|v| aggregated_version(types, name, v)).collect::<Vec<_>>(),
                })
            })
            .collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}
