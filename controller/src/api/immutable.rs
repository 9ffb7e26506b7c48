//! The CRD rule that freezes a started run's spec, all but `spec.suspend` (a run is suspended and
//! resumed while it runs). CEL cannot remove a key from an object, so the rule compares the spec
//! field by field; [`SPEC_FIELDS`] must name every spec property but `suspend` (a unit test holds
//! it to the schema, so a field added later is frozen too, never silently mutable).

/// Every `spec` property frozen once `status.startTime` is set: all but `suspend`.
pub const SPEC_FIELDS: [&str; 27] = [
    "image",
    "command",
    "args",
    "framework",
    "env",
    "replicas",
    "failurePolicy",
    "accelerator",
    "hyperparameters",
    "seed",
    "datasets",
    "baseModel",
    "code",
    "output",
    "serviceAccountName",
    "nodeSelector",
    "podTemplate",
    "tolerations",
    "priorityClassName",
    "queueName",
    "volumes",
    "volumeMounts",
    "resources",
    "automountServiceAccountToken",
    "runAsNonRoot",
    "activeDeadlineSeconds",
    "suspend",
];

/// The spec property that stays mutable.
pub const MUTABLE: &str = "suspend";

/// The rule: not started, or every frozen field as it was (present with the same value, or absent
/// in both).
pub fn rule() -> String {
    let same = SPEC_FIELDS
        .iter()
        .filter(|f| **f != MUTABLE)
        .map(|f| {
            format!("(has(self.spec.{f}) ? has(oldSelf.spec.{f}) && self.spec.{f} == oldSelf.spec.{f} : !has(oldSelf.spec.{f}))")
        })
        .collect::<Vec<_>>()
        .join(" && ");
    format!("!has(oldSelf.status) || !has(oldSelf.status.startTime) || ({same})")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use kube::CustomResourceExt;

    use super::*;
    use crate::api::TrainingRun;

    #[test]
    fn every_spec_property_but_suspend_is_frozen() {
        let crd = serde_json::to_value(TrainingRun::crd()).expect("the CRD");
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let properties: BTreeSet<&str> = schema["properties"]["spec"]["properties"]
            .as_object()
            .expect("spec properties")
            .keys()
            .map(String::as_str)
            .collect();
        let listed: BTreeSet<&str> = SPEC_FIELDS.into_iter().collect();
        assert_eq!(
            properties, listed,
            "SPEC_FIELDS must list every spec property (a new field is frozen unless listed as MUTABLE)"
        );
        let rule = rule();
        for f in SPEC_FIELDS {
            assert_eq!(
                rule.contains(&format!("self.spec.{f} ==")),
                f != MUTABLE,
                "{f}"
            );
        }
    }
}
