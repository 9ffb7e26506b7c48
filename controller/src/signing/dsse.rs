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

fn decode_base64(field: &str, text: &str) -> Result<Vec<u8>, SigningError> {
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
    /// The envelope as compact JSON: the bytes that are stored and attached.
    pub fn to_json(&self) -> Vec<u8> {
        // Strings and a Vec of structs of strings: serialization cannot fail.
        serde_json::to_vec(self).expect("a DSSE envelope always serializes to JSON")
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
    let header = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    );
    let mut out = Vec::with_capacity(header.len() + payload.len());
    out.extend_from_slice(header.as_bytes());
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

/// Sign `payload` into a one-signature envelope and return its JSON: the bytes of
/// `sign_envelope(signer, payload_type, payload)?.to_json()`, written directly. The base64 of
/// the payload goes straight into the output (base64 needs no JSON escaping), without an
/// intermediate [`Envelope`] or an escaping pass over the encoded payload.
pub fn sign_envelope_json(
    signer: &dyn Signer,
    payload_type: &str,
    payload: &[u8],
) -> Result<Vec<u8>, SigningError> {
    let signature = signer.sign(&pae(payload_type, payload))?;
    Ok(envelope_json(
        payload_type,
        payload,
        signer.key_id(),
        &signature,
    ))
}

/// Room to reserve before a payload for [`sign_envelope_json_in_place`]: the longest PAE header
/// of `payload_type`.
pub fn pae_header_room(payload_type: &str) -> usize {
    // "DSSEv1 " + len(type) + " " + type + " " + len(payload) + " ", lengths of up to 20 digits.
    7 + 20 + 1 + payload_type.len() + 1 + 20 + 1
}

/// [`sign_envelope_json`] for a payload written after [`pae_header_room`] bytes of room:
/// `buffer[room..]` is the payload. The PAE header is written into the room, right before the
/// payload, so that the PAE is signed without copying the payload (of a large statement, tens of
/// kilobytes).
pub fn sign_envelope_json_in_place(
    signer: &dyn Signer,
    payload_type: &str,
    buffer: &mut [u8],
    room: usize,
) -> Result<Vec<u8>, SigningError> {
    if buffer.len() < room {
        return Err(SigningError::Sign {
            key_id: signer.key_id().to_string(),
            reason: format!(
                "a {}-byte buffer cannot hold {room} bytes of room before the payload",
                buffer.len()
            ),
        });
    }
    let header = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        buffer.len() - room
    );
    let start = room
        .checked_sub(header.len())
        .ok_or_else(|| SigningError::Sign {
            key_id: signer.key_id().to_string(),
            reason: format!(
                "{room} bytes of room before the payload, the PAE header needs {}",
                header.len()
            ),
        })?;
    buffer[start..room].copy_from_slice(header.as_bytes());
    let signature = signer.sign(&buffer[start..])?;
    Ok(envelope_json(
        payload_type,
        &buffer[room..],
        signer.key_id(),
        &signature,
    ))
}

/// The JSON of a one-signature envelope, byte for byte what [`Envelope::to_json`] writes.
fn envelope_json(payload_type: &str, payload: &[u8], keyid: &str, signature: &[u8]) -> Vec<u8> {
    let base64_len = |n: usize| n.div_ceil(3) * 4;
    let mut out = Vec::with_capacity(
        80 + 2 * (payload_type.len() + keyid.len())
            + base64_len(payload.len())
            + base64_len(signature.len()),
    );
    out.extend_from_slice(b"{\"payloadType\":");
    write_json_string(&mut out, payload_type);
    out.extend_from_slice(b",\"payload\":\"");
    append_base64(&mut out, payload);
    out.extend_from_slice(b"\",\"signatures\":[{\"keyid\":");
    write_json_string(&mut out, keyid);
    out.extend_from_slice(b",\"sig\":\"");
    append_base64(&mut out, signature);
    out.extend_from_slice(b"\"}]}");
    out
}

/// A JSON string as serde_json writes it (escaped).
fn write_json_string(out: &mut Vec<u8>, text: &str) {
    // Writing a string into a Vec cannot fail.
    serde_json::to_writer(&mut *out, text).expect("a string always serializes to JSON");
}

/// Standard base64 with padding, appended: the bytes of `STANDARD.encode(bytes)`, six input bytes
/// (eight characters) per step through a table of character pairs, the last few bytes through the
/// base64 crate. The payload of a statement is its largest piece of work after hashing.
fn append_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    out.resize(start + bytes.len().div_ceil(3) * 4, 0);
    let encoded = &mut out[start..];
    let mut read = 0;
    let mut written = 0;
    // Eight bytes read (big-endian), the first six encoded.
    while let Some(chunk) = bytes.get(read..read + 8) {
        let n = u64::from_be_bytes(chunk.try_into().expect("8 bytes")) >> 16;
        let pair = |shift: u32| u64::from(BASE64_PAIRS[((n >> shift) & 0xFFF) as usize]);
        let eight = pair(36) | pair(24) << 16 | pair(12) << 32 | pair(0) << 48;
        encoded[written..written + 8].copy_from_slice(&eight.to_le_bytes());
        read += 6;
        written += 8;
    }
    let tail = STANDARD
        .encode_slice(&bytes[read..], &mut encoded[written..])
        .expect("the buffer has the base64 length");
    debug_assert_eq!(written + tail, encoded.len());
}

