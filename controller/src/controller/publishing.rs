//! The publisher's wiring at start (the signing key and registry credentials Secrets, watched
//! for as long as the process runs) and the repository policy's scoped credentials.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use tracing::info;

use super::Options;
use crate::config::ControllerConfig;
use crate::provenance::BuilderIdentity;
use crate::reconcile::publisher::Publisher;
use crate::secrets::{self, RegistryCredentials, SigningKey};
use crate::server;

/// The publisher, when provenance is enabled: it watches the signing key (and registry credentials)
/// Secrets in the controller's namespace for as long as the process runs, so a standby is ready to
/// sign the moment it takes over.
pub(super) fn start_publisher(
    client: &Client,
    config: &ControllerConfig,
    options: &Options,
    state: &Arc<server::State>,
) -> Option<Arc<Publisher>> {
    let provenance = &config.provenance;
    if !provenance.enabled {
        info!("provenance disabled in the configuration");
        return None;
    }
    let namespace = options.controller_namespace.clone();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let key = Arc::new(SigningKey::unavailable("not loaded yet"));
    tokio::spawn(secrets::watch_signing_key(
        secrets.clone(),
        namespace.clone(),
        provenance.signing_key_secret.clone(),
        key.clone(),
    ));
    let credentials = Arc::new(RegistryCredentials::default());
    if let Some(name) = &provenance.registry.credentials_secret {
        tokio::spawn(secrets::watch_registry_credentials(
            secrets.clone(),
            namespace.clone(),
            name.clone(),
            credentials.clone(),
        ));
    }
    let scoped = watch_scoped_credentials(config, &secrets, &namespace);
    let metrics = state.metrics.clone();
    let observer: crate::storage::Observer =
        Arc::new(move |op: &str, elapsed: Duration, ok: bool| {
            metrics.observe_registry(op, elapsed, ok)
        });
    Some(Arc::new(
        Publisher::new(
            key,
            credentials,
            BuilderIdentity::controller(&provenance.builder_id, provenance.cluster_name.as_deref()),
            &provenance.registry,
            Some(observer),
        )
        .with_scoped_credentials(scoped)
        .with_encoding(provenance.encoding),
    ))
}

// ----- repositoryPolicy (issue 14, point 2) -----

/// Say once how the repository policy scopes the runs: without one, every namespace may publish
/// anywhere with the controller's credentials.
pub(super) fn log_repository_policy(config: &ControllerConfig) {
    let rules = &config.provenance.repository_policy;
    if rules.is_empty() {
        info!(
            "no provenance.repositoryPolicy: single-tenant, a run in any namespace may publish to any repository with the controller's registry credentials"
        );
    } else {
        info!(
            rules = rules.len(),
            scoped_credentials = config.scoped_credentials_secrets().len(),
            "provenance.repositoryPolicy: runs may publish only under the repositories granted to their namespace"
        );
    }
}

/// Watch every Secret a `repositoryPolicy` rule names, each into its own credentials.
fn watch_scoped_credentials(
    config: &ControllerConfig,
    secrets: &Api<Secret>,
    namespace: &str,
) -> HashMap<String, Arc<RegistryCredentials>> {
    config
        .scoped_credentials_secrets()
        .into_iter()
        .map(|name| {
            let credentials = Arc::new(RegistryCredentials::default());
            tokio::spawn(secrets::watch_registry_credentials(
                secrets.clone(),
                namespace.to_string(),
                name.clone(),
                credentials.clone(),
            ));
            (name, credentials)
        })
        .collect()
}
