# tfrexp: `make train` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PORT ?= 5000
SERVER_PORT ?= 5001
ARGS ?=

# Use the data folder beside the checkout when TFREXP_DATA_DIR is not set and that folder exists.
ifeq ($(TFREXP_DATA_DIR),)
ifneq ($(wildcard ../shared/data/mnist),)
export TFREXP_DATA_DIR := $(abspath ../shared/data)
endif
endif

.PHONY: help install train sweep bench test ui server server-stop clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -e 's/$$(SERVER_PORT)/$(SERVER_PORT)/g' -e 's/$$(PORT)/$(PORT)/g' \
		| awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,jax,ray,slurm,server]'
	touch $@

install: $(INSTALLED) ## create .venv and install tfrexp (editable) with its dependencies, test tools and the optional engines

train: $(INSTALLED) ## run the default experiment (MNIST -> TFRecords -> CNN -> MLflow); ARGS='...' adds overrides
	$(BIN)/tfrexp $(ARGS)

sweep: $(INSTALLED) ## a demo sweep (2 models x 2 learning rates on 10k MNIST images), a few minutes on CPU
	$(BIN)/tfrexp -m model=cnn_small,cnn trainer.learning_rate=1e-3,3e-3 dataset.max_examples_per_split=10000 trainer.verbose=2 $(ARGS)

bench: $(INSTALLED) ## the benchmark suite (table printed and saved under outputs/bench/); ARGS='--full' adds time to 99%, the sweep launchers and the pruned search
	$(BIN)/tfrexp-bench $(ARGS)

test: $(INSTALLED) ## run the test suite; PYTEST_ARGS='...' passes options to pytest
	$(BIN)/python -m pytest $(PYTEST_ARGS)

ui: $(INSTALLED) ## the MLflow UI over the default store, on http://127.0.0.1:$(PORT)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db --host 127.0.0.1 --port $(PORT)

server: $(INSTALLED) ## a shared MLflow server for parallel jobs (PostgreSQL store under outputs/server/) on 127.0.0.1:$(SERVER_PORT)
	$(BIN)/python -m tfrexp.tracking.server start --root outputs/server --port $(SERVER_PORT) $(ARGS)

server-stop: ## stop `make server` (the MLflow server and its PostgreSQL)
	$(BIN)/python -m tfrexp.tracking.server stop --root outputs/server

clean: ## delete outputs/ (records, runs, the MLflow store; a running `make server` is stopped first); keeps .venv
	test ! -f outputs/server/server.json || $(BIN)/python -m tfrexp.tracking.server stop --root outputs/server
	rm -rf outputs/*
