//! The attach protocol, written once over a [`Transport`] so both stores write the same bytes
//! (docs/registry-layout.md): append our DSSE layer to the cosign `.att` tag, our signature to
//! `.sig`, push the OCI 1.1 referrer and, without a referrers API, add it to the fallback index
//! (the last step is also how a Sigstore bundle is attached, `attach_bundle.rs`);
//! each tag by read-modify-write, then read back and written again if a concurrent writer dropped
//! our entry. Also which blobs are checked and which are simply uploaded, and the recovery when
//! a registry has lost a blob it was thought to have.

use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt as _, Shared};

use super::error::{ErrorKind, StorageError};
use super::oci::{self, Descriptor, EMPTY_BLOB, Index, Manifest, OCI_CONFIG_MEDIA_TYPE};
use super::op;
use super::referrer::{NewBlob, Referrer};
use super::store::{Attached, Attestation, ResolvedArtifact};
use super::transport::{Blob, TagDocument, Transport, read_tag};
use crate::observe::sha256_digest;

/// Rounds of write and read-back on one tag before giving up (only concurrent writers in other
/// processes make a round fail).
const MAX_TAG_ROUNDS: u32 = 8;
/// The pause before reading a tag back is at least this many times our own read-to-write time
/// ([`settle`]); another writer doing the same work needs about as long.
const SETTLE_PER_WINDOW: u32 = 3;
/// The longest pause before reading a tag back.
const MAX_SETTLE: Duration = Duration::from_secs(5);
/// Attempts of a manifest PUT the store refuses for an unknown blob, each after storing the
/// blobs again.
const BLOB_UNKNOWN_ATTEMPTS: u32 = 3;

/// Attaches `attestation`: `.att`, `.sig`, and the OCI 1.1 referrer plus, without a referrers
/// API, the fallback index. The three are independent (different tags), so they run
/// concurrently; within each, blobs are stored before the manifest referencing them and the
/// referrer before the index listing it.
pub(crate) async fn attach(
    t: &dyn Transport,
    attestation: &Attestation,
) -> Result<Attached, StorageError> {
    let hex = validate(attestation)?;
    let subject = &attestation.subject.digest;
    let model: Model<'_> = t.resolve(subject).shared();
    let input_error = |e: String| StorageError::permanent(op::INPUT, t.digest_ref(subject), e);

    // cosign's config for .att/.sig manifests created here (constant, so stored once).
    let cosign = CosignTag {
        config: Descriptor::of(OCI_CONFIG_MEDIA_TYPE, oci::COSIGN_CONFIG),
    };
    let envelope = NewBlob::new(&attestation.envelope);

    // 1. cosign attestation: our DSSE layer in `sha256-<hex>.att`.
    let att_tag = oci::attestation_tag(hex);
    let att_layer = oci::attestation_layer(&attestation.envelope, &attestation.predicate_type);
    let att = cosign.append(
        t,
        &att_tag,
        &att_layer,
        oci::same_attestation,
        &envelope,
        &model,
    );

    // 2. cosign signature: (payload, signature) in `sha256-<hex>.sig`.
    let sig_tag = oci::signature_tag(hex);
    let signature = attestation.signature.as_ref().map(|s| {
        (
            oci::signature_layer(&s.payload, &s.signature),
            NewBlob::new(&s.payload),
        )
    });
    let sig = async {
        if let Some((layer, payload)) = &signature {
            cosign
                .append(t, &sig_tag, layer, oci::same_signature, payload, &model)
                .await?;
        }
        Ok::<_, StorageError>(())
    };

    // 3. OCI 1.1 referrer, plus the fallback index where there is no referrers API.
    let referrer = async {
        let resolved = model.clone().await?;
        let manifest = oci::referrer(
            (&resolved.media_type, &resolved.digest, resolved.size),
            &attestation.envelope,
            &attestation.predicate_type,
        )
        .map_err(|e| input_error(e.to_string()))?;
        let bytes = serde_json::to_vec(&manifest).map_err(|e| input_error(e.to_string()))?;
        let entry = oci::referrer_entry(&manifest, &bytes);
        let referrer = Referrer::new(bytes, resolved.digest, &envelope, entry);
        attach_referrer(t, hex, &referrer, &model).await?;
        Ok::<_, StorageError>(referrer.digest)
    };

    let (_, (), referrer_digest) = futures::try_join!(att, sig, referrer)?;
    let mut references = vec![t.tag_ref(&att_tag)];
    if signature.is_some() {
        references.push(t.tag_ref(&sig_tag));
    }
    references.push(t.digest_ref(&referrer_digest));
    tracing::debug!(subject = %attestation.subject, referrer = %referrer_digest, "attestation attached");
    Ok(Attached {
        references,
        referrer_digest,
    })
}

