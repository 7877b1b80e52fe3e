# One place for the commands developers and CI run. CI calls `make ci` through .ci/run.
.PHONY: all fmt fmt-check lint test crds bench load manifests-check ci

all: fmt lint test

fmt:
	cargo fmt

fmt-check:
	cargo fmt --check

lint:
	cargo clippy --all-targets --locked -- -D warnings

# The README's test command.
test:
	cargo test --locked

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
