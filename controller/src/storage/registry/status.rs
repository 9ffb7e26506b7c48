//! A registry's answer to a request that did not succeed, as a [`StorageError`]: the status
//! decides the kind (not found, transient, permanent) and the registry's error body, untrusted,
//! becomes one short printable line fit for a condition a tenant reads.

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use serde::Deserialize;

use super::client::Response;
use crate::storage::error::{ErrorKind, StorageError, printable};

/// An error for a status the caller did not expect: 404 → NotFound, 408/429/5xx → Transient,
/// other 4xx → Permanent; the message is the registry's own (`CODE: message`).
pub(super) fn status_error(op: &'static str, target: &str, resp: &Response) -> StorageError {
    let status = resp.status.as_u16();
    // A manifest PUT referencing a blob the registry does not have: it raced that blob's upload
    // (another writer's, or ours from another process), or the blob is gone (registry wiped,
    // garbage-collected) while we remembered it. Storing the blob again and retrying helps.
    let blob_unknown = status == 400
        && ErrorResponse::codes(&resp.body)
            .iter()
            .any(|c| c == "MANIFEST_BLOB_UNKNOWN" || c == "BLOB_UNKNOWN");
    let kind = match status {
        404 => ErrorKind::NotFound,
        408 | 429 | 500..=599 => ErrorKind::Transient,
        400 if blob_unknown => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    };
    let detail = body_detail(resp);
    let retry_after = (kind == ErrorKind::Transient)
        .then(|| resp.header(RETRY_AFTER.as_str()))
        .flatten()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs.min(MAX_RETRY_AFTER_SECS)));
    StorageError::new(op, target, kind, format!("HTTP {status} {detail}"))
        .with_status(status)
        .with_blob_unknown(blob_unknown)
        .with_retry_after(retry_after)
}

/// The longest part of a registry's error body kept in an error (and so in a run's conditions).
const MAX_BODY_DETAIL_CHARS: usize = 200;

/// What an error body says, fit for a condition a tenant reads: the registry's `CODE: message`
/// list, else its text, as one printable line of at most [`MAX_BODY_DETAIL_CHARS`]; an HTML page
/// (a proxy's or load balancer's) is not echoed, only the status's reason.
fn body_detail(resp: &Response) -> String {
    let reason = || {
        resp.status
            .canonical_reason()
            .unwrap_or_default()
            .to_string()
    };
    let text = match ErrorResponse::summary(&resp.body) {
        Some(summary) => summary,
        None => {
            let text = String::from_utf8_lossy(&resp.body[..resp.body.len().min(4096)]);
            let html = resp.media_type().is_some_and(|m| m.contains("html"))
                || text.trim_start().starts_with('<');
            if html {
                return format!("{} (HTML body not shown)", reason());
            }
            text.into_owned()
        }
    };
    let detail = printable(&text, MAX_BODY_DETAIL_CHARS);
    if detail.is_empty() { reason() } else { detail }
}

/// `CODE: message; CODE: message` from a registry's error body (its bytes: untrusted), or `None`
/// when the body is not a distribution-spec error.
pub fn error_summary(body: &[u8]) -> Option<String> {
    ErrorResponse::summary(body)
}

/// The longest `Retry-After` honoured: the registry's number, capped before it becomes a
/// `Duration` anyone may add to an `Instant`.
const MAX_RETRY_AFTER_SECS: u64 = 3600;

