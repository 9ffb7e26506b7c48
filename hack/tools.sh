#!/usr/bin/env bash
# Builds the pinned Go tools the test suite runs into hack/tools/bin:
#   kube-apiserver, kube-controller-manager, kubectl   (hack/tools/kubernetes/go.mod, k8s.io/kubernetes)
#   etcd                                               (hack/tools/etcd/go.mod)
#   cosign, oras                                       (hack/tools/go.mod)
#   policy-tester (sigstore policy-controller cmd/tester) (hack/tools/policy-controller/go.mod)
#   kyverno (the Kyverno CLI)                          (hack/tools/kyverno/go.mod)
#   promtool (Prometheus)                              (hack/tools/prometheus/go.mod)
#   helm                                               (hack/tools/helm/go.mod)
#   kueue (the Kueue manager), its CRDs crds/kueue.x-k8s.io_*.yaml and webhooks kueue-webhooks.yaml
#                                                      (hack/tools/kueue/go.mod)
#   crds/: the Prometheus Operator's ServiceMonitor and PrometheusRule CRDs (hack/tools/prometheus-operator)
#   crds/argoproj.io_workflows.yaml: Argo Workflows' Workflow CRD (hack/tools/argo; downloaded, not built)
#   crds/: the ClusterImagePolicy and ClusterPolicy CRDs of those two releases
# Skips the build when the binaries were built from the current go.mod/go.sum (a stamp file);
# otherwise Go's build cache (GOCACHE) makes a rebuild after a small change cheap. A first build
# on 2 cores takes about 8 minutes and 2.4 GB of memory for kube-apiserver, and about 7 more for
# the Kyverno CLI (2.7 GB); with the cache warm, a rebuild of everything takes under a minute.
set -euo pipefail
cd "$(dirname "$0")/tools"
BIN="$PWD/bin"
mkdir -p "$BIN"

stamp="$(cat go.mod go.sum kubernetes/go.mod kubernetes/go.sum etcd/go.mod etcd/go.sum \
    policy-controller/go.mod policy-controller/go.sum kyverno/go.mod kyverno/go.sum \
    prometheus/go.mod prometheus/go.sum helm/go.mod helm/go.sum kueue/go.mod kueue/go.sum \
    prometheus-operator/go.mod prometheus-operator/go.sum argo/go.mod argo/go.sum ../tools.sh \
    | sha256sum | cut -d' ' -f1)"
all=(kube-apiserver kube-controller-manager kubectl etcd cosign oras policy-tester kyverno promtool helm kueue
    kueue-webhooks.yaml crds/kueue.x-k8s.io_clusterqueues.yaml crds/kueue.x-k8s.io_workloads.yaml
    crds/300-clusterimagepolicy.yaml crds/kyverno.io_clusterpolicies.yaml
    crds/monitoring.coreos.com_servicemonitors.yaml crds/monitoring.coreos.com_prometheusrules.yaml
    crds/argoproj.io_workflows.yaml)
if [ "$(cat "$BIN/.stamp" 2>/dev/null)" = "$stamp" ] && (cd "$BIN" && ls "${all[@]}" >/dev/null 2>&1); then
    exit 0
fi
rm -f "$BIN/.stamp"

# Exactly the pinned modules: no go.work of the user's, no go.mod rewrites.
export CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=readonly
start=$(date +%s)

# The version Kubernetes' own build stamps in with -X (hack/lib/version.sh); without it the
# binaries say v0.0.0-master to /version, kubectl and the emulation-version logic.
kube_version="$(cd kubernetes && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
IFS=. read -r major minor _ <<<"${kube_version#v}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
echo "tools: building kube-apiserver, kube-controller-manager, kubectl $kube_version" >&2
(cd kubernetes && go build -ldflags "$ldflags" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl)

echo "tools: building etcd" >&2
(cd etcd && go build -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3)

echo "tools: building cosign, oras" >&2
go build -ldflags "-s -w" -o "$BIN/" \
    github.com/sigstore/cosign/v3/cmd/cosign \
    oras.land/oras/cmd/oras

