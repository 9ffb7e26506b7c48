# provenant verify policy: only models trained in images from approved registries.
#
#   provenant verify REPO@sha256:<digest> --key cosign.pub \
#     --policy config/policies/base-image-registry.rego \
#     --policy-data registries.json    # {"allowed_image_registries": ["registry.acme.com/approved"]}
#
# Every training image the signed statement records (the `image` resolved dependencies: what the
# kubelet ran, observed by the controller, `oci://<repository>`) must be under one of the allowed
# prefixes. A prefix is a registry host (`registry.acme.com`) or a repository path in one
# (`registry.acme.com/approved`), matched at path boundaries: `registry.acme.com` does not allow
# `registry.acme.com.evil.io/x`, and `registry.acme.com/approved` does not allow
# `registry.acme.com/approved-not/x`. The prefixes come from `data.allowed_image_registries`
# (`--policy-data`), else the default below. A statement that records no image at all (a model
# trained on a host by `provenant attest`) cannot show where its image came from: refused.
package provenant

default_registries := ["registry.example.com/approved"]

registries := data.allowed_image_registries if {
	is_array(data.allowed_image_registries)
} else := default_registries

images contains dep if {
	some dep in input.predicate.buildDefinition.resolvedDependencies
	dep.name == "image"
}

under(repository, prefix) if repository == trim_suffix(prefix, "/")

under(repository, prefix) if startswith(repository, concat("", [trim_suffix(prefix, "/"), "/"]))

allowed(uri) if {
	is_string(uri)
	startswith(uri, "oci://")
	some prefix in registries
	under(trim_prefix(uri, "oci://"), prefix)
}

deny contains msg if {
	some dep in images
	uri := object.get(dep, "uri", "")
	not allowed(uri)
	msg := sprintf("training image %s is not from an allowed registry (allowed: %s)", [json.marshal(uri), concat(", ", registries)])
}

deny contains "the statement records no training image, so none can be shown to come from an allowed registry" if {
	count(images) == 0
}
