//! Signing and attaching one model's revocation (or reinstatement) statement, at most once per
//! revocation uid, model and state. ECDSA signatures are randomized, so a second signing would
//! be a second, different attestation: before signing, the model's attestations in the registry
//! are read, and one signed by the controller's key for this uid and state counts as done. That
//! read is what makes a retry after a crash between the attach and the status write (or a
//! restart, or a new leader) sign nothing twice; the process also remembers what it attached,
//! so the read happens once per model.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::engine::{self, EngineError};
use crate::lineage::Hit;
use crate::provenance::revocation::{Material, RevocationRef, RevocationStatement, State};
use crate::reconcile::publisher::Publisher;
use crate::signing::{Envelope, PublicKey, verify_envelope};
use crate::storage::{ArtifactStore, StorageError, Subject};

/// Why a model could not be given its statement.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error("the signing key is not available: {0}")]
    Key(String),
    #[error("registry: {0}")]
    Registry(#[from] StorageError),
    #[error("signing the statement: {0}")]
    Engine(#[from] EngineError),
}

/// What this process attached: (revocation uid, model reference, state).
#[derive(Debug, Default)]
pub struct Attached(Mutex<HashSet<(String, String, State)>>);

impl Attached {
    fn key(uid: &str, model: &str, state: State) -> (String, String, State) {
        (uid.to_string(), model.to_string(), state)
    }

    pub fn contains(&self, uid: &str, model: &str, state: State) -> bool {
        self.lock().contains(&Self::key(uid, model, state))
    }

    pub fn insert(&self, uid: &str, model: &str, state: State) {
        self.lock().insert(Self::key(uid, model, state));
    }

    /// Forget a revocation (deleted and reinstated).
    pub fn forget(&self, uid: &str) {
        self.lock().retain(|(u, _, _)| u != uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String, State)>> {
        // Poisoned only by a panic mid-insert of plain data.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What one model's revocation statement says besides its path.
pub struct Statement<'a> {
    pub state: State,
    pub revocation: &'a RevocationRef,
    pub material: &'a Material,
    /// When the revocation was created (revoked) or deleted (reinstated), RFC 3339.
    pub time: &'a str,
}

/// Whether the model of `hit` already carries a statement signed by `key` for this revocation
/// uid and `state`.
pub async fn carries(
    store: &dyn ArtifactStore,
    key: &PublicKey,
    hit: &Hit,
    uid: &str,
    state: State,
) -> Result<bool, StorageError> {
    let subject = Subject::new(hit.model.repository.clone(), hit.model.digest.clone());
    let found = store.attestations(&subject).await?;
    Ok(found.iter().any(|a| {
        let Ok(envelope) = Envelope::from_json(&a.envelope) else {
            return false;
        };
        // Only what the controller's key signed counts: anyone with push access to the
        // repository could add an unsigned "revocation" to make us skip ours.
        let Ok(payload) = verify_envelope(&envelope, key) else {
            return false;
        };
        matches!(RevocationStatement::parse(&payload), Some(Ok(s))
            if s.is_about(&hit.model.digest)
                && s.predicate.revocation.uid == uid
                && s.predicate.state == state)
    }))
}

/// Give the model of `hit` its statement unless it carries one already. Returns whether one
/// was signed and attached now. `credentials`: the Secret of the repositoryPolicy rule that
/// grants the model's repository to its run's namespace (None: the default credentials).
pub async fn attest(
    publisher: &Publisher,
    memory: &Attached,
    credentials: Option<&str>,
    hit: &Hit,
    what: &Statement<'_>,
) -> Result<bool, AttestError> {
    let uid = &what.revocation.uid;
    let model = hit.model.reference();
    if memory.contains(uid, &model, what.state) {
        return Ok(false);
    }
    let signer = publisher.key.get().map_err(AttestError::Key)?;
    let key = PublicKey::from_pem(signer.public_key_pem())
        .map_err(|e| AttestError::Key(e.to_string()))?;
    let store = publisher.artifact_store_for(credentials);
    if carries(store.as_ref(), &key, hit, uid, what.state).await? {
        memory.insert(uid, &model, what.state);
        return Ok(false);
    }
    let statement = RevocationStatement::new(
        hit,
        what.state,
        what.revocation.clone(),
        what.material.clone(),
        &publisher.builder.id,
        what.time,
    );
    let attestation = engine::revocation::sign(&statement, signer.as_ref())?;
    let store = publisher.store_for(credentials);
    engine::revocation::attach(&attestation, store.as_ref()).await?;
    memory.insert(uid, &model, what.state);
    Ok(true)
}

/// Whether the model of `hit` was given its `revoked` statement for revocation `uid` (by this
/// process, or found signed in the registry): what a reinstatement must answer.
pub async fn was_revoked(
    publisher: &Publisher,
    memory: &Attached,
    credentials: Option<&str>,
    hit: &Hit,
    uid: &str,
) -> Result<bool, AttestError> {
    if memory.contains(uid, &hit.model.reference(), State::Revoked) {
        return Ok(true);
    }
    let signer = publisher.key.get().map_err(AttestError::Key)?;
    let key = PublicKey::from_pem(signer.public_key_pem())
        .map_err(|e| AttestError::Key(e.to_string()))?;
    let store = publisher.artifact_store_for(credentials);
    Ok(carries(store.as_ref(), &key, hit, uid, State::Revoked).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::revocation::{attach, sign};
    use crate::lineage::ModelRef;
    use crate::signing::{CosignKey, Signer};
    use crate::storage::{AttestationStore, LayoutStore};

    fn statement(hit: &Hit, uid: &str, state: State) -> RevocationStatement {
        let revocation = RevocationRef {
            name: "cve".into(),
            uid: uid.into(),
            reason: "poisoned".into(),
            advisory: None,
        };
        let material = Material {
            type_: crate::provenance::revocation::MaterialType::Dataset,
            digest: format!("sha256:{}", "d".repeat(64)),
        };
        RevocationStatement::new(
            hit,
            state,
            revocation,
            material,
            "builder",
            "2024-01-01T00:00:00Z",
        )
    }

    /// What the controller checks before signing: only a statement signed by its own key, for
    /// this uid and state, about this model, counts as already there.
    #[tokio::test]
    async fn only_the_controllers_own_statement_for_this_uid_and_state_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let model = dir.path().join("model");
        std::fs::create_dir(&model).expect("mkdir");
        std::fs::write(model.join("w.bin"), b"weights").expect("write");
        let files = crate::hashing::hash_tree(&model).expect("hash");
        let store = LayoutStore::new(dir.path().join("layout"));
        let pushed = store
            .push_model("oci:layout", Some("v1"), &model, &files)
            .await
            .expect("push");
        let hit = Hit {
            model: ModelRef {
                repository: "oci:layout".into(),
                digest: pushed.digest,
            },
            path: vec![],
        };
        let key = CosignKey::ephemeral().expect("key");
        let public = PublicKey::from_pem(key.public_key_pem()).expect("public");
        assert!(
            !carries(&store, &public, &hit, "uid-1", State::Revoked)
                .await
                .unwrap()
        );

        // Someone else's key: ignored.
        let other = CosignKey::ephemeral().expect("key");
        let forged = sign(&statement(&hit, "uid-1", State::Revoked), &other).expect("signs");
        attach(&forged, &store as &dyn AttestationStore)
            .await
            .expect("attach");
        assert!(
            !carries(&store, &public, &hit, "uid-1", State::Revoked)
                .await
                .unwrap()
        );

        let ours = sign(&statement(&hit, "uid-1", State::Revoked), &key).expect("signs");
        attach(&ours, &store as &dyn AttestationStore)
            .await
            .expect("attach");
        assert!(
            carries(&store, &public, &hit, "uid-1", State::Revoked)
                .await
                .unwrap()
        );
        assert!(
            !carries(&store, &public, &hit, "uid-1", State::Reinstated)
                .await
                .unwrap()
        );
        assert!(
            !carries(&store, &public, &hit, "uid-2", State::Revoked)
                .await
                .unwrap()
        );
    }
}
