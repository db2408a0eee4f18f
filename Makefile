# Thin front door: every target is one line calling the project's CLI. Variables given to make
# (TASK=classify LEARNING_RATE=3e-5 ...) reach the CLI as environment variables.
# Two Python environments from one set of pins (requirements.txt, as constraints) and
# pyproject.toml's extras: .venv, the controller (the stack commands and job submission: no
# training stack), and .venv-train, the controller plus the training stack and the test tools
# (embedded runs and `make test`). An embedded `make train` re-runs itself in .venv-train,
# building it on first use.
PIP_VERSION := 26.3
VENV   ?= .venv
PY     := $(VENV)/bin/python
READY  := $(VENV)/.ready
TRAIN_VENV  ?= .venv-train
TRAIN_PY    := $(TRAIN_VENV)/bin/python
TRAIN_READY := $(TRAIN_VENV)/.ready
export TRAIN_VENV
# Ansible lives in an environment of its own (ansible-core and the collections the roles use;
# molecule and ansible-lint join it for the tests), apart from the services' own venvs, which
# the roles install on the hosts.
ANSIBLE_VENV  ?= .venv-ansible
ANSIBLE_READY := $(ANSIBLE_VENV)/.ready
ANSIBLE_TEST_READY := $(ANSIBLE_VENV)/.test-ready

.DEFAULT_GOAL := help
.PHONY: help venv train-venv ansible-venv up status down backup restore extend tunnel logs cancel train bench study tune settings ui test test-stack lint

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(READY): requirements.txt pyproject.toml
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -q pip==$(PIP_VERSION) && $(VENV)/bin/pip install -q -c requirements.txt -e '.[controller]' && touch $@

$(TRAIN_READY): requirements.txt pyproject.toml
	python3 -m venv $(TRAIN_VENV) && $(TRAIN_VENV)/bin/pip install -q pip==$(PIP_VERSION) && $(TRAIN_VENV)/bin/pip install -q -c requirements.txt -e '.[controller,train,test]' && touch $@

venv: $(READY) ## create the controller's Python environment (automatic for the targets that need it)

train-venv: $(TRAIN_READY) ## create the training and test environment (automatic for embedded runs and make test)

$(ANSIBLE_READY): ansible/requirements.txt ansible/collections.txt
	python3 -m venv $(ANSIBLE_VENV) && $(ANSIBLE_VENV)/bin/pip install -q pip==$(PIP_VERSION) && $(ANSIBLE_VENV)/bin/pip install -q -r ansible/requirements.txt && $(ANSIBLE_VENV)/bin/python tools/ansible_collections.py ansible/collections.txt && touch $@

# molecule and ansible-lint, for the tests and lint only.
$(ANSIBLE_TEST_READY): $(ANSIBLE_READY) ansible/requirements-test.txt
	$(ANSIBLE_VENV)/bin/pip install -q -r ansible/requirements-test.txt && touch $@

ansible-venv: $(ANSIBLE_READY) ## create the Ansible environment (automatic too; make test adds molecule and ansible-lint)

up: $(READY) $(ANSIBLE_READY) ## configure the stack (CLOUD=local|sim|chameleon): PostgreSQL, SeaweedFS, MLflow, Ray; re-run to repair
	$(PY) -m stack up

status: $(READY) ## what is up, the health of each service, URLs and logins
	$(PY) -m stack status

down: $(READY) $(ANSIBLE_READY) ## stop the stack, keep its data (PURGE=1: back up, then delete the data)
	$(PY) -m stack down

backup: $(READY) $(ANSIBLE_READY) ## back the databases, artifacts, buckets and run records up into .stack/backups/ (verified)
	$(PY) -m stack backup

restore: $(READY) $(ANSIBLE_READY) ## put a backup into the running stack: BACKUP=<folder> (as make backup wrote it)
	$(PY) -m stack restore

extend: $(READY) ## CLOUD=chameleon: prolong the stack's lease by HOURS= (default 24), within the site's rules
	$(PY) -m stack extend

tunnel: $(READY) ## CLOUD=chameleon|sim: SSH tunnels to MLflow :5000, Ray's dashboard :8265, the object store :8333
	$(PY) -m stack tunnel

logs: $(READY) ## follow a training job on the stack: JOB=<id>
	$(PY) -m training logs $(JOB)

cancel: $(READY) ## stop a training job on the stack: JOB=<id>
	$(PY) -m training cancel $(JOB)

train: $(READY) ## fine-tune TASK=classify|fakenews|summarize (PROFILE= MODEL= DATA= RESUME=1 ...)
	$(PY) -m training train $(ARGS)

bench: $(READY) ## DDP vs FSDP x workers x batch (BENCH_STRATEGIES= BENCH_WORKERS= BENCH_BATCH= BENCH_STEPS=)
	$(PY) -m training bench $(ARGS)

study: $(READY) ## TASKS x STUDY_STRATEGIES x STUDY_WORKERS x STUDY_BATCH, each a real run, fitted to the lease (DRY_RUN=1 RESUME=1)
	$(PY) -m training study $(ARGS)

tune: $(READY) ## hyperparameter search with Ray Tune + ASHA for TASK= (SPACE=file TUNE_SAMPLES=N RESUME=1)
	$(PY) -m training tune $(ARGS)

settings: $(READY) ## list every training setting, its make variable and default
	$(PY) -m training settings

ui: $(READY) ## MLflow UI for runs tracked without a stack (http://127.0.0.1:5000)
	$(PY) -m training ui

# Two pytest workers: the tests that configure this machine take one, in order; every other
# test module runs whole on whichever is free (tests/conftest.py). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: $(TRAIN_READY) $(ANSIBLE_TEST_READY) ## run the test suite (the stack tests need root: they configure this machine)
	$(TRAIN_PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-stack: $(TRAIN_READY) $(ANSIBLE_TEST_READY) ## only the stack tests: molecule per role, site.yml, backup/restore, up -> train -> down end to end
	$(TRAIN_PY) -m pytest tests/stack $(PYTEST_ARGS)

lint: $(TRAIN_READY) $(ANSIBLE_TEST_READY) ## ruff, ansible-lint (production profile), terraform fmt and checkov over infra/
	$(TRAIN_VENV)/bin/ruff check core training stack tests mlflow-stack tools
	cd ansible && ../$(ANSIBLE_VENV)/bin/ansible-lint
	terraform fmt -check -recursive infra
	infra/checkov.sh --quiet
