use std::sync::OnceLock;

use super::*;
use crate::engine::model_signature::{Model, sign_models};
use crate::provenance::model_signing::statement;
use crate::signing::{CosignKey, Signer, sign_envelope};
use crate::storage::Subject;

fn key() -> &'static CosignKey {
    static KEY: OnceLock<CosignKey> = OnceLock::new();
    KEY.get_or_init(|| CosignKey::ephemeral().expect("key"))
}

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

fn layer(title: &str, c: char) -> ModelLayer {
    ModelLayer {
        title: title.into(),
        digest: digest(c),
        size: 1,
    }
}

fn files() -> Vec<ModelLayer> {
    vec![
        layer("config.json", 'a'),
        layer("weights/w.bin", 'b'),
        layer(".gitattributes", 'c'),
    ]
}

/// The model signature `provenant` attaches for `files`, signed by `signer`.
fn signed(files: &[ModelLayer], signer: &dyn Signer) -> Vec<FoundModelSignature> {
    let model = Model {
        subject: Subject::new("registry.example.com/models/m", digest('f')),
        files: files.to_vec(),
    };
    let s = sign_models(&[model], signer).expect("signs");
    vec![found("REPO@sha256:sig", s[0].bundle().expect("bundle"))]
}

/// A statement signed by the key, as given.
fn signed_statement(s: &ModelSignatureStatement) -> Vec<FoundModelSignature> {
    let bytes = s.to_bytes().unwrap();
    let envelope = sign_envelope(key(), IN_TOTO_PAYLOAD_TYPE, &bytes).unwrap();
    let bundle = SigstoreBundle {
        envelope,
        key_hint: None,
        tlog_entries: 0,
    };
    vec![found("edited", bundle.to_json().unwrap())]
}

fn found(reference: &str, bundle: Vec<u8>) -> FoundModelSignature {
    FoundModelSignature {
        reference: reference.into(),
        bundle,
    }
}

fn failures(c: &ModelSignatureCheck) -> String {
    c.failures().join("\n")
}

#[test]
fn the_signature_of_the_models_files_verifies() {
    let files = files();
    let c = check(
        Some(&files),
        &signed(&files, key()),
        key().public_key(),
        true,
    );
    assert_eq!(c.status, Status::Verified, "{}", failures(&c));
    assert!(c.passes());
    // .gitattributes is left out, as model_signing leaves it out.
    assert_eq!(c.files, Some(2));
    assert_eq!(c.describe(), "verified (OpenSSF model signing, 2 files)");
}

#[test]
fn a_changed_file_fails_naming_it() {
    let files = files();
    let sig = signed(&files, key());
    let mut changed = files.clone();
    changed[1].digest = digest('d');
    let c = check(Some(&changed), &sig, key().public_key(), false);
    assert_eq!(c.status, Status::Failed);
    assert!(
        !c.passes(),
        "a signature that fails fails the verdict, required or not"
    );
    assert_eq!(
        failures(&c),
        format!(
            "model signature REPO@sha256:sig: model file weights/w.bin is {} in the model, {} in the signature",
            digest('d'),
            digest('b')
        )
    );
}

#[test]
fn an_added_or_removed_file_fails_naming_it() {
    let files = files();
    let sig = signed(&files, key());
    let mut more = files.clone();
    more.push(layer("extra.bin", 'e'));
    let text = failures(&check(Some(&more), &sig, key().public_key(), false));
    assert!(text.contains("model file extra.bin (sha256:eee"), "{text}");
    assert!(text.contains("is not in the signed files"), "{text}");
    let fewer = &files[..1];
    let text = failures(&check(Some(fewer), &sig, key().public_key(), false));
    assert!(
        text.contains("signed file weights/w.bin (sha256:bbb")
            && text.contains("is not in the model"),
        "{text}"
    );
    // A file model_signing skips may change freely: it is not signed.
    let mut ignored = files.clone();
    ignored[2].digest = digest('9');
    assert!(check(Some(&ignored), &sig, key().public_key(), false).passes());
}

#[test]
fn another_key_or_a_tampered_envelope_fails_the_signature() {
    let files = files();
    let other = CosignKey::ephemeral().unwrap();
    let c = check(
        Some(&files),
        &signed(&files, &other),
        key().public_key(),
        false,
    );
    assert!(
        failures(&c).contains("signature: DSSE envelope signature by key"),
        "{}",
        failures(&c)
    );

    let good = signed(&files, key()).remove(0);
    let mut bundle: serde_json::Value = serde_json::from_slice(&good.bundle).unwrap();
    let payload = bundle["dsseEnvelope"]["payload"]
        .as_str()
        .unwrap()
        .replace('a', "b");
    bundle["dsseEnvelope"]["payload"] = payload.into();
    let tampered = found(&good.reference, serde_json::to_vec(&bundle).unwrap());
    let c = check(Some(&files), &[tampered], key().public_key(), false);
    assert!(failures(&c).contains("does not verify"), "{}", failures(&c));
    let c = check(
        Some(&files),
        &[found("x", b"junk".to_vec())],
        key().public_key(),
        false,
    );
    assert!(
        failures(&c).contains("model signature x: not a Sigstore bundle"),
        "{}",
        failures(&c)
    );
}

