# esox — the commands the README names: run, test, bench, lint.
#
# Every target that needs PostgreSQL asks scripts/dev-db.sh for a URL: it uses
# ESOX_TEST_DATABASE_URL (DATABASE_URL for `run`) when set, else the server on
# 127.0.0.1:5432, else a throwaway cluster it starts in .esox/.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO ?= go
DEV_DB := scripts/dev-db.sh

# Packages to test and lint.
PKGS ?= ./...
TEST_TIMEOUT ?= 8m
TEST_FLAGS ?=

# Pinned so every machine lints with the same checks; fetched through the
# module proxy on first use.
STATICCHECK_VERSION ?= v0.8.2
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# Packages with benchmarks: add a package here when it gets one.
BENCH_PKGS ?= ./eventstore/postgres/... ./projector/... ./forwarder/...
BENCH ?= .
BENCH_TIMEOUT ?= 90m
# The raw `go test -bench` output is also kept here; BENCH_DOC's tables are
# generated from it (scripts/benchtable).
BENCH_OUT ?= .esox/bench.txt
BENCH_DOC ?= docs/benchmarks.md

# The Go files gofmt checks: tracked and untracked-but-not-ignored ones, or
# every file outside dot folders when this is not a git work tree.
GO_FILES := git ls-files --cached --others --exclude-standard -- '*.go' 2>/dev/null || find . -name '*.go' -not -path '*/.*' -not -path '*/testdata/*'

# What `make run` runs: the reference service (examples/quickstart is the
# smaller tour: make run RUN_PKG=./examples/quickstart).
RUN_PKG ?= ./examples/ordering
RUN_ARGS ?=

.PHONY: help run test test-only bench bench-doc lint lint-sh fmt-check vet staticcheck fmt mod db db-status db-stop db-destroy cover clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

run: ## run the example against a prepared database (DATABASE_URL or local)
	@url=$$($(DEV_DB) url run); \
	echo "make run: DATABASE_URL=$$url $(GO) run $(RUN_PKG) $(RUN_ARGS)" >&2; \
	DATABASE_URL="$$url" $(GO) run $(RUN_PKG) $(RUN_ARGS)

test: ## lint, then every test with -race against a prepared database
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory test-only

test-only: ## the tests without lint
	@url=$$($(DEV_DB) url test); \
	echo "make test: ESOX_TEST_DATABASE_URL=$$url" >&2; \
	ESOX_TEST_DATABASE_URL="$$url" $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) $(PKGS)

# The benchmarks (internal/benchkit) pair each esox figure with its raw
# baseline in interleaved rounds: ESOX_BENCH_ROUND (3s) and
# ESOX_BENCH_ROUNDS (6) size them, e.g. ESOX_BENCH_ROUND=200ms
# ESOX_BENCH_ROUNDS=2 for a quick check (with BENCH_DOC=.esox/benchmarks.md so
# the doc keeps its figures). b.N is ignored (-benchtime 1x), and packages run
# one at a time (-p 1) so that no two benchmarks share the machine.
bench: ## interleaved esox/raw benchmarks of BENCH_PKGS (BENCH=regexp), then BENCH_DOC's tables from them
	@url=$$($(DEV_DB) url test); \
	mkdir -p $(dir $(BENCH_OUT)); \
	echo "make bench: ESOX_TEST_DATABASE_URL=$$url, output also in $(BENCH_OUT)" >&2; \
	ESOX_TEST_DATABASE_URL="$$url" $(GO) test -p 1 -run '^$$' -bench '$(BENCH)' -benchtime 1x -count 1 \
		-timeout $(BENCH_TIMEOUT) $(BENCH_PKGS) | tee $(BENCH_OUT); \
	$(GO) run ./scripts/benchtable -in $(BENCH_OUT) -doc $(BENCH_DOC) -db "$$url" -cmd "make bench$(if $(filter-out .,$(BENCH)), BENCH='$(BENCH)')"; \
	echo "make bench: tables written to $(BENCH_DOC)" >&2

bench-doc: ## regenerate BENCH_DOC's tables from the last run's BENCH_OUT, without running
	@url=$$($(DEV_DB) url test); \
	$(GO) run ./scripts/benchtable -in $(BENCH_OUT) -doc $(BENCH_DOC) -db "$$url"

lint: fmt-check vet staticcheck ## gofmt -l, go vet, staticcheck

fmt-check:
	@files=$$($(GO_FILES)); \
	out=$$([[ -z $$files ]] || gofmt -l $$files); \
	if [[ -n $$out ]]; then echo "gofmt: these files need formatting (make fmt):" >&2; echo "$$out" >&2; exit 1; fi

vet:
	$(GO) vet $(PKGS)

staticcheck:
	$(STATICCHECK) $(PKGS)

lint-sh: ## shellcheck the scripts (needs shellcheck: apt-get install shellcheck)
	shellcheck -x -S warning scripts/*.sh .ci/run

fmt: ## gofmt -w every Go file
	@files=$$($(GO_FILES)); [[ -z $$files ]] || gofmt -w $$files

mod: ## download modules (what CI does first)
	$(GO) mod download

cover: ## tests with a coverage profile in coverage.out
	@url=$$($(DEV_DB) url test); \
	ESOX_TEST_DATABASE_URL="$$url" $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -coverprofile=coverage.out -coverpkg=./... $(PKGS); \
	$(GO) tool cover -func=coverage.out | tail -n 1

db: ## print the database URL the tests would use (starting a throwaway cluster if needed)
	@$(DEV_DB) url test

db-status: ## which database would be used
	@$(DEV_DB) status

db-stop: ## stop the throwaway cluster in .esox/ (never the system server)
	@$(DEV_DB) stop

db-destroy: ## stop the throwaway cluster and delete its data
	@$(DEV_DB) destroy

clean: ## remove build and coverage output (keeps .esox/pgdata)
	rm -f coverage.out coverage.html *.test *.prof $(BENCH_OUT)
