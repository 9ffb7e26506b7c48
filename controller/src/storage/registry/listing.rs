//! What a registry lists, for `provenant lineage`: the tags of a repository
//! (`GET /v2/<name>/tags/list`) and the repositories of a registry (`GET /v2/_catalog`), each
//! read a page at a time as the registry's `Link` header says. Bounded: a registry that keeps
//! answering with a next page is stopped, never followed forever.

use serde::Deserialize;

use super::RegistryStore;
use super::repo::Repo;
use crate::storage::error::StorageError;
use crate::storage::op;

/// Entries asked for per page.
const PAGE: usize = 1000;
/// Pages read at most (a million tags or repositories).
const MAX_PAGES: usize = 1000;

#[derive(Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Catalog {
    #[serde(default)]
    repositories: Option<Vec<String>>,
}

impl RegistryStore {
    /// Every tag of `repository` (`host[:port]/path`); empty when the repository does not exist.
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>, StorageError> {
        let repo = Repo::parse(repository, &self.options.insecure_registries)?;
        let first = format!("{}/tags/list?n={PAGE}", repo.base);
        let target = format!("{} (tags)", repo.display);
        let pages = self.pages(&repo, op::TAGS_LIST, first, &target).await?;
        let mut tags = Vec::new();
        for body in pages {
            let list: TagList = serde_json::from_slice(&body).map_err(|e| {
                StorageError::permanent(op::TAGS_LIST, &target, format!("not a tag list: {e}"))
            })?;
            tags.extend(list.tags.unwrap_or_default());
        }
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    /// Every repository of the registry `host[:port]`, as `host[:port]/path`. Needs a registry
    /// that serves its catalog (distribution does; many hosted registries do not).
    pub async fn repositories(&self, host: &str) -> Result<Vec<String>, StorageError> {
        let repo = Repo::catalog(host, &self.options.insecure_registries)?;
        let first = format!("{}/_catalog?n={PAGE}", repo.base);
        let target = format!("{host} (catalog)");
        let pages = self.pages(&repo, op::CATALOG_GET, first, &target).await?;
        let mut repositories = Vec::new();
        for body in pages {
            let list: Catalog = serde_json::from_slice(&body).map_err(|e| {
                StorageError::permanent(op::CATALOG_GET, &target, format!("not a catalog: {e}"))
            })?;
            repositories.extend(
                list.repositories
                    .unwrap_or_default()
                    .into_iter()
                    .map(|path| format!("{host}/{path}")),
            );
        }
        repositories.sort();
        repositories.dedup();
        Ok(repositories)
    }

    /// The bodies of a list's pages, from `first` on.
    async fn pages(
        &self,
        repo: &Repo,
        op: &'static str,
        first: String,
        target: &str,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        let mut bodies = Vec::new();
        let mut url = first;
        loop {
            let (body, next) = self.api.list_page(repo, op, &url, target).await?;
            bodies.extend(body);
            match next {
                Some(next) if next != url => url = next,
                _ => return Ok(bodies),
            }
            if bodies.len() >= MAX_PAGES {
                return Err(StorageError::permanent(
                    op,
                    target,
                    format!("more than {MAX_PAGES} pages of {PAGE}: stopped reading"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::api::next_link;

    #[test]
    fn the_next_page_is_the_rel_next_link() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?last=x&n=2>; rel="next""#),
            Some("/v2/a/tags/list?last=x&n=2")
        );
        assert_eq!(
            next_link(r#"<https://r/prev>; rel="prev", <https://r/v2/_catalog?last=b>; rel=next"#),
            Some("https://r/v2/_catalog?last=b")
        );
        assert_eq!(next_link(r#"<https://r/prev>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }
}
