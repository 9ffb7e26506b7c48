//! A repository as the registry store addresses it: where its API lives (Docker Hub's aliases
//! folded), over which scheme, its URLs, its token scope, and how it is named in references.

use super::credentials::normalize_host;
use crate::storage::error::StorageError;
use crate::storage::reference::check_repository;

/// A parsed `host[:port]/path` repository.
#[derive(Debug, Clone)]
pub(super) struct Repo {
    /// As the caller wrote it (used in returned references).
    pub display: String,
    /// `host[:port]` as written (credentials lookup).
    pub host: String,
    /// Where the API lives (`registry-1.docker.io` for `docker.io`).
    pub api_host: String,
    pub path: String,
    pub plain_http: bool,
    /// `scheme://api_host/v2/path` (`scheme://api_host/v2` for the catalog).
    pub base: String,
    /// The registry's catalog rather than a repository ([`Repo::catalog`]).
    pub catalog: bool,
}

impl Repo {
    pub fn parse(repository: &str, insecure: &[String]) -> Result<Repo, StorageError> {
        let (host, path) = check_repository(repository)?;
        let normalized = normalize_host(host);
        let (api_host, path) = if normalized == "docker.io" {
            let path = if path.contains('/') {
                path.to_string()
            } else {
                format!("library/{path}")
            };
            ("registry-1.docker.io".to_string(), path)
        } else {
            (host.to_ascii_lowercase(), path.to_string())
        };
        let plain_http = insecure
            .iter()
            .map(|h| normalize_host(h))
            .any(|h| h == normalized || h == api_host);
        let scheme = if plain_http { "http" } else { "https" };
        Ok(Repo {
            display: repository.to_string(),
            host: host.to_string(),
            base: format!("{scheme}://{api_host}/v2/{path}"),
            api_host,
            path,
            plain_http,
            catalog: false,
        })
    }

    /// The registry `host[:port]` itself, for its catalog (`GET /v2/_catalog`).
    pub fn catalog(host: &str, insecure: &[String]) -> Result<Repo, StorageError> {
        // The host is checked as a repository's would be.
        let probe = Repo::parse(&format!("{host}/catalog"), insecure)?;
        let scheme = if probe.plain_http { "http" } else { "https" };
        Ok(Repo {
            display: host.to_string(),
            base: format!("{scheme}://{}/v2", probe.api_host),
            path: String::new(),
            catalog: true,
            ..probe
        })
    }

    pub fn manifest_url(&self, reference: &str) -> String {
        format!("{}/manifests/{reference}", self.base)
    }

    pub fn blob_url(&self, digest: &str) -> String {
        format!("{}/blobs/{digest}", self.base)
    }

    pub fn tag_ref(&self, tag: &str) -> String {
        format!("{}:{tag}", self.display)
    }

    pub fn digest_ref(&self, digest: &str) -> String {
        format!("{}@{digest}", self.display)
    }

    /// How a tag or digest is named in errors.
    pub fn reference(&self, reference: &str) -> String {
        if reference.starts_with("sha256:") {
            self.digest_ref(reference)
        } else {
            self.tag_ref(reference)
        }
    }

    /// The repository as the registry sees it (`api_host/path`), for the store's caches.
    pub fn key(&self) -> String {
        format!("{}/{}", self.api_host, self.path)
    }

    pub fn scope(&self, push: bool) -> String {
        if self.catalog {
            return "registry:catalog:*".to_string();
        }
        let actions = if push { "pull,push" } else { "pull" };
        format!("repository:{}:{actions}", self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::error::ErrorKind;

    #[test]
    fn repositories() {
        let insecure = vec!["127.0.0.1:5000".to_string()];
        let r = Repo::parse("127.0.0.1:5000/models/mnist", &insecure).unwrap();
        assert!(r.plain_http);
        assert_eq!(r.base, "http://127.0.0.1:5000/v2/models/mnist");
        assert_eq!(r.scope(true), "repository:models/mnist:pull,push");
        let r = Repo::parse("Registry.Example.com/a/b-c_d.e", &insecure).unwrap();
        assert_eq!(r.base, "https://registry.example.com/v2/a/b-c_d.e");
        let r = Repo::parse("docker.io/ubuntu", &[]).unwrap();
        assert_eq!(r.base, "https://registry-1.docker.io/v2/library/ubuntu");
        assert_eq!(r.display, "docker.io/ubuntu");
        let r = Repo::parse("localhost/x", &["localhost".into()]).unwrap();
        assert_eq!(r.base, "http://localhost/v2/x");
        let r = Repo::catalog("127.0.0.1:5000", &insecure).unwrap();
        assert_eq!(r.base, "http://127.0.0.1:5000/v2");
        assert_eq!(r.scope(false), "registry:catalog:*");
        assert!(Repo::catalog("not a host", &[]).is_err());
        for bad in [
            "models/mnist",
            "host.example",
            "host.example/",
            "host.example/Upper",
            "host.example/a:tag",
            "host.example/a@sha256:x",
            "host.example/a//b",
            "ho st.example/a",
        ] {
            let e = Repo::parse(bad, &[]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Permanent, "{bad}");
        }
    }
}
