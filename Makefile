# Every stage is one target; Hydra overrides pass through ARGS, e.g.
#   make candidates ARGS="data=vaswani retrieval.k=200"
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.distill-setup
ARGS ?=
# Several processes (GPUs or CPU processes) for teacher-score / train-teacher / train-student=bi_encoder:
#   make teacher-score LAUNCH="--multi_gpu --num_processes 8"   (accelerate launch options)
LAUNCH ?=
RUN = $(if $(strip $(LAUNCH)),$(VENV)/bin/accelerate launch $(LAUNCH),$(PY))
# pytest options for the test targets, e.g. PYTEST_ARGS="-x -k bm25"
PYTEST_ARGS ?=

# A stage whose script is not written yet fails with one line instead of a Python error.
define stage
	@if [ -f scripts/$(1).py ]; then $(RUN) scripts/$(1).py $(ARGS); \
	else echo "make $@: this stage is not built yet (scripts/$(1).py is missing)" >&2; exit 2; fi
endef

.PHONY: help setup data candidates train-teacher teacher-score features train-student evaluate demo export serve loadtest dashboard bench test test-full lint clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2}'

setup: $(STAMP) ## make .venv: torch (CPU build) first, then the project with dev extras (idempotent)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

data: $(STAMP) ## generate (sample) or convert and validate the dataset; print its statistics
	$(call stage,data)

candidates: $(STAMP) ## BM25 top-k per query -> <workspace>/candidates.parquet
	$(call stage,candidates)

train-teacher: $(STAMP) ## fine-tune a cross-encoder teacher -> <workspace>/models/teacher/
	$(call stage,train_teacher)

teacher-score: $(STAMP) ## score the candidates with the teacher -> <workspace>/soft_labels/
	$(call stage,teacher_score)

features: $(STAMP) ## ranking features for every candidate -> <workspace>/features.parquet
	$(call stage,features)

train-student: $(STAMP) ## train a student (student=bi_encoder|lightgbm|xgboost) -> <workspace>/models/<student>/
	$(call stage,train_student)

evaluate: $(STAMP) ## compare BM25, teacher and students; cascade simulation -> metrics.json, report.md
	$(call stage,evaluate)

demo: $(STAMP) ## the whole pipeline end to end on the embedded sample world
	$(call stage,demo)

export: $(STAMP) ## a student as ONNX / OpenVINO (export.student=NAME export.format=onnx|openvino export.quantize=none|int8) -> <workspace>/exports/
	$(call stage,export)

serve: $(STAMP) ## the cascade as an HTTP service: BM25 -> student -> teacher under an SLA (Ctrl-C stops it)
	$(call stage,serve)

loadtest: $(STAMP) ## the local server under a burst load, static vs dynamic depth, beside the simulator -> loadtest.md
	$(call stage,loadtest)

dashboard: $(STAMP) ## a local dashboard of the workspace's runs on 127.0.0.1 (TensorBoard or MLflow; Ctrl-C stops it)
	$(call stage,dashboard)

bench: $(STAMP) ## throughput benchmarks (print JSON lines)
	$(PY) scripts/bench.py $(ARGS)

test: $(STAMP) ## the fast test suite
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-full: $(STAMP) ## every test, the slow ones too
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check distill scripts tests
	$(VENV)/bin/ruff format --check distill scripts tests
	$(VENV)/bin/mypy

clean: ## remove generated data and outputs (keeps .venv)
	rm -rf outputs multirun data/sample data/vaswani data/cranfield data/cacm
