# Two entry points (see README): `make study` runs the study, `make test` runs the checks.
# Both create the virtual environment .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= full
JOBS ?= 1
NBVAL := --nbval-lax --nbval-sanitize-with .nbval-sanitize.cfg

.PHONY: study test lint smoke bench env

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e ".[dev]"
	touch $@

# Checks the data (downloading it if needed), then runs the notebooks of the profile.
study: env
	$(PY) -m squeezestudy.cli data
	$(PY) -m squeezestudy.cli batch --profile $(PROFILE) --jobs $(JOBS)

lint: env
	$(PY) -m ruff check .

# Library tests, then every notebook under nbval, smoke-sized (SQUEEZESTUDY_SMOKE=1).
test: lint
	$(PY) -m squeezestudy.cli report --check
	$(PY) -m pytest
	SQUEEZESTUDY_SMOKE=1 $(PY) -m pytest $(NBVAL) notebooks/

smoke: env
	$(PY) -m squeezestudy.cli batch --profile smoke --force

bench: env
	$(PY) -m squeezestudy.cli bench
