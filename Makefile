# TLS Termination Lab: the two commands a newcomer needs are `make demo` and `make test`.
# Each creates .venv on first use and installs the project into it.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Every package `make venv` installs, at one version for the whole semester (`make lock` writes it).
CONSTRAINTS := constraints.txt

# `make compat` tries the newest Python students may have: by default the newest released
# CPython 3 under pyenv (for example /root/.pyenv/versions/3.13.0/bin/python3).
PYENV_ROOT    ?= $(HOME)/.pyenv
PYTHON_COMPAT ?= $(shell ls -d $(PYENV_ROOT)/versions/3.*/bin/python3 2>/dev/null \
                   | grep -E '/versions/3\.[0-9]+\.[0-9]+/' | sort -V | tail -n 1)

# Keep Jupyter, IPython and matplotlib from writing into the home folder.
export IPYTHONDIR      := $(CURDIR)/build/ipython
export JUPYTER_CONFIG_DIR := $(CURDIR)/build/jupyter/config
export JUPYTER_DATA_DIR   := $(CURDIR)/build/jupyter/data
export MPLCONFIGDIR    := $(CURDIR)/build/matplotlib
export MPLBACKEND      := Agg

.PHONY: demo test venv lock compat notebooks lab diagrams check clean help

help:
	@echo "make demo       start three demo origins and the TLS-terminating proxy, send requests, keep serving"
	@echo "make test       run the whole test suite (unit, integration, notebooks)"
	@echo "make notebooks  execute every notebook into build/notebooks"
	@echo "make lab        start Jupyter Lab on notebooks/"
	@echo "make diagrams   regenerate the figures under diagrams/"
	@echo "make check LAB=N  check lab exercise N (LAB=\"N --solution\" checks the reference solution)"
	@echo "make lock       refresh constraints.txt: the newest releases pyproject.toml allows, pinned"
	@echo "make compat     build .venv-3.X with the newest pyenv Python (or PYTHON_COMPAT=...) and run the demo and unit tests"

venv: $(STAMP)

# $(call install_pinned,VENV,PYTHON): make VENV with PYTHON (once), then install the project and
# its [lab,dev] extras at the versions in constraints.txt; --build-constraint also pins the
# setuptools that builds the project. pip comes first: the one a new venv has may not know that flag;
# setuptools too, pinned: tests read pyproject.toml with it (PEP 639 license needs 77 or newer).
define install_pinned
	@test -x $(1)/bin/python || $(2) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade -c $(CONSTRAINTS) pip setuptools
	$(1)/bin/python -m pip install --quiet -c $(CONSTRAINTS) --build-constraint $(CONSTRAINTS) -e '.[lab,dev]'
	@touch $(1)/.installed
endef

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(call install_pinned,$(VENV),$(PYTHON))

# A fresh venv, an unpinned install of pyproject.toml's requirements, pip freeze: one command
# for an instructor freezing the versions for a semester. It runs on $(PYTHON), the oldest
# Python supported (3.11), so that no pin needs a newer one; `make compat` then tries the newest.
lock:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet --upgrade pip setuptools; \
	"$$tmp/venv/bin/python" -m pip install --quiet -e '.[lab,dev]'; \
	{ echo "# Every package \`make venv\` installs, pinned: the [lab,dev] extras of pyproject.toml,"; \
	  echo "# their dependencies, pip, and setuptools (which builds the project; not the project itself)."; \
	  echo "# Written by \`make lock\` (fresh venv, unpinned install, pip freeze): do not edit by hand."; \
	  echo "# To refresh, e.g. before a semester: make lock && make test && make compat, then commit."; \
	  echo "# Locked $$(date -u +%F) on Python $$("$$tmp/venv/bin/python" -c 'import platform; print(platform.python_version())')."; \
	  "$$tmp/venv/bin/python" -m pip freeze --all --exclude-editable; } > $(CONSTRAINTS).new; \
	mv $(CONSTRAINTS).new $(CONSTRAINTS); \
	echo "$(CONSTRAINTS): $$(grep -c '==' $(CONSTRAINTS)) pins; git diff $(CONSTRAINTS) shows what moved"

# The same pins on a second Python, in its own venv: the demo and the unit tests must pass there.
# CI (CI=true) fails when that Python is missing; locally `make compat` skips with the reason.
ifeq ($(wildcard $(PYTHON_COMPAT)),)
compat:
	@msg="no Python to try: PYTHON_COMPAT='$(PYTHON_COMPAT)' and no $(PYENV_ROOT)/versions/3.X.Y/bin/python3"; \
	if [ "$$CI" = true ]; then echo "make compat: $$msg" >&2; exit 1; fi; \
	echo "make compat: skipped, $$msg"
else
COMPAT_VERSION := $(shell $(PYTHON_COMPAT) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
COMPAT_VENV    := .venv-$(COMPAT_VERSION)

compat: $(COMPAT_VENV)/.installed
	$(COMPAT_VENV)/bin/tlsproxy demo --once
	$(COMPAT_VENV)/bin/python -m pytest tests/unit -q $(PYTEST_ARGS)

$(COMPAT_VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(call install_pinned,$(COMPAT_VENV),$(PYTHON_COMPAT))
	@echo '*' > $(COMPAT_VENV)/.gitignore   # git leaves the venv alone (.gitignore names only .venv/)
	@unpinned=$$($(COMPAT_VENV)/bin/python -m pip freeze --exclude-editable | grep -vxF -f $(CONSTRAINTS) || true); \
	if [ -n "$$unpinned" ]; then echo "not in $(CONSTRAINTS) (Python $(COMPAT_VERSION) installed them unpinned):" $$unpinned >&2; \
	rm -f $@; exit 1; fi
endif

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
