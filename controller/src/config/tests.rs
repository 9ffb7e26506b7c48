use super::*;

#[test]
fn malformed_files_get_clear_errors() {
    let err = ControllerConfig::from_yaml("acceleratorProfiles: [", "cfg.yaml").unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("controller config cfg.yaml is malformed"),
        "{err}"
    );

    let err = ControllerConfig::from_yaml("acceleratorProfile: {}", "cfg.yaml").unwrap_err();
    assert!(err.to_string().contains("acceleratorProfile"), "{err}");

    let err = ControllerConfig::from_yaml(
        "acceleratorProfiles:\n  gpu:\n    resourceName: gpu\n",
        "cfg.yaml",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "controller config cfg.yaml: acceleratorProfiles.gpu.resourceName: \"gpu\" is not an extended resource name like nvidia.com/gpu"
    );

    let err = ControllerConfig::from_yaml(
        "acceleratorProfiles:\n  Big_GPU:\n    resourceName: nvidia.com/gpu\n",
        "cfg.yaml",
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("acceleratorProfiles.Big_GPU: profile names"),
        "{err}"
    );

    let err = ControllerConfig::from_yaml(
        "acceleratorProfiles:\n  gpu:\n    resourceName: nvidia.com/gpu\n    tolerations: [{key: a, operator: Maybe}]\n",
        "cfg.yaml",
    )
    .unwrap_err();
    assert!(err.to_string().contains("tolerations[0].operator"), "{err}");

    let err = ControllerConfig::load(Some(Path::new("/nonexistent/provenant.yaml"))).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot read controller config /nonexistent/provenant.yaml"),
        "{err}"
    );
}

#[test]
fn the_volume_allowlist_defaults_and_is_checked() {
    let config = ControllerConfig::defaults();
    assert_eq!(config.workers, WorkersConfig::default());
    assert!(
        !config
            .workers
            .allowed_volume_types
            .iter()
            .any(|t| t == "hostPath")
    );
    let config =
        ControllerConfig::from_yaml("workers:\n  allowedVolumeTypes: [nfs]\n", "cfg.yaml").unwrap();
    assert_eq!(config.workers.allowed_volume_types, ["nfs"]);
    let err = ControllerConfig::from_yaml(
        "workers:\n  allowedVolumeTypes: [emptyDir, hostPath]\n",
        "cfg.yaml",
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "controller config cfg.yaml: workers.allowedVolumeTypes[1]: hostPath is never allowed"
        ),
        "{err}"
    );
    let err =
        ControllerConfig::from_yaml("workers:\n  allowedVolumeTypes: [emptydir]\n", "cfg.yaml")
            .unwrap_err();
    assert!(
        err.to_string()
            .contains("\"emptydir\" is not a Kubernetes volume type"),
        "{err}"
    );
}

