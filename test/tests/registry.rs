//! Registry fixture against the real `docker-registry` (or `E2E_REGISTRY`).

use anyhow::Result;
use provenant_testbed::registry::{
    Descriptor, MODEL_ARTIFACT_TYPE, MODEL_FILE_MEDIA_TYPE, OCI_EMPTY_BLOB, OCI_EMPTY_MEDIA_TYPE,
    OCI_MANIFEST_MEDIA_TYPE, Registry, TITLE_ANNOTATION, sha256_digest,
};
use reqwest::StatusCode;

/// A repository name unique to this test run (tests may share an external registry).
fn repo(name: &str) -> String {
    format!(
        "testbed/{name}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

#[tokio::test]
async fn push_model_and_read_it_back() -> Result<()> {
    let registry = Registry::from_env_or_start().await?;
    let repo = repo("mnist");
    let weights = b"\x00\x01 not really safetensors".as_slice();
    let card = b"# MNIST\ntrained by the testbed\n".as_slice();
    let model = registry
        .push_model(
            &repo,
            "v1",
            &[("model.safetensors", weights), ("README.md", card)],
        )
        .await?;

    assert_eq!(model.repository, format!("{}/{repo}", registry.host()));
    assert_eq!(
        model.reference,
        format!("{}/{repo}@{}", registry.host(), model.digest)
    );
    assert_eq!(model.digest, sha256_digest(&model.manifest));

    let by_tag = registry
        .get_manifest(&repo, "v1")
        .await?
        .expect("tag v1 exists");
    assert_eq!(by_tag.digest, sha256_digest(&by_tag.bytes));
    assert_eq!(by_tag.digest, model.digest);
    assert_eq!(by_tag.bytes, model.manifest);
    assert_eq!(by_tag.media_type, OCI_MANIFEST_MEDIA_TYPE);
    let by_digest = registry
        .get_manifest(&repo, &model.digest)
        .await?
        .expect("by digest");
    assert_eq!(by_digest.bytes, by_tag.bytes);
    assert_eq!(
        registry.resolve(&repo, "v1").await?.as_deref(),
        Some(model.digest.as_str())
    );

    let json = by_tag.json()?;
    assert_eq!(json["artifactType"], MODEL_ARTIFACT_TYPE);
    assert_eq!(json["config"]["mediaType"], OCI_EMPTY_MEDIA_TYPE);
    let layers = json["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0]["mediaType"], MODEL_FILE_MEDIA_TYPE);
    assert_eq!(
        layers[0]["annotations"][TITLE_ANNOTATION],
        "model.safetensors"
    );
    assert_eq!(layers[1]["annotations"][TITLE_ANNOTATION], "README.md");
    let first = layers[0]["digest"].as_str().expect("digest");
    assert_eq!(
        registry.get_blob(&repo, first).await?.as_deref(),
        Some(weights)
    );
    assert_eq!(
        registry
            .get_blob(&repo, &model.layers[1].digest)
            .await?
            .as_deref(),
        Some(card)
    );
    let config = json["config"]["digest"].as_str().expect("config digest");
    assert_eq!(
        registry.get_blob(&repo, config).await?.as_deref(),
        Some(OCI_EMPTY_BLOB)
    );

    assert!(registry.get_manifest(&repo, "nope").await?.is_none());
    assert!(
        registry
            .get_blob(&repo, &sha256_digest(b"absent"))
            .await?
            .is_none()
    );
    Ok(())
}

#[tokio::test]
async fn tags_are_listed() -> Result<()> {
    let registry = Registry::from_env_or_start().await?;
    let repo = repo("tags");
    assert!(
        registry.list_tags(&repo).await?.is_empty(),
        "unknown repo has no tags"
    );
    let a = registry.push_model(&repo, "v2", &[("w", b"a")]).await?;
    let b = registry.push_model(&repo, "v1", &[("w", b"b")]).await?;
    let again = registry.push_model(&repo, "latest", &[("w", b"b")]).await?;
    assert_ne!(a.digest, b.digest);
    assert_eq!(b.digest, again.digest, "same files, same manifest digest");
    assert_eq!(registry.list_tags(&repo).await?, ["latest", "v1", "v2"]);

    assert!(registry.delete_manifest(&repo, &a.digest).await?);
    assert_eq!(registry.list_tags(&repo).await?, ["latest", "v1"]);
    assert!(registry.get_manifest(&repo, &a.digest).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn stop_and_restart_keep_port_and_data() -> Result<()> {
    let mut registry = Registry::from_env_or_start().await?;
    if !registry.is_local() {
        eprintln!("external registry: outage test skipped");
        return Ok(());
    }
    let host = registry.host().to_string();
    let repo = repo("outage");
    let model = registry
        .push_model(&repo, "v1", &[("w", b"survives")])
        .await?;

    registry.stop().await?;
    assert!(!registry.is_running());
    let err = registry
        .get_manifest(&repo, "v1")
        .await
        .expect_err("registry is down");
    assert!(err.is::<reqwest::Error>(), "connection error, got {err:#}");
    assert!(registry.push_blob(&repo, b"x").await.is_err());

    registry.restart().await?;
    assert!(registry.is_running());
    assert_eq!(registry.host(), host);
    let back = registry
        .get_manifest(&repo, "v1")
        .await?
        .expect("data kept");
    assert_eq!(back.digest, model.digest);
    assert_eq!(registry.list_tags(&repo).await?, ["v1"]);

    // restart() of a running registry works too.
    registry.restart().await?;
    assert!(registry.get_manifest(&repo, &model.digest).await?.is_some());
    Ok(())
}

#[tokio::test]
async fn drop_stops_the_process() -> Result<()> {
    let registry = Registry::start().await?;
    let url = format!("{}/v2/", registry.url());
    let client = registry.http().clone();
    assert_eq!(client.get(&url).send().await?.status(), StatusCode::OK);
    let log = registry.log_path().expect("local");
    assert!(log.exists());
    drop(registry);
    assert!(
        client.get(&url).send().await.is_err(),
        "nothing listens after drop"
    );
    assert!(!log.exists(), "temp dir removed");
    Ok(())
}

/// OCI 1.1 referrer: `subject` and `artifactType` are accepted and stored verbatim, but
/// distribution 2.8 has no referrers API (clients must use the tag-schema fallback).
#[tokio::test]
async fn referrer_with_subject_is_accepted_without_referrers_api() -> Result<()> {
    let registry = Registry::from_env_or_start().await?;
    let repo = repo("referrers");
    let model = registry.push_model(&repo, "v1", &[("w", b"model")]).await?;

    let envelope =
        br#"{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[]}"#;
    registry.push_blob(&repo, OCI_EMPTY_BLOB).await?;
    registry.push_blob(&repo, envelope).await?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "artifactType": "application/vnd.in-toto+json",
        "config": Descriptor::empty(),
        "layers": [Descriptor::of("application/vnd.dsse.envelope.v1+json", envelope)],
        "subject": model.descriptor(),
    }))?;
    let digest = registry
        .push_manifest(
            &repo,
            &sha256_digest(&manifest),
            OCI_MANIFEST_MEDIA_TYPE,
            &manifest,
        )
        .await?;
    let back = registry
        .get_manifest(&repo, &digest)
        .await?
        .expect("stored");
    assert_eq!(back.bytes, manifest, "stored verbatim");
    let json = back.json()?;
    assert_eq!(json["subject"]["digest"], model.digest.as_str());
    assert_eq!(json["artifactType"], "application/vnd.in-toto+json");

    let referrers = registry
        .http()
        .get(format!(
            "{}/v2/{repo}/referrers/{}",
            registry.url(),
            model.digest
        ))
        .send()
        .await?;
    if registry.is_local() {
        assert_eq!(
            referrers.status(),
            StatusCode::NOT_FOUND,
            "distribution 2.8: no referrers API"
        );
    }
    Ok(())
}
