# The two commands of the README:
#   make up     start Verity with embedded defaults (installs into .venv first)
#   make test   run the test suite (installs dev deps and, as root, Debian's chromium first)
PYTHON ?= python3
VENV   ?= .venv
PIP     = $(VENV)/bin/pip
STAMP   = $(VENV)/.installed-dev

.PHONY: up test install bench load lint

$(STAMP): pyproject.toml
	@echo "Installing Verity into $(VENV) (the first time takes a minute or two: onnxruntime, OpenCV, PyAV...)"
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(PIP) install --quiet --upgrade pip
	@$(PIP) install --quiet -e '.[dev]'
	@touch $(STAMP)
	@echo "Installed: $(VENV)/bin/verity"

install: $(STAMP)

up: $(STAMP)
	$(VENV)/bin/verity up $(ARGS)

test: $(STAMP)
	scripts/ensure-chromium
	$(VENV)/bin/python -m pytest $(ARGS)

bench: $(STAMP)
	$(VENV)/bin/python bench/detector.py
	$(VENV)/bin/python bench/service.py
	$(VENV)/bin/python bench/bookkeeping.py

load: $(STAMP)
	$(VENV)/bin/python bench/load.py $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check app cli core detector workers tests bench training scripts
