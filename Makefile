# OpenMSS: `make run` installs and starts everything with demo data; `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install test-deps lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/openmss demo
	$(BIN)/openmss serve

# Debian packages the tests drive (swaks...), installed when missing and when we are root.
test-deps: install
	@bash scripts/install-test-tools.sh

test: test-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2

lint: install
	$(BIN)/ruff check openmss mailserver directory dossier_bridge webmail tests bench
	$(BIN)/mypy openmss mailserver directory dossier_bridge webmail

bench: install
	$(BIN)/python bench/smtp.py

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
