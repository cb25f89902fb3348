# Entry points (see README): `make study` runs the study, `make test` runs the checks,
# `make lab` opens the notebooks in JupyterLab, `make site` renders them as a static site.
# All create the virtual environment .venv on first use, with the pinned versions of constraints.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= full
JOBS ?= 1
NBVAL := --nbval-lax --nbval-sanitize-with .nbval-sanitize.cfg
KERNEL_SPEC := $(VENV)/share/jupyter/kernels/python3/.squeezestudy

.PHONY: study test lint smoke bench tune env lab kernel constraints site

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -c constraints.txt -e ".[dev]"
	touch $@

# Checks the data (downloading it if needed), measures this machine's fastest settings once for
# the models about to train (cached; see `make tune`; nothing when every run is done), then runs
# the notebooks of the profile.
study: env
	$(PY) -m squeezestudy.cli data
	$(PY) -m squeezestudy.cli tune --if-untuned --if-training $(PROFILE)
	$(PY) -m squeezestudy.cli batch --profile $(PROFILE) --jobs $(JOBS)

lint: env
	$(PY) -m ruff check .

# Library tests, then every notebook under nbval, smoke-sized (SQUEEZESTUDY_SMOKE=1); each
# lists its 10 slowest steps, to see where CI's minutes go.
test: lint
	$(PY) -m squeezestudy.cli report --check
	$(PY) -m pytest --durations=10
	SQUEEZESTUDY_SMOKE=1 $(PY) -m pytest --durations=10 $(NBVAL) notebooks/

# The venv's own python3 kernel (absolute path to .venv/bin/python), so the notebooks
# run with the squeezestudy package whatever `python` is first on the PATH.
kernel: $(KERNEL_SPEC)

$(KERNEL_SPEC): $(VENV)/.installed
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ipykernel)"
	touch $@

# JupyterLab from the venv, on the repository (extra options: make lab LAB_ARGS="--port 9999");
# as root (a container) it passes --allow-root, which JupyterLab otherwise refuses to start without.
lab: kernel
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# Pin what .venv has now (after installing or upgrading a package in it).
constraints: env
	{ sed -n '1,3p' constraints.txt; $(PY) -m pip freeze --exclude-editable | LC_ALL=C sort -f; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

smoke: env
	$(PY) -m squeezestudy.cli batch --profile smoke --force

bench: env
	$(PY) -m squeezestudy.cli bench

# Measure this machine's fastest settings per model (fit uses them for settings left to auto).
tune: env
	$(PY) -m squeezestudy.cli tune

# The rendered site (docs/environment.md, "The rendered site"): Sphinx with myst-nb and the book
# theme, all pip packages, renders README, the committed notebooks (never re-run) and docs/ into
# _build/html, in the order of site/_toc.yml. Warnings (a broken link, a missing page) fail it.
site: env
	$(VENV)/bin/sphinx-build -q -W --keep-going -b html -c site . _build/html
