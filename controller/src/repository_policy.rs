//! Which namespace may publish where: `provenance.repositoryPolicy` of the controller
//! configuration. One controller serves every team, with its own registry credentials; without a
//! policy, a run in any namespace may name any repository in `spec.output.repository` and the
//! controller resolves and writes there (`.att`, `.sig`, the fallback index) as itself. With a
//! policy, a run's repository must lie under a prefix granted to its namespace, and the grant may
//! name the credentials used for it. Pure: the reconciler refuses a run before any pod starts
//! (`RepositoryNotAllowed`), and the publish step checks again before any registry request.

use serde::{Deserialize, Serialize};

use crate::names::{is_dns_label, is_dns_subdomain};
use crate::storage::reference::check_repository;
use crate::storage::registry::credentials::normalize_host;

/// The condition reason of a run whose repository its namespace may not use.
pub const NOT_ALLOWED: &str = "RepositoryNotAllowed";

/// Any namespace (in [`RepositoryRule::namespaces`]).
pub const ANY_NAMESPACE: &str = "*";

/// One grant: these namespaces may publish under these repository prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepositoryRule {
    /// Namespace names, or `"*"` for every namespace.
    pub namespaces: Vec<String>,
    /// Repository prefixes, `host[:port]` (a whole registry) or `host[:port]/path`, matched at
    /// path boundaries: `r.example/team-a` grants `r.example/team-a/model`, not `r.example/team-ab`.
    pub repositories: Vec<String>,
    /// A `kubernetes.io/dockerconfigjson` Secret in the controller's namespace whose credentials
    /// are used for runs this rule grants, instead of `provenance.registry.credentialsSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

/// What the policy grants a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The credentials Secret of the granting rule; `None`: the global one.
    pub credentials_secret: Option<String>,
}

/// A repository in the form rules and runs are compared in: the host lowercased with Docker
/// Hub's aliases folded into `docker.io`, and Docker Hub's official images under `library/`, as
/// the registry store addresses them (`storage/registry/repo.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Canonical {
    host: String,
    /// Empty for a whole registry.
    path: String,
}

impl Canonical {
    fn of_repository(repository: &str) -> Result<Canonical, String> {
        let (host, path) = check_repository(repository).map_err(|e| e.message().to_string())?;
        let host = normalize_host(host);
        let path = if host == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        Ok(Canonical { host, path })
    }

    /// A rule's prefix: a repository, or a bare `host[:port]`.
    fn of_prefix(prefix: &str) -> Result<Canonical, String> {
        if prefix.contains('/') {
            // A Docker Hub namespace (`docker.io/team`) is a prefix, not an official image.
            let (host, path) = check_repository(prefix).map_err(|e| e.message().to_string())?;
            return Ok(Canonical {
                host: normalize_host(host),
                path: path.to_string(),
            });
        }
        // The same host grammar as a repository's, checked by giving it a path.
        check_repository(&format!("{prefix}/x")).map_err(|e| e.message().to_string())?;
        Ok(Canonical {
            host: normalize_host(prefix),
            path: String::new(),
        })
    }

    /// `self` (a repository) lies under `prefix`: same host (port included), and the path equal
    /// to the prefix's or below it.
    fn under(&self, prefix: &Canonical) -> bool {
        self.host == prefix.host
            && (prefix.path.is_empty()
                || self.path == prefix.path
                || self
                    .path
                    .strip_prefix(&prefix.path)
                    .is_some_and(|rest| rest.starts_with('/')))
    }
}

