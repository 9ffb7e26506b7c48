//! The Sigstore bundle encoding (`provenance.encoding: sigstore-bundle | both`): what the
//! engine and the registry store attach to a model in a real registry (distribution 2.8, no
//! referrers API, so through the fallback tag), checked with the real cosign v3
//! (`hack/tools/bin/cosign`, `verify-attestation --new-bundle-format` with a key and no
//! transparency log) and the `provenant verify` binary; both refuse a bundle whose signature or
//! payload was altered, and cosign a wrong key. `provenant attest --encoding` writes the same
//! into an OCI layout. docs/registry-layout.md and docs/verify.md show what these tests print.

#[path = "bundle/fixture.rs"]
mod fixture;

use std::collections::BTreeMap;
#[path = "support/attest_cmd.rs"]
mod attest_cmd;
use attest_cmd::provenant;

use std::process::Command;

use anyhow::{Context, Result};
use fixture::{
    Alteration, Fixture, altered, altered_payload, altered_signature, cosign_statement, hex,
    pretty, signed_claim, text,
};
use provenant::engine;
use provenant::signing::{BUNDLE_V03_MEDIA_TYPE, Signer, key_hint};
use provenant::storage::{Encoding, Subject, op};
use provenant_testbed::registry::sha256_digest;
use provenant_testbed::tools;
use serde_json::Value;

const SLSA: &str = "https://slsa.dev/provenance/v1";

