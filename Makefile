# The two set-up commands (README): `make demo` and `make test`. Each installs what it needs
# into .venv on first run (and ffmpeg through apt when it is missing and we are root).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pytest: a time budget per test (a hang fails the test, not the CI run); GPU-only tests
# (requires_cuda) run on a GPU host with `make test PYTEST_ARGS=-q`
PYTEST_ARGS ?= -q --timeout=900 -m "not requires_cuda"

.PHONY: demo test serve deps system-deps clean-demo lint

# What gets installed is said once, in scripts/install.sh (also run by .ci/run and the Dockerfile).
$(STAMP): requirements.txt requirements-dev.txt scripts/install.sh
	@$(MAKE) --no-print-directory system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	bash scripts/install.sh python --python $(PY) --dev
	@touch $(STAMP)

deps: $(STAMP)

system-deps:
	@bash scripts/install.sh system

demo: $(STAMP)
	$(PY) -m serve_app.demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

serve: $(STAMP)
	@echo "PersonaForge on http://127.0.0.1:8000 (API docs at /docs, Ray dashboard at http://127.0.0.1:8265)"
	RAY_AUTH_MODE=disabled $(VENV)/bin/serve run serve_config.local.yaml

# The Dockerfile's lint (tests/deploy runs it too, so `make test` covers it).
lint: $(STAMP)
	$(VENV)/bin/hadolint Dockerfile

clean-demo:
	rm -rf var/demo
