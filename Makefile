# VoltCloud developer commands. `make help` lists them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
CARGO_TEST := cargo test --manifest-path rust_core/Cargo.toml --no-default-features

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3

.PHONY: install
install: $(BIN)/python ## create .venv and install the platform (Rust extension built in release mode) with dev tools
	$(BIN)/pip install --quiet -e '.[dev]'

.PHONY: up
up: install ## install everything and run the platform on embedded SQLite with demo data
	$(BIN)/voltcloud up

.PHONY: test
test: install ## install everything and run the whole test suite (Rust, then Python)
	$(CARGO_TEST) --quiet
	$(BIN)/pytest -q

.PHONY: lint
lint: install ## ruff, mypy --strict, stubtest, the import walls (lint-imports), rustfmt, clippy, and the generated-code freshness check
	$(BIN)/ruff check python gateways tests bench loadtest scripts
	$(BIN)/ruff format --check python gateways tests bench loadtest scripts
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m mypy.stubtest voltcloud._core --allowlist .ci/stubtest-allowlist.txt
	$(BIN)/python scripts/gen_protos.py --check
	cargo fmt --manifest-path rust_core/Cargo.toml --check
	cargo clippy --manifest-path rust_core/Cargo.toml --all-targets --no-default-features --quiet -- -D warnings

.PHONY: protos
protos: ## regenerate python/voltcloud/api/v1 from proto/
	$(BIN)/python scripts/gen_protos.py

.PHONY: bench
bench: install ## run the benchmarks (figures go to docs/benchmarks.md by hand)
	$(BIN)/python bench/bench_engine.py
	$(BIN)/python bench/bench_vrptw.py
