#!/usr/bin/env bash
# A local Kubernetes control plane for the test suite: etcd, kube-apiserver and
# kube-controller-manager on loopback, no kubelet (the test bed's kubelet simulator plays the
# nodes through the public API).
#
#   hack/cluster.sh up   [DIR]   start it; writes DIR/kubeconfig (default DIR: target/cluster)
#   hack/cluster.sh down [DIR]   stop the processes it started (by their PIDs in DIR/pids)
#   hack/cluster.sh env  [DIR]   print `export E2E_KUBECONFIG=... E2E_AUDIT_LOG=... ...` for a shell
#
# The kubeconfig's user is cluster-admin (system:masters, a static token): DIR is private (umask
# 077), and etcd listens without authentication on a loopback port, like any kubeadm etcd's
# client port seen from the node. DIR/audit.log records every pod create (audit level Metadata),
# so a test can count the writes of the controller.
#
# Binaries: hack/tools/bin/{etcd,kube-apiserver,kube-controller-manager} (hack/tools.sh builds
# them), or ETCD / KUBE_APISERVER / KUBE_CONTROLLER_MANAGER. etcd runs with --unsafe-no-fsync:
# a throwaway store, and fsync on a VM disk costs milliseconds per API write.
set -euo pipefail
umask 077

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CMD="${1:-}"
DIR="${2:-$ROOT/target/cluster}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"

KUBE_APISERVER="${KUBE_APISERVER:-$ROOT/hack/tools/bin/kube-apiserver}"
KUBE_CONTROLLER_MANAGER="${KUBE_CONTROLLER_MANAGER:-$ROOT/hack/tools/bin/kube-controller-manager}"
ETCD="${ETCD:-$ROOT/hack/tools/bin/etcd}"
ADMIN_TOKEN_FILE="$DIR/admin.token"

