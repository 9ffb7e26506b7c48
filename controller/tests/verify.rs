//! `provenant verify`'s decision: each kind of tampering and each unmet policy fails with its
//! reason; an intact attestation of the right artifact verifies and is summarized.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jiff::{SignedDuration, Timestamp};
use provenant::api::TrainingRun;
use provenant::config::ControllerConfig;
use provenant::engine;
use provenant::execute::placement;
use provenant::provenance::statement::Statement;
use provenant::provenance::{self, BuilderIdentity};
use provenant::signing::{CosignKey, Signer};
use provenant::verify::{DatasetRequirement, Policy, render, verify};
use serde_json::Value;

const MODEL: &str = "sha256:c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
const DATASET: &str = "sha256:9b2f0a6e3c1d4b5a69788f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c";
const IMAGE: &str = "sha256:4f1c1a8e8f0a7c1d2f3e4d5c6b7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a";
/// `augment-cache`: declared without a digest, this digest reported by the workload.
const CACHE: &str = "sha256:5d41402abc4b2a76b9719d911017c592ae2b0c4e6f8a9b7c6d5e4f3a2b1c0d9e";

fn require(text: &str) -> DatasetRequirement {
    DatasetRequirement::parse(text).unwrap()
}

fn signed(key: &CosignKey) -> Vec<u8> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/succeeded-run.yaml"
    ))
    .unwrap();
    let run: TrainingRun = serde_saphyr::from_str(&text).unwrap();
    let placement =
        placement(&ControllerConfig::defaults(), run.spec.accelerator.as_ref()).unwrap();
    let builder = BuilderIdentity::controller(provenance::DEFAULT_BUILDER_ID, None);
    let statement = provenance::statement_for_run(&run, &placement, &builder).unwrap();
    engine::sign(&statement, key).unwrap().envelope
}

fn now() -> Timestamp {
    "2026-11-21T00:00:00Z".parse().unwrap()
}

fn check(
    envelope: Vec<u8>,
    digest: &str,
    key: &CosignKey,
    policy: &Policy,
) -> provenant::verify::Verdict {
    verify(
        "registry.example.com/models/resnet50-finetuned",
        digest,
        &[("test".into(), envelope)],
        key.public_key(),
        policy,
        now(),
    )
}

