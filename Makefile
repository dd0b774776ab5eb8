# zt-platform — see README.md. Every target is safe to re-run.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: help tools test lint unit

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

tools: ## Install SPIRE, OpenBao, PostgreSQL, Chromium (pinned; idempotent) into .tools/
	@bash scripts/tools.sh

lint: ## cargo fmt --check and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

test: tools lint ## Install tools if needed, lint, then run every test against the real components
	$(CARGO) test --workspace --locked
