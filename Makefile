# Two entry points for a fresh clone: `make demo` (the main job) and `make test` (the suite).
# Each creates .venv and installs requirements.txt plus this repository (editable) when missing.
# The suite runs on two pytest-xdist workers (one per core of the project's machine).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m pipelines.demo $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -n 2 $(ARGS)

clean:
	rm -rf $(VENV) demo_out .pytest_cache
