#!/usr/bin/env bash
# Runs a command against a real Kubernetes control plane:
#   hack/with-cluster.sh COMMAND [ARGS...]
# With E2E_KUBECONFIG set, the command runs against that cluster as it is. Otherwise the local
# control plane of hack/cluster.sh (kube-apiserver, etcd, kube-controller-manager on loopback) is
# started in target/cluster-<pid>, E2E_KUBECONFIG (and E2E_AUDIT_LOG) point at it for the
# command, and it is stopped afterwards whatever the command's outcome (only its own PIDs).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

if [ -n "${E2E_KUBECONFIG:-}" ]; then
    exec "$@"
fi

DIR="$ROOT/target/cluster-$$"
trap '"$ROOT/hack/cluster.sh" down "$DIR"; rm -rf "$DIR"' EXIT
"$ROOT/hack/cluster.sh" up "$DIR"
export E2E_KUBECONFIG="$DIR/kubeconfig" E2E_AUDIT_LOG="$DIR/audit.log"
"$@"
