# The two commands of the README. Both create .venv if it is missing and install the project
# (editable, with the pinned versions of constraints.txt) when pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
RESULTS ?= results/demo

.PHONY: demo test lint lock clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/albench run experiments/grids/demo.yaml --results $(RESULTS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# Regenerate the pins from the current .venv (after changing dependencies in pyproject.toml).
lock: $(STAMP)
	$(VENV)/bin/python -m pip freeze --exclude-editable | sed -e 's/^torch==\([0-9.]*\)+.*/torch==\1/' > constraints.txt

clean:
	rm -rf $(VENV) results .pytest_cache
