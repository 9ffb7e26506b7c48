//! The object store: every object of every resource as JSON, one global resourceVersion, and the
//! watch-event history.
//!
//! Why this shape:
//! - One store behind one mutex, like etcd behind a single apiserver: every write gets the next
//!   global resourceVersion and appends one record to the history *in the same critical section*,
//!   so watchers see events in exactly the order the writes happened.
//! - Objects are `Arc<Value>`: a list, a watch record and the store share one copy.
//! - Per type a `BTreeMap` keyed by (namespace, name): lists come out sorted like the real
//!   server's, a namespace is a contiguous range, and `continue` resumes with a range query.
//! - `uids` and `dependents` index ownership so cascading deletion and "is this owner still
//!   there" are lookups, not scans.
//! - The history is a bounded ring; a watch that resumes from before its start gets 410 Expired.
//!   New records are announced with a `tokio::sync::watch` of the latest resourceVersion: each
//!   watch task wakes up, takes what is newer than what it sent from the ring and filters it. This
//!   is the broadcast; it cannot lag or drop events silently, and a slow watcher that falls out
//!   of the ring is told 410 like a real watch-cache would.
//!
//! Writes (admission, create, update, patch, binding) are in `write.rs`; deletion and the
//! garbage collector in `delete.rs`.

mod delete;
mod write;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use serde_json::{Value, json};

use super::errors::{ApiError, ApiResult};
use super::meta;
use super::resources::{ResKey, ResourceType, builtin_types, crd_to_type, res_key};
use super::selectors::Selectors;

