//! DSSE envelopes (<https://github.com/secure-systems-lab/dsse>, protocol v1): what provenance
//! is stored and attached as. The signature covers the pre-authentication encoding (PAE) of the
//! payload type and payload, never the JSON of the envelope.

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use serde::{Deserialize, Serialize};

use super::keys::PublicKey;
use super::{Signer, SigningError};

/// Payload type of an in-toto Statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// A DSSE envelope, fields in the order cosign writes them (`to_json` output is deterministic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// Standard base64 with padding.
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// Key id of the signing key (see `signing::key_id_of_spki`); empty when unknown, as the spec
    /// makes it optional.
    #[serde(default)]
    pub keyid: String,
    /// Standard base64 of the ASN.1 DER ECDSA signature over the PAE.
    pub sig: String,
}

/// The spec allows standard and URL-safe base64, with or without padding: read them all, write
/// standard with padding.
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub(crate) fn decode_base64(field: &str, text: &str) -> Result<Vec<u8>, SigningError> {
    STANDARD_LENIENT.decode(text).or_else(|standard_error| {
        URL_SAFE_LENIENT
            .decode(text)
            .map_err(|_| SigningError::EnvelopeBase64 {
                field: field.to_string(),
                source: standard_error,
            })
    })
}

impl Envelope {
    /// The envelope as compact JSON (payloadType, payload, signatures; keyid, sig: the order
    /// cosign writes): the bytes that are stored and attached.
    pub fn to_json(&self) -> Result<Vec<u8>, SigningError> {
        serde_json::to_vec(self).map_err(SigningError::EnvelopeJson)
    }

    /// Read an envelope from JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SigningError> {
        serde_json::from_slice(bytes).map_err(|e| SigningError::InvalidEnvelope(e.to_string()))
    }

    /// The decoded payload, unverified.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, SigningError> {
        decode_base64("payload", &self.payload)
    }
}

/// DSSE v1 pre-authentication encoding:
/// `"DSSEv1" SP len(type) SP type SP len(body) SP body`, lengths in ASCII decimal bytes.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Sign `payload` into a one-signature envelope; `keyid` is the signer's key id.
pub fn sign_envelope(
    signer: &dyn Signer,
    payload_type: &str,
    payload: &[u8],
) -> Result<Envelope, SigningError> {
    let signature = signer.sign(&pae(payload_type, payload))?;
    Ok(Envelope {
        payload_type: payload_type.to_string(),
        payload: STANDARD.encode(payload),
        signatures: vec![EnvelopeSignature {
            keyid: signer.key_id().to_string(),
            sig: STANDARD.encode(signature),
        }],
    })
}

