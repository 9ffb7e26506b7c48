//! `provenant verify`'s decision: each kind of tampering and each unmet policy fails with its
//! reason; an intact attestation of the right artifact verifies and is summarized.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jiff::{SignedDuration, Timestamp};
use provenant::api::TrainingRun;
use provenant::config::ControllerConfig;
use provenant::engine;
use provenant::execute::placement;
use provenant::provenance::{self, BuilderIdentity};
use provenant::signing::{CosignKey, Signer};
use provenant::verify::{Policy, render, verify};
use serde_json::Value;

const MODEL: &str = "sha256:c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
const DATASET: &str = "sha256:9b2f0a6e3c1d4b5a69788f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c";
const IMAGE: &str = "sha256:4f1c1a8e8f0a7c1d2f3e4d5c6b7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a";

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
        datasets: vec![DATASET.into()],
        images: vec![IMAGE.into()],
        max_age: Some(SignedDuration::from_hours(48)),
    };
    let verdict = check(signed(&key), MODEL, &key, &policy);
    assert!(verdict.verified, "{}", failures(&verdict));
    let text = render(&verdict);
    for expected in [
        "Verified:",
        "builder       https://provenant.dev/controller/v1",
        "dataset       imagenet-subset sha256:9b2f",
        "(declared+reported)",
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
                datasets: vec![other.into()],
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
