# provenant verify policy: no model trained on a dataset whose license is unknown.
#
#   provenant verify REPO@sha256:<digest> --key cosign.pub \
#     --policy config/policies/dataset-license.rego
#
# Every dataset the signed statement records (each `dataset:<name>` resolved dependency: declared
# in the TrainingRun, hashed by `provenant attest`, or only reported by the training workload)
# must carry the license its TrainingRun declared: `spec.datasets[].license`, recorded as
# `annotations.declaredLicense` (docs/provenance.md). A dataset only the workload reported has
# no declared license, so it is refused too. SPDX's `NOASSERTION` ("not known") is refused like an
# absent license. The license is the submitter's word: this policy makes sure it was declared and
# signed into the provenance, not that it is true.
package provenant

# SPDX's value for "the license is not known".
unknown := "NOASSERTION"

datasets contains dep if {
	some dep in input.predicate.buildDefinition.resolvedDependencies
	startswith(dep.name, "dataset:")
}

name(dep) := trim_prefix(dep.name, "dataset:")

deny contains msg if {
	some dep in datasets
	not dep.annotations.declaredLicense
	msg := sprintf("dataset %q has no declared license (spec.datasets[].license)", [name(dep)])
}

deny contains msg if {
	some dep in datasets
	dep.annotations.declaredLicense == unknown
	msg := sprintf("dataset %q declares its license as %s (not known)", [name(dep), unknown])
}
