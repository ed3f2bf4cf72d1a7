# Two entry points (see README): `make demo` and `make test`.
# Both create .venv on first use; torch is pinned so that machines with the local
# CPU wheel use it instead of downloading the CUDA build.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: setup demo test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/membraind demo

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo-output