/// The distribution-spec error body: `{"errors":[{"code","message","detail"}]}`. Not
/// `oci_spec::distribution::ErrorResponse`: its `code` is a closed enum and required, so a body
/// with any other code (registries add their own) would not parse and the registry's message
/// would be lost from the error.
#[derive(Debug, Clone, Default, Deserialize)]
struct ErrorResponse {
    #[serde(default)]
    errors: Option<Vec<RegistryError>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RegistryError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl ErrorResponse {
    fn parse(body: &[u8]) -> Vec<RegistryError> {
        serde_json::from_slice::<ErrorResponse>(body)
            .ok()
            .and_then(|r| r.errors)
            .unwrap_or_default()
    }

    /// The error codes in a registry error body (empty when it is not one).
    fn codes(body: &[u8]) -> Vec<String> {
        Self::parse(body).into_iter().map(|e| e.code).collect()
    }

    /// `CODE: message; CODE: message`, or `None` when the body is not a registry error.
    fn summary(body: &[u8]) -> Option<String> {
        let errors = Self::parse(body);
        if errors.is_empty() {
            return None;
        }
        Some(
            errors
                .iter()
                .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                    (false, false) => format!("{}: {}", e.code, e.message),
                    (false, true) => e.code.clone(),
                    _ => e.message.clone(),
                })
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;
    use reqwest::header::{CONTENT_TYPE, HeaderMap};

    use super::*;

    #[test]
    fn error_bodies_become_one_short_clean_line() {
        let resp = |ct: &str, body: Vec<u8>| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, ct.parse().unwrap());
            Response {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                headers,
                body,
            }
        };
        let mut noise = b"line one\r\n\x1b[2J\x00evil\n".repeat(1 << 15);
        noise.truncate(1 << 20);
        let e = status_error("x", "r", &resp("text/plain", noise));
        assert!(
            e.message()
                .starts_with("HTTP 500 line one [2J evil line one"),
            "{}",
            e.message()
        );
        assert!(e.message().chars().count() <= 220, "{}", e.message());
        assert!(
            !e.message().chars().any(char::is_control),
            "{}",
            e.message()
        );
        let html = b"<html><body><script>alert(1)</script></body></html>".to_vec();
        let e = status_error("x", "r", &resp("text/html; charset=utf-8", html));
        assert_eq!(
            e.message(),
            "HTTP 500 Internal Server Error (HTML body not shown)"
        );
        let long = format!(
            r#"{{"errors":[{{"code":"UNKNOWN","message":"{}"}}]}}"#,
            "a\\n".repeat(100_000)
        );
        let e = status_error("x", "r", &resp("application/json", long.into_bytes()));
        assert!(
            e.message().starts_with("HTTP 500 UNKNOWN: a a a"),
            "{}",
            e.message()
        );
        assert!(e.message().chars().count() <= 220, "{}", e.message());
    }

    #[test]
    fn registry_error_summary() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#;
        assert_eq!(
            ErrorResponse::summary(body).as_deref(),
            Some("MANIFEST_UNKNOWN: manifest unknown")
        );
        assert_eq!(ErrorResponse::summary(b"<html>"), None);
        assert_eq!(ErrorResponse::summary(b"{}"), None);
        assert_eq!(ErrorResponse::summary(br#"{"errors":null}"#), None);
    }

    #[test]
    fn status_errors_carry_the_registry_message() {
        let resp = |status: u16, body: &str| Response {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
        };
        let e = status_error(
            "manifest_get",
            "r",
            &resp(
                404,
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            ),
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.message(), "HTTP 404 MANIFEST_UNKNOWN: manifest unknown");
        assert_eq!(e.status(), Some(404));
        assert!(status_error("x", "r", &resp(503, "")).is_transient());
        assert!(status_error("x", "r", &resp(429, "")).is_transient());
        assert!(status_error("x", "r", &resp(408, "")).is_transient());
        let race =
            r#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#;
        let e = status_error("x", "r", &resp(400, race));
        assert!(
            e.is_transient() && e.is_blob_unknown(),
            "a blob upload race is retried"
        );
        // distribution 2.8 lists every problem of a manifest.
        let several = r#"{"errors":[{"code":"DIGEST_INVALID","message":"x"},{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#;
        assert!(status_error("x", "r", &resp(400, several)).is_blob_unknown());
        let e = status_error("x", "r", &resp(400, "bad"));
        assert!(!e.is_blob_unknown());
        assert_eq!(e.kind(), ErrorKind::Permanent);
        assert_eq!(e.message(), "HTTP 400 bad");
        assert_eq!(
            status_error("x", "r", &resp(403, "")).message(),
            "HTTP 403 Forbidden"
        );
    }
}
