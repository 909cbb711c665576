# Developer commands for django-sesame-db.
#
#   make demo    run the demo site on embedded SQLite and print a magic link
#   make test    run the test suite, the linters, the docs build, the package check and the benchmark
#
# Both create .venv and install what they need on first use. Helpers: bench, load, docs, lint, clean.
# `make bench` compares with django-sesame on SQLite and durable PostgreSQL (docs/performance.rst).

.PHONY: demo test bench load docs lint clean

VENV := .venv
VENV_PYTHON := $(VENV)/bin/python

# Tox environments that `make test` runs; override with `make test TOXENV=py313-django61-sqlite`.
TOXENV ?= py310-django52-sqlite,py311-django52-sqlite,py311-django52-postgresql,py312-django61-sqlite,py312-django61-postgresql,py313-django60-postgresql,ruff,mypy,docs,package,bench
# More arguments for tox, e.g. `make test TOXENV=py311-django52-sqlite TOX_ARGS="-- -k scope"`.
TOX_ARGS ?=

# Python used to create .venv; empty means the first of python3.11 and python3 that is 3.11 or later.
PYTHON ?=

# pyenv shims for python3.10, python3.12... fail unless PYENV_VERSION selects those versions.
# Put the current version first, so python3 stays what it was, then every other CPython 3.10+.
ifneq ($(shell command -v pyenv 2>/dev/null),)
PYENV_VERSION := $(shell { pyenv version-name 2>/dev/null | tr ':' '\n'; \
	pyenv versions --bare 2>/dev/null | grep -E '^3\.1[0-9]+\.[0-9]+$$'; } \
	| awk 'NF && !seen[$$0]++' | paste -sd: -)
export PYENV_VERSION
endif

# Outside CI, tox skips environments whose Python isn't installed; in CI that's an error.
ifneq ($(filter-out 0 false,$(CI)),)
TOX_FLAGS := --skip-missing-interpreters=false
endif

# Arguments for rundemo, e.g. `make demo DEMO_ARGS=--no-serve` to print the links and stop.
DEMO_ARGS ?=

# Arguments for the benchmark (docs/performance.rst), e.g. `make bench BENCH_ARGS="--quick --rst"`.
BENCH_ARGS ?=

# Arguments for the load test, e.g. `make load LOAD_ARGS=--quick` or `LOAD_ARGS="--server both"`.
LOAD_ARGS ?=

demo: $(VENV)/.demo-installed
	$(VENV_PYTHON) demo/manage.py rundemo $(DEMO_ARGS)

test: $(VENV)/bin/tox
	$(VENV)/bin/tox run -e $(TOXENV) $(TOX_FLAGS) $(TOX_ARGS)

# The benchmark against django-sesame (docs/performance.rst); PostgreSQL needs Debian's postgresql package.
bench: $(VENV)/.bench-installed
	$(VENV_PYTHON) -m benchmarks.bench $(BENCH_ARGS)

# The load and soak test of the database store (docs/load.rst); needs Debian's postgresql package.
load: $(VENV)/.load-installed
	$(VENV_PYTHON) -m benchmarks.load $(LOAD_ARGS)

docs: $(VENV)/bin/tox
	$(VENV)/bin/tox run -e docs

lint: $(VENV)/bin/tox
	$(VENV)/bin/tox run -e ruff,mypy

clean:
	rm -rf .tox docs/_build build dist *.egg-info .mypy_cache .ruff_cache .hypothesis .coverage .coverage.* htmlcov

$(VENV_PYTHON):
	@python="$(PYTHON)"; \
	if [ -z "$$python" ]; then \
		for candidate in python3.11 python3; do \
			if "$$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
				python=$$candidate; break; \
			fi; \
		done; \
	fi; \
	if [ -z "$$python" ]; then \
		echo "Python 3.11 or later not found: install python3.11 or run make PYTHON=/path/to/python3" >&2; \
		exit 1; \
	fi; \
	echo "Creating $(VENV) with $$("$$python" -c 'import sys; print(sys.executable)')"; \
	"$$python" -m venv $(VENV) || { \
		echo "Cannot create $(VENV): on Debian, apt-get install python3-venv" >&2; \
		rm -rf $(VENV); exit 1; \
	}

$(VENV)/bin/tox: | $(VENV_PYTHON)
	$(VENV_PYTHON) -m pip install --quiet "tox>=4.2"

$(VENV)/.demo-installed: pyproject.toml | $(VENV_PYTHON)
	$(VENV_PYTHON) -m pip install --quiet --editable .
	@touch $@

$(VENV)/.bench-installed: pyproject.toml | $(VENV_PYTHON)
	$(VENV_PYTHON) -m pip install --quiet Django django-model-utils "django-sesame==3.2.5" "psycopg[binary]"
	@touch $@

$(VENV)/.load-installed: pyproject.toml | $(VENV_PYTHON)
	$(VENV_PYTHON) -m pip install --quiet --editable . gunicorn uvicorn "psycopg[binary,pool]" redis
	@touch $@