/// Check that `key` signed the envelope and return the payload. Signatures whose `keyid` names
/// another key are skipped; signatures without a `keyid` are tried.
pub fn verify_envelope(envelope: &Envelope, key: &PublicKey) -> Result<Vec<u8>, SigningError> {
    let payload = envelope.payload_bytes()?;
    let message = pae(&envelope.payload_type, &payload);
    let mut candidates = 0;
    for (index, signature) in envelope.signatures.iter().enumerate() {
        if !signature.keyid.is_empty() && signature.keyid != key.key_id() {
            continue;
        }
        candidates += 1;
        let der = decode_base64(&format!("signatures[{index}].sig"), &signature.sig)?;
        if key.verify(&message, &der).is_ok() {
            return Ok(payload);
        }
    }
    if candidates == 0 {
        let found = envelope
            .signatures
            .iter()
            .map(|s| {
                if s.keyid.is_empty() {
                    "\"\"".to_string()
                } else {
                    s.keyid.clone()
                }
            })
            .collect::<Vec<_>>();
        return Err(SigningError::NoSignatureByKey {
            key_id: key.key_id().to_string(),
            found: if found.is_empty() {
                "none, the envelope is unsigned".to_string()
            } else {
                found.join(", ")
            },
        });
    }
    Err(SigningError::BadEnvelopeSignature {
        key_id: key.key_id().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::signing::keys::CosignKey;

    fn signer() -> &'static CosignKey {
        static KEY: OnceLock<CosignKey> = OnceLock::new();
        KEY.get_or_init(|| CosignKey::ephemeral().expect("key"))
    }

    fn other_key() -> PublicKey {
        static KEY: OnceLock<PublicKey> = OnceLock::new();
        KEY.get_or_init(|| CosignKey::ephemeral().expect("key").public_key().clone())
            .clone()
    }

    const STATEMENT: &[u8] = br#"{"_type":"https://in-toto.io/Statement/v1","subject":[]}"#;

    #[test]
    fn pae_matches_the_spec_example() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
        // Lengths count bytes, not characters.
        assert_eq!(
            pae("t", "é".as_bytes()),
            "DSSEv1 1 t 2 é".as_bytes().to_vec()
        );
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let key = signer();
        let envelope = sign_envelope(key, IN_TOTO_PAYLOAD_TYPE, STATEMENT).expect("signs");
        assert_eq!(envelope.payload_type, IN_TOTO_PAYLOAD_TYPE);
        assert_eq!(envelope.signatures.len(), 1);
        assert_eq!(envelope.signatures[0].keyid, key.key_id());
        let payload = verify_envelope(&envelope, key.public_key()).expect("verifies");
        assert_eq!(payload, STATEMENT);

        let json = envelope.to_json().expect("serializes");
        let parsed = Envelope::from_json(&json).expect("parses");
        assert_eq!(parsed, envelope);
        assert_eq!(parsed.to_json().expect("serializes"), json);
    }

    #[test]
    fn any_payload_type_and_payload_round_trip_through_json() {
        let key = signer();
        // Escaped characters in the type, and every payload length modulo 3 (base64 padding).
        for (payload_type, payload) in [
            ("", &b""[..]),
            ("t", &b"a"[..]),
            ("t\"with\\quotes\u{7}", &b"ab"[..]),
            ("\u{e9}", &[0u8, 255, 254, 1][..]),
        ] {
            let json = sign_envelope(key, payload_type, payload)
                .and_then(|e| e.to_json())
                .expect("signs");
            let envelope = Envelope::from_json(&json).expect("parses");
            assert_eq!(envelope.payload_type, payload_type);
            assert_eq!(
                verify_envelope(&envelope, key.public_key()).expect("verifies"),
                payload
            );
        }
    }

    #[test]
    fn json_field_order_is_fixed() {
        let envelope = Envelope {
            payload_type: IN_TOTO_PAYLOAD_TYPE.into(),
            payload: "e30=".into(),
            signatures: vec![EnvelopeSignature {
                keyid: "ab".into(),
                sig: "MEUC".into(),
            }],
        };
        assert_eq!(
            String::from_utf8(envelope.to_json().expect("serializes")).expect("utf-8"),
            r#"{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"keyid":"ab","sig":"MEUC"}]}"#
        );
    }

    #[test]
    fn tampered_payload_fails_as_bad_signature() {
        let key = signer();
        let mut envelope = sign_envelope(key, IN_TOTO_PAYLOAD_TYPE, STATEMENT).expect("signs");
        let mut payload = STATEMENT.to_vec();
        payload[5] ^= 0x01;
        envelope.payload = STANDARD.encode(&payload);
        let err = verify_envelope(&envelope, key.public_key()).expect_err("tampered");
        assert!(
            matches!(err, SigningError::BadEnvelopeSignature { .. }),
            "{err}"
        );
    }

    #[test]
    fn tampered_payload_type_fails_as_bad_signature() {
        let key = signer();
        let mut envelope = sign_envelope(key, IN_TOTO_PAYLOAD_TYPE, STATEMENT).expect("signs");
        envelope.payload_type = "application/json".into();
        let err = verify_envelope(&envelope, key.public_key()).expect_err("tampered");
        assert!(
            matches!(err, SigningError::BadEnvelopeSignature { .. }),
            "{err}"
        );
    }

    #[test]
    fn tampered_signature_fails_as_bad_signature() {
        let key = signer();
        let mut envelope = sign_envelope(key, IN_TOTO_PAYLOAD_TYPE, STATEMENT).expect("signs");
        let mut der = STANDARD
            .decode(&envelope.signatures[0].sig)
            .expect("base64");
        let last = der.len() - 1;
        der[last] ^= 0x01;
        envelope.signatures[0].sig = STANDARD.encode(&der);
        let err = verify_envelope(&envelope, key.public_key()).expect_err("tampered");
        assert!(
            matches!(err, SigningError::BadEnvelopeSignature { .. }),
            "{err}"
        );
    }

    #[test]
    fn wrong_key_fails_as_no_signature_by_key() {
        let key = signer();
        let envelope = sign_envelope(key, IN_TOTO_PAYLOAD_TYPE, STATEMENT).expect("signs");
        let other = other_key();
        let err = verify_envelope(&envelope, &other).expect_err("wrong key");
        assert!(
            matches!(err, SigningError::NoSignatureByKey { .. }),
            "{err}"
        );
        assert!(err.to_string().contains(other.key_id()), "{err}");

        // Without a keyid the signature is tried, and does not verify with the other key.
        let mut anonymous = envelope.clone();
        anonymous.signatures[0].keyid.clear();
        assert!(verify_envelope(&anonymous, key.public_key()).is_ok());
        let err = verify_envelope(&anonymous, &other).expect_err("wrong key");
        assert!(
            matches!(err, SigningError::BadEnvelopeSignature { .. }),
            "{err}"
        );
    }

    #[test]
    fn unsigned_envelope_has_no_signature_by_key() {
        let key = signer();
        let mut envelope = sign_envelope(key, IN_TOTO_PAYLOAD_TYPE, STATEMENT).expect("signs");
        envelope.signatures.clear();
        let err = verify_envelope(&envelope, key.public_key()).expect_err("unsigned");
        assert!(
            matches!(err, SigningError::NoSignatureByKey { .. }),
            "{err}"
        );
    }

    #[test]
    fn undecodable_base64_is_named() {
        let key = signer();
        let envelope = sign_envelope(key, IN_TOTO_PAYLOAD_TYPE, STATEMENT).expect("signs");

        let mut bad_payload = envelope.clone();
        bad_payload.payload = "not base64!".into();
        let err = verify_envelope(&bad_payload, key.public_key()).expect_err("bad payload");
        assert!(
            matches!(&err, SigningError::EnvelopeBase64 { field, .. } if field == "payload"),
            "{err}"
        );

        let mut bad_sig = envelope.clone();
        bad_sig.signatures[0].sig = "%%%".into();
        let err = verify_envelope(&bad_sig, key.public_key()).expect_err("bad sig");
        assert!(
            matches!(&err, SigningError::EnvelopeBase64 { field, .. } if field == "signatures[0].sig"),
            "{err}"
        );
    }

    #[test]
    fn url_safe_unpadded_base64_is_read() {
        let key = signer();
        let mut envelope = sign_envelope(key, IN_TOTO_PAYLOAD_TYPE, STATEMENT).expect("signs");
        let der = STANDARD
            .decode(&envelope.signatures[0].sig)
            .expect("base64");
        envelope.signatures[0].sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(der);
        envelope.payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(STATEMENT);
        assert_eq!(
            verify_envelope(&envelope, key.public_key()).expect("verifies"),
            STATEMENT
        );
    }

    #[test]
    fn from_json_errors_are_clear() {
        let err = Envelope::from_json(b"{}").expect_err("empty");
        assert!(err.to_string().starts_with("not a DSSE envelope:"), "{err}");
        assert!(err.to_string().contains("payloadType"), "{err}");
        let err = Envelope::from_json(b"\x00").expect_err("binary");
        assert!(err.to_string().starts_with("not a DSSE envelope:"), "{err}");
        // keyid is optional on input.
        let envelope = Envelope::from_json(
            br#"{"payload":"e30=","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"MEUC"}]}"#,
        )
        .expect("parses");
        assert_eq!(envelope.signatures[0].keyid, "");
    }
}