#[tokio::test]
async fn cosign_and_provenant_verify_a_model_attested_only_with_a_bundle() -> Result<()> {
    let f = Fixture::start().await?;
    let (model, record) = f.signed_model("bundle-only").await?;
    let references = engine::attach(&record, f.store.as_ref(), Encoding::SigstoreBundle).await?;

    // One referrer, listed in the fallback index; no cosign tags.
    let [referrer] = references.as_slice() else {
        panic!("one reference expected: {references:?}");
    };
    let referrer_digest = referrer.rsplit_once('@').unwrap().1;
    let mut tags = f.registry.list_tags(&model.repo).await?;
    tags.sort();
    assert_eq!(tags, vec![format!("sha256-{}", hex(&model)), "v1".into()]);
    let index = f
        .manifest(&model, &format!("sha256-{}", hex(&model)))
        .await?;
    let entry = &index["manifests"][0];
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(entry["digest"], referrer_digest);
    assert_eq!(entry["artifactType"], BUNDLE_V03_MEDIA_TYPE);
    assert_eq!(
        entry["annotations"]["dev.sigstore.bundle.predicateType"],
        SLSA
    );

    // The referrer manifest as cosign v3 writes it.
    let manifest = f.manifest(&model, referrer_digest).await?;
    assert_eq!(manifest["artifactType"], BUNDLE_V03_MEDIA_TYPE);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(manifest["config"]["artifactType"], BUNDLE_V03_MEDIA_TYPE);
    assert_eq!(manifest["subject"]["digest"], model.digest);
    assert_eq!(
        manifest["annotations"]["dev.sigstore.bundle.content"],
        "dsse-envelope"
    );
    assert_eq!(
        manifest["annotations"]["dev.sigstore.bundle.predicateType"],
        SLSA
    );
    let layer = &manifest["layers"][0];
    assert_eq!(layer["mediaType"], BUNDLE_V03_MEDIA_TYPE);
    let layer_digest = layer["digest"].as_str().unwrap();
    assert_eq!(
        layer["annotations"]["org.opencontainers.image.title"],
        format!("{}.sigstore.json", layer_digest.replacen(':', "-", 1))
    );

    // The bundle: the envelope the controller signed, its key's hint, no tlog entry.
    let bytes = f
        .registry
        .get_blob(&model.repo, layer_digest)
        .await?
        .context("bundle blob")?;
    assert_eq!(sha256_digest(&bytes), layer_digest);
    let bundle: Value = serde_json::from_slice(&bytes)?;
    eprintln!("bundle\n{}", String::from_utf8_lossy(&bytes));
    assert_eq!(bundle["mediaType"], BUNDLE_V03_MEDIA_TYPE);
    let material = bundle["verificationMaterial"].as_object().unwrap();
    assert_eq!(material.len(), 1, "only the public key: {material:?}");
    assert_eq!(material["publicKey"]["hint"], key_hint(f.key.key_id())?);
    let signed: Value = serde_json::from_slice(&record.envelope)?;
    assert_eq!(bundle["dsseEnvelope"]["payload"], signed["payload"]);
    assert_eq!(
        bundle["dsseEnvelope"]["signatures"],
        serde_json::json!([{"sig": signed["signatures"][0]["sig"]}])
    );

    // `oras pull` saves the layer under its title: the bundle, as a file.
    let pulled = f.path("pulled");
    let out = Command::new(tools::path("oras").unwrap_or_else(|e| panic!("{e:#}")))
        .args([
            "pull",
            "--plain-http",
            "-o",
            pulled.to_str().unwrap(),
            referrer,
        ])
        .env("HOME", f.dir.path())
        .output()?;
    assert!(out.status.success(), "{}", text(&out));
    let title = layer["annotations"]["org.opencontainers.image.title"]
        .as_str()
        .unwrap();
    assert_eq!(std::fs::read(pulled.join(title))?, bytes);

    // cosign v3 accepts it and prints the statement about this model.
    let out = f.cosign(&model.reference, "cosign.pub", true);
    assert!(out.status.success(), "{}", text(&out));
    let statement = cosign_statement(&out)?;
    assert_eq!(statement["subject"][0]["digest"]["sha256"], hex(&model));
    assert_eq!(statement["predicateType"], SLSA);
    // ... from the bundle: there is no `.att` for the legacy path to read.
    assert!(
        !f.cosign(&model.reference, "cosign.pub", false)
            .status
            .success()
    );
    // ... and refuses another key.
    let out = f.cosign(&model.reference, "other.pub", true);
    assert!(!out.status.success(), "{}", text(&out));

    // `cosign verify` (v3) takes the bundle's statement as the model's signature; there is no
    // `.sig` for the legacy format.
    let out = f.cosign_verify(&model.reference, true);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(signed_claim(&out)?, (model.digest.clone(), SLSA.into()));
    assert!(!f.cosign_verify(&model.reference, false).status.success());

    // provenant verify reads the bundle.
    let out = f.provenant_verify(&model.reference, false);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = f.provenant_verify(&model.reference, true);
    let verdict: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(verdict["verified"], true);
    let found: Vec<&Value> = verdict["attestations"].as_array().unwrap().iter().collect();
    assert_eq!(found.len(), 1, "{}", pretty(&verdict));
    assert_eq!(
        found[0]["foundAt"],
        format!("Sigstore bundle {}", referrer.as_str())
    );

    // Why the bundle's signature has no `keyid`: cosign v3 (sigstore-go) skips a signature
    // whose keyid is not its own SSH-style fingerprint of the key, so with provenant's hex key
    // id it finds no valid signature.
    let (keyid_model, keyid_record) = f.signed_model("bundle-with-keyid").await?;
    let mut with_keyid = keyid_record.bundle_attestations()?.remove(0);
    let mut bundle: Value = serde_json::from_slice(&with_keyid.bundle)?;
    bundle["dsseEnvelope"]["signatures"][0]["keyid"] = f.key.key_id().into();
    with_keyid.bundle = serde_json::to_vec(&bundle)?;
    f.store.attach_bundle(&with_keyid).await?;
    let out = f.cosign(&keyid_model.reference, "cosign.pub", true);
    assert!(!out.status.success(), "{}", text(&out));

    // Attaching again (a retried pass) writes nothing new.
    let again = engine::attach(&record, f.store.as_ref(), Encoding::SigstoreBundle).await?;
    assert_eq!(again, references);
    let index = f
        .manifest(&model, &format!("sha256-{}", hex(&model)))
        .await?;
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    Ok(())
}