/// Every 12-bit value → its two standard base64 characters (the first in the low byte).
static BASE64_PAIRS: [u16; 4096] = {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut table = [0u16; 4096];
    let mut i = 0;
    while i < 4096 {
        table[i] = ALPHABET[i >> 6] as u16 | (ALPHABET[i & 63] as u16) << 8;
        i += 1;
    }
    table
};

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

        let parsed = Envelope::from_json(&envelope.to_json()).expect("parses");
        assert_eq!(parsed, envelope);
        assert_eq!(parsed.to_json(), envelope.to_json());
    }

    #[test]
    fn envelope_json_is_the_bytes_of_the_envelope() {
        let key = signer();
        for (payload_type, payload) in [
            (IN_TOTO_PAYLOAD_TYPE, STATEMENT),
            ("", &b""[..]),
            ("t", &b"a"[..]),
            ("t\"with\\quotes\u{7}", &b"ab"[..]),
            ("\u{e9}", &[0u8, 255, 254, 1][..]),
        ] {
            let json = sign_envelope_json(key, payload_type, payload).expect("signs");
            let envelope = Envelope::from_json(&json).expect("parses");
            assert_eq!(envelope.to_json(), json, "{payload_type:?}");
            assert_eq!(envelope.payload_type, payload_type);
            assert_eq!(envelope.signatures[0].keyid, key.key_id());
            assert_eq!(
                verify_envelope(&envelope, key.public_key()).expect("verifies"),
                payload
            );
        }
        // Every payload length modulo 3 (padding).
        for n in 0..7 {
            let payload = vec![b'x'; n];
            let json = envelope_json("t", &payload, "k\"id", &[1, 2, 3, 4]);
            let envelope = Envelope::from_json(&json).expect("parses");
            assert_eq!(envelope.to_json(), json);
            assert_eq!(envelope.payload_bytes().expect("base64"), payload);
        }
    }

    #[test]
    fn in_place_signing_signs_the_pae() {
        let key = signer();
        for payload_type in [IN_TOTO_PAYLOAD_TYPE, "", "t"] {
            for payload in [STATEMENT, b"", b"x"] {
                let room = pae_header_room(payload_type);
                let mut buffer = vec![0xAA; room];
                buffer.extend_from_slice(payload);
                let json = sign_envelope_json_in_place(key, payload_type, &mut buffer, room)
                    .expect("signs");
                // The room now ends with the PAE header: the PAE is what `pae` gives.
                let start = buffer.len() - pae(payload_type, payload).len();
                assert_eq!(&buffer[start..], pae(payload_type, payload).as_slice());
                let envelope = Envelope::from_json(&json).expect("parses");
                assert_eq!(envelope.to_json(), json);
                assert_eq!(
                    verify_envelope(&envelope, key.public_key()).expect("verifies"),
                    payload
                );
            }
        }
        // Too little room is an error, not a panic.
        let mut buffer = b"  payload".to_vec();
        assert!(sign_envelope_json_in_place(key, IN_TOTO_PAYLOAD_TYPE, &mut buffer, 2).is_err());
        // So is a buffer shorter than the room it claims.
        let room = pae_header_room(IN_TOTO_PAYLOAD_TYPE);
        let mut buffer = vec![0u8; room - 1];
        assert!(sign_envelope_json_in_place(key, IN_TOTO_PAYLOAD_TYPE, &mut buffer, room).is_err());
    }

    #[test]
    fn base64_is_the_base64_crates() {
        let bytes: Vec<u8> = (0..600u32).map(|i| (i * 97 + i / 7) as u8).collect();
        for n in 0..bytes.len() {
            for prefix in [&b""[..], b"{\"x\":\""] {
                let mut out = prefix.to_vec();
                append_base64(&mut out, &bytes[..n]);
                assert_eq!(&out[..prefix.len()], prefix);
                assert_eq!(
                    std::str::from_utf8(&out[prefix.len()..]).expect("ascii"),
                    STANDARD.encode(&bytes[..n]),
                    "{n} bytes"
                );
            }
        }
        // Every 12-bit group, many times over: a pseudo-random megabyte.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let random: Vec<u8> = (0..1 << 20)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let mut out = Vec::new();
        append_base64(&mut out, &random);
        assert_eq!(out, STANDARD.encode(&random).as_bytes());
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
            String::from_utf8(envelope.to_json()).expect("utf-8"),
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

#[cfg(test)]
mod speed_scratch {
    use super::*;
    #[test]
    #[ignore]
    fn base64_speed() {
        let bytes: Vec<u8> = (0..86_000u32).map(|i| (i * 97 + i / 7) as u8).collect();
        for _ in 0..3 {
            let mut best_mine = f64::MAX;
            let mut best_crate = f64::MAX;
            for _ in 0..200 {
                let t = std::time::Instant::now();
                for _ in 0..10 {
                    let mut out = Vec::with_capacity(120_000);
                    append_base64(&mut out, std::hint::black_box(&bytes));
                    std::hint::black_box(out);
                }
                best_mine = best_mine.min(t.elapsed().as_secs_f64() * 1e5);
                let t = std::time::Instant::now();
                for _ in 0..10 {
                    let mut out = vec![0u8; 120_000];
                    let n = STANDARD
                        .encode_slice(std::hint::black_box(&bytes), &mut out)
                        .unwrap();
                    std::hint::black_box((out, n));
                }
                best_crate = best_crate.min(t.elapsed().as_secs_f64() * 1e5);
            }
            println!("mine {best_mine:.1} µs, crate {best_crate:.1} µs");
        }
    }
}
