//! Issue 13, way in 1: a tenant plants the signed record. The controller persists each run's
//! signed record before attaching it, and used to reuse any `<run>-provenance` ConfigMap in the
//! run's namespace that named the run as its owner, attaching whatever envelope and signatures it
//! held, wherever they pointed, with the controller's registry credentials. Records now live in
//! the controller's namespace, where a namespace editor cannot write, and are checked before use.

use std::io::Read;

use anyhow::{Context, Result};
use flate2::read::GzDecoder;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use provenant::api::ProvenanceState;
use provenant::provenance::statement::{ResourceDescriptor, Statement};
use provenant::signing::{CosignKey, Envelope, PublicKey, verify_envelope};
use provenant_testbed::registry_proxy::Mode;
use serde_json::json;

use crate::provenance::World;
use crate::support::*;

/// Another team's model, in the same registry.
const VICTIM_REPO: &str = "team-b/model";

/// The record a tenant would plant, in the form the controller used to read: an envelope and
/// simple signatures made with the tenant's own key, over a statement naming another team's
/// model (and "this run" as the invocation, for good measure).
fn planted_record(run_uid: &str, victim: &str, victim_digest: &str) -> Result<ConfigMap> {
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../controller/tests/golden/statement.json"
    ))?;
    let mut statement: Statement = serde_json::from_str(&fixture)?;
    statement.subject = vec![ResourceDescriptor {
        name: Some(victim.to_string()),
        digest: provenant::provenance::digest_map(victim_digest),
        ..Default::default()
    }];
    statement.predicate.run_details.metadata.invocation_id = run_uid.to_string();
    let tenant_key = CosignKey::ephemeral()?;
    let record = provenant::engine::sign(&statement, &tenant_key)?;
    Ok(serde_json::from_value(json!({
        "metadata": {"name": "bert-provenance"},
        "data": {
            "envelope.json": String::from_utf8(record.envelope.clone())?,
            "record.json": String::from_utf8(record.to_json()?)?,
        },
    }))?)
}

#[tokio::test]
async fn a_record_planted_by_a_tenant_is_never_attached() -> Result<()> {
    let world = World::start(true).await?;
    let tenant = world.cluster.tenant().await?;
    // Another team's model the tenant would like signed as theirs.
    let victim = world
        .registry
        .push_model(
            VICTIM_REPO,
            "v1",
            &[("weights", b"team b's weights".as_slice())],
        )
        .await?;
    let victim_repository = format!("{}/{VICTIM_REPO}", world.proxy.host());

    let sim = world.kubelet(|| {}).await?;
    let _controller = world.controller("a").await?;
    // The pipeline submits the run; the tenant, with `edit` in the namespace, plants a record
    // for it at once (the workers train for a while first).
    let created = create(&world.cluster, &world.run("bert")).await?;
    let uid = created.uid().context("uid")?;
    let mut planted = planted_record(&uid, &victim_repository, &victim.digest)?;
    planted.metadata.owner_references = created.controller_owner_ref(&()).map(|o| vec![o]);
    Api::<ConfigMap>::namespaced(tenant.clone(), &world.cluster.namespace)
        .create(&PostParams::default(), &planted)
        .await
        .context("a namespace editor may create ConfigMaps")?;
    // Where records are kept now, the tenant cannot write at all.
    if world.cluster.is_real() {
        let mut there = planted.clone();
        there.metadata.owner_references = None;
        there.metadata.name = Some(format!("provenance-{uid}"));
        let err = Api::<ConfigMap>::namespaced(tenant.clone(), &world.cluster.controller_namespace)
            .create(&PostParams::default(), &there)
            .await
            .expect_err("a tenant cannot write in the controller's namespace");
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 403),
            "{err}"
        );
    }

    let attached = world
        .wait_provenance("bert", ProvenanceState::Attached)
        .await?;
    // Nothing was written into the other team's repository.
    for suffix in [".att", ".sig", ""] {
        let tag = World::tag(&victim.digest, suffix);
        assert!(
            world
                .registry
                .get_manifest(VICTIM_REPO, &tag)
                .await?
                .is_none(),
            "the controller wrote {tag} into {VICTIM_REPO}"
        );
    }
    // The run's own model got the controller's attestation, for this run.
    let digest = World::model_digest(&attached);
    let envelopes = world.att_envelopes(&digest).await?;
    assert_eq!(envelopes.len(), 1, "one attestation on the run's own model");
    let controller_key = PublicKey::from_pem(&world.public_pem)?;
    let payload = verify_envelope(&Envelope::from_json(&envelopes[0])?, &controller_key)
        .context("the attached envelope is signed by the controller's key")?;
    let statement: Statement = serde_json::from_slice(&payload)?;
    assert_eq!(statement.predicate.run_details.metadata.invocation_id, uid);
    assert_eq!(
        statement.subject[0].name.as_deref(),
        Some(world.repository().as_str())
    );
    // The planted ConfigMap is left as the tenant wrote it (never read, never overwritten), and
    // the real record is in the controller's namespace.
    let p = attached
        .status
        .clone()
        .unwrap_or_default()
        .provenance
        .context("provenance status")?;
    assert_eq!(
        p.envelope_config_map.as_deref(),
        Some(format!("provenance-{uid}").as_str())
    );
    let record = world
        .cluster
        .controller_api::<ConfigMap>()
        .get(&format!("provenance-{uid}"))
        .await?;
    let gz = &record.binary_data.unwrap_or_default()["envelope.json.gz"];
    let mut envelope = Vec::new();
    GzDecoder::new(gz.0.as_slice()).read_to_end(&mut envelope)?;
    assert_eq!(
        envelope, envelopes[0],
        "the persisted envelope is the attached one"
    );
    sim.shutdown().await?;
    Ok(())
}

