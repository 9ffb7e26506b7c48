//! HTTP front: one fallback handler that parses Kubernetes REST paths itself.
//!
//! The router is hand-written rather than axum routes because Kubernetes paths are ambiguous by
//! shape (`/api/v1/namespaces/x` is a namespace, `/api/v1/namespaces/x/pods` a collection,
//! `/api/v1/namespaces/x/status` a subresource) and the set of resources changes at run time
//! when CRDs are installed. Every response is JSON; every failure a `Status`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::discovery;
use super::errors::{ApiError, ApiResult};
use super::patch::{Patch, PatchType, decode_json_or_yaml};
use super::resources::{Builtin, ResourceType};
use super::selectors::{FieldSelector, LabelSelector, Selectors};
use super::store::{DeleteOpts, ListPage, Propagation, Sub, WriteOpts};
use super::watch::{self, WatchRequest, partial_metadata};
use super::{RequestRecord, Shared};

/// Largest request body accepted (the real server's limit is 3 MiB per object).
const MAX_BODY: usize = 16 << 20;

pub(crate) async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let response = match dispatch(&shared, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    shared.record(RequestRecord {
        method,
        path,
        query,
        user_agent,
        status: response.status().as_u16(),
        elapsed: started.elapsed(),
    });
    response
}

struct Query(HashMap<String, String>);

impl Query {
    fn parse(q: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(q.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }

    fn write_opts(&self) -> ApiResult<WriteOpts> {
        let dry_run = match self.get("dryRun") {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid dryRun value: {other:?}; supported values: \"All\""
                )));
            }
        };
        Ok(WriteOpts {
            dry_run,
            strict: self.get("fieldValidation") == Some("Strict"),
        })
    }

    fn selectors(&self, rt: &ResourceType, version: &str) -> ApiResult<Selectors> {
        Ok(Selectors {
            labels: LabelSelector::parse(self.get("labelSelector").unwrap_or_default())?,
            fields: FieldSelector::parse(
                self.get("fieldSelector").unwrap_or_default(),
                rt,
                version,
            )?,
        })
    }

    fn number<T: std::str::FromStr>(&self, k: &str) -> ApiResult<Option<T>> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {k}: {v:?}"))),
        }
    }
}

fn json_response(code: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (code, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn value_response(code: StatusCode, v: &Value) -> Response {
    json_response(code, serde_json::to_vec(v).unwrap_or_default())
}

/// What a response shows of an object.
#[derive(Clone, Copy)]
struct View<'a> {
    rt: &'a ResourceType,
    version: &'a str,
    meta_only: bool,
}

impl View<'_> {
    fn write(&self, out: &mut Vec<u8>, obj: &Value) {
        let result = if self.meta_only {
            serde_json::to_writer(&mut *out, &partial_metadata(obj))
        } else {
            let av = self.rt.api_version(self.version);
            if obj.get("apiVersion").and_then(Value::as_str) == Some(av.as_str()) {
                serde_json::to_writer(&mut *out, obj)
            } else {
                let mut o = obj.clone();
                o["apiVersion"] = av.into();
                serde_json::to_writer(&mut *out, &o)
            }
        };
        // Serializing a Value into a Vec cannot fail.
        debug_assert!(result.is_ok());
    }

    fn object(&self, code: StatusCode, obj: &Value) -> Response {
        let mut out = Vec::new();
        self.write(&mut out, obj);
        json_response(code, out)
    }

    /// A list response, serialized straight from the shared objects (no clones).
    fn list(&self, page: &ListPage) -> Response {
        let (kind, api_version) = if self.meta_only {
            (
                "PartialObjectMetadataList".to_string(),
                "meta.k8s.io/v1".to_string(),
            )
        } else {
            (self.rt.list_kind.clone(), self.rt.api_version(self.version))
        };
        let mut metadata = json!({"resourceVersion": page.rv.to_string()});
        if let Some(c) = &page.continue_token {
            metadata["continue"] = c.clone().into();
        }
        let head =
            json!({"kind": kind, "apiVersion": api_version, "metadata": metadata}).to_string();
        let mut out = Vec::with_capacity(head.len() + page.items.len() * 1024);
        // `head` is a JSON object: reopen it to append `items`.
        out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
        out.extend_from_slice(b",\"items\":[");
        for (i, item) in page.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            self.write(&mut out, item);
        }
        out.extend_from_slice(b"]}");
        json_response(StatusCode::OK, out)
    }
}

