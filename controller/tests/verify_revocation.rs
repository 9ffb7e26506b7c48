//! `provenant verify` honours revocations (docs/verify.md, "Revoked models"): a model with the
//! controller's provenance verifies; once a revocation statement signed by the same key is
//! attached (`engine::revocation::{sign, attach}`, as the controller does for a
//! MaterialRevocation), it is refused with exit 1, the revocation's name, reason, advisory and the
//! path from the material; after a signed reinstatement it verifies again. A revocation signed
//! by another key, or about another model, changes nothing but is reported as not verifying.
//! In an OCI image layout and in the registry fixture, through the CLI.

#[path = "support/attested.rs"]
mod attested;

use attested::{Keys, attest_cluster_run, provenant, push_model, text};
use provenant::engine::revocation;
use provenant::hashing::hash_tree;
use provenant::lineage::{LineageEntry, LineageIndex, Query};
use provenant::provenance::revocation::{
    Material, MaterialType, RevocationRef, RevocationStatement, State,
};
use provenant::signing::CosignKey;
use provenant::storage::{
    ArtifactStore, AttestationStore, LayoutStore, RegistryOptions, RegistryStore, Subject,
};
use provenant_testbed::registry::Registry;
use serde_json::Value;

/// `imagenet-subset` of the fixture run: the spec declared this digest.
const DATASET: &str = "sha256:9b2f0a6e3c1d4b5a69788f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c";
const IMAGE: &str = "registry.example.com/train/pytorch";
const ADVISORY: &str = "https://example.com/advisories/2026-11";

/// The revocation (or reinstatement) of [`DATASET`] as the controller would sign it for the
/// model whose provenance is `statement`: the hit found by the lineage index over that run.
fn revocation_of(statement: &Value, uid: &str, state: State) -> RevocationStatement {
    let entry = LineageEntry::from_statement(statement).unwrap();
    let index = LineageIndex::new([entry]);
    let [hit] = index
        .find(&Query::Dataset(DATASET.into()), true)
        .try_into()
        .unwrap();
    RevocationStatement::new(
        &hit,
        state,
        RevocationRef {
            name: "poisoned-imagenet".into(),
            uid: uid.into(),
            reason: "label poisoning in 3% of the images".into(),
            advisory: Some(ADVISORY.into()),
        },
        Material {
            type_: MaterialType::Dataset,
            digest: DATASET.into(),
        },
        "https://provenant.dev/controller/v1",
        "2026-11-20T10:00:00Z",
    )
}

async fn attach(store: &dyn AttestationStore, statement: &RevocationStatement, key: &CosignKey) {
    let attestation = revocation::sign(statement, key).unwrap();
    revocation::attach(&attestation, store).await.unwrap();
}

