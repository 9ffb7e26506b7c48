//! Sigstore bundles v0.3 (`sigstore_bundle.proto` of sigstore/protobuf-specs): a DSSE envelope
//! provenant signed, in the container cosign v3 writes by default (`cosign attest
//! --new-bundle-format`) and reads back (`cosign verify-attestation`), as does sigstore-go.
//!
//! The bundle types and their JSON are the `sigstore_protobuf_specs` crate's (already in the
//! tree through `sigstore`): its serde is the proto3 canonical JSON mapping (camelCase names,
//! bytes as standard base64, default fields left out), which is what cosign parses with
//! `protojson.Unmarshal`. Nothing here is assembled by hand.
//!
//! What provenant puts in a bundle (docs/registry-layout.md, "Sigstore bundles"):
//!
//! - `dsseEnvelope`: the envelope provenant signed, its one signature **without `keyid`**.
//!   sigstore-go verifies a bundle's envelope with the key's SSH-style fingerprint as key id and
//!   skips a signature whose `keyid` is anything else (go-securesystemslib `dsse.VerifyAndDecode`
//!   via sigstore-go `verify/signature.go` `verifyEnvelope`), so provenant's hex key id would make
//!   cosign refuse the bundle; cosign's own bundles carry no `keyid` (sigstore-go
//!   `sign/content.go` `DSSEData.Bundle`). The key id is not signed, so leaving it out changes
//!   nothing the signature covers.
//! - `verificationMaterial.publicKey.hint`: cosign's and sigstore-go's hint for a key, standard
//!   base64 of the SHA-256 of the public key's SubjectPublicKeyInfo DER (cosign
//!   `internal/key/svkeypair.go`, sigstore-go `sign/keys.go`): the same digest as provenant's key
//!   id, which writes it in hex. A verifier looks the key up by it; it proves nothing.
//! - no `tlogEntries`, no `timestampVerificationData`: provenant signs with its own key and
//!   writes no transparency-log entry (cosign: `--insecure-ignore-tlog`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sigstore_protobuf_specs::dev::sigstore::bundle::v1::bundle::Content;
use sigstore_protobuf_specs::dev::sigstore::bundle::v1::verification_material::Content as Material;
use sigstore_protobuf_specs::dev::sigstore::bundle::v1::{Bundle, VerificationMaterial};
use sigstore_protobuf_specs::dev::sigstore::common::v1::PublicKeyIdentifier;
use sigstore_protobuf_specs::io::intoto::{Envelope as ProtoEnvelope, Signature as ProtoSignature};

use super::dsse::{Envelope, EnvelopeSignature, decode_base64};

/// Media type of a Sigstore bundle v0.3: the bundle's `mediaType`, the OCI layer's media type
/// and the referrer's `artifactType`.
pub const BUNDLE_V03_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// Why a bundle cannot be built or read. Messages name the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("key id {0:?} is not a SHA-256 in lowercase hex (64 digits)")]
    KeyId(String),
    #[error("a Sigstore bundle holds a DSSE envelope with exactly one signature, this one has {0}")]
    SignatureCount(usize),
    #[error("DSSE envelope field {field} is not valid base64")]
    Base64 { field: String },
    #[error("not a Sigstore bundle: {0}")]
    Json(String),
    #[error("Sigstore bundle mediaType is {0:?}, not {BUNDLE_V03_MEDIA_TYPE}")]
    MediaType(String),
    #[error("Sigstore bundle holds {0}, not a DSSE envelope (dsseEnvelope)")]
    Content(&'static str),
    #[error("Sigstore bundle has no verificationMaterial")]
    NoVerificationMaterial,
    #[error("cannot serialize the Sigstore bundle: {0}")]
    Serialize(#[source] serde_json::Error),
}

/// A Sigstore bundle v0.3 whose content is a DSSE envelope, verified with a public key the
/// verifier already holds (looked up by `key_hint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigstoreBundle {
    /// The envelope as the bundle carries it: one signature, its `keyid` empty when provenant
    /// wrote it (see the module documentation).
    pub envelope: Envelope,
    /// `verificationMaterial.publicKey.hint`; `None` when the bundle carries a certificate
    /// instead (another tool's keyless bundle), or no hint.
    pub key_hint: Option<String>,
    /// Transparency-log entries in `verificationMaterial.tlogEntries` (provenant writes none;
    /// never checked here).
    pub tlog_entries: usize,
}

/// cosign's and sigstore-go's public key hint for the key provenant names by `key_id` (lowercase
/// hex SHA-256 of the SubjectPublicKeyInfo DER): the same 32 bytes, standard base64.
pub fn key_hint(key_id: &str) -> Result<String, BundleError> {
    let bad = || BundleError::KeyId(key_id.to_string());
    if key_id.len() != 64
        || !key_id
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(bad());
    }
    let digest = hex::decode(key_id).map_err(|_| bad())?;
    Ok(STANDARD.encode(digest))
}

