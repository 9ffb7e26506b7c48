//! The OCI distribution API requests the registry store makes, one function per op: each sends
//! one request (plus auth and retries) and interprets its status, so the request counts in
//! docs/registry-layout.md can be read off the callers.

use oci_spec::image::{ImageIndex, MediaType};
use reqwest::header::LOCATION;
use reqwest::{Method, StatusCode, Url};

use super::auth::Auth;
use super::client::{Call, Client, Response};
use super::repo::Repo;
use super::sink::BodySink;
use super::status::status_error;
use crate::observe::sha256_digest;
use crate::storage::error::{ErrorKind, StorageError};
use crate::storage::oci::OCI_INDEX_MEDIA_TYPE;
use crate::storage::op;
use crate::storage::transport::Blob;

/// Media types asked for when fetching manifests.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// The HTTP client and what it learned about auth: everything a request needs.
pub(super) struct Api {
    pub client: Client,
    pub auth: Auth,
}

impl Api {
    /// A request with retries; returns any non-transient response for the caller to interpret.
    async fn request(
        &self,
        repo: &Repo,
        push: bool,
        call: &Call<'_>,
    ) -> Result<Response, StorageError> {
        self.client
            .retry(move || async move {
                let resp = self.auth.send(&self.client, repo, push, call).await?;
                if matches!(resp.status.as_u16(), 408 | 429 | 500..=599) {
                    return Err(status_error(call.op, call.target, &resp));
                }
                Ok(resp)
            })
            .await
    }

    /// `GET` a manifest; `None` on 404 when `absent_ok`. Checks `Docker-Content-Digest` against
    /// the bytes when the registry sends it.
    pub async fn get_manifest(
        &self,
        repo: &Repo,
        push: bool,
        reference: &str,
        absent_ok: bool,
    ) -> Result<Option<Response>, StorageError> {
        let url = repo.manifest_url(reference);
        let target = repo.reference(reference);
        let call = Call {
            op: op::MANIFEST_GET,
            method: Method::GET,
            url: &url,
            target: &target,
            accept: Some(MANIFEST_ACCEPT),
            content_type: None,
            body: None,
            ok: if absent_ok { &[200, 404] } else { &[200] },
        };
        let resp = self.request(repo, push, &call).await?;
        match resp.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND if absent_ok => return Ok(None),
            _ => return Err(status_error(op::MANIFEST_GET, &target, &resp)),
        }
        let actual = sha256_digest(&resp.body);
        served_digest_is(&resp, &actual, op::MANIFEST_GET, &target, |served| {
            format!("registry says {served}, content hashes to {actual}")
        })?;
        Ok(Some(resp))
    }

    /// `PUT` a manifest under a tag or its digest; returns the response (for `OCI-Subject`).
    pub async fn put_manifest(
        &self,
        repo: &Repo,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Response, StorageError> {
        let url = repo.manifest_url(reference);
        let target = repo.reference(reference);
        let call = Call {
            op: op::MANIFEST_PUT,
            method: Method::PUT,
            url: &url,
            target: &target,
            accept: None,
            content_type: Some(media_type),
            body: Some(Blob::Bytes(bytes)),
            ok: &[201],
        };
        let resp = self.request(repo, true, &call).await?;
        if resp.status != StatusCode::CREATED && resp.status != StatusCode::OK {
            return Err(status_error(op::MANIFEST_PUT, &target, &resp));
        }
        let expected = sha256_digest(bytes);
        served_digest_is(&resp, &expected, op::MANIFEST_PUT, &target, |served| {
            format!("registry stored {served}, we sent {expected}")
        })?;
        tracing::debug!(reference = %target, digest = %expected, "manifest written");
        Ok(resp)
    }

    /// `HEAD` (exists?) or `GET` (content) of a blob; `None` on 404.
    pub async fn blob_request(
        &self,
        repo: &Repo,
        push: bool,
        op: &'static str,
        digest: &str,
    ) -> Result<Option<Response>, StorageError> {
        let url = repo.blob_url(digest);
        let target = repo.digest_ref(digest);
        let call = Call {
            op,
            method: if op == op::BLOB_HEAD {
                Method::HEAD
            } else {
                Method::GET
            },
            url: &url,
            target: &target,
            accept: None,
            content_type: None,
            body: None,
            ok: &[200, 404],
        };
        let resp = self.request(repo, push, &call).await?;
        match resp.status {
            StatusCode::OK => Ok(Some(resp)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(op, &target, &resp)),
        }
    }

    /// `GET` of a blob streamed into `sink` (retried from the start on a transient failure);
    /// `false` on 404.
    pub async fn download_blob(
        &self,
        repo: &Repo,
        digest: &str,
        sink: &BodySink,
    ) -> Result<bool, StorageError> {
        let url = repo.blob_url(digest);
        let target = repo.digest_ref(digest);
        let call = Call {
            op: op::BLOB_GET,
            method: Method::GET,
            url: &url,
            target: &target,
            accept: None,
            content_type: None,
            body: None,
            ok: &[200, 404],
        };
        let call = &call;
        let resp = self
            .client
            .retry(move || async move {
                let resp = self
                    .auth
                    .send_with(&self.client, repo, false, call, Some(sink))
                    .await?;
                if matches!(resp.status.as_u16(), 408 | 429 | 500..=599) {
                    return Err(status_error(call.op, call.target, &resp));
                }
                Ok(resp)
            })
            .await?;
        match resp.status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(op::BLOB_GET, &target, &resp)),
        }
    }

    /// `POST` + monolithic `PUT`, retried as a unit (a failed PUT may have consumed the upload
    /// session; a file body is reopened for each attempt).
    pub async fn upload_blob(
        &self,
        repo: &Repo,
        digest: &str,
        blob: Blob<'_>,
    ) -> Result<(), StorageError> {
        let start_url = &format!("{}/blobs/uploads/", repo.base);
        let target = &repo.digest_ref(digest);
        self.client
            .retry(move || async move {
                let start = Call {
                    op: op::BLOB_UPLOAD_START,
                    method: Method::POST,
                    url: start_url,
                    target,
                    accept: None,
                    content_type: None,
                    body: None,
                    ok: &[202],
                };
                let resp = self.auth.send(&self.client, repo, true, &start).await?;
                if resp.status != StatusCode::ACCEPTED {
                    return Err(status_error(op::BLOB_UPLOAD_START, target, &resp));
                }
                let location = resp.header(LOCATION.as_str()).ok_or_else(|| {
                    StorageError::permanent(
                        op::BLOB_UPLOAD_START,
                        target,
                        "202 without a Location header",
                    )
                })?;
                let base = Url::parse(start_url).map_err(|e| {
                    StorageError::permanent(op::BLOB_UPLOAD_START, target, e.to_string())
                })?;
                let mut put_url = base.join(location).map_err(|e| {
                    StorageError::permanent(
                        op::BLOB_UPLOAD_START,
                        target,
                        format!("bad Location {location}: {e}"),
                    )
                })?;
                // The upload is sent with the registry's credentials: never to another origin
                // (issue 14, point 2).
                if put_url.origin() != base.origin() {
                    return Err(StorageError::permanent(
                        op::BLOB_UPLOAD_START,
                        target,
                        format!(
                            "refused the upload Location on {}://{}: not the registry's own scheme and host",
                            put_url.scheme(),
                            put_url.host_str().unwrap_or_default()
                        ),
                    ));
                }
                put_url.query_pairs_mut().append_pair("digest", digest);
                let put_url = put_url.to_string();
                let put = Call {
                    op: op::BLOB_UPLOAD,
                    method: Method::PUT,
                    url: &put_url,
                    target,
                    accept: None,
                    content_type: Some("application/octet-stream"),
                    body: Some(blob),
                    ok: &[201],
                };
                let resp = self.auth.send(&self.client, repo, true, &put).await?;
                if resp.status != StatusCode::CREATED {
                    return Err(status_error(op::BLOB_UPLOAD, target, &resp));
                }
                Ok(())
            })
            .await
    }

    /// `GET /v2/<name>/referrers/<digest>`: the referrers list when the registry serves the API
    /// (200 with an OCI index), `None` when it does not.
    pub async fn referrers(
        &self,
        repo: &Repo,
        push: bool,
        subject: &str,
    ) -> Result<Option<ImageIndex>, StorageError> {
        let url = format!("{}/referrers/{subject}", repo.base);
        let target = repo.digest_ref(subject);
        let call = Call {
            op: op::REFERRERS_GET,
            method: Method::GET,
            url: &url,
            target: &target,
            accept: Some(OCI_INDEX_MEDIA_TYPE),
            content_type: None,
            body: None,
            ok: &[200, 404],
        };
        let resp = self.request(repo, push, &call).await?;
        Ok((resp.status == StatusCode::OK)
            .then(|| serde_json::from_slice::<ImageIndex>(&resp.body).ok())
            .flatten()
            .filter(|i| {
                resp.media_type().as_deref() == Some(OCI_INDEX_MEDIA_TYPE)
                    || *i.media_type() == Some(MediaType::ImageIndex)
            }))
    }
}