/// The provenance statement `verify --output json` summarized for the model.
fn provenance_of(verdict: &Value) -> Value {
    verdict["attestations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "provenance" && a["failures"].as_array().unwrap().is_empty())
        .map(|a| a["statement"].clone())
        .expect("a verified provenance statement")
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

#[tokio::test]
async fn a_revoked_model_in_the_registry_is_refused_until_reinstated() {
    let registry = Registry::start().await.unwrap();
    let keys = Keys::new();
    let key = keys.public();
    let model = push_model(&registry, "resnet", &[("model.bin", b"weights".as_slice())]).await;
    let other = push_model(
        &registry,
        "unrelated",
        &[("model.bin", b"other".as_slice())],
    )
    .await;
    attest_cluster_run(&registry, &model, IMAGE, &[], &keys.key).await;
    attest_cluster_run(&registry, &other, IMAGE, &[], &keys.key).await;
    let store = RegistryStore::new(RegistryOptions {
        insecure_registries: vec![registry.host().to_string()],
        ..RegistryOptions::default()
    });
    let verify = |reference: &str, json: bool| {
        let mut args = vec![
            "verify",
            reference,
            "--key",
            &key,
            "--insecure-registry",
            registry.host(),
        ];
        if json {
            args.extend(["--output", "json"]);
        }
        provenant(&args)
    };

    let out = verify(&model.reference, true);
    assert!(out.status.success(), "{}", text(&out));
    let statement = provenance_of(&json(&out));

    // Someone without the controller's key cannot revoke it: reported, ignored.
    let forged = revocation_of(&statement, "uid-forged", State::Revoked);
    attach(&store, &forged, &CosignKey::ephemeral().unwrap()).await;
    let out = verify(&model.reference, true);
    assert!(out.status.success(), "{}", text(&out));
    let verdict = json(&out);
    assert!(verdict.get("revoked").is_none(), "{verdict}");
    let rejected: Vec<&Value> = verdict["attestations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| !a["failures"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(rejected.len(), 1, "{verdict}");
    assert!(
        rejected[0]["failures"][0]
            .as_str()
            .unwrap()
            .starts_with("signature:"),
        "{verdict}"
    );

    // The controller's revocation: refused, with the reason and the path.
    let revoked = revocation_of(&statement, "uid-1", State::Revoked);
    attach(&store, &revoked, &keys.key).await;
    let out = verify(&model.reference, false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let printed = text(&out);
    for expected in [
        format!("NOT verified: {}", model.repository),
        format!(
            "REVOKED: revoked by poisoned-imagenet: label poisoning in 3% of the images ({ADVISORY}); path: dataset {DATASET} → run "
        ),
        format!(
            "(its dataset, declared) → {}@{}",
            model.repository, model.digest
        ),
    ] {
        assert!(
            printed.contains(&expected),
            "missing {expected:?} in\n{printed}"
        );
    }
    // The revocation statement itself is not reported as a failed SLSA attestation.
    assert!(!printed.contains("not an in-toto Statement"), "{printed}");
    let out = verify(&model.reference, true);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let verdict = json(&out);
    assert_eq!(verdict["verified"], false);
    let [r] = verdict["revoked"].as_array().unwrap().as_slice() else {
        panic!("one revocation in force: {verdict}");
    };
    assert_eq!(r["revocation"]["name"], "poisoned-imagenet");
    assert_eq!(r["revocation"]["advisory"], ADVISORY);
    assert_eq!(r["material"]["digest"], DATASET);
    assert_eq!(r["path"][0]["via"]["digest"], DATASET);
    assert_eq!(r["path"][0]["model"]["digest"], model.digest.as_str());

    // A revocation of this model attached to the unrelated one (a statement about another
    // digest) does not make it fail.
    let subject = Subject::new(&other.repository, &other.digest);
    let mut misplaced = revocation::sign(&revoked, &keys.key).unwrap();
    misplaced.subject = subject;
    store.attach(&misplaced).await.unwrap();
    let out = verify(&other.reference, false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("revocation statement about another artifact"),
        "{}",
        text(&out)
    );

    // The false alarm withdrawn: verified again, the withdrawal said.
    attach(
        &store,
        &revocation_of(&statement, "uid-1", State::Reinstated),
        &keys.key,
    )
    .await;
    let out = verify(&model.reference, false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("revocations   1 withdrawn (reinstated), none in force"),
        "{}",
        text(&out)
    );

    // A second revocation (another uid) is not withdrawn by the first one's reinstatement.
    attach(
        &store,
        &revocation_of(&statement, "uid-2", State::Revoked),
        &keys.key,
    )
    .await;
    let out = verify(&model.reference, true);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(json(&out)["revoked"][0]["revocation"]["uid"], "uid-2");
}

#[tokio::test]
async fn a_revoked_model_in_a_layout_is_refused() {
    let keys = Keys::new();
    let work = tempfile::tempdir().unwrap();
    let files_dir = work.path().join("model");
    std::fs::create_dir(&files_dir).unwrap();
    std::fs::write(files_dir.join("model.bin"), b"weights").unwrap();
    let layout = work.path().join("layout");
    let store = LayoutStore::new(&layout);
    let files = hash_tree(&files_dir).unwrap();
    let pushed = store
        .push_model("models/resnet", Some("v1"), &files_dir, &files)
        .await
        .unwrap();
    let output = ("models/resnet", pushed.digest.as_str());
    attested::attest_into(&store, output, IMAGE, &[], &keys.key).await;
    let reference = format!("oci:{}@{}", layout.display(), pushed.digest);
    let key = keys.public();
    let verify = || {
        provenant(&[
            "verify", &reference, "--key", &key, "-q", "--output", "json",
        ])
    };

    let out = verify();
    assert!(out.status.success(), "{}", text(&out));
    let statement = provenance_of(&json(&out));
    attach(
        &store,
        &revocation_of(&statement, "uid-1", State::Revoked),
        &keys.key,
    )
    .await;
    let out = verify();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let verdict = json(&out);
    let description = verdict["revoked"][0]["description"].as_str().unwrap();
    assert!(
        description.starts_with("revoked by poisoned-imagenet: label poisoning"),
        "{verdict}"
    );
    attach(
        &store,
        &revocation_of(&statement, "uid-1", State::Reinstated),
        &keys.key,
    )
    .await;
    assert!(verify().status.success());
}
