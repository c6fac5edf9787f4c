# uprnlink: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_HOME ?= $(CURDIR)/.prefect
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_LOGGING_LEVEL ?= WARNING

DEMO_PEOPLE ?= 20000
DEMO_SEED ?= 42

.PHONY: help setup browser screenshots demo demo2 guide guide-check service test test-fast lint format typecheck check bench dist dist-native serve stop clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[1m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt setup.py src/uprnlink/privacy/_hmac.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	UPRNLINK_BUILD_HMAC=1 $(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP) ## Create or refresh the project's virtual environment (.venv/)

GUIDE_FIGURES := $(BIN)/python docs/img/make_charts.py --config demo/demo.toml

demo: $(STAMP) ## Synthesise ~20k people, run the pipeline, publish demo/out/, print a summary and check the analyst guide's figures
	$(BIN)/uprnlink demo --people $(DEMO_PEOPLE) --seed $(DEMO_SEED)
	@echo
	@$(GUIDE_FIGURES) --check || true

guide: $(STAMP) ## Rewrite the analyst guide's answer tables and charts (docs/img/) from the demo's live release
	@test -e demo/out/uprnlink.duckdb || $(MAKE) demo
	$(GUIDE_FIGURES)

guide-check: $(STAMP) ## Check that the analyst guide's figures are the demo's (make demo ends with this)
	@test -e demo/out/uprnlink.duckdb || { echo "guide-check: no demo: run make demo"; exit 2; }
	@$(GUIDE_FIGURES) --check

demo2: $(STAMP) ## The same on a second, independent population in other systems' layouts (testpop/)
	$(BIN)/uprnlink demo --population testpop --people $(DEMO_PEOPLE) --seed $(DEMO_SEED)

CHROMIUM ?= /usr/bin/chromium

browser: ## Install Debian's Chromium for the portal's browser tests (apt, as root) if it is missing
	@if [ -x "$(CHROMIUM)" ]; then echo "browser: $(CHROMIUM) is there"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "browser: installing Debian's chromium (apt-get) for tests/test_portal.py"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	    || echo "browser: apt-get could not install chromium: the browser test will skip"; \
	else echo "browser: no $(CHROMIUM) and no apt-get as root: the browser test will skip"; fi

test: $(STAMP) browser ## Run the whole test suite, as CI does: about 5.5 min on 2 cores, on both (plus about a minute creating .venv on a fresh clone; installs the test browser first: make browser)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

screenshots: $(STAMP) browser ## Refresh the portal's screenshots in docs/img/ (the browser test, writing there)
	UPRNLINK_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/test_portal.py -k headless_browser

test-fast: $(STAMP) ## The developer loop, about a minute: every test that needs no synthetic population or pipeline run (no wheel, Spark or browser), on both cores
	$(BIN)/python -m pytest -q -n 2 -m "not slow and not wheel and not spark and not browser"

lint: $(STAMP) ## Lint with ruff and check the import rules (import-linter contracts in pyproject.toml)
	$(BIN)/ruff check src tests benchmarks pipelines
	$(BIN)/ruff format --check src tests benchmarks pipelines
	$(BIN)/lint-imports

format: $(STAMP) ## Format with ruff
	$(BIN)/ruff check --fix src tests benchmarks pipelines
	$(BIN)/ruff format src tests benchmarks pipelines

typecheck: $(STAMP) ## Type-check src/ with mypy
	$(BIN)/mypy

check: lint typecheck test ## Lint, type-check and test

dist: $(STAMP) ## Build the sdist and the pure-Python wheel (py3-none-any, any supported Python) into dist/
	$(BIN)/python -m build --outdir dist .

dist-native: $(STAMP) ## Build a wheel with the C extension (cp311-abi3: CPython 3.11+, this platform) into dist/
	UPRNLINK_BUILD_HMAC=1 $(BIN)/python -m build --wheel --outdir dist .

SERVICE_PORT ?= 8765
DEMO_PASSPHRASE := uprnlink-demo-passphrase-not-for-real-data

# The demo's audit passphrase reaches the commands through their environment only (exported
# for this target), so no command line that make prints holds it (make -n service neither).
service: export UPRNLINK_AUDIT_PASSPHRASE = $(DEMO_PASSPHRASE)
service: $(STAMP) ## Run the query service on the demo's live release; prints an analyst's token
	@test -e demo/out/uprnlink.duckdb || $(MAKE) demo
	@test -e demo/work/audit/seal.state || { rm -f demo/ig-lead/audit-seal.seed; \
	  $(BIN)/uprnlink audit seal init --config demo/demo.toml --seed-file demo/ig-lead/audit-seal.seed; }
	@echo "Issuing a token for the demo analyst 'demo-analyst' (shown once):"
	@$(BIN)/uprnlink users rotate demo-analyst --config demo/demo.toml 2>/dev/null \
	  || $(BIN)/uprnlink users add demo-analyst --role analyst --config demo/demo.toml
	@echo "In another terminal: export UPRNLINK_TOKEN=<the token above>"
	@echo "                     export UPRNLINK_URL=http://127.0.0.1:$(SERVICE_PORT)"
	@echo "                     .venv/bin/uprnlink query --named overcrowding_by_deprivation"
	@echo "Serving on port $(SERVICE_PORT) (the audit passphrase is in its environment, never printed)"
	@$(BIN)/uprnlink serve --config demo/demo.toml --port $(SERVICE_PORT)

SERVE_PORT ?= 4200

serve: $(STAMP) ## Start a local Prefect server + worker and register the scheduled deployments
	@test -f demo/work/keys/uprnlink.key || $(BIN)/uprnlink demo --people $(DEMO_PEOPLE) --seed $(DEMO_SEED)
	$(BIN)/python -m uprnlink.flows.serve start --port $(SERVE_PORT)

stop: ## Stop the Prefect server and worker that `make serve` started
	@$(BIN)/python -m uprnlink.flows.serve stop

QUERY_BENCH_ARGS ?= --people 1000000

bench: $(STAMP) ## Run the benchmarks: pipeline at 100k/1M records, then named questions at 1M people (direct and through the query service, 20 analysts at once)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.queries $(QUERY_BENCH_ARGS) || echo "benchmarks.queries: a p95 target was missed (see the table above)"

clean: ## Remove generated data and caches (keeps .venv/)
	rm -rf demo testpop bench-out .prefect .pytest_cache .mypy_cache .ruff_cache .hypothesis dist build