/// A record that does not verify (edited by someone who can write in the controller's namespace,
/// or signed with a key since rotated away) is never attached: the run says so in a condition and
/// an Event, and gets fresh provenance signed by the controller.
#[tokio::test]
async fn an_edited_record_is_refused_and_the_run_signed_anew() -> Result<()> {
    let world = World::start(true).await?;
    let sim = world.kubelet(|| {}).await?;
    let _controller = world.controller("a").await?;
    // Writes refused: the run is signed and its record persisted, the attach waits.
    world.proxy.set_mode(Mode::RefuseWrites);
    let created = create(&world.cluster, &world.run("bert")).await?;
    let uid = created.uid().context("uid")?;
    let signed = world
        .wait_provenance("bert", ProvenanceState::Signed)
        .await?;
    let first = signed
        .status
        .unwrap()
        .provenance
        .unwrap()
        .envelope_digest
        .unwrap();

    // Replaced by a record for another model, signed with another key, in the stored form.
    let victim = world
        .registry
        .push_model("team-b/model", "v1", &[("w", b"b".as_slice())])
        .await?;
    let forged = planted_record(
        &uid,
        &format!("{}/team-b/model", world.proxy.host()),
        &victim.digest,
    )?;
    let forged_envelope = forged.data.as_ref().unwrap()["envelope.json"].clone();
    let records = world.cluster.controller_api::<ConfigMap>();
    let name = format!("provenance-{uid}");
    let mut record = records.get(&name).await?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, forged_envelope.as_bytes())?;
    record.binary_data.as_mut().unwrap().insert(
        "envelope.json.gz".into(),
        k8s_openapi::ByteString(gz.finish()?),
    );
    let text = record.data.as_ref().unwrap()["record.json"].clone();
    let text = text.replace(
        &first,
        &provenant::observe::sha256_digest(forged_envelope.as_bytes()),
    );
    record
        .data
        .as_mut()
        .unwrap()
        .insert("record.json".into(), text);
    records
        .replace(&name, &PostParams::default(), &record)
        .await?;

    world.proxy.set_mode(Mode::Pass);
    let attached = world
        .wait_provenance("bert", ProvenanceState::Attached)
        .await?;
    let (value, reason, message) = condition(&attached, "ProvenanceRecordRejected")
        .context("a condition names the rejected record")?;
    assert_eq!(
        (value.as_str(), reason.as_str()),
        ("True", "RecordUntrusted")
    );
    assert!(
        message.contains("does not verify with the controller's key"),
        "{message}"
    );
    let second = attached
        .status
        .clone()
        .unwrap()
        .provenance
        .unwrap()
        .envelope_digest
        .unwrap();
    assert_ne!(first, second, "signed anew");
    assert!(
        world
            .registry
            .get_manifest("team-b/model", &World::tag(&victim.digest, ".att"))
            .await?
            .is_none()
    );
    let envelopes = world.att_envelopes(&World::model_digest(&attached)).await?;
    assert_eq!(envelopes.len(), 1);
    assert_eq!(provenant::observe::sha256_digest(&envelopes[0]), second);
    warning_event(&world.cluster, "ProvenanceRecordRejected", "").await?;
    sim.shutdown().await?;
    Ok(())
}
