# customer-graph: `make demo` runs everything locally, `make test` runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck bench install clean

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

install: $(STAMP) $(AUDIT_STAMP)

demo: $(STAMP)
	$(BIN)/customer-graph demo $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy gateway connectors schema policies demo bench

test: $(STAMP) $(AUDIT_STAMP) lint typecheck
	$(BIN)/pytest -q

# The benchmark also needs matplotlib (the latency plot): the optional group "bench".
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var