impl Api {
    /// `GET` of one page of a list (`/v2/<name>/tags/list`, `/v2/_catalog`): its body (`None` on
    /// 404: no such repository) and the next page's URL from the `Link` header, which is
    /// followed only on the registry's own origin (the request carries its credentials).
    pub async fn list_page(
        &self,
        repo: &Repo,
        op: &'static str,
        url: &str,
        target: &str,
    ) -> Result<(Option<Vec<u8>>, Option<String>), StorageError> {
        let call = Call {
            op,
            method: Method::GET,
            url,
            target,
            accept: Some("application/json"),
            content_type: None,
            body: None,
            ok: &[200, 404],
        };
        let resp = self.request(repo, false, &call).await?;
        match resp.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok((None, None)),
            _ => return Err(status_error(op, target, &resp)),
        }
        let next = match resp.header("link").and_then(next_link) {
            None => None,
            Some(link) => {
                let base = Url::parse(url)
                    .map_err(|e| StorageError::permanent(op, target, e.to_string()))?;
                let next = base.join(link).map_err(|e| {
                    StorageError::permanent(op, target, format!("bad Link {link:?}: {e}"))
                })?;
                if next.origin() != base.origin() {
                    return Err(StorageError::permanent(
                        op,
                        target,
                        format!("refused the next page's Link to another origin: {link:?}"),
                    ));
                }
                Some(next.to_string())
            }
        };
        Ok((Some(resp.body), next))
    }
}

/// The target of the `rel="next"` link of a `Link` header (RFC 8288: `<url>; rel="next"`).
pub(super) fn next_link(header: &str) -> Option<&str> {
    header.split(',').find_map(|link| {
        let (target, params) = link.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"" || p.trim() == "rel=next");
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then_some(target)
    })
}

/// The `Docker-Content-Digest` the registry answered with, when it gives a sha256 one, must be
/// `digest`: a registry that stores or serves other bytes than ours is caught here.
fn served_digest_is(
    resp: &Response,
    digest: &str,
    op: &'static str,
    target: &str,
    explain: impl FnOnce(&str) -> String,
) -> Result<(), StorageError> {
    match resp.header("docker-content-digest") {
        Some(served) if served.starts_with("sha256:") && served != digest => Err(
            StorageError::new(op, target, ErrorKind::DigestMismatch, explain(served)),
        ),
        _ => Ok(()),
    }
}