/// Check the rules at load; returns the offending key (`provenance.repositoryPolicy[i]...`) and
/// why.
pub fn check(rules: &[RepositoryRule]) -> Result<(), (String, String)> {
    for (i, rule) in rules.iter().enumerate() {
        let key = |f: &str| format!("provenance.repositoryPolicy[{i}].{f}");
        if rule.namespaces.is_empty() {
            return Err((
                key("namespaces"),
                "must name at least one namespace (or \"*\" for all)".into(),
            ));
        }
        for (j, ns) in rule.namespaces.iter().enumerate() {
            if ns != ANY_NAMESPACE && !is_dns_label(ns) {
                return Err((
                    key(&format!("namespaces[{j}]")),
                    format!("{ns:?} is not a namespace name (a DNS label) or \"*\""),
                ));
            }
        }
        if rule.repositories.is_empty() {
            return Err((
                key("repositories"),
                "must name at least one repository prefix (host[:port] or host[:port]/path)".into(),
            ));
        }
        for (j, prefix) in rule.repositories.iter().enumerate() {
            Canonical::of_prefix(prefix).map_err(|why| {
                (
                    key(&format!("repositories[{j}]")),
                    format!("{prefix:?} is not host[:port] or host[:port]/path: {why}"),
                )
            })?;
        }
        if let Some(secret) = &rule.credentials_secret
            && !is_dns_subdomain(secret)
        {
            return Err((
                key("credentialsSecret"),
                format!("{secret:?} is not a Secret name (a DNS subdomain)"),
            ));
        }
    }
    Ok(())
}

