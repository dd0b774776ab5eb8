# zt-platform — see README.md. Every target is safe to re-run.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
STATE ?= .zt
export CARGO_TERM_COLOR ?= never

# `make up` and `make demo` build only what they run (UP_BINS), with the dev
# profile `make test` also builds (so after a test run little is left to
# compile) and devstack without its Kubernetes parts: ~4 min from scratch on
# 2 cores, against ~16 min for every binary with the release profile (thin
# LTO), which `make build` and the images keep. PROFILE=release runs the
# platform from optimised binaries instead.
PROFILE ?= debug
CARGO_PROFILE = $(if $(filter debug,$(PROFILE)),dev,$(PROFILE))
BINS := -p zt-sidecar -p zt-injector -p app-backend -p app-frontend -p github-standin -p devstack -p zt-bootstrap -p zt-bench
UP_BINS := -p devstack -p zt-sidecar -p app-backend -p app-frontend -p github-standin
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
DEVSTACK := $(TARGET_DIR)/$(PROFILE)/devstack
# down/status work with any build of devstack (the platform may have been started with another PROFILE).
ANY_DEVSTACK = $(firstword $(wildcard $(DEVSTACK) $(TARGET_DIR)/debug/devstack $(TARGET_DIR)/release/devstack))
# Targets that need root: scripts/as-root.sh says so at once when not root,
# and gives a non-root owner's checkout back its files when they end.
AS_ROOT = bash scripts/as-root.sh

.PHONY: help tools tools-base tools-run tools-kube disk test test-run test-faults test-faults-run fuzz lint up down status demo bench bench-sidecar bench-mtls bench-mtls-instructions bench-backend bench-injector bench-fleet build build-up install deploy teardown lab lab-run

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-24s %s\n", $$1, $$2}'

tools: tools-base ## Install SPIRE, OpenBao, PostgreSQL, Chromium, helm and the CRDs the deploy tests use (pinned; idempotent) into .tools/
	@bash deploy/scripts/schemas.sh

tools-base: ## make tools without helm and the CRDs: SPIRE, OpenBao, PostgreSQL, schemathesis, Chromium
	@bash scripts/tools.sh

tools-run: ## Only what make up and make demo run: SPIRE, OpenBao, PostgreSQL
	@bash scripts/tools.sh run

tools-kube: ## Build etcd, kube-apiserver, kubectl, kubelet, ... (pinned; idempotent) into .tools/bin: the real Kubernetes `make test` uses
	@bash scripts/tools.sh kube

disk: ## Check there is room for the build (fails early with figures instead of a linker error)
	@bash scripts/disk-check.sh "$${CARGO_TARGET_DIR:-target}"

build: disk ## Release build of every binary (what the images ship)
	$(CARGO) build --locked --release $(BINS)

build-up: disk ## What make up and make demo run: dev profile, no Kubernetes parts (PROFILE=release: optimised)
	$(CARGO) build --locked --profile $(CARGO_PROFILE) --no-default-features $(UP_BINS)

lint: ## cargo fmt --check and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) clippy -p devstack --locked --no-default-features -- -D warnings

test: ## As root: install tools if needed, lint, then run every test against the real components
	@$(AS_ROOT) test $(MAKE) --no-print-directory test-run

test-run: tools tools-kube disk lint
	$(CARGO) test --workspace --locked

test-faults: ## The fault suite under load on the real platform (ZT_FAULTS=a,b picks faults; default all, which writes bench/results/faults.md; secrets-dir-full, in all, needs root: it mounts a tmpfs)
	@faults=$${ZT_FAULTS:-all}; case ",$${faults// /}," in \
	  *,all,*|*,secrets-dir-full,*) $(AS_ROOT) test-faults $(MAKE) --no-print-directory test-faults-run ;; \
	  *) $(MAKE) --no-print-directory test-faults-run ;; \
	esac

test-faults-run: tools disk
	$(CARGO) build --locked -p zt-sidecar -p app-backend -p app-frontend -p github-standin
	ZT_FAULTS=$${ZT_FAULTS:-all} $(CARGO) test --locked -p devstack --test faults -- --nocapture

