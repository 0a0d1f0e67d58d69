# Two entry points for a new machine: `make run` (set up, simulate the seed scenario) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test bench clean

$(STAMP): pyproject.toml examples/third-party-policy/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	# the example third-party policy, installed as a user would install theirs
	$(BIN)/pip install -q --no-deps -e examples/third-party-policy
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/vmemlab simulate scenarios/seed.json

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) build *.egg-info
