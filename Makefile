# Tapline. `make help` lists the targets.
SHELL := /usr/bin/env bash
GO    ?= go

.PHONY: help run test test-short verify generate build vet fmt bench bench-inspector bench-tracker bench-audit migrate clean chaos chaos-short

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

run: ## Start the whole local stack (Redis, PostgreSQL, api, worker) with data under .data/.
	@deploy/local/run.sh

test: validate-manifests ## Run every test against throw-away Redis, Redis Cluster and PostgreSQL on loopback.
	@deploy/local/test-services.sh bash -c '$(GO) test -race -count=1 -timeout 20m ./... && GO=$(GO) bench/smoke.sh'

validate-manifests: ## Check the Dockerfile, Compose file and Kubernetes manifests offline.
	@GO=$(GO) deploy/validate.sh

verify: ## Fail when generated code is stale, code is unformatted or go vet complains.
	@$(MAKE) --no-print-directory generate
	@git diff --exit-code -- internal/httpapi/apigen || { echo "generated code is stale: run make generate and commit"; exit 1; }
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt would change these files"; exit 1; }
	@$(GO) vet ./...
	@cd deploy/validate && $(GO) vet ./...

generate: ## Regenerate the server glue from openapi.yaml.
	@$(GO) generate ./internal/httpapi/apigen

build: ## Build bin/api and bin/worker.
	@$(GO) build -o bin/api ./cmd/api && $(GO) build -o bin/worker ./cmd/worker

chaos: ## Kill, pause and restart workers, apis, Redis and PostgreSQL under traffic; prints takeover_ms_p50=… last.
	@bash -c '. deploy/local/lib.sh && tl_ensure_services'
	@$(GO) run ./cmd/chaos $(CHAOS_FLAGS)

chaos-short: ## The CI form of make chaos (also run by make test as TestChaosShort).
	@bash -c '. deploy/local/lib.sh && tl_ensure_services'
	@$(GO) run ./cmd/chaos -short $(CHAOS_FLAGS)

bench-tracker: ## Tracker benchmarks; prints claim_ratio and heartbeat_10k_ms last.
	@bench/tracker.sh

bench-inspector: ## Tool-call overhead and event persistence (~1.5 min); prints call_overhead_ms_p50/p99 and events_per_s last.
	@bench/inspector.sh

bench: ## Every benchmark with same-run baselines, scale included (several minutes); writes bench/REPORT.md, prints the headline last.
	@bench/run.sh

bench-audit: ## Export and verify 1,000,000 audit events (TAPLINE_BENCH_AUDIT_ROWS); prints rows/s and peak heap.
	@deploy/local/test-services.sh $(GO) test -count=1 -run '^$$' -bench BenchmarkExport -benchtime=1x -timeout 30m ./internal/audit/

migrate: ## Apply migrations to the database in .data/tapline.env.
	@set -a; . .data/tapline.env; set +a; $(GO) run ./cmd/api migrate

clean: ## Remove build output (keeps .data/).
	@rm -rf bin
