# customer-graph: `make demo` runs everything locally, `make test` runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck bench install clean browser wrk

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The graphql-http audit's npm packages (tests/test_graphql_http_audit.py); without npm it is skipped.
AUDIT       := tests/http_audit
AUDIT_STAMP := $(AUDIT)/node_modules/.package-lock.json

$(AUDIT_STAMP): $(AUDIT)/package.json $(AUDIT)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix $(AUDIT) --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the graphql-http audit will be skipped"; fi

# The real clients' npm packages (Apollo Client, graphql-ws: tests/e2e/test_real_clients.py).
CLIENTS       := tests/clients
CLIENTS_STAMP := $(CLIENTS)/node_modules/.package-lock.json

$(CLIENTS_STAMP): $(CLIENTS)/package.json $(CLIENTS)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix $(CLIENTS) --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the Apollo Client tests will be skipped"; fi

# Debian's Chromium for the GraphiQL browser test (tests/e2e/test_graphiql_browser.py); playwright
# drives it (it never downloads a browser). Installed when missing and this user may use apt-get.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x "$(CHROMIUM)" ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium for the GraphiQL browser test"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "could not install chromium: the browser test will be skipped"; \
	fi

install: $(STAMP) $(AUDIT_STAMP) $(CLIENTS_STAMP)

demo: $(STAMP)
	$(BIN)/customer-graph demo $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy gateway connectors schema policies features demo bench

test: $(STAMP) $(AUDIT_STAMP) $(CLIENTS_STAMP) browser lint typecheck
	$(BIN)/pytest -q

# The benchmark also needs matplotlib (the latency plot) and py-spy (profiles under load): the optional
# group "bench". S3's load against the gateway comes from Debian's wrk (bench/wrk.py), installed here
# when missing and this user may use apt-get; without it S3 falls back to the Python load generator
# and the report says so. Never a test requirement.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

wrk:
	@if ! command -v wrk >/dev/null 2>&1; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian's wrk for the benchmark's S3 load"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null) \
				|| echo "could not install wrk: S3 will use the Python load generator"; \
		else echo "wrk not found (apt-get install wrk): S3 will use the Python load generator"; fi; \
	fi

bench: $(BENCH_STAMP) wrk
	$(BIN)/python -m bench $(ARGS)
	$(BIN)/python -m bench.identity  # a full identity scan of 100,000 accounts: time and peak memory

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var
