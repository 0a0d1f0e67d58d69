# Two entry points for a new machine: `make run` (set up, start the service, submit the seed scenario
# over HTTP, print the comparison, serve until Ctrl-C) and `make test`.
PYTHON ?= python3
PORT   ?= 8000
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run compare test bench bench-api bench-capacity fidelity load fuzz clean

$(STAMP): pyproject.toml examples/third-party-policy/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,notebook]'
	# the example third-party policy, installed as a user would install theirs
	$(BIN)/pip install -q --no-deps -e examples/third-party-policy
	touch $(STAMP)

setup: $(STAMP)

# the service on the embedded default (SQLite + embedded broker in ./var), the seed submitted over HTTP
run: $(STAMP)
	$(BIN)/vmemlab up --port $(PORT) --submit scenarios/seed.json

# the same comparison offline, in this process, without the service
compare: $(STAMP)
	$(BIN)/vmemlab simulate scenarios/seed.json

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/engine.py

bench-api: $(STAMP)
	$(BIN)/python bench/api.py

bench-capacity: $(STAMP)
	$(BIN)/python bench/capacity.py --jobs 2

fidelity: $(STAMP)
	$(BIN)/python bench/fidelity.py

load: $(STAMP)
	$(BIN)/python bench/load.py

fuzz: $(STAMP)
	$(BIN)/python bench/fuzz.py

clean:
	rm -rf $(VENV) build *.egg-info
