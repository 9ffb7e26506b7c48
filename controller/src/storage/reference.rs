//! The artifact references the CLI accepts: a registry reference
//! `host[:port]/path[:tag][@sha256:<hex>]`, or an OCI image layout `oci:<dir>[:<tag>]` /
//! `oci:<dir>[@sha256:<hex>]` (skopeo's and oras's `oci:` syntax: the directory ends at the
//! first `:`).

use std::fmt;
use std::path::PathBuf;

use super::error::StorageError;
use super::store::Subject;
use super::{oci, op};

/// The prefix naming an OCI image layout directory.
pub const LAYOUT_PREFIX: &str = "oci:";

/// Where an artifact lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A registry repository, `host[:port]/path`.
    Registry(String),
    /// An OCI image layout directory.
    Layout(PathBuf),
}

/// A parsed artifact reference: a location plus a tag and/or a digest. When both are given the
/// digest decides (the tag is informative, as with docker).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    pub location: Location,
    pub tag: Option<String>,
    /// `sha256:<64 lowercase hex>`.
    pub digest: Option<String>,
}

impl Reference {
    /// The repository as a [`Subject`] names it: `host/path`, or `oci:<dir>` for a layout.
    pub fn repository(&self) -> String {
        match &self.location {
            Location::Registry(r) => r.clone(),
            Location::Layout(dir) => format!("{LAYOUT_PREFIX}{}", dir.display()),
        }
    }

    /// The digest if given, else the tag (what a store's `resolve_reference` takes).
    pub fn tag_or_digest(&self) -> Option<&str> {
        self.digest.as_deref().or(self.tag.as_deref())
    }

    /// The subject, when the reference carries a digest.
    pub fn subject(&self) -> Option<Subject> {
        self.digest
            .as_ref()
            .map(|d| Subject::new(self.repository(), d.clone()))
    }