fn failures(verdict: &provenant::verify::Verdict) -> String {
    verdict
        .attestations
        .iter()
        .flat_map(|c| c.failures.clone())
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn an_intact_attestation_verifies_and_is_summarized() {
    let key = CosignKey::ephemeral().unwrap();
    let policy = Policy {
        builder_id: Some("https://provenant.dev/controller/v1".into()),
        datasets: vec![
            require(DATASET),
            require(&format!("imagenet-subset={DATASET}")),
        ],
        images: vec![IMAGE.into()],
        max_age: Some(SignedDuration::from_hours(48)),
        ..Default::default()
    };
    let verdict = check(signed(&key), MODEL, &key, &policy);
    assert!(verdict.verified, "{}", failures(&verdict));
    let text = render(&verdict);
    for expected in [
        "Verified:",
        "builder       https://provenant.dev/controller/v1",
        "dataset       imagenet-subset sha256:9b2f",
        "dataset       augment-cache sha256:5d41402abc4b2a76b9719d911017c592ae2b0c4e6f8a9b7c6d5e4f3a2b1c0d9e (reported)",
        "seed          42",
        "NVIDIA-A100-SXM4-80GB, x4, driver 535.104.05, CUDA 12.2",
        "\"top1\":0.812",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn tampering_fails_with_the_reason() {
    let key = CosignKey::ephemeral().unwrap();
    let good = signed(&key);
    let mut envelope: Value = serde_json::from_slice(&good).unwrap();

    // One byte of the payload changed.
    let mut payload = STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    let i = payload
        .windows(4)
        .position(|w| w == b"\"42\"" || w == b":42,")
        .unwrap_or(100);
    payload[i + 1] ^= 1;
    let mut tampered = envelope.clone();
    tampered["payload"] = Value::String(STANDARD.encode(&payload));
    let verdict = check(
        serde_json::to_vec(&tampered).unwrap(),
        MODEL,
        &key,
        &Policy::default(),
    );
    assert!(!verdict.verified);
    assert!(
        failures(&verdict).starts_with("signature:"),
        "{}",
        failures(&verdict)
    );

    // One byte of the signature changed.
    let mut sig = STANDARD
        .decode(envelope["signatures"][0]["sig"].as_str().unwrap())
        .unwrap();
    let last = sig.len() - 3;
    sig[last] ^= 0x40;
    envelope["signatures"][0]["sig"] = Value::String(STANDARD.encode(&sig));
    let verdict = check(
        serde_json::to_vec(&envelope).unwrap(),
        MODEL,
        &key,
        &Policy::default(),
    );
    assert!(!verdict.verified);
    assert!(
        failures(&verdict).starts_with("signature:"),
        "{}",
        failures(&verdict)
    );

    // The wrong key.
    let other = CosignKey::ephemeral().unwrap();
    assert_ne!(other.key_id(), key.key_id());
    let verdict = check(good.clone(), MODEL, &other, &Policy::default());
    assert!(!verdict.verified);
    assert!(
        failures(&verdict).contains("signature:"),
        "{}",
        failures(&verdict)
    );

    // A swapped model: the attestation is about another artifact.
    let swapped = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let verdict = check(good.clone(), swapped, &key, &Policy::default());
    assert!(!verdict.verified);
    assert!(
        failures(&verdict).contains("subject digest mismatch"),
        "{}",
        failures(&verdict)
    );

    // No attestation at all.
    let verdict = verify("m", MODEL, &[], key.public_key(), &Policy::default(), now());
    assert!(!verdict.verified);
    assert!(render(&verdict).contains("no attestation found"));
}

#[test]
fn unmet_policies_fail_with_the_reason() {
    let key = CosignKey::ephemeral().unwrap();
    let good = signed(&key);
    let other = "sha256:5555555555555555555555555555555555555555555555555555555555555555";
    let cases = [
        (
            Policy {
                builder_id: Some("https://evil.example.com/builder".into()),
                ..Default::default()
            },
            "builder id is",
        ),
        (
            Policy {
                datasets: vec![require(other)],
                ..Default::default()
            },
            "required dataset",
        ),
        (
            Policy {
                images: vec![other.into()],
                ..Default::default()
            },
            "required image",
        ),
        (
            Policy {
                max_age: Some(SignedDuration::from_mins(10)),
                ..Default::default()
            },
            "older than the maximum age",
        ),
    ];
    for (policy, reason) in cases {
        let verdict = check(good.clone(), MODEL, &key, &policy);
        assert!(!verdict.verified, "{reason}");
        assert!(
            failures(&verdict).contains(reason),
            "{reason}: {}",
            failures(&verdict)
        );
    }
}

/// A digest the workload supplied for a dataset declared without one does not meet
/// `--require-dataset`, whichever form names it, unless reported digests are allowed.
#[test]
fn a_dataset_digest_only_the_workload_reported_is_refused_unless_allowed() {
    let key = CosignKey::ephemeral().unwrap();
    let good = signed(&key);
    for want in [CACHE.to_string(), format!("augment-cache={CACHE}")] {
        let policy = Policy {
            datasets: vec![require(&want)],
            ..Default::default()
        };
        let verdict = check(good.clone(), MODEL, &key, &policy);
        assert!(!verdict.verified, "{want}");
        let said = failures(&verdict);
        assert!(
            said.contains(&format!(
                "required dataset {want}: the digest of dataset \"augment-cache\" was only reported by the training workload"
            )) && said.contains("only with --allow-reported-datasets"),
            "{said}"
        );
        let allowed = Policy {
            allow_reported_datasets: true,
            ..policy
        };
        let verdict = check(good.clone(), MODEL, &key, &allowed);
        assert!(verdict.verified, "{}", failures(&verdict));
    }
}

/// A statement written before each source had its own digest field (the controller's golden
/// statement of provenant 0.1.0, kept as it was): it still verifies, and its merged label
/// `["declared", "reported"]` counts as declared only where `externalParameters.datasets`
/// declares that digest.
#[test]
fn a_statement_in_the_format_before_per_source_digests_still_verifies() {
    let key = CosignKey::ephemeral().unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/legacy-0.1.0/statement.json"
    ))
    .unwrap();
    let legacy: Value = serde_json::from_str(&text).unwrap();
    let deps = &legacy["predicate"]["buildDefinition"]["resolvedDependencies"];
    assert_eq!(
        deps[2]["annotations"],
        serde_json::json!({"source": ["declared", "reported"]}),
        "the fixture keeps the old label"
    );
    let statement: Statement = serde_json::from_value(legacy).unwrap();
    let envelope = engine::sign(&statement, &key).unwrap().envelope;

    let declared = Policy {
        datasets: vec![require(&format!("imagenet-subset={DATASET}"))],
        images: vec![IMAGE.into()],
        ..Default::default()
    };
    let verdict = check(envelope.clone(), MODEL, &key, &declared);
    assert!(verdict.verified, "{}", failures(&verdict));
    let text = render(&verdict);
    assert!(
        text.contains(&format!("dataset       augment-cache {CACHE} (reported)")),
        "the old label is shown as what it proves:\n{text}"
    );

    let reported = Policy {
        datasets: vec![require(&format!("augment-cache={CACHE}"))],
        ..Default::default()
    };
    let verdict = check(envelope.clone(), MODEL, &key, &reported);
    assert!(!verdict.verified);
    let said = failures(&verdict);
    assert!(
        said.contains("dataset \"augment-cache\" was only reported by the training workload")
            && said.contains("labels it declared"),
        "{said}"
    );
    let allowed = Policy {
        allow_reported_datasets: true,
        ..reported
    };
    let verdict = check(envelope, MODEL, &key, &allowed);
    assert!(verdict.verified, "{}", failures(&verdict));
}
