# HealthLake relay: `make run` starts it on the local emulator, `make test` runs every test.
# Everything beyond rustup/cargo, python3 and npm is installed here, pinned, into the project.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
WASM        := target/wasm32-wasip1/release/healthlake_relay.wasm
EMULATOR    := target/release/healthlake-emulator
FHIR_PKG    := hl7.fhir.r4.examples
FHIR_VER    := 4.0.1
FHIR_DIR    := build/fhir
FHIR_READY  := $(FHIR_DIR)/package/.complete

.PHONY: help run test deps build lint unit integration fixtures clean

help:
	@echo "make run    start the relay (Envoy + filter) on the local HealthLake emulator"
	@echo "make test   lint, unit tests, and integration tests through the real Envoy"

deps: $(VENV)/.installed
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy rustfmt

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

build: deps
	cargo build --release --locked --target wasm32-wasip1 -p healthlake-relay
	cargo build --release --locked -p healthlake-emulator
	@ls -l $(WASM) | awk '{print "relay wasm: " $$5 " bytes"}'

# The official HL7 FHIR R4 examples (CC0), fetched from the npm registry, never committed.
fixtures: $(FHIR_READY)
$(FHIR_READY):
	mkdir -p $(FHIR_DIR)
	cd $(FHIR_DIR) && npm pack --silent $(FHIR_PKG)@$(FHIR_VER) >/dev/null && tar xzf $(FHIR_PKG)-$(FHIR_VER).tgz
	touch $@

lint: deps
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings
	cargo clippy --locked -p healthlake-relay --target wasm32-wasip1 -- -D warnings

unit:
	cargo test --locked --workspace

integration: build fixtures
	$(PY) -m pytest tests -q -p no:cacheprovider

test: lint unit integration

run: build
	@$(PY) scripts/relayctl.py run

clean:
	rm -rf build target $(VENV)
