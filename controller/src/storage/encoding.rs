//! Which encodings an attestation is written in (`provenance.encoding` in the controller's
//! configuration, `provenant attest --encoding`), as Tekton Chains'
//! `storage.oci.encoding-format` chooses between its DSSE layout and Sigstore bundles.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// How attestations are written to a store (docs/registry-layout.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    /// The DSSE envelope under cosign's `sha256-<hex>.att` tag, the `.sig` simple signature and
    /// an OCI 1.1 referrer with `artifactType: application/vnd.in-toto+json` (what provenant
    /// has always written; what cosign v2 and `cosign verify-attestation` without
    /// `--new-bundle-format` read).
    #[default]
    Dsse,
    /// The same DSSE envelope in a Sigstore bundle v0.3, an OCI 1.1 referrer with
    /// `artifactType: application/vnd.dev.sigstore.bundle.v0.3+json` (cosign v3's default).
    SigstoreBundle,
    /// Both of the above.
    Both,
}

impl Encoding {
    /// Every value, as written in the configuration.
    pub const NAMES: [&str; 3] = ["dsse", "sigstore-bundle", "both"];

    pub fn name(self) -> &'static str {
        match self {
            Encoding::Dsse => Self::NAMES[0],
            Encoding::SigstoreBundle => Self::NAMES[1],
            Encoding::Both => Self::NAMES[2],
        }
    }

    /// Writes the `.att` / `.sig` tags and the in-toto referrer.
    pub fn dsse(self) -> bool {
        matches!(self, Encoding::Dsse | Encoding::Both)
    }

    /// Writes the Sigstore bundle referrer.
    pub fn sigstore_bundle(self) -> bool {
        matches!(self, Encoding::SigstoreBundle | Encoding::Both)
    }
}

impl Encoding {
    /// Reads the value of configuration key `field`; a bad value is refused naming the field and
    /// the accepted values (serde's own message names neither the field nor, for a value that
    /// is not a string, the values).
    pub fn deserialize_named<'de, D: Deserializer<'de>>(
        field: &str,
        d: D,
    ) -> Result<Encoding, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Other(serde::de::IgnoredAny),
        }
        let bad = |why: String| serde::de::Error::custom(format!("{field}: {why}"));
        match Raw::deserialize(d)? {
            Raw::Text(text) => text.parse().map_err(bad),
            Raw::Other(_) => Err(bad(format!(
                "not a string: one of {}",
                Self::NAMES.join(", ")
            ))),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Encoding {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "dsse" => Ok(Encoding::Dsse),
            "sigstore-bundle" => Ok(Encoding::SigstoreBundle),
            "both" => Ok(Encoding::Both),
            _ => Err(format!(
                "{text:?} is not an encoding: one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_say_what_they_write() {
        for name in Encoding::NAMES {
            let encoding: Encoding = name.parse().unwrap();
            assert_eq!(encoding.to_string(), name);
            assert_eq!(serde_json::to_value(encoding).unwrap(), name);
        }
        assert_eq!(Encoding::default(), Encoding::Dsse);
        assert!(Encoding::Dsse.dsse() && !Encoding::Dsse.sigstore_bundle());
        assert!(!Encoding::SigstoreBundle.dsse() && Encoding::SigstoreBundle.sigstore_bundle());
        assert!(Encoding::Both.dsse() && Encoding::Both.sigstore_bundle());
        assert_eq!(
            "bundle".parse::<Encoding>().unwrap_err(),
            r#""bundle" is not an encoding: one of dsse, sigstore-bundle, both"#
        );
    }
}