#[tokio::test]
async fn an_altered_bundle_is_refused_by_cosign_and_provenant_verify() -> Result<()> {
    let f = Fixture::start().await?;
    let alterations: [(&str, Alteration); 2] = [
        ("signature", altered_signature),
        ("payload", altered_payload),
    ];
    for (what, alter) in alterations {
        // Control: the intact bundle of the same statement verifies (same flags, same key).
        let (intact, record) = f.signed_model(&format!("intact-{what}")).await?;
        f.store
            .attach_bundle(&record.bundle_attestations()?.remove(0))
            .await?;
        assert!(
            f.cosign(&intact.reference, "cosign.pub", true)
                .status
                .success()
        );
        // The registry serves an altered bundle (a registry writer, not the controller, edited it).
        let (model, record) = f.signed_model(&format!("altered-{what}")).await?;
        let attached = f.store.attach_bundle(&altered(&record, alter)?).await?;
        let out = f.cosign(&model.reference, "cosign.pub", true);
        assert!(!out.status.success(), "{what}: {}", text(&out));
        assert!(
            text(&out).contains("could not verify envelope"),
            "{what}: {}",
            text(&out)
        );
        let out = f.provenant_verify(&model.reference, false);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
        let report = text(&out);
        let found_at = format!("Sigstore bundle {}", attached.references[0]);
        assert!(report.contains(&found_at), "{what}: {report}");
        assert!(
            report.contains("signature: DSSE envelope signature by key"),
            "{what}: {report}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn both_writes_both_encodings_and_each_verifies() -> Result<()> {
    let f = Fixture::start().await?;
    let (model, record) = f.signed_model("both").await?;
    let references = engine::attach(&record, f.store.as_ref(), Encoding::Both).await?;
    let att = format!("{}:sha256-{}.att", model.repository, hex(&model));
    let sig = format!("{}:sha256-{}.sig", model.repository, hex(&model));
    assert_eq!(references.len(), 4, "{references:?}");
    assert_eq!(&references[..2], [att, sig]);

    // The fallback index lists the in-toto referrer and the bundle referrer.
    let index = f
        .manifest(&model, &format!("sha256-{}", hex(&model)))
        .await?;
    let types: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["artifactType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["application/vnd.in-toto+json", BUNDLE_V03_MEDIA_TYPE]
    );

    // cosign reads the bundle by default, the `.att` without the bundle format: both verify.
    for new_bundle_format in [true, false] {
        let out = f.cosign(&model.reference, "cosign.pub", new_bundle_format);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(
            cosign_statement(&out)?["subject"][0]["digest"]["sha256"],
            hex(&model)
        );
    }

    // `cosign verify` (v3) verifies the bundle by default (it takes a bundle's signed statement
    // about the model as the signature), the simple signing `.sig` with the legacy format.
    for (new_bundle_format, claim) in [(true, SLSA), (false, "cosign container image signature")] {
        let out = f.cosign_verify(&model.reference, new_bundle_format);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(signed_claim(&out)?, (model.digest.clone(), claim.into()));
    }

    // provenant verify finds the envelope three ways, two of them the same bytes.
    let out = f.provenant_verify(&model.reference, true);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let verdict: Value = serde_json::from_slice(&out.stdout)?;
    let found = verdict["attestations"].as_array().unwrap();
    assert_eq!(found.len(), 2, "{}", pretty(&verdict));
    assert!(found.iter().all(|c| c["failures"] == serde_json::json!([])));
    assert_eq!(found[0]["foundAt"], references[0]);
    assert_eq!(
        found[1]["foundAt"],
        format!("Sigstore bundle {}", references[3])
    );

    // A model whose `.att` is intact but whose only bundle was altered: each path reads what it
    // should, and provenant verify names the refused bundle beside the verified `.att`.
    let (model, record) = f.signed_model("both-altered").await?;
    engine::attach(&record, f.store.as_ref(), Encoding::Dsse).await?;
    let bad = f
        .store
        .attach_bundle(&altered(&record, altered_signature)?)
        .await?;
    assert!(
        !f.cosign(&model.reference, "cosign.pub", true)
            .status
            .success()
    );
    assert!(
        f.cosign(&model.reference, "cosign.pub", false)
            .status
            .success()
    );
    let out = f.provenant_verify(&model.reference, false);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = text(&out);
    assert!(
        report.contains(&format!("Sigstore bundle {}", bad.references[0])),
        "{report}"
    );
    Ok(())
}

#[tokio::test]
async fn a_bundle_that_cannot_be_read_is_refused_with_the_reason() -> Result<()> {
    let f = Fixture::start().await?;
    let (model, record) = f.signed_model("unreadable").await?;
    let mut attestation = record.bundle_attestations()?.remove(0);
    let mut bundle: Value = serde_json::from_slice(&attestation.bundle)?;
    bundle["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.1".into();
    attestation.bundle = serde_json::to_vec(&bundle)?;
    f.store.attach_bundle(&attestation).await?;
    let out = f.provenant_verify(&model.reference, false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "unreadable: Sigstore bundle mediaType is \"application/vnd.dev.sigstore.bundle+json;version=0.1\", not {BUNDLE_V03_MEDIA_TYPE}"
        )),
        "{}",
        text(&out)
    );
    // A title that is not a plain file name is refused before anything is written.
    attestation.title = Some("../model.sig".into());
    let err = f.store.attach_bundle(&attestation).await.unwrap_err();
    assert!(
        err.to_string().contains("must be a plain file name"),
        "{err}"
    );
    Ok(())
}

/// The controller's flow with `sigstore-bundle`: `resolve`, sign, attach; then a retried
/// attach. docs/registry-layout.md lists these requests.
#[tokio::test]
async fn a_bundle_attach_costs_the_documented_requests() -> Result<()> {
    let f = Fixture::start().await?;
    let (model, record) = f.signed_model("counted").await?;
    f.store
        .resolve(&Subject::new(&model.repository, &model.digest))
        .await?;
    assert_eq!(f.take_requests(), counts(&[(op::MANIFEST_GET, 1)]));
    engine::attach(&record, f.store.as_ref(), Encoding::SigstoreBundle).await?;
    assert_eq!(
        f.take_requests(),
        counts(&[
            (op::REFERRERS_GET, 1),     // the probe, once per registry per store: 404
            (op::MANIFEST_GET, 2),      // the fallback index (404), its read-back
            (op::BLOB_HEAD, 1),         // `{}`, once per repository per store: present
            (op::BLOB_UPLOAD_START, 1), // the bundle
            (op::BLOB_UPLOAD, 1),
            (op::MANIFEST_PUT, 2), // the referrer, the index
        ])
    );
    engine::attach(&record, f.store.as_ref(), Encoding::SigstoreBundle).await?;
    assert_eq!(f.take_requests(), counts(&[(op::MANIFEST_GET, 1)]));
    Ok(())
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(op, n)| (op.to_string(), *n)).collect()
}