fuzz: ## cargo fuzz every target for FUZZ_SECONDS (default 60) each from fuzz/corpus/ (nightly; installs cargo-fuzz); figures in bench/results/fuzz.md
	@bash scripts/fuzz.sh

up: tools-run $(if $(SKIP_BUILD),,build-up) ## Run the whole platform locally (frontend on http://127.0.0.1:3000); Ctrl-C stops it
	@$(DEVSTACK) up --state $(STATE)

down: ## Stop the platform started with `make up`
	@if [ -n "$(ANY_DEVSTACK)" ]; then $(ANY_DEVSTACK) down --state $(STATE); else echo "nothing to stop (not built)"; fi

LAB_DIR = $${TMPDIR:-/tmp}/zt-lab
demo: $(if $(CLUSTER)$(LAB),,tools-run $(if $(SKIP_BUILD),,build-up)) ## Guided walkthrough of the seed's demo (starts the platform if needed); NO_PAUSE=1 for scripts, CLUSTER=1 on the kind cluster, LAB=1 on the lab cluster (make lab)
	@if [ -n "$(LAB)" ]; then \
	  KUBECONFIG=$(LAB_DIR)/control-plane/kubeconfig ZT_LAB=1 ZT_CONTEXT=devstack FRONTEND_URL=http://10.250.0.2:30080 \
	    PATH="$(CURDIR)/.tools/bin:$$PATH" bash deploy/scripts/demo-cluster.sh; \
	elif [ -n "$(CLUSTER)" ]; then bash deploy/scripts/demo-cluster.sh; \
	else $(DEVSTACK) demo --state $(STATE) $(if $(NO_PAUSE),--no-pause,); fi

status: ## Health of every component of the running platform
	@if [ -n "$(ANY_DEVSTACK)" ]; then $(ANY_DEVSTACK) status --state $(STATE); else echo "not built: make up builds and starts the platform"; exit 1; fi

install: ## Install the platform into the cluster of your current kube context (WAIT=0: do not wait for pods; docs/deploy.md)
	@WAIT=$(or $(WAIT),1) PATH="$$PATH:$(CURDIR)/.tools/bin" bash deploy/scripts/install.sh

deploy: ## kind cluster with Cilium and the images, then make install into it (docs/deploy.md)
	@bash deploy/scripts/deploy.sh $(if $(SKIP_BUILD),--skip-build)

lab: ## As root: a real one-node Kubernetes here with the platform installed (make install, lab profile); Ctrl-C removes it
	@$(AS_ROOT) lab $(MAKE) --no-print-directory lab-run

lab-run: tools tools-kube disk
	$(CARGO) build --locked --workspace --bins
	@$(TARGET_DIR)/debug/devstack lab --install

teardown: ## Delete the kind cluster made by make deploy
	@bash deploy/scripts/teardown.sh

bench: bench-sidecar bench-mtls bench-backend bench-injector bench-fleet ## All benchmarks (results in bench/results/)

bench-sidecar: ## zt-sidecar vs OpenBao Agent: RSS, time to first file, idle CPU
	@bash scripts/bench.sh sidecar

bench-mtls: ## Latency/throughput: direct vs through the two mTLS sidecars (wrk)
	@bash scripts/bench.sh mtls

bench-mtls-instructions: ## The inbound's user-space instructions per request (callgrind), this build vs BASE_REV=<commit> or BASE=<binary>
	@bash scripts/bench.sh mtls-instructions

bench-backend: ## Backend: login p50/p99 (argon2id) and GET /api/auth/me req/s (wrk) on the real stack
	@bash scripts/bench-backend.sh

bench-fleet: ## N = 1..400 zt-sidecars vs bao agents (to 200) on one SPIRE/OpenBao/PostgreSQL, rotation storm, chart (SIZES=1,10 for a quick run; ~20 min; ~4 GiB RAM; root + cgroup v1 for exact workload CPU)
	@bash scripts/bench.sh fleet

bench-injector: tools tools-kube ## zt-injector: pod-create p50/p99 through the real kube-apiserver with and without the webhook, its RSS
	$(CARGO) bench --locked -p zt-injector --bench admission -- --out $(CURDIR)/bench/results/injector.md