# The admission controllers' own evaluators, for config/policies (controller/tests/admission_*.rs),
# each in a module of its own: policy-controller v0.13 builds against cosign v2, Kyverno v1.19
# against cosign v3.1.2, both with Kubernetes libraries of their own. They cost about 380 s
# (policy-tester) and 670 s (kyverno) of CPU time on top of the other tools; Kyverno's link peaks
# at 2.7 GB of memory.
echo "tools: building policy-tester (policy-controller cmd/tester), kyverno (CLI)" >&2
(cd policy-controller && go build -ldflags "-s -w" -o "$BIN/policy-tester" \
    github.com/sigstore/policy-controller/cmd/tester)
(cd kyverno && go build -ldflags "-s -w" -o "$BIN/kyverno" \
    github.com/kyverno/kyverno/cmd/cli/kubectl-kyverno)
# The monitoring rules and dashboard (config/prometheus, config/grafana) are checked by promtool,
# the chart (charts/provenant) by helm, each in a module of its own.
echo "tools: building promtool, helm" >&2
(cd prometheus && go build -ldflags "-s -w" -o "$BIN/promtool" \
    github.com/prometheus/prometheus/cmd/promtool)
(cd helm && go build -ldflags "-s -w" -o "$BIN/helm" helm.sh/helm/v4/cmd/helm)
# Their CRDs, from the same modules, for the server-side check of the shipped policies.
mkdir -p "$BIN/crds"
module_dir() { (cd "$1" && go list -m -f '{{.Dir}}' "$2"); }
install -m 0644 "$(module_dir policy-controller github.com/sigstore/policy-controller)/config/300-clusterimagepolicy.yaml" \
    "$(module_dir kyverno github.com/kyverno/kyverno)/config/crds/kyverno/kyverno.io_clusterpolicies.yaml" "$BIN/crds/"
# The Prometheus Operator's ServiceMonitor and PrometheusRule CRDs, for the server-side check of
# config/prometheus (controller/tests/monitoring_rules.rs); the module is downloaded, not built.
(cd prometheus-operator && go mod download github.com/prometheus-operator/prometheus-operator)
po_crds="$(module_dir prometheus-operator github.com/prometheus-operator/prometheus-operator)/example/prometheus-operator-crd"
install -m 0644 "$po_crds/monitoring.coreos.com_servicemonitors.yaml" \
    "$po_crds/monitoring.coreos.com_prometheusrules.yaml" "$BIN/crds/"
# Argo Workflows' Workflow CRD, for the server-side check of config/samples/pipelines
# (test/scenarios/pipelines/argo.rs). Only v4 is served; its Go code is never built here.
(cd argo && go mod download github.com/argoproj/argo-workflows/v4)
install -m 0644 "$(module_dir argo github.com/argoproj/argo-workflows/v4)/manifests/base/crds/full/argoproj.io_workflows.yaml" "$BIN/crds/"

# Kueue, for the queueing scenario (test/scenarios/queueing.rs runs the real manager against the
# test control plane), and its CRDs. About 11 minutes of wall time on 2 busy cores, 380 s of CPU.
echo "tools: building kueue" >&2
kueue_version="$(cd kueue && go list -m -f '{{.Version}}' sigs.k8s.io/kueue)"
(cd kueue && go build -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$kueue_version" \
    -o "$BIN/kueue" sigs.k8s.io/kueue/cmd/kueue)
install -m 0644 "$(module_dir kueue sigs.k8s.io/kueue)"/config/components/crd/bases/kueue.x-k8s.io_*.yaml \
    "$BIN/crds/"
install -m 0644 "$(module_dir kueue sigs.k8s.io/kueue)/config/components/webhook/manifests.yaml" "$BIN/kueue-webhooks.yaml"

echo "$stamp" >"$BIN/.stamp"
echo "tools: built in $(($(date +%s) - start)) s into $BIN" >&2