fn meta_only(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
}

fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=APIGroupDiscoveryList") && a.contains("v=v2"))
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// A create/update body: JSON, or YAML when the client says so.
fn decode_body(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let ct = content_type(headers);
    let mime = ct.split(';').next().unwrap_or_default().trim();
    match mime {
        "" | "application/json" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request could not be decoded as JSON: {e}"
            ))
        }),
        "application/yaml" => decode_json_or_yaml(body),
        _ => Err(ApiError::unsupported_media_type(&ct)),
    }
}

async fn dispatch(shared: &Arc<Shared>, req: Request) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let query = Query::parse(parts.uri.query());
    let is_get = parts.method == Method::GET;
    let discovery = |v: Option<Value>| -> ApiResult<Response> {
        if !is_get {
            return Err(ApiError::method_not_allowed());
        }
        v.map(|v| value_response(StatusCode::OK, &v))
            .ok_or_else(ApiError::no_route)
    };
    match segs.as_slice() {
        ["healthz" | "livez" | "readyz", ..] => Ok((StatusCode::OK, "ok").into_response()),
        ["version"] => discovery(Some(discovery::version_info())),
        ["api"] if wants_aggregated(&parts.headers) => {
            aggregated_response(discovery::aggregated(&shared.store().types(), true))
        }
        ["api"] => discovery(Some(discovery::api_versions(&shared.addr.to_string()))),
        ["api", v] => discovery(discovery::api_resource_list(&shared.store().types(), "", v)),
        ["apis"] if wants_aggregated(&parts.headers) => {
            aggregated_response(discovery::aggregated(&shared.store().types(), false))
        }
        ["apis"] => discovery(Some(discovery::api_group_list(&shared.store().types()))),
        ["apis", g] => discovery(discovery::api_group_doc(&shared.store().types(), g)),
        ["apis", g, v] => discovery(discovery::api_resource_list(&shared.store().types(), g, v)),
        ["api", v, rest @ ..] => {
            let body = read_body(body).await?;
            resource(
                shared,
                &parts.method,
                &parts.headers,
                &query,
                "",
                v,
                rest,
                body,
            )
        }
        ["apis", g, v, rest @ ..] => {
            let body = read_body(body).await?;
            resource(
                shared,
                &parts.method,
                &parts.headers,
                &query,
                g,
                v,
                rest,
                body,
            )
        }
        _ => Err(ApiError::no_route()),
    }
}

fn aggregated_response(v: Value) -> ApiResult<Response> {
    let mut resp = value_response(StatusCode::OK, &v);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE),
    );
    Ok(resp)
}

async fn read_body(body: Body) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|e| ApiError::bad_request(format!("error reading the request body: {e}")))
}

/// A parsed resource path.
struct Target<'a> {
    namespace: Option<&'a str>,
    plural: &'a str,
    name: Option<&'a str>,
    sub: Option<&'a str>,
}

fn parse_target<'a>(rest: &[&'a str]) -> ApiResult<Target<'a>> {
    let namespaced_path = rest.len() >= 3
        && rest[0] == "namespaces"
        && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
    let (namespace, tail) = if namespaced_path {
        (Some(rest[1]), &rest[2..])
    } else {
        (None, rest)
    };
    match tail {
        [plural] => Ok(Target {
            namespace,
            plural,
            name: None,
            sub: None,
        }),
        [plural, name] => Ok(Target {
            namespace,
            plural,
            name: Some(name),
            sub: None,
        }),
        [plural, name, sub] => Ok(Target {
            namespace,
            plural,
            name: Some(name),
            sub: Some(sub),
        }),
        _ => Err(ApiError::no_route()),
    }
}

