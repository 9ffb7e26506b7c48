//! Volume types: what a `spec.volumes` entry mounts, as Kubernetes names it (the one source field
//! a Volume sets: `emptyDir`, `persistentVolumeClaim`, `hostPath`, ...).

use k8s_openapi::api::core::v1::Volume;

/// The volume types the worker pods may use unless the configuration says otherwise: those Pod
/// Security `restricted` allows, so workers fit any namespace that enforces it. hostPath is never
/// allowed (a node's file system is not a tenant's).
pub const DEFAULT_ALLOWED_VOLUME_TYPES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// The type of `volume`. A volume that names no source is an `emptyDir`, as the API server
/// defaults it.
pub fn volume_type(volume: &Volume) -> &'static str {
    let value = serde_json::to_value(volume).unwrap_or_default();
    let set = value
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .filter(|k| *k != "name")
        .find_map(|k| known_types().iter().find(|t| *t == k).map(String::as_str));
    set.unwrap_or("emptyDir")
}

/// Every volume type this version of the Kubernetes API knows, from its schema of Volume.
pub fn known_types() -> &'static [String] {
    static TYPES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    TYPES.get_or_init(|| {
        let schema = schemars::schema_for!(Volume);
        schema
            .get("properties")
            .and_then(serde_json::Value::as_object)
            .into_iter()
            .flat_map(|p| p.keys())
            .filter(|k| *k != "name")
            .cloned()
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_source_a_volume_sets() {
        let v = |json: serde_json::Value| -> Volume { serde_json::from_value(json).unwrap() };
        assert_eq!(
            volume_type(&v(
                serde_json::json!({"name": "a", "hostPath": {"path": "/"}})
            )),
            "hostPath"
        );
        assert_eq!(
            volume_type(&v(
                serde_json::json!({"name": "a", "persistentVolumeClaim": {"claimName": "c"}})
            )),
            "persistentVolumeClaim"
        );
        assert_eq!(
            volume_type(&v(serde_json::json!({"name": "a"}))),
            "emptyDir"
        );
        for t in DEFAULT_ALLOWED_VOLUME_TYPES
            .iter()
            .chain(&["hostPath", "nfs"])
        {
            assert!(
                known_types().iter().any(|k| k == t),
                "{t} in {:?}",
                known_types()
            );
        }
    }
}
