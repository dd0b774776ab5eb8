# zt-platform — see README.md. Every target is safe to re-run.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
STATE ?= .zt
export CARGO_TERM_COLOR ?= never

RELEASE_BINS := -p zt-sidecar -p app-backend -p app-frontend -p github-standin -p devstack
DEVSTACK := target/release/devstack

.PHONY: help tools test lint up down status demo bench bench-sidecar bench-mtls bench-backend build

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

tools: ## Install SPIRE, OpenBao, PostgreSQL, Chromium (pinned; idempotent) into .tools/
	@bash scripts/tools.sh

build: ## Release build of every binary
	$(CARGO) build --release --locked $(RELEASE_BINS)

lint: ## cargo fmt --check and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

test: tools lint ## Install tools if needed, lint, then run every test against the real components
	$(CARGO) test --workspace --locked

up: tools build ## Run the whole platform locally (frontend on http://127.0.0.1:3000); Ctrl-C stops it
	@$(DEVSTACK) up --state $(STATE)

down: ## Stop the platform started with `make up`
	@if [ -x $(DEVSTACK) ]; then $(DEVSTACK) down --state $(STATE); else echo "nothing to stop (not built)"; fi

demo: build ## Guided walkthrough of the seed's demo (starts the platform if needed); NO_PAUSE=1 for scripts
	@$(DEVSTACK) demo --state $(STATE) $(if $(NO_PAUSE),--no-pause,)

status: ## Health of every component of the running platform
	@$(DEVSTACK) status --state $(STATE)

bench: bench-sidecar bench-mtls bench-backend ## All benchmarks (results in bench/results/)

bench-sidecar: ## zt-sidecar vs OpenBao Agent: RSS, time to first file, idle CPU
	@bash scripts/bench.sh sidecar

bench-mtls: ## Latency/throughput: direct vs through the two mTLS sidecars (wrk)
	@bash scripts/bench.sh mtls