#[test]
fn a_statement_that_is_not_consistent_or_not_model_signing_fails() {
    let to_files = |l: &[ModelLayer]| -> Vec<ModelFileDigest> {
        l.iter()
            .map(|f| ModelFileDigest {
                path: f.title.clone(),
                digest: f.digest.clone(),
            })
            .collect()
    };
    let files = files();
    let good = statement("m", &to_files(&files)).unwrap();

    let mut wrong_root = good.clone();
    wrong_root.subject[0]
        .digest
        .insert(SHA256.into(), "0".repeat(64));
    let text = failures(&check(
        Some(&files),
        &signed_statement(&wrong_root),
        key().public_key(),
        false,
    ));
    assert!(
        text.contains("the statement is inconsistent: its subject digest is 000"),
        "{text}"
    );

    let mut other_type = good.clone();
    other_type.predicate_type = "https://slsa.dev/provenance/v1".into();
    let text = failures(&check(
        Some(&files),
        &signed_statement(&other_type),
        key().public_key(),
        false,
    ));
    assert!(
        text.contains("predicateType is \"https://slsa.dev/provenance/v1\""),
        "{text}"
    );

    let mut shards = good.clone();
    shards.predicate.serialization.method = "shards".into();
    let text = failures(&check(
        Some(&files),
        &signed_statement(&shards),
        key().public_key(),
        false,
    ));
    assert!(
        text.contains("serialization is shards with sha256"),
        "{text}"
    );

    // The signed ignore_paths are honoured, as model_signing verify honours them.
    let mut skips_weights = statement("m", &to_files(&files[..1])).unwrap();
    skips_weights
        .predicate
        .serialization
        .ignore_paths
        .push("./weights".into());
    let c = check(
        Some(&files),
        &signed_statement(&skips_weights),
        key().public_key(),
        false,
    );
    assert_eq!(c.status, Status::Verified, "{}", failures(&c));
    assert_eq!(c.files, Some(1));
}

#[test]
fn a_manifest_that_names_no_real_path_cannot_be_checked() {
    let files = files();
    let sig = signed(&files, key());
    let mut hostile = files.clone();
    hostile.push(layer("../../etc/passwd", 'e'));
    let text = failures(&check(Some(&hostile), &sig, key().public_key(), false));
    assert!(
        text.contains("the model's manifest cannot be checked: model file \"../../etc/passwd\""),
        "{text}"
    );
}

#[test]
fn one_passing_signature_is_enough() {
    let files = files();
    let mut found = signed(&files, &CosignKey::ephemeral().unwrap());
    found.extend(signed(&files, key()));
    let c = check(Some(&files), &found, key().public_key(), true);
    assert_eq!(c.status, Status::Verified);
    assert_eq!(c.signatures.len(), 2);
    assert!(!c.signatures[0].failures.is_empty());
    assert!(c.failures().is_empty());
}

#[test]
fn absence_passes_unless_required() {
    let files = files();
    let c = check(Some(&files), &[], key().public_key(), false);
    assert_eq!(c.status, Status::Absent);
    assert!(c.passes());
    assert_eq!(
        c.describe(),
        "none attached (not required; --require-model-signature requires one)"
    );
    let c = check(Some(&files), &[], key().public_key(), true);
    assert!(!c.passes());
    assert!(failures(&c).contains("none attached"), "{}", failures(&c));

    let c = check(None, &signed(&files, key()), key().public_key(), false);
    assert_eq!(c.status, Status::NotAModel);
    assert!(c.passes());
    let c = check(None, &[], key().public_key(), true);
    assert!(
        failures(&c).contains("not a provenant model"),
        "{}",
        failures(&c)
    );
}

#[test]
fn its_failures_fail_the_verdict() {
    let verdict = |c: ModelSignatureCheck| {
        super::super::verify(
            "m",
            &digest('f'),
            &[],
            key().public_key(),
            &Default::default(),
            jiff::Timestamp::now(),
        )
        .with_model_signature(c)
    };
    let files = files();
    let v = verdict(check(Some(&files), &[], key().public_key(), true));
    assert!(!v.verified);
    assert!(
        v.content_failures[0].contains("none attached"),
        "{:?}",
        v.content_failures
    );
    assert!(v.model_signature.is_some());
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["modelSignature"]["status"], "absent");
    assert_eq!(json["modelSignature"]["required"], true);
}
