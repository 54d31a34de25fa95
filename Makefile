# The two commands of the README. Each sets up a virtual environment on first use
# (and again whenever pyproject.toml changes), then runs.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: demo test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/wsmon --demo

test: $(VENV)/.installed
	$(PY) -m pytest -n 2 --dist loadgroup -q