#[allow(clippy::too_many_arguments)]
fn resource(
    shared: &Arc<Shared>,
    method: &Method,
    headers: &HeaderMap,
    query: &Query,
    group: &str,
    version: &str,
    rest: &[&str],
    body: Bytes,
) -> ApiResult<Response> {
    let t = parse_target(rest)?;
    // Legacy `POST /api/v1/namespaces/{ns}/bindings` (Binding named like the pod).
    if group.is_empty() && version == "v1" && t.plural == "bindings" && t.name.is_none() {
        let ns = t.namespace.ok_or_else(ApiError::no_route)?;
        if method != Method::POST {
            return Err(ApiError::method_not_allowed());
        }
        let binding = decode_body(headers, &body)?;
        let name = binding
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        return bind(shared, ns, &name, &binding);
    }
    let rt = shared.store().resolve(group, version, t.plural)?;
    if !rt.namespaced && t.namespace.is_some() {
        return Err(ApiError::no_route());
    }
    if rt.namespaced && t.namespace.is_none() && t.name.is_some() {
        return Err(ApiError::no_route());
    }
    let ns = t.namespace;
    let view = View {
        rt: &rt,
        version,
        meta_only: meta_only(headers),
    };
    let status_enabled = rt.version(version).is_some_and(|v| v.status);
    match (t.name, t.sub) {
        (None, _) => match *method {
            Method::GET if query.flag("watch") => {
                watch_collection(shared, &rt, version, ns, query, view.meta_only)
            }
            Method::GET => {
                let sel = query.selectors(&rt, version)?;
                let limit = query.number::<usize>("limit")?;
                let page = shared.store().list(
                    &rt,
                    ns,
                    &sel,
                    limit,
                    query.get("continue").filter(|c| !c.is_empty()),
                )?;
                Ok(view.list(&page))
            }
            Method::POST => {
                if rt.namespaced && ns.is_none() {
                    return Err(ApiError::method_not_allowed());
                }
                let obj = decode_body(headers, &body)?;
                let opts = query.write_opts()?;
                let created = shared.store().create(&rt, version, ns, obj, opts)?;
                Ok(view.object(StatusCode::CREATED, &created))
            }
            Method::DELETE => {
                let sel = query.selectors(&rt, version)?;
                let opts = delete_opts(query, &body)?;
                let page = shared.store().delete_collection(&rt, ns, &sel, &opts)?;
                Ok(view.list(&page))
            }
            _ => Err(ApiError::method_not_allowed()),
        },
        (Some(name), sub) => {
            let sub = match sub {
                None => Sub::Main,
                Some("status") if status_enabled => Sub::Status,
                Some("binding") if rt.builtin == Builtin::Pod => {
                    if *method != Method::POST {
                        return Err(ApiError::method_not_allowed());
                    }
                    let binding = decode_body(headers, &body)?;
                    return bind(shared, ns.unwrap_or_default(), name, &binding);
                }
                Some(_) => return Err(ApiError::no_route()),
            };
            match *method {
                Method::GET => {
                    let obj = shared.store().get(&rt, ns, name)?;
                    Ok(view.object(StatusCode::OK, &obj))
                }
                Method::PUT => {
                    let obj = decode_body(headers, &body)?;
                    let opts = query.write_opts()?;
                    let updated = shared
                        .store()
                        .update(&rt, version, ns, name, obj, sub, opts)?;
                    Ok(view.object(StatusCode::OK, &updated))
                }
                Method::PATCH => {
                    let ty = PatchType::from_content_type(&content_type(headers))?;
                    if ty == PatchType::Apply && query.get("fieldManager").is_none_or(str::is_empty)
                    {
                        return Err(ApiError::bad_request(
                            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                        ));
                    }
                    let patch = Patch::decode(ty, &body)?;
                    let opts = query.write_opts()?;
                    let (obj, created) = shared
                        .store()
                        .patch(&rt, version, ns, name, &patch, sub, opts)?;
                    let code = if created {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    Ok(view.object(code, &obj))
                }
                Method::DELETE if sub == Sub::Main => {
                    let opts = delete_opts(query, &body)?;
                    let (obj, gone) = shared.store().delete(&rt, ns, name, &opts)?;
                    // Like the real registries: a deletion still pending returns the object;
                    // a completed one returns the object only for the types whose registry
                    // sets `ReturnDeletedObject` (pods, services, namespaces), else a
                    // `Status` Success naming what was deleted.
                    let returns_object = matches!(
                        rt.builtin,
                        Builtin::Pod | Builtin::Service | Builtin::Namespace
                    );
                    if !gone || returns_object {
                        return Ok(view.object(StatusCode::OK, &obj));
                    }
                    let uid = obj.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
                    Ok(value_response(
                        StatusCode::OK,
                        &json!({
                            "kind": "Status",
                            "apiVersion": "v1",
                            "metadata": {},
                            "status": "Success",
                            "details": {"name": name, "group": rt.group, "kind": rt.plural, "uid": uid},
                        }),
                    ))
                }
                _ => Err(ApiError::method_not_allowed()),
            }
        }
    }
}

fn bind(shared: &Arc<Shared>, ns: &str, name: &str, binding: &Value) -> ApiResult<Response> {
    shared.store().bind(ns, name, binding)?;
    Ok(value_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

fn watch_collection(
    shared: &Arc<Shared>,
    rt: &Arc<ResourceType>,
    version: &str,
    ns: Option<&str>,
    query: &Query,
    meta_only: bool,
) -> ApiResult<Response> {
    let resource_version = match query.get("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {v:?}")))?,
        ),
    };
    let timeout = match query.number::<u64>("timeoutSeconds")? {
        // capped: a deadline must stay representable
        Some(s) => Duration::from_secs(s.min(7 * 24 * 3600)),
        None => shared.options.watch_timeout,
    };
    let req = WatchRequest {
        rt: rt.clone(),
        version: version.to_string(),
        namespace: ns.map(str::to_string),
        selectors: query.selectors(rt, version)?,
        resource_version,
        bookmarks: query.flag("allowWatchBookmarks"),
        send_initial_events: query.flag("sendInitialEvents"),
        timeout,
        meta_only,
    };
    Ok(watch::serve(shared.clone(), req))
}

