# qbench: `make demo` runs the main job on built-in data, `make test` runs the tests.
# Both install what they need into .venv first (about 3 minutes the first time).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RESULTS ?= results

.PHONY: setup demo test ci-gate bench asr-4bit lint clean

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

# The CI gate: two small suites (speech, translation) trained from scratch, checked against the
# committed baseline.
# One thread, as when the baseline was written, so the numbers repeat exactly.
ci-gate: setup
	rm -rf .cache/ci-results
	QBENCH_THREADS=1 $(BIN)/qbench run recipes/ci.yaml --results .cache/ci-results --no-progress
	QBENCH_THREADS=1 $(BIN)/qbench run recipes/ci-mt.yaml --results .cache/ci-results --no-progress
	$(BIN)/qbench check --baseline results/baselines/ci.json --results .cache/ci-results --junit .cache/ci-junit.xml

bench: setup
	$(BIN)/qbench run recipes/asr-synthetic.yaml --results $(RESULTS)

# The 4-bit suite (10 techniques x 2 seeds, 30-45 min on 2 cores), its plot and results/RESULTS.md.
asr-4bit: setup
	$(BIN)/qbench run benchmarks/asr-4bit.yaml --jobs 2 --keep-going --results $(RESULTS)
	$(BIN)/qbench results --suite asr-4bit --results $(RESULTS) --out $(RESULTS)/RESULTS.md --force

lint: setup
	$(BIN)/ruff check qbench tests
	$(BIN)/ruff format --check qbench tests
	$(BIN)/mypy qbench

clean:
	rm -rf .cache $(RESULTS)/runs $(RESULTS)/cache $(RESULTS)/index.sqlite*
