//! cosign-compatible ECDSA P-256 keys: load (cosign's encrypted PEM or unencrypted PKCS#8),
//! generate, public keys and key ids.
//!
//! The private key format is the one `cosign generate-key-pair` writes: a PEM block labelled
//! `ENCRYPTED SIGSTORE PRIVATE KEY` (or `ENCRYPTED COSIGN PRIVATE KEY`, cosign before 2.0) whose
//! content is JSON naming scrypt (N=32768, r=8, p=1) and a NaCl secretbox around the PKCS#8 DER.
//! The crypto is sigstore's (aws-lc-rs backend); this module adds clear errors and key ids.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use sigstore::crypto::signing_key::ecdsa::ec::{EcdsaKeys, EcdsaSigner};
use sigstore::crypto::signing_key::ecdsa::{ECDSAKeys, EllipticCurve};
use sigstore::crypto::signing_key::{
    COSIGN_PRIVATE_KEY_PEM_LABEL, KeyPair as _, PRIVATE_KEY_PEM_LABEL, PUBLIC_KEY_PEM_LABEL,
    SIGSTORE_PRIVATE_KEY_PEM_LABEL, Signer as _, kdf,
};
use sigstore::crypto::{CosignVerificationKey, Signature};
use sigstore::errors::SigstoreError;

use super::pem;
use super::{Signer, SigningError};

/// Key of the signing Secret's data holding the encrypted private key.
pub const SECRET_PRIVATE_KEY: &str = "cosign.key";
/// Key of the signing Secret's data holding the private key's password (absent = empty).
pub const SECRET_PASSWORD: &str = "cosign.password";
/// Key of the signing Secret's data holding the public key (optional, checked when present).
pub const SECRET_PUBLIC_KEY: &str = "cosign.pub";

/// Lowercase hex SHA-256 of a SubjectPublicKeyInfo DER: provenant's key id.
pub fn key_id_of_spki(spki_der: &[u8]) -> String {
    hex::encode(Sha256::digest(spki_der))
}

/// The key id of a `PUBLIC KEY` PEM (see [`key_id_of_spki`]).
pub fn key_id_of_public_pem(pem: &str) -> Result<String, SigningError> {
    Ok(PublicKey::from_pem(pem)?.key_id)
}

/// An ECDSA P-256 public key, for verifying signatures and naming keys.
#[derive(Clone)]
pub struct PublicKey {
    spki_der: Vec<u8>,
    pem: String,
    key_id: String,
    verification: CosignVerificationKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl PublicKey {
    /// A `-----BEGIN PUBLIC KEY-----` PEM (SubjectPublicKeyInfo), such as `cosign.pub`.
    pub fn from_pem(pem: &str) -> Result<Self, SigningError> {
        Self::from_pem_named("public key", pem.as_bytes())
    }

    /// Like [`PublicKey::from_pem`]; errors call the key `name` (a file or Secret key).
    pub fn from_pem_named(name: &str, pem: &[u8]) -> Result<Self, SigningError> {
        let block = pem::parse(pem).map_err(|problem| SigningError::InvalidPublicKey {
            key: name.to_string(),
            reason: problem.to_string(),
        })?;
        if block.tag() != PUBLIC_KEY_PEM_LABEL {
            return Err(SigningError::InvalidPublicKey {
                key: name.to_string(),
                reason: format!("found a PEM block labelled {:?}", block.tag()),
            });
        }
        Self::from_spki_der_named(name, block.contents())
    }

    fn from_spki_der_named(name: &str, spki_der: &[u8]) -> Result<Self, SigningError> {
        let verification = CosignVerificationKey::try_from_der(spki_der).map_err(|e| match e {
            SigstoreError::PublicKeyUnsupportedAlgorithmError(found) => {
                SigningError::UnsupportedKey {
                    key: name.to_string(),
                    found,
                }
            }
            _ => SigningError::InvalidPublicKey {
                key: name.to_string(),
                reason: "not a DER SubjectPublicKeyInfo".to_string(),
            },
        })?;
        if !matches!(
            verification,
            CosignVerificationKey::ECDSA_P256_SHA256_ASN1(_)
        ) {
            return Err(SigningError::UnsupportedKey {
                key: name.to_string(),
                found: verification_key_kind(&verification).to_string(),
            });
        }
        Ok(PublicKey {
            spki_der: spki_der.to_vec(),
            pem: pem::encode(PUBLIC_KEY_PEM_LABEL, spki_der),
            key_id: key_id_of_spki(spki_der),
            verification,
        })
    }

    /// Lowercase hex SHA-256 of the SubjectPublicKeyInfo DER.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The key as a `PUBLIC KEY` PEM (LF line endings, as cosign writes it).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Check an ASN.1 DER ECDSA P-256/SHA-256 signature over `message`.
    pub fn verify(&self, message: &[u8], der_signature: &[u8]) -> Result<(), SigningError> {
        self.verification
            .verify_signature(Signature::Raw(der_signature), message)
            .map_err(|_| SigningError::InvalidSignature {
                key_id: self.key_id.clone(),
            })
    }
}

fn verification_key_kind(key: &CosignVerificationKey) -> &'static str {
    match key {
        CosignVerificationKey::RSA_PSS_SHA256(_) | CosignVerificationKey::RSA_PKCS1_SHA256(_) => {
            "RSA"
        }
        CosignVerificationKey::ECDSA_P256_SHA256_ASN1(_) => "ECDSA P-256",
        CosignVerificationKey::ECDSA_P384_SHA384_ASN1(_) => "ECDSA P-384",
        CosignVerificationKey::ECDSA_P521_SHA512_ASN1(_) => "ECDSA P-521",
        CosignVerificationKey::ED25519(_) => "Ed25519",
    }
}

