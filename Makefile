# qbench: `make demo` runs the main job on built-in data, `make test` runs the tests.
# Both install what they need into .venv first (about 3 minutes the first time).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RESULTS ?= results

.PHONY: setup demo test ci-gate bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@start=$$(date +%s); \
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]" && \
	touch $(STAMP) && echo "installed in $$(( $$(date +%s) - start )) s"

demo: setup
	$(BIN)/qbench run recipes/demo.yaml --results $(RESULTS)

test: setup
	$(BIN)/python -m pytest -q

# The CI gate: a small suite trained from scratch, checked against the committed baseline.
# One thread, as when the baseline was written, so the numbers repeat exactly.
ci-gate: setup
	rm -rf .cache/ci-results
	QBENCH_THREADS=1 $(BIN)/qbench run recipes/ci.yaml --results .cache/ci-results --no-progress
	$(BIN)/qbench check --baseline results/baselines/ci.json --results .cache/ci-results

bench: setup
	$(BIN)/qbench run recipes/asr-synthetic.yaml --results $(RESULTS)

lint: setup
	$(BIN)/ruff check qbench tests
	$(BIN)/ruff format --check qbench tests

clean:
	rm -rf .cache $(RESULTS)/runs $(RESULTS)/cache $(RESULTS)/index.sqlite*