/// Pushes an OCI 1.1 referrer of the subject whose digest's hex is `hex` and, where there is no
/// referrers API, lists it in the fallback index `sha256-<hex>` (after pushing it: distribution
/// rejects an index whose entries do not exist).
pub(super) async fn attach_referrer(
    t: &dyn Transport,
    hex: &str,
    referrer: &Referrer<'_>,
    model: &Model<'_>,
) -> Result<(), StorageError> {
    if t.has_referrers_api(&referrer.subject).await? {
        push_referrer(t, referrer).await?;
    } else {
        update_tag(
            t,
            &oci::referrers_tag(hex),
            &referrer.digest,
            Index::empty,
            |i: &mut Index| i.add(referrer.entry.clone()),
            &Prerequisite::Referrer(referrer),
            model,
        )
        .await?;
    }
    Ok(())
}

/// The hex of the subject's digest, after checking what an attach needs.
fn validate(attestation: &Attestation) -> Result<&str, StorageError> {
    let subject = &attestation.subject;
    let hex = subject.hex()?;
    if attestation.envelope.is_empty() || attestation.predicate_type.is_empty() {
        return Err(StorageError::permanent(
            op::INPUT,
            subject.to_string(),
            "empty DSSE envelope or predicate type",
        ));
    }
    if let Some(s) = &attestation.signature
        && (s.payload.is_empty() || s.signature.is_empty())
    {
        return Err(StorageError::permanent(
            op::INPUT,
            subject.to_string(),
            "empty signature payload or signature",
        ));
    }
    Ok(hex)
}

/// The subject's descriptor, resolved at most once per attach and awaited by every write that
/// needs it (nothing is written for a subject that does not resolve).
pub(super) type Model<'a> = Shared<BoxFuture<'a, Result<ResolvedArtifact, StorageError>>>;

/// What must exist before a manifest referencing it is accepted.
enum Prerequisite<'a> {
    /// A cosign `.att` / `.sig` layer blob, plus the cosign config if the tag is being created.
    CosignLayer { layer: &'a NewBlob<'a> },
    /// The referrer manifest's blobs: the empty config `{}` and its layer (the envelope, the
    /// bundle).
    ReferrerBlobs { layer: &'a NewBlob<'a> },
    /// The referrer manifest (and its blobs) before the fallback index lists it.
    Referrer(&'a Referrer<'a>),
}

impl Prerequisite<'_> {
    /// The layer blob a tag may already reference (then it exists and is not uploaded).
    fn layer_digest(&self) -> Option<&str> {
        match self {
            Prerequisite::CosignLayer { layer, .. } => Some(&layer.digest),
            _ => None,
        }
    }
}

/// The cosign `.att` / `.sig` tags: image manifests with a constant config, one layer each.
struct CosignTag {
    config: Descriptor,
}

impl CosignTag {
    /// Appends `layer` (content `blob`) to the manifest under `tag` unless `same` finds it.
    async fn append(
        &self,
        t: &dyn Transport,
        tag: &str,
        layer: &Descriptor,
        same: fn(&Descriptor, &Descriptor) -> bool,
        blob: &NewBlob<'_>,
        model: &Model<'_>,
    ) -> Result<bool, StorageError> {
        update_tag(
            t,
            tag,
            &blob.digest,
            || Manifest::cosign(self.config.clone()),
            |m: &mut Manifest| m.append_layer(layer.clone(), same),
            &Prerequisite::CosignLayer { layer: blob },
            model,
        )
        .await
    }
}

