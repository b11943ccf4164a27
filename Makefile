# Two commands on a fresh clone: `make run` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint demo analyze export rebuild bench-ingest bench-stats bench-soak clean vendor

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	@echo "Starting Flowtel on http://localhost:$${PORT:-4000} (store under ./data). Stop with Ctrl-C."
	@echo "No data yet? Run 'make demo' in another terminal: 90 days of traffic for three demo shops."
	$(BIN)/flowtel serve

# Demo traffic through POST /api/events: to the running server if one answers on $PORT, else in-process.
demo: install
	$(BIN)/flowtel demo

# make analyze SHOP=demo-shoes [DAYS=30] [TIMEZONE=Europe/Berlin] [HTML=report.html]  (server stopped)
analyze: install
	@test -n "$(SHOP)" || { echo "usage: make analyze SHOP=<shop id> [DAYS=30] [TIMEZONE=UTC] [HTML=file]"; exit 2; }
	$(BIN)/flowtel analyze --shop '$(SHOP)' $(if $(DAYS),--days '$(DAYS)') \
		$(if $(TIMEZONE),--timezone '$(TIMEZONE)') $(if $(HTML),--html '$(HTML)')

# make export SHOP=demo-shoes [FORMAT=parquet|ndjson] [OUTPUT=file]  (server stopped)
export: install
	@test -n "$(SHOP)" || { echo "usage: make export SHOP=<shop id> [FORMAT=parquet|ndjson] [OUTPUT=file]"; exit 2; }
	$(BIN)/flowtel export --shop '$(SHOP)' --format '$(or $(FORMAT),parquet)' $(if $(OUTPUT),--output '$(OUTPUT)')

# Recreate the DuckDB mirror from SQLite (server stopped).
rebuild: install
	$(BIN)/flowtel rebuild

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# Benchmarks are not part of `make test`: they print figures, they do not pass or fail.
bench-ingest: install
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench.ingest

# chdb (ClickHouse in-process) is a bench-only dependency, installed here rather than in pyproject.toml.
bench-stats: install
	$(BIN)/pip install --quiet chdb && $(BIN)/python -m bench.stats

# Ten minutes of mixed load (ingestion, stats, listing) on a store whose largest shop holds about 1M events.
bench-soak: install
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info

# The dashboard's one third-party file, pinned: `make vendor` refreshes it from the npm registry (npm checks the
# tarball against the registry's integrity hash) and records version, licence and sha256 in vendor/VENDORED.
UPLOT_VERSION ?= 1.6.32
VENDOR_DIR := static/dashboard/vendor
vendor:
	rm -rf .vendor-tmp && mkdir -p .vendor-tmp $(VENDOR_DIR)
	cd .vendor-tmp && npm pack --silent uplot@$(UPLOT_VERSION) >/dev/null && tar -xzf uplot-$(UPLOT_VERSION).tgz
	cp .vendor-tmp/package/dist/uPlot.esm.js $(VENDOR_DIR)/uPlot.esm.js
	cp .vendor-tmp/package/dist/uPlot.min.css $(VENDOR_DIR)/uPlot.min.css
	cp .vendor-tmp/package/LICENSE $(VENDOR_DIR)/uPlot.LICENSE
	{ echo "uplot $(UPLOT_VERSION) MIT https://www.npmjs.com/package/uplot/v/$(UPLOT_VERSION)"; \
	  cd $(VENDOR_DIR) && sha256sum uPlot.esm.js uPlot.min.css uPlot.LICENSE; } > $(VENDOR_DIR)/VENDORED
	rm -rf .vendor-tmp