#[test]
fn registry_bounds_have_defaults_and_are_checked() {
    let defaults = ControllerConfig::defaults().provenance.registry;
    assert_eq!(defaults.attempts, 2);
    assert_eq!(defaults.connect_timeout_seconds, 5);
    assert_eq!(defaults.request_timeout_seconds, 20);
    assert_eq!(defaults.unauthorized_attempts, 5);
    assert_eq!(
        (defaults.retry_initial_seconds, defaults.retry_max_seconds),
        (2, 300)
    );
    assert_eq!(defaults.concurrency_per_host(16), 4);
    assert_eq!(defaults.concurrency_per_host(2), 1);
    assert_eq!(defaults.concurrency_per_namespace, None);
    let set = ControllerConfig::from_yaml(
        "provenance:\n  registry:\n    concurrencyPerHost: 3\n    requestTimeoutSeconds: 7\n",
        "cfg.yaml",
    )
    .unwrap()
    .provenance
    .registry;
    assert_eq!(set.concurrency_per_host(16), 3);
    assert_eq!(set.request_timeout_seconds, 7);

    for (yaml, expected) in [
        (
            "requestTimeoutSeconds: 0",
            "provenance.registry.requestTimeoutSeconds: must be at least 1",
        ),
        (
            "concurrencyPerHost: 0",
            "provenance.registry.concurrencyPerHost: must be at least 1",
        ),
        (
            "concurrencyPerNamespace: 0",
            "provenance.registry.concurrencyPerNamespace: must be at least 1",
        ),
        (
            "unauthorizedAttempts: 0",
            "provenance.registry.unauthorizedAttempts: must be at least 1",
        ),
        (
            "retryInitialSeconds: 10\n    retryMaxSeconds: 5",
            "provenance.registry.retryMaxSeconds: 5 is less than retryInitialSeconds (10)",
        ),
    ] {
        let text = format!("provenance:\n  registry:\n    {yaml}\n");
        let err = ControllerConfig::from_yaml(&text, "cfg.yaml").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("controller config cfg.yaml: {expected}")
        );
    }
    let err = ControllerConfig::from_yaml(
        "provenance:\n  registry:\n    requestTimeoutSeconds: -1\n",
        "cfg.yaml",
    )
    .unwrap_err();
    assert!(err.to_string().contains("requestTimeoutSeconds"), "{err}");
}

#[test]
fn empty_file_means_no_profiles() {
    let config = ControllerConfig::from_yaml("", "cfg.yaml").unwrap();
    assert!(config.accelerator_profiles.is_empty());
}

#[test]
fn repository_policy_loads_and_bad_entries_name_the_key() {
    let yaml = "provenance:\n  repositoryPolicy:\n    - namespaces: [team-a]\n      repositories: [registry.example.com/team-a]\n      credentialsSecret: team-a-registry\n    - namespaces: [\"*\"]\n      repositories: [registry.example.com/shared]\n";
    let config = ControllerConfig::from_yaml(yaml, "cfg.yaml").unwrap();
    assert_eq!(config.provenance.repository_policy.len(), 2);
    assert_eq!(config.scoped_credentials_secrets(), ["team-a-registry"]);
    let err = ControllerConfig::from_yaml(
        "provenance:\n  repositoryPolicy:\n    - namespaces: [team-a]\n      repositories: [team-a]\n",
        "cfg.yaml",
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "controller config cfg.yaml: provenance.repositoryPolicy[0].repositories[0]: \"team-a\""
        ),
        "{err}"
    );
    let err = ControllerConfig::from_yaml(
        "provenance:\n  repositoryPolicy:\n    - namespace: [team-a]\n",
        "cfg.yaml",
    )
    .unwrap_err();
    assert!(err.to_string().contains("namespace"), "{err}");
    // The shipped configuration has no policy: single-tenant.
    assert!(
        ControllerConfig::defaults()
            .provenance
            .repository_policy
            .is_empty()
    );
}

#[test]
fn provenance_encoding_defaults_to_dsse_and_bad_values_name_the_choices() {
    assert_eq!(
        ControllerConfig::defaults().provenance.encoding,
        Encoding::Dsse
    );
    for (text, encoding) in [
        ("dsse", Encoding::Dsse),
        ("sigstore-bundle", Encoding::SigstoreBundle),
        ("both", Encoding::Both),
    ] {
        let config =
            ControllerConfig::from_yaml(&format!("provenance:\n  encoding: {text}\n"), "cfg.yaml")
                .unwrap();
        assert_eq!(config.provenance.encoding, encoding);
    }
    for bad in ["bundle", "DSSE", "\"\"", "[dsse]"] {
        let err =
            ControllerConfig::from_yaml(&format!("provenance:\n  encoding: {bad}\n"), "cfg.yaml")
                .unwrap_err()
                .to_string();
        assert!(
            err.starts_with("controller config cfg.yaml is malformed"),
            "{err}"
        );
        assert!(err.contains("provenance.encoding"), "{err}");
        assert!(err.contains("one of dsse, sigstore-bundle, both"), "{err}");
    }
}
