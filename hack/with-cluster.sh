#!/usr/bin/env bash
# Runs a command against a real Kubernetes control plane:
#   hack/with-cluster.sh COMMAND [ARGS...]
# With E2E_KUBECONFIG set, the command runs against that cluster as it is. Otherwise the local
# control plane of hack/cluster.sh (etcd, kube-apiserver, kube-controller-manager on loopback) is
# started in target/cluster-<pid>, E2E_KUBECONFIG and E2E_AUDIT_LOG point at it for the command,
# and it is stopped afterwards whatever the command's outcome (only its own processes). Its logs
# are kept when the command fails.
#
# Either way E2E_REQUIRE_REAL=1: a test that needs a real API server fails instead of skipping.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }
export E2E_REQUIRE_REAL=1

if [ -n "${E2E_KUBECONFIG:-}" ]; then
    exec "$@"
fi

DIR="$ROOT/target/cluster-$$"
finish() {
    local status=$?
    "$ROOT/hack/cluster.sh" down "$DIR"
    if [ "$status" -eq 0 ]; then
        rm -rf "$DIR"
    else
        echo "with-cluster: the command failed (exit $status); control-plane logs kept in $DIR" >&2
    fi
}
trap finish EXIT
"$ROOT/hack/cluster.sh" up "$DIR"
export E2E_KUBECONFIG="$DIR/kubeconfig" E2E_AUDIT_LOG="$DIR/audit.log" E2E_LOCAL_CONTROL_PLANE=1
"$@"
