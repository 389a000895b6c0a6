# Two set-up commands for a newcomer: `make demo` and `make test`. Everything else is optional.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# An exported HDH_HOME wins; otherwise the platform lives in ./.hdh
export HDH_HOME ?= $(CURDIR)/.hdh

.PHONY: install system-deps viewer-deps identity-deps jupyterhub-deps demo test test-fast docs ui lint format bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

viewer/node_modules/.package-lock.json: viewer/package-lock.json
	npm ci --prefix viewer --no-audit --no-fund

viewer-deps: viewer/node_modules/.package-lock.json  ## the OHIF viewer (@ohif/app's prebuilt dist)

identity/node_modules/.package-lock.json: identity/package-lock.json
	npm ci --prefix identity --no-audit --no-fund

identity-deps: identity/node_modules/.package-lock.json  ## the development OpenID Connect provider (oidc-provider)

jupyterhub/node_modules/.package-lock.json: jupyterhub/package-lock.json
	npm ci --prefix jupyterhub --no-audit --no-fund

jupyterhub-deps: jupyterhub/node_modules/.package-lock.json  ## JupyterHub's proxy (configurable-http-proxy) for the workspace sign-in test

system-deps:  ## Debian packages for the tests and the demo (tools/system-packages.txt)
	@tools/system-deps.sh

demo: install system-deps viewer-deps  ## generate the synthetic sample, materialise every asset, print a summary
	$(BIN)/hdh demo

test: install system-deps viewer-deps identity-deps jupyterhub-deps  ## the whole test suite (Spark, PostgreSQL, browser and R tests included)
	$(BIN)/pytest

test-fast: install viewer-deps identity-deps jupyterhub-deps  ## everything but Spark, the slow subprocess tests, kernels and Orthanc
	$(BIN)/pytest -m "not spark and not slow and not kernels and not orthanc"

docs: install  ## the documentation site in .site/, links checked (--strict)
	$(BIN)/mkdocs build --strict

ui: install system-deps viewer-deps identity-deps  ## the Dagster UI behind sign-in on http://127.0.0.1:3080/dagster/, portal :3001, DICOMweb :3002, viewers :3003+
	$(BIN)/hdh ui

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install  ## benchmarks, each printing throughput against a baseline measured in the same run
	$(BIN)/python benchmarks/claims_generator.py
	$(BIN)/python benchmarks/lake_io.py
	$(BIN)/python benchmarks/dicom_ingest.py
	$(BIN)/python benchmarks/fhir_ingest.py --big-gb 2
	$(BIN)/python benchmarks/model_load.py
	$(BIN)/python benchmarks/engines.py
	$(BIN)/python benchmarks/erasure.py
	$(BIN)/python benchmarks/workspaces_render.py
	$(BIN)/python benchmarks/dicomweb.py
	$(BIN)/python benchmarks/packages.py

clean:  ## remove the platform's data (HDH_HOME), keep the virtual environment
	rm -rf "$(HDH_HOME)"
