//! Issue 14, point 2: a registry a tenant points a run at cannot send the controller, and the
//! registry credentials it holds, elsewhere (redirects, upload locations), and its error bodies
//! reach a run's conditions only as one short printable line. A small hostile registry (axum)
//! plays what distribution cannot do on demand; a second server stands for "elsewhere" and
//! records what reached it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use provenant::storage::{
    Attestation, AttestationStore, DockerConfig, RegistryOptions, RegistryStore, RetryPolicy,
    Subject,
};
use provenant_testbed::registry::sha256_digest;

const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;

/// "Elsewhere": records every request (path, Authorization header) and answers 200.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<SeenRequest>>>);

/// A request that reached the other host: its path and `Authorization` header.
type SeenRequest = (String, Option<String>);

impl Seen {
    fn all(&self) -> Vec<SeenRequest> {
        self.0.lock().unwrap().clone()
    }
}

async fn elsewhere(State(seen): State<Seen>, request: Request) -> Response {
    let auth = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    seen.0
        .lock()
        .unwrap()
        .push((request.uri().path().to_string(), auth));
    (
        [(
            header::CONTENT_TYPE,
            "application/vnd.oci.image.manifest.v1+json",
        )],
        MANIFEST,
    )
        .into_response()
}

#[derive(Clone)]
struct Hostile {
    /// `host:port` of the elsewhere server.
    elsewhere: String,
}

const BASIC: &str = "user:secret";

/// The hostile registry: every request needs Basic credentials (so the client holds some), then
/// manifests redirect elsewhere or across its own paths, blob uploads are sent elsewhere, and
/// `noisy` answers 500 with a megabyte of control characters.
async fn hostile(State(h): State<Hostile>, request: Request) -> Response {
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(BASIC)
    );
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == basic.as_bytes());
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, r#"Basic realm="hostile""#)],
            "",
        )
            .into_response();
    }
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let digest = sha256_digest(MANIFEST);
    let method = request.method().clone();
    match (method, path.as_str()) {
        (Method::GET, p) if p == format!("/v2/cross/m/manifests/{digest}") => (
            StatusCode::TEMPORARY_REDIRECT,
            [(
                header::LOCATION,
                format!("http://{}/v2/cross/m/manifests/{digest}", h.elsewhere),
            )],
        )
            .into_response(),
        (Method::GET, p) if p == format!("/v2/moved/m/manifests/{digest}") => {
            if query.contains("here=1") {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/vnd.oci.image.manifest.v1+json",
                    )],
                    MANIFEST,
                )
                    .into_response()
            } else {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, format!("{p}?here=1"))],
                )
                    .into_response()
            }
        }
        (Method::GET, p) if p == format!("/v2/upload/m/manifests/{digest}") => (
            [(
                header::CONTENT_TYPE,
                "application/vnd.oci.image.manifest.v1+json",
            )],
            MANIFEST,
        )
            .into_response(),
        (Method::POST, "/v2/upload/m/blobs/uploads/") => (
            StatusCode::ACCEPTED,
            [(
                header::LOCATION,
                format!("http://{}/v2/upload/m/blobs/uploads/session", h.elsewhere),
            )],
        )
            .into_response(),
        (Method::GET, p) if p.starts_with("/v2/noisy/") => {
            let mut body = b"<!-- \x1b[2J\x00 -->\r\nError\x07 at line\n".repeat(1 << 15);
            body.truncate(1 << 20);
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The hostile registry and the elsewhere server, started; a store holding credentials for the
/// hostile one.
async fn start() -> Result<(String, Seen, RegistryStore)> {
    let seen = Seen::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let elsewhere_host = listener.local_addr()?.to_string();
    let app = Router::new()
        .fallback(self::elsewhere)
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let host = listener.local_addr()?.to_string();
    let app = Router::new().fallback(hostile).with_state(Hostile {
        elsewhere: elsewhere_host.clone(),
    });
    tokio::spawn(async move { axum::serve(listener, app).await });

    let auth = base64::engine::general_purpose::STANDARD.encode(BASIC);
    let config = format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#);
    let store = RegistryStore::new(RegistryOptions {
        // Both plain HTTP: the refusal must come from the host change, not from the scheme.
        insecure_registries: vec![host.clone(), elsewhere_host],
        credentials: Some(DockerConfig::from_json(config.as_bytes())?),
        retry: RetryPolicy {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
            attempts: 2,
        },
        ..RegistryOptions::default()
    });
    Ok((host, seen, store))
}

#[tokio::test]
async fn a_redirect_to_another_host_is_not_followed() -> Result<()> {
    let (host, seen, store) = start().await?;
    let subject = Subject::new(format!("{host}/cross/m"), sha256_digest(MANIFEST));
    let err = store.resolve(&subject).await.unwrap_err();
    assert!(
        err.to_string().contains("refused a redirect"),
        "the redirect is refused, saying so: {err}"
    );
    assert_eq!(seen.all(), [], "nothing was sent to the other host");

    // A redirect within the registry is followed.
    let subject = Subject::new(format!("{host}/moved/m"), sha256_digest(MANIFEST));
    let resolved = store.resolve(&subject).await?;
    assert_eq!(resolved.size, MANIFEST.len() as u64);
    Ok(())
}

#[tokio::test]
async fn an_upload_location_on_another_host_gets_no_blob_and_no_credentials() -> Result<()> {
    let (host, seen, store) = start().await?;
    let attestation = Attestation {
        subject: Subject::new(format!("{host}/upload/m"), sha256_digest(MANIFEST)),
        predicate_type: "https://slsa.dev/provenance/v1".into(),
        envelope:
            br#"{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[]}"#
                .to_vec(),
        signature: None,
    };
    let err = store.attach(&attestation).await.unwrap_err();
    assert!(
        err.to_string().contains("refused the upload Location"),
        "the upload is refused, saying so: {err}"
    );
    assert_eq!(
        seen.all(),
        [],
        "neither the blob nor the registry's credentials went to the other host"
    );
    Ok(())
}

#[tokio::test]
async fn a_huge_error_body_becomes_one_short_clean_line() -> Result<()> {
    let (host, _, store) = start().await?;
    let subject = Subject::new(format!("{host}/noisy/m"), sha256_digest(MANIFEST));
    let err = store.resolve(&subject).await.unwrap_err();
    assert_eq!(err.status(), Some(500), "{err}");
    let shown = err.to_string();
    assert!(
        shown.chars().count() < 400,
        "short: {} chars: {shown:.400}",
        shown.chars().count()
    );
    assert!(
        !shown.chars().any(char::is_control),
        "no control characters or newlines: {shown:?}"
    );
    assert!(!shown.contains("<!--"), "no markup echoed: {shown:.400}");
    Ok(())
}