/// A cosign ECDSA P-256 private key, ready to sign.
pub struct CosignKey {
    signer: EcdsaSigner,
    public: PublicKey,
}

impl std::fmt::Debug for CosignKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosignKey")
            .field("key_id", &self.public.key_id)
            .finish_non_exhaustive()
    }
}

impl CosignKey {
    /// Load a private key PEM with its password; errors call the key `name` (a file path or a
    /// Secret key such as `cosign.key`). Accepted:
    /// - `ENCRYPTED SIGSTORE PRIVATE KEY` / `ENCRYPTED COSIGN PRIVATE KEY` (cosign's
    ///   scrypt + secretbox format; the password may be empty, as cosign allows);
    /// - `PRIVATE KEY` (unencrypted PKCS#8), only with an empty password.
    ///
    /// The key must be ECDSA P-256.
    pub fn from_pem(name: &str, pem: &[u8], password: &[u8]) -> Result<Self, SigningError> {
        let block = pem::parse(pem).map_err(|problem| SigningError::NotEncryptedPrivateKey {
            key: name.to_string(),
            reason: problem.to_string(),
        })?;
        let pkcs8 = match block.tag() {
            SIGSTORE_PRIVATE_KEY_PEM_LABEL | COSIGN_PRIVATE_KEY_PEM_LABEL => {
                decrypt(name, block.contents(), password)?
            }
            PRIVATE_KEY_PEM_LABEL if password.is_empty() => block.contents().to_vec(),
            PRIVATE_KEY_PEM_LABEL => {
                return Err(SigningError::UnexpectedPassword {
                    key: name.to_string(),
                });
            }
            other => {
                return Err(SigningError::NotEncryptedPrivateKey {
                    key: name.to_string(),
                    reason: format!(
                        "found a PEM block labelled {other:?}, expected {SIGSTORE_PRIVATE_KEY_PEM_LABEL:?} (convert other keys with `cosign import-key-pair`)"
                    ),
                });
            }
        };
        Self::from_pkcs8_der(name, &pkcs8)
    }

    fn from_pkcs8_der(name: &str, pkcs8: &[u8]) -> Result<Self, SigningError> {
        let not_p256 = |found: &str| SigningError::UnsupportedKey {
            key: name.to_string(),
            found: found.to_string(),
        };
        // sigstore only parses EC keys here: any failure means "not an EC key we can use".
        let keys = EcdsaKeys::from_pkcs8_der(pkcs8)
            .map_err(|_| not_p256("not an EC private key on a supported curve"))?;
        match keys.to_wrapped_ecdsa_keys() {
            Ok(ECDSAKeys::P256(_)) => {}
            Ok(other) => return Err(not_p256(&other.to_string())),
            Err(_) => return Err(not_p256("unreadable EC key")),
        }
        let signer = EcdsaSigner::from_ecdsa_keys(&keys)
            .map_err(|_| not_p256("the EC private key does not pass validation"))?;
        let spki = keys
            .public_key_to_der()
            .map_err(|_| not_p256("cannot derive the public key"))?;
        let public = PublicKey::from_spki_der_named(name, &spki)?;
        Ok(CosignKey { signer, public })
    }