// ---- provenant attest --encoding (OCI layout) ----

#[test]
fn attest_writes_the_chosen_encoding_into_a_layout_and_verify_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let out = provenant(&["keys", "generate", "--output-dir", &path("keys")]);
    assert!(out.status.success(), "{}", text(&out));
    let attest = |encoding: &str, name: &str| {
        provenant(&[
            "attest",
            "-f",
            "hack/demo/trainingrun.yaml",
            "--key",
            &path("keys/cosign.key"),
            "--layout",
            &path(&format!("layout-{name}")),
            "--model-dir",
            &path(&format!("model-{name}")),
            "--output-digest",
            &path(&format!("digest-{name}")),
            "--encoding",
            encoding,
            "--quiet",
        ])
    };
    let out = attest("bundle", "bad");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(r#""bundle" is not an encoding: one of dsse, sigstore-bundle, both"#),
        "{}",
        text(&out)
    );

    for (encoding, vias) in [
        ("sigstore-bundle", &["Sigstore bundle oci:"][..]),
        ("both", &["oci:", "Sigstore bundle oci:"][..]),
    ] {
        let out = attest(encoding, encoding);
        assert!(out.status.success(), "{encoding}: {}", text(&out));
        let digest = std::fs::read_to_string(path(&format!("digest-{encoding}"))).unwrap();
        let layout = path(&format!("layout-{encoding}"));
        let index = std::fs::read_to_string(format!("{layout}/index.json")).unwrap();
        assert_eq!(
            index.contains(".att\""),
            encoding == "both",
            "{encoding}: {index}"
        );
        let out = provenant(&[
            "verify",
            &format!("oci:{layout}@{digest}"),
            "--key",
            &path("keys/cosign.pub"),
            "--output",
            "json",
            "--quiet",
        ]);
        assert_eq!(out.status.code(), Some(0), "{encoding}: {}", text(&out));
        let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
        let found: Vec<&str> = verdict["attestations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["foundAt"].as_str().unwrap())
            .collect();
        assert_eq!(found.len(), vias.len(), "{encoding}: {found:?}");
        for (at, via) in found.iter().zip(vias) {
            assert!(at.starts_with(via), "{encoding}: {found:?}");
        }
    }
}