/// Adds an entry to the document under `tag` unless it is there, and confirms it stayed: read
/// (to keep every entry other writers put there), add, write, then read back after a pause and,
/// if our entry is gone, add it to what was read back and write again, at most
/// [`MAX_TAG_ROUNDS`] times, then [`ErrorKind::Contended`]. A registry has no conditional PUT:
/// another process (cosign, another replica) that read the tag before our write landed and
/// writes it after drops our entry. The read-back catches every such write that lands before it,
/// and the pause ([`settle`]) is sized so that a concurrent writer's write has landed by then.
/// Writers in this process are serialized per tag. `entry` names our entry in the error. Returns
/// whether it wrote.
async fn update_tag<T: TagDocument>(
    t: &dyn Transport,
    tag: &str,
    entry: &str,
    new: impl Fn() -> T + Send + Sync,
    add: impl Fn(&mut T) -> bool + Send + Sync,
    prerequisite: &Prerequisite<'_>,
    model: &Model<'_>,
) -> Result<bool, StorageError> {
    let lock = t.tag_lock(tag);
    let _guard = lock.lock().await;
    let mut read_at = Instant::now();
    let (mut doc, mut media_type, mut created) = match read_tag::<T>(t, tag).await? {
        Some(c) => (c.doc, c.media_type, false),
        None => (new(), T::MEDIA_TYPES[0].to_string(), true),
    };
    // A layer the tag already references exists (same payload signed again): no upload.
    let listed = prerequisite
        .layer_digest()
        .is_some_and(|d| doc.references(d));
    if !add(&mut doc) {
        return Ok(false);
    }
    model.clone().await?;
    // Whether the prerequisite is met, and whether that included a new tag's needs.
    let mut satisfied: Option<bool> = None;
    for round in 1..=MAX_TAG_ROUNDS {
        if satisfied.is_none() || (created && satisfied == Some(false)) {
            satisfy(t, prerequisite, created, listed, false).await?;
            satisfied = Some(created);
        }
        let bytes = serde_json::to_vec(&doc).map_err(|e| {
            StorageError::permanent(op::MANIFEST_PUT, t.tag_ref(tag), e.to_string())
        })?;
        put_manifest_checked(t, tag, &media_type, &bytes, prerequisite, created).await?;
        let pause = settle(t.concurrent_write_window(), read_at.elapsed());
        tokio::time::sleep(pause).await;
        // Confirm; if our entry is gone, what was read back (plus our entry) is the next write,
        // sent at once so that this write's own read-to-write window stays short.
        read_at = Instant::now();
        match read_tag::<T>(t, tag).await? {
            Some(mut c) => {
                if !add(&mut c.doc) {
                    return Ok(true);
                }
                (doc, media_type, created) = (c.doc, c.media_type, false);
            }
            None => {
                doc = new();
                add(&mut doc);
                (media_type, created) = (T::MEDIA_TYPES[0].to_string(), true);
            }
        }
        tracing::info!(tag = %t.tag_ref(tag), entry, round, "our entry was lost to a concurrent writer, writing it again");
    }
    Err(StorageError::new(
        op::MANIFEST_PUT,
        t.tag_ref(tag),
        ErrorKind::Contended,
        format!(
            "our entry {entry} was missing when the tag was read back after each of \
             {MAX_TAG_ROUNDS} writes: another writer (cosign, another controller replica) keeps \
             replacing the tag without it; attaching again adds it back"
        ),
    ))
}

/// The pause between writing a tag and reading it back: long enough for a writer that read the
/// tag before our write landed to have written it. That is `floor`, the transport's
/// [`concurrent_write_window`](Transport::concurrent_write_window) (cosign's read-to-write time),
/// or [`SETTLE_PER_WINDOW`] times our own read-to-write time (`window`: the registry's latency
/// and load as we see them) if longer; times a random 1–1.5 so that two of us do not keep
/// reading back in step; at most [`MAX_SETTLE`].
fn settle(floor: Duration, window: Duration) -> Duration {
    (window * SETTLE_PER_WINDOW)
        .max(floor)
        .mul_f64(rand::random_range(1.0..1.5))
        .min(MAX_SETTLE)
}

