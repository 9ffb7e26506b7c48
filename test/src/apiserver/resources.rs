//! The resource types the double serves: a fixed table of built-ins plus whatever CRDs are
//! installed. One [`ResourceType`] per (group, plural); all served versions of a CRD share one
//! storage (the real server with conversion strategy `None` only rewrites `apiVersion`).

use std::sync::Arc;

use serde_json::Value;

use super::errors::{ApiError, ApiResult, Cause};

/// Storage key of a resource type: `"{group}/{plural}"` (`"/pods"` for core).
pub(crate) type ResKey = Arc<str>;

pub(crate) fn res_key(group: &str, plural: &str) -> ResKey {
    Arc::from(format!("{group}/{plural}"))
}

/// The verbs every resource here supports.
pub(crate) const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Special behaviour of a few built-ins (create-time status reset, graceful deletion, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    Pod,
    Service,
    Secret,
    ConfigMap,
    Namespace,
    Node,
    Crd,
    Other,
    /// Not a built-in: a custom resource served from a CRD.
    Custom,
}

#[derive(Debug, Clone)]
pub(crate) struct VersionDef {
    pub name: String,
    /// Status subresource enabled for this version.
    pub status: bool,
    /// `openAPIV3Schema` of a CRD version (pruning, defaulting, type checks).
    pub schema: Option<Arc<Value>>,
    /// CRD `selectableFields` (JSON paths such as `.spec.color`), usable in field selectors.
    pub selectable_fields: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct ResourceType {
    pub key: ResKey,
    pub group: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    /// Served versions, in the order the definition lists them.
    pub versions: Vec<VersionDef>,
    pub builtin: Builtin,
}

impl ResourceType {
    pub fn version(&self, v: &str) -> Option<&VersionDef> {
        self.versions.iter().find(|d| d.name == v)
    }

    pub fn api_version(&self, v: &str) -> String {
        if self.group.is_empty() {
            v.to_string()
        } else {
            format!("{}/{v}", self.group)
        }
    }

    /// Field labels a field selector may use for this type (besides `metadata.name/namespace`).
    pub fn field_label_supported(&self, version: &str, label: &str) -> bool {
        if label == "metadata.name" || (label == "metadata.namespace" && self.namespaced) {
            return true;
        }
        match self.builtin {
            Builtin::Pod => matches!(
                label,
                "spec.nodeName"
                    | "spec.restartPolicy"
                    | "spec.schedulerName"
                    | "spec.serviceAccountName"
                    | "spec.hostNetwork"
                    | "status.phase"
                    | "status.podIP"
                    | "status.nominatedNodeName"
            ),
            Builtin::Secret => label == "type",
            Builtin::Namespace => label == "status.phase",
            Builtin::Node => label == "spec.unschedulable",
            Builtin::Other if self.plural == "events" => matches!(
                label,
                "involvedObject.kind"
                    | "involvedObject.namespace"
                    | "involvedObject.name"
                    | "involvedObject.uid"
                    | "involvedObject.apiVersion"
                    | "involvedObject.resourceVersion"
                    | "involvedObject.fieldPath"
                    | "reason"
                    | "reportingComponent"
                    | "source"
                    | "type"
                    | "regarding.kind"
                    | "regarding.namespace"
                    | "regarding.name"
                    | "regarding.uid"
                    | "reportingController"
            ),
            Builtin::Custom => self.version(version).is_some_and(|v| {
                v.selectable_fields
                    .iter()
                    .any(|f| f.trim_start_matches('.') == label)
            }),
            _ => false,
        }
    }
}

struct BuiltinSpec {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    short: &'static [&'static str],
    namespaced: bool,
    status: bool,
    builtin: Builtin,
}

const BUILTINS: &[BuiltinSpec] = &[
    BuiltinSpec {
        group: "",
        version: "v1",
        plural: "pods",
        kind: "Pod",
        short: &["po"],
        namespaced: true,
        status: true,
        builtin: Builtin::Pod,
    },
    BuiltinSpec {
        group: "",
        version: "v1",
        plural: "services",
        kind: "Service",
        short: &["svc"],
        namespaced: true,
        status: true,
        builtin: Builtin::Service,
    },
    BuiltinSpec {
        group: "",
        version: "v1",
        plural: "secrets",
        kind: "Secret",
        short: &[],
        namespaced: true,
        status: false,
        builtin: Builtin::Secret,
    },
    BuiltinSpec {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        short: &["cm"],
        namespaced: true,
        status: false,
        builtin: Builtin::ConfigMap,
    },
    BuiltinSpec {
        group: "",
        version: "v1",
        plural: "nodes",
        kind: "Node",
        short: &["no"],
        namespaced: false,
        status: true,
        builtin: Builtin::Node,
    },
    BuiltinSpec {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        short: &["ns"],
        namespaced: false,
        status: true,
        builtin: Builtin::Namespace,
    },
    BuiltinSpec {
        group: "",
        version: "v1",
        plural: "events",
        kind: "Event",
        short: &["ev"],
        namespaced: true,
        status: false,
        builtin: Builtin::Other,
    },
    BuiltinSpec {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        kind: "ServiceAccount",
        short: &["sa"],
        namespaced: true,
        status: false,
        builtin: Builtin::Other,
    },
    BuiltinSpec {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        short: &["ev"],
        namespaced: true,
        status: false,
        builtin: Builtin::Other,
    },
    BuiltinSpec {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        short: &[],
        namespaced: true,
        status: false,
        builtin: Builtin::Other,
    },
    BuiltinSpec {
        group: "apiextensions.k8s.io",
        version: "v1",
        plural: "customresourcedefinitions",
        kind: "CustomResourceDefinition",
        short: &["crd", "crds"],
        namespaced: false,
        status: true,
        builtin: Builtin::Crd,
    },
];

