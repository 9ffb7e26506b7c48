//! Writes: admission (the type-specific rules of the real registries and the CRD handler),
//! create, update, patch and pod binding.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::super::errors::{ApiError, ApiResult, Cause};
use super::super::meta::{self, NameRule};
use super::super::patch::Patch;
use super::super::resources::{Builtin, ResourceType, crd_to_type, res_key};
use super::super::schema::{apply_schema, normalise_numbers, prune_metadata};
use super::{Store, Sub, UpdateMode, WriteOpts, ns_key, render_version};

fn meta_mut(obj: &mut Value) -> ApiResult<&mut Map<String, Value>> {
    let map = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the body of the request must be a JSON object"))?;
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if meta.is_null() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().ok_or_else(|| {
        ApiError::bad_request(
            "json: cannot unmarshal into Go struct field of type v1.ObjectMeta: metadata must be an object",
        )
    })
}

/// Everything but `metadata` and `status` (and the type meta): what `generation` tracks.
fn spec_equal(a: &Value, b: &Value) -> bool {
    let skip = |k: &str| matches!(k, "metadata" | "status" | "apiVersion" | "kind");
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => {
            let a_keys = a.keys().filter(|k| !skip(k)).count();
            let b_keys = b.keys().filter(|k| !skip(k)).count();
            a_keys == b_keys
                && a.iter()
                    .filter(|(k, _)| !skip(k))
                    .all(|(k, v)| b.get(k) == Some(v))
        }
        _ => a == b,
    }
}

fn condition(ty: &str, reason: &str, message: &str, since: Option<&Value>) -> Value {
    let ltt = since
        .and_then(|c| c.as_array())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
        })
        .and_then(|c| c.get("lastTransitionTime"))
        .cloned()
        .unwrap_or_else(|| Value::String(meta::now()));
    json!({"type": ty, "status": "True", "reason": reason, "message": message, "lastTransitionTime": ltt})
}

impl Store {
    // ---------------------------------------------------------------- admission