impl SigstoreBundle {
    /// The bundle of `envelope` (one signature), signed by the key with id `key_id`. The
    /// signature's `keyid` is left out (see the module documentation).
    pub fn new(envelope: &Envelope, key_id: &str) -> Result<Self, BundleError> {
        if envelope.signatures.len() != 1 {
            return Err(BundleError::SignatureCount(envelope.signatures.len()));
        }
        let mut envelope = envelope.clone();
        envelope.signatures[0].keyid.clear();
        Ok(SigstoreBundle {
            envelope,
            key_hint: Some(key_hint(key_id)?),
            tlog_entries: 0,
        })
    }

    /// The bundle as compact canonical JSON: `mediaType`, `verificationMaterial`,
    /// `dsseEnvelope` (field-number order, so the same envelope always gives the same bytes).
    pub fn to_json(&self) -> Result<Vec<u8>, BundleError> {
        let payload = decode(&self.envelope.payload, "payload")?;
        let signatures = self
            .envelope
            .signatures
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Ok(ProtoSignature {
                    sig: decode(&s.sig, &format!("signatures[{i}].sig"))?,
                    keyid: s.keyid.clone(),
                })
            })
            .collect::<Result<Vec<_>, BundleError>>()?;
        let bundle = Bundle {
            media_type: BUNDLE_V03_MEDIA_TYPE.to_string(),
            verification_material: Some(VerificationMaterial {
                tlog_entries: Vec::new(),
                timestamp_verification_data: None,
                content: self
                    .key_hint
                    .as_ref()
                    .map(|hint| Material::PublicKey(PublicKeyIdentifier { hint: hint.clone() })),
            }),
            content: Some(Content::DsseEnvelope(ProtoEnvelope {
                payload,
                payload_type: self.envelope.payload_type.clone(),
                signatures,
            })),
        };
        serde_json::to_vec(&bundle).map_err(BundleError::Serialize)
    }

    /// Reads a bundle (input: any registry or layout content). Accepts v0.3 bundles holding a
    /// DSSE envelope with exactly one signature (the spec's rule, which cosign enforces);
    /// anything else is an error naming the field.
    pub fn from_json(bytes: &[u8]) -> Result<Self, BundleError> {
        // The protobuf JSON mapping refuses unknown fields and wrong types; messages nest a
        // few levels at most, far under serde_json's recursion limit.
        let bundle: Bundle =
            serde_json::from_slice(bytes).map_err(|e| BundleError::Json(e.to_string()))?;
        if bundle.media_type != BUNDLE_V03_MEDIA_TYPE {
            return Err(BundleError::MediaType(bundle.media_type));
        }
        let material = bundle
            .verification_material
            .ok_or(BundleError::NoVerificationMaterial)?;
        let envelope = match bundle.content {
            Some(Content::DsseEnvelope(e)) => e,
            Some(Content::MessageSignature(_)) => {
                return Err(BundleError::Content("a message signature"));
            }
            None => return Err(BundleError::Content("no content")),
        };
        if envelope.signatures.len() != 1 {
            return Err(BundleError::SignatureCount(envelope.signatures.len()));
        }
        let key_hint = match material.content {
            Some(Material::PublicKey(k)) if !k.hint.is_empty() => Some(k.hint),
            _ => None,
        };
        Ok(SigstoreBundle {
            envelope: Envelope {
                payload_type: envelope.payload_type,
                payload: STANDARD.encode(&envelope.payload),
                signatures: envelope
                    .signatures
                    .into_iter()
                    .map(|s| EnvelopeSignature {
                        keyid: s.keyid,
                        sig: STANDARD.encode(&s.sig),
                    })
                    .collect(),
            },
            key_hint,
            tlog_entries: material.tlog_entries.len(),
        })
    }
}