fn delete_opts(query: &Query, body: &[u8]) -> ApiResult<DeleteOpts> {
    let mut opts = DeleteOpts::default();
    let parsed: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    let policy = parsed
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or(query.get("propagationPolicy"));
    opts.propagation = match policy {
        None | Some("") | Some("Background") => Propagation::Background,
        Some("Foreground") => Propagation::Foreground,
        Some("Orphan") => Propagation::Orphan,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Background\", \"Foreground\", \"Orphan\""
            )));
        }
    };
    let orphan = parsed
        .get("orphanDependents")
        .and_then(Value::as_bool)
        .or_else(|| query.get("orphanDependents").map(|v| v == "true"));
    if orphan == Some(true) && policy.is_none() {
        opts.propagation = Propagation::Orphan;
    }
    opts.grace = match parsed.get("gracePeriodSeconds") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::Null) | None => query.number::<i64>("gracePeriodSeconds")?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "gracePeriodSeconds must be an integer",
            ));
        }
    };
    if let Some(pre) = parsed.get("preconditions") {
        opts.precondition_uid = pre.get("uid").and_then(Value::as_str).map(str::to_string);
        opts.precondition_rv = pre
            .get("resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    let body_dry_run = parsed
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v == "All"));
    opts.dry_run = body_dry_run || query.get("dryRun") == Some("All");
    Ok(opts)
}