    /// Type checks `apiVersion`/`kind` of a body, filling them in when absent.
    fn check_type_meta(rt: &ResourceType, version: &str, obj: &mut Value) -> ApiResult<()> {
        let map = obj.as_object_mut().ok_or_else(|| {
            ApiError::bad_request("the body of the request must be a JSON object")
        })?;
        let api_version = rt.api_version(version);
        match map.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => {
                map.insert("apiVersion".into(), api_version.into());
            }
            Some(v) if v == api_version => {}
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )));
            }
        }
        match map.get("kind").and_then(Value::as_str) {
            None | Some("") => {
                map.insert("kind".into(), rt.kind.clone().into());
            }
            Some(k) if k == rt.kind => {}
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    rt.kind
                )));
            }
        }
        Ok(())
    }

    /// Type-specific rules applied on every write (what the real registries' strategies and
    /// the CRD handler do).
    fn admit(
        &self,
        rt: &ResourceType,
        version: &str,
        name: &str,
        obj: &mut Value,
        old: Option<&Value>,
        opts: WriteOpts,
    ) -> ApiResult<()> {
        match rt.builtin {
            Builtin::Pod if old.is_none() => {
                obj["status"] = json!({"phase": "Pending"});
            }
            Builtin::Pod => {
                if let Some(old) = old {
                    check_pod_spec_update(name, old, obj)?;
                }
            }
            Builtin::Service if old.is_none() => {
                obj["status"] = json!({"loadBalancer": {}});
            }
            Builtin::Namespace if old.is_none() => {
                obj["status"] = json!({"phase": "Active"});
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
                if let Ok(meta) = meta_mut(obj) {
                    let labels = meta
                        .entry("labels")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Some(l) = labels.as_object_mut() {
                        l.insert("kubernetes.io/metadata.name".into(), name.into());
                    }
                }
            }
            Builtin::Secret => encode_string_data(obj)?,
            Builtin::ConfigMap => check_config_map_size(&rt.kind, name, obj)?,
            Builtin::Crd => {
                let def = crd_to_type(obj)?;
                if let Some(existing) = self.types.get(&def.key)
                    && existing.builtin != Builtin::Custom
                {
                    return Err(ApiError::invalid(
                        "CustomResourceDefinition",
                        "apiextensions.k8s.io",
                        name,
                        vec![Cause {
                            reason: "FieldValueInvalid",
                            message: "Invalid value: resource is served by the API server itself"
                                .into(),
                            field: "spec.names.plural".into(),
                        }],
                    ));
                }
                obj["status"] = crd_status(obj, &def, old);
            }
            Builtin::Custom => {
                normalise_numbers(obj);
                if let Some(schema) = rt.version(version).and_then(|v| v.schema.clone()) {
                    let report = apply_schema(obj, &schema);
                    if opts.strict && !report.pruned.is_empty() {
                        let fields = report
                            .pruned
                            .iter()
                            .map(|p| format!("unknown field \"{p}\""))
                            .collect::<Vec<_>>()
                            .join(", ");
                        return Err(ApiError::bad_request(format!(
                            "{}.{} \"{name}\" is invalid: strict decoding error: {fields}",
                            rt.kind, rt.group
                        )));
                    }
                    if !report.errors.is_empty() {
                        return Err(ApiError::invalid(&rt.kind, &rt.group, name, report.errors));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn namespace_usable(&self, ns: &str) -> ApiResult<()> {
        match self.lookup(&ns_key(), &(String::new(), ns.to_string())) {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => {
                Err(ApiError::forbidden(format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                )))
            }
            Some(_) => Ok(()),
        }
    }

    // ---------------------------------------------------------------- create

    pub fn create(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: Option<&str>,
        mut obj: Value,
        opts: WriteOpts,
    ) -> ApiResult<Arc<Value>> {
        Self::check_type_meta(rt, version, &mut obj)?;
        let meta = meta_mut(&mut obj)?;
        prune_metadata(meta);
        meta::check_metadata(meta).map_err(ApiError::bad_request)?;
        let name = match meta
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            Some(n) => n.to_string(),
            None => match meta
                .get("generateName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                Some(prefix) => {
                    let prefix = prefix.to_string();
                    let mut tries = 0;
                    loop {
                        let candidate = format!("{prefix}{}", meta::random_suffix(5));
                        let key = Self::obj_key(rt, ns, &candidate);
                        tries += 1;
                        if self.lookup(&rt.key, &key).is_none() || tries > 8 {
                            break candidate;
                        }
                    }
                }
                None => {
                    return Err(ApiError::invalid(
                        &rt.kind,
                        &rt.group,
                        "",
                        vec![Cause {
                            reason: "FieldValueRequired",
                            message: "Required value: name or generateName is required".into(),
                            field: "metadata.name".into(),
                        }],
                    ));
                }
            },
        };
        let rule = match rt.builtin {
            Builtin::Namespace => NameRule::Label,
            Builtin::Service => NameRule::Label1035,
            _ => NameRule::Subdomain,
        };
        if let Some(cause) = meta::validate_name(&name, rule) {
            return Err(ApiError::invalid(&rt.kind, &rt.group, &name, vec![cause]));
        }
        let meta = meta_mut(&mut obj)?;
        meta.insert("name".into(), name.clone().into());
        if rt.namespaced {
            let ns = ns.ok_or_else(ApiError::method_not_allowed)?;
            match meta.get("namespace").and_then(Value::as_str) {
                Some(b) if !b.is_empty() && b != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {}
            }
            meta.insert("namespace".into(), ns.into());
        } else {
            meta.remove("namespace");
        }
        for f in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
            "resourceVersion",
        ] {
            meta.remove(f);
        }
        meta.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
        meta.insert("creationTimestamp".into(), meta::now().into());
        meta.insert("generation".into(), 1.into());
        if rt.namespaced {
            self.namespace_usable(ns.unwrap_or_default())?;
        }
        let key = Self::obj_key(rt, ns, &name);
        if self.lookup(&rt.key, &key).is_some() {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
        }
        if rt.version(version).is_some_and(|v| v.status)
            && rt.builtin == Builtin::Custom
            && let Some(map) = obj.as_object_mut()
        {
            map.remove("status");
        }
        self.admit(rt, version, &name, &mut obj, None, opts)?;
        if opts.dry_run {
            return Ok(Arc::new(obj));
        }
        let stored = self.commit_put(&rt.key, key.clone(), obj, None);
        if rt.builtin == Builtin::Crd
            && let Ok(def) = crd_to_type(&stored)
        {
            self.types.insert(def.key.clone(), Arc::new(def));
        }
        // An object whose owners are all gone is garbage, as the real GC would decide shortly.
        let (alive, dangling) = self.split_owners(&stored);
        if alive.is_empty() && !dangling.is_empty() {
            self.delete_object(&rt.key, &key, None);
            self.run_gc();
        }
        Ok(stored)
    }

    // ---------------------------------------------------------------- update & patch

    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: Option<&str>,
        name: &str,
        body: Value,
        sub: Sub,
        opts: WriteOpts,
    ) -> ApiResult<Arc<Value>> {
        self.update_inner(rt, version, ns, name, body, sub, opts, UpdateMode::Put)
    }

    /// PATCH; the bool is true when an apply patch created the object (201).
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: Option<&str>,
        name: &str,
        patch: &Patch,
        sub: Sub,
        opts: WriteOpts,
    ) -> ApiResult<(Arc<Value>, bool)> {
        let old = match self.get(rt, ns, name) {
            Ok(old) => old,
            Err(e) => {
                if let (Patch::Apply(body), Sub::Main) = (patch, sub) {
                    // Server-side apply creates what does not exist.
                    let mut body = body.clone();
                    let meta = meta_mut(&mut body)?;
                    match meta.get("name").and_then(Value::as_str) {
                        Some(n) if n != name => {
                            return Err(ApiError::bad_request(format!(
                                "the name of the object ({n}) does not match the name on the URL ({name})"
                            )));
                        }
                        _ => {
                            meta.insert("name".into(), name.into());
                        }
                    }
                    return self.create(rt, version, ns, body, opts).map(|o| (o, true));
                }
                return Err(e);
            }
        };
        let current = render_version(&old, rt, version);
        let patched = patch.apply_to(&current)?;
        self.update_inner(rt, version, ns, name, patched, sub, opts, UpdateMode::Patch)
            .map(|o| (o, false))
    }

    #[allow(clippy::too_many_arguments)]
    fn update_inner(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: Option<&str>,
        name: &str,
        mut new: Value,
        sub: Sub,
        opts: WriteOpts,
        mode: UpdateMode,
    ) -> ApiResult<Arc<Value>> {
        let key = Self::obj_key(rt, ns, name);
        let old = self
            .lookup(&rt.key, &key)
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        Self::check_type_meta(rt, version, &mut new)?;
        let meta = meta_mut(&mut new)?;
        match meta.get("name").and_then(Value::as_str) {
            Some(n) if n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => {}
        }
        if rt.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(b) if !b.is_empty() && Some(b) != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {}
            }
        }
        let old_rv = meta::str_field(&old, "/metadata/resourceVersion").unwrap_or_default();
        match meta.get("resourceVersion").and_then(Value::as_str) {
            Some(rv) if !rv.is_empty() && rv != old_rv => {
                return Err(ApiError::stale(&rt.group, &rt.plural, name));
            }
            Some(rv) if !rv.is_empty() => {}
            _ if mode == UpdateMode::Put && rt.builtin == Builtin::Custom => {
                return Err(ApiError::invalid(
                    &rt.kind,
                    &rt.group,
                    name,
                    vec![Cause {
                        reason: "FieldValueInvalid",
                        message: "Invalid value: 0x0: must be specified for an update".into(),
                        field: "metadata.resourceVersion".into(),
                    }],
                ));
            }
            _ => {}
        }
        let status_sub = rt.version(version).is_some_and(|v| v.status);
        if sub == Sub::Status {
            // /status writes only status: everything else comes from the stored object.
            let status = new.as_object_mut().and_then(|m| m.remove("status"));
            new = render_version(&old, rt, version);
            if let Some(map) = new.as_object_mut() {
                match status {
                    Some(s) => map.insert("status".into(), s),
                    None => map.remove("status"),
                };
            }
        } else if status_sub && let Some(map) = new.as_object_mut() {
            // ... and the main resource never writes status.
            match old.get("status") {
                Some(s) => map.insert("status".into(), s.clone()),
                None => map.remove("status"),
            };
        }
        let meta = meta_mut(&mut new)?;
        prune_metadata(meta);
        meta::check_metadata(meta).map_err(ApiError::bad_request)?;
        meta.insert("name".into(), name.into());
        if rt.namespaced {
            meta.insert("namespace".into(), ns.unwrap_or_default().into());
        } else {
            meta.remove("namespace");
        }
        meta.remove("managedFields");
        meta.remove("selfLink");
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
        ] {
            match old.pointer(&format!("/metadata/{f}")) {
                Some(v) => meta.insert(f.into(), v.clone()),
                None => meta.remove(f),
            };
        }
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            let old_f: Vec<&Value> = old
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            if let Some(Value::Array(new_f)) = meta.get("finalizers")
                && new_f.iter().any(|f| !old_f.contains(&f))
            {
                return Err(ApiError::invalid(
                    &rt.kind,
                    &rt.group,
                    name,
                    vec![Cause {
                        reason: "FieldValueForbidden",
                        message: "Forbidden: no new finalizers can be added if the object is being deleted".into(),
                        field: "metadata.finalizers".into(),
                    }],
                ));
            }
        }
        self.admit(rt, version, name, &mut new, Some(&old), opts)?;
        if !spec_equal(&old, &new) {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            if let Ok(meta) = meta_mut(&mut new) {
                meta.insert("generation".into(), generation.into());
            }
        }
        // Stored objects keep the apiVersion of the version they were written through; compare
        // in the same terms so that a no-op write stays a no-op.
        if let Some(av) = old.get("apiVersion") {
            new["apiVersion"] = av.clone();
        }
        if new == *old {
            // No change: no new resourceVersion, no watch event (the real server skips the write).
            return Ok(old);
        }
        if opts.dry_run {
            return Ok(Arc::new(new));
        }
        if self.should_remove(rt, &new) {
            let last = self.remove(&rt.key, &key, Some(new));
            self.run_gc();
            return last.ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name));
        }
        let stored = self.commit_put(&rt.key, key, new, Some(old));
        if rt.builtin == Builtin::Crd
            && let Ok(def) = crd_to_type(&stored)
        {
            self.types.insert(def.key.clone(), Arc::new(def));
        }
        Ok(stored)
    }

    /// A deleting object goes once its finalizers are gone and no grace period is pending
    /// (a namespace: also once it is empty).
    fn should_remove(&self, rt: &ResourceType, obj: &Value) -> bool {
        obj.pointer("/metadata/deletionTimestamp").is_some()
            && meta::finalizers(obj) == 0
            && obj
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                == 0
            && (rt.builtin != Builtin::Namespace
                || self.namespace_empty(meta::str_field(obj, "/metadata/name").unwrap_or_default()))
    }

    // ---------------------------------------------------------------- binding

    pub fn bind(&mut self, ns: &str, name: &str, binding: &Value) -> ApiResult<()> {
        let pods = res_key("", "pods");
        let key = (ns.to_string(), name.to_string());
        let old = self
            .lookup(&pods, &key)
            .ok_or_else(|| ApiError::not_found("", "pods", name))?;
        if let Some(b) = meta::str_field(binding, "/metadata/name")
            && b != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({b}) does not match the name on the URL ({name})"
            )));
        }
        let target_kind = meta::str_field(binding, "/target/kind").unwrap_or("Node");
        if !target_kind.is_empty() && target_kind != "Node" {
            return Err(ApiError::invalid(
                "Binding",
                "",
                name,
                vec![Cause {
                    reason: "FieldValueNotSupported",
                    message: format!(
                        "Unsupported value: \"{target_kind}\": supported values: \"Node\""
                    ),
                    field: "target.kind".into(),
                }],
            ));
        }
        let node = meta::str_field(binding, "/target/name")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::invalid(
                    "Binding",
                    "",
                    name,
                    vec![Cause {
                        reason: "FieldValueRequired",
                        message: "Required value".into(),
                        field: "target.name".into(),
                    }],
                )
            })?;
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::conflict(
                "",
                "pods/binding",
                name,
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        if let Some(current) = meta::str_field(&old, "/spec/nodeName").filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict(
                "",
                "pods/binding",
                name,
                &format!("pod {name} is already assigned to node \"{current}\""),
            ));
        }
        let mut new = (*old).clone();
        if !new.get("spec").is_some_and(Value::is_object) {
            new["spec"] = json!({});
        }
        new["spec"]["nodeName"] = node.into();
        if let Some(Value::Object(annotations)) = binding.pointer("/metadata/annotations")
            && let Ok(meta) = meta_mut(&mut new)
        {
            let target = meta
                .entry("annotations")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(t) = target.as_object_mut() {
                t.extend(annotations.clone());
            }
        }
        if !new.get("status").is_some_and(Value::is_object) {
            new["status"] = json!({});
        }
        let scheduled = json!({
            "type": "PodScheduled",
            "status": "True",
            "lastProbeTime": null,
            "lastTransitionTime": meta::now(),
        });
        match new["status"]
            .get_mut("conditions")
            .and_then(Value::as_array_mut)
        {
            Some(conds) => {
                conds.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
                conds.push(scheduled);
            }
            None => new["status"]["conditions"] = json!([scheduled]),
        }
        self.commit_put(&pods, key, new, Some(old));
        Ok(())
    }
}