/// (namespace, name); namespace is `""` for cluster-scoped objects.
pub(crate) type ObjKey = (String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One write, as watchers see it.
#[derive(Debug)]
pub(crate) struct Record {
    pub rv: u64,
    pub res: ResKey,
    pub namespace: String,
    pub kind: EventType,
    /// The object after the write (for a deletion: its last state, with the deletion's rv).
    pub object: Arc<Value>,
    /// The object before the write, to turn selector transitions into ADDED/DELETED.
    pub prev: Option<Arc<Value>>,
    /// `object` serialized once, shared by every watcher that sends it unchanged.
    pub json: OnceLock<Bytes>,
}

impl Record {
    pub fn object_json(&self) -> Bytes {
        self.json
            .get_or_init(|| Bytes::from(serde_json::to_vec(&*self.object).unwrap_or_default()))
            .clone()
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WriteOpts {
    pub dry_run: bool,
    /// `fieldValidation=Strict`: unknown fields of custom resources are an error, not pruned.
    pub strict: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteOpts {
    pub grace: Option<i64>,
    pub propagation: Propagation,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sub {
    Main,
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpdateMode {
    Put,
    Patch,
}

/// One page of a list.
pub(crate) struct ListPage {
    pub items: Vec<Arc<Value>>,
    pub rv: u64,
    pub continue_token: Option<String>,
}

/// Where a watch starts.
pub(crate) struct WatchStart {
    /// Synthetic ADDED events (resourceVersion "" or "0").
    pub initial: Vec<Arc<Value>>,
    /// Send every event with a larger resourceVersion.
    pub after: u64,
}

pub(crate) struct Store {
    rv: u64,
    types: HashMap<ResKey, Arc<ResourceType>>,
    objects: HashMap<ResKey, BTreeMap<ObjKey, Arc<Value>>>,
    uids: HashMap<String, (ResKey, ObjKey)>,
    dependents: HashMap<String, BTreeSet<(ResKey, ObjKey)>>,
    history: VecDeque<Arc<Record>>,
    /// Every record with a larger rv is in `history`.
    history_start: u64,
    history_limit: usize,
    /// Lists and watches from before this rv are refused with 410 (set by `compact()`).
    compacted_rv: u64,
    /// Owners removed whose dependents the garbage collector still has to visit.
    gc_queue: VecDeque<String>,
    notify: tokio::sync::watch::Sender<u64>,
}

fn ns_key() -> ResKey {
    res_key("", "namespaces")
}

fn set_rv(obj: &mut Value, rv: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

impl Store {
    pub fn new(history_limit: usize, notify: tokio::sync::watch::Sender<u64>) -> Self {
        let types = builtin_types()
            .into_iter()
            .map(|t| (t.key.clone(), Arc::new(t)))
            .collect();
        let mut store = Store {
            rv: 0,
            types,
            objects: HashMap::new(),
            uids: HashMap::new(),
            dependents: HashMap::new(),
            history: VecDeque::new(),
            history_start: 0,
            history_limit: history_limit.max(1),
            compacted_rv: 0,
            gc_queue: VecDeque::new(),
            notify,
        };
        let ns_type = store.types.get(&ns_key()).cloned();
        if let Some(ns_type) = ns_type {
            for name in ["default", "kube-system", "kube-public"] {
                // cannot fail on an empty store
                let _ = store.create(
                    &ns_type,
                    "v1",
                    None,
                    json!({"metadata": {"name": name}}),
                    WriteOpts::default(),
                );
            }
        }
        store
    }

    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// Every resource type served, for discovery.
    pub fn types(&self) -> Vec<Arc<ResourceType>> {
        self.types.values().cloned().collect()
    }

    pub fn resolve(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> ApiResult<Arc<ResourceType>> {
        self.types
            .get(&res_key(group, plural))
            .filter(|t| t.version(version).is_some())
            .cloned()
            .ok_or_else(ApiError::no_route)
    }

    /// `compact()`: forget all history, as etcd compaction plus a watch-cache restart would.
    ///
    /// The resourceVersion moves on by one so that every version handed out before is "older"
    /// than the compaction (new lists and watches from the new version work), while watches that
    /// are already streaming keep going, like a real watch cache.
    pub fn compact(&mut self) {
        self.history.clear();
        self.history_start = self.rv;
        self.rv += 1;
        self.compacted_rv = self.rv;
    }

    fn obj_key(rt: &ResourceType, ns: Option<&str>, name: &str) -> ObjKey {
        let ns = if rt.namespaced {
            ns.unwrap_or_default()
        } else {
            ""
        };
        (ns.to_string(), name.to_string())
    }

    fn lookup(&self, res: &ResKey, key: &ObjKey) -> Option<Arc<Value>> {
        self.objects.get(res).and_then(|m| m.get(key)).cloned()
    }

    pub fn get(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> ApiResult<Arc<Value>> {
        self.lookup(&rt.key, &Self::obj_key(rt, ns, name))
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    // ---------------------------------------------------------------- list & watch

    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        sel: &Selectors,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> ApiResult<ListPage> {
        let (list_rv, after) = match continue_token {
            Some(token) => {
                let (rv, key) = decode_continue(token)?;
                if rv < self.compacted_rv {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. \
                         You can start a new list without the continue parameter, or use the continue token \
                         in this response to retrieve the remainder of the results.",
                    ));
                }
                (rv, Some(key))
            }
            None => (self.rv, None),
        };
        let empty = BTreeMap::new();
        let map = self.objects.get(&rt.key).unwrap_or(&empty);
        let ns = if rt.namespaced { ns } else { None };
        // `metadata.name=x` within a namespace: one lookup, no scan.
        if let (Some(name), None) = (sel.fields.pinned_name(), &after)
            && (ns.is_some() || !rt.namespaced)
        {
            let key = (ns.unwrap_or_default().to_string(), name.to_string());
            let items = map
                .get(&key)
                .filter(|o| sel.matches(o))
                .cloned()
                .into_iter()
                .collect();
            return Ok(ListPage {
                items,
                rv: list_rv,
                continue_token: None,
            });
        }
        let lower = match (&after, ns) {
            (Some(k), _) => Bound::Excluded(k.clone()),
            (None, Some(ns)) => Bound::Included((ns.to_string(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        let limit = limit.filter(|l| *l > 0);
        let mut items = Vec::new();
        let mut continue_token = None;
        let mut last_key: Option<&ObjKey> = None;
        for (key, obj) in map.range((lower, Bound::Unbounded)) {
            if ns.is_some_and(|ns| key.0 != ns) {
                break;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                // there is more in range: hand out a token that resumes after the last item
                if let Some(last) = last_key {
                    continue_token = Some(encode_continue(list_rv, last));
                }
                break;
            }
            last_key = Some(key);
            if sel.matches(obj) {
                items.push(obj.clone());
            }
        }
        Ok(ListPage {
            items,
            rv: list_rv,
            continue_token,
        })
    }

    /// Where a watch with `resourceVersion` `rv` starts.
    pub fn watch_start(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        sel: &Selectors,
        rv: Option<u64>,
    ) -> ApiResult<WatchStart> {
        match rv {
            None | Some(0) => {
                let page = self.list(rt, ns, sel, None, None)?;
                Ok(WatchStart {
                    initial: page.items,
                    after: self.rv,
                })
            }
            Some(n) if n < self.history_start || n < self.compacted_rv => Err(self.too_old(n)),
            Some(n) => Ok(WatchStart {
                initial: Vec::new(),
                after: n,
            }),
        }
    }

    fn too_old(&self, rv: u64) -> ApiError {
        ApiError::expired(format!(
            "too old resource version: {rv} ({})",
            self.history_start.max(self.compacted_rv)
        ))
    }

    /// Records of `res` (and namespace) newer than `after`, the rv they bring the watcher to, and
    /// whether the resource is still served (a deleted CRD ends its watches).
    pub fn events_after(
        &self,
        res: &ResKey,
        ns: Option<&str>,
        after: u64,
    ) -> ApiResult<(Vec<Arc<Record>>, u64, bool)> {
        if after < self.history_start {
            return Err(self.too_old(after));
        }
        let start = self.history.partition_point(|r| r.rv <= after);
        let records = self
            .history
            .range(start..)
            .filter(|r| r.res == *res && ns.is_none_or(|ns| r.namespace == ns))
            .cloned()
            .collect();
        Ok((records, self.rv.max(after), self.types.contains_key(res)))
    }

    // ---------------------------------------------------------------- commits

    fn push_record(&mut self, record: Record) {
        self.history.push_back(Arc::new(record));
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.history_start = old.rv;
            }
        }
        self.notify.send_replace(self.rv);
    }

    fn index_owners(&mut self, obj: &Value, res: &ResKey, key: &ObjKey) {
        for uid in meta::owner_uids(obj) {
            self.dependents
                .entry(uid)
                .or_default()
                .insert((res.clone(), key.clone()));
        }
    }

    fn unindex_owners(&mut self, obj: &Value, res: &ResKey, key: &ObjKey) {
        for uid in meta::owner_uids(obj) {
            if let Some(set) = self.dependents.get_mut(&uid) {
                set.remove(&(res.clone(), key.clone()));
                if set.is_empty() {
                    self.dependents.remove(&uid);
                }
            }
        }
    }

    /// Stores a created or updated object under the next resourceVersion.
    fn commit_put(
        &mut self,
        res: &ResKey,
        key: ObjKey,
        mut obj: Value,
        prev: Option<Arc<Value>>,
    ) -> Arc<Value> {
        self.rv += 1;
        set_rv(&mut obj, self.rv);
        let obj = Arc::new(obj);
        let owners_changed = prev.as_ref().is_none_or(|p| {
            p.pointer("/metadata/ownerReferences") != obj.pointer("/metadata/ownerReferences")
        });
        if owners_changed {
            if let Some(p) = &prev {
                self.unindex_owners(p, res, &key);
            }
            self.index_owners(&obj, res, &key);
        }
        if prev.is_none()
            && let Some(uid) = meta::str_field(&obj, "/metadata/uid")
        {
            self.uids
                .insert(uid.to_string(), (res.clone(), key.clone()));
        }
        self.objects
            .entry(res.clone())
            .or_default()
            .insert(key.clone(), obj.clone());
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.push_record(Record {
            rv: self.rv,
            res: res.clone(),
            namespace: key.0,
            kind,
            object: obj.clone(),
            prev,
            json: OnceLock::new(),
        });
        obj
    }

    /// Removes an object for good (DELETED event), queues its dependents for the garbage
    /// collector and finishes what the removal completes (a CRD's objects, a terminating
    /// namespace).
    fn remove(&mut self, res: &ResKey, key: &ObjKey, last: Option<Value>) -> Option<Arc<Value>> {
        let old = self.objects.get_mut(res)?.remove(key)?;
        let mut obj = last.unwrap_or_else(|| (*old).clone());
        self.rv += 1;
        set_rv(&mut obj, self.rv);
        let obj = Arc::new(obj);
        self.unindex_owners(&old, res, key);
        if let Some(uid) = meta::str_field(&old, "/metadata/uid") {
            self.uids.remove(uid);
            self.gc_queue.push_back(uid.to_string());
        }
        self.push_record(Record {
            rv: self.rv,
            res: res.clone(),
            namespace: key.0.clone(),
            kind: EventType::Deleted,
            object: obj.clone(),
            prev: Some(old),
            json: OnceLock::new(),
        });
        if res.as_ref() == "apiextensions.k8s.io/customresourcedefinitions"
            && let Ok(rt) = crd_to_type(&obj)
        {
            // The CRD is gone: so are its objects and its endpoints.
            let keys: Vec<ObjKey> = self
                .objects
                .get(&rt.key)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for k in keys {
                self.remove(&rt.key, &k, None);
            }
            self.objects.remove(&rt.key);
            self.types.remove(&rt.key);
        }
        if !key.0.is_empty() {
            self.maybe_finish_namespace(&key.0);
        }
        Some(obj)
    }

    fn namespace_empty(&self, ns: &str) -> bool {
        self.objects.iter().all(|(res, map)| {
            self.types.get(res).is_none_or(|t| !t.namespaced)
                || map
                    .range((ns.to_string(), String::new())..)
                    .next()
                    .is_none_or(|(k, _)| k.0 != ns)
        })
    }

    /// A terminating namespace goes away once it is empty and has no finalizers.
    fn maybe_finish_namespace(&mut self, ns: &str) {
        let key = (String::new(), ns.to_string());
        let Some(obj) = self.lookup(&ns_key(), &key) else {
            return;
        };
        if obj.pointer("/metadata/deletionTimestamp").is_some()
            && meta::finalizers(&obj) == 0
            && self.namespace_empty(ns)
        {
            self.remove(&ns_key(), &key, None);
        }
    }
}

/// A stored object as seen through `version` (CRD versions share storage; conversion strategy
/// `None` only changes `apiVersion`).
pub(crate) fn render_version(obj: &Value, rt: &ResourceType, version: &str) -> Value {
    let mut out = obj.clone();
    let av = rt.api_version(version);
    if out.get("apiVersion").and_then(Value::as_str) != Some(av.as_str()) {
        out["apiVersion"] = av.into();
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Opaque `continue` token: the list's resourceVersion and the key to resume after.
fn encode_continue(rv: u64, key: &ObjKey) -> String {
    hex(json!({"rv": rv, "ns": key.0, "name": key.1})
        .to_string()
        .as_bytes())
}

fn decode_continue(token: &str) -> ApiResult<(u64, ObjKey)> {
    let bad = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion")
    };
    let bytes = unhex(token).ok_or_else(bad)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let ns = v.get("ns").and_then(Value::as_str).ok_or_else(bad)?;
    let name = v.get("name").and_then(Value::as_str).ok_or_else(bad)?;
    Ok((rv, (ns.to_string(), name.to_string())))
}
