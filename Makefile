# agentwatch: `make run` starts the service on the embedded store; `make test` runs the suite.
# Both bootstrap .venv from nothing on a fresh machine (Python 3.11+).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench venv clean chromium

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing agentwatch[dev] into $(VENV) (first run: about a minute)"
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/agentwatch up --demo

# the dashboard's browser test needs Debian's chromium; installed when missing (root, as on CI)
chromium:
	@command -v chromium >/dev/null 2>&1 || { echo "installing chromium (Debian package) for the dashboard test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  { echo "could not install chromium: run 'apt-get install chromium' as root"; exit 1; }; }

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) lint chromium
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python bench/pricing.py
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .agentwatch build *.egg-info