fn crd_status(crd: &Value, def: &ResourceType, old: Option<&Value>) -> Value {
    let old_conditions = old.and_then(|o| o.pointer("/status/conditions"));
    let storage = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        })
        .and_then(|v| v.get("name"))
        .cloned()
        .unwrap_or(Value::Null);
    let mut stored: Vec<Value> = old
        .and_then(|o| o.pointer("/status/storedVersions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !stored.contains(&storage) {
        stored.push(storage);
    }
    let mut accepted = json!({
        "plural": def.plural,
        "singular": def.singular,
        "kind": def.kind,
        "listKind": def.list_kind,
    });
    if !def.short_names.is_empty() {
        accepted["shortNames"] = json!(def.short_names);
    }
    if !def.categories.is_empty() {
        accepted["categories"] = json!(def.categories);
    }
    json!({
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found", old_conditions),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted", old_conditions),
        ],
        "acceptedNames": accepted,
        "storedVersions": stored,
    })
}

/// Secrets: `stringData` is write-only and merged into `data` (base64), as the real server does.
fn encode_string_data(obj: &mut Value) -> ApiResult<()> {
    let Some(map) = obj.as_object_mut() else {
        return Ok(());
    };
    if let Some(sd) = map.remove("stringData") {
        let sd = match sd {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            _ => return Err(ApiError::bad_request("stringData must be a map of strings")),
        };
        let data = map
            .entry("data")
            .or_insert_with(|| Value::Object(Map::new()));
        if data.is_null() {
            *data = Value::Object(Map::new());
        }
        let data = data
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("data must be a map of base64 strings"))?;
        for (k, v) in sd {
            let s = v
                .as_str()
                .ok_or_else(|| ApiError::bad_request("stringData must be a map of strings"))?;
            data.insert(
                k,
                base64::engine::general_purpose::STANDARD.encode(s).into(),
            );
        }
    }
    if map.get("type").is_none_or(Value::is_null) {
        map.insert("type".into(), "Opaque".into());
    }
    Ok(())
}

