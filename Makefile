# One place for the commands developers and CI run. CI calls `make ci` through .ci/run.
.PHONY: all fmt fmt-check lint test harness crds bench load manifests-check ci

all: fmt lint test

fmt:
	cargo fmt
	gofmt -w tools/kube-harness

fmt-check:
	cargo fmt --check
	test -z "$$(gofmt -l tools/kube-harness)" || (gofmt -l tools/kube-harness; exit 1)

lint:
	cargo clippy --all-targets --locked -- -D warnings

# The README's test command. tests/real_cluster.rs builds tools/kube-harness itself when needed.
test:
	cargo test --locked

# The real control plane (etcd, kube-apiserver, kube-controller-manager from Kubernetes'
# Go modules). The tests build it on demand; this target only makes the slow first build
# visible. A cold build takes many minutes on 2 cores; Go's build cache makes later ones fast.
harness:
	cd tools/kube-harness && CGO_ENABLED=0 go build -trimpath -buildvcs=false -o ../../target/kube-harness/kube-harness .

# Regenerate the CRD from the Rust types; a test fails when the checked-in file drifts.
crds:
	cargo run --quiet --locked -- crd > crds/apikey.yaml

bench:
	cargo bench

# The verifier's side-by-side load benchmark (wrk, nginx; loopback only). Not a test: CI does not run it.
load:
	bash bench/load.sh

# Render the kustomize base and the examples and validate every object against the Kubernetes schemas.
# kubernetes-validate has no CRD support: for the examples it validates the built-in kinds and
# only warns "Couldn't find schema for kind ApiKey". tests/admission.rs checks the ApiKeys against
# the CRD's schema and CEL rules, tests/examples.rs the workloads against the code.
VENV := target/ci-venv
manifests-check:
	test -x $(VENV)/bin/kubernetes-validate || (python3 -m venv $(VENV) && $(VENV)/bin/pip install --quiet kubernetes-validate)
	kubectl kustomize manifests/ > target/manifests.yaml
	$(VENV)/bin/kubernetes-validate --kubernetes-version 1.33.0 --strict target/manifests.yaml
	kubectl kustomize examples/ > target/examples.yaml
	$(VENV)/bin/kubernetes-validate --kubernetes-version 1.33.0 --strict target/examples.yaml

ci: fmt-check lint test manifests-check