    /// A new key that lives only in memory (tests, throwaway demos): no password, no scrypt.
    pub fn ephemeral() -> Result<Self, SigningError> {
        let keys = EcdsaKeys::new(EllipticCurve::P256)
            .map_err(|e| SigningError::Generate(e.to_string()))?;
        let pkcs8 = keys
            .private_key_to_der()
            .map_err(|e| SigningError::Generate(e.to_string()))?;
        Self::from_pkcs8_der("ephemeral key", &pkcs8)
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }
}

/// Open cosign's scrypt + secretbox JSON, mapping sigstore's errors to ones that say what is wrong.
fn decrypt(name: &str, contents: &[u8], password: &[u8]) -> Result<Vec<u8>, SigningError> {
    kdf::decrypt(contents, password).map_err(|e| match e {
        SigstoreError::SerdeJsonError(_) => SigningError::NotEncryptedPrivateKey {
            key: name.to_string(),
            reason: "its content is not cosign's scrypt/secretbox JSON".to_string(),
        },
        // The secretbox's authentication failed: the derived key is wrong (sigstore reports it
        // as an "encrypt" error).
        SigstoreError::PrivateKeyEncryptError(_) => SigningError::WrongPassword {
            key: name.to_string(),
        },
        SigstoreError::PrivateKeyDecryptError(reason) => SigningError::UnsupportedEncryption {
            key: name.to_string(),
            reason,
        },
        other => SigningError::UnsupportedEncryption {
            key: name.to_string(),
            reason: other.to_string(),
        },
    })
}

impl Signer for CosignKey {
    fn key_id(&self) -> &str {
        &self.public.key_id
    }