/// The real server's limit on a ConfigMap: its `data` values and decoded `binaryData` values
/// together at most 1 MiB (`ValidateConfigMap`), else 422.
fn check_config_map_size(kind: &str, name: &str, obj: &Value) -> ApiResult<()> {
    const MAX: usize = 1024 * 1024;
    let strings = |key: &str| -> Vec<String> {
        obj[key]
            .as_object()
            .map(|m| {
                m.values()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let data: usize = strings("data").iter().map(String::len).sum();
    let mut binary = 0;
    for value in strings("binaryData") {
        binary += base64::engine::general_purpose::STANDARD
            .decode(&value)
            .map_err(|e| ApiError::bad_request(format!("binaryData is not base64: {e}")))?
            .len();
    }
    if data + binary > MAX {
        let cause = Cause {
            reason: "FieldValueTooLong",
            message: format!("Too long: may not be more than {MAX} bytes"),
            field: "[]".into(),
        };
        return Err(ApiError::invalid(kind, "", name, vec![cause]));
    }
    Ok(())
}

/// Pod spec is immutable apart from a few fields (the real validation's rule).
fn check_pod_spec_update(name: &str, old: &Value, new: &Value) -> ApiResult<()> {
    fn normalize(spec: Option<&Value>) -> Value {
        let mut s = spec.cloned().unwrap_or(Value::Null);
        if let Some(map) = s.as_object_mut() {
            for f in ["activeDeadlineSeconds", "tolerations", "schedulingGates"] {
                map.remove(f);
            }
            for list in ["containers", "initContainers", "ephemeralContainers"] {
                if let Some(cs) = map.get_mut(list).and_then(Value::as_array_mut) {
                    for c in cs {
                        if let Some(c) = c.as_object_mut() {
                            c.remove("image");
                        }
                    }
                }
            }
        }
        s
    }
    if old.get("spec") == new.get("spec")
        || normalize(old.get("spec")) == normalize(new.get("spec"))
    {
        return Ok(());
    }
    Err(ApiError::invalid(
        "Pod",
        "",
        name,
        vec![Cause {
            reason: "FieldValueForbidden",
            message: "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,\
                      `spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` \
                      (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` \
                      (allow it to be set to 1 if it was previously negative)"
                .into(),
            field: "spec".into(),
        }],
    ))
}