fn decode(text: &str, field: &str) -> Result<Vec<u8>, BundleError> {
    decode_base64(field, text).map_err(|_| BundleError::Base64 {
        field: field.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::signing::keys::CosignKey;
    use crate::signing::{IN_TOTO_PAYLOAD_TYPE, Signer, sign_envelope, verify_envelope};

    const STATEMENT: &[u8] = br#"{"_type":"https://in-toto.io/Statement/v1","subject":[]}"#;

    fn key() -> &'static CosignKey {
        static KEY: OnceLock<CosignKey> = OnceLock::new();
        KEY.get_or_init(|| CosignKey::ephemeral().expect("key"))
    }

    fn signed() -> Envelope {
        sign_envelope(key(), IN_TOTO_PAYLOAD_TYPE, STATEMENT).expect("signs")
    }

    #[test]
    fn the_hint_is_the_key_id_in_base64() {
        // sha256 of the empty string: hex in provenant's key id, base64 in cosign's hint.
        assert_eq!(
            key_hint("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855").unwrap(),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        for bad in [
            "",
            "abc",
            &"A".repeat(64),
            &"g".repeat(64),
            &"ab".repeat(33),
        ] {
            let err = key_hint(bad).unwrap_err();
            assert!(err.to_string().starts_with("key id "), "{err}");
        }
    }

    /// The bytes cosign reads: canonical protobuf JSON, in field-number order, no `keyid`, no
    /// tlog entries, no timestamps.
    #[test]
    fn a_bundle_is_canonical_json_without_keyid() {
        let envelope = Envelope {
            payload_type: IN_TOTO_PAYLOAD_TYPE.into(),
            payload: "e30=".into(),
            signatures: vec![EnvelopeSignature {
                keyid: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
                sig: "MEUC".into(),
            }],
        };
        let bundle = SigstoreBundle::new(&envelope, &envelope.signatures[0].keyid).unwrap();
        assert_eq!(
            String::from_utf8(bundle.to_json().unwrap()).unwrap(),
            r#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{"publicKey":{"hint":"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="}},"dsseEnvelope":{"payload":"e30=","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"MEUC"}]}}"#
        );
    }

    #[test]
    fn round_trip_keeps_a_verifiable_envelope() {
        let envelope = signed();
        let bundle = SigstoreBundle::new(&envelope, key().key_id()).unwrap();
        let json = bundle.to_json().unwrap();
        let back = SigstoreBundle::from_json(&json).unwrap();
        assert_eq!(back, bundle);
        assert_eq!(back.key_hint, Some(key_hint(key().key_id()).unwrap()));
        assert_eq!(back.envelope.signatures[0].keyid, "");
        assert_eq!(back.envelope.payload, envelope.payload);
        assert_eq!(
            verify_envelope(&back.envelope, key().public_key()).unwrap(),
            STATEMENT
        );
        // Deterministic: the same envelope gives the same bytes.
        assert_eq!(back.to_json().unwrap(), json);
    }

    #[test]
    fn a_tampered_bundle_reads_but_does_not_verify() {
        let json = SigstoreBundle::new(&signed(), key().key_id())
            .unwrap()
            .to_json()
            .unwrap();
        let mut value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        value["dsseEnvelope"]["payload"] = STANDARD.encode(br#"{"_type":"x"}"#).into();
        let tampered = SigstoreBundle::from_json(&serde_json::to_vec(&value).unwrap()).unwrap();
        let err = verify_envelope(&tampered.envelope, key().public_key()).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
    }

    /// Bundles are read from registries and layouts anyone may have written: every one-byte
    /// change of a valid bundle reads or fails, never panics (the protobuf JSON reader's
    /// conversion to the typed bundle has an `expect`).
    #[test]
    fn no_one_byte_change_makes_reading_panic() {
        let envelope = Envelope {
            payload_type: IN_TOTO_PAYLOAD_TYPE.into(),
            payload: STANDARD.encode(STATEMENT),
            signatures: vec![EnvelopeSignature {
                keyid: String::new(),
                sig: "MEUCIQ==".into(),
            }],
        };
        let json = SigstoreBundle::new(&envelope, key().key_id())
            .unwrap()
            .to_json()
            .unwrap();
        for i in 0..json.len() {
            for b in [b'"', b'{', b'}', b'[', b'1', b'-', b'\\', b'e', 0xff] {
                let mut bytes = json.clone();
                bytes[i] = b;
                let _ = SigstoreBundle::from_json(&bytes);
                bytes.remove(i);
                let _ = SigstoreBundle::from_json(&bytes);
            }
        }
    }

    type Edit = fn(&mut serde_json::Value);

    #[test]
    fn what_is_not_a_usable_bundle_is_named() {
        let good: serde_json::Value = serde_json::from_slice(
            &SigstoreBundle::new(&signed(), key().key_id())
                .unwrap()
                .to_json()
                .unwrap(),
        )
        .unwrap();
        let with = |edit: Edit| {
            let mut v = good.clone();
            edit(&mut v);
            SigstoreBundle::from_json(&serde_json::to_vec(&v).unwrap())
                .unwrap_err()
                .to_string()
        };
        let cases: [(Edit, &str); 6] = [
            (
                |v| v["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.2".into(),
                "mediaType is \"application/vnd.dev.sigstore.bundle+json;version=0.2\"",
            ),
            (
                |v| {
                    v.as_object_mut().unwrap().remove("verificationMaterial");
                },
                "no verificationMaterial",
            ),
            (
                |v| {
                    v.as_object_mut().unwrap().remove("dsseEnvelope");
                },
                "holds no content",
            ),
            (
                |v| v["dsseEnvelope"]["signatures"] = serde_json::json!([]),
                "exactly one signature, this one has 0",
            ),
            (
                |v| v["dsseEnvelope"]["payload"] = "%%%".into(),
                "not a Sigstore bundle",
            ),
            (|v| v["extra"] = 1.into(), "not a Sigstore bundle"),
        ];
        for (edit, want) in cases {
            let err = with(edit);
            assert!(err.contains(want), "{err} (want {want})");
        }
        for junk in [
            &b""[..],
            b"null",
            b"[]",
            b"{",
            b"\xff",
            b"{\"mediaType\":1}",
        ] {
            let err = SigstoreBundle::from_json(junk).unwrap_err();
            assert!(
                err.to_string().starts_with("not a Sigstore bundle"),
                "{err}"
            );
        }
        let mut two = signed();
        two.signatures.push(two.signatures[0].clone());
        assert!(matches!(
            SigstoreBundle::new(&two, key().key_id()),
            Err(BundleError::SignatureCount(2))
        ));
    }
}