/// What `rules` grant a run of `namespace` publishing to `repository`: the first rule naming the
/// namespace (or `"*"`) with a prefix the repository lies under. No rules: single-tenant, every
/// repository with the global credentials. Refused: the condition message, naming the repository
/// and the namespace and what this namespace may use (never other namespaces' prefixes).
pub fn grant(rules: &[RepositoryRule], namespace: &str, repository: &str) -> Result<Grant, String> {
    if rules.is_empty() {
        return Ok(Grant {
            credentials_secret: None,
        });
    }
    let mine: Vec<&RepositoryRule> = rules
        .iter()
        .filter(|r| {
            r.namespaces
                .iter()
                .any(|n| n == namespace || n == ANY_NAMESPACE)
        })
        .collect();
    let allowed: Vec<&str> = mine
        .iter()
        .flat_map(|r| r.repositories.iter().map(String::as_str))
        .collect();
    let refused = |why: String| {
        let allowed = if allowed.is_empty() {
            "none".to_string()
        } else {
            allowed.join(", ")
        };
        format!(
            "spec.output.repository {repository} is not allowed for namespace {namespace} by the controller's repositoryPolicy ({why}); repositories allowed for this namespace: {allowed}"
        )
    };
    let canonical = Canonical::of_repository(repository).map_err(refused)?;
    mine.into_iter()
        .find(|rule| {
            rule.repositories
                .iter()
                .any(|p| Canonical::of_prefix(p).is_ok_and(|prefix| canonical.under(&prefix)))
        })
        .map(|rule| Grant {
            credentials_secret: rule.credentials_secret.clone(),
        })
        .ok_or_else(|| refused("not under any prefix granted to it".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(namespaces: &[&str], repositories: &[&str], secret: Option<&str>) -> RepositoryRule {
        RepositoryRule {
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            repositories: repositories.iter().map(|s| s.to_string()).collect(),
            credentials_secret: secret.map(str::to_string),
        }
    }

    #[test]
    fn prefixes_match_at_path_boundaries_and_exact_hosts() {
        let rules = [rule(&["team-a"], &["registry.example.com/team-a"], None)];
        for ok in [
            "registry.example.com/team-a",
            "registry.example.com/team-a/model",
            "Registry.Example.COM/team-a/x/y",
        ] {
            assert!(grant(&rules, "team-a", ok).is_ok(), "{ok}");
        }
        for refused in [
            "registry.example.com/team-ab",
            "registry.example.com/team-ab/model",
            "registry.example.com/team",
            "registry.example.com:5000/team-a/model",
            "registry.example.com.evil/team-a/model",
            "evil.example/registry.example.com/team-a",
            "registry.example.com/other/team-a",
        ] {
            let e = grant(&rules, "team-a", refused).unwrap_err();
            assert!(e.contains(refused) && e.contains("team-a"), "{e}");
        }
        // A port is part of the host.
        let rules = [rule(&["*"], &["127.0.0.1:5000"], None)];
        assert!(grant(&rules, "x", "127.0.0.1:5000/any/thing").is_ok());
        assert!(grant(&rules, "x", "127.0.0.1:5001/any/thing").is_err());
        assert!(grant(&rules, "x", "127.0.0.1/any/thing").is_err());
    }

    #[test]
    fn docker_hub_forms_are_one_registry() {
        let rules = [
            rule(&["a"], &["docker.io/team-a"], None),
            rule(&["b"], &["index.docker.io/library/ubuntu"], None),
        ];
        assert!(grant(&rules, "a", "registry-1.docker.io/team-a/m").is_ok());
        assert!(grant(&rules, "a", "index.docker.io/team-a/m").is_ok());
        assert!(grant(&rules, "a", "docker.io/team-b/m").is_err());
        // `docker.io/ubuntu` is `docker.io/library/ubuntu`, as the store addresses it.
        assert!(grant(&rules, "b", "docker.io/ubuntu").is_ok());
        assert!(grant(&rules, "b", "docker.io/library/ubuntu").is_ok());
        assert!(grant(&rules, "b", "docker.io/library/debian").is_err());
    }

    #[test]
    fn namespaces_see_only_their_own_grants() {
        let rules = [
            rule(&["team-a"], &["r.example/team-a"], Some("team-a-registry")),
            rule(&["team-b"], &["r.example/team-b"], Some("team-b-registry")),
            rule(&["*"], &["r.example/shared"], None),
        ];
        let g = grant(&rules, "team-a", "r.example/team-a/m").unwrap();
        assert_eq!(g.credentials_secret.as_deref(), Some("team-a-registry"));
        let g = grant(&rules, "team-b", "r.example/team-b/m").unwrap();
        assert_eq!(g.credentials_secret.as_deref(), Some("team-b-registry"));
        let g = grant(&rules, "team-a", "r.example/shared/m").unwrap();
        assert_eq!(g.credentials_secret, None);
        let e = grant(&rules, "team-a", "r.example/team-b/m").unwrap_err();
        assert!(!e.contains("team-b-registry"), "{e}");
        assert!(
            e.ends_with(
                "repositories allowed for this namespace: r.example/team-a, r.example/shared"
            ),
            "{e}"
        );
        let e = grant(&rules, "team-c", "r.example/team-a/m").unwrap_err();
        assert!(e.ends_with("r.example/shared"), "{e}");
        let only = [rule(&["team-a"], &["r.example/team-a"], None)];
        let e = grant(&only, "team-c", "r.example/team-a/m").unwrap_err();
        assert!(e.ends_with("this namespace: none"), "{e}");
        // A repository without a registry host is refused under a policy, saying why.
        let e = grant(&rules, "team-a", "team-a/m").unwrap_err();
        assert!(e.contains("registry host"), "{e}");
    }

    #[test]
    fn no_rules_is_single_tenant() {
        let g = grant(&[], "anyone", "anywhere.example/x").unwrap();
        assert_eq!(g.credentials_secret, None);
    }

    #[test]
    fn bad_rules_name_the_key() {
        for (bad, key) in [
            (rule(&[], &["r.example/a"], None), "[0].namespaces"),
            (
                rule(&["Team_A"], &["r.example/a"], None),
                "[0].namespaces[0]",
            ),
            (rule(&["a"], &[], None), "[0].repositories"),
            (rule(&["a"], &["r.example/A"], None), "[0].repositories[0]"),
            (rule(&["a"], &["team-a"], None), "[0].repositories[0]"),
            (
                rule(&["a"], &["r.example/a:v1"], None),
                "[0].repositories[0]",
            ),
            (
                rule(&["a"], &["r.example/a"], Some("Bad Name")),
                "[0].credentialsSecret",
            ),
        ] {
            let (field, why) = check(&[bad]).unwrap_err();
            assert_eq!(field, format!("provenance.repositoryPolicy{key}"), "{why}");
        }
        assert!(
            check(&[rule(
                &["*", "a"],
                &["r.example", "r.example:5000/x"],
                Some("s.v1")
            )])
            .is_ok()
        );
    }
}