    fn public_key_pem(&self) -> &str {
        &self.public.pem
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SigningError> {
        self.signer.sign(message).map_err(|e| SigningError::Sign {
            key_id: self.public.key_id.clone(),
            reason: e.to_string(),
        })
    }
}

/// A new key pair in cosign's file formats.
pub struct GeneratedKeys {
    /// `ENCRYPTED SIGSTORE PRIVATE KEY` PEM (what `cosign.key` holds).
    pub private_pem: String,
    /// `PUBLIC KEY` PEM (what `cosign.pub` holds).
    pub public_pem: String,
    /// Key id of the pair (see [`key_id_of_spki`]).
    pub key_id: String,
}

impl std::fmt::Debug for GeneratedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKeys")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Generate an ECDSA P-256 key pair, the private key encrypted with `password` exactly as
/// `cosign generate-key-pair` does (so `cosign sign --key cosign.key` accepts it).
pub fn generate(password: &[u8]) -> Result<GeneratedKeys, SigningError> {
    let keys =
        EcdsaKeys::new(EllipticCurve::P256).map_err(|e| SigningError::Generate(e.to_string()))?;
    let pkcs8 = keys
        .private_key_to_der()
        .map_err(|e| SigningError::Generate(e.to_string()))?;
    let encrypted =
        kdf::encrypt(&pkcs8, password).map_err(|e| SigningError::Generate(e.to_string()))?;
    let spki = keys
        .public_key_to_der()
        .map_err(|e| SigningError::Generate(e.to_string()))?;
    Ok(GeneratedKeys {
        private_pem: pem::encode(SIGSTORE_PRIVATE_KEY_PEM_LABEL, &encrypted),
        public_pem: pem::encode(PUBLIC_KEY_PEM_LABEL, &spki),
        key_id: key_id_of_spki(&spki),
    })
}

/// The controller's signing key from its Secret's data: `cosign.key` (required),
/// `cosign.password` (absent = empty password), `cosign.pub` (optional; must be the private
/// key's public half). Errors name the Secret key at fault.
pub fn load_from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<CosignKey, SigningError> {
    let private_pem = data
        .get(SECRET_PRIVATE_KEY)
        .ok_or(SigningError::MissingSecretKey {
            key: SECRET_PRIVATE_KEY,
        })?;
    // Parsed first: a broken cosign.pub is reported without waiting for scrypt.
    let expected_public = data
        .get(SECRET_PUBLIC_KEY)
        .map(|pem| PublicKey::from_pem_named(SECRET_PUBLIC_KEY, pem))
        .transpose()?;
    let password = data.get(SECRET_PASSWORD).map(Vec::as_slice).unwrap_or(b"");
    let key = match CosignKey::from_pem(SECRET_PRIVATE_KEY, private_pem, password) {
        // `kubectl create secret --from-file` keeps a file's final newline, which is never part
        // of a cosign password: retry without it before calling the password wrong.
        Err(SigningError::WrongPassword { .. }) if password.ends_with(b"\n") => {
            let trimmed = password
                .strip_suffix(b"\r\n")
                .or_else(|| password.strip_suffix(b"\n"))
                .unwrap_or(password);
            CosignKey::from_pem(SECRET_PRIVATE_KEY, private_pem, trimmed)
        }
        result => result,
    }
    .map_err(|e| match e {
        SigningError::WrongPassword { key } => SigningError::WrongPassword {
            key: format!("{key} (password from `{SECRET_PASSWORD}`)"),
        },
        other => other,
    })?;
    if let Some(public) = expected_public
        && public.key_id != key.public.key_id
    {
        return Err(SigningError::PublicKeyMismatch {
            public_key_id: public.key_id,
            private_key_id: key.public.key_id.clone(),
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;

    const PASSWORD: &[u8] = b"correct horse battery staple";

    /// One generated pair for the tests: scrypt is slow in debug builds.
    fn shared_keys() -> &'static GeneratedKeys {
        static KEYS: OnceLock<GeneratedKeys> = OnceLock::new();
        KEYS.get_or_init(|| generate(PASSWORD).expect("generate"))
    }

    fn secret_data(entries: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    #[test]
    fn generated_key_loads_with_its_password_and_signs() {
        let keys = shared_keys();
        assert!(
            keys.private_pem
                .starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
        );
        assert!(keys.public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(!keys.private_pem.contains('\r'));
        let key = CosignKey::from_pem("cosign.key", keys.private_pem.as_bytes(), PASSWORD)
            .expect("loads");
        assert_eq!(key.key_id(), keys.key_id);
        assert_eq!(key.public_key_pem(), keys.public_pem);
        let signature = key.sign(b"message").expect("signs");
        let public = PublicKey::from_pem(&keys.public_pem).expect("public key");
        public.verify(b"message", &signature).expect("verifies");
        assert!(matches!(
            public.verify(b"messagE", &signature),
            Err(SigningError::InvalidSignature { .. })
        ));
    }

    #[test]
    fn generated_private_key_is_cosign_json() {
        let block = pem::parse(shared_keys().private_pem.as_bytes()).expect("pem");
        let json: serde_json::Value = serde_json::from_slice(block.contents()).expect("json");
        assert_eq!(json["kdf"]["name"], "scrypt");
        assert_eq!(json["kdf"]["params"]["N"], 32768);
        assert_eq!(json["kdf"]["params"]["r"], 8);
        assert_eq!(json["kdf"]["params"]["p"], 1);
        assert_eq!(json["cipher"]["name"], "nacl/secretbox");
        assert!(json["ciphertext"].is_string());
    }

    /// Written by `cosign generate-key-pair` (Go) with an empty password and scrypt N=65536;
    /// from sigstore-rs' test data (Apache-2.0).
    const COSIGN_GENERATED_KEY: &str = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\neyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjo2NTUzNiwiciI6\nOCwicCI6MX0sInNhbHQiOiJFY3pJR3Z0bnpFcCsxaEpudERnbGI1UnoxN3gwQVMy\nYklvWGRNcDQrU1NJPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94\nIiwibm9uY2UiOiJtSVVKbG1OMzNINExvZ0dhaG5MamdmK3R4SmJwci93MCJ9LCJj\naXBoZXJ0ZXh0IjoiM3FtS2FidXRuYm1WT1IvTkZGM2NDaUErTXp1WWQ5L0VERDVI\nMVlUSGhQVzZsSzAvdjVqdDZCQzlsME12NGV5am9qZkl0d3B6a2JJOXQrZGx5VXZ3\nVUgvMWZjbkFZT2dEdXRLQzkvSkNiOE02SVY2VHpVaDF5c0ZFWDFzeG9xb1FzeUpL\nbjM0UVlldFNlaVdDaGtmUHUyZXByQjFEV0pwekdzTGZIakxNVTkzOEdmNk1xM1A0\nN0ZSd2syZzY1cFZnSGMwVWV1L1N1OUs0Zmc9PSJ9\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----";

    /// An Ed25519 key in the same encrypted format, password `123`; sigstore-rs' test data.
    const ENCRYPTED_ED25519_KEY: &str = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\neyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjozMjc2OCwiciI6\nOCwicCI6MX0sInNhbHQiOiJ1elF5Snc4b1FjWCt1T3RlWDljSHpVOEhycWlJVzJV\nck9YbnpJb1ljaUtJPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94\nIiwibm9uY2UiOiJKeUJDMS81K2E3emtxdnE5dVpTaHIvZDRwNXVjQW1WQSJ9LCJj\naXBoZXJ0ZXh0IjoiZC9TMndRaVJ0YjcwazFmZEd0ZzRFa0RXZ0ZJcU9NRWd3TDNI\nbUtzWjBpdDlJcTFRSVplUGJoYWRTKzJORUZzWVA4TlhVOGpoT1dtb0QreWZwbkMz\ndTBYQTRvcFBib2JwbEpleWJEUUtQdW1sa0tiRUc5MnRCa3pUMFJwNnA1dDdFeVVk\nIn0=\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----";

    #[test]
    fn key_written_by_cosign_loads() {
        let key = CosignKey::from_pem("cosign.key", COSIGN_GENERATED_KEY.as_bytes(), b"")
            .expect("cosign's key loads");
        let signature = key.sign(b"message").expect("signs");
        key.public_key()
            .verify(b"message", &signature)
            .expect("verifies");
    }

    #[test]
    fn encrypted_ed25519_key_is_not_p256() {
        let err = CosignKey::from_pem("cosign.key", ENCRYPTED_ED25519_KEY.as_bytes(), b"123")
            .expect_err("ed25519");
        assert!(matches!(err, SigningError::UnsupportedKey { .. }), "{err}");
        assert!(err.to_string().contains("key is not ECDSA P-256"), "{err}");
    }

    #[test]
    fn wrong_password_is_named() {
        let err = CosignKey::from_pem(
            "cosign.key",
            shared_keys().private_pem.as_bytes(),
            b"not the password",
        )
        .expect_err("wrong password");
        assert!(matches!(err, SigningError::WrongPassword { .. }), "{err}");
        assert!(
            err.to_string().starts_with("wrong password for cosign.key"),
            "{err}"
        );
    }

    #[test]
    fn key_id_is_sha256_of_spki_and_stable() {
        let keys = shared_keys();
        let public = PublicKey::from_pem(&keys.public_pem).expect("public key");
        let expected = hex::encode(Sha256::digest(public.spki_der()));
        assert_eq!(public.key_id(), expected);
        assert_eq!(
            key_id_of_public_pem(&keys.public_pem).expect("id"),
            expected
        );
        assert_eq!(keys.key_id, expected);
        assert_eq!(expected.len(), 64);
        assert!(
            expected
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        );
        // CRLF or re-wrapped PEM text names the same key.
        let crlf = keys.public_pem.replace('\n', "\r\n");
        assert_eq!(key_id_of_public_pem(&crlf).expect("id"), expected);
    }

    #[test]
    fn unencrypted_pkcs8_needs_an_empty_password() {
        // The unencrypted PKCS#8 of the shared key, as `openssl pkcs8 -topk8 -nocrypt` writes it.
        let block = pem::parse(shared_keys().private_pem.as_bytes()).expect("pem");
        let pkcs8 = kdf::decrypt(block.contents(), PASSWORD).expect("decrypt");
        let plain = pem::encode("PRIVATE KEY", &pkcs8);
        let key = CosignKey::from_pem("key.pem", plain.as_bytes(), b"").expect("loads");
        assert_eq!(key.key_id(), shared_keys().key_id);
        let err = CosignKey::from_pem("key.pem", plain.as_bytes(), b"pw").expect_err("password");
        assert!(
            matches!(err, SigningError::UnexpectedPassword { .. }),
            "{err}"
        );
    }

    #[test]
    fn other_pem_labels_and_garbage_are_not_encrypted_keys() {
        for text in [
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
            "not a key at all",
        ] {
            let err = CosignKey::from_pem("cosign.key", text.as_bytes(), b"").expect_err("refused");
            assert!(
                err.to_string()
                    .starts_with("cosign.key is not an encrypted sigstore private key"),
                "{err}"
            );
        }
        let bad_json = pem::encode(SIGSTORE_PRIVATE_KEY_PEM_LABEL, b"{\"kdf\": 1}");
        let err = CosignKey::from_pem("cosign.key", bad_json.as_bytes(), b"").expect_err("bad");
        assert!(
            matches!(err, SigningError::NotEncryptedPrivateKey { .. }),
            "{err}"
        );
    }

    #[test]
    fn non_p256_keys_are_refused() {
        let p384 = EcdsaKeys::new(EllipticCurve::P384).expect("p384");
        let pkcs8 = p384.private_key_to_der().expect("der");
        let plain = pem::encode("PRIVATE KEY", &pkcs8);
        let err = CosignKey::from_pem("cosign.key", plain.as_bytes(), b"").expect_err("p384");
        assert!(err.to_string().contains("key is not ECDSA P-256"), "{err}");
        let spki = p384.public_key_to_der().expect("spki");
        let err = PublicKey::from_pem(&pem::encode("PUBLIC KEY", &spki)).expect_err("p384");
        assert!(err.to_string().contains("key is not ECDSA P-256"), "{err}");
    }

    #[test]
    fn secret_data_loads_and_checks_the_public_key() {
        let keys = shared_keys();
        let data = secret_data(&[
            ("cosign.key", keys.private_pem.as_bytes()),
            ("cosign.password", PASSWORD),
            ("cosign.pub", keys.public_pem.as_bytes()),
        ]);
        let key = load_from_secret_data(&data).expect("loads");
        assert_eq!(key.key_id(), keys.key_id);

        // A trailing newline from `--from-file` is tolerated.
        let mut with_newline = PASSWORD.to_vec();
        with_newline.push(b'\n');
        let data = secret_data(&[
            ("cosign.key", keys.private_pem.as_bytes()),
            ("cosign.password", &with_newline),
        ]);
        assert!(load_from_secret_data(&data).is_ok());
    }

    #[test]
    fn secret_data_without_cosign_key_names_it() {
        let data = secret_data(&[("cosign.password", PASSWORD)]);
        let err = load_from_secret_data(&data).expect_err("missing");
        assert!(matches!(
            err,
            SigningError::MissingSecretKey { key: "cosign.key" }
        ));
        assert!(err.to_string().contains("`cosign.key`"), "{err}");
    }

    #[test]
    fn secret_data_with_another_public_key_names_it() {
        let keys = shared_keys();
        let other = EcdsaKeys::new(EllipticCurve::P256).expect("other key");
        let other_pub = pem::encode("PUBLIC KEY", &other.public_key_to_der().expect("spki"));
        let data = secret_data(&[
            ("cosign.key", keys.private_pem.as_bytes()),
            ("cosign.password", PASSWORD),
            ("cosign.pub", other_pub.as_bytes()),
        ]);
        let err = load_from_secret_data(&data).expect_err("mismatch");
        assert!(
            matches!(err, SigningError::PublicKeyMismatch { .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("cosign.pub does not match cosign.key"),
            "{err}"
        );

        let data = secret_data(&[
            ("cosign.key", keys.private_pem.as_bytes()),
            ("cosign.password", PASSWORD),
            ("cosign.pub", b"garbage"),
        ]);
        let err = load_from_secret_data(&data).expect_err("bad pub");
        assert!(
            err.to_string()
                .starts_with("cosign.pub is not a PEM public key"),
            "{err}"
        );
    }

    #[test]
    fn secret_data_with_wrong_password_names_the_password_key() {
        let data = secret_data(&[
            ("cosign.key", shared_keys().private_pem.as_bytes()),
            ("cosign.password", b"nope\n"),
        ]);
        let err = load_from_secret_data(&data).expect_err("wrong password");
        let message = err.to_string();
        assert!(
            message.starts_with("wrong password for cosign.key"),
            "{message}"
        );
        assert!(message.contains("cosign.password"), "{message}");
    }
}
