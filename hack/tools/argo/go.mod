// Argo Workflows, pinned for its Workflow CRD only (nothing is built): hack/tools.sh copies
// manifests/base/crds/full/argoproj.io_workflows.yaml into hack/tools/bin/crds, and
// test/scenarios/pipelines/argo.rs dry-runs config/samples/pipelines/argo-workflow.yaml against it on
// the real API server. v4 because the Go module proxy serves no v3 of this module; the security
// advisories of v4.0.5 are about its Go code, which is never built or run here.
module github.com/provenant-dev/provenant/hack/tools/argo

go 1.26.8

require github.com/argoproj/argo-workflows/v4 v4.0.5
