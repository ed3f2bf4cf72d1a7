# Two entry points (see README): `make demo` and `make test`.
# Each first installs the Debian/Ubuntu packages it needs (scripts/ensure-system-packages:
# apt-get as root or with password-less sudo; else one line says what to install), then
# creates .venv on first use. torch is pinned so that machines with the local CPU wheel
# use it instead of downloading the CUDA build.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
TORCH  ?= torch==2.13.0
ENSURE  = PYTHON=$(PYTHON) scripts/ensure-system-packages

# System packages beyond Python: the tests start a real redis-server and drive the
# console in a real browser (Debian's chromium with its chromedriver).
DEMO_PACKAGES = python3-venv
TEST_PACKAGES = python3-venv redis-server chromium chromium-driver

.PHONY: setup demo test clean

$(VENV)/.installed: pyproject.toml
	@$(ENSURE) --for "creating $(VENV)" python3-venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

demo:
	@$(ENSURE) --for "make demo" $(DEMO_PACKAGES)
	@$(MAKE) --no-print-directory setup
	$(BIN)/membraind demo

test:
	@$(ENSURE) --for "make test" $(TEST_PACKAGES)
	@$(MAKE) --no-print-directory setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo-output