    pub fn is_layout(&self) -> bool {
        matches!(self.location, Location::Layout(_))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Whether `tag` is a valid tag (distribution-spec: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`).
pub fn is_valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Parses `host[:port]/path[:tag][@sha256:<hex>]` or `oci:<dir>[:<tag>|@sha256:<hex>]`.
pub fn parse_reference(s: &str) -> Result<Reference, StorageError> {
    let bad =
        |why: String| StorageError::permanent(op::INPUT, s, format!("invalid reference: {why}"));
    let (rest, digest) = match s.rsplit_once('@') {
        Some((rest, d)) => {
            if oci::sha256_hex(d).is_none() {
                return Err(bad(format!(
                    "digest {d:?} is not sha256:<64 lowercase hex>"
                )));
            }
            (rest, Some(d.to_string()))
        }
        None => (s, None),
    };
    let check_tag = |tag: &str| {
        if is_valid_tag(tag) {
            Ok(Some(tag.to_string()))
        } else {
            Err(bad(format!(
                "tag {tag:?} is not [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}"
            )))
        }
    };
    if let Some(layout) = rest.strip_prefix(LAYOUT_PREFIX) {
        let (dir, tag) = match layout.split_once(':') {
            Some((dir, tag)) => (dir, check_tag(tag)?),
            None => (layout, None),
        };
        if dir.is_empty() {
            return Err(bad(
                "no directory after oci: (want oci:<dir>[:<tag>])".into()
            ));
        }
        return Ok(Reference {
            location: Location::Layout(PathBuf::from(dir)),
            tag,
            digest,
        });
    }
    // A `:` after the last `/` starts the tag; one before it is the port.
    let (repository, tag) = match rest.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, check_tag(t)?),
        _ => (rest, None),
    };
    check_repository(repository).map_err(|e| {
        bad(format!(
            "{} (want host[:port]/path[:tag][@sha256:<hex>] or oci:<dir>[:<tag>])",
            e.message()
        ))
    })?;
    Ok(Reference {
        location: Location::Registry(repository.to_string()),
        tag,
        digest,
    })
}

/// Splits `host[:port]/path` (no tag, no digest) into host and path, checking the grammar:
/// the host must look like one (a `.`, a `:` or `localhost`), path components lowercase
/// `[a-z0-9._-]`.
pub(crate) fn check_repository(repository: &str) -> Result<(&str, &str), StorageError> {
    let bad = |why: &str| {
        StorageError::permanent(
            op::INPUT,
            repository,
            format!("invalid repository (want host[:port]/path): {why}"),
        )
    };
    let (host, path) = repository.split_once('/').ok_or_else(|| bad("no path"))?;
    let looks_like_host = host.contains('.') || host.contains(':') || host == "localhost";
    if host.is_empty() || !looks_like_host {
        return Err(bad("does not start with a registry host"));
    }
    if host
        .bytes()
        .any(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')))
    {
        return Err(bad("invalid character in host"));
    }
    let path_ok = path.split('/').all(|c| {
        !c.is_empty()
            && c.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
    });
    if !path_ok {
        return Err(bad(
            "path components must be lowercase [a-z0-9._-] (no tag or digest)",
        ));
    }
    Ok((host, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn registry_references() {
        let r = parse_reference("127.0.0.1:5000/models/mnist:v1").unwrap();
        assert_eq!(
            r.location,
            Location::Registry("127.0.0.1:5000/models/mnist".into())
        );
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest, None);
        assert_eq!(r.tag_or_digest(), Some("v1"));
        assert_eq!(r.subject(), None);

        let s = format!("registry.example.com/a/b:v1.2@sha256:{HEX}");
        let r = parse_reference(&s).unwrap();
        assert_eq!(r.repository(), "registry.example.com/a/b");
        assert_eq!(r.tag.as_deref(), Some("v1.2"));
        assert_eq!(r.tag_or_digest(), Some(format!("sha256:{HEX}").as_str()));
        assert_eq!(r.to_string(), s);
        let subject = r.subject().unwrap();
        assert_eq!(subject.repository, "registry.example.com/a/b");

        let r = parse_reference("localhost:5000/m").unwrap();
        assert_eq!(r.repository(), "localhost:5000/m");
        assert_eq!((r.tag, r.digest), (None, None));
    }

    #[test]
    fn layout_references() {
        let r = parse_reference("oci:./out/layout:v1").unwrap();
        assert_eq!(r.location, Location::Layout("./out/layout".into()));
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(r.is_layout());
        assert_eq!(r.repository(), "oci:./out/layout");

        let r = parse_reference(&format!("oci:/tmp/x@sha256:{HEX}")).unwrap();
        assert_eq!(r.location, Location::Layout("/tmp/x".into()));
        assert_eq!(r.digest, Some(format!("sha256:{HEX}")));
        assert_eq!(r.tag, None);

        let r = parse_reference("oci:dir").unwrap();
        assert_eq!((r.tag, r.digest), (None, None));
    }

    #[test]
    fn bad_references_say_why() {
        for (s, why) in [
            ("models/mnist:v1", "registry host"),
            ("host.example/Models", "lowercase"),
            ("host.example/m:bad tag", "tag"),
            ("host.example/m:-x", "tag"),
            ("host.example/m@sha256:abc", "digest"),
            ("host.example/m@md5:abc", "digest"),
            ("oci:", "no directory"),
            ("oci::v1", "no directory"),
            ("oci:dir:", "tag"),
            ("", "invalid reference"),
        ] {
            let e = parse_reference(s).unwrap_err();
            assert!(e.to_string().contains(why), "{s}: {e}");
            assert_eq!(e.kind(), crate::storage::error::ErrorKind::Permanent);
        }
        assert!(is_valid_tag(&"a".repeat(128)));
        assert!(!is_valid_tag(&"a".repeat(129)));
        assert!(is_valid_tag("sha256-abc.att"));
    }
}
