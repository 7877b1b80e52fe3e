# One place for the commands developers and CI run. CI calls `make ci` through .ci/run.
.PHONY: all fmt fmt-check lint test crds crds-check bench ci

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

ci: fmt-check lint test
