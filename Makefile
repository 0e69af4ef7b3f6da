# TLS Termination Lab: the two commands a newcomer needs are `make demo` and `make test`.
# Each creates .venv on first use and installs the project into it.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Keep Jupyter, IPython and matplotlib from writing into the home folder.
export IPYTHONDIR      := $(CURDIR)/build/ipython
export JUPYTER_CONFIG_DIR := $(CURDIR)/build/jupyter/config
export JUPYTER_DATA_DIR   := $(CURDIR)/build/jupyter/data
export MPLCONFIGDIR    := $(CURDIR)/build/matplotlib
export MPLBACKEND      := Agg

.PHONY: demo test venv notebooks lab diagrams check clean help

help:
	@echo "make demo       start three demo origins and the TLS-terminating proxy, send requests, keep serving"
	@echo "make test       run the whole test suite (unit, integration, notebooks)"
	@echo "make notebooks  execute every notebook into build/notebooks"
	@echo "make lab        start Jupyter Lab on notebooks/"
	@echo "make diagrams   regenerate the figures under diagrams/"
	@echo "make check LAB=N  check lab exercise N (LAB=\"N --solution\" checks the reference solution)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[lab,dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tlsproxy demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

notebooks: $(STAMP)
	$(PY) -m course.notebooks_run notebooks build/notebooks

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

diagrams: $(STAMP)
	$(PY) -m course.diagrams diagrams

check: $(STAMP)
	$(PY) -m lab.check $(LAB)

clean:
	rm -rf build .pytest_cache .hypothesis
