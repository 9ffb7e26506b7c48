//! cosign's "simple signing" payload: what a `.sig` signature over an image manifest signs
//! (layer media type `application/vnd.dev.cosign.simplesigning.v1+json`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sigstore::cosign::payload::simple_signing::{
    CRITICAL_TYPE_NAME, Critical, Identity, Image, SimpleSigning,
};

use super::{Signer, SigningError};

/// Media type of the `.sig` layer holding [`payload`].
pub const MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// The payload bytes as cosign writes them (compact JSON, sigstore's field order, which is
/// cosign's): `docker_reference` is the repository without tag or digest (`host/repo`),
/// `manifest_digest` the `sha256:<hex>` of the signed manifest.
pub fn payload(docker_reference: &str, manifest_digest: &str) -> Vec<u8> {
    let document = SimpleSigning {
        critical: Critical {
            identity: Identity {
                docker_reference: docker_reference.to_string(),
            },
            image: Image {
                docker_manifest_digest: manifest_digest.to_string(),
            },
            type_name: CRITICAL_TYPE_NAME.to_string(),
        },
        optional: None,
    };
    // Only strings and a null: serialization cannot fail.
    serde_json::to_vec(&document).expect("a simple signing payload always serializes to JSON")
}

/// The payload and its signature (standard base64 of the DER signature, what goes in the
/// `dev.cosignproject.cosign/signature` annotation).
pub fn sign_simple(
    signer: &dyn Signer,
    docker_reference: &str,
    manifest_digest: &str,
) -> Result<(Vec<u8>, String), SigningError> {
    let payload = payload(docker_reference, manifest_digest);
    let signature = signer.sign(&payload)?;
    Ok((payload, STANDARD.encode(signature)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::keys::{CosignKey, PublicKey};

    const DIGEST: &str = "sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b";

    #[test]
    fn payload_is_cosigns_exact_bytes() {
        assert_eq!(
            String::from_utf8(payload("registry.example.com/models/resnet", DIGEST))
                .expect("utf-8"),
            concat!(
                r#"{"critical":{"identity":{"docker-reference":"registry.example.com/models/resnet"},"#,
                r#""image":{"docker-manifest-digest":"sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b"},"#,
                r#""type":"cosign container image signature"},"optional":null}"#
            )
        );
    }

    #[test]
    fn signed_payload_verifies_with_the_public_key() {
        let key = CosignKey::ephemeral().expect("key");
        let (bytes, signature) = sign_simple(&key, "host/repo", DIGEST).expect("signs");
        assert_eq!(bytes, payload("host/repo", DIGEST));
        let der = STANDARD.decode(signature).expect("base64");
        let public = PublicKey::from_pem(key.public_key_pem()).expect("public");
        public.verify(&bytes, &der).expect("verifies");
        // Parses back with sigstore's own type.
        let parsed: SimpleSigning = serde_json::from_slice(&bytes).expect("parses");
        assert!(parsed.satisfies_manifest_digest(DIGEST));
    }
}