log() { echo "cluster: $*" >&2; }
die() { log "$*"; exit 1; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The start time of PID (field 22 of /proc/PID/stat, clock ticks since boot), empty if gone.
start_time() {
    [ -r "/proc/$1/stat" ] && sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f20
}

# Is PID (started at START) still the process this script started? A recycled PID has another
# start time.
ours() {
    local pid="$1" start="$2"
    [ -n "$pid" ] && [ -n "$start" ] && [ "$(start_time "$pid" 2>/dev/null)" = "$start" ]
}

# Start a process in its own session, logging to DIR/NAME.log, and record it in DIR/pids.
spawn() { # name command...
    local name="$1"
    shift
    setsid "$@" >"$DIR/$name.log" 2>&1 </dev/null &
    local pid=$!
    echo "$name $pid $(start_time "$pid")" >>"$DIR/pids"
}

stop() {
    [ -f "$DIR/pids" ] || return 0
    local pid name start
    # Reverse order of start: controller-manager, apiserver, then etcd.
    while read -r name pid start; do
        if ours "$pid" "$start"; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do ours "$pid" "$start" || break; sleep 0.1; done
            if ours "$pid" "$start"; then kill -KILL "$pid" 2>/dev/null || true; fi
            log "stopped $name (pid $pid)"
        fi
    done < <(tac "$DIR/pids")
    rm -f "$DIR/pids"
    rm -rf "$DIR/etcd"
}

certs() {
    local c="$DIR/pki"
    mkdir -p "$c"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=provenant-test-ca" \
        -keyout "$c/ca.key" -out "$c/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
        -keyout "$c/apiserver.key" -out "$c/apiserver.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1\n' \
        >"$c/apiserver.ext"
    openssl x509 -req -in "$c/apiserver.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" \
        -CAcreateserial -days 30 -extfile "$c/apiserver.ext" -out "$c/apiserver.crt" 2>/dev/null
    # The key pair that signs and verifies service-account tokens.
    openssl genrsa -out "$c/sa.key" 2048 2>/dev/null
    openssl rsa -in "$c/sa.key" -pubout -out "$c/sa.pub" 2>/dev/null
}

kubeconfig() { # file token user
    local ca
    ca="$(base64 -w0 <"$DIR/pki/ca.crt")"
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: provenant-test
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $ca
users:
- name: $3
  user:
    token: $2
contexts:
- name: provenant-test
  context:
    cluster: provenant-test
    user: $3
current-context: provenant-test
EOF
}

audit_policy() {
    cat >"$DIR/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create]
  resources: [{group: "", resources: [pods]}]
- level: None
EOF
}

api() { # path (the token from a file: not on curl's command line)
    curl -sf --max-time 2 --cacert "$DIR/pki/ca.crt" -H @"$DIR/auth-header" \
        "https://127.0.0.1:$API_PORT$1"
}

# Wait (60 s) until `check` succeeds, failing early when one of `names` has exited.
wait_for() { # what check names...
    local what="$1" check="$2" name pid start
    shift 2
    for _ in $(seq 1 600); do
        if $check >/dev/null 2>&1; then
            return 0
        fi
        for name in "$@"; do
            read -r pid start < <(awk -v n="$name" '$1 == n {print $2, $3}' "$DIR/pids")
            if ! ours "$pid" "$start"; then
                tail -n 30 "$DIR/$name.log" >&2 || true
                die "$name exited during start-up (log: $DIR/$name.log)"
            fi
        done
        sleep 0.1
    done
    die "$what not ready after 60 s (logs: $DIR/*.log)"
}

apiserver_ready() { api /readyz; }
# The serviceaccount controller made the `default` ServiceAccount: the controller-manager works.
controller_manager_ready() { api /api/v1/namespaces/default/serviceaccounts/default; }

start() {
    [ -x "$KUBE_APISERVER" ] || die "no kube-apiserver at $KUBE_APISERVER: run hack/tools.sh (make tools)"
    [ -x "$KUBE_CONTROLLER_MANAGER" ] || die "no kube-controller-manager at $KUBE_CONTROLLER_MANAGER: run hack/tools.sh"
    [ -x "$ETCD" ] || die "no etcd at $ETCD: run hack/tools.sh"
    stop # a previous instance for this DIR, if any
    rm -rf "$DIR/pki" "$DIR"/*.log "$DIR"/*.kubeconfig "$DIR/kubeconfig" "$DIR/audit-policy.yaml" \
        "$DIR/auth-header" "$ADMIN_TOKEN_FILE"
    : >"$DIR/pids"

    certs
    audit_policy
    local etcd_port peer_port cm_token
    etcd_port="$(free_port)"
    peer_port="$(free_port)"
    API_PORT="$(free_port)"
    head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$ADMIN_TOKEN_FILE"
    echo "Authorization: Bearer $(cat "$ADMIN_TOKEN_FILE")" >"$DIR/auth-header"
    cm_token="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
    {
        echo "$(cat "$ADMIN_TOKEN_FILE"),provenant-test-admin,provenant-test-admin,system:masters"
        echo "$cm_token,system:kube-controller-manager,system:kube-controller-manager"
    } >"$DIR/pki/tokens.csv"

    spawn etcd "$ETCD" --name "provenant-test" --data-dir "$DIR/etcd" --unsafe-no-fsync \
        --listen-client-urls "http://127.0.0.1:$etcd_port" \
        --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "provenant-test=http://127.0.0.1:$peer_port"

    spawn kube-apiserver "$KUBE_APISERVER" \
        --etcd-servers "http://127.0.0.1:$etcd_port" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
        --cert-dir "$DIR/pki" \
        --tls-cert-file "$DIR/pki/apiserver.crt" --tls-private-key-file "$DIR/pki/apiserver.key" \
        --client-ca-file "$DIR/pki/ca.crt" \
        --token-auth-file "$DIR/pki/tokens.csv" \
        --authorization-mode RBAC \
        --service-account-issuer https://kubernetes.default.svc \
        --service-account-key-file "$DIR/pki/sa.pub" \
        --service-account-signing-key-file "$DIR/pki/sa.key" \
        --service-cluster-ip-range 10.96.0.0/16 \
        --audit-policy-file "$DIR/audit-policy.yaml" --audit-log-path "$DIR/audit.log"

    kubeconfig "$DIR/kubeconfig" "$(cat "$ADMIN_TOKEN_FILE")" provenant-test-admin
    kubeconfig "$DIR/controller-manager.kubeconfig" "$cm_token" system:kube-controller-manager
    wait_for kube-apiserver apiserver_ready etcd kube-apiserver

    # Default ServiceAccounts, garbage collection, namespace deletion, quota usage (ResourceQuota
    # admission needs it; the pod_errors scenarios run into a quota), and the rules of the built-in
    # admin/edit/view roles (aggregated; the tenant scenarios act with `edit`); nothing that expects a
    # kubelet (the node lifecycle controller would taint and evict the simulated nodes). Each
    # controller acts as its own ServiceAccount with its bootstrap RBAC role, as in a kubeadm
    # cluster: the controller-manager's own user may only list and watch.
    spawn kube-controller-manager "$KUBE_CONTROLLER_MANAGER" \
        --kubeconfig "$DIR/controller-manager.kubeconfig" \
        --controllers serviceaccount,garbagecollector,namespace,clusterrole-aggregation,resourcequota \
        --use-service-account-credentials=true \
        --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
        --root-ca-file "$DIR/pki/ca.crt" \
        --service-account-private-key-file "$DIR/pki/sa.key"
    wait_for kube-controller-manager controller_manager_ready kube-controller-manager kube-apiserver

    local version
    version="$(api /version | python3 -c 'import json, sys; print(json.load(sys.stdin)["gitVersion"])')"
    log "kube-apiserver $version ready at https://127.0.0.1:$API_PORT (etcd $("$ETCD" --version | awk '/etcd Version/ {print $3}')); kubeconfig: $DIR/kubeconfig"
}

case "$CMD" in
    up) start ;;
    down) stop ;;
    env) printf 'export E2E_KUBECONFIG=%q E2E_AUDIT_LOG=%q E2E_LOCAL_CONTROL_PLANE=1\n' \
        "$DIR/kubeconfig" "$DIR/audit.log" ;;
    *) echo "usage: $0 up|down|env [DIR]" >&2; exit 2 ;;
esac
