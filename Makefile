# `make run`: set up .venv and run the pipeline; `make test`: run the tests.
VENV ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: run test
run: $(VENV)/.installed
	dvc repro

test: $(VENV)/.installed
	python -m pytest -q

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@
