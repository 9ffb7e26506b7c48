#!/bin/sh
# Installs Debian's CNCF distribution registry (`docker-registry`, 2.8.x) for the test bed's
# registry fixture (provenant_testbed::registry), and skopeo, which the OCI layout tests use to
# read provenant's layouts and copy them to that registry (controller/tests/layout_store.rs).
# Runs as root on a fresh Debian where `apt-get update` already ran. Installs the binary only
# (/usr/bin/docker-registry); the fixture starts its own instance on a loopback port, so the
# system service is not used.
set -eu
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-registry skopeo
