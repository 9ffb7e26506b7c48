//! The op labels passed to the [`Observer`](super::Observer) and carried by every
//! [`StorageError`](super::StorageError): one per kind of registry request, plus the local steps.
//! Their own module so that every other storage module can import them without importing a store.

/// `GET /v2/<name>/manifests/<ref>` (subject, `.att`, `.sig`, fallback index).
pub const MANIFEST_GET: &str = "manifest_get";
/// `PUT /v2/<name>/manifests/<ref>`.
pub const MANIFEST_PUT: &str = "manifest_put";
/// `HEAD /v2/<name>/blobs/<digest>`.
pub const BLOB_HEAD: &str = "blob_head";
/// `POST /v2/<name>/blobs/uploads/` (opens an upload session).
pub const BLOB_UPLOAD_START: &str = "blob_upload_start";
/// `PUT <upload location>?digest=` (monolithic upload of the content).
pub const BLOB_UPLOAD: &str = "blob_upload";
/// `GET /v2/<name>/blobs/<digest>` (reading envelopes back, `verify`).
pub const BLOB_GET: &str = "blob_get";
/// `GET /v2/<name>/referrers/<digest>` (referrers API probe, once per registry; the list
/// itself when reading).
pub const REFERRERS_GET: &str = "referrers_get";
/// Token endpoint request (bearer auth).
pub const AUTH: &str = "auth";
/// `GET /v2/<name>/tags/list` (`provenant lineage`: the attestation tags of a repository).
pub const TAGS_LIST: &str = "tags_list";
/// `GET /v2/_catalog` (`provenant lineage` over a whole registry).
pub const CATALOG_GET: &str = "catalog_get";
/// Every op above, e.g. to pre-register metric label values.
pub const ALL: [&str; 10] = [
    MANIFEST_GET,
    MANIFEST_PUT,
    BLOB_HEAD,
    BLOB_UPLOAD_START,
    BLOB_UPLOAD,
    BLOB_GET,
    REFERRERS_GET,
    AUTH,
    TAGS_LIST,
    CATALOG_GET,
];
/// Not an HTTP request: an invalid repository, digest or attestation.
pub const INPUT: &str = "input";
