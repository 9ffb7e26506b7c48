#!/usr/bin/env bash
# Start Debian's docker-registry (CNCF distribution 2.8) on a loopback port for manual experiments:
#   hack/local-registry.sh [PORT]      (default 5000; data in a temp dir, Ctrl-C to stop)
# Install it first with .ci/install-registry.sh (as root).
set -euo pipefail
port="${1:-5000}"
bin="$(command -v docker-registry || echo /usr/bin/docker-registry)"
[ -x "$bin" ] || { echo "docker-registry not found: run .ci/install-registry.sh as root" >&2; exit 2; }
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
cat > "$dir/config.yml" <<YAML
version: 0.1
log: {level: info}
storage:
  filesystem: {rootdirectory: $dir/data}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$port}
YAML
echo "registry on http://127.0.0.1:$port (storage $dir/data)"
"$bin" serve "$dir/config.yml"
