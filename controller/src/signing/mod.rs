//! Signing: cosign-compatible ECDSA P-256 keys, DSSE envelopes (what provenance is attached
//! as), Sigstore bundles around them (cosign v3's format) and cosign "simple signing" payloads
//! (the `.sig` over a model manifest).
//! docs/signing.md describes the formats.
//!
//! Everything that signs goes through [`Signer`], so the controller, `provenant attest` and the
//! tests do not care where the private key lives.

pub mod bundle;
pub mod dsse;
pub mod keygen;
pub mod keys;
mod pem;
pub mod simple_signing;

pub use bundle::{BUNDLE_V03_MEDIA_TYPE, BundleError, SigstoreBundle, key_hint};
pub use dsse::{
    Envelope, EnvelopeSignature, IN_TOTO_PAYLOAD_TYPE, pae, sign_envelope, verify_envelope,
};
pub use keys::{
    CosignKey, GeneratedKeys, PublicKey, SECRET_PASSWORD, SECRET_PRIVATE_KEY, SECRET_PUBLIC_KEY,
    generate, key_id_of_public_pem, key_id_of_spki, load_from_secret_data,
};

/// Something that holds a private key and signs with it: ECDSA P-256 over SHA-256, ASN.1 DER
/// signatures (what cosign and DSSE verifiers expect).
pub trait Signer: Send + Sync {
    /// Lowercase hex SHA-256 of the public key's SubjectPublicKeyInfo DER.
    fn key_id(&self) -> &str;
    /// The public key as a `PUBLIC KEY` PEM (what `cosign.pub` holds).
    fn public_key_pem(&self) -> &str;
    /// Sign `message` (hashed with SHA-256 here); returns the DER-encoded signature.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SigningError>;
}

/// What can go wrong loading keys, signing and verifying. Messages name the key or field at
/// fault and never carry key material.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("{key} is not an encrypted sigstore private key: {reason}")]
    NotEncryptedPrivateKey { key: String, reason: String },
    #[error("wrong password for {key}")]
    WrongPassword { key: String },
    #[error(
        "{key} is an unencrypted private key but a password was given: drop the password, or encrypt the key with `cosign import-key-pair`"
    )]
    UnexpectedPassword { key: String },
    #[error("{key} uses encryption parameters cosign does not write: {reason}")]
    UnsupportedEncryption { key: String, reason: String },
    #[error("{key}: key is not ECDSA P-256 ({found})")]
    UnsupportedKey { key: String, found: String },
    #[error("{key} is not a PEM public key: {reason}")]
    InvalidPublicKey { key: String, reason: String },
    #[error(
        "the signing key Secret has no `{key}` (expected `cosign.key`, `cosign.password`, `cosign.pub`)"
    )]
    MissingSecretKey { key: &'static str },
    #[error(
        "cosign.pub does not match cosign.key: cosign.pub has key id {public_key_id}, cosign.key has key id {private_key_id}"
    )]
    PublicKeyMismatch {
        public_key_id: String,
        private_key_id: String,
    },
    #[error("cannot generate a key pair: {0}")]
    Generate(String),
    #[error("cannot sign with key {key_id}: {reason}")]
    Sign { key_id: String, reason: String },
    #[error("signature does not verify with key {key_id}")]
    InvalidSignature { key_id: String },
    #[error("not a DSSE envelope: {0}")]
    InvalidEnvelope(String),
    #[error("cannot serialize the DSSE envelope: {0}")]
    EnvelopeJson(#[source] serde_json::Error),
    #[error("DSSE envelope field {field} is not valid base64: {source}")]
    EnvelopeBase64 {
        field: String,
        #[source]
        source: base64::DecodeError,
    },
    #[error("DSSE envelope has no signature by key {key_id} (signature key ids: {found})")]
    NoSignatureByKey { key_id: String, found: String },
    #[error(
        "DSSE envelope signature by key {key_id} does not verify: payload or signature altered, or another key signed it"
    )]
    BadEnvelopeSignature { key_id: String },
}
