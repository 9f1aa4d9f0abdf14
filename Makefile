# Two commands do all the set-up on a fresh machine:
#   make demo   installs what it needs, then runs the main job
#   make test   installs what it needs, then runs the whole test suite
# `make lint` checks lint and formatting (ruff, pinned in the [test] extra), as CI does.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo quickstart test lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build (README, "Installing")
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,torch,keras,plot,bench,onnx]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py --out out/demo

quickstart: $(STAMP)
	$(PY) examples/quickstart.py

test: $(STAMP)
	KERAS_BACKEND=torch $(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