pub(crate) fn builtin_types() -> Vec<ResourceType> {
    BUILTINS
        .iter()
        .map(|b| ResourceType {
            key: res_key(b.group, b.plural),
            group: b.group.to_string(),
            plural: b.plural.to_string(),
            singular: b.kind.to_lowercase(),
            kind: b.kind.to_string(),
            list_kind: format!("{}List", b.kind),
            short_names: b.short.iter().map(|s| s.to_string()).collect(),
            categories: if matches!(b.builtin, Builtin::Pod | Builtin::Service) {
                vec!["all".to_string()]
            } else {
                Vec::new()
            },
            namespaced: b.namespaced,
            versions: vec![VersionDef {
                name: b.version.to_string(),
                status: b.status,
                schema: None,
                selectable_fields: Vec::new(),
            }],
            builtin: b.builtin,
        })
        .collect()
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn invalid_crd(name: &str, field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(
        "CustomResourceDefinition",
        "apiextensions.k8s.io",
        name,
        vec![Cause {
            reason: "FieldValueInvalid",
            message: message.into(),
            field: field.to_string(),
        }],
    )
}

/// Reads a CRD object into the resource type it defines (validating the parts the double needs).
pub(crate) fn crd_to_type(crd: &Value) -> ApiResult<ResourceType> {
    let name = str_at(crd, &["metadata", "name"]).unwrap_or_default();
    let spec = crd
        .get("spec")
        .filter(|s| s.is_object())
        .ok_or_else(|| invalid_crd(name, "spec", "Required value"))?;
    let group = str_at(spec, &["group"])
        .filter(|g| !g.is_empty())
        .ok_or_else(|| invalid_crd(name, "spec.group", "Required value"))?;
    if !group.contains('.') {
        return Err(invalid_crd(
            name,
            "spec.group",
            format!("Invalid value: \"{group}\": should be a domain with at least one dot"),
        ));
    }
    let plural = str_at(spec, &["names", "plural"])
        .filter(|p| !p.is_empty())
        .ok_or_else(|| invalid_crd(name, "spec.names.plural", "Required value"))?;
    let kind = str_at(spec, &["names", "kind"])
        .filter(|p| !p.is_empty())
        .ok_or_else(|| invalid_crd(name, "spec.names.kind", "Required value"))?;
    if name != format!("{plural}.{group}") {
        return Err(invalid_crd(
            name,
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let singular = str_at(spec, &["names", "singular"])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let list_kind = str_at(spec, &["names", "listKind"])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{kind}List"));
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let names = spec.get("names");
    let short_names = strings(names.and_then(|n| n.get("shortNames")));
    let categories = strings(names.and_then(|n| n.get("categories")));
    let namespaced = match str_at(spec, &["scope"]) {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => {
            return Err(invalid_crd(
                name,
                "spec.scope",
                format!(
                    "Unsupported value: \"{}\": supported values: \"Cluster\", \"Namespaced\"",
                    other.unwrap_or_default()
                ),
            ));
        }
    };
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid_crd(name, "spec.versions", "Required value"))?;
    let mut storage = 0;
    let mut served = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let vname = v
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                invalid_crd(name, &format!("spec.versions[{i}].name"), "Required value")
            })?;
        if v.get("storage").and_then(Value::as_bool) == Some(true) {
            storage += 1;
        }
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let schema = v
            .get("schema")
            .and_then(|s| s.get("openAPIV3Schema"))
            .cloned()
            .map(Arc::new);
        let status = v
            .get("subresources")
            .and_then(|s| s.get("status"))
            .is_some_and(|s| !s.is_null());
        let selectable_fields = v
            .get("selectableFields")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|f| {
                        f.get("jsonPath")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        served.push(VersionDef {
            name: vname.to_string(),
            status,
            schema,
            selectable_fields,
        });
    }
    if storage != 1 {
        return Err(invalid_crd(
            name,
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version",
        ));
    }
    Ok(ResourceType {
        key: res_key(group, plural),
        group: group.to_string(),
        plural: plural.to_string(),
        singular,
        kind: kind.to_string(),
        list_kind,
        short_names,
        categories,
        namespaced,
        versions: served,
        builtin: Builtin::Custom,
    })
}

/// Kubernetes version priority (`v1` > `v1beta2` > `v1beta1` > `v1alpha1` > other, by name):
/// it decides the preferred version of a group in discovery.
pub(crate) fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn parse(v: &str) -> Option<(u64, u8, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        let major: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((major, 2, 0));
        }
        let (level, num) = if let Some(n) = tail.strip_prefix("beta") {
            (1, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (0, n)
        } else {
            return None;
        };
        Some((major, level, num.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some((ma, la, na)), Some((mb, lb, nb))) => {
            // higher is better, so compare b to a
            (lb, mb, nb).cmp(&(la, ma, na))
        }
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}
