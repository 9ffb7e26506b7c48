//! Just enough PEM (RFC 7468) for key files: one block, no headers. Our own so that output uses
//! LF line endings like cosign (the `pem` crate sigstore uses writes CRLF) and so that parse
//! errors can say what was found without echoing the content.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

const LINE_WIDTH: usize = 64;

/// A decoded PEM block.
pub(crate) struct Block {
    pub(crate) label: String,
    pub(crate) contents: Vec<u8>,
}

/// Why text is not a PEM block. Descriptions never include the content.
#[derive(Debug)]
pub(crate) enum PemProblem {
    NoBlock,
    Unterminated(String),
    Base64(String),
}

impl std::fmt::Display for PemProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemProblem::NoBlock => write!(f, "no PEM block (-----BEGIN ...-----) found"),
            PemProblem::Unterminated(label) => {
                write!(
                    f,
                    "PEM block {label:?} has no matching -----END {label}----- line"
                )
            }
            PemProblem::Base64(label) => write!(f, "PEM block {label:?} is not valid base64"),
        }
    }
}

/// The first PEM block in `text`.
pub(crate) fn parse(text: &[u8]) -> Result<Block, PemProblem> {
    let text = String::from_utf8_lossy(text);
    let begin = text.find("-----BEGIN ").ok_or(PemProblem::NoBlock)?;
    let after_begin = &text[begin + "-----BEGIN ".len()..];
    let label_end = after_begin.find("-----").ok_or(PemProblem::NoBlock)?;
    let label = &after_begin[..label_end];
    // Labels are short ASCII words; anything else is not a PEM header (and is not echoed).
    if label.len() > 64
        || !label
            .chars()
            .all(|c| c.is_ascii_uppercase() || c == ' ' || c == '-')
    {
        return Err(PemProblem::NoBlock);
    }
    let label = label.to_string();
    let body = &after_begin[label_end + "-----".len()..];
    let end_marker = format!("-----END {label}-----");
    let body_end = body
        .find(&end_marker)
        .ok_or_else(|| PemProblem::Unterminated(label.clone()))?;
    let base64_text: String = body[..body_end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let contents = STANDARD
        .decode(base64_text.as_bytes())
        .map_err(|_| PemProblem::Base64(label.clone()))?;
    Ok(Block { label, contents })
}

/// `contents` as a PEM block labelled `label`, 64-column lines, LF endings, final newline.
pub(crate) fn encode(label: &str, contents: &[u8]) -> String {
    let body = STANDARD.encode(contents);
    let mut out = format!("-----BEGIN {label}-----\n");
    // Base64 output is ASCII, so byte chunks are character chunks.
    for line in body.as_bytes().chunks(LINE_WIDTH) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_crlf_input() {
        let contents: Vec<u8> = (0u8..=200).collect();
        let pem = encode("PUBLIC KEY", &contents);
        assert!(pem.lines().all(|l| l.len() <= 64));
        let crlf = pem.replace('\n', "\r\n");
        let block = parse(crlf.as_bytes()).expect("parses");
        assert_eq!(block.label, "PUBLIC KEY");
        assert_eq!(block.contents, contents);
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
    }
}
