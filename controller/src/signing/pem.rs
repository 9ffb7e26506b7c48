//! PEM (RFC 7468) key files through the `pem` crate: written with LF line endings, as cosign
//! writes them (the crate's default is CRLF), and parse errors that say what is wrong without
//! echoing the content, which may be key material.

use pem::{EncodeConfig, LineEnding, Pem, PemError};

/// Why text is not a PEM block. Descriptions never include the content.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PemProblem {
    #[error("no PEM block (-----BEGIN ...----- to -----END ...-----) found")]
    NoBlock,
    #[error("the PEM block's BEGIN and END labels differ")]
    MismatchedLabels,
    #[error("the PEM block is not valid base64")]
    Base64,
    #[error("the PEM block has malformed headers")]
    Headers,
    #[error("the PEM block is not UTF-8 text")]
    NotUtf8,
}

/// The first PEM block in `text`.
pub(crate) fn parse(text: &[u8]) -> Result<Pem, PemProblem> {
    let block = pem::parse(text).map_err(|e| match e {
        PemError::MalformedFraming
        | PemError::MissingBeginTag
        | PemError::MissingEndTag
        | PemError::MissingData => PemProblem::NoBlock,
        PemError::MismatchedTags(..) => PemProblem::MismatchedLabels,
        PemError::InvalidData(_) => PemProblem::Base64,
        PemError::InvalidHeader(_) => PemProblem::Headers,
        PemError::NotUtf8(_) => PemProblem::NotUtf8,
    })?;
    // Labels are short ASCII words, and callers name them in errors: anything else between
    // `-----BEGIN ` and `-----` is not a PEM header (and is not echoed).
    let label = block.tag();
    if label.len() > 64
        || !label
            .chars()
            .all(|c| c.is_ascii_uppercase() || c == ' ' || c == '-')
    {
        return Err(PemProblem::NoBlock);
    }
    Ok(block)
}

/// `contents` as a PEM block labelled `label`: 64-column lines, LF endings, final newline.
pub(crate) fn encode(label: &str, contents: &[u8]) -> String {
    pem::encode_config(
        &Pem::new(label, contents),
        EncodeConfig::new().set_line_ending(LineEnding::LF),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_crlf_input() {
        let contents: Vec<u8> = (0u8..=200).collect();
        let pem = encode("PUBLIC KEY", &contents);
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert!(!pem.contains('\r'));
        assert!(pem.ends_with("-----END PUBLIC KEY-----\n"));
        let crlf = pem.replace('\n', "\r\n");
        let block = parse(crlf.as_bytes()).expect("parses");
        assert_eq!(block.tag(), "PUBLIC KEY");
        assert_eq!(block.contents(), contents);
    }

    #[test]
    fn keys_are_written_as_cosign_writes_them() {
        // `cosign.pub` as `cosign generate-key-pair` (v3.1.3) wrote it, read and written again.
        const COSIGN_PUB: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEyvK0VLHWQjdGvYXQJM5YKk4znQ00
qveGxSNH3kB4QW/5zmx2fvS+SSr4uBDn7c75LWL0bLEQGCiHsHAvB8xApg==
-----END PUBLIC KEY-----
";
        let block = parse(COSIGN_PUB.as_bytes()).expect("parses");
        assert_eq!(encode(block.tag(), block.contents()), COSIGN_PUB);
    }

    #[test]
    fn encoding_is_rfc7468_with_lf() {
        // 49 bytes: one full 64-character line and a padded remainder.
        let pem = encode("PUBLIC KEY", &[0xFB; 49]);
        assert_eq!(
            pem,
            concat!(
                "-----BEGIN PUBLIC KEY-----\n",
                "+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7\n",
                "+w==\n",
                "-----END PUBLIC KEY-----\n"
            )
        );
        assert_eq!(encode("X", b""), "-----BEGIN X-----\n-----END X-----\n");
    }

    #[test]
    fn problems_do_not_echo_content() {
        assert!(matches!(parse(b"secret stuff"), Err(PemProblem::NoBlock)));
        let err = parse(b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0!!\n-----END PRIVATE KEY-----\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("not valid base64"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "{err}");
        for text in [
            &b"-----BEGIN secret c2VjcmV0-----\nAAAA\n-----END secret c2VjcmV0-----\n"[..],
            b"-----BEGIN A-----\nAAAA\n-----END c2VjcmV0-----\n",
            b"-----BEGIN A-----\nc2VjcmV0\n\nAAAA\n-----END A-----\n",
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n",
        ] {
            let err = parse(text).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(!err.is_empty(), "{}", String::from_utf8_lossy(text));
            assert!(!err.contains("c2VjcmV0"), "{err}");
        }
    }
}
