# tfod: `make demo` and `make test` are all a new machine needs.
SHELL := /bin/bash
PYTHON ?= python3.11
# Two pinned stacks: tf2.20 (default, constraints.txt, .venv) and tf2.21 (the current
# TensorFlow release, constraints-tf2.21.txt, .venv-tf2.21). Every target takes STACK=.
STACKS := tf2.20 tf2.21
STACK ?= tf2.20
ifeq ($(filter $(STACK),$(STACKS)),)
$(error STACK=$(STACK) is not a tfod stack: use one of $(STACKS))
endif
ifeq ($(STACK),tf2.20)
VENV ?= .venv
CONSTRAINTS := constraints.txt
else
VENV ?= .venv-$(STACK)
CONSTRAINTS := constraints-$(STACK).txt
endif
PY := $(VENV)/bin/python
TFOD := $(VENV)/bin/tfod
STAMP := $(VENV)/.tfod-installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

# stage parameters (override on the command line: make train RUN=myrun STEPS=2000)
DATA ?= data/demo_raw
FORMAT ?= voc
NAME ?= demo
TEMPLATE ?= ssd_mobilenet_v2_tiny
RUN ?= $(NAME)
STEPS ?= 2000
FORMATS ?= all
CONFIG ?= runs/$(RUN)/pipeline.config
PORT ?= 6006

.PHONY: help setup demo test test-all odapi-selftest prepare config train eval export lite lite-check \
        predict tensorboard browser-check doctor bench freeze clean mutation

help:
	@echo "make demo            whole path offline on a synthetic dataset (sets up .venv first)"
	@echo "make test            unit + end-to-end tests (sets up .venv first)"
	@echo "make setup           create .venv with the pinned stack and the OD API (sha256 checked)"
	@echo "                    STACK=tf2.21: TensorFlow 2.21 in .venv-tf2.21 (any target takes STACK=)"
	@echo "make odapi-selftest  the OD API's own TF2 unit tests under tfod's compat layer"
	@echo "make lite            .venv-lite: predict with .tflite models, no TensorFlow (tfod[lite])"
	@echo "make prepare DATA=... FORMAT=voc|coco|csv|yolo NAME=... [SPLIT=train=0.8,val=0.2 LABEL_MAP=... IMAGES=... PREPARE_ARGS=--check-only]"
	@echo "make config NAME=... TEMPLATE=... STEPS=..."
	@echo "make train RUN=...   make eval RUN=...   make export RUN=... FORMATS=..."
	@echo "make tensorboard     TensorBoard over runs/ on 127.0.0.1:$(PORT) (NGROK=1 AUTH=u:pw: tunnel)"

setup: $(STAMP)

# A second `make setup` is a no-op: the stamp is newer than every input.
$(STAMP): requirements.txt requirements-odapi.txt $(CONSTRAINTS) setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24" wheel "setuptools<81"
	$(PY) -m pip install --quiet -r requirements.txt -c $(CONSTRAINTS)
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements-odapi.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -c "import tfod, object_detection.protos.pipeline_pb2"
	touch $@

demo: $(STAMP)
	$(TFOD) demo

# TESTS= picks files or -k expressions (CI's second stack runs a subset: .ci/run)
TESTS ?= tests
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(TESTS)

# A TFLite-only environment (.venv-lite): tfod with the `lite` extra (LiteRT, numpy,
# Pillow, tqdm), no TensorFlow; what a device needs for `tfod predict --model x.tflite`.
# `make lite-check MODEL=exports/demo/model_int8.tflite IMAGES=data/demo_raw/JPEGImages`
# predicts in it and checks TensorFlow was neither installed nor imported.
LITE := .venv-lite
lite: $(LITE)/.tfod-installed
$(LITE)/.tfod-installed: setup.py $(CONSTRAINTS)
	test -x $(LITE)/bin/python || $(PYTHON) -m venv $(LITE)
	$(LITE)/bin/python -m pip install --quiet -e ".[lite]" -c $(CONSTRAINTS)
	touch $@

lite-check: $(LITE)/.tfod-installed
	$(LITE)/bin/python tools/lite_check.py $(MODEL) $(IMAGES)

# TensorBoard of a finished tiny run, loaded in headless Chromium: loss and mAP cards shown
browser-check: $(STAMP)
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)
	$(PY) -m pytest -q -m slow tests/test_dashboard.py -k browser

# every slow test too; Chromium (for the TensorBoard browser test) is installed if missing,
# so no slow test is skipped
test-all: $(STAMP)
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)
	$(PY) -m pytest -q tests

# the OD API's tests import a few packages nothing else does (requirements-selftest.txt)
odapi-selftest: $(STAMP)
	$(PY) -m pip install --quiet -r requirements-selftest.txt -c $(CONSTRAINTS)
	$(PY) tools/odapi_selftest.py --json build/odapi_selftest-$(STACK).json $(SELFTEST_ARGS)

doctor: $(STAMP)
	$(TFOD) doctor

# optional: SPLIT=train=0.8,val=0.2 LABEL_MAP=label_maps/x.pbtxt IMAGES=dir PREPARE_ARGS="--strict"
prepare: $(STAMP)
	$(TFOD) prepare $(DATA) --format $(FORMAT) --name $(NAME) \
	  $(if $(SPLIT),--split $(SPLIT)) $(if $(LABEL_MAP),--label-map $(LABEL_MAP)) \
	  $(if $(IMAGES),--images $(IMAGES)) $(PREPARE_ARGS)

config: $(STAMP)
	$(TFOD) config $(TEMPLATE) --data data/$(NAME) --steps $(STEPS) --out $(CONFIG)

train: $(STAMP)
	$(TFOD) train $(CONFIG) --run $(RUN)

eval: $(STAMP)
	$(TFOD) eval runs/$(RUN)

export: $(STAMP)
	$(TFOD) export runs/$(RUN) --formats $(FORMATS)

# NGROK=1 adds a pyngrok tunnel (pip install 'tfod[ngrok]'); AUTH=- asks for USER:PASSWORD
# (or export TFOD_TB_AUTH): a password on the command line shows in the process list
tensorboard: $(STAMP)
	$(TFOD) tensorboard --logdir runs --port $(PORT) $(if $(NGROK),--ngrok) $(if $(AUTH),--auth "$(AUTH)")

# mutmut over the pure-Python modules against their fast tests (setup.cfg [mutmut] and
# [tfod:mutation], docs/MUTATION.md); not part of `make test`. Prints the time, then
# "mutation score: K/N killed (P%)" as its last line.
mutation: $(STAMP)
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	rm -rf mutants
	$(PY) tools/mutation.py

bench: $(STAMP)
	$(PY) tools/bench/setup_and_demo.py

# pin what the stack's venv holds (the --no-deps packages of requirements-odapi.txt are
# pinned there by hash instead); run on a venv made by `make setup`, without the
# selftest's extras
freeze: $(STAMP)
	grep '^#' $(CONSTRAINTS) > $(CONSTRAINTS).new || true
	$(PY) -m pip freeze --exclude-editable \
	  | grep -v -i -E '^(tf[-_]models[-_]research[-_]object[-_]detection|tf[-_]models[-_]official|lvis)==' \
	  >> $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

clean:
	rm -rf demo runs exports/* .pytest_cache
