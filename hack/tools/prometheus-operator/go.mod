// The Prometheus Operator, pinned only for its CRDs (ServiceMonitor, PrometheusRule): nothing is
// built from it. hack/tools.sh downloads the module and copies the two CRDs into
// hack/tools/bin/crds/ for the server-side dry run of config/prometheus
// (controller/tests/monitoring_rules.rs). No Go file imports it, so do not `go mod tidy` here.
module github.com/provenant-dev/provenant/hack/tools/prometheus-operator

go 1.26.0

require github.com/prometheus-operator/prometheus-operator v0.85.0
