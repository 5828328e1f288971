# The two commands a new user needs: `make dev` (run the platform) and `make test` (what CI runs).
# Everything is installed from the committed lock into .venv by a pinned uv kept in .tools/.
UV_VERSION := 0.13.9
PYTHON ?= python3
UV := .tools/bin/uv
VENV := .venv/.synced
export UV_COMPILE_BYTECODE := 1
export UV_PYTHON := $(PYTHON)

# The browser test drives Debian's Chromium (Playwright's own browser download cannot be fetched here).
CHROMIUM := /usr/bin/chromium
APT := $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get -q

.PHONY: dev test lint typecheck pytest faults chromium bench bench-oos bench-sim bench-scale clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV): uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen
	touch $(VENV)

RAY_WORKERS ?= 0

dev: $(VENV)  ## set up and run Ray, MLflow UI and Dagster (code server, daemon, guarded UI) on 127.0.0.1; RAY_WORKERS=N adds N local Ray worker nodes
	.venv/bin/python -m devtools.stack --ray-workers $(RAY_WORKERS)

test: $(VENV) lint typecheck pytest  ## set up, lint, type-check and run every test

lint: $(VENV)  ## ruff, and the import layers (pyproject.toml [tool.importlinter])
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports

typecheck: $(VENV)
	.venv/bin/basedpyright

pytest: $(VENV) $(CHROMIUM)
	.venv/bin/python -m pytest

chromium: $(CHROMIUM)  ## install Debian's Chromium for tests/browser (only when missing)

# A file target: runs only when /usr/bin/chromium is missing. Try the current package lists first and
# refresh them only if that fails (a clean machine may have none, or stale ones whose files are gone).
$(CHROMIUM):
	$(APT) install -y chromium chromium-driver || { $(APT) update && $(APT) install -y chromium chromium-driver; }
	test -x $(CHROMIUM)

# Also part of `make test`; alone it prints the table (scenario, injected, lost, ungated, duplicates, result) and writes it.
faults: $(VENV)  ## the fault suite (pytest -m faults): its table into benchmarks/results/faults.json
	FAULTS_REPORT=benchmarks/results/faults.json .venv/bin/python -m pytest -q -m faults

bench: $(VENV)  ## measured figures into benchmarks/results/ (sections a, b, c at 200 stations, d, e, f, h, i, j; about an hour)
	.venv/bin/python benchmarks/run.py

# A year of daily model partitions per shipped pipeline: hours on 2 cores, so not part of `make bench`.
bench-oos: $(VENV)  ## out-of-sample backtest of every shipped pipeline into benchmarks/results/latest.json
	.venv/bin/python benchmarks/run.py --only oos

# The instance at 10, 30 and 100 pipelines x 1,826 days on the local PostgreSQL (~11 GB of scratch database, dropped
# at the end; ~12 min on 2 idle cores), so not part of `make bench` either.
bench-sim: $(VENV)  ## (g) the Dagster instance at scale on PostgreSQL into benchmarks/results/latest.json
	.venv/bin/python benchmarks/simulation.py

# (c) at the issue's size: 400 generated stations (7M rows) through every stage on 1 and then 2 local Ray worker
# nodes, and the features driver's RSS over 30/60/120 days: about 9 minutes on 2 cores (`make bench` runs 200).
bench-scale: $(VENV)  ## (c) N stations on 1 vs 2 Ray worker nodes into benchmarks/results/latest.json
	.venv/bin/python benchmarks/run.py --only c --c-stations 400

clean:  ## forget local state (assets, MLflow runs, Dagster history, rebase pin)
	rm -rf .platform
