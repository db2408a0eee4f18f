# Thin front door: every target is one line calling the project's CLI. Variables given to make
# (TASK=classify LEARNING_RATE=3e-5 ...) reach the CLI as environment variables.
VENV   ?= .venv
PY     := $(VENV)/bin/python
READY  := $(VENV)/.ready

.DEFAULT_GOAL := help
.PHONY: help venv train bench tune settings ui test lint

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(READY): requirements.txt pyproject.toml
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -q --upgrade pip && $(VENV)/bin/pip install -q -r requirements.txt -e . && touch $@

venv: $(READY) ## create the Python environment (done automatically by the targets that need it)

train: $(READY) ## fine-tune TASK=classify|fakenews|summarize (PROFILE= MODEL= DATA= RESUME=1 ...)
	$(PY) -m training train $(ARGS)

bench: $(READY) ## DDP vs FSDP x workers x batch (BENCH_STRATEGIES= BENCH_WORKERS= BENCH_BATCH= BENCH_STEPS=)
	$(PY) -m training bench $(ARGS)

tune: $(READY) ## hyperparameter search with Ray Tune + ASHA for TASK= (SPACE=file TUNE_SAMPLES=N RESUME=1)
	$(PY) -m training tune $(ARGS)

settings: $(READY) ## list every training setting, its make variable and default
	$(PY) -m training settings

ui: $(READY) ## MLflow UI for runs tracked without a stack (http://127.0.0.1:5000)
	$(PY) -m training ui

test: $(READY) ## run the test suite
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(READY) ## ruff over the Python code
	$(VENV)/bin/ruff check training tests
