# provenant entry points. `make demo` and `make test` are all a fresh machine needs
# (after .ci/run has installed the system packages).

CARGO ?= cargo
BIN := target/debug/provenant
CRD_FILE := crds/trainingruns.provenant.dev.yaml
# The pinned Go tools (hack/tools): kube-apiserver, kube-controller-manager, kubectl, etcd, cosign, oras,
# policy-tester, kyverno, promtool, helm.
TOOLS_BIN := hack/tools/bin
KUBECTL ?= $(TOOLS_BIN)/kubectl

.PHONY: image
.PHONY: all build build-debug tools test test-rust check-crds check-manifests lint fmt crds demo run e2e bench bench-full clean fuzz fuzz-smoke

all: build

## build: release binary at target/release/provenant
build:
	$(CARGO) build --release --bin provenant

build-debug:
	$(CARGO) build --bin provenant

## tools: build the pinned Go tools into hack/tools/bin (first time ~10 min, then cached):
## kube-apiserver, kube-controller-manager, kubectl, etcd, cosign, oras, policy-tester, kyverno,
## promtool, helm
tools:
	bash hack/tools.sh

## test: every test (unit, schema/CEL, manifests, integration, scenarios); fails on CRD drift.
## The tests run against a local etcd + kube-apiserver + kube-controller-manager (hack/cluster.sh),
## started for the run and stopped after it; with E2E_KUBECONFIG set, against that cluster.
test: tools check-crds check-manifests test-rust fuzz-smoke

test-rust: tools
	$(CARGO) test --workspace --all-targets --no-run
	bash hack/with-cluster.sh $(CARGO) test --workspace --all-targets

## fuzz: every cargo-fuzz target of fuzz/ (the parsers of untrusted input: workload reports,
## registry answers, WWW-Authenticate, OCI layouts for verify) for FUZZ_SECONDS each (300).
## fuzz-smoke (part of `make test`): each for FUZZ_SMOKE_SECONDS (10). Needs cargo-fuzz (.ci/run).
FUZZ_SECONDS ?= 300
FUZZ_SMOKE_SECONDS ?= 10
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash hack/fuzz.sh

fuzz-smoke:
	FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) bash hack/fuzz.sh

## check-crds: the committed crds/ must equal what the code generates
check-crds: build-debug
	@$(BIN) crds > target/crds.generated.yaml
	@if ! diff -u $(CRD_FILE) target/crds.generated.yaml; then \
		echo "crds/ is stale: run 'make crds' and commit the result" >&2; exit 1; \
	fi
	@echo "crds/ matches the code"

## check-manifests: config/default and the monitoring add-ons must render with kustomize
check-manifests: tools
	@$(KUBECTL) kustomize config/default > target/rendered-default.yaml
	@echo "config/default renders ($$(grep -c '^kind:' target/rendered-default.yaml) objects)"
	@for d in prometheus grafana; do \
		$(KUBECTL) kustomize config/$$d > target/rendered-$$d.yaml || exit 1; \
		echo "config/$$d renders ($$(grep -c '^kind:' target/rendered-$$d.yaml) objects)"; \
	done

## lint: formatting and clippy, warnings are errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## crds: regenerate crds/ (and the Helm chart's copy) from the API types
crds: build-debug
	$(BIN) crds > $(CRD_FILE)
	cp $(CRD_FILE) charts/provenant/crds/

## demo: the main job on embedded defaults, no cluster and no registry (hack/demo.sh)
demo: build-debug
	PROVENANT_BIN=$(BIN) bash hack/demo.sh

## run: the controller against your current kubeconfig, with the shipped configuration
run: build-debug
	$(BIN) controller --log-format text --config config/default/controller-config.yaml

## e2e: the scenarios, kubelet-simulator and registry suites against a real cluster: E2E_KUBECONFIG's
## (and E2E_REGISTRY's), or else the local control plane of hack/cluster.sh, started and stopped here
e2e: tools
	$(CARGO) test -p provenant --test scenarios --no-run
	$(CARGO) test -p provenant-testbed --test kubelet --test registry --no-run
	bash hack/with-cluster.sh sh -c '$(KUBECTL) --kubeconfig "$$E2E_KUBECONFIG" apply -f $(CRD_FILE) && \
		$(CARGO) test -p provenant --test scenarios && \
		$(CARGO) test -p provenant-testbed --test kubelet --test registry'

## bench: benchmarks of issue 7, short mode (< 5 min on 2 cores): engine, attach, hashing
## (provenant-bench), lineage over 100,000 runs (provenant-bench-lineage, issue 16), then end to
## end and cache scale (provenant-bench-cluster, when present).
## Tables on stdout, raw numbers in target/bench/*.json; docs/benchmarks.md. bench-full: full mode.
BENCH_BIN := target/release/provenant-bench
LINEAGE_BENCH_BIN := target/release/provenant-bench-lineage
CLUSTER_BENCH_SRC := bench/src/bin/cluster.rs

bench:
	$(CARGO) build --release -p provenant -p provenant-bench
	$(BENCH_BIN) --short
	$(LINEAGE_BENCH_BIN) --short
	@if [ -f $(CLUSTER_BENCH_SRC) ]; then \
		$(CARGO) run --release -p provenant-bench --bin provenant-bench-cluster -- --short; \
	else \
		echo "make bench: $(CLUSTER_BENCH_SRC) not present: skipping benchmarks 3 (end to end) and 4 (cache scale)" >&2; \
	fi

bench-full:
	$(CARGO) build --release -p provenant -p provenant-bench
	$(BENCH_BIN) --full
	$(LINEAGE_BENCH_BIN) --full
	@if [ -f $(CLUSTER_BENCH_SRC) ]; then \
		$(CARGO) run --release -p provenant-bench --bin provenant-bench-cluster -- --full; \
	else \
		echo "make bench-full: $(CLUSTER_BENCH_SRC) not present: skipping benchmarks 3 (end to end) and 4 (cache scale)" >&2; \
	fi

## image: the controller image (needs a Docker engine; none on the CI machines)
IMAGE ?= ghcr.io/provenant-dev/provenant:v0.1.0
image:
	docker build -t $(IMAGE) .

clean:
	$(CARGO) clean