/// Makes what `prerequisite` names exist. `created`: the tag is new, so our config is referenced
/// too; `listed`: the tag already references the layer; `again`: the store refused the manifest
/// for an unknown blob, so everything is stored again and nothing is taken as known.
async fn satisfy(
    t: &dyn Transport,
    prerequisite: &Prerequisite<'_>,
    created: bool,
    listed: bool,
    again: bool,
) -> Result<(), StorageError> {
    match prerequisite {
        Prerequisite::CosignLayer { layer } => {
            let config = async {
                if created {
                    ensure_constant(t, oci::COSIGN_CONFIG).await?;
                }
                Ok::<_, StorageError>(())
            };
            let layer = async {
                if again || !listed {
                    layer.store(t, again).await?;
                }
                Ok::<_, StorageError>(())
            };
            futures::try_join!(config, layer).map(|_| ())
        }
        Prerequisite::ReferrerBlobs { layer } => {
            futures::try_join!(ensure_constant(t, EMPTY_BLOB), layer.store(t, again)).map(|_| ())
        }
        // Boxed: pushing the referrer puts a manifest, which may come back here.
        Prerequisite::Referrer(r) => Box::pin(push_referrer(t, r)).await.map(|_| ()),
    }
}

/// A manifest PUT; when the store refuses it for an unknown blob (registry wiped or
/// garbage-collected since this store remembered the blob, or a concurrent upload of it not
/// finished), forgets what the store remembered about the repository's blobs, stores the
/// prerequisite again and retries, a bounded number of times; then the error (transient).
async fn put_manifest_checked(
    t: &dyn Transport,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
    prerequisite: &Prerequisite<'_>,
    created: bool,
) -> Result<Option<String>, StorageError> {
    let mut attempt = 1;
    loop {
        match t.put_manifest(reference, media_type, bytes).await {
            Err(e) if e.is_blob_unknown() && attempt < BLOB_UNKNOWN_ATTEMPTS => {
                tracing::info!(error = %e, attempt, "manifest refused for an unknown blob, storing its blobs again");
                t.forget_known_blobs();
                if attempt > 1 {
                    // Someone else's upload of the blob may still be committing.
                    let delay =
                        Duration::from_millis(rand::random_range(10..=50) * u64::from(attempt));
                    tokio::time::sleep(delay).await;
                }
                satisfy(t, prerequisite, created, false, true).await?;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// A constant blob (the cosign config, `{}`): checked (and stored when missing) once per
/// repository for the store's lifetime, shared by concurrent attaches, then taken as known
/// without a request ([`Transport::known_blob`]).
async fn ensure_constant(t: &dyn Transport, bytes: &[u8]) -> Result<(), StorageError> {
    let digest = sha256_digest(bytes);
    t.known_blob(&digest)
        .get_or_try_init(|| async {
            if !t.blob_exists(&digest).await? {
                t.put_blob(&digest, Blob::Bytes(bytes)).await?;
            }
            Ok::<_, StorageError>(())
        })
        .await
        .map(|_| ())
}

/// Pushes the referrer manifest (by digest) and its blobs; returns whether the store said it
/// indexed the subject (`OCI-Subject`).
async fn push_referrer(t: &dyn Transport, r: &Referrer<'_>) -> Result<bool, StorageError> {
    let blobs = Prerequisite::ReferrerBlobs { layer: r.layer };
    satisfy(t, &blobs, false, false, false).await?;
    let indexed = put_manifest_checked(
        t,
        &r.digest,
        oci::OCI_MANIFEST_MEDIA_TYPE,
        &r.bytes,
        &blobs,
        false,
    )
    .await?;
    let indexed = indexed.is_some_and(|h| h == r.subject);
    if indexed {
        t.learned_referrers_api();
    }
    Ok(indexed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_before_reading_back_covers_the_slower_writer() {
        let ms = Duration::from_millis;
        for _ in 0..100 {
            // A fast registry: cosign's read-to-write time decides.
            let p = settle(ms(250), ms(20));
            assert!(p >= ms(250) && p < ms(375), "{p:?}");
            // A slow one: three times our own read-to-write time.
            let p = settle(ms(250), ms(200));
            assert!(p >= ms(600) && p < ms(900), "{p:?}");
            // A layout: our own time alone.
            let p = settle(Duration::ZERO, ms(2));
            assert!(p >= ms(6) && p < ms(9), "{p:?}");
            assert_eq!(settle(ms(250), Duration::from_secs(10)), MAX_SETTLE);
        }
    }
}
