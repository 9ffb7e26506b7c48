//! Deletion: finalizers, pod grace periods, namespaces, propagation policies and the garbage
//! collector that follows `ownerReferences`.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};

use super::super::errors::{ApiError, ApiResult};
use super::super::meta;
use super::super::resources::{Builtin, ResKey, ResourceType};
use super::super::selectors::Selectors;
use super::{DeleteOpts, ListPage, ObjKey, Propagation, Store, ns_key};

impl Store {
    // ---------------------------------------------------------------- delete

    /// DELETE of one object: its last state, and whether it is gone (false: deletion pending on
    /// finalizers or a grace period).
    pub fn delete(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOpts,
    ) -> ApiResult<(Arc<Value>, bool)> {
        let key = Self::obj_key(rt, ns, name);
        let old = self
            .lookup(&rt.key, &key)
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        if let Some(uid) = &opts.precondition_uid {
            let actual = meta::str_field(&old, "/metadata/uid").unwrap_or_default();
            if uid != actual {
                return Err(ApiError::conflict(
                    &rt.group,
                    &rt.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    ),
                ));
            }
        }
        if let Some(rv) = &opts.precondition_rv {
            let actual = meta::str_field(&old, "/metadata/resourceVersion").unwrap_or_default();
            if rv != actual {
                return Err(ApiError::conflict(
                    &rt.group,
                    &rt.plural,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                    ),
                ));
            }
        }
        if opts.dry_run {
            return Ok((old, false));
        }
        if opts.propagation == Propagation::Orphan
            && let Some(uid) = meta::str_field(&old, "/metadata/uid")
        {
            self.orphan_dependents(uid);
        }
        let result = self.delete_object(&rt.key, &key, opts.grace);
        self.run_gc();
        let gone = self.lookup(&rt.key, &key).is_none();
        Ok((result.unwrap_or(old), gone))
    }

    /// DELETE on a collection: deletes every matching object; returns what was deleted (or is
    /// now deleting).
    pub fn delete_collection(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        sel: &Selectors,
        opts: &DeleteOpts,
    ) -> ApiResult<ListPage> {
        let page = self.list(rt, ns, sel, None, None)?;
        let mut items = Vec::with_capacity(page.items.len());
        for obj in page.items {
            let name = meta::str_field(&obj, "/metadata/name")
                .unwrap_or_default()
                .to_string();
            let obj_ns = meta::str_field(&obj, "/metadata/namespace").map(str::to_string);
            match self.delete(rt, obj_ns.as_deref(), &name, opts) {
                Ok((o, _)) => items.push(o),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ListPage {
            items,
            rv: self.rv,
            continue_token: None,
        })
    }

    /// The deletion machinery shared by DELETE, the garbage collector and namespace cleanup:
    /// finalizers and pod grace periods make it a MODIFIED (deletionTimestamp set), otherwise
    /// the object is removed.
    pub(super) fn delete_object(
        &mut self,
        res: &ResKey,
        key: &ObjKey,
        grace: Option<i64>,
    ) -> Option<Arc<Value>> {
        let old = self.lookup(res, key)?;
        let rt = self.types.get(res).cloned()?;
        if rt.builtin == Builtin::Namespace {
            return self.delete_namespace(key);
        }
        let graceful_pod = rt.builtin == Builtin::Pod
            && meta::str_field(&old, "/spec/nodeName").is_some_and(|n| !n.is_empty())
            && !matches!(
                meta::str_field(&old, "/status/phase"),
                Some("Succeeded" | "Failed")
            );
        let grace = if graceful_pod {
            grace
                .or_else(|| {
                    old.pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                })
                .unwrap_or(30)
                .max(0)
        } else {
            0
        };
        let has_finalizers = meta::finalizers(&old) > 0;
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            // Already deleting: only a shorter grace period changes anything.
            let pending = old
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if grace >= pending {
                return Some(old);
            }
            if grace == 0 && !has_finalizers {
                let last = self.remove(res, key, None);
                return last;
            }
            let mut new = (*old).clone();
            new["metadata"]["deletionTimestamp"] = meta::timestamp_after(grace).into();
            new["metadata"]["deletionGracePeriodSeconds"] = grace.into();
            return Some(self.commit_put(res, key.clone(), new, Some(old)));
        }
        if grace > 0 || has_finalizers {
            let mut new = (*old).clone();
            new["metadata"]["deletionTimestamp"] = meta::timestamp_after(grace).into();
            new["metadata"]["deletionGracePeriodSeconds"] = grace.into();
            if let Some(g) = old.pointer("/metadata/generation").and_then(Value::as_i64) {
                new["metadata"]["generation"] = (g + 1).into();
            }
            return Some(self.commit_put(res, key.clone(), new, Some(old)));
        }
        self.remove(res, key, None)
    }

    /// Namespace deletion: Terminating, delete everything inside, go away when empty.
    fn delete_namespace(&mut self, key: &ObjKey) -> Option<Arc<Value>> {
        let ns = key.1.clone();
        let mut last = self.lookup(&ns_key(), key)?;
        if last.pointer("/metadata/deletionTimestamp").is_none() {
            let mut new = (*last).clone();
            new["metadata"]["deletionTimestamp"] = meta::now().into();
            new["metadata"]["deletionGracePeriodSeconds"] = 0.into();
            new["status"] = json!({"phase": "Terminating"});
            last = self.commit_put(&ns_key(), key.clone(), new, Some(last));
        }
        let mut contents = Vec::new();
        for (res, map) in &self.objects {
            if self.types.get(res).is_some_and(|t| t.namespaced) {
                contents.extend(
                    map.range((ns.clone(), String::new())..)
                        .take_while(|(k, _)| k.0 == ns)
                        .map(|(k, _)| (res.clone(), k.clone())),
                );
            }
        }
        for (res, k) in contents {
            self.delete_object(&res, &k, None);
        }
        self.maybe_finish_namespace(&ns);
        // still there (Terminating) or gone: either way its last state
        Some(self.lookup(&ns_key(), key).unwrap_or(last))
    }

    /// Owner UIDs of an object split into (alive, dangling). An owner of a kind the server does
    /// not serve counts as alive: the real garbage collector cannot resolve it and leaves the
    /// dependent alone.
    pub(super) fn split_owners(&self, obj: &Value) -> (Vec<String>, Vec<String>) {
        let mut alive = Vec::new();
        let mut dangling = Vec::new();
        let refs = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for r in refs {
            let Some(uid) = r.get("uid").and_then(Value::as_str) else {
                continue;
            };
            let api_version = r
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
            let kind = r.get("kind").and_then(Value::as_str).unwrap_or_default();
            let served = self
                .types
                .values()
                .any(|t| t.group == group && t.kind == kind);
            if self.uids.contains_key(uid) || !served {
                alive.push(uid.to_string());
            } else {
                dangling.push(uid.to_string());
            }
        }
        (alive, dangling)
    }

    /// `propagationPolicy=Orphan`: dependents lose their reference to the owner and stay.
    fn orphan_dependents(&mut self, uid: &str) {
        let deps: Vec<(ResKey, ObjKey)> = self
            .dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for (res, key) in deps {
            self.drop_owner_refs(&res, &key, |u| u == uid);
        }
    }

    fn drop_owner_refs(&mut self, res: &ResKey, key: &ObjKey, drop: impl Fn(&str) -> bool) {
        let Some(old) = self.lookup(res, key) else {
            return;
        };
        let mut new = (*old).clone();
        if let Some(refs) = new
            .pointer_mut("/metadata/ownerReferences")
            .and_then(Value::as_array_mut)
        {
            refs.retain(|r| !r.get("uid").and_then(Value::as_str).is_some_and(&drop));
            if refs.is_empty()
                && let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut)
            {
                m.remove("ownerReferences");
            }
        }
        if new != *old {
            self.commit_put(res, key.clone(), new, Some(old));
        }
    }

    /// The garbage collector, run synchronously after every removal: dependents whose owners are
    /// all gone are deleted (background propagation, respecting their own finalizers and grace
    /// periods, recursively); dependents with a surviving owner only lose the dangling reference.
    pub(super) fn run_gc(&mut self) {
        while let Some(owner) = self.gc_queue.pop_front() {
            let Some(deps) = self.dependents.remove(&owner) else {
                continue;
            };
            for (res, key) in deps {
                let Some(obj) = self.lookup(&res, &key) else {
                    continue;
                };
                let (live, _) = self.split_owners(&obj);
                if live.is_empty() {
                    self.delete_object(&res, &key, None);
                } else {
                    let live: BTreeSet<String> = live.into_iter().collect();
                    self.drop_owner_refs(&res, &key, |u| !live.contains(u));
                }
            }
        }
    }
}
