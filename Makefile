# kubexit: `make demo` shows the main job, `make test` checks everything.
# Both set themselves up on a machine with only python3 and make.

PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
PYZ := dist/kubexit.pyz
SOURCES := build_zipapp.py $(wildcard kubexit/*.py)

.PHONY: all build demo test lint bench e2e clean

all: build

build: $(PYZ)

# Bytecode for every other CPython 3.8+ found here, so that none compiles kubexit at each
# start; `make build BYTECODE_FOR=` builds with this interpreter's bytecode alone.
BYTECODE_FOR ?= $(wildcard $(HOME)/.pyenv/versions/3.[89].*/bin/python3 \
                           $(HOME)/.pyenv/versions/3.1[0-9].*/bin/python3 \
                           /usr/bin/python3.[89] /usr/bin/python3.1[0-9])

$(PYZ): $(SOURCES)
	$(PYTHON) build_zipapp.py $(if $(strip $(BYTECODE_FOR)),--bytecode-for $(BYTECODE_FOR))

$(VENV)/.installed: tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

demo: build
	$(PYTHON) examples/demo.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/vermin --no-tips --violations --target=3.8- --eval-annotations kubexit build_zipapp.py

test: build lint
	$(VENV_PY) -m pytest -q tests

bench: build
	$(PYTHON) tests/bench/run.py

e2e: build
	bash tests/e2e/run.sh

clean:
	rm -rf dist $(VENV) .pytest_cache
